"""Benchmarks: a pack's aggregate throughput against the same runs one after another
(``jaxscale bench``), and one model's bare train step (``scripts/bench_cpu.py``, ``bench_mfu.py``).

Both sides are real ``train_pack`` runs on the synthetic corpus, data pipeline included: one pack
of P models (different seeds) and one model alone. A run's throughput excludes its first
(compiling) step and its validations, so the sequential side's aggregate is one model's
tokens/s: P runs trained one after another take P times as long.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.backend import batch_sharding, compute_dtype, pack_mesh, pack_shardings
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.model import init_model
from jaxscale.train import make_optimizer, make_pack_step, micro_batches, train_pack

BENCH_CORPUS = "synthetic:order=2,symbols=64,tokens=2000000"


@dataclass(frozen=True, slots=True)
class PackBench:
    """Measured tokens/s of a pack and of one model alone."""

    shape: ModelShape
    pack: int
    devices_pack: int
    devices_single: int
    pack_tokens_per_s: float  # all P models together
    single_tokens_per_s: float  # one model: the aggregate of running them in turn

    @property
    def speedup(self) -> float:
        return self.pack_tokens_per_s / self.single_tokens_per_s


def bench_pack(
    shape: ModelShape,
    pack: int = 8,
    *,
    batch_size: int = 16,
    context: int = 128,
    steps: int = 30,
    dtype: str = "auto",
) -> PackBench:
    """Time ``steps`` steps of a pack of ``pack`` models of ``shape`` and of one such model.

    Example:
      >>> r = bench_pack(ModelShape(2, 64, 2), pack=8)      # doctest: +SKIP
      >>> f"{r.speedup:.1f}x"                               # doctest: +SKIP
    """
    corpus = load_corpus(BENCH_CORPUS, progress=False)
    train = TrainConfig(batch_size=batch_size, evals=1, warmup=0.0, dtype=dtype)
    tokens = steps * batch_size * context
    common = {"context": context, "train": train, "eval_cfg": EvalConfig(tokens=context)}

    def run(n: int) -> tuple[float, int]:
        specs = [RunSpec(f"m{i}", shape, tokens, seed=i) for i in range(n)]
        outcomes = train_pack(specs, corpus, **common)
        return n * outcomes[0].tokens_per_s, outcomes[0].devices

    single, single_devices = run(1)
    packed, pack_devices = run(pack)
    return PackBench(shape, pack, pack_devices, single_devices, packed, single)


def model_step(
    shape: ModelShape, vocab: int, context: int, cfg: TrainConfig
) -> tuple[Callable[[], None], int, str]:
    """One model's compiled train step on random tokens, placed and micro-batched as a sweep runs
    a single run (a pack of one on ``pack_mesh``), its parameters on every device whole (a sweep
    shards models above ``shard_params_above`` FSDP-style). Returns a closure running one blocking
    step, after it has compiled, the devices the step uses and a line saying where it runs.

    Example:
      >>> step, devices, where = model_step(ModelShape(2, 64, 2), 256, 128, TrainConfig())
      ... # doctest: +SKIP
    """
    graphdef, params = init_model(shape, vocab, context, seed=0, dtype=compute_dtype(cfg.dtype))
    mesh = pack_mesh(1, cfg.batch_size)
    params = jax.tree.map(lambda x: x[None], params)
    state = (params, jax.vmap(make_optimizer(cfg).init)(params))
    state = list(jax.device_put(state, pack_shardings(mesh, state, shard=False)))
    step_fn = make_pack_step(graphdef, cfg, mesh, context)
    tokens = np.random.default_rng(0).integers(0, vocab, (1, cfg.batch_size, context + 1))
    batch_BxLp1 = jax.device_put(tokens.astype(np.int32), batch_sharding(mesh))
    lr = jnp.full((1,), 1e-3, jnp.float32)

    def one_step() -> None:
        state[0], state[1], metrics = step_fn(state[0], state[1], batch_BxLp1, lr)
        jax.block_until_ready(metrics["loss"])

    one_step()
    where = (
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}) "
        f"x {mesh.size} devices, {micro_batches(cfg, context, mesh.shape['data'])} micro-batches "
        f"a step, {compute_dtype(cfg.dtype)}"
    )
    return one_step, mesh.size, where
