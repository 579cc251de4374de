"""Early-stop extrapolation: predict a run's final loss from the start of its training curve.

From the seed experiment: fit L(t) = L_∞ + A·t^(-α) (``OffsetPower``, the law library's fitter)
to the training loss over the first ``fraction`` of a run, after warmup, and evaluate it at the
run's last token. Training loss on never-repeated data estimates the loss on unseen text, so the
prediction is compared with the run's final training loss (the mean over its last tenth).

Under a cosine schedule the learning rate is still high over the first fifth, and the decay at the
end buys a drop that no power law fitted there can see: expect the prediction to sit above the
measured end. ``jaxscale extrapolate`` reports that error rather than hiding it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxscale.errors import UserError
from jaxscale.laws import FitResult, fit_power
from jaxscale.results import read_records

MIN_POINTS = 6  # OffsetPower has 3 parameters; ask for twice as many points


@dataclass(frozen=True)
class Extrapolation:
    """A run's predicted final loss against the measured one (when the run has finished)."""

    run: str
    fraction: float  # share of the run's tokens the fit saw
    tokens: int  # the run's planned training tokens
    predicted: float  # L(t) of the fit at ``tokens``
    actual: float | None  # mean training loss over the run's last tenth, if it finished
    fit: FitResult

    @property
    def relative_error(self) -> float | None:
        """(predicted - actual) / actual, or None for an unfinished run."""
        return None if self.actual is None else (self.predicted - self.actual) / self.actual


def extrapolate_run(run_dir: Path, fraction: float = 0.2, bins: int = 30) -> Extrapolation:
    """Fit the first ``fraction`` of a run's training curve and predict its final loss.

    Args:
      run_dir: a sweep's ``runs/<run>`` directory (with run.json and metrics.jsonl).
      fraction: the share of the run's tokens to fit, e.g. 0.2 for its first fifth.
      bins: the training losses are averaged in up to this many log-spaced bins of tokens.

    Raises:
      UserError: not a run directory, or too few points in the fitted share.
    """
    plan_file, metrics_file = run_dir / "run.json", run_dir / "metrics.jsonl"
    if not plan_file.is_file() or not metrics_file.is_file():
        raise UserError(f"{run_dir} is not a run directory (no run.json and metrics.jsonl)")
    if not 0 < fraction < 1:
        raise UserError(f"--fraction must be in (0, 1), got {fraction}")
    try:
        plan = json.loads(plan_file.read_text())
        rows = read_records(metrics_file)  # a run in flight may have a torn last line
        train = [r for r in rows if "loss" in r and "tokens" in r and not r.get("diverged")]
        tokens = np.array([r["tokens"] for r in train], dtype=np.float64)
        loss = np.array([r["loss"] for r in train], dtype=np.float64)
        step = np.array([r["step"] for r in train])
        early = (step > plan["warmup_steps"]) & (tokens <= fraction * plan["tokens"])
    except (ValueError, KeyError, TypeError) as e:  # hand-edited or foreign files
        raise UserError(
            f"{run_dir}: run.json or metrics.jsonl is not a jaxscale run's ({e!r:.80})"
        ) from None
    t, l = tokens[early], loss[early]
    # average the noisy per-step losses in log-spaced bins of tokens: a power law's natural axis
    edges = np.geomspace(t.min(), t.max(), bins + 1) if t.size else np.ones(2)
    which = np.clip(np.digitize(t, edges) - 1, 0, bins - 1)
    t_bins = np.array([t[which == b].mean() for b in np.unique(which)])
    l_bins = np.array([l[which == b].mean() for b in np.unique(which)])
    if t_bins.size < MIN_POINTS:
        raise UserError(
            f"{run_dir.name}: {t_bins.size} logged points after warmup in the first "
            f"{fraction:.0%} of the run, {MIN_POINTS} needed: fit a larger fraction"
        )
    fit = fit_power(t_bins, l_bins)
    finished = any(r["step"] == plan["steps"] and "val_loss" in r for r in rows)  # final eval
    tail = step > 0.9 * plan["steps"]
    return Extrapolation(
        run=plan["run"],
        fraction=fraction,
        tokens=plan["tokens"],
        predicted=float(fit.law(float(plan["tokens"]))),
        actual=float(loss[tail].mean()) if finished and tail.any() else None,
        fit=fit,
    )
