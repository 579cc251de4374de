"""A sweep's laws, fitted and checked: what a scientist asks of a law before believing it.

From a sweep's fit points (one per (N, D), see ``results.fit_points``) this fits every law the
design allows and then validates them, by default and in one place:

* **held out**: the Chinchilla law is refitted without the runs of the largest budget and
  predicts them (``jaxscale.heldout``);
* **intervals**: bootstrap percentile intervals for every parameter of every law and for what is
  derived from L(N, D): the exponents a and b of N_opt ∝ C^a and D_opt ∝ C^b over the budgets
  (β/(α+β) and α/(α+β) where C ∝ N·D), and N_opt, D_opt and tokens per parameter at the
  largest budget;
* **agreement**: approach 2's exponent a (IsoFLOP parabolas, with its interval) beside approach 3's;
* **truth**: on the synthetic corpus, the fitted E beside the exact entropy rate;
* **warnings** a person can act on: a fit that did not converge, a second law that fits nearly
  as well, a standard error larger than its value, a budget with no interior minimum, a compute
  optimum outside the measured sizes, a held-out miss, approaches that disagree. Each says what
  to run to fix it.

The compute-optimal allocation counts FLOPs as the ladder does (attention and head included,
Porian et al. 2024): along a budget C the tokens are D = C / f(N), with f(N) the FLOPs per token
interpolated over the ladder's own runs, and N_opt(C) minimises L(N, C / f(N)) numerically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from jaxscale.errors import UserError
from jaxscale.heldout import check_heldout, heldout_warning
from jaxscale.laws import (
    Chinchilla,
    FitResult,
    IsoFlopResult,
    fit_chinchilla,
    fit_isoflop,
    fit_power,
)
from jaxscale.laws.isoflop import group_budgets

BOOTSTRAP = 400  # resamples behind every interval of a sweep's report
CI_LEVEL = 0.95
# approach 2's exponent a with a wider interval than this is a warning: agreeing with approach
# 3 then says little
A_CI_WIDTH = 0.25
TRUTH_TOLERANCE = 0.05  # a fitted E this far (relative) from a known entropy is a warning
CURVE_SAMPLES = 200  # bootstrap laws behind the band of approach 3's N_opt(C) curve
RUNNER_UP_GAP = 0.01  # another optimum within 1% of the objective: the law is not pinned down


@dataclass(frozen=True)
class Design:
    """The sweep's points as columns, and how its runs are grouped into compute budgets.

    Attributes:
      run: run names; N: parameters in the law's convention; D: training tokens; C: training
        FLOPs as counted (``C_counted``: attention and head included); loss: final loss.
      budget: each run's planned budget (an IsoFLOP design), or None for a grid.
    """

    run: np.ndarray
    N: np.ndarray
    D: np.ndarray
    C: np.ndarray
    loss: np.ndarray
    budget: np.ndarray | None = None

    @classmethod
    def from_points(cls, points: list[dict[str, Any]], n_key: str = "N") -> Design:
        budgets = [p.get("budget") for p in points]
        return cls(
            run=np.array([p.get("run", f"run{i}") for i, p in enumerate(points)], dtype=object),
            N=np.array([p[n_key] for p in points], dtype=np.float64),
            D=np.array([p["D"] for p in points], dtype=np.float64),
            C=np.array([p.get("C_counted") or p["C"] for p in points], dtype=np.float64),
            loss=np.array([p["loss"] for p in points], dtype=np.float64),
            budget=np.array(budgets, dtype=np.float64) if all(budgets) else None,
        )

    def tiers(self) -> np.ndarray:
        """Labels of the compute tiers, largest last: the planned budgets of an IsoFLOP design;
        in a grid, where C rarely repeats, the fifth of the runs (at least 3) with the most C
        form the top tier and each other run is its own."""
        if self.budget is not None:
            return group_budgets(self.budget, 0.01)
        order = np.argsort(self.C)
        labels = np.empty(len(self.C), dtype=int)
        labels[order] = np.arange(len(self.C))
        top = max(3, len(self.C) // 5)
        return np.minimum(labels, len(self.C) - top)

    def flops_per_token(self) -> Callable[[float], float]:
        """f(N): FLOPs per training token at size N, log-linearly interpolated over the runs
        (and extrapolated by the end slopes)."""
        order = np.argsort(self.N)
        log_n, log_f = np.log(self.N[order]), np.log(self.C[order] / self.D[order])
        log_n, idx = np.unique(log_n, return_index=True)
        log_f = log_f[idx]
        if len(log_n) == 1:
            return lambda n: float(np.exp(log_f[0]) * n / np.exp(log_n[0]))
        slope_lo = (log_f[1] - log_f[0]) / (log_n[1] - log_n[0])
        slope_hi = (log_f[-1] - log_f[-2]) / (log_n[-1] - log_n[-2])

        def f(n: float) -> float:
            x = math.log(n)
            if x < log_n[0]:
                return float(np.exp(log_f[0] + slope_lo * (x - log_n[0])))
            if x > log_n[-1]:
                return float(np.exp(log_f[-1] + slope_hi * (x - log_n[-1])))
            return float(np.exp(np.interp(x, log_n, log_f)))

        return f


def optimum(law: Chinchilla, C: float, flops: Callable[[float], float], bounds: tuple) -> float:
    """N_opt at budget C: argmin over N of L(N, C / f(N)), searched in log N within ``bounds``
    (a decade beyond the ladder's sizes each way)."""
    p = law.params
    log_a, log_b = (math.log(max(p[k], 1e-300)) for k in ("A", "B"))

    def loss(log_n: float) -> float:
        log_d = math.log(C / flops(math.exp(log_n)))
        # in logs: a bootstrap resample's law may hold an A of 1e250 (a runaway exponent)
        terms = np.array([log_a - p["alpha"] * log_n, log_b - p["beta"] * log_d])
        with np.errstate(over="ignore"):
            return float(p["E"] + np.exp(terms).sum())

    res = minimize_scalar(loss, bounds=bounds, method="bounded", options={"xatol": 1e-6})
    return math.exp(res.x)


@dataclass
class SweepAnalysis:
    """Every law a sweep's design allows, with its checks (laws.json holds ``to_dict()``)."""

    design: Design
    fits: dict[str, FitResult]
    skipped: dict[str, str]
    isoflop: IsoFlopResult | None
    heldout: dict[str, Any] | None
    optimal: dict[str, Any] | None
    agreement: dict[str, Any] | None
    truth: dict[str, Any] | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "heldout": self.heldout,
            "isoflop": self.isoflop.to_dict() if self.isoflop else None,
            "optimal": self.optimal,
            "agreement": self.agreement,
            "truth": self.truth,
            "warnings": self.warnings,
            "skipped_laws": self.skipped,
        }


def _ci(samples: np.ndarray) -> list[float]:
    tail = 100 * (1 - CI_LEVEL) / 2
    lo, hi = np.nanpercentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


def analyse(
    points: list[dict[str, Any]],
    *,
    n_key: str = "N",
    entropy: float | None = None,
    bootstrap: int | None = None,
    seed: int = 0,
    isoflop_window: int | None = None,
) -> SweepAnalysis:
    """Fit and validate a sweep's laws (see the module docstring).

    Args:
      points: fit points (``results.fit_points``): ``N`` (or ``n_key``), ``D``, ``C_counted`` or
        ``C``, ``loss``, and ``budget`` for an IsoFLOP design.
      n_key: the record field that is the law's N.
      entropy: the corpus' exact entropy rate (nats/token), when known: the truth for E.
      bootstrap: resamples behind every interval (default :data:`BOOTSTRAP`).
      isoflop_window: approach 2's parabolas use this many sizes around each budget's lowest
        loss (``fit_isoflop``'s ``window``; None: every size).

    Example:
      >>> a = analyse(fit_points(read_records("reports/quick"))[0])   # doctest: +SKIP
      >>> a.heldout["max_abs_rel_err"], a.warnings                     # doctest: +SKIP
    """
    bootstrap = BOOTSTRAP if bootstrap is None else bootstrap
    design = Design.from_points(points, n_key)
    N, D, loss = design.N, design.D, design.loss
    tiers = design.tiers()
    fits: dict[str, FitResult] = {}
    skipped: dict[str, str] = {}
    warnings: list[str] = []
    # L(N) and L(D) need a column of the grid: several sizes at one D, several D at one size
    at_d, at_n = np.isclose(D, D.max(), rtol=1e-3), np.isclose(N, N.max(), rtol=1e-6)
    candidates: dict[str, Callable[[], FitResult]] = {
        "L_N": lambda: fit_power(N[at_d], loss[at_d], bootstrap=bootstrap, seed=seed),
        "L_D": lambda: fit_power(D[at_n], loss[at_n], bootstrap=bootstrap, seed=seed),
        "L_ND": lambda: fit_chinchilla(N, D, loss, bootstrap=bootstrap, seed=seed),
    }
    for key, fit in candidates.items():
        try:
            fits[key] = fit()
        except UserError as e:
            skipped[key] = str(e)
    for key, fit in fits.items():
        warnings += _fit_warnings(key, fit)
    iso = None
    try:
        iso = fit_isoflop(N, D, loss, design.C, budget=design.budget, bootstrap=bootstrap,
                          seed=seed, window=isoflop_window)  # fmt: skip
    except UserError as e:
        skipped["isoflop"] = str(e)
        if design.budget is not None:
            warnings.append(f"approach 2 (IsoFLOP): {e}")
    if iso is not None:
        for p in iso.profiles:
            if not p.interior:
                warnings.append(f"IsoFLOP budget C={p.C:.3g}: {p.reason}")
        warnings += _wide_isoflop(iso)
    heldout, why = check_heldout(design, tiers, seed, fits.get("L_ND"))
    if heldout is None:
        skipped["heldout"] = why
    elif (warning := heldout_warning(heldout)) is not None:
        warnings.append(warning)
    optimal = agreement = None
    if "L_ND" in fits:
        optimal = _optimal(design, fits["L_ND"], tiers)
        warnings += optimal.pop("warnings")
        if iso is not None:
            agreement = _agreement(iso, optimal)
            if not agreement["agree"]:
                warnings.append(agreement["statement"] + ": add budgets or sizes per budget")
    truth = None
    if entropy is not None and "L_ND" in fits:
        fit = fits["L_ND"]
        truth = {"entropy": entropy, "E": fit.params["E"], "E_ci": list(fit.ci["E"]) if fit.ci
                 else None, "rel_err": (fit.params["E"] - entropy) / entropy}  # fmt: skip
        if abs(truth["rel_err"]) > TRUTH_TOLERANCE:
            warnings.append(
                f"the fitted E = {fit.params['E']:.4g} is {100 * truth['rel_err']:+.1f}% from the "
                f"corpus' exact entropy {entropy:.4g} (tolerance {100 * TRUTH_TOLERANCE:g}%): the "
                "law's floor is wrong; train larger models for longer, nearer the floor"
            )
    return SweepAnalysis(design, fits, skipped, iso, heldout, optimal, agreement, truth, warnings)


def _fit_warnings(key: str, fit: FitResult) -> list[str]:
    out = []
    if not fit.converged:
        out.append(f"{key}: the fit did not converge ({fit.message}); its parameters are not "
                   "an optimum")  # fmt: skip
    gap = fit.runner_up["rel_gap"] if fit.runner_up else None
    if gap is not None and gap < RUNNER_UP_GAP:
        other = ", ".join(f"{k}={v:.3g}" for k, v in fit.runner_up["params"].items())
        out.append(
            f"{key}: a second optimum fits within {100 * gap:.2g}% of the best ({other}): these "
            "runs do not decide between them; add sizes and budgets"
        )
    loose = [
        f"{name} {value:.3g} ± {fit.stderr[name]:.3g}"
        for name, value in fit.params.items()
        if not math.isfinite(fit.stderr[name]) or fit.stderr[name] > abs(value)
    ]
    if loose:
        out.append(
            f"{key}: standard errors larger than the values ({', '.join(loose)}): these runs do "
            "not determine them; add sizes and budgets, or longer runs"
        )
    return out


def _optimal(design: Design, fit: FitResult, tiers: np.ndarray) -> dict[str, Any]:
    """The compute optimum of L(N, D) at the largest budget, and the exponents, with intervals
    from the fit's bootstrap samples."""
    flops = design.flops_per_token()
    top = tiers == tiers.max()
    C = float(np.exp(np.mean(np.log(design.C[top]))))
    bounds = (math.log(design.N.min()) - math.log(10), math.log(design.N.max()) + math.log(10))

    def at(law: Chinchilla) -> tuple[float, float, float]:
        n = optimum(law, C, flops, bounds)
        return n, C / flops(n), C / flops(n) / n

    budgets = np.exp([np.mean(np.log(design.C[tiers == t])) for t in np.unique(tiers)])
    span = np.geomspace(budgets.min(), budgets.max(), 5)
    if budgets.max() < 1.01 * budgets.min():  # one budget: the slope through it
        span = budgets.min() * np.array([0.5, 1.0, 2.0])

    def slopes(law: Chinchilla) -> tuple[float, float]:
        # N_opt ∝ C^a and D_opt ∝ C^b of the law itself over the ladder's budgets, C counted
        # as its runs count it. Where f(N) ∝ N^γ (attention and head: γ < 1 at small widths)
        # a = β/(α + γβ), not β/(α+β): approach 2's parabolas measure the former, so the
        # agreement check compares them with it (noise-free draws from a law agree to 0.001).
        n = np.array([optimum(law, c, flops, bounds) for c in span])
        d = span / np.array([flops(x) for x in n])
        return tuple(float(np.polyfit(np.log(span), np.log(y), 1)[0]) for y in (n, d))

    n_opt, d_opt, tpp = at(fit.law)
    p = fit.params
    a, b = slopes(fit.law)
    out: dict[str, Any] = {
        "C": C,
        "N_opt": n_opt,
        "D_opt": d_opt,
        "tokens_per_param": tpp,
        "a": a,
        "b": b,
        "a_asymptotic": p["beta"] / (p["alpha"] + p["beta"]),
        "b_asymptotic": p["alpha"] / (p["alpha"] + p["beta"]),
        "warnings": [],
    }
    curve_c = np.geomspace(budgets.min() / 3, budgets.max() * 3, 13)
    out["curve"] = {"C": curve_c.tolist(),
                    "N_opt": [optimum(fit.law, c, flops, bounds) for c in curve_c]}  # fmt: skip
    if fit.bootstrap_params is not None:
        names = list(p)
        samples = [Chinchilla(**dict(zip(names, row, strict=True))) for row in
                   fit.bootstrap_params if np.all(np.isfinite(row))]  # fmt: skip
        draws = np.array([at(law) for law in samples])
        band = np.array([[optimum(law, c, flops, bounds) for c in curve_c]
                         for law in samples[:CURVE_SAMPLES]])  # fmt: skip
        tail = 100 * (1 - CI_LEVEL) / 2
        lo, hi = np.percentile(band, [tail, 100 - tail], axis=0)
        out["curve"] |= {"lo": lo.tolist(), "hi": hi.tolist()}
        exps = np.array([slopes(law) for law in samples])
        out |= {"N_opt_ci": _ci(draws[:, 0]), "D_opt_ci": _ci(draws[:, 1]),
                "tokens_per_param_ci": _ci(draws[:, 2]), "a_ci": _ci(exps[:, 0]),
                "b_ci": _ci(exps[:, 1])}  # fmt: skip
    sizes = design.N[top]
    if not sizes.min() <= n_opt <= sizes.max():
        side = "smaller" if n_opt < sizes.min() else "larger"
        out["warnings"].append(
            f"the compute optimum at C={C:.3g} (N_opt={n_opt:.3g}) lies outside the sizes "
            f"measured there ({sizes.min():.3g} to {sizes.max():.3g}): add {side} models"
        )
    return out


def _wide_isoflop(iso: IsoFlopResult) -> list[str]:
    """A warning when approach 2's interval on a is wider than :data:`A_CI_WIDTH`, naming the
    budget whose minimum is least certain (the widest N_opt interval, in ln N)."""
    ci = iso.N_opt.ci
    if ci is None or ci[1] - ci[0] <= A_CI_WIDTH:
        return []
    # the bootstrap that drew a's interval drew every used budget's N_opt interval too
    p = max(iso.used, key=lambda q: np.log(q.N_opt_ci[1] / q.N_opt_ci[0]))
    sizes = p.N[p.fitted]
    return [
        f"approach 2's a = {iso.a:.3f} has a {100 * iso.ci_level:g}% interval [{ci[0]:.3f}, "
        f"{ci[1]:.3f}], wider than {A_CI_WIDTH:g}, too wide to test approach 3 against; the "
        f"least certain minimum is C={p.C:.3g}'s, N_opt in [{p.N_opt_ci[0]:.3g}, "
        f"{p.N_opt_ci[1]:.3g}] over sizes {sizes.min():.3g}-{sizes.max():.3g}: add sizes around "
        "that minimum, budgets over a wider range of C, or replicas: 2"
    ]


def _agreement(iso: IsoFlopResult, optimal: dict[str, Any]) -> dict[str, Any]:
    """Whether approach 2's a (with its interval) and approach 3's a agree: L(N, D)'s own
    N_opt ∝ C^a over the budgets, FLOPs counted as the runs count them (β/(α+β) beside it)."""
    a2, ci2, a3 = iso.a, iso.N_opt.ci, optimal["a"]
    agree = ci2 is not None and ci2[0] <= a3 <= ci2[1]
    if ci2 is None:
        statement = f"approach 2 gives a = {a2:.3f} without an interval; approach 3 {a3:.3f}"
    else:
        verb = "agree" if agree else "disagree"
        statement = (
            f"approaches 2 and 3 {verb}: a = {a2:.3f} [{ci2[0]:.3f}, {ci2[1]:.3f}] from the "
            f"IsoFLOP parabolas, {a3:.3f} from L(N, D) with FLOPs counted "
            f"(β/(α+β) = {optimal['a_asymptotic']:.3f} where C ∝ N·D)"
        )
    return {"a_isoflop": a2, "a_isoflop_ci": list(ci2) if ci2 else None, "a_chinchilla": a3,
            "a_chinchilla_ci": optimal.get("a_ci"),
            "a_chinchilla_asymptotic": optimal["a_asymptotic"], "agree": bool(agree),
            "statement": statement}  # fmt: skip
