"""Benchmarks: a pack's aggregate throughput against the same runs one after another
(``jaxscale bench``), one model's bare train step and its MFU against a measured matmul peak
(``scripts/bench_cpu.py``, ``bench_mfu.py``), step metrics fetched per step against a few steps
late, and bfloat16 against float32 training (``scripts/gpu_check.py`` runs them all).

The pack, lag and dtype benchmarks are real ``train_pack`` runs on the synthetic corpus, data
pipeline included. A run's throughput excludes its first (compiling) step and its validations,
so the sequential side of the pack benchmark is one model's tokens/s: P runs trained one after
another take P times as long.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscale.backend import batch_sharding, compute_dtype, pack_mesh, pack_shardings
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape, flops_per_token_counted, total_params
from jaxscale.data import load_corpus
from jaxscale.model import init_model
from jaxscale.train import make_optimizer, make_pack_steps, micro_batches, train_pack

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
    mesh = pack_mesh(1, cfg.batch_size, context)
    params = jax.tree.map(lambda x: x[None], params)
    state = (params, jax.vmap(make_optimizer(cfg).init)(params))
    state = list(jax.device_put(state, pack_shardings(mesh, state, shard=False)))
    step_fn = make_pack_steps(graphdef, cfg, mesh, context)  # one step a call: K = 1
    tokens = np.random.default_rng(0).integers(0, vocab, (1, 1, cfg.batch_size, context + 1))
    batch = jax.device_put(tokens.astype(np.int32), batch_sharding(mesh, steps=True))
    lr = jnp.full((1, 1), 1e-3, jnp.float32)

    def one_step() -> None:
        state[0], state[1], metrics = step_fn(state[0], state[1], batch, lr, np.int32(1))
        jax.block_until_ready(metrics["loss"])

    one_step()
    where = (
        f"jax {jax.__version__} on {jax.default_backend()} ({jax.devices()[0].device_kind}) "
        f"x {mesh.size} devices, {micro_batches(cfg, context, mesh.shape['data'])} micro-batches "
        f"a step, {compute_dtype(cfg.dtype)}"
    )
    return one_step, mesh.size, where


def median_seconds(fn: Callable[[], None], repeats: int) -> float:
    """Median wall time of ``repeats`` calls of ``fn``, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int, dtype: str, devices: int) -> float:
    """FLOP/s of the first ``devices`` devices each multiplying its own n x n matrices at the
    same time, median of 20 (on CPU the cores then share nothing, as in a data-parallel step).

    Example:
      >>> f"{matmul_peak(8192, 'bfloat16', 1) / 1e12:.0f} TFLOP/s"     # doctest: +SKIP
    """
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()[:devices]), ("d",)), PartitionSpec("d"))
    a, b = (
        jax.device_put(jax.random.normal(jax.random.key(i), (devices, n, n), dtype), sharding)
        for i in range(2)
    )
    matmul = jax.jit(jnp.matmul)
    return 2 * devices * n**3 / median_seconds(lambda: jax.block_until_ready(matmul(a, b)), 20)


@dataclass(frozen=True, slots=True)
class MfuBench:
    """One model's train step against the matmul peak its devices reach in its dtype."""

    where: str  # backend, devices, micro-batches, dtype
    shape: ModelShape
    params: int  # all parameters
    batch: int
    context: int
    dtype: str
    matmul_n: int  # the peak's square matmul size
    devices: int
    peak_flops_per_s: float
    tokens_per_s: float
    model_flops_per_s: float  # tokens/s x counted training FLOPs per token

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: model FLOP/s / measured peak FLOP/s."""
        return self.model_flops_per_s / self.peak_flops_per_s


def bench_mfu(
    shape: ModelShape,
    vocab: int,
    context: int,
    batch: int,
    *,
    dtype: str = "auto",
    steps: int = 10,
    matmul_n: int | None = None,
) -> MfuBench:
    """MFU of one model's train step: tokens/s x ``flops_per_token_counted`` over the measured
    peak (``matmul_peak``; n = 8192 on GPUs, 2048 elsewhere, unless ``matmul_n``).

    Example:
      >>> bench_mfu(PRESETS["medium"], 50257, 1024, 16).mfu             # doctest: +SKIP
    """
    cfg = TrainConfig(batch_size=batch, dtype=dtype)
    one_step, devices, where = model_step(shape, vocab, context, cfg)
    n = matmul_n or (8192 if jax.default_backend() == "gpu" else 2048)
    peak = matmul_peak(n, compute_dtype(dtype), devices)
    tokens_per_s = batch * context / median_seconds(one_step, steps)
    flops = flops_per_token_counted(shape, vocab, context)
    return MfuBench(
        where=where,
        shape=shape,
        params=total_params(shape, vocab, context),
        batch=batch,
        context=context,
        dtype=compute_dtype(dtype),
        matmul_n=n,
        devices=devices,
        peak_flops_per_s=peak,
        tokens_per_s=tokens_per_s,
        model_flops_per_s=tokens_per_s * flops,
    )


@contextmanager
def env_set(name: str, value: int) -> Iterator[None]:
    """Within the block, the environment variable ``name`` is ``value``: how a benchmark sets
    a training-loop knob (``JAXSCALE_METRICS_LAG``, ``JAXSCALE_STEPS_PER_CALL``)."""
    before = os.environ.get(name)
    os.environ[name] = str(value)
    try:
        yield
    finally:
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


@dataclass(frozen=True, slots=True)
class LoopBench:
    """A pack trained under two values of one training-loop setting, an environment variable
    (``JAXSCALE_METRICS_LAG``: steps' metrics fetched at once or late; ``JAXSCALE_STEPS_PER_CALL``:
    steps a compiled call)."""

    setting: str
    values: tuple[int, int]
    tokens_per_s: tuple[float, float]  # the pack's aggregate under each, medians over repeats
    same_records: bool  # every model's loss, train loss and divergence step equal either way

    @property
    def speedup(self) -> float:
        """Throughput under the second value over the first."""
        return self.tokens_per_s[1] / self.tokens_per_s[0]


def bench_loop(
    shape: ModelShape,
    setting: str,
    values: tuple[int, int],
    pack: int = 1,
    *,
    batch_size: int = 16,
    context: int = 128,
    steps: int = 60,
    repeats: int = 3,
) -> LoopBench:
    """Throughput of ``train_pack`` under two values of a loop setting, alternating the two
    ``repeats`` times (both see the same load), and whether they train the same numbers.

    Example:
      >>> bench_loop(PRESETS["tiny"], "JAXSCALE_METRICS_LAG", (0, 4)).speedup  # doctest: +SKIP
    """
    corpus = load_corpus(BENCH_CORPUS, progress=False)
    train = TrainConfig(batch_size=batch_size, evals=1, warmup=0.0)
    specs = [RunSpec(f"m{i}", shape, steps * batch_size * context, seed=i) for i in range(pack)]
    common = {"context": context, "train": train, "eval_cfg": EvalConfig(tokens=context)}
    speed: dict[int, list[float]] = {v: [] for v in values}
    results: dict[int, list] = {}
    for _ in range(repeats):
        for value in values:
            with env_set(setting, value):
                outcomes = train_pack(specs, corpus, **common)
            speed[value].append(pack * outcomes[0].tokens_per_s)
            results[value] = [(o.loss, o.train_loss, o.diverged_at) for o in outcomes]
    return LoopBench(
        setting,
        values,
        (statistics.median(speed[values[0]]), statistics.median(speed[values[1]])),
        results[values[0]] == results[values[1]],
    )


def bench_dtypes(
    shape: ModelShape,
    *,
    batch_size: int = 32,
    context: int = 256,
    tokens: int = 2_000_000,
    lr: float = 3e-3,
) -> dict[str, float]:
    """Final validation loss of the same short run in float32 and in bfloat16 (float32 master
    weights either way): ``{"float32": ..., "bfloat16": ...}``.

    Example:
      >>> losses = bench_dtypes(ModelShape(4, 256, 4))                   # doctest: +SKIP
      >>> losses["bfloat16"] / losses["float32"] - 1                      # doctest: +SKIP
    """
    corpus = load_corpus(BENCH_CORPUS, progress=False)
    spec = RunSpec("dtype", shape, tokens, seed=0)
    out = {}
    for dtype in ("float32", "bfloat16"):
        train = TrainConfig(batch_size=batch_size, lr=lr, evals=1, dtype=dtype)
        outcome = train_pack(
            [spec], corpus, context=context, train=train, eval_cfg=EvalConfig(tokens=65_536)
        )[0]
        out[dtype] = outcome.loss
    return out
