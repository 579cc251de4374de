"""Fast sampling from a trained GPT: a KV cache and a jitted decode loop.

``cached_forward`` runs the model of ``jaxscale.model`` on S new tokens at positions
``start .. start + S - 1`` against a cache of every earlier position's keys and values, reusing
the model's own layers (LayerNorms, projections, MLP, tied head); only attention is written
here, over the cache. A prompt is one call (S = P, the prefill), each generated token another
(S = 1). ``generate`` decodes every row of a batch (problems x samples) in one
``lax.while_loop`` into a fixed output buffer, with a per-row done mask (a row is done after it
emits ``stop``) and an early exit once every row is done.

Sampling: logits / temperature, then top-k (the k most likely tokens), then top-p (the smallest
set of most likely tokens whose probability reaches p); temperature 0 is greedy (argmax).

Example:
    >>> out = generate(graphdef, params, prompts_BxP, max_new=8, key=jax.random.key(0),
    ...                temperature=1.0, stop=10)            # doctest: +SKIP
    >>> out.tokens.shape, out.lengths.shape                 # doctest: +SKIP
    ((B, 8), (B,))
"""

from __future__ import annotations

import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxscale.model import GPT

Cache = tuple[tuple[jax.Array, jax.Array], ...]  # per block (keys, values), each (B, C, H, K)


def empty_cache(model: GPT, batch: int, length: int) -> Cache:
    """Zeroed keys and values for ``length`` positions of every block, (B, C, H, K) each."""
    D = model.wte.embedding[...].shape[1]
    out = []
    for block in model.blocks:
        H = block.n_head
        shape = (batch, length, H, D // H)
        dtype = model.wte.dtype or jnp.float32
        out.append((jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)))
    return tuple(out)


def cached_forward(
    model: GPT, tokens_BxS: jax.Array, cache: Cache, start: jax.Array
) -> tuple[jax.Array, Cache]:
    """Logits (B, S, V) of ``tokens`` at positions ``start..start+S-1``, and the updated cache.

    Attention of query position i is softmax(q_i k_j^T / sqrt(K)) over cached positions
    j <= i, the same causal attention as ``model.causal_attention`` on the full sequence.
    """
    S = tokens_BxS.shape[1]
    pos_S = start + jnp.arange(S)
    dtype = model.wte.dtype or jnp.float32
    x_BxSxD = model.wte(tokens_BxS) + jnp.take(model.wpe[...], pos_S, axis=0).astype(dtype)
    new_cache = []
    for block, (k_cache, v_cache) in zip(model.blocks, cache, strict=True):
        B, _, D = x_BxSxD.shape
        H = block.n_head
        qkv = block.qkv(block.ln1(x_BxSxD)).reshape(B, S, 3, H, D // H)
        q_BxSxHxK, k_new, v_new = (qkv[:, :, i] for i in range(3))
        put = jax.lax.dynamic_update_slice_in_dim
        k_cache = put(k_cache, k_new.astype(k_cache.dtype), start, 1)
        v_cache = put(v_cache, v_new.astype(v_cache.dtype), start, 1)
        C = k_cache.shape[1]
        scale = jnp.asarray((D // H) ** -0.5, q_BxSxHxK.dtype)
        s_BxHxSxC = jnp.einsum(
            "bshk,bchk->bhsc", q_BxSxHxK * scale, k_cache, preferred_element_type=jnp.float32
        )
        causal_SxC = jnp.arange(C)[None, :] <= pos_S[:, None]
        p_BxHxSxC = jax.nn.softmax(jnp.where(causal_SxC, s_BxHxSxC, -jnp.inf), axis=-1)
        y_BxSxHxK = jnp.einsum("bhsc,bchk->bshk", p_BxHxSxC.astype(v_cache.dtype), v_cache)
        x_BxSxD = x_BxSxD + block.proj(y_BxSxHxK.reshape(B, S, D))
        x_BxSxD = x_BxSxD + block.fc2(jax.nn.gelu(block.fc1(block.ln2(x_BxSxD))))
        new_cache.append((k_cache, v_cache))
    logits = model.wte.attend(model.ln_f(x_BxSxD)).astype(jnp.float32)
    return logits, tuple(new_cache)


def filter_logits(logits_BxV: jax.Array, top_k: int, top_p: jax.Array) -> jax.Array:
    """Logits with every token outside the top-k and the top-p nucleus set to -inf.

    top_k 0 keeps all; the nucleus is the smallest set of most likely tokens whose probability
    reaches ``top_p`` (the most likely token always stays).

    Example:
      >>> filter_logits(jnp.log(jnp.array([[0.5, 0.3, 0.2]])), 0, 0.7)
      Array([[-0.6931472, -1.2039728,       -inf]], dtype=float32)
    """
    V = logits_BxV.shape[-1]
    if 0 < top_k < V:
        kth = jax.lax.top_k(logits_BxV, top_k)[0][:, -1:]
        logits_BxV = jnp.where(logits_BxV < kth, -jnp.inf, logits_BxV)
    order = jnp.argsort(-logits_BxV, axis=-1)
    sorted_ = jnp.take_along_axis(logits_BxV, order, axis=-1)
    probs = jax.nn.softmax(sorted_, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
    keep_sorted = before < top_p
    keep = jnp.zeros_like(keep_sorted).at[jnp.arange(len(order))[:, None], order].set(keep_sorted)
    return jnp.where(keep, logits_BxV, -jnp.inf)


class Generated(NamedTuple):
    """Decoded tokens (B, max_new; ``pad`` after a row's stop), lengths (B,) with the stop
    token counted, and the steps the loop ran."""

    tokens: jax.Array
    lengths: jax.Array
    steps: jax.Array


@functools.partial(
    jax.jit, static_argnames=("graphdef", "max_new", "top_k", "greedy", "stop", "pad")
)
def _generate(
    params: nnx.State,
    prompts_BxP: jax.Array,
    key: jax.Array,
    temperature: jax.Array,
    top_p: jax.Array,
    *,
    graphdef: nnx.GraphDef,
    max_new: int,
    top_k: int,
    greedy: bool,
    stop: int,
    pad: int,
) -> Generated:
    model = nnx.merge(graphdef, params)
    B, P = prompts_BxP.shape
    cache = empty_cache(model, B, P + max_new)
    logits, cache = cached_forward(model, prompts_BxP, cache, jnp.asarray(0))
    last = logits[:, -1]
    out = jnp.full((B, max_new), pad, jnp.int32)
    done = jnp.zeros((B,), bool)
    lengths = jnp.zeros((B,), jnp.int32)

    def cond(state: tuple) -> jax.Array:
        t, _, _, done, *_ = state
        return (t < max_new) & ~jnp.all(done)

    def body(state: tuple) -> tuple:
        t, last, cache, done, out, lengths, key = state
        key, sub = jax.random.split(key)
        if greedy:
            tok = jnp.argmax(last, axis=-1).astype(jnp.int32)
        else:
            z = filter_logits(last / temperature, top_k, top_p)
            tok = jax.random.categorical(sub, z, axis=-1).astype(jnp.int32)
        tok = jnp.where(done, pad, tok)
        out = out.at[:, t].set(tok)
        lengths = lengths + (~done).astype(jnp.int32)
        done = done | (tok == stop)
        logits, cache = cached_forward(model, tok[:, None], cache, P + t)
        return t + 1, logits[:, 0], cache, done, out, lengths, key

    state = (jnp.asarray(0), last, cache, done, out, lengths, key)
    t, _, _, _, out, lengths, _ = jax.lax.while_loop(cond, body, state)
    return Generated(out, lengths, t)


def generate(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    prompts_BxP: jax.Array,
    *,
    max_new: int,
    key: jax.Array,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: int = 10,
    pad: int = 0,
) -> Generated:
    """Sample up to ``max_new`` tokens after each prompt row (all of one length P), in one
    jitted ``lax.while_loop``; ``temperature=0`` (or ``top_k=1``) is greedy decoding.

    The cache holds P + max_new positions, which must fit the model's context.

    Example:
      >>> generate(graphdef, params, jnp.zeros((4, 3), jnp.int32), max_new=5,
      ...          key=jax.random.key(0)).tokens.shape     # doctest: +SKIP
      (4, 5)
    """
    greedy = temperature == 0 or top_k == 1
    return _generate(
        params,
        jnp.asarray(prompts_BxP, jnp.int32),
        key,
        jnp.asarray(max(temperature, 1e-6), jnp.float32),
        jnp.asarray(top_p, jnp.float32),
        graphdef=graphdef,
        max_new=max_new,
        top_k=top_k,
        greedy=greedy,
        stop=stop,
        pad=pad,
    )


def decode_speed(
    graphdef: nnx.GraphDef, params: nnx.State, prompts_BxP: np.ndarray, max_new: int
) -> float:
    """Generated tokens per second of ``generate`` on these prompts, timed after a compile.

    Every row decodes all ``max_new`` steps (no stop token), so the count is B x max_new.
    """
    kw = {"max_new": max_new, "key": jax.random.key(0), "stop": -1}
    jax.block_until_ready(generate(graphdef, params, prompts_BxP, **kw))
    t0 = time.perf_counter()
    out = jax.block_until_ready(generate(graphdef, params, prompts_BxP, **kw))
    return float(out.tokens.size / (time.perf_counter() - t0))
