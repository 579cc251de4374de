"""Parameters and FLOPs of the GPT in ``model.py``, by formula (checked against the real tree).

Conventions (a law must say which N it uses):
  * non-embedding N (Kaplan et al. 2020): every parameter except the token and position
    embeddings. The output head is tied to the token embedding, so it is not counted again.
  * total N (Hoffmann et al. 2022, "Chinchilla"): every parameter.

FLOPs per training token (forward + backward = 3x forward):
  * ``6N`` with N non-embedding: Kaplan's approximation, the C in ``C = 6ND``.
  * counted: 6 x (weights of every matmul, the tied head included)
    + 12 x n_layer x context x d_model
    for the attention score and value products (PaLM, appendix B). At small scale attention and the
    head are a large share, which is why 6ND under-counts there (Porian et al. 2024).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelShape:
    """The shape of one GPT in a ladder.

    Attributes:
      n_layer: transformer blocks.
      d_model: residual-stream width; must be divisible by ``n_head``.
      n_head: attention heads.
    """

    n_layer: int
    d_model: int
    n_head: int

    @property
    def label(self) -> str:
        """A short name, e.g. ``L4-d128-h4``."""
        return f"L{self.n_layer}-d{self.d_model}-h{self.n_head}"


# Vocabulary of each tokenizer, for counting before a corpus is loaded (a plan's FLOPs).
TOKENIZER_VOCAB: dict[str, int] = {"bytes": 256, "gpt2": 50257}

# The seed experiment's presets (../shared/REFERENCE.md; nanoGPT's GPT-2 small is "medium").
PRESETS: dict[str, ModelShape] = {
    "tiny": ModelShape(4, 128, 4),
    "small": ModelShape(6, 384, 6),
    "medium": ModelShape(12, 768, 12),
    "large": ModelShape(24, 1024, 16),
}


def block_params(d_model: int) -> int:
    """Parameters of one pre-LN block: LN, qkv+proj (with biases), LN, 4x GELU MLP (with biases)."""
    d = d_model
    attn = (d * 3 * d + 3 * d) + (d * d + d)
    mlp = (d * 4 * d + 4 * d) + (4 * d * d + d)
    return attn + mlp + 2 * (2 * d)  # two LayerNorms, scale and bias each


def non_embedding_params(shape: ModelShape) -> int:
    """Kaplan's N: blocks plus the final LayerNorm."""
    return shape.n_layer * block_params(shape.d_model) + 2 * shape.d_model


def embedding_params(shape: ModelShape, vocab: int, context: int) -> int:
    """Token and learned position embeddings (the head is tied to the token embedding)."""
    return (vocab + context) * shape.d_model


def params_with_head(shape: ModelShape, vocab: int) -> int:
    """Porian et al. 2024's N: non-embedding parameters plus the output head (tied here to the
    token embedding, so vocab x d_model), the convention that keeps small-model exponents honest
    (leaving the head out biases N_opt(C) towards Kaplan's 0.73)."""
    return non_embedding_params(shape) + vocab * shape.d_model


def total_params(shape: ModelShape, vocab: int, context: int) -> int:
    """Chinchilla's N: every parameter."""
    return non_embedding_params(shape) + embedding_params(shape, vocab, context)


def param_counts(shape: ModelShape, vocab: int, context: int) -> dict[str, int]:
    """All conventions at once; ``total == non_embedding + embedding`` always holds."""
    counts = {
        "non_embedding": non_embedding_params(shape),
        "embedding": embedding_params(shape, vocab, context),
    }
    counts["total"] = counts["non_embedding"] + counts["embedding"]
    return counts


def flops_per_token_6n(shape: ModelShape) -> float:
    """Kaplan's training FLOPs per token, 6N with N non-embedding."""
    return 6.0 * non_embedding_params(shape)


def flops_per_token_counted(shape: ModelShape, vocab: int, context: int) -> float:
    """Training FLOPs per token counting every matmul and the attention products.

    forward = 2 x (12 d^2 per layer + vocab x d for the head) + 4 x n_layer x context x d;
    training = 3 x forward.
    """
    d, L = shape.d_model, shape.n_layer
    matmul_weights = L * 12 * d * d + vocab * d
    return 6.0 * matmul_weights + 12.0 * L * context * d


def shape_for_depth(n_layer: int, *, aspect: int = 64, head_dim: int = 64) -> ModelShape:
    """One complexity dial (nanochat's ``--depth``): d_model = aspect x depth, heads of 64."""
    d_model = aspect * n_layer
    return ModelShape(n_layer, d_model, max(1, d_model // head_dim))


def shapes_near(n_target: float, k: int = 4) -> list[ModelShape]:
    """``k`` shapes straddling ``n_target`` non-embedding parameters: the k/2 largest below it and
    the rest smallest above it, sorted by size.

    Candidates are nanochat's depth dial (aspect 64, heads of 64) and, for the very small models a
    laptop budget calls for, thinner dials up to depth 6 (aspect 32 and 16, heads of 32 and 16).
    """
    dials = [(64, 64, 96), (32, 32, 6), (16, 16, 6)]  # (aspect, head_dim, deepest)
    shapes = [
        shape_for_depth(depth, aspect=aspect, head_dim=head_dim)
        for aspect, head_dim, deepest in dials
        for depth in range(1, deepest + 1)
    ]
    candidates = {non_embedding_params(s): s for s in shapes}
    sizes = sorted(candidates)
    below = [n for n in sizes if n <= n_target]
    above = [n for n in sizes if n > n_target]
    n_below = min(len(below), max(k // 2, k - len(above)))
    chosen = below[len(below) - n_below :] + above[: k - n_below]
    return [candidates[n] for n in chosen]
