"""A GPT-2-style decoder in Flax NNX, functional at the jit boundary.

Pre-LayerNorm blocks, causal softmax attention, a 4x GELU MLP, learned positions,
and an output head tied to the token embedding (GPT-2, nanoGPT). Shapes ride in names:
B batch, L sequence, D d_model, H heads, K head size, V vocabulary.

Jitted code never sees the module: ``init_model`` splits it into a static ``GraphDef`` and a pytree
of parameters once, and ``loss_fn``/``logits_fn`` merge them back inside the traced function
(the Flax NNX "functional API"), so a train step is a pure function of arrays that can be
jitted, vmapped over a pack of models and donated.

Example:
    >>> graphdef, params = init_model(ModelShape(2, 64, 2), vocab=256, context=128, seed=0)
    >>> loss = loss_fn(graphdef, params, jnp.zeros((4, 129), jnp.int32))       # doctest: +SKIP
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale.counting import ModelShape

# flax >= 0.11 treats a module's plain list as static and needs nnx.List; flax 0.10.4 (the pinned
# Apple-Metal stack) has no nnx.List and takes a plain list.
_ModuleList = getattr(nnx, "List", list)

_INIT_STD = 0.02  # GPT-2's initialiser scale

# Queries per block of the CPU attention (see ``causal_attention``). On 2 cores at context 256, its
# forward and backward take 0.44x the time of jax.nn.dot_product_attention's with 64-query blocks,
# 0.51x with 128 and 0.66x with 32 (smaller blocks pay more in per-op overhead).
_ATTN_BLOCK = 64


def causal_attention(q_BxLxHxK: jax.Array, k_BxLxHxK: jax.Array, v_BxLxHxK: jax.Array) -> jax.Array:
    """softmax(q k^T / sqrt(K) + causal mask) v, the maths of ``jax.nn.dot_product_attention``.

    Off CPU this is ``jax.nn.dot_product_attention``. On CPU, XLA materialises the (B, H, L, L)
    scores and runs several memory-bound passes over them (scale, mask, softmax, and their
    gradients), half of them on masked entries; that was 28% of a train step. Here the queries go
    in blocks of ``_ATTN_BLOCK``, each against only the keys at or before its last position, which
    skips the blocks above the diagonal (at context 256, 62% of the scores are computed) and keeps
    each block's scores smaller. Scores and softmax are float32 whatever the input dtype, as in
    ``jax.nn.dot_product_attention``; the 1/sqrt(K) scale is applied to q (B L H K) rather than to
    the scores (B H L L).
    """
    if jax.default_backend() != "cpu":
        return jax.nn.dot_product_attention(q_BxLxHxK, k_BxLxHxK, v_BxLxHxK, is_causal=True)
    K = q_BxLxHxK.shape[-1]
    q, k, v = (jnp.swapaxes(t, 1, 2) for t in (q_BxLxHxK, k_BxLxHxK, v_BxLxHxK))  # B H L K
    q = q * jnp.asarray(K**-0.5, q.dtype)
    L = q.shape[2]
    ys = []
    for start in range(0, L, _ATTN_BLOCK):
        end = min(start + _ATTN_BLOCK, L)
        s_BxHxQxS = jnp.einsum(
            "bhqk,bhsk->bhqs", q[:, :, start:end], k[:, :, :end], preferred_element_type=jnp.float32
        )
        causal_QxS = np.arange(end)[None, :] <= np.arange(start, end)[:, None]
        p_BxHxQxS = jax.nn.softmax(jnp.where(causal_QxS, s_BxHxQxS, -jnp.inf), axis=-1)
        ys.append(p_BxHxQxS.astype(v.dtype) @ v[:, :, :end])
    return jnp.swapaxes(jnp.concatenate(ys, axis=2), 1, 2)


class Block(nnx.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(
        self, d_model: int, n_head: int, n_layer: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        init = nnx.initializers.normal(_INIT_STD)
        # GPT-2 scales the residual projections by 1/sqrt(2 x n_layer) so the stream's variance
        # does not grow with depth.
        resid_init = nnx.initializers.normal(_INIT_STD / (2 * n_layer) ** 0.5)
        kw = {"dtype": dtype, "rngs": rngs}
        self.n_head = n_head
        self.ln1 = nnx.LayerNorm(d_model, **kw)
        self.qkv = nnx.Linear(d_model, 3 * d_model, kernel_init=init, **kw)
        self.proj = nnx.Linear(d_model, d_model, kernel_init=resid_init, **kw)
        self.ln2 = nnx.LayerNorm(d_model, **kw)
        self.fc1 = nnx.Linear(d_model, 4 * d_model, kernel_init=init, **kw)
        self.fc2 = nnx.Linear(4 * d_model, d_model, kernel_init=resid_init, **kw)

    def __call__(self, x_BxLxD: jax.Array) -> jax.Array:
        B, L, D = x_BxLxD.shape
        H = self.n_head
        qkv_BxLx3xHxK = self.qkv(self.ln1(x_BxLxD)).reshape(B, L, 3, H, D // H)
        q, k, v = (qkv_BxLx3xHxK[:, :, i] for i in range(3))
        y_BxLxHxK = causal_attention(q, k, v)
        x_BxLxD = x_BxLxD + self.proj(y_BxLxHxK.reshape(B, L, D))
        return x_BxLxD + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x_BxLxD))))


class GPT(nnx.Module):
    """Token + learned position embeddings, ``n_layer`` blocks, final LN, tied head."""

    def __init__(
        self, shape: ModelShape, vocab: int, context: int, *, dtype: jnp.dtype, rngs: nnx.Rngs
    ):
        D = shape.d_model
        self.wte = nnx.Embed(
            vocab, D, embedding_init=nnx.initializers.normal(_INIT_STD), dtype=dtype, rngs=rngs
        )
        self.wpe = nnx.Param(nnx.initializers.normal(_INIT_STD)(rngs.params(), (context, D)))
        self.blocks = _ModuleList(
            [
                Block(D, shape.n_head, shape.n_layer, dtype=dtype, rngs=rngs)
                for _ in range(shape.n_layer)
            ]
        )
        self.ln_f = nnx.LayerNorm(D, dtype=dtype, rngs=rngs)

    def __call__(self, tokens_BxL: jax.Array) -> jax.Array:
        L = tokens_BxL.shape[1]
        x_BxLxD = self.wte(tokens_BxL) + self.wpe[:L].astype(self.wte.dtype)
        for block in self.blocks:
            x_BxLxD = block(x_BxLxD)
        # The tied head: logits in float32 whatever the compute dtype, for a stable softmax.
        return self.wte.attend(self.ln_f(x_BxLxD)).astype(jnp.float32)


def init_model(
    shape: ModelShape, vocab: int, context: int, seed: int, dtype: str = "float32"
) -> tuple[nnx.GraphDef, nnx.State]:
    """Build a GPT and split it into (static graph definition, float32 parameter pytree)."""
    model = GPT(shape, vocab, context, dtype=jnp.dtype(dtype), rngs=nnx.Rngs(seed))
    return nnx.split(model)


def logits_fn(graphdef: nnx.GraphDef, params: nnx.State, tokens_BxL: jax.Array) -> jax.Array:
    """Next-token logits (B, L, V) of the model ``(graphdef, params)``."""
    return nnx.merge(graphdef, params)(tokens_BxL)


def token_nats(graphdef: nnx.GraphDef, params: nnx.State, batch_BxLp1: jax.Array) -> jax.Array:
    """Per-token cross-entropy in nats, (B, L), of predicting batch[:, 1:] from batch[:, :-1]."""
    logits_BxLxV = logits_fn(graphdef, params, batch_BxLp1[:, :-1])
    targets_BxL = batch_BxLp1[:, 1:]
    logz_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
    picked_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
    return logz_BxL - picked_BxL


def span_mask(batch_BxLp1: jax.Array, span: tuple[int, int]) -> jax.Array:
    """Which targets of ``batch[:, 1:]`` lie in a span: (B, L) bool.

    Target j is in a span when the last of the tokens ``span = (open, close)`` among the inputs
    ``batch[:, :j+1]`` is ``open``: the span's tokens after ``open`` up to and including
    ``close``. Targets before the window's first marker are outside (their opening is unseen).

    Example:
      >>> span_mask(jnp.array([[10, 49, 61, 50, 10, 51]]), (61, 10)).astype(int)
      Array([[0, 0, 1, 1, 0]], dtype=int32)
    """
    inputs_BxL = batch_BxLp1[:, :-1]
    marker_BxL = jnp.where(inputs_BxL == span[0], 1, jnp.where(inputs_BxL == span[1], -1, 0))
    pos_BxL = jnp.where(marker_BxL != 0, jnp.arange(inputs_BxL.shape[1]), -1)
    last_BxL = jax.lax.cummax(pos_BxL, axis=1)
    state_BxL = jnp.take_along_axis(marker_BxL, jnp.maximum(last_BxL, 0), axis=1)
    return (last_BxL >= 0) & (state_BxL == 1)


def loss_fn(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch_BxLp1: jax.Array,
    span: tuple[int, int] | None = None,
) -> jax.Array:
    """Mean next-token cross-entropy in nats: the training objective.

    With ``span`` (``train: {loss_on: answer}``), the mean over the targets ``span_mask``
    selects only: Σ nats·m / max(1, Σ m). Without it, the mean over every token.
    """
    nats_BxL = token_nats(graphdef, params, batch_BxLp1)
    if span is None:
        return nats_BxL.mean()
    mask_BxL = span_mask(batch_BxLp1, span)
    return jnp.where(mask_BxL, nats_BxL, 0.0).sum() / jnp.maximum(mask_BxL.sum(), 1)
