"""The GPT: parameter counts match counting.py, attention is causal, FLOP counts are consistent."""

import jax
import numpy as np
import pytest

from jaxscale import counting
from jaxscale.counting import PRESETS, ModelShape
from jaxscale.model import causal_attention, init_model, loss_fn, token_nats


def _leaves(params) -> dict[str, int]:
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {jax.tree_util.keystr(path): leaf.size for path, leaf in flat}


@pytest.mark.parametrize(
    ("shape", "vocab", "context"),
    [
        (ModelShape(1, 32, 2), 256, 64),
        (ModelShape(3, 96, 3), 256, 128),
        (PRESETS["tiny"], 50257, 256),
    ],
)
def test_counted_parameters_match_the_model(shape: ModelShape, vocab: int, context: int) -> None:
    _, params = init_model(shape, vocab, context, seed=0)
    sizes = _leaves(params)
    embedding = sum(v for k, v in sizes.items() if "wte" in k or "wpe" in k)
    counts = counting.param_counts(shape, vocab, context)
    assert sum(sizes.values()) == counts["total"]
    assert embedding == counts["embedding"]
    assert sum(sizes.values()) - embedding == counts["non_embedding"]


def test_presets_have_the_seed_experiments_sizes() -> None:
    # GPT-2 small (124M with the 50257 vocabulary and 1024 context) is the "medium" preset
    assert counting.total_params(PRESETS["medium"], 50257, 1024) == pytest.approx(124.4e6, rel=1e-3)
    assert counting.non_embedding_params(PRESETS["tiny"]) == pytest.approx(0.79e6, rel=0.01)


def test_attention_is_causal_through_gradients() -> None:
    """Row s of d loss_t / d wpe is the influence of position s on the prediction at t: it must
    vanish exactly for s > t (nanodo's causality test, through the position embeddings)."""
    shape = ModelShape(2, 32, 2)
    graphdef, params = init_model(shape, 64, 16, seed=1)
    tokens = jax.random.randint(jax.random.key(0), (1, 17), 0, 64)

    def loss_at(p, t: int) -> jax.Array:
        return token_nats(graphdef, p, tokens)[0, t]

    for t in (0, 7, 15):
        grads = jax.grad(loss_at)(params, t)
        (wpe,) = jax.tree.leaves(grads["wpe"])
        influence = np.abs(np.asarray(wpe)).sum(-1)
        assert np.all(influence[t + 1 :] == 0.0)
        assert np.all(influence[: t + 1] > 0.0)
    assert float(loss_fn(graphdef, params, tokens)) == pytest.approx(
        float(token_nats(graphdef, params, tokens).mean()), rel=1e-6
    )


@pytest.mark.parametrize(
    ("length", "dtype", "tol"), [(100, "float32", 1e-5), (64, "bfloat16", 2e-2)]
)
def test_blocked_attention_matches_jax_attention(length: int, dtype: str, tol: float) -> None:
    """The CPU path's query blocks (including a last, partial one) give jax's attention and its
    gradients."""
    q, k, v, dy = (
        jax.random.normal(key, (2, length, 3, 16), dtype)
        for key in jax.random.split(jax.random.key(0), 4)
    )

    def vjp(attention):
        y, pullback = jax.vjp(attention, q, k, v)
        return (y, *pullback(dy))

    ours = vjp(causal_attention)
    theirs = vjp(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True))
    for a, b in zip(ours, theirs, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(
            np.asarray(a, np.float32), np.asarray(b, np.float32), atol=tol, rtol=tol
        )


def test_flop_counts() -> None:
    shape = PRESETS["tiny"]
    n = counting.non_embedding_params(shape)
    assert counting.flops_per_token_6n(shape) == 6 * n
    counted = counting.flops_per_token_counted(shape, 256, 256)
    # attention products and the head make the counted figure larger than 6N at this scale
    assert counted > 6 * n
    assert counted == 6 * (4 * 12 * 128**2 + 256 * 128) + 12 * 4 * 256 * 128
