"""The held-out check: L(N, D) refitted without the largest budget must predict that budget's runs.

Marin and OLMo report their ladders' errors this way: a law that has not predicted a run it did
not see is not yet a result. Beside the Chinchilla refit, the same runs are measured against the
law fitted to every run (does the form follow them at all?) and against Kaplan's coupled law
refitted below them (does another form extrapolate where this one does not?), so the warning
can say which of the three it is: the runs' noise, a bend beyond the fitted budgets, or the form.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from jaxscale.errors import UserError
from jaxscale.laws import FitResult, fit_chinchilla, fit_kaplan, predict_loss

if TYPE_CHECKING:
    from jaxscale.analysis import Design

HELDOUT_TOLERANCE = 0.02  # a held-out run missed by more than this (relative) is a warning
# the other form refitted below the held-out budget, as the warnings and `jaxscale seeds` name it
KAPLAN_FORM = "Kaplan's L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D"


def check_heldout(
    design: Design, tiers: np.ndarray, seed: int, full: FitResult | None
) -> tuple[dict | None, str | None]:
    """Refit L(N, D) without the largest tier and predict its runs; with ``full`` (the law
    fitted to every run) also say how far that law, which saw them, is from them. Kaplan's
    L(N, D) (no floor, N and D coupled) is refitted on the same runs beside it: where it
    predicts them and the Chinchilla form does not, the form is what fails."""
    top = tiers == tiers.max()
    if top.sum() < 1 or len(np.unique(tiers)) < 2:
        return None, "one compute tier only: nothing to hold out"
    keep = ~top
    try:
        fit = fit_chinchilla(design.N[keep], design.D[keep], design.loss[keep], seed=seed)
    except UserError as e:
        return None, f"too few runs below the largest budget ({e})"
    meas = design.loss[top]

    def predicted(law: Any) -> tuple[np.ndarray, np.ndarray]:  # on the held-out runs
        pred = predict_loss(law, design.N[top], design.D[top])
        return pred, (pred - meas) / meas  # and the relative errors

    pred, rel = predicted(fit.law)
    runs = [
        {"run": str(r), "N": float(n), "D": float(d), "measured": float(m), "predicted": float(p),
         "rel_err": float(e)}
        for r, n, d, m, p, e in zip(design.run[top], design.N[top], design.D[top], meas, pred, rel,
                                    strict=True)
    ]  # fmt: skip
    budget = float(np.exp(np.mean(np.log(design.C[top]))))
    seen = kaplan = None
    if full is not None:
        seen = float(np.max(np.abs(predicted(full.law)[1])))
    try:
        other = fit_kaplan(design.N[keep], design.D[keep], design.loss[keep], seed=seed)
        kaplan = float(np.max(np.abs(predicted(other.law)[1])))
    except UserError:
        pass  # too few runs for it: the Chinchilla check stands alone
    return {
        "budget_C": budget,
        "runs": runs,
        "max_abs_rel_err": float(np.max(np.abs(rel))),
        "mean_rel_err": float(np.mean(rel)),
        # the same runs against the law fitted to every run, these included: a miss here too
        # means the form does not follow them, not that the lower budgets left it undetermined
        "full_fit_max_abs_rel_err": seen,
        "kaplan_max_abs_rel_err": kaplan,
        "fit": {"params": fit.params, "converged": fit.converged, "n_points": fit.n_points},
    }, None


def heldout_warning(heldout: dict[str, Any]) -> str | None:
    """The warning for a held-out budget missed past :data:`HELDOUT_TOLERANCE` (None within
    it), saying what to run about it."""
    if heldout["max_abs_rel_err"] <= HELDOUT_TOLERANCE:
        return None
    worst = max(heldout["runs"], key=lambda r: abs(r["rel_err"]))
    seen = heldout["full_fit_max_abs_rel_err"]
    fix = "add budgets below it or longer runs"
    if seen is not None and seen <= HELDOUT_TOLERANCE:
        mean = heldout["mean_rel_err"]
        fix = (
            f"the law fitted to every run follows them within {100 * seen:.1f}%, but fitted "
            f"without them it predicts them {100 * abs(mean):.1f}% too "
            f"{'high' if mean > 0 else 'low'} on average: either seed noise moved the runs "
            "below (its sign changes from seed to seed; replicas: 2 averages two seeds a run "
            "and halves its variance) or the loss bends beyond the budgets fitted (the same "
            "sign with every seed: more budgets below do not cure that; a sweep with --set seed=1, "
            "then jaxscale seeds on both, tells)"
        )
    elif seen is not None:
        fix = (
            f"even the law fitted to every run misses them by up to {100 * seen:.1f}%: its "
            "form does not follow these runs (or their seeds moved them: replicas tell), "
            "and more budgets of the same kind will not fix it; see residuals.png"
        )
    kaplan = heldout["kaplan_max_abs_rel_err"]
    if kaplan is not None and kaplan <= HELDOUT_TOLERANCE:
        fix += (
            f"; {KAPLAN_FORM}, fitted to the same runs, predicts them within "
            f"{100 * kaplan:.1f}% (jaxscale fit --law kaplan)"
        )
    return (
        f"the law fitted without the largest budget misses its run {worst['run']} by "
        f"{100 * worst['rel_err']:+.1f}% (tolerance {100 * HELDOUT_TOLERANCE:g}%): it does "
        f"not extrapolate; {fix}"
    )
