"""The synthetic corpus: a stationary Markov chain whose entropy rate is known exactly.

A well-trained model's loss approaches the entropy rate from above, so a fitted irreducible loss E
has a truth to be compared with. Symbols are printable ASCII bytes: one token per symbol under the
byte-level tokenizer.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, fields

import numpy as np

from jaxscale.errors import DataError

_SYMBOLS = np.frombuffer(
    (string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation).encode(),
    np.uint8,
)


@dataclass(frozen=True)
class Synthetic:
    """A stationary order-k Markov chain over printable bytes with an exactly known entropy.

    Rows ``P(. | last k symbols)`` are drawn from a seeded Dirichlet(alpha): small alpha makes
    them peaked, so a tiny model can learn them. The entropy rate is

        h = sum_s pi(s) * H(P(. | s))    [nats/token]

    with ``pi`` the exact stationary distribution over the S^k states. Documents start from
    ``pi`` and are concatenated without separators; the boundaries add at most ``k ln S / doc``
    nats/token on average (under 1e-3 relative at the defaults).

    Example:
      >>> Synthetic.parse("order=2,symbols=8").entropy_rate() > 0
      True
    """

    order: int = 1  # k: how many previous symbols the next one depends on
    symbols: int = 32  # S: alphabet size (<= 94)
    alpha: float = 0.2  # Dirichlet concentration of each transition row
    seed: int = 0
    tokens: int = 4_000_000  # training tokens (rounded up to whole documents)
    doc: int = 4096  # document length in tokens
    val_fraction: float = 0.05  # val tokens = this * tokens (at least one document)

    @classmethod
    def parse(cls, arg: str) -> Synthetic:
        """Parse ``"key=val,..."`` (e.g. ``"order=2,seed=1"``); empty gives the defaults."""
        types = {f.name: f.type for f in fields(cls)}
        kwargs: dict = {}
        for item in filter(None, arg.split(",")):
            key, _, val = item.partition("=")
            if key.strip() not in types:
                raise DataError(f"unknown synthetic option {key!r}; use: {', '.join(types)}")
            try:
                kwargs[key.strip()] = (float if types[key.strip()] == "float" else int)(val)
            except ValueError:
                raise DataError(f"synthetic option {key}={val!r} is not a number") from None
        spec = cls(**kwargs)
        S, k = spec.symbols, spec.order
        if not (2 <= S <= 94 and 1 <= k < spec.doc and S**k <= 4096) or spec.alpha <= 0:
            raise DataError(
                "synthetic needs 2 <= symbols <= 94, 1 <= order < doc, alpha > 0 and "
                "symbols**order <= 4096"
            )
        if spec.tokens < 1 or spec.val_fraction < 0:
            raise DataError("synthetic needs tokens >= 1 and val_fraction >= 0")
        return spec

    def transitions(self) -> np.ndarray:
        """``P[state, next]`` of shape (S^k, S); state = last k symbols in base S, oldest first."""
        rng = np.random.default_rng((self.seed, 0))
        P = rng.dirichlet(np.full(self.symbols, self.alpha), size=self.symbols**self.order)
        # A tiny floor keeps the chain irreducible and aperiodic, so pi is unique.
        return (P + 1e-6) / (1 + 1e-6 * self.symbols)

    def stationary(self) -> np.ndarray:
        """The stationary distribution ``pi`` over the S^k states (solves ``pi T = pi``)."""
        P, n = self.transitions(), self.symbols**self.order
        T = np.zeros((n, n))
        nxt = (np.arange(n)[:, None] * self.symbols + np.arange(self.symbols)) % n
        np.add.at(T, (np.repeat(np.arange(n), self.symbols), nxt.ravel()), P.ravel())
        A = T.T - np.eye(n)
        A[-1] = 1.0  # replace one (redundant) balance equation by sum(pi) = 1
        pi = np.linalg.solve(A, np.eye(n)[-1])
        return np.clip(pi, 0, None) / np.clip(pi, 0, None).sum()

    def entropy_rate(self) -> float:
        """Exact entropy rate ``h`` in nats per symbol."""
        P = self.transitions()
        return float(self.stationary() @ -(P * np.log(P)).sum(axis=1))

    def sample(self, n_docs: int, *stream: int) -> np.ndarray:
        """``n_docs`` independent stationary chains as symbol bytes, shape (n_docs, doc).

        The draw is a pure function of ``(seed, *stream)``.
        """
        S, k = self.symbols, self.order
        cum = np.cumsum(self.transitions(), axis=1)
        cum[:, -1] = 1.0  # rounding must never let u fall past the last symbol
        rng = np.random.default_rng((self.seed, *stream))
        state = rng.choice(S**k, size=n_docs, p=self.stationary())
        out = np.empty((n_docs, self.doc), np.int64)
        for j in range(k):  # the first k symbols are the digits of the initial state
            out[:, j] = state // S ** (k - 1 - j) % S
        u = rng.random((self.doc - k, n_docs))
        # Sequential in time, vectorised over documents: inverse-CDF sampling per step.
        for t in range(k, self.doc):
            x = (u[t - k, :, None] >= cum[state]).sum(axis=1)
            out[:, t] = x
            state = (state * S + x) % S**k
        return _SYMBOLS[out]
