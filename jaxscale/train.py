"""Train one run: AdamW (optax) with warmup and a decay that ends exactly at the run's D.

The step is a pure function ``(params, opt_state, batch, lr) -> (params, opt_state, metrics)``,
jitted once per (model shape, optimiser settings) with the state donated. The learning rate is an
argument rather than part of the optimiser, so one compiled step serves every token budget of a
shape: the schedule (an optax schedule of the step) is evaluated on the host.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscale.backend import (
    agree,
    batch_sharding,
    compute_dtype,
    eval_sharding,
    fetch,
    is_lead,
    micro_batch_tokens,
    pack_mesh,
    pack_shardings,
    place,
    supports_donation,
    vectorize_packs,
)
from jaxscale.checkpoint import RunCheckpoints
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.data import Corpus, batch_dataset, eval_batches
from jaxscale.model import init_model, loss_fn, token_nats

LN2 = math.log(2.0)


def make_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
    """AdamW without its learning rate (applied by the step): clip -> Adam -> decoupled decay.

    Decay applies to matrices only (ndim >= 2: kernels, embeddings), as in GPT-2 and nanoGPT.
    """
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    parts += [
        optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2),
        optax.add_decayed_weights(
            cfg.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
        ),
    ]
    return optax.chain(*parts)


def lr_schedule(cfg: TrainConfig, total_steps: int) -> optax.Schedule:
    """Linear warmup over ``warmup x total_steps``, then cosine (or constant) to the last step."""
    warmup = round(cfg.warmup * total_steps)
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
        [warmup],
    )


def micro_batches(cfg: TrainConfig, context: int, data_devices: int) -> int:
    """How many micro-batches a step splits its batch into: ``cfg.accum``, or more on CPU.

    Each of the ``data_devices`` holds ``batch_size / data_devices`` rows; where the backend wants
    smaller pieces (``micro_batch_tokens``), the step takes the fewest micro-batches that divide
    those rows evenly, are a multiple of ``cfg.accum`` and hold at most that many tokens a device.
    The gradient is the same mean either way; only the order of summation changes.
    """
    return _pieces(cfg.batch_size // data_devices, context, cfg.accum)


def _pieces(rows: int, context: int, multiple_of: int = 1) -> int:
    """The fewest pieces, a multiple of ``multiple_of``, that split a device's ``rows`` evenly
    into at most ``micro_batch_tokens`` tokens each (``multiple_of`` if nothing fits that)."""
    tokens = micro_batch_tokens()
    if tokens is None or rows % multiple_of:
        return multiple_of
    want = min(rows, max(multiple_of, -(-rows * context // tokens)))
    return next(n for n in range(want, rows + 1) if rows % n == 0 and n % multiple_of == 0)


def _split_rows(batch: jax.Array, pieces: int) -> jax.Array:
    """(B, L+1) -> (pieces, B / pieces, L+1), piece i holding rows i, i + pieces, ...: with the
    batch split over devices in contiguous blocks, every device holds an equal share of each."""
    return batch.reshape(-1, pieces, batch.shape[-1]).swapaxes(0, 1)


def _train_step(
    params: nnx.State,
    opt_state: optax.OptState,
    batch: jax.Array,
    lr: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    cfg: TrainConfig,
    accum: int | None = None,
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """One optimiser step on ``batch`` (B, L+1) in ``accum`` micro-batches (default
    ``cfg.accum``, split by ``_split_rows``), their gradients accumulated with a scan."""
    accum = accum or cfg.accum
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, graphdef))
    if accum == 1:
        loss, grads = grad_fn(params, batch)
    else:
        micro = _split_rows(batch, accum)

        def accumulate(carry: Any, mb: jax.Array) -> tuple[Any, None]:
            loss_i, grads_i = grad_fn(params, mb)
            return jax.tree.map(jnp.add, carry, (loss_i, grads_i)), None

        zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
        loss, grads = jax.tree.map(lambda x: x / accum, (loss, grads))
    updates, opt_state = make_optimizer(cfg).update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
    return params, opt_state, {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}


# One model's step (the sweeps run ``pack_step``, which wraps the same ``_train_step``).
train_step = jax.jit(
    _train_step, static_argnames=("graphdef", "cfg", "accum"), donate_argnums=(0, 1)
)


def _pack_step(
    params: nnx.State,
    opt_state: optax.OptState,
    batch: jax.Array,
    lr: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    cfg: TrainConfig,
    groups: int,
    vectorize: bool,
    accum: int,
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """``_train_step`` over a pack: every argument has a leading axis of P models.

    The P models form ``groups`` groups (the ``pack`` axis of the mesh, one group per device
    column), vmapped. Within a group the models are vmapped too when ``vectorize`` (GPUs: one
    batched kernel per op fills the device), else mapped in a loop inside the one compiled step:
    XLA:CPU runs a batched matmul slower than the same matmuls one by one (a pack of 8 of
    L2-d64-h2 at batch 16 x 128: 15.2k tok/s vmapped against 28.4k looped and 26.5k for the
    runs one after another, on 1 CPU device). A pack of one is not vmapped at all: XLA:CPU ran
    its size-1 batched matmuls 8% slower than plain ones.
    """
    step = functools.partial(_train_step, graphdef=graphdef, cfg=cfg, accum=accum)
    if lr.shape[0] == 1:
        out = step(*jax.tree.map(lambda x: x[0], (params, opt_state, batch, lr)))
        return jax.tree.map(lambda x: x[None], out)

    def group(*xs: Any) -> Any:
        if vectorize or lr.shape[0] == groups:  # one model a group: no loop to save
            return jax.vmap(step)(*xs)
        return jax.lax.map(lambda x: step(*x), xs)

    split = jax.tree.map(
        lambda x: x.reshape(groups, -1, *x.shape[1:]), (params, opt_state, batch, lr)
    )
    out = jax.vmap(group)(*split)
    return jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), out)


_PACK_STATIC = ("graphdef", "cfg", "groups", "vectorize", "accum")
pack_step = jax.jit(_pack_step, static_argnames=_PACK_STATIC, donate_argnums=(0, 1))
# jax-metal cannot donate buffers (REFERENCE.md): the same step without donation for it.
_pack_step_kept = jax.jit(_pack_step, static_argnames=_PACK_STATIC)


def make_pack_step(
    graphdef: nnx.GraphDef, cfg: TrainConfig, mesh: Mesh, context: int
) -> Callable[..., tuple[nnx.State, optax.OptState, dict[str, jax.Array]]]:
    """The compiled step ``(params, opt_state, batch, lr) -> (params, opt_state, metrics)`` of a
    pack on ``mesh``, as sweeps run it: donated where the backend can, micro-batched per
    ``micro_batches``."""
    return functools.partial(
        pack_step if supports_donation() else _pack_step_kept,
        graphdef=graphdef,
        cfg=cfg,
        groups=mesh.shape["pack"],
        vectorize=vectorize_packs(),
        accum=micro_batches(cfg, context, mesh.shape["data"]),
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "pieces"))
def _pack_eval_sum(
    params: nnx.State, batch: jax.Array, *, graphdef: nnx.GraphDef, pieces: int
) -> jax.Array:
    """Summed nats of one validation batch under each of a pack's models: shape (P,). The batch
    goes through in ``pieces`` micro-batches, as a train step's does."""
    micro = _split_rows(batch, pieces)

    def nats(p: nnx.State) -> jax.Array:
        return jax.lax.map(lambda mb: token_nats(graphdef, p, mb).sum(), micro).sum()

    return jax.vmap(nats)(params)


def evaluate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    corpus: Corpus,
    context: int,
    cfg: EvalConfig,
    mesh: Mesh,
) -> np.ndarray:
    """Mean validation loss in nats/token of each model of a pack (params with a leading P axis)
    over the first ``cfg.tokens`` held-out tokens; every model sees the same batches."""
    total, count = 0.0, 0
    for batch in eval_batches(
        corpus.val, batch_size=cfg.batch_size, context=context, max_tokens=cfg.tokens
    ):
        sharding, rows = eval_sharding(mesh), batch.shape[0] // mesh.shape["data"]
        if batch.shape[0] % mesh.shape["data"]:  # a short last batch: on every device whole
            sharding, rows = NamedSharding(mesh, PartitionSpec()), batch.shape[0]
        batch_sum = _pack_eval_sum(
            params, place(batch, sharding), graphdef=graphdef, pieces=_pieces(rows, context)
        )
        total += fetch(batch_sum)
        count += batch.shape[0] * (batch.shape[1] - 1)
    return total / count


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one run produced: the measured numbers, before the sweep adds provenance."""

    steps: int  # the run's planned optimiser steps
    tokens: int  # tokens of the planned run: steps x batch x context
    loss: float  # last validation loss, nats/token (nan if diverged)
    train_loss: float  # mean training loss over the last tenth of the steps
    curve: list[tuple[int, float]]  # (tokens seen, validation loss) along the run
    diverged_at: int | None  # the step whose loss was not finite, if any
    wall_s: float  # time of the run's job until this result, compiling and every attempt included
    tokens_per_s: float  # one model's training throughput after the first (compiling) step
    devices: int  # devices the run's job used
    dtype: str  # the compute dtype used
    spikes: int  # steps whose loss jumped well above its running average
    max_grad_norm: float
    resumed_at: int  # the step a checkpoint restored (0: trained from scratch)
    pack: int = 1  # models trained together in one vmapped step
    stopped_at: int | None = None  # early stop: the last step trained, short of ``steps``
    branch_at: int | None = None  # wsd: the trunk's step this run's cooldown branched off


@dataclass
class _Slot:
    """The loop's record of one model of a pack, saved with every checkpoint."""

    curve: list[list[float]] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)  # training losses of the run's last tenth
    ema: float | None = None  # running average of the training loss, for spike detection
    spikes: int = 0
    max_grad_norm: float = 0.0
    diverged_at: int | None = None


class MetricsLog:
    """``metrics.jsonl`` of one run: loss, gradient norm and lr every few steps, loss spikes, and
    validation points. On resume, lines past the restored step are dropped, so nothing repeats."""

    def __init__(self, path: Path, keep_through_step: int):
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = [
            line
            for line in (path.read_text().splitlines(keepends=True) if path.exists() else [])
            if line.endswith("\n") and json.loads(line)["step"] <= keep_through_step
        ]
        path.write_text("".join(kept))
        self._file = path.open("a", buffering=1)

    def write(self, **record: Any) -> None:
        self._file.write(json.dumps(record) + "\n")

    def close(self) -> None:
        self._file.close()


def planned_steps(tokens: int, train: TrainConfig, context: int) -> int:
    """Optimiser steps of a run of ``tokens``: whole steps, so D is rounded to a step's tokens."""
    return max(1, round(tokens / (train.batch_size * context)))


def stop_step(steps: int, fraction: float) -> int:
    """The last step of a run of ``steps`` stopped early after ``fraction`` (0: not stopped)."""
    return max(1, round(fraction * steps)) if fraction else steps


def cooldown_steps(steps: int, train: TrainConfig) -> int:
    """Steps of a WSD run's final cooldown: its last ``decay`` share."""
    return max(1, round(train.decay * steps))


SPIKE_FACTOR = 1.25  # a loss above 1.25x its running average is logged as a spike


class _Pack:
    """P models of one shape trained in lockstep by one vmapped step, with their data streams,
    checkpoints and loop records. P = 1 is a single run.

    ``advance`` trains up to a step under a given learning-rate table; ``fork`` and ``rejoin``
    copy and restore the whole state, which is how WSD branches its cooldowns off the trunk.
    """

    def __init__(
        self,
        specs: Sequence[RunSpec],
        corpus: Corpus,
        *,
        context: int,
        train: TrainConfig,
        eval_cfg: EvalConfig,
        num_batches: int,
        job_dir: Path | None,
        checkpoint_every: float,
        shard_params_above: float,
        on_tokens: Callable[[int], None],
    ):
        self.t_start = time.perf_counter()
        self.corpus, self.context, self.train, self.eval_cfg = corpus, context, train, eval_cfg
        self.size = len(specs)
        self.tokens_per_step = train.batch_size * context
        self.on_tokens = on_tokens
        self.mesh = pack_mesh(self.size, train.batch_size)
        self.dtype = compute_dtype(train.dtype)
        models = [init_model(s.shape, corpus.n_vocab, context, s.seed, self.dtype) for s in specs]
        self.graphdef = models[0][0]
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
        self.slots = [_Slot() for _ in specs]
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
        self.step_fn = make_pack_step(self.graphdef, train, self.mesh, context)
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
        self.slots = [_Slot(**s) for s in meta["slots"]]
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

        Args:
          until: the step to stop at.
          lrs: the learning rate of each model at each step, shape (steps, P), read at ``step``.
          logs: for each model, the metrics logs its losses go to.
          eval_at: steps after which to validate (the curve).
          recent_from: steps after this count towards a run's final training loss.
          checkpoint: save when a checkpoint is due (not on a WSD branch, which is redone).
        """
        log_every = max(1, len(lrs) // 200)
        while self.step < until and any(s.diverged_at is None for s in self.slots):
            stacked = np.stack([next(stream) for stream in self.streams])
            batch = place(stacked[self.stream_of], batch_sharding(self.mesh))
            lr = lrs[self.step]
            self.params, self.opt_state, metrics = self.step_fn(
                self.params, self.opt_state, batch, lr
            )
            self.step += 1
            # A host sync per step: cheap next to a step, and a NaN is caught where it happens.
            losses, norms = fetch(metrics["loss"]), fetch(metrics["grad_norm"])
            if self.t_first is None:
                self.t_first = time.perf_counter()
            else:
                self.timed_steps += 1
            tokens = self.step * self.tokens_per_step
            for j, slot in enumerate(self.slots):
                if slot.diverged_at is not None:
                    continue
                loss, norm = float(losses[j]), float(norms[j])
                if not math.isfinite(loss):
                    slot.diverged_at = self.step
                    for log in logs[j]:
                        log.write(step=self.step, loss=loss, grad_norm=norm, diverged=True)
                    continue
                spike = slot.ema is not None and loss > SPIKE_FACTOR * slot.ema
                slot.spikes += spike
                slot.ema = loss if slot.ema is None else 0.95 * slot.ema + 0.05 * loss
                slot.max_grad_norm = max(slot.max_grad_norm, norm)
                if self.step > recent_from:
                    slot.recent.append(loss)
                if spike or self.step % log_every == 0:
                    for log in logs[j]:
                        log.write(
                            step=self.step,
                            tokens=tokens,
                            loss=loss,
                            grad_norm=norm,
                            lr=float(lr[j]),
                            **({"spike": True} if spike else {}),
                        )
            self.on_tokens(self.tokens_per_step * self.size)
            if self.step in eval_at:
                self.validate(logs)
            if checkpoint and self.ckpt and agree(self.ckpt.due()):
                self.save()

    def validate(self, logs: Sequence[Sequence[MetricsLog]]) -> None:
        """Validate every live model now; append to its curve and logs."""
        t0 = time.perf_counter()
        vals = evaluate(
            self.graphdef, self.params, self.corpus, self.context, self.eval_cfg, self.mesh
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


def _run_logs(run_dir: Path | None, keep_through_step: int, plan: dict[str, Any]) -> list:
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
    train: TrainConfig,
    eval_cfg: EvalConfig,
    job_dir: Path | None = None,
    run_dirs: Sequence[Path] | None = None,
    checkpoint_every: float = 300.0,
    shard_params_above: float = 1e8,
    stop_fraction: float = 0.0,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> list[RunOutcome]:
    """Train runs of one shape and one token budget together, in one vmapped step.

    Each run keeps its own seed (initialisation and data order) and peak learning rate; the
    schedule (warmup, then cosine or constant) ends exactly at the shared D. A run whose loss
    turns NaN is marked diverged at that step while the others go on.

    Args:
      specs: the runs (same shape and tokens; seeds and learning rates may differ).
      corpus: the token streams (train and held-out validation).
      context, train, eval_cfg: the sweep's settings.
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
    tokens = {s.tokens for s in specs}
    if len({s.shape for s in specs}) != 1 or len(tokens) != 1:
        raise ValueError("a pack's runs must share their shape and token budget")
    steps = planned_steps(tokens.pop(), train, context)
    stop = stop_step(steps, stop_fraction)
    unit = lr_schedule(dataclasses.replace(train, lr=1.0), steps)(np.arange(steps))
    lrs = np.outer(unit, [_peak(s, train) for s in specs]).astype(np.float32)
    evals = train.evals if stop == steps else max(train.evals, 8)
    eval_at = {max(1, round(stop * (k + 1) / evals)) for k in range(evals)}
    pack = _Pack(
        specs,
        corpus,
        context=context,
        train=train,
        eval_cfg=eval_cfg,
        num_batches=steps,
        job_dir=job_dir,
        checkpoint_every=checkpoint_every,
        shard_params_above=shard_params_above,
        on_tokens=on_tokens,
    )
    plan = {
        "steps": steps,
        "tokens": steps * pack.tokens_per_step,
        "warmup_steps": round(train.warmup * steps),
        "schedule": train.schedule,
    }
    logs = [
        _run_logs(d, pack.step, {"run": s.name, **plan})
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
    """
    dirs = [run_dir] if run_dir else None
    return train_pack([spec], corpus, job_dir=run_dir, run_dirs=dirs, **kwargs)[0]


def _peak(spec: RunSpec, train: TrainConfig) -> float:
    """A run's peak learning rate: its own, else the TrainConfig's."""
    return train.lr if spec.lr is None else spec.lr


def wsd_lrs(train: TrainConfig, warmup: int, stable_end: int, end: int) -> np.ndarray:
    """Unit learning rates of a WSD trajectory over steps [0, end): linear warmup over
    ``warmup`` steps, constant to ``stable_end``, then a (1 - sqrt) cooldown (Hägele et al.
    2024's best shape) that reaches ``min_lr_ratio`` on the last step."""
    t = np.arange(end, dtype=np.float64)
    lr = np.minimum(1.0, t / max(warmup, 1))
    cool = t >= stable_end
    frac = (t[cool] - stable_end + 1) / max(end - stable_end, 1)
    lr[cool] = train.min_lr_ratio + (1 - train.min_lr_ratio) * (1 - np.sqrt(frac))
    return lr


def train_wsd(
    specs: Sequence[RunSpec],
    corpus: Corpus,
    *,
    context: int,
    train: TrainConfig,
    eval_cfg: EvalConfig,
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
      specs: the runs (same shape; any token budgets, learning rates and seeds).
      finished: runs that already have a result (skipped; their branch is not redone).
      on_outcome: called with each run's outcome as soon as its branch ends.
      Others: as for ``train_pack``. Checkpoints hold the trunk at each branch point and every
        ``checkpoint_every`` seconds along it; a branch cut short is redone from its branch point.
    """
    if len({s.shape for s in specs}) != 1:
        raise ValueError("a WSD job's runs must share their shape")
    slots = sorted({(_peak(s, train), s.seed) for s in specs})
    rows = [[s for s in specs if (_peak(s, train), s.seed) == slot] for slot in slots]
    if len({tuple(sorted(s.tokens for s in row)) for row in rows}) != 1:
        raise ValueError("every (lr, seed) of a WSD job must cover the same token budgets")
    budgets = sorted({s.tokens for s in specs})
    steps = [planned_steps(d, train, context) for d in budgets]
    branch = [s - cooldown_steps(s, train) for s in steps]
    # the longest run's warmup (as its cosine twin has), cut short of the first branch point
    warmup = min(round(train.warmup * steps[-1]), branch[0] // 2)
    by_budget = {(_peak(s, train), s.seed, s.tokens): s for s in specs}
    dirs = dict(zip((s.name for s in specs), run_dirs or [None] * len(specs), strict=True))
    firsts = [row[0] for row in rows]  # one spec per model: its seed and lr
    pack = _Pack(
        firsts,
        corpus,
        context=context,
        train=train,
        eval_cfg=eval_cfg,
        num_batches=steps[-1],
        job_dir=job_dir,
        checkpoint_every=checkpoint_every,
        shard_params_above=shard_params_above,
        on_tokens=on_tokens,
    )
    peak = np.array([lr for lr, _ in slots], np.float32)
    trunk_lrs = (wsd_lrs(train, warmup, steps[-1], steps[-1])[:, None] * peak).astype(np.float32)
    # the runs still to do, their logs opened from the restored step
    run_of = [[by_budget[(lr, seed, d)] for d in budgets] for lr, seed in slots]
    todo = {s.name for s in specs if not finished(s)}
    logs = {
        s.name: _run_logs(
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
    evals_every = max(1, steps[-1] // max(train.evals, 1))
    trunk_evals = {k * evals_every for k in range(1, train.evals + 1)} | set(branch)
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
            cool = wsd_lrs(train, warmup, b, end)[:, None] * peak
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


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Convert nats/token to bits/byte, comparable across tokenizers."""
    return loss_nats / LN2 / bytes_per_token
