"""Warmup-stable-decay (Hägele et al. 2024): one constant-lr trunk per model, and at each token
budget D a cooldown branched off a copy of the trunk. A whole column of (N, D) points costs the
largest run plus the cooldowns."""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

import numpy as np

from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.data import Corpus
from jaxscale.train.metrics import RunOutcome
from jaxscale.train.pack import Pack, run_logs
from jaxscale.train.schedule import cooldown_steps, planned_steps, wsd_lrs


def wsd_key(spec: RunSpec) -> Hashable:
    """Runs with the same key can share one WSD job: the same shape and the same resolved
    ``train`` but for the peak lr (each (lr, seed) is a model of the trunk's pack)."""
    assert spec.train is not None, "wsd_key needs a resolved RunSpec"
    return (spec.shape, dataclasses.replace(spec.train, lr=0.0))


def wsd_steps(budgets: Sequence[int], train: TrainConfig, context: int) -> int:
    """Steps of a WSD column over ``budgets``: the longest run plus the other runs' cooldowns.

    Example:
      >>> wsd_steps([10**5, 2 * 10**5], TrainConfig(batch_size=32, decay=0.2), 128)
      54
    """
    steps = sorted(planned_steps(d, train, context) for d in budgets)
    return steps[-1] + sum(cooldown_steps(s, train) for s in steps[:-1])


def train_wsd(
    specs: Sequence[RunSpec],
    corpus: Corpus,
    *,
    context: int,
    eval_cfg: EvalConfig,
    train: TrainConfig | None = None,
    job_dir: Path | None = None,
    run_dirs: Sequence[Path] | None = None,
    finished: Callable[[RunSpec], bool] = lambda s: False,
    on_outcome: Callable[[RunSpec, RunOutcome], None] = lambda s, o: None,
    checkpoint_every: float = 300.0,
    shard_params_above: float = 1e8,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> None:
    """Warmup-stable-decay: one constant-lr trunk per model, a cooldown branched off at each D.

    The runs share one shape; each distinct (lr, seed) is a model of a vmapped pack, and each
    of its token budgets D is a branch: at step ``(1 - decay) x steps(D)`` the trunk's state is
    copied, cooled down over the remaining ``decay x steps(D)`` steps and validated, and the
    trunk goes on from the copy. The largest D is the trunk's own end. A whole column of
    (N, D) points costs the largest run plus the cooldowns.

    Args:
      specs: the runs (same ``wsd_key``; any token budgets, learning rates and seeds).
      train: the training settings of specs that carry none (``RunSpec.resolve``).
      finished: runs that already have a result (skipped; their branch is not redone).
      on_outcome: called with each run's outcome as soon as its branch ends.
      Others: as for ``train_pack``. Checkpoints hold the trunk at each branch point and every
        ``checkpoint_every`` seconds along it; a branch cut short is redone from its branch point.

    Example:
      >>> train_wsd([RunSpec(f"D{d}", shape, d, 0) for d in (10**5, 2 * 10**5)], corpus,
      ...           context=128, eval_cfg=EvalConfig(), train=TrainConfig(schedule="wsd"),
      ...           on_outcome=print)                                  # doctest: +SKIP
    """
    specs = [s.resolve(train) for s in specs]
    if len({wsd_key(s) for s in specs}) != 1:
        raise ValueError("a WSD job's runs must share their shape and settings but for the lr")
    shared = specs[0].train
    slots = sorted({(s.train.lr, s.seed) for s in specs})
    rows = [[s for s in specs if (s.train.lr, s.seed) == slot] for slot in slots]
    if len({tuple(sorted(s.tokens for s in row)) for row in rows}) != 1:
        raise ValueError("every (lr, seed) of a WSD job must cover the same token budgets")
    budgets = sorted({s.tokens for s in specs})
    steps = [planned_steps(d, shared, context) for d in budgets]
    branch = [s - cooldown_steps(s, shared) for s in steps]
    # the longest run's warmup (as its cosine twin has), cut short of the first branch point
    warmup = min(round(shared.warmup * steps[-1]), branch[0] // 2)
    by_budget = {(s.train.lr, s.seed, s.tokens): s for s in specs}
    dirs = dict(zip((s.name for s in specs), run_dirs or [None] * len(specs), strict=True))
    firsts = [row[0] for row in rows]  # one spec per model: its seed and lr
    pack = Pack(
        firsts,
        corpus,
        context=context,
        eval_cfg=eval_cfg,
        num_batches=steps[-1],
        job_dir=job_dir,
        checkpoint_every=checkpoint_every,
        shard_params_above=shard_params_above,
        on_tokens=on_tokens,
    )
    peak = np.array([lr for lr, _ in slots], np.float32)
    trunk_lrs = (wsd_lrs(shared, warmup, steps[-1], steps[-1])[:, None] * peak).astype(np.float32)
    # the runs still to do, their logs opened from the restored step
    run_of = [[by_budget[(lr, seed, d)] for d in budgets] for lr, seed in slots]
    todo = {s.name for s in specs if not finished(s)}
    logs = {
        s.name: run_logs(
            dirs[s.name],
            pack.step,
            {
                "run": s.name,
                "steps": st,
                "tokens": st * pack.tokens_per_step,
                "warmup_steps": warmup,
                "schedule": "wsd",
                "branch_at": b,
            },
        )
        for row in run_of
        for s, st, b in zip(row, steps, branch, strict=True)
        if s.name in todo
    }
    evals_every = max(1, steps[-1] // max(shared.evals, 1))
    trunk_evals = {k * evals_every for k in range(1, shared.evals + 1)} | set(branch)
    try:
        for i, (b, end) in enumerate(zip(branch, steps, strict=True)):
            if not any(row[i].name in todo for row in run_of):
                continue
            # the trunk's lines belong to every run still to branch at or after this point
            trunk_logs = [
                [log for k in range(i, len(budgets)) for log in logs.get(row[k].name, [])]
                for row in run_of
            ]
            if pack.step < b:
                pack.advance(b, trunk_lrs, trunk_logs, eval_at=trunk_evals, recent_from=math.inf)
                pack.save()
            snapshot = pack.fork() if i < len(budgets) - 1 else None
            cool = wsd_lrs(shared, warmup, b, end)[:, None] * peak
            branch_logs = [logs.get(row[i].name, []) for row in run_of]
            pack.advance(
                end,
                cool.astype(np.float32),
                branch_logs,
                eval_at={end},
                recent_from=max(0.9 * end, b),
                checkpoint=snapshot is None,
            )
            for j, row in enumerate(run_of):
                if row[i].name in todo:
                    on_outcome(row[i], pack.outcome(j, end, branch_at=b))
            if snapshot is not None:
                pack.rejoin(snapshot)
        pack.save()
    finally:
        pack.close()
        for log in itertools.chain(*logs.values()):
            log.close()
