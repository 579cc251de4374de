"""FitResult: a fitted law with its statistics and a readable report (lmfit-style)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxscale.laws.forms import Law


@dataclass(frozen=True)
class FitResult:
    """A fitted law with its statistics (lmfit-style), returned by every fitter here.

    Standard errors come from the Gauss-Newton approximation at the optimum: cov(θ) =
    s²·(JᵀJ)⁻¹, with J the Jacobian of the log-space residuals and s² = Σr²/(n - p) the residual
    variance, carried to the law's parameters by the delta method. AIC/BIC use the Gaussian
    likelihood of the log residuals: n·log(RSS/n) + 2p (AIC) or + p·log n (BIC). R² is computed on
    the observed scale (loss, accuracy), not in log space.

    Attributes:
      law: the fitted law (a pytree, ready for ``jax.jit``).
      params: its parameters by name.
      stderr: standard error of each parameter (NaN when JᵀJ is singular).
      ci: bootstrap percentile interval ``[lo, hi]`` of each parameter at ``ci_level``, or None.
      objective: summed Huber objective at the optimum.
      converged: whether the gradient at the optimum is small relative to the objective
        (max|∇f| <= 1e-4·f: see ``solver.py``).
      message: a readable account of the solve.
      residuals: log ŷ - log y per point.
      n_points, aic, bic, r2: sample size and goodness of fit.
      holdout: the prediction check on held-out largest-compute points, or None.
      grad_rel: max|∇f| / f at the optimum.
      starts_in_basin: how many starts of the grid ended in the optimum's basin after the screen
        (one alone means the optimum is easy to miss).
      runner_up: the best optimum of another basin, ``{"objective", "rel_gap", "params"}``, or
        None: a second law that fits nearly as well says the data do not pin the parameters down.
    """

    law: Law
    params: dict[str, float]
    stderr: dict[str, float]
    objective: float
    converged: bool
    message: str
    residuals: np.ndarray
    n_points: int
    aic: float
    bic: float
    r2: float
    n_starts: int
    ci: dict[str, tuple[float, float]] | None = None
    ci_level: float = 0.95
    bootstrap: int = 0
    bootstrap_params: np.ndarray | None = field(default=None, repr=False)
    holdout: dict[str, Any] | None = None
    grad_rel: float = float("nan")
    starts_in_basin: int = 0
    runner_up: dict[str, Any] | None = None

    @property
    def form(self) -> str:
        """The law's class name, e.g. ``Chinchilla``."""
        return type(self.law).__name__

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (no bootstrap samples)."""
        return {
            "form": self.form,
            "params": self.params,
            "stderr": self.stderr,
            "ci": {k: list(v) for k, v in self.ci.items()} if self.ci else None,
            "ci_level": self.ci_level,
            "bootstrap": self.bootstrap,
            "objective": self.objective,
            "converged": self.converged,
            "message": self.message,
            "n_points": self.n_points,
            "n_starts": self.n_starts,
            "aic": self.aic,
            "bic": self.bic,
            "r2": self.r2,
            "residuals": [float(r) for r in self.residuals],
            "holdout": self.holdout,
            "grad_rel": self.grad_rel,
            "starts_in_basin": self.starts_in_basin,
            "runner_up": self.runner_up,
        }

    def report(self) -> str:
        """A readable block: parameters with errors and intervals, fit statistics, hold-out."""
        pct = f"{100 * self.ci_level:g}% CI"
        lines = [f"{self.form} fit: {self.message}", f"  {'param':<8} {'value':>12} {'stderr':>10}"]
        lines[-1] += f"  {pct}" if self.ci else ""
        for k, v in self.params.items():
            row = f"  {k:<8} {v:>12.5g} {self.stderr[k]:>10.3g}"
            if self.ci:
                row += f"  [{self.ci[k][0]:.5g}, {self.ci[k][1]:.5g}]"
            lines.append(row)
        lines.append(
            f"  n={self.n_points}  objective={self.objective:.6g}  R²={self.r2:.4f}  "
            f"AIC={self.aic:.2f}  BIC={self.bic:.2f}"
            + (f"  bootstrap={self.bootstrap}" if self.bootstrap else "")
        )
        if self.holdout:
            h = self.holdout
            lines.append(
                f"  held out {h['n']} largest-compute points: mean |relative error| "
                f"{100 * h['mean_abs_rel_error']:.2f}%"
            )
        return "\n".join(lines)
