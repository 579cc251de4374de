"""A GPT-2-style decoder in Flax NNX, functional at the jit boundary.

Pre-LayerNorm blocks, causal ``jax.nn.dot_product_attention``, a 4x GELU MLP, learned positions,
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
from flax import nnx

from jaxscale.counting import ModelShape

# flax >= 0.11 treats a module's plain list as static and needs nnx.List; flax 0.10.4 (the pinned
# Apple-Metal stack) has no nnx.List and takes a plain list.
_ModuleList = getattr(nnx, "List", list)

_INIT_STD = 0.02  # GPT-2's initialiser scale


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
        y_BxLxHxK = jax.nn.dot_product_attention(q, k, v, is_causal=True)
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


def loss_fn(graphdef: nnx.GraphDef, params: nnx.State, batch_BxLp1: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy in nats: the training objective."""
    return token_nats(graphdef, params, batch_BxLp1).mean()
