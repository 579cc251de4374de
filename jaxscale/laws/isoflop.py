"""Hoffmann et al. 2022 approaches 1 and 2: compute-optimal N_opt(C) from the data directly.

Approach 2 (IsoFLOP profiles): group runs by compute budget, fit a parabola of loss against log N
near each budget's minimum, take its vertex as N_opt(C), then fit N_opt = G·C^a and D_opt ∝ C^b in
log space. Approach 1: the lower envelope of loss against FLOPs over all training curves gives, at
each C, the model that reached the lowest loss; fit N_opt ∝ C^a over the envelope.

Porian et al. 2024 warn that embedding/head FLOPs, warmup and untuned hyper-parameters at small
scale bias these exponents (Kaplan's 0.73 against Chinchilla's 0.50).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxscale.laws.fit import FitDataError, check_data


@dataclass(frozen=True)
class PowerFit:
    """y = G·C^a fitted by least squares in log space, with a bootstrap percentile interval."""

    a: float
    G: float
    ci: tuple[float, float] | None = None

    def __call__(self, C: Any) -> np.ndarray:
        return self.G * np.asarray(C, dtype=np.float64) ** self.a


def _loglog(C: np.ndarray, y: np.ndarray, w: np.ndarray | None = None) -> tuple[float, float]:
    a, log_g = np.polyfit(np.log(C), np.log(y), 1, w=w)
    return float(a), float(np.exp(log_g))


def group_budgets(C: Any, rtol: float = 0.01) -> np.ndarray:
    """Label points whose compute agrees within relative ``rtol`` (chained in sorted order)."""
    C = np.asarray(C, dtype=np.float64)
    order = np.argsort(C)
    labels = np.empty(len(C), dtype=int)
    group, prev = 0, None
    for i in order:
        if prev is not None and C[i] > prev * (1 + rtol):
            group += 1
        labels[i], prev = group, C[i]
    return labels


def _vertex(log_n: np.ndarray, loss: np.ndarray, w: np.ndarray) -> tuple[float, float] | None:
    """Vertex (ln N*, L*) of the weighted parabola; None if it opens down or leaves the data."""
    if np.count_nonzero(w) < 3 or len(np.unique(log_n[w > 0])) < 3:
        return None
    c2, c1, c0 = np.polyfit(log_n, loss, 2, w=np.sqrt(w))
    if c2 <= 0:
        return None
    x = -c1 / (2 * c2)
    if not log_n[w > 0].min() <= x <= log_n[w > 0].max():
        return None
    return float(x), float(c0 - c1 * c1 / (4 * c2))


@dataclass(frozen=True)
class IsoFlopResult:
    """Approach 2: per-budget minima and the fitted N_opt = G·C^a, D_opt = G_D·C^b.

    Attributes:
      budgets: one dict per usable budget: ``C``, ``N_opt``, ``D_opt``, ``loss_min``, ``n_points``,
        and the parabola ``coef`` (loss = c2·x² + c1·x + c0 with x = ln N).
      skipped: budgets that gave no minimum, with the reason.
      N_opt, D_opt: the power-law fits (``a``, ``b`` are their exponents).
    """

    budgets: list[dict[str, Any]]
    skipped: list[dict[str, Any]]
    N_opt: PowerFit
    D_opt: PowerFit
    ci_level: float = 0.95
    bootstrap: int = 0

    @property
    def a(self) -> float:
        return self.N_opt.a

    @property
    def b(self) -> float:
        return self.D_opt.a

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``approach``, ``a``, ``b``, ``G``, intervals and ``budgets``."""
        return {
            "approach": 2,
            "a": self.a,
            "b": self.b,
            "G": self.N_opt.G,
            "G_D": self.D_opt.G,
            "ci": {"a": self.N_opt.ci, "b": self.D_opt.ci} if self.bootstrap else None,
            "ci_level": self.ci_level,
            "bootstrap": self.bootstrap,
            "budgets": [{k: v for k, v in b.items() if k != "coef"} for b in self.budgets],
            "skipped": self.skipped,
        }

    def report(self) -> str:
        """A readable table of budgets and the fitted exponents."""
        lines = [f"  {'C':>10} {'N_opt':>10} {'D_opt':>10} {'loss_min':>9} {'points':>6}"]
        for b in self.budgets:
            lines.append(
                f"  {b['C']:>10.3g} {b['N_opt']:>10.3g} {b['D_opt']:>10.3g} "
                f"{b['loss_min']:>9.4f} {b['n_points']:>6d}"
            )
        for s in self.skipped:
            lines.append(f"  {s['C']:>10.3g}  skipped: {s['reason']}")
        for name, fit in (("N_opt ∝ C^a", self.N_opt), ("D_opt ∝ C^b", self.D_opt)):
            pct = f"{100 * self.ci_level:g}%"
            ci = f"  {pct} CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]" if fit.ci else ""
            lines.append(f"  {name}: exponent {fit.a:.3f}{ci}")
        return "\n".join(lines)


def fit_isoflop(
    N: Any,
    D: Any,
    loss: Any,
    C: Any = None,
    *,
    rtol: float = 0.01,
    n_near: int = 7,
    bootstrap: int = 0,
    ci_level: float = 0.95,
    seed: int = 0,
) -> IsoFlopResult:
    """Approach 2: parabola minima per compute budget, then N_opt = G·C^a and D_opt ∝ C^b.

    Per budget: loss ≈ c2·(ln N)² + c1·ln N + c0 over the ``n_near`` points nearest (in ln N) the
    lowest observed loss; ln N_opt = -c1/(2·c2), D_opt = C/(6·N_opt). Bootstrap: resample the points
    within each budget (multinomial weights), refit every parabola and both exponents.

    Args:
      N, D, loss: one entry per run. C: compute per run (default 6·N·D).
      rtol: budgets agreeing within this relative tolerance are one budget.
      n_near: points per parabola (at least 3).
      bootstrap, ci_level, seed: percentile intervals of ``a`` and ``b`` from resamples.

    Returns:
      An :class:`IsoFlopResult`.

    Example:
      >>> fit_isoflop(N, D, loss).a                          # doctest: +SKIP
    """
    N, D, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, loss))
    C = 6 * N * D if C is None else np.asarray(C, dtype=np.float64).ravel()
    check_data(["N", "D", "loss", "C"], [N, D, loss, C], 3)
    labels = group_budgets(C, rtol)
    groups = []
    budgets, skipped = [], []
    for g in np.unique(labels):
        idx = np.flatnonzero(labels == g)
        c = float(np.exp(np.mean(np.log(C[idx]))))
        log_n = np.log(N[idx])
        near = idx[np.argsort(np.abs(log_n - log_n[np.argmin(loss[idx])]))[: max(n_near, 3)]]
        v = _vertex(np.log(N[near]), loss[near], np.ones(len(near)))
        if v is None:
            reason = "fewer than 3 sizes" if len(near) < 3 else "no interior minimum"
            skipped.append({"C": c, "n_points": len(idx), "reason": reason})
            continue
        coef = np.polyfit(np.log(N[near]), loss[near], 2)
        n_opt = float(np.exp(v[0]))
        budgets.append(
            {
                "C": c,
                "N_opt": n_opt,
                "D_opt": c / (6 * n_opt),
                "loss_min": v[1],
                "n_points": len(near),
                "coef": coef.tolist(),
            }
        )
        groups.append((c, near))
    if len(budgets) < 2:
        raise FitDataError(
            f"IsoFLOP fit needs at least 2 budgets with an interior minimum; found {len(budgets)}"
            f" of {len(np.unique(labels))} (each budget needs >= 3 model sizes around its minimum)"
        )
    cs = np.array([b["C"] for b in budgets])
    n_opt = np.array([b["N_opt"] for b in budgets])
    a, g_n = _loglog(cs, n_opt)
    b, g_d = _loglog(cs, cs / (6 * n_opt))
    ci_a = ci_b = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = []
        for _ in range(bootstrap):
            pairs = []
            for c, near in groups:
                w = rng.multinomial(len(near), np.full(len(near), 1 / len(near))).astype(float)
                v = _vertex(np.log(N[near]), loss[near], w)
                if v is not None:
                    pairs.append((c, np.exp(v[0])))
            if len(pairs) >= 2:
                pc, pn = np.array(pairs).T
                draws.append((_loglog(pc, pn)[0], _loglog(pc, pc / (6 * pn))[0]))
        tail = 100 * (1 - ci_level) / 2
        lo, hi = np.percentile(np.array(draws), [tail, 100 - tail], axis=0)
        ci_a, ci_b = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
    return IsoFlopResult(
        budgets, skipped, PowerFit(a, g_n, ci_a), PowerFit(b, g_d, ci_b), ci_level, bootstrap
    )


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
