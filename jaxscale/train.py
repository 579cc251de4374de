"""Train one run: AdamW (optax) with warmup and a decay that ends exactly at the run's D.

The step is a pure function ``(params, opt_state, batch, lr) -> (params, opt_state, metrics)``,
jitted once per (model shape, optimiser settings) with the state donated. The learning rate is an
argument rather than part of the optimiser, so one compiled step serves every token budget of a
shape: the schedule (an optax schedule of the step) is evaluated on the host.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

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
    warmup = int(round(cfg.warmup * total_steps))
    if cfg.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, cfg.lr, warmup, max(total_steps, warmup + 1), end_value=cfg.lr * cfg.min_lr_ratio
        )
    return optax.join_schedules(
        [optax.linear_schedule(0.0, cfg.lr, max(warmup, 1)), optax.constant_schedule(cfg.lr)],
        [warmup],
    )


@functools.partial(jax.jit, static_argnames=("graphdef", "cfg"), donate_argnums=(0, 1))
def train_step(
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


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _eval_sum(params: nnx.State, batch: jax.Array, *, graphdef: nnx.GraphDef) -> jax.Array:
    return token_nats(graphdef, params, batch).sum()


def evaluate(
    graphdef: nnx.GraphDef, params: nnx.State, corpus: Corpus, context: int, cfg: EvalConfig
) -> float:
    """Mean validation loss in nats/token over the first ``cfg.tokens`` held-out tokens."""
    total, count = 0.0, 0
    for batch in eval_batches(
        corpus.val, batch_size=cfg.batch_size, context=context, max_tokens=cfg.tokens
    ):
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
    wall_s: float  # training + evaluation time, compilation included
    tokens_per_s: float  # training throughput after the first (compiling) step, evals excluded


def train_run(
    spec: RunSpec,
    corpus: Corpus,
    *,
    context: int,
    train: TrainConfig,
    eval_cfg: EvalConfig,
    on_tokens: Callable[[int], None] = lambda n: None,
) -> RunOutcome:
    """Train ``spec`` from scratch and evaluate it along the way and at the end.

    Args:
      spec: the model shape, token budget D and seed.
      corpus: the token streams (train and held-out validation).
      context, train, eval_cfg: the sweep's settings.
      on_tokens: called with the number of tokens of each finished step (for progress bars).
    """
    t_start = time.perf_counter()
    tokens_per_step = train.batch_size * context
    steps = max(1, round(spec.tokens / tokens_per_step))
    schedule = lr_schedule(train, steps)
    lrs = np.asarray([schedule(i) for i in range(steps)], np.float32)
    eval_at = {max(1, round(steps * (k + 1) / train.evals)) for k in range(train.evals)}

    graphdef, params = init_model(spec.shape, corpus.n_vocab, context, spec.seed, train.dtype)
    opt_state = make_optimizer(train).init(params)
    data = batch_dataset(
        corpus.train, batch_size=train.batch_size, context=context, seed=spec.seed, num_batches=steps
    )
    step_fn = functools.partial(train_step, graphdef=graphdef, cfg=train)

    curve: list[tuple[int, float]] = []
    recent: list[float] = []
    diverged_at = None
    t_first, eval_s = None, 0.0
    for step, batch in enumerate(data, start=1):
        params, opt_state, metrics = step_fn(params, opt_state, jnp.asarray(batch), lrs[step - 1])
        loss = float(metrics["loss"])  # a host sync per step: cheap next to a step, and a NaN
        if t_first is None:  # is caught at the step it happens
            t_first = time.perf_counter()
        if not math.isfinite(loss):
            diverged_at = step
            break
        if step > steps * 0.9:
            recent.append(loss)
        on_tokens(tokens_per_step)
        if step in eval_at:
            t_eval = time.perf_counter()
            val = evaluate(graphdef, params, corpus, context, eval_cfg)
            curve.append((step * tokens_per_step, val))
            eval_s += time.perf_counter() - t_eval
    t_end = time.perf_counter()
    timed_steps = (diverged_at or steps) - 1  # steps after the first, up to any divergence
    timed_s = t_end - (t_first or t_end) - eval_s
    return RunOutcome(
        steps=steps,
        tokens=steps * tokens_per_step,
        loss=curve[-1][1] if diverged_at is None else math.nan,
        train_loss=float(np.mean(recent)) if recent else math.nan,
        curve=curve,
        diverged_at=diverged_at,
        wall_s=t_end - t_start,
        tokens_per_s=timed_steps * tokens_per_step / timed_s if timed_steps > 0 else math.nan,
    )


def bits_per_byte(loss_nats: float, bytes_per_token: float) -> float:
    """Convert nats/token to bits/byte, comparable across tokenizers."""
    return loss_nats / LN2 / bytes_per_token
