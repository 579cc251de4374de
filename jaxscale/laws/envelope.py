"""Hoffmann et al. 2022, approach 1: N_opt(C) from the lower envelope of the training curves.

Over all training curves, the lower envelope of loss against FLOPs gives, at each C, the model
that reached the lowest loss; N_opt ∝ C^a is fitted over the envelope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxscale.errors import FitDataError
from jaxscale.laws.fit import check_data
from jaxscale.laws.isoflop import PowerFit, _loglog


@dataclass(frozen=True)
class EnvelopeResult:
    """Approach 1: the lower envelope of loss against FLOPs and N_opt = G·C^a fitted over it.

    Attributes:
      points: envelope points as arrays ``C``, ``N``, ``loss``.
      N_opt: the power-law fit (exponent ``a``).
    """

    points: dict[str, np.ndarray] = field(repr=False)
    N_opt: PowerFit
    ci_level: float = 0.95
    bootstrap: int = 0

    @property
    def a(self) -> float:
        return self.N_opt.a

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``approach``, ``a``, ``G``, interval and the envelope points."""
        return {
            "approach": 1,
            "a": self.a,
            "G": self.N_opt.G,
            "ci": {"a": self.N_opt.ci} if self.N_opt.ci else None,
            "ci_level": self.ci_level,
            "envelope": {k: v.tolist() for k, v in self.points.items()},
        }

    def report(self) -> str:
        """One line per envelope point and the exponent."""
        lines = [f"  {'C':>10} {'N':>10} {'loss':>8}"]
        for c, n, l in zip(self.points["C"], self.points["N"], self.points["loss"], strict=True):
            lines.append(f"  {c:>10.3g} {n:>10.3g} {l:>8.4f}")
        fit = self.N_opt
        ci = f"  {100 * self.ci_level:g}% CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]" if fit.ci else ""
        lines.append(f"  N_opt ∝ C^a: exponent {fit.a:.3f}{ci}")
        return "\n".join(lines)


def curves_from_records(records: Iterable[dict[str, Any]]) -> tuple[np.ndarray, ...]:
    """(N, C, loss) points from the ``curve`` ([tokens_seen, val_loss] pairs) of each record,
    with C = 6·N·tokens; records without a curve contribute their final (N, C, loss)."""
    rows = []
    for r in records:
        curve = r.get("curve") or [[r["D"], r["loss"]]]
        rows += [(r["N"], 6.0 * r["N"] * t, l) for t, l in curve if t > 0]
    return tuple(np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))


def fit_envelope(
    N: Any,
    C: Any,
    loss: Any,
    *,
    n_bins: int = 20,
    bootstrap: int = 0,
    ci_level: float = 0.95,
    seed: int = 0,
) -> EnvelopeResult:
    """Approach 1: N_opt(C) from the lower envelope of loss against FLOPs, then N_opt = G·C^a.

    A point is on the envelope if no point with fewer FLOPs reached a lower loss; of those, the
    lowest-loss point in each of ``n_bins`` log-spaced FLOP bins is kept (as Hoffmann et al. bin).
    Points held by the smallest or the largest model are dropped when at least two other sizes
    remain: there the ladder's end, not the law, sets N_opt.

    Args:
      N, C, loss: one entry per evaluation (see :func:`curves_from_records`), or per run.
      bootstrap, ci_level, seed: a percentile interval of ``a`` by resampling envelope points.

    Example:
      >>> fit_envelope(*curves_from_records(records)).a          # doctest: +SKIP
    """
    N, C, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (N, C, loss))
    check_data(["N", "C", "loss"], [N, C, loss], 2)
    order = np.argsort(C, kind="stable")
    on = order[loss[order] < np.minimum.accumulate(np.r_[np.inf, loss[order]])[:-1]]
    edges = np.linspace(np.log(C.min()), np.log(C.max()) * (1 + 1e-12), n_bins + 1)
    bins = np.digitize(np.log(C[on]), edges)
    keep = np.array([on[bins == k][np.argmin(loss[on[bins == k]])] for k in np.unique(bins)])
    # Where the smallest or largest model holds the envelope, N_opt is censored by the ladder.
    inner = keep[(N[keep] > N.min()) & (N[keep] < N.max())]
    if len(np.unique(N[inner])) >= 2:
        keep = inner
    if len(np.unique(N[keep])) < 2:
        raise FitDataError("the loss envelope holds fewer than 2 model sizes: no N_opt(C) trend")
    a, g = _loglog(C[keep], N[keep])
    ci = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            w = rng.multinomial(len(keep), np.full(len(keep), 1 / len(keep))).astype(float)
            if len(np.unique(C[keep][w > 0])) >= 2:
                draws.append(_loglog(C[keep], N[keep], np.sqrt(w))[0])
        tail = 100 * (1 - ci_level) / 2
        lo, hi = np.percentile(draws, [tail, 100 - tail])
        ci = (float(lo), float(hi))
    points = {"C": C[keep], "N": N[keep], "loss": loss[keep]}
    return EnvelopeResult(points, PowerFit(a, g, ci), ci_level, bootstrap)
