"""The pure jitted functions of training: AdamW, the micro-batched step of one model and of a
pack of models, and the validation loss.

A step is ``(params, opt_state, batch, lr) -> (params, opt_state, metrics)``, jitted with the
state donated. Its static arguments are only what changes the compiled computation: the model's
graph (shape and compute dtype), the optimiser's settings (``AdamW``: betas, weight decay,
clipping), the micro-batch count and the pack's layout on the mesh. The learning rate is an
argument, so runs that differ in peak lr, warmup, schedule or token budget share one compiled
step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscale.backend import (
    eval_sharding,
    fetch,
    micro_batch_tokens,
    place,
    supports_donation,
    vectorize_packs,
)
from jaxscale.config import EvalConfig, TrainConfig
from jaxscale.data import Corpus, eval_batches
from jaxscale.model import loss_fn, span_mask, token_nats

Metrics = dict[str, jax.Array]
StepFn = Callable[..., tuple[nnx.State, optax.OptState, Metrics]]


@dataclass(frozen=True, slots=True)
class AdamW:
    """The optimiser settings a compiled step depends on (its learning rate is an argument).

    Example:
      >>> AdamW.of(TrainConfig(beta2=0.99))
      AdamW(beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0)
    """

    beta1: float
    beta2: float
    weight_decay: float
    grad_clip: float  # clip the global gradient norm to this (0: no clipping)

    @classmethod
    def of(cls, train: TrainConfig) -> AdamW:
        """The optimiser settings of a TrainConfig."""
        return cls(train.beta1, train.beta2, train.weight_decay, train.grad_clip)


def make_optimizer(cfg: TrainConfig | AdamW) -> optax.GradientTransformation:
    """AdamW without its learning rate (applied by the step): clip -> Adam -> decoupled decay.

    u = Adam(clip(g)) + λ·θ, and the step applies θ <- θ - lr·u. Decay applies to matrices only
    (ndim >= 2: kernels, embeddings), as in GPT-2 and nanoGPT.

    Example:
      >>> opt_state = make_optimizer(TrainConfig()).init(params)  # doctest: +SKIP
    """
    parts = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip > 0 else []
    parts += [
        optax.scale_by_adam(b1=cfg.beta1, b2=cfg.beta2),
        optax.add_decayed_weights(
            cfg.weight_decay, mask=lambda p: jax.tree.map(lambda x: x.ndim >= 2, p)
        ),
    ]
    return optax.chain(*parts)


def micro_batches(cfg: TrainConfig, context: int, data_devices: int) -> int:
    """How many micro-batches a step splits its batch into: ``cfg.accum``, or more on CPU.

    Each of the ``data_devices`` holds ``batch_size / data_devices`` rows; where the backend wants
    smaller pieces (``micro_batch_tokens``), the step takes the fewest micro-batches that divide
    those rows evenly, are a multiple of ``cfg.accum`` and hold at most that many tokens a device.
    The gradient is the same mean either way; only the order of summation changes.

    Example:
      >>> micro_batches(TrainConfig(batch_size=32, accum=2), 256, 2)  # doctest: +SKIP
      2
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
    opt: AdamW,
    accum: int = 1,
    span: tuple[int, int] | None = None,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """One optimiser step on ``batch`` (B, L+1) in ``accum`` micro-batches (split by
    ``_split_rows``), their gradients accumulated with a scan. ``span``: the loss covers only
    the targets of ``model.span_mask`` (None: every token)."""
    grad_fn = jax.value_and_grad(lambda p, b: loss_fn(graphdef, p, b, span))
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
    updates, opt_state = make_optimizer(opt).update(grads, opt_state, params)
    params = optax.apply_updates(params, jax.tree.map(lambda u: -lr * u, updates))
    return params, opt_state, {"loss": loss, "grad_norm": optax.tree_utils.tree_norm(grads)}


# One model's step (the sweeps run ``pack_steps``, which wraps the same ``_train_step``).
train_step = jax.jit(
    _train_step, static_argnames=("graphdef", "opt", "accum", "span"), donate_argnums=(0, 1)
)


def _pack_step(
    params: nnx.State,
    opt_state: optax.OptState,
    batch: jax.Array,
    lr: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    opt: AdamW,
    groups: int,
    vectorize: bool,
    accum: int,
    span: tuple[int, int] | None = None,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """``_train_step`` over a pack: every argument has a leading axis of P models.

    The P models form ``groups`` groups (the ``pack`` axis of the mesh, one group per device
    column), vmapped. Within a group the models are vmapped too when ``vectorize`` (GPUs: one
    batched kernel per op fills the device), else mapped in a loop inside the one compiled step:
    XLA:CPU runs a batched matmul slower than the same matmuls one by one (a pack of 8 of
    L2-d64-h2 at batch 16 x 128: 15.2k tok/s vmapped against 28.4k looped and 26.5k for the
    runs one after another, on 1 CPU device). A pack of one is not vmapped at all: XLA:CPU ran
    its size-1 batched matmuls 8% slower than plain ones.
    """
    step = functools.partial(_train_step, graphdef=graphdef, opt=opt, accum=accum, span=span)
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


def _pack_steps(
    params: nnx.State,
    opt_state: optax.OptState,
    batches: jax.Array,
    lrs: jax.Array,
    count: jax.Array,
    **static: Any,
) -> tuple[nnx.State, optax.OptState, Metrics]:
    """The first ``count`` of K ``_pack_step``s in one call: ``batches`` (K, P, B, L+1) and
    ``lrs`` (K, P), one row a step; metrics (K, P), zero past ``count``.

    A scan over the K rows, each step under a ``lax.cond`` that leaves the state as it is past
    ``count``: a short call (up to a validation, the end) runs the same compiled body as a
    full one, so a run's numbers do not depend on where its calls start (a resumed run equals
    an uninterrupted one). K = 1 is the plain step, with neither scan nor cond (jax-metal
    crashes on some while-loop patterns, REFERENCE.md). ``static``: ``_pack_step``'s keywords.
    """
    step = functools.partial(_pack_step, **static)
    if batches.shape[0] == 1:
        out = step(params, opt_state, batches[0], lrs[0])
        return out[0], out[1], jax.tree.map(lambda x: x[None], out[2])

    def one(state: Any, row: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[Any, Metrics]:
        i, batch, lr = row
        zeros = {"loss": jnp.zeros_like(lr), "grad_norm": jnp.zeros_like(lr)}
        *state, metrics = jax.lax.cond(
            i < count, lambda s: step(*s, batch, lr), lambda s: (*s, zeros), state
        )
        return tuple(state), metrics

    rows = (jnp.arange(batches.shape[0]), batches, lrs)
    (params, opt_state), metrics = jax.lax.scan(one, (params, opt_state), rows)
    return params, opt_state, metrics


_PACK_STATIC = ("graphdef", "opt", "groups", "vectorize", "accum", "span")
pack_steps = jax.jit(_pack_steps, static_argnames=_PACK_STATIC, donate_argnums=(0, 1))
# jax-metal cannot donate buffers (REFERENCE.md): the same steps without donation for it.
_pack_steps_kept = jax.jit(_pack_steps, static_argnames=_PACK_STATIC)


def make_pack_steps(graphdef: nnx.GraphDef, cfg: TrainConfig, mesh: Mesh, context: int) -> StepFn:
    """The compiled steps ``(params, opt_state, batches_KxPxBxLp1, lrs_KxP, count) -> (params,
    opt_state, metrics_KxP)`` of a pack on ``mesh`` (``_pack_steps``: the first ``count`` of K
    steps, K the batches' leading axis, ``backend.steps_per_call`` in a sweep), as sweeps run
    them: donated where the backend can, micro-batched per ``micro_batches``. Of ``cfg`` only
    the optimiser settings (``AdamW.of``), the batch size and ``accum`` enter the compiled step.

    Example:
      >>> steps = make_pack_steps(graphdef, TrainConfig(), pack_mesh(4, 32), 128)
      ... # doctest: +SKIP
      >>> params, opt_state, metrics = steps(params, opt_state, batches, lrs, np.int32(16))
      ... # doctest: +SKIP
    """
    return functools.partial(
        pack_steps if supports_donation() else _pack_steps_kept,
        graphdef=graphdef,
        opt=AdamW.of(cfg),
        groups=mesh.shape["pack"],
        vectorize=vectorize_packs(),
        accum=micro_batches(cfg, context, mesh.shape["data"]),
        span=loss_span(cfg),
    )


def loss_span(cfg: TrainConfig) -> tuple[int, int] | None:
    """The (open, close) tokens of the spans the loss covers: ``tasks.ANSWER_SPAN`` under
    ``loss_on: answer``, None (every token) under ``all``.

    Example:
      >>> loss_span(TrainConfig(loss_on="answer"))
      (61, 10)
    """
    if cfg.loss_on == "all":
        return None
    from jaxscale.tasks import ANSWER_SPAN

    return ANSWER_SPAN


@functools.partial(jax.jit, static_argnames=("graphdef", "pieces", "span"))
def _pack_eval_sum(
    params: nnx.State,
    batch: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    pieces: int,
    span: tuple[int, int] | None = None,
) -> jax.Array:
    """Summed nats of one validation batch under each of a pack's models, shape (P,), and the
    count of targets summed. The batch goes through in ``pieces`` micro-batches, as a train
    step's does; with ``span``, only the targets of ``model.span_mask`` count."""
    micro = _split_rows(batch, pieces)

    def summed(p: nnx.State, mb: jax.Array) -> tuple[jax.Array, jax.Array]:
        nats = token_nats(graphdef, p, mb)
        if span is None:
            return nats.sum(), jnp.asarray(nats.size, jnp.float32)
        mask = span_mask(mb, span)
        return jnp.where(mask, nats, 0.0).sum(), mask.sum().astype(jnp.float32)

    def nats(p: nnx.State) -> tuple[jax.Array, jax.Array]:
        sums, counts = jax.lax.map(lambda mb: summed(p, mb), micro)
        return sums.sum(), counts.sum()

    return jax.vmap(nats)(params)


def evaluate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    corpus: Corpus,
    context: int,
    cfg: EvalConfig,
    mesh: Mesh,
    span: tuple[int, int] | None = None,
) -> np.ndarray:
    """Mean validation loss in nats/token of each model of a pack (params with a leading P axis)
    over the first ``cfg.tokens`` held-out tokens; every model sees the same batches. With
    ``span`` (``loss_span``), the mean over the answer tokens only, as the model was trained.

    The batches' sums stay on the device and are fetched once, at the end.

    Example:
      >>> evaluate(graphdef, params_P, corpus, 128, EvalConfig(), pack_mesh(4, 32))
      ... # doctest: +SKIP
      array([5.1, 5.3, 4.9, 5.0], dtype=float32)
    """
    total, count = None, None
    for batch in eval_batches(
        corpus.val, batch_size=cfg.batch_size, context=context, max_tokens=cfg.tokens
    ):
        sharding, rows = eval_sharding(mesh), batch.shape[0] // mesh.shape["data"]
        if batch.shape[0] % mesh.shape["data"]:  # a short last batch: on every device whole
            sharding, rows = NamedSharding(mesh, PartitionSpec()), batch.shape[0]
        batch_sum, batch_count = _pack_eval_sum(
            params,
            place(batch, sharding),
            graphdef=graphdef,
            pieces=_pieces(rows, context),
            span=span,
        )
        total = batch_sum if total is None else total + batch_sum
        count = batch_count if count is None else count + batch_count
    return fetch(total) / np.maximum(fetch(count), 1)
