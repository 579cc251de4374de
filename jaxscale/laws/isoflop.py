"""Hoffmann et al. 2022, approach 2: compute-optimal N_opt(C) from IsoFLOP profiles.

Runs are grouped by compute budget C. Per budget, the profile loss(ln N) is fitted by a parabola
over all of its runs (Hoffmann et al. fit the whole profile; their Figure 3), or over the
``window`` consecutive sizes around its lowest measured loss, whose vertex is N_opt(C); D_opt(C)
is read off the same profile (ln D is exactly linear in ln N along an IsoFLOP line under
C = 6ND, and close to it when C counts attention too). Then N_opt = G·C^a and
D_opt = G_D·C^b are fitted by least squares in log space. A budget counts only when its minimum
is *interior*: the lowest measured loss is not at the smallest or largest size and the vertex lies
within the measured sizes; otherwise the parabola extrapolates and the budget is reported, not used.

The parabola is a second-order model of the profile near its minimum: the wider the sizes it
spans, the more the profile's asymmetry biases its vertex (Hoffmann et al. 2022 fit it "near the
minimum"; Open-Athena's noise-free study of Approach 2 measures the bias growing with the grid's
width). A ladder that trains sizes far from the optimum for approach 3's sake (they pin down
A, α, B and β) can keep them out of the parabola with ``window``.

Intervals come from a residual bootstrap that keeps the design (the sizes at each budget) fixed:
each budget's fitted profile plus residuals drawn from the pooled, leverage-corrected residuals
of every profile, refitted, the vertices and the exponents recomputed (Efron & Tibshirani 1993,
ch. 9: residual resampling for a designed experiment). Porian et al. 2024 show what else biases
these exponents at small scale: FLOPs not counting the head and attention, too long a warmup and
hyper-parameters not tuned per size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from jaxscale.errors import FitDataError
from jaxscale.laws.fit import check_data


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


@dataclass(frozen=True)
class Profile:
    """One budget's IsoFLOP profile and its parabola loss = c2·x² + c1·x + c0, x = ln N.

    Attributes:
      C: the budget (geometric mean of its runs' compute).
      N, D, loss: its runs, sorted by N.
      fitted: which of them the parabola was fitted to (all, or a window around the minimum).
      coef: the parabola (None with fewer than 3 sizes).
      N_opt, D_opt, loss_min: the vertex (NaN when the parabola opens downwards).
      interior: whether the minimum lies inside the measured sizes (see the module docstring).
      reason: why the budget is not interior, for a person to act on; None when it is.
      N_opt_ci: the vertex's bootstrap interval, when intervals were drawn.
    """

    C: float
    N: np.ndarray = field(repr=False)
    D: np.ndarray = field(repr=False)
    loss: np.ndarray = field(repr=False)
    fitted: np.ndarray = field(repr=False)
    coef: tuple[float, float, float] | None
    N_opt: float
    D_opt: float
    loss_min: float
    interior: bool
    reason: str | None
    N_opt_ci: tuple[float, float] | None = None

    @property
    def n_points(self) -> int:
        """Runs the parabola was fitted to."""
        return int(self.fitted.sum())

    def to_dict(self) -> dict[str, Any]:
        return {
            "C": self.C,
            "N_opt": self.N_opt,
            "N_opt_ci": list(self.N_opt_ci) if self.N_opt_ci else None,
            "D_opt": self.D_opt,
            "loss_min": self.loss_min,
            "interior": self.interior,
            "reason": self.reason,
            "n_points": self.n_points,
            "n_runs": len(self.N),
            "N_range": [float(self.N[self.fitted].min()), float(self.N[self.fitted].max())],
            "coef": list(self.coef) if self.coef else None,
        }


def _parabola(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.polyfit(x, y, 2)


def _d_at(x: np.ndarray, D: np.ndarray, x_opt: float) -> float:
    """D along a profile at ln N = x_opt: ln D is linear in ln N on an IsoFLOP line."""
    slope, icept = np.polyfit(x, np.log(D), 1)
    return float(np.exp(icept + slope * x_opt))


def _window(loss: np.ndarray, window: int | None) -> np.ndarray:
    """Which of a profile's runs (sorted by N) its parabola fits: all, or the ``window``
    consecutive sizes centred on the lowest loss (shifted inwards at either end)."""
    fitted = np.zeros(len(loss), dtype=bool)
    if window is None or len(loss) <= window:
        fitted[:] = True
        return fitted
    start = min(max(int(np.argmin(loss)) - window // 2, 0), len(loss) - window)
    fitted[start : start + window] = True
    return fitted


def _profile(
    C: float, N: np.ndarray, D: np.ndarray, loss: np.ndarray, window: int | None = None
) -> Profile:
    order = np.argsort(N)
    N, D, loss = N[order], D[order], loss[order]
    fitted = _window(loss, window)
    x, y = np.log(N[fitted]), loss[fitted]
    nan = float("nan")
    if len(np.unique(x)) < 3:
        why = f"{len(np.unique(x))} sizes: a profile needs at least 3"
        return Profile(C, N, D, loss, fitted, None, nan, nan, nan, False, why)
    c2, c1, c0 = _parabola(x, y)
    if c2 <= 0:
        why = "no minimum: loss does not curve upwards over these sizes (add sizes on both sides)"
        return Profile(C, N, D, loss, fitted, (c2, c1, c0), nan, nan, nan, False, why)
    x_opt = -c1 / (2 * c2)
    best = int(np.argmin(loss))
    reason = None
    lo, hi = N[fitted][[0, -1]]  # the sizes the parabola spans
    if best == 0 or x_opt < x[0]:
        reason = f"minimum at or below the smallest size ({lo:.3g}): add smaller models"
    elif best == len(N) - 1 or x_opt > x[-1]:
        reason = f"minimum at or above the largest size ({hi:.3g}): add larger models"
    return Profile(
        C=C,
        N=N,
        D=D,
        loss=loss,
        fitted=fitted,
        coef=(float(c2), float(c1), float(c0)),
        N_opt=float(np.exp(x_opt)),
        D_opt=_d_at(x, D[fitted], x_opt),
        loss_min=float(c0 - c1 * c1 / (4 * c2)),
        interior=reason is None,
        reason=reason,
    )


@dataclass(frozen=True)
class IsoFlopResult:
    """Approach 2: per-budget profiles and the fitted N_opt = G·C^a, D_opt = G_D·C^b.

    Attributes:
      profiles: every budget, interior or not, smallest C first.
      N_opt, D_opt: the power laws fitted over the interior budgets (``a``, ``b`` their exponents).
      ci_level, bootstrap: the intervals' coverage and resample count (0: no intervals).
    """

    profiles: list[Profile]
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

    @property
    def used(self) -> list[Profile]:
        """The interior budgets the exponents are fitted over."""
        return [p for p in self.profiles if p.interior]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``approach``, ``a``, ``a_ci``, ``b``, ``b_ci``, ``G``, ``G_D``, budgets."""
        return {
            "approach": 2,
            "a": self.a,
            "a_ci": list(self.N_opt.ci) if self.N_opt.ci else None,
            "b": self.b,
            "b_ci": list(self.D_opt.ci) if self.D_opt.ci else None,
            "G": self.N_opt.G,
            "G_D": self.D_opt.G,
            "ci_level": self.ci_level,
            "bootstrap": self.bootstrap,
            "budgets": [p.to_dict() for p in self.profiles],
        }

    def report(self) -> str:
        """A readable table of the budgets and the fitted exponents."""
        pct = f"{100 * self.ci_level:g}%"
        head = f"  {'C':>10} {'N_opt':>10} {'D_opt':>10} {'loss_min':>9} {'runs':>4}"
        lines = [f"{head}  N_opt {pct} CI"]
        for p in self.profiles:
            if not p.interior and not np.isfinite(p.N_opt):
                lines.append(f"  {p.C:>10.3g}  not used: {p.reason}")
                continue
            ci = f"[{p.N_opt_ci[0]:.3g}, {p.N_opt_ci[1]:.3g}]" if p.N_opt_ci else ""
            runs = f"{p.n_points}" + (f"/{len(p.N)}" if p.n_points < len(p.N) else "")
            line = (
                f"  {p.C:>10.3g} {p.N_opt:>10.3g} {p.D_opt:>10.3g} {p.loss_min:>9.4f} "
                f"{runs:>4}  {ci}"
            )
            lines.append(line + ("" if p.interior else f"  not used: {p.reason}"))
        if any(p.n_points < len(p.N) for p in self.profiles):
            lines.append("  runs: fitted/trained; each parabola fits the sizes around its minimum")
        for name, fit in (("N_opt ∝ C^a", self.N_opt), ("D_opt ∝ C^b", self.D_opt)):
            ci = f"  {pct} CI [{fit.ci[0]:.3f}, {fit.ci[1]:.3f}]" if fit.ci else ""
            lines.append(f"  {name}: exponent {fit.a:.3f}{ci}")
        return "\n".join(lines)


def fit_isoflop(
    N: Any,
    D: Any,
    loss: Any,
    C: Any = None,
    *,
    budget: Any = None,
    rtol: float = 0.01,
    bootstrap: int = 0,
    ci_level: float = 0.95,
    seed: int = 0,
    window: int | None = None,
) -> IsoFlopResult:
    """Approach 2: a parabola per IsoFLOP profile, then N_opt = G·C^a and D_opt = G_D·C^b.

    Per budget: loss ≈ c2·(ln N)² + c1·ln N + c0 over its runs (or ``window`` of them);
    ln N_opt = -c1/(2·c2), and ln D_opt is ln D interpolated linearly in ln N at the vertex. The
    exponents are ordinary least squares of ln N_opt and ln D_opt on ln C over the budgets with
    an interior minimum.

    Args:
      N, D, loss: one entry per run. C: compute per run (default 6·N·D).
      budget: the budget each run was planned for (e.g. a sweep's ``budget`` field); by default
        runs whose C agrees within ``rtol`` are one budget.
      bootstrap, ci_level, seed: residual-bootstrap percentile intervals of a, b and each N_opt.
      window: fit each parabola to this many consecutive sizes centred on the budget's lowest
        measured loss (None: to all of them; see the module docstring). The bootstrap keeps
        each budget's window fixed.

    Returns:
      An :class:`IsoFlopResult`.

    Raises:
      FitDataError: fewer than 2 budgets with an interior minimum (the message says why each
        budget failed).

    Example:
      >>> fit_isoflop(N, D, loss, C, bootstrap=1000).to_dict()["a_ci"]   # doctest: +SKIP
    """
    N, D, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, loss))
    C = 6 * N * D if C is None else np.asarray(C, dtype=np.float64).ravel()
    check_data(["N", "D", "loss", "C"], [N, D, loss, C], 3)
    if window is not None and window < 3:
        raise FitDataError(
            f"an IsoFLOP window of {window} sizes cannot hold a parabola (3 at least)"
        )
    labels = group_budgets(C if budget is None else np.asarray(budget, np.float64), rtol)
    groups = [np.flatnonzero(labels == g) for g in np.unique(labels)]
    profiles = [
        _profile(float(np.exp(np.mean(np.log(C[idx])))), N[idx], D[idx], loss[idx], window)
        for idx in groups
    ]
    used = [p for p in profiles if p.interior]
    if len(used) < 2:
        why = "; ".join(f"C={p.C:.3g}: {p.reason}" for p in profiles if not p.interior)
        raise FitDataError(
            f"approach 2 needs at least 2 budgets with an interior minimum, found {len(used)} "
            f"of {len(profiles)} ({why or 'too few budgets'})"
        )
    cs = np.array([p.C for p in used])
    a, g_n = _loglog(cs, np.array([p.N_opt for p in used]))
    b, g_d = _loglog(cs, np.array([p.D_opt for p in used]))
    ci_a = ci_b = None
    if bootstrap:
        draws = _bootstrap(used, bootstrap, np.random.default_rng(seed))
        tail = 100 * (1 - ci_level) / 2
        vertex_ci = np.nanpercentile(draws["N_opt"], [tail, 100 - tail], axis=0)
        lo, hi = np.nanpercentile(draws["ab"], [tail, 100 - tail], axis=0)
        ci_a, ci_b = (float(lo[0]), float(hi[0])), (float(lo[1]), float(hi[1]))
        intervals = {
            id(p): (float(lo), float(hi)) for p, lo, hi in zip(used, *vertex_ci, strict=True)
        }
        profiles = [replace(p, N_opt_ci=intervals.get(id(p))) for p in profiles]  # fmt: skip
    return IsoFlopResult(
        profiles, PowerFit(a, g_n, ci_a), PowerFit(b, g_d, ci_b), ci_level, bootstrap
    )


def _bootstrap(used: list[Profile], k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Residual bootstrap over the interior profiles: ``N_opt`` (k, budgets) and ``ab`` (k, 2).

    Residuals are pooled over the profiles, each scaled by sqrt(n / (n - 3)) for the three
    parameters its parabola used up; a draw whose refitted parabola opens downwards leaves that
    budget out of the draw's exponents (its N_opt is NaN).
    """
    xs = [np.log(p.N[p.fitted]) for p in used]
    fitted = [np.polyval(p.coef, x) for p, x in zip(used, xs, strict=True)]
    pool = np.concatenate(
        [(p.loss[p.fitted] - f) * np.sqrt(p.n_points / (p.n_points - 3))
         for p, f in zip(used, fitted, strict=True) if p.n_points > 3]
    )  # fmt: skip
    if pool.size == 0:  # every profile has exactly 3 sizes: its parabola leaves no residuals
        raise FitDataError("approach 2 intervals need a budget with more than 3 sizes")
    cs = np.array([p.C for p in used])
    n_opt = np.full((k, len(used)), np.nan)
    d_opt = np.full((k, len(used)), np.nan)
    for i in range(k):
        for j, (p, x, f) in enumerate(zip(used, xs, fitted, strict=True)):
            c2, c1, _ = _parabola(x, f + rng.choice(pool, len(x)))
            if c2 > 0:
                x_opt = -c1 / (2 * c2)
                n_opt[i, j], d_opt[i, j] = np.exp(x_opt), _d_at(x, p.D[p.fitted], x_opt)
    ab = np.full((k, 2), np.nan)
    for i in range(k):
        ok = np.isfinite(n_opt[i])
        if ok.sum() >= 2:
            ab[i] = _loglog(cs[ok], n_opt[i, ok])[0], _loglog(cs[ok], d_opt[i, ok])[0]
    return {"N_opt": n_opt, "ab": ab}
