"""``jaxscale bench``: a pack's aggregate throughput against the same runs one after another.

Both sides are real ``train_pack`` runs on the synthetic corpus, data pipeline included: one pack
of P models (different seeds) and one model alone. A run's throughput excludes its first
(compiling) step and its validations, so the sequential side's aggregate is one model's
tokens/s: P runs trained one after another take P times as long.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.train import train_pack

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
