"""The generic multi-start fitter: parameter recovery for every form, statistics, bootstrap
coverage, hold-out checks and data errors. Small start grids where the grid is not the point."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale.errors import UserError
from jaxscale.laws import (
    Chinchilla,
    Coverage,
    Kaplan,
    OffsetPower,
    TestTime,
    compute_trade,
    fit_chinchilla,
    fit_coverage,
    fit_kaplan,
    fit_power,
    fit_test_time,
    predict_loss,
)
from jaxscale.laws.fit import start_grid
from jaxscale.laws.solver import Solver
from jaxscale.laws.spec import CHINCHILLA, objective, x64

SMALL_GRID = {
    "a": (0.0, 5.0, 10.0),
    "b": (0.0, 5.0, 10.0),
    "e": (0.0, 1.0),
    "alpha": (0.5,),
    "beta": (0.5,),
}


def chinchilla_data(seed=0, noise=0.003):
    """A ladder of 8 sizes x 6 token counts from a known law, with multiplicative noise."""
    rng = np.random.default_rng(seed)
    true = Chinchilla(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
    N = np.repeat(np.logspace(6.5, 9.5, 8), 6)
    D = N * np.tile(np.logspace(0, 2.5, 6), 8)
    loss = predict_loss(true, N, D) * np.exp(rng.normal(0, noise, N.size))
    return true, N, D, loss


def test_chinchilla_recovers_known_parameters_from_the_exponents_profile():
    _, N, D, loss = chinchilla_data()
    fit = fit_chinchilla(N, D, loss)
    assert fit.converged and fit.grad_rel < 1e-3, fit.message
    assert "profile" in fit.message
    assert fit.params["alpha"] == pytest.approx(0.35, abs=0.02)
    assert fit.params["beta"] == pytest.approx(0.37, abs=0.02)
    assert fit.params["E"] == pytest.approx(1.8, abs=0.05)
    assert np.log(fit.params["A"]) == pytest.approx(np.log(480), abs=0.5)
    assert np.log(fit.params["B"]) == pytest.approx(np.log(2100), abs=0.5)
    assert fit.r2 > 0.99 and fit.n_points == 48
    # the replication's kind of search (a start grid, screened, then refined) agrees
    coarse = {"a": (0.0, 10.0, 20.0), "b": (0.0, 10.0, 20.0), "alpha": (0.25, 0.75, 1.5)}
    grid = fit_chinchilla(
        N, D, loss, grid=start_grid(CHINCHILLA, {**coarse, "beta": (0.25, 0.75, 1.5)})
    )
    assert grid.objective == pytest.approx(fit.objective, rel=1e-7)
    assert grid.params["alpha"] == pytest.approx(fit.params["alpha"], abs=1e-4)


def olmo_like_ladder(seed: int, noise: float = 0.001) -> tuple[np.ndarray, ...]:
    """An ill-conditioned ladder like OLMo's: 4 sizes from 190M to 1.3B parameters at 1-10x
    Chinchilla tokens, small exponents (α = 0.104, β = 0.162) and E of the order of the losses."""
    N = np.repeat([190e6, 370e6, 760e6, 1.3e9], 4)
    D = N * 20 * np.tile([1.0, 2.0, 5.0, 10.0], 4)
    loss = np.asarray(Chinchilla(1.8, 10.0, 20.0, 0.104, 0.162)(N, D), dtype=np.float64)
    return N, D, loss * np.exp(np.random.default_rng(seed).normal(0, noise, N.size))


def tight_scipy_optimum(N, D, loss, starts) -> tuple[float, np.ndarray]:
    """The same objective minimised by scipy's L-BFGS-B with tight tolerances from ``starts``: an
    independent check of where the optimum is."""
    from scipy.optimize import minimize

    with x64():
        xs, log_y = (jnp.asarray(N), jnp.asarray(D)), jnp.log(jnp.asarray(loss))
        value_and_grad = jax.jit(
            jax.value_and_grad(lambda th: objective(CHINCHILLA, th, 1.0, xs, log_y))
        )

        def fun(th):
            v, g = value_and_grad(jnp.asarray(th))
            return float(v), np.asarray(g, dtype=np.float64)

        opts = {"ftol": 1e-15, "gtol": 1e-13, "maxiter": 5000, "maxfun": 20000}
        runs = [minimize(fun, th0, jac=True, method="L-BFGS-B", options=opts) for th0 in starts]
    best = min(runs, key=lambda r: r.fun)
    return float(best.fun), best.x


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_an_ill_conditioned_ladder_reaches_the_independently_verified_optimum(seed):
    N, D, loss = olmo_like_ladder(seed)
    fit = fit_chinchilla(N, D, loss)
    assert fit.converged, fit.message
    # scipy from the replication grid's corners and centre plus our own optimum's neighbourhood
    starts = start_grid(
        CHINCHILLA,
        {
            "a": (0.0, 10.0),
            "b": (0.0, 10.0),
            "e": (0.0,),
            "alpha": (0.1, 0.5),
            "beta": (0.3,),
        },
    )
    p = fit.params
    mine = np.array([np.log(p["A"]), np.log(p["B"]), np.log(p["E"]), p["alpha"], p["beta"]])
    value, theta = tight_scipy_optimum(N, D, loss, [*starts, mine + 0.05])
    assert fit.objective <= value * (1 + 1e-6)
    assert fit.params["alpha"] == pytest.approx(theta[3], abs=2e-3)
    assert fit.params["beta"] == pytest.approx(theta[4], abs=2e-3)
    # the search stopped early is not called converged
    early = fit_chinchilla(N, D, loss, solver=Solver(max_iter=3))
    assert not early.converged and "NOT converged" in early.message and early.grad_rel > 1e-3


def test_losses_moved_by_5e_7_give_the_same_law():
    N, D, loss = olmo_like_ladder(2)
    a = fit_chinchilla(N, D, loss)
    b = fit_chinchilla(N, D, loss + 5e-7 * np.random.default_rng(9).standard_normal(loss.size))
    for k in ("alpha", "beta"):
        assert b.params[k] == pytest.approx(a.params[k], abs=1e-4)
    assert np.log(b.params["A"]) == pytest.approx(np.log(a.params["A"]), abs=1e-3)


def test_fit_result_statistics_report_and_json():
    _, N, D, loss = chinchilla_data()
    fit = fit_chinchilla(N, D, loss, grid=SMALL_GRID)
    assert "of 18 grid starts" in fit.message
    assert all(np.isfinite(v) and v > 0 for v in fit.stderr.values())
    assert fit.bic > fit.aic  # p·log n > 2p for n = 48
    assert fit.residuals.shape == (48,) and fit.objective > 0
    text = fit.report()
    assert "alpha" in text and "R²" in text and "converged" in text
    json.dumps(fit.to_dict())


def test_kaplan_joint_recovers_known_parameters():
    rng = np.random.default_rng(1)
    true = Kaplan(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)
    N = np.repeat(np.logspace(6, 10, 8), 6)
    D = np.tile(np.logspace(7, 12, 6), 8)
    loss = predict_loss(true, N, D) * np.exp(rng.normal(0, 0.002, N.size))
    fit = fit_kaplan(N, D, loss)
    assert fit.params["alpha_N"] == pytest.approx(0.076, abs=0.005)
    assert fit.params["alpha_D"] == pytest.approx(0.095, abs=0.008)
    assert np.log10(fit.params["N_c"]) == pytest.approx(np.log10(8.8e13), abs=0.5)


def test_offset_power_recovers_known_parameters():
    rng = np.random.default_rng(2)
    x = np.logspace(5, 10, 15)
    y = np.asarray(OffsetPower(1.8, 450.0, 0.4)(x), dtype=np.float64)
    y = y * np.exp(rng.normal(0, 0.002, x.size))
    fit = fit_power(x, y)
    assert fit.params["alpha"] == pytest.approx(0.4, abs=0.03)
    assert fit.params["E"] == pytest.approx(1.8, abs=0.05)


def test_holdout_reports_the_prediction_error_on_the_largest_points():
    _, N, D, loss = chinchilla_data(noise=0.001)
    fit = fit_chinchilla(N, D, loss, grid=SMALL_GRID, holdout=5)
    assert fit.n_points == 43
    h = fit.holdout
    assert h["n"] == 5 and len(h["rel_error"]) == 5
    assert max(np.asarray(h["inputs"]["N"]) * np.asarray(h["inputs"]["D"])) == max(N * D)
    assert h["mean_abs_rel_error"] < 0.01
    assert "held out 5" in fit.report()


def test_bootstrap_interval_covers_the_truth_at_about_its_nominal_rate():
    """40 simulated datasets, 80% percentile intervals of alpha: coverage in a binomial band."""
    rng = np.random.default_rng(3)
    true = OffsetPower(E=2.0, A=50.0, alpha=0.5)
    x = np.logspace(2, 6, 25)
    grid = {"a": (2.0, 5.0), "e": (0.0, 1.0), "alpha": (0.3, 0.8)}
    hits = 0
    for i in range(40):
        y = np.asarray(true(x), dtype=np.float64) * np.exp(rng.normal(0, 0.01, x.size))
        fit = fit_power(x, y, bootstrap=100, seed=i, grid=grid, ci_level=0.8)
        lo, hi = fit.ci["alpha"]
        hits += lo <= 0.5 <= hi
    # 80% nominal; P(binomial(40, .8) outside [26, 38]) < 2%.
    assert 26 <= hits <= 38, hits


def test_test_time_law_recovers_alpha_beta_and_the_trade():
    rng = np.random.default_rng(4)
    N = np.repeat([1e8, 1e9, 1e10], 8)
    T = np.tile(np.logspace(0, 2, 8), 3)
    acc = np.asarray(TestTime(1e-3, 0.3)(N, T), dtype=np.float64)
    acc = np.minimum(acc * np.exp(rng.normal(0, 0.01, N.size)), 1.0)
    fit = fit_test_time(T, acc, N)
    assert fit.params["beta"] == pytest.approx(0.3, abs=0.01)
    assert fit.params["alpha"] == pytest.approx(1e-3, rel=0.2)
    trade = compute_trade(fit.law, 1e8, 4.0)
    assert trade["T_factor"] == pytest.approx(10.0, rel=1e-6) and not trade["capped"]
    capped = compute_trade(TestTime(0.5, 0.5), 1.0, 1.0, factor=10.0)
    assert capped["capped"] and capped["T_factor"] == pytest.approx(4.0, rel=1e-6)


def test_test_time_law_reaches_the_brute_force_optimum_of_a_capped_lab():
    """A real lab's table (configs/ttc.yaml's checkpoints sampled at T=1: pass@k of 4 models,
    most points at the cap of 1): the fit must reach the optimum a dense brute-force search of
    the same Huber objective finds. From a coarse grid it stopped on a corner 32% worse."""
    n = np.repeat([25472.0, 39520.0, 56640.0, 76832.0], 6)
    k = np.tile([1.0, 2.0, 4.0, 8.0, 16.0, 32.0], 4)
    T = k * np.repeat([4.005, 4.0, 4.0, 4.0], 6)
    acc = np.array([
        0.81515625, 0.88641129, 0.92404797, 0.94866076, 0.96574364, 0.985,
        0.8853125, 0.92576613, 0.94608537, 0.96034191, 0.97072915, 0.98,
        0.99203125, 0.99943548, 0.99997066, 0.99999998, 1.0, 1.0,
        0.99765625, 0.99998992, 1.0, 1.0, 1.0, 1.0,
    ])  # fmt: skip
    fit = fit_test_time(T, acc, n)
    la, b = np.meshgrid(np.linspace(-6.0, 0.0, 1201), np.linspace(0.0, 0.6, 1201))
    r = np.log(acc) - np.minimum(0.0, la[..., None] + b[..., None] * np.log(n * T))
    d = 1e-3
    huber = np.where(np.abs(r) < d, 0.5 * r**2, d * (np.abs(r) - 0.5 * d)).sum(axis=-1)
    assert fit.objective <= huber.min() * (1 + 1e-3)
    i = np.unravel_index(np.argmin(huber), huber.shape)
    assert fit.params["beta"] == pytest.approx(b[i], abs=0.01)
    assert fit.converged and fit.r2 > 0.5


def test_test_time_without_N_fits_alpha_T_beta():
    T = np.logspace(0, 3, 10)
    fit = fit_test_time(T, 0.02 * T**0.4)
    assert fit.params["beta"] == pytest.approx(0.4, abs=1e-3)


def test_coverage_recovers_a_and_b():
    rng = np.random.default_rng(5)
    k = np.logspace(0, 3, 12)
    cov = np.asarray(Coverage(-2.0, -0.4)(k), dtype=np.float64)
    cov = np.minimum(cov * np.exp(rng.normal(0, 0.002, k.size)), 1.0)
    fit = fit_coverage(k, cov)
    assert fit.params["a"] == pytest.approx(-2.0, abs=0.05)
    assert fit.params["b"] == pytest.approx(-0.4, abs=0.02)


@pytest.mark.parametrize(
    ("N", "loss", "match"),
    [
        ([1e6, 2e6, np.nan, 4e6, 5e6, 6e6, 7e6], [3.0] * 7, "NaN"),
        ([1e6, 2e6, 3e6, 0.0, 5e6, 6e6, 7e6], [3.0] * 7, "positive"),
        ([1e6, 2e6, 3e6, 4e6, 5e6, 6e6, 7e6], [3.0, 2.9, -1, 2.7, 2.6, 2.5, 2.4], "positive"),
        ([1e6, 2e6, 3e6], [3.0, 2.9, 2.8], "too few"),
    ],
)
def test_bad_data_raises_a_one_line_user_error(N, loss, match):
    N = np.asarray(N)
    with pytest.raises(UserError, match=match) as info:
        fit_chinchilla(N, 20 * np.nan_to_num(N, nan=1.0) + 1, loss, grid=SMALL_GRID)
    assert "\n" not in str(info.value)
