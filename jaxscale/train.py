"""Train one run: AdamW (optax) with warmup and a decay that ends exactly at the run's D.

The step is a pure function ``(params, opt_state, batch, lr) -> (params, opt_state, metrics)``,
jitted once per (model shape, optimiser settings) with the state donated. The learning rate is an
argument rather than part of the optimiser, so one compiled step serves every token budget of a
shape: the schedule (an optax schedule of the step) is evaluated on the host.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh

from jaxscale.backend import (
    batch_sharded,
    compute_dtype,
    data_mesh,
    replicated,
    supports_donation,
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


def _train_step(
    params: nnx.State,
    opt_state: optax.OptState,
    batch: jax.Array,
    lr: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    cfg: TrainConfig,
) -> tuple[nnx.State, optax.OptState, dict[str, jax.Array]]:
    """One optimiser step on ``batch`` (B, L+1); micro-batches are accumulated with a scan."""
    grad_fn = jax.value_and_grad(functools.partial(loss_fn, graphdef))
    if cfg.accum == 1:
        loss, grads = grad_fn(params, batch)
    else:
        micro = batch.reshape(cfg.accum, -1, batch.shape[-1])

        def accumulate(carry: Any, mb: jax.Array) -> tuple[Any, None]:
            loss_i, grads_i = grad_fn(params, mb)
            return jax.tree.map(jnp.add, carry, (loss_i, grads_i)), None

        zeros = (jnp.zeros(()), jax.tree.map(jnp.zeros_like, params))
        (loss, grads), _ = jax.lax.scan(accumulate, zeros, micro)
        loss, grads = jax.tree.map(lambda x: x / cfg.accum, (loss, grads))
    updates, opt_state = make_optimizer(cfg).update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
    return params, opt_state, {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}


train_step = jax.jit(_train_step, static_argnames=("graphdef", "cfg"), donate_argnums=(0, 1))
# jax-metal cannot donate buffers (REFERENCE.md): the same step without donation for it.
_train_step_kept = jax.jit(_train_step, static_argnames=("graphdef", "cfg"))


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _eval_sum(params: nnx.State, batch: jax.Array, *, graphdef: nnx.GraphDef) -> jax.Array:
    return token_nats(graphdef, params, batch).sum()


def evaluate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    corpus: Corpus,
    context: int,
    cfg: EvalConfig,
    mesh: Mesh | None = None,
) -> float:
    """Mean validation loss in nats/token over the first ``cfg.tokens`` held-out tokens."""
    total, count = 0.0, 0
    for batch in eval_batches(
        corpus.val, batch_size=cfg.batch_size, context=context, max_tokens=cfg.tokens
    ):
        if mesh is not None and batch.shape[0] % mesh.size == 0:
            batch = jax.device_put(batch, batch_sharded(mesh))
        total += float(_eval_sum(params, jnp.asarray(batch), graphdef=graphdef))
        count += batch.shape[0] * (batch.shape[1] - 1)
    return total / count


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """What one run produced: the measured numbers, before the sweep adds provenance."""

    steps: int
    tokens: int  # tokens actually trained: steps x batch x context
    loss: float  # final validation loss, nats/token (nan if diverged)
    train_loss: float  # mean training loss over the last tenth of the steps
    curve: list[tuple[int, float]]  # (tokens seen, validation loss) along the run
    diverged_at: int | None  # the step whose loss was not finite, if any
    wall_s: float  # training + evaluation time over every attempt, compilation included
    tokens_per_s: float  # training throughput after the first (compiling) step, evals excluded
    devices: int  # devices the batch was split over
    dtype: str  # the compute dtype used
    spikes: int  # steps whose loss jumped well above its running average
    max_grad_norm: float
    resumed_at: int  # the step a checkpoint restored (0: trained from scratch)


@dataclass
class _LoopState:
    """The loop's own state, saved with every checkpoint so a resumed run continues exactly."""

    step: int = 0
    curve: list[list[float]] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)  # training losses of the last tenth
    ema: float | None = None  # running average of the training loss, for spike detection
    spikes: int = 0
    max_grad_norm: float = 0.0
    elapsed_s: float = 0.0  # wall time of earlier attempts


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


SPIKE_FACTOR = 1.25  # a loss above 1.25x its running average is logged as a spike


def train_run(
    spec: RunSpec,
    corpus: Corpus,
    *,
    context: int,
    train: TrainConfig,
    eval_cfg: EvalConfig,
    run_dir: Path | None = None,
    checkpoint_every: float = 300.0,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> RunOutcome:
    """Train ``spec`` (resuming from its last checkpoint if any), evaluating along the way.

    Args:
      spec: the model shape, token budget D and seed.
      corpus: the token streams (train and held-out validation).
      context, train, eval_cfg: the sweep's settings.
      run_dir: where checkpoints and metrics.jsonl go; None trains without either.
      checkpoint_every: seconds between checkpoints (one is always written at the end).
      on_tokens: called with the number of tokens of each finished step (for progress bars).
    """
    t_start = time.perf_counter()
    tokens_per_step = train.batch_size * context
    steps = planned_steps(spec.tokens, train, context)
    lrs = np.asarray(lr_schedule(train, steps)(np.arange(steps)), np.float32)
    eval_at = {max(1, round(steps * (k + 1) / train.evals)) for k in range(train.evals)}
    log_every = max(1, steps // 200)

    mesh = data_mesh(train.batch_size)
    dtype = compute_dtype(train.dtype)
    graphdef, params = init_model(spec.shape, corpus.n_vocab, context, spec.seed, dtype)
    state = (params, make_optimizer(train).init(params))
    batches = iter(
        batch_dataset(
            corpus.train, batch_size=train.batch_size, context=context, seed=spec.seed,
            num_batches=steps,
        ).to_iter_dataset()
    )  # fmt: skip
    loop = _LoopState()
    ckpt = RunCheckpoints(run_dir / "checkpoints", checkpoint_every) if run_dir else None
    if ckpt and (restored := ckpt.restore(like=state)):
        _, state, meta = restored
        batches.set_state(meta.pop("data"))
        loop = _LoopState(**meta)
        on_tokens(loop.step * tokens_per_step)
    resumed_at = loop.step
    params, opt_state = jax.device_put(state, replicated(mesh))
    log = MetricsLog(run_dir / "metrics.jsonl", loop.step) if run_dir else None
    if run_dir:  # what the run is planned to be, for tools reading its directory mid-way
        plan = {
            "run": spec.name,
            "steps": steps,
            "tokens": steps * tokens_per_step,
            "warmup_steps": round(train.warmup * steps),
            "schedule": train.schedule,
        }
        (run_dir / "run.json").write_text(json.dumps(plan) + "\n")
    jitted = train_step if supports_donation() else _train_step_kept
    step_fn = functools.partial(jitted, graphdef=graphdef, cfg=train)

    def save() -> None:
        if ckpt:
            meta = {**asdict(loop), "data": batches.get_state()}
            ckpt.save(loop.step, (params, opt_state), meta)

    diverged_at = None
    t_first, eval_s = None, 0.0
    while loop.step < steps:
        batch = jax.device_put(next(batches), batch_sharded(mesh))
        lr = lrs[loop.step]
        params, opt_state, metrics = step_fn(params, opt_state, batch, lr)
        loop.step += 1
        # A host sync per step: cheap next to a step, and a NaN is caught where it happens.
        loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
        t_first = t_first or time.perf_counter()
        if not math.isfinite(loss):
            diverged_at = loop.step
            if log:
                log.write(step=loop.step, loss=loss, grad_norm=grad_norm, diverged=True)
            break
        spike = loop.ema is not None and loss > SPIKE_FACTOR * loop.ema
        loop.spikes += spike
        loop.ema = loss if loop.ema is None else 0.95 * loop.ema + 0.05 * loss
        loop.max_grad_norm = max(loop.max_grad_norm, grad_norm)
        if loop.step > steps * 0.9:
            loop.recent.append(loss)
        on_tokens(tokens_per_step)
        tokens = loop.step * tokens_per_step
        if log and (spike or loop.step % log_every == 0):
            log.write(step=loop.step, tokens=tokens, loss=loss, grad_norm=grad_norm,
                      lr=float(lr), **({"spike": True} if spike else {}))  # fmt: skip
        if loop.step in eval_at:
            t_eval = time.perf_counter()
            val = evaluate(graphdef, params, corpus, context, eval_cfg, mesh)
            eval_s += time.perf_counter() - t_eval
            loop.curve.append([tokens, val])
            if log:
                log.write(step=loop.step, tokens=tokens, val_loss=val)
        if ckpt and (ckpt.due() or loop.step == steps):
            loop.elapsed_s += time.perf_counter() - t_start
            t_start = time.perf_counter()
            save()
    t_end = time.perf_counter()
    if ckpt:
        ckpt.close()
    if log:
        log.close()
    timed_steps = (diverged_at or loop.step) - resumed_at - 1  # after this attempt's first step
    timed_s = t_end - (t_first or t_end) - eval_s
    return RunOutcome(
        steps=steps,
        tokens=steps * tokens_per_step,
        loss=loop.curve[-1][1] if diverged_at is None else math.nan,
        train_loss=float(np.mean(loop.recent)) if loop.recent else math.nan,
        curve=[(int(t), v) for t, v in loop.curve],
        diverged_at=diverged_at,
        wall_s=loop.elapsed_s + t_end - t_start,
        tokens_per_s=timed_steps * tokens_per_step / timed_s if timed_steps > 0 else math.nan,
        devices=mesh.size,
        dtype=dtype,
        spikes=loop.spikes,
        max_grad_norm=loop.max_grad_norm,
        resumed_at=resumed_at,
    )


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Convert nats/token to bits/byte, comparable across tokenizers."""
    return loss_nats / LN2 / bytes_per_token
