"""A pack's training loop and its state: P runs of one shape trained in lockstep by one compiled
step, each with its own seed, learning-rate schedule, metrics log and result.

``Pack`` holds the models' state, their data streams, checkpoints and loop records; ``advance``
trains to a step under a table of learning rates, recording each step's metrics a few steps
behind the device (``metrics.StepMetrics``); ``fork`` and ``rejoin`` copy and restore it whole,
which is how WSD (``jaxscale.train.wsd``) branches its cooldowns off a trunk. ``train_pack`` and
``train_run`` are the entry points of a pack and of a single run.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.backend import (
    agree,
    batch_sharding,
    compute_dtype,
    is_lead,
    metrics_lag,
    pack_mesh,
    pack_shardings,
    place,
    steps_per_call,
)
from jaxscale.checkpoint import RunCheckpoints
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.data import Corpus, batch_dataset
from jaxscale.model import init_model
from jaxscale.train.metrics import MetricsLog, RunOutcome, Slot, StepMetrics, StepRecord
from jaxscale.train.schedule import lr_table, planned_steps, stop_step
from jaxscale.train.step import AdamW, evaluate, loss_span, make_optimizer, make_pack_steps

# One graph definition per model structure: the compiled steps are keyed by it, and flax 0.10's
# GraphDefs of the same structure compare unequal, which recompiled every run of a shape there.
_GRAPHDEFS: dict[Hashable, Any] = {}


def loop_key(train: TrainConfig) -> Hashable:
    """The settings every model of a pack shares: its batch (size, micro-batches), compute
    dtype, validation count and optimiser (``AdamW``), i.e. the loop and the compiled step.
    Peak lr, warmup and schedule may differ from model to model."""
    return (train.batch_size, train.accum, train.dtype, train.evals, AdamW.of(train),
            train.loss_on)  # fmt: skip


def pack_key(spec: RunSpec) -> Hashable:
    """Runs with the same key can train together in one pack: the same shape and token budget
    (hence the same steps) and the same ``loop_key`` of their resolved ``train``."""
    assert spec.train is not None, "pack_key needs a resolved RunSpec"
    return (spec.shape, spec.tokens, loop_key(spec.train))


class Pack:
    """P models of one shape trained in lockstep by one vmapped step, with their data streams,
    checkpoints and loop records. P = 1 is a single run.

    Args:
      specs: the models (resolved: ``spec.train`` set, sharing ``loop_key``); seeds may repeat.
      corpus, context, eval_cfg: the data, its window length and the validation settings.
      num_batches: batches each data stream holds (the longest run's steps).
      job_dir: where checkpoints go (and are resumed from); None: none.
      checkpoint_every: seconds between checkpoints; shard_params_above: FSDP threshold.
      on_tokens: progress callback, tokens of each queued step over the pack.
    """

    def __init__(
        self,
        specs: Sequence[RunSpec],
        corpus: Corpus,
        *,
        context: int,
        eval_cfg: EvalConfig,
        num_batches: int,
        job_dir: Path | None,
        checkpoint_every: float,
        shard_params_above: float,
        on_tokens: Callable[[int], None],
    ):
        self.t_start = time.perf_counter()
        train = specs[0].train
        assert train is not None and {loop_key(s.train) for s in specs} == {loop_key(train)}
        self.corpus, self.context, self.eval_cfg = corpus, context, eval_cfg
        self.size = len(specs)
        self.tokens_per_step = train.batch_size * context
        self.on_tokens = on_tokens
        self.mesh = pack_mesh(self.size, train.batch_size, context)
        self.dtype = compute_dtype(train.dtype)
        models = [init_model(s.shape, corpus.n_vocab, context, s.seed, self.dtype) for s in specs]
        self.graphdef = _GRAPHDEFS.setdefault(
            (specs[0].shape, corpus.n_vocab, context, self.dtype), models[0][0]
        )
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *(p for _, p in models))
        state = (params, jax.vmap(make_optimizer(train).init)(params))
        # one data stream per distinct seed; models sharing a seed share its batches
        self.seeds = sorted({s.seed for s in specs})
        self.stream_of = [self.seeds.index(s.seed) for s in specs]
        self.streams = [
            iter(
                batch_dataset(
                    corpus.train,
                    batch_size=train.batch_size,
                    context=context,
                    seed=seed,
                    num_batches=num_batches,
                ).to_iter_dataset()
            )
            for seed in self.seeds
        ]
        self.step, self.elapsed_s = 0, 0.0
        self.slots = [Slot() for _ in specs]
        self.ckpt = RunCheckpoints(job_dir / "checkpoints", checkpoint_every) if job_dir else None
        n_params = sum(x.size for x in jax.tree.leaves(params)) // self.size
        self.shardings = pack_shardings(self.mesh, state, shard=n_params > shard_params_above)
        state = place(state, self.shardings)
        # restored onto the same shardings: each process reads only its own shards
        if self.ckpt and (restored := self.ckpt.restore(like=state)):
            _, state, meta = restored
            self._load_meta(meta)
            on_tokens(self.step * self.tokens_per_step * self.size)
        self.resumed_at = self.step
        self.params, self.opt_state = state
        self.step_fn = make_pack_steps(self.graphdef, train, self.mesh, context)
        self.per_call = steps_per_call()
        self.span = loss_span(train)
        self.lag = metrics_lag()
        self.t_first: float | None = None
        self.timed_steps, self.eval_s = 0, 0.0

    # --- state -----------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "elapsed_s": self.elapsed_s + time.perf_counter() - self.t_start,
            "slots": [asdict(s) for s in self.slots],
            "data": [it.get_state() for it in self.streams],
        }

    def _load_meta(self, meta: dict[str, Any]) -> None:
        self.step, self.elapsed_s = meta["step"], meta["elapsed_s"]
        self.slots = [Slot(**s) for s in meta["slots"]]
        for it, data in zip(self.streams, meta["data"], strict=True):
            it.set_state(data)
        self.t_start = time.perf_counter()

    def save(self) -> None:
        """Checkpoint the arrays and the loop (a no-op without a job directory)."""
        if self.ckpt:
            self.ckpt.save(self.step, (self.params, self.opt_state), self._meta())

    def fork(self) -> tuple[Any, dict[str, Any]]:
        """A copy of the whole state (the next steps donate the current buffers)."""
        return jax.tree.map(jnp.copy, (self.params, self.opt_state)), copy.deepcopy(self._meta())

    def rejoin(self, snapshot: tuple[Any, dict[str, Any]]) -> None:
        """Go back to a state ``fork`` copied (its time stays spent: elapsed keeps counting)."""
        (self.params, self.opt_state), meta = snapshot
        elapsed = self.elapsed_s + time.perf_counter() - self.t_start
        self._load_meta({**meta, "elapsed_s": elapsed})

    def wall_s(self) -> float:
        return self.elapsed_s + time.perf_counter() - self.t_start

    def close(self) -> None:
        if self.ckpt:
            self.ckpt.close()

    # --- training --------------------------------------------------------------------------

    def advance(
        self,
        until: int,
        lrs: np.ndarray,
        logs: Sequence[Sequence[MetricsLog]],
        *,
        eval_at: set[int],
        recent_from: float,
        checkpoint: bool = True,
    ) -> None:
        """Train every live model to step ``until``.

        The steps run ``self.per_call`` at a time in one compiled call, a call never passing
        a validation or ``until``. Each step's metrics are recorded ``self.lag`` calls after it
        was queued, and all of them before a validation, a checkpoint and the return, so the
        records (and what a checkpoint holds) are those of a host sync per step. When every
        model has diverged the loop stops, up to ``lag`` calls after the last one's NaN.

        Args:
          until: the step to stop at.
          lrs: the learning rate of each model at each step, shape (steps, P), read at ``step``.
          logs: for each model, the metrics logs its losses go to.
          eval_at: steps after which to validate (the curve).
          recent_from: steps after this count towards a run's final training loss.
          checkpoint: save when a checkpoint is due (not on a WSD branch, which is redone).
        """
        log_every = max(1, len(lrs) // 200)
        pending = StepMetrics(self.lag)

        def record(records: Any) -> None:
            for r in records:
                self._record(r, logs, log_every=log_every, recent_from=recent_from)

        while self.step < until and any(s.diverged_at is None for s in self.slots):
            # up to K steps a call, none past the next validation or ``until``
            ahead = [s - self.step for s in eval_at if s > self.step]
            count = min(self.per_call, until - self.step, *ahead)
            rows = [np.stack([next(it) for it in self.streams])[self.stream_of]
                    for _ in range(count)]  # fmt: skip
            rows += [np.zeros_like(rows[0])] * (self.per_call - count)
            lr = np.zeros((self.per_call, self.size), np.float32)
            lr[:count] = lrs[self.step : self.step + count]
            batches = place(np.stack(rows), batch_sharding(self.mesh, steps=True))
            self.params, self.opt_state, metrics = self.step_fn(
                self.params, self.opt_state, batches, lr, np.int32(count)
            )
            pending.push(self.step + 1, metrics, lr[:count])
            self.step += count
            record(pending.ready())
            self.on_tokens(self.tokens_per_step * self.size * count)
            if self.step in eval_at:
                record(pending.drain())
                self.validate(logs)
            if checkpoint and self.ckpt and agree(self.ckpt.due()):
                record(pending.drain())
                self.save()
        record(pending.drain())

    def _record(
        self,
        r: StepRecord,
        logs: Sequence[Sequence[MetricsLog]],
        *,
        log_every: int,
        recent_from: float,
    ) -> None:
        """One step's metrics into each live model's record and logs."""
        if self.t_first is None:  # the first step compiled: time from its end
            self.t_first = time.perf_counter()
        else:
            self.timed_steps += 1
        for j, slot in enumerate(self.slots):
            if slot.diverged_at is None:
                slot.record(
                    logs[j],
                    step=r.step,
                    tokens=r.step * self.tokens_per_step,
                    loss=float(r.loss[j]),
                    grad_norm=float(r.grad_norm[j]),
                    lr=float(r.lr[j]),
                    log_line=r.step % log_every == 0,
                    recent=r.step > recent_from,
                )

    def validate(self, logs: Sequence[Sequence[MetricsLog]]) -> None:
        """Validate every live model now; append to its curve and logs."""
        t0 = time.perf_counter()
        vals = evaluate(
            self.graphdef,
            self.params,
            self.corpus,
            self.context,
            self.eval_cfg,
            self.mesh,
            span=self.span,
        )
        self.eval_s += time.perf_counter() - t0
        tokens = self.step * self.tokens_per_step
        for j, slot in enumerate(self.slots):
            if slot.diverged_at is None and (not slot.curve or slot.curve[-1][0] != tokens):
                slot.curve.append([tokens, float(vals[j])])
                for log in logs[j]:
                    log.write(step=self.step, tokens=tokens, val_loss=float(vals[j]))

    def outcome(self, j: int, steps: int, **extra: Any) -> RunOutcome:
        """Model ``j``'s result as a run of ``steps`` planned steps, as things stand now."""
        slot = self.slots[j]
        timed_s = time.perf_counter() - (self.t_first or 0.0) - self.eval_s
        ok = slot.diverged_at is None
        return RunOutcome(
            steps=steps,
            tokens=steps * self.tokens_per_step,
            loss=slot.curve[-1][1] if ok else math.nan,
            train_loss=float(np.mean(slot.recent)) if slot.recent else math.nan,
            curve=[(int(t), v) for t, v in slot.curve],
            diverged_at=slot.diverged_at,
            wall_s=self.wall_s(),
            tokens_per_s=(
                self.timed_steps * self.tokens_per_step / timed_s
                if self.timed_steps > 0 and self.t_first
                else math.nan
            ),
            devices=self.mesh.size,
            dtype=self.dtype,
            spikes=slot.spikes,
            max_grad_norm=slot.max_grad_norm,
            resumed_at=self.resumed_at,
            pack=self.size,
            **extra,
        )


def run_logs(run_dir: Path | None, keep_through_step: int, plan: dict[str, Any]) -> list:
    """Open a run's metrics log and write its run.json (the plan, for tools reading it mid-way).

    Only process 0 of a multi-host run writes them."""
    if run_dir is None or not is_lead():
        return []
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(plan) + "\n")
    return [MetricsLog(run_dir / "metrics.jsonl", keep_through_step)]


def train_pack(
    specs: Sequence[RunSpec],
    corpus: Corpus,
    *,
    context: int,
    eval_cfg: EvalConfig,
    train: TrainConfig | None = None,
    job_dir: Path | None = None,
    run_dirs: Sequence[Path] | None = None,
    checkpoint_every: float = 300.0,
    shard_params_above: float = 1e8,
    stop_fraction: float = 0.0,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> list[RunOutcome]:
    """Train runs of one shape and one token budget together, in one vmapped step.

    Each run keeps its own seed (initialisation and data order), peak learning rate and
    schedule (warmup, then cosine or constant), which ends exactly at the shared D. A run whose
    loss turns NaN is marked diverged at that step while the others go on.

    Args:
      specs: the runs (same ``pack_key``: shape, tokens, batch; seeds, lrs, schedules may differ).
      corpus: the token streams (train and held-out validation).
      context, eval_cfg: the sweep's window length and validation settings.
      train: the training settings of specs that carry none (``RunSpec.resolve``).
      job_dir: where the pack's checkpoints go (resumed from if present); None: no checkpoints.
      run_dirs: each run's directory for run.json and metrics.jsonl; None: no logs.
      checkpoint_every: seconds between checkpoints (one is always written at the end).
      shard_params_above: shard parameters FSDP-style for models with more total parameters.
      stop_fraction: stop after this share of the steps (early stop; the schedule still plans
        the whole run, so a later run without it resumes exactly from here).
      on_tokens: called with the tokens of each finished step, over the whole pack.

    Example:
      >>> outs = train_pack([RunSpec("a", shape, 10**6, 0, 1e-3), RunSpec("b", shape, 10**6, 0,
      ...                    3e-3)], corpus, context=128, train=TrainConfig(),
      ...                   eval_cfg=EvalConfig())       # doctest: +SKIP
    """
    specs = [s.resolve(train) for s in specs]
    if len({pack_key(s) for s in specs}) != 1:
        raise ValueError("a pack's runs must share their shape, token budget and batch settings")
    first = specs[0].train
    steps = planned_steps(specs[0].tokens, first, context)
    stop = stop_step(steps, stop_fraction)
    lrs = lr_table(specs, steps)
    evals = first.evals if stop == steps else max(first.evals, 8)
    eval_at = {max(1, round(stop * (k + 1) / evals)) for k in range(evals)}
    pack = Pack(
        specs,
        corpus,
        context=context,
        eval_cfg=eval_cfg,
        num_batches=steps,
        job_dir=job_dir,
        checkpoint_every=checkpoint_every,
        shard_params_above=shard_params_above,
        on_tokens=on_tokens,
    )
    logs = [
        run_logs(
            d,
            pack.step,
            {
                "run": s.name,
                "steps": steps,
                "tokens": steps * pack.tokens_per_step,
                "warmup_steps": round(s.train.warmup * steps),
                "schedule": s.train.schedule,
            },
        )
        for s, d in zip(specs, run_dirs or [None] * len(specs), strict=True)
    ]
    try:
        pack.advance(stop, lrs, logs, eval_at=eval_at, recent_from=0.9 * stop)
        pack.save()
        extra = {"stopped_at": stop} if stop < steps else {}
        return [pack.outcome(j, steps, **extra) for j in range(pack.size)]
    finally:
        pack.close()
        for log in itertools.chain(*logs):
            log.close()


def train_run(
    spec: RunSpec, corpus: Corpus, *, run_dir: Path | None = None, **kwargs: Any
) -> RunOutcome:
    """Train one run (a pack of one); ``run_dir`` holds its checkpoints and logs.

    Keyword arguments are those of ``train_pack``.

    Example:
      >>> out = train_run(RunSpec("r", ModelShape(1, 32, 2), 10**5, 0), corpus, context=32,
      ...                 train=TrainConfig(), eval_cfg=EvalConfig())   # doctest: +SKIP
    """
    dirs = [run_dir] if run_dir else None
    return train_pack([spec], corpus, job_dir=run_dir, run_dirs=dirs, **kwargs)[0]
