"""A sweep's plan, made once: every run with its training settings resolved, grouped into jobs.

``plan_sweep`` reads the config's runs once (``SweepConfig.runs``), gives each its own training
settings (``run_training``: the one place where a run's batch size, learning rate, warmup and
optimiser are decided) and returns a small frozen ``SweepPlan``. The sweep, the launchers and the
jobs take what they need from the plan, and each ``Job`` carries its own resolved runs, so a
worker process trains its job without planning anything again.

Example:
    >>> plan = plan_sweep(load_config("configs/quick.yaml"))        # doctest: +SKIP
    >>> [job.name for job in plan.jobs(done=set())][:2]              # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Hashable, Set
from dataclasses import dataclass

from jaxscale.config import RunSpec, SweepConfig, TrainConfig
from jaxscale.counting import TOKENIZER_VOCAB, ModelShape, params_with_head
from jaxscale.train import pack_key, wsd_key


@dataclass(frozen=True, slots=True)
class Job:
    """Runs trained together: ``kind`` "pack" (one shape and token budget, one compiled step) or
    "wsd" (one shape's token budgets as branches of one trunk); ``specs`` are its resolved runs.
    """

    name: str
    kind: str
    specs: tuple[RunSpec, ...]

    @property
    def runs(self) -> tuple[str, ...]:
        """The names of the job's runs."""
        return tuple(s.name for s in self.specs)


@dataclass(frozen=True, slots=True)
class SweepPlan:
    """A sweep's runs, resolved once, and the settings they share.

    Attributes:
      config: the sweep's configuration (corpus, context, validation, checkpoints, packing).
      runs: every run of the config in its order (smallest model first), ``train`` resolved.
      fingerprint: ``config.fingerprint()``, recorded with every result.
    """

    config: SweepConfig
    runs: tuple[RunSpec, ...]
    fingerprint: str

    def jobs(self, done: Set[str]) -> list[Job]:
        """The jobs that train every run not in ``done``, smallest model first.

        Runs that can share a compiled step and loop (``train.pack_key``: shape, token budget,
        batch settings; under WSD ``train.wsd_key``: shape and settings but the lr) are packed
        up to ``config.pack`` models per job. A WSD job is planned whole (all the budgets of its
        models) while any of its runs is unfinished.
        """
        wsd = self.config.train.schedule == "wsd"
        groups: dict[Hashable, list[RunSpec]] = {}
        for spec in self.runs:
            groups.setdefault(wsd_key(spec) if wsd else pack_key(spec), []).append(spec)
        jobs = []
        for specs in groups.values():
            if wsd:
                models = sorted({(s.train.lr, s.seed) for s in specs})
                for chunk in _chunks(models, self.config.pack):
                    runs = [s for s in specs if (s.train.lr, s.seed) in chunk]
                    if any(s.name not in done for s in runs):
                        jobs.append(_job("wsd", runs))
            else:
                todo = [s for s in specs if s.name not in done]
                jobs += [_job("pack", chunk) for chunk in _chunks(todo, self.config.pack)]
        return jobs


MIN_BATCH = 4  # sequences: a smaller step is mostly per-step overhead on a CPU


def run_training(cfg: SweepConfig, spec: RunSpec) -> TrainConfig:
    """The training settings of one run of ``cfg``: the sweep's ``train`` with the run's own
    peak lr (one of ``train.lr``'s list), then the per-run rules that are on:

    * ``lr_ref_width``: lr x (lr_ref_width / d_model)^lr_width_power;
    * ``min_steps``: the batch halved from ``batch_size`` (while it stays a multiple of
      ``accum`` and at least ``MIN_BATCH``) until the run has at least ``min_steps`` steps;
    * ``warmup_per_param``: a warmup of that many tokens per parameter (N with the head), as a
      share of the run, at most half of it. Under ``schedule: wsd`` the share is of the
      column's trunk (the shape's longest run), which every branch of the column shares.

    Example:
      >>> cfg = SweepConfig(tokens=(2e5,), train=TrainConfig(batch_size=32, min_steps=100))
      >>> run_training(cfg, cfg.runs()[0]).batch_size   # 200k tokens / 128 per row / 100 steps
      8
    """
    t = cfg.train
    lr = t.lr if spec.lr is None else spec.lr
    if t.lr_ref_width:
        lr *= (t.lr_ref_width / spec.shape.d_model) ** t.lr_width_power
    batch = t.batch_size
    while (
        t.min_steps
        and spec.tokens / (batch * cfg.context) < t.min_steps
        and batch // 2 >= MIN_BATCH
        and batch % 2 == 0
        and (batch // 2) % t.accum == 0
    ):
        batch //= 2
    warmup = t.warmup
    if t.warmup_per_param:
        n = params_with_head(spec.shape, TOKENIZER_VOCAB[cfg.tokenizer])
        span = _longest_run(cfg)[spec.shape] if t.schedule == "wsd" else spec.tokens
        warmup = min(0.5, t.warmup_per_param * n / span)
    return dataclasses.replace(t, lr=lr, batch_size=batch, warmup=warmup)


@functools.lru_cache(maxsize=8)
def _longest_run(cfg: SweepConfig) -> dict[ModelShape, int]:
    """Each shape's largest token budget in ``cfg``: its WSD trunk (listed once per config,
    not once per run)."""
    out: dict[ModelShape, int] = {}
    for r in cfg.runs():
        out[r.shape] = max(out.get(r.shape, 0), r.tokens)
    return out


def plan_sweep(cfg: SweepConfig) -> SweepPlan:
    """Plan ``cfg`` once: its runs, each with ``run_training``'s settings.

    Example:
      >>> plan = plan_sweep(SweepConfig(tokens=(1e6,)))
      >>> [(s.name, s.train.lr) for s in plan.runs]
      [('L4-d128-h4_D1M', 0.003)]
    """
    runs = tuple(dataclasses.replace(s, train=run_training(cfg, s)) for s in cfg.runs())
    return SweepPlan(cfg, runs, cfg.fingerprint())


def _chunks(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _job(kind: str, runs: list[RunSpec]) -> Job:
    names = tuple(s.name for s in runs)
    if kind == "pack" and len(runs) == 1:
        return Job(names[0], kind, tuple(runs))
    digest = hashlib.sha256("\n".join(names).encode()).hexdigest()[:8]
    label = runs[0].shape.label
    name = f"wsd-{label}-{digest}" if kind == "wsd" else f"pack-{label}_D{runs[0].tokens}-{digest}"
    return Job(name, kind, tuple(runs))
