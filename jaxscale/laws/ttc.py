"""Test-time compute laws: accuracy against inference compute (Snell et al. 2024) and
repeated-sampling coverage (Brown et al. 2024), fitted with the generic fitter of ``fit.py``."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxscale.laws.fit import fit_form
from jaxscale.laws.forms import Coverage, TestTime
from jaxscale.laws.result import FitResult
from jaxscale.laws.spec import Spec


def _test_time_log(th: Any, xs: tuple) -> Any:
    log_alpha, beta = th
    # log min(1, α·(N·T)^β): the cap at accuracy 1 stays in the fit.
    return jnp.minimum(0.0, log_alpha + beta * (jnp.log(xs[0]) + jnp.log(xs[1])))


def _coverage_log(th: Any, xs: tuple) -> Any:
    a, b = th
    return a * jnp.power(xs[0], b)


# A dense grid of starts for the test-time law: its cap makes the objective flat wherever every
# point is predicted at >= 1, and the Huber loss (nearly L1 here) has a corner wherever one point
# is fitted exactly, so L-BFGS from a coarse 6 x 6 grid stopped on such a corner: on a real lab
# (pass@1 0.82..1.00) at objective 6.5e-4 and R² 0.12, where the optimum is 4.9e-4 and R² 0.54
# (tests/test_fit.py checks it against brute force). 49 x 45 starts cost ~1 s for 2 parameters.
TEST_TIME = Spec(
    TestTime,
    ("log_alpha", "beta"),
    _test_time_log,
    lambda th: {"alpha": jnp.exp(th[0]), "beta": th[1]},
    (tuple(np.linspace(-12.0, 0.0, 49)), tuple(np.linspace(0.01, 1.0, 45))),
)
COVERAGE = Spec(
    Coverage,
    ("a", "b"),
    _coverage_log,
    lambda th: {"a": th[0], "b": th[1]},
    ((-5.0, -2.0, -1.0, -0.5, -0.1), (-1.5, -1.0, -0.5, -0.2, -0.05)),
)


def fit_test_time(
    T: Any, accuracy: Any, N: Any = None, *, bootstrap: int = 0, seed: int = 0
) -> FitResult:
    """Fit Accuracy(N, T) = min(1, α·(N·T)^β) (Snell et al. 2024); without N, α·T^β.

    Args:
      T: test-time compute per problem; accuracy: in (0, 1]; N: model size, or None.

    Returns:
      A :class:`FitResult` holding a :class:`TestTime` law (call it with N=1 when N was None).

    Example:
      >>> fit_test_time(T, acc, N).params["beta"]          # doctest: +SKIP
    """
    T = np.asarray(T, dtype=np.float64)
    N = np.ones_like(T) if N is None else np.asarray(N, dtype=np.float64)
    return fit_form(TEST_TIME, [N, T], accuracy, bootstrap=bootstrap, seed=seed)


def fit_coverage(k: Any, coverage: Any, *, bootstrap: int = 0, seed: int = 0) -> FitResult:
    """Fit repeated-sampling coverage c(k) = exp(a·k^b) (Brown et al. 2024).

    Example:
      >>> fit_coverage(k, cov).params                      # doctest: +SKIP
    """
    return fit_form(COVERAGE, [k], coverage, bootstrap=bootstrap, seed=seed)


def compute_trade(law: TestTime, N: float, T: float, factor: float = 10.0) -> dict[str, Any]:
    """How much more test-time compute buys the accuracy of a ``factor``× larger model.

    Solves law(N, T') = law(factor·N, T) for T' numerically from the fitted law (under the
    pure power form N·T is a product, so T'/T = factor; the cap at accuracy 1 breaks that).

    Returns:
      ``{"target", "T_equivalent", "T_factor", "capped"}``; when the larger model is capped at
      accuracy 1, ``capped`` is True and T' is where the smaller model first reaches 1.

    Example:
      >>> compute_trade(TestTime(0.01, 0.4), N=1e9, T=16)["T_factor"]   # doctest: +SKIP
      10.0
    """
    from scipy.optimize import brentq  # only here: scipy takes a while to import

    alpha, beta = law.params["alpha"], law.params["beta"]

    def accuracy(n: float, t: float) -> float:  # float64, unlike a float32 jax call
        return min(1.0, alpha * (n * t) ** beta)

    target = accuracy(factor * N, T)
    capped = target >= 1.0
    goal = 1.0 - 1e-12 if capped else target

    def gap(log_t: float) -> float:
        return accuracy(N, float(np.exp(log_t))) - goal

    lo, hi = np.log(T), np.log(T)
    while gap(hi) < 0 and hi < np.log(T) + 200:
        hi += 2.0
    t_eq = float(np.exp(brentq(gap, lo, hi, xtol=1e-12))) if gap(hi) >= 0 else float("inf")
    return {"target": target, "T_equivalent": t_eq, "T_factor": t_eq / T, "capped": capped}
