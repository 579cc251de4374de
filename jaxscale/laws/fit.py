"""Robust multi-start fitting of a law's parameters (Hoffmann et al. 2022, approach 3).

One generic fitter, :func:`fit_form`, fits any :class:`Spec`: a log-space prediction function of
unconstrained parameters θ, their names, a map θ -> the law's parameters and a start grid. The
Chinchilla spec is exactly the replication's method (Besiroglu et al. 2024, arXiv:2404.10102):

    log L̂ = logsumexp(a - α·log N, b - β·log D, e),  A = e^a, B = e^b, E = e^e
    objective(θ) = Σ_i w_i · Huber_δ(log L̂_i - log L_i),  δ = 1e-3, summed (not averaged)

minimised by L-BFGS (``optax.lbfgs``) from every point of the start grid, all starts vmapped and
jitted in one call, in float64 on CPU; the lowest objective wins. Bootstrap resamples enter as
multinomial counts ``w`` and restart from the best few starts of the full fit only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscale.errors import FitDataError, UserError
from jaxscale.laws.forms import Chinchilla, Kaplan, OffsetPower
from jaxscale.laws.result import FitResult
from jaxscale.laws.solver import Solver, multistart
from jaxscale.laws.spec import HUBER_DELTA, Spec


@contextlib.contextmanager
def x64() -> Iterator[None]:
    """float64 inside the block only (training stays float32): ``jax.enable_x64`` in new jax,
    ``jax.experimental.enable_x64`` in jax 0.5."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


def _chinchilla_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    a, b, e, alpha, beta = th
    log_n, log_d = jnp.log(xs[0]), jnp.log(xs[1])
    terms = jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)])
    return jax.nn.logsumexp(terms, axis=0)


def _kaplan_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    n_c, alpha_n, d_c, alpha_d = th
    n_term = (alpha_n / alpha_d) * (n_c - jnp.log(xs[0]))
    return alpha_d * jnp.logaddexp(n_term, d_c - jnp.log(xs[1]))


def _power_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    a, e, alpha = th
    return jnp.logaddexp(a - alpha * jnp.log(xs[0]), e)


def _steps(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.arange(lo, hi + step / 2, step))


CHINCHILLA = Spec(
    Chinchilla,
    ("a", "b", "e", "alpha", "beta"),
    _chinchilla_log,
    lambda th: {
        "E": jnp.exp(th[2]),
        "A": jnp.exp(th[0]),
        "B": jnp.exp(th[1]),
        "alpha": th[3],
        "beta": th[4],
    },
    # The replication's 4,500 starts: a, b in {0..25 by 5}, e in {-1..1 by .5}, α, β in {0..2}.
    (_steps(0, 25, 5), _steps(0, 25, 5), _steps(-1, 1, 0.5), _steps(0, 2, 0.5), _steps(0, 2, 0.5)),
)
KAPLAN = Spec(
    Kaplan,
    ("log_N_c", "alpha_N", "log_D_c", "alpha_D"),
    _kaplan_log,
    lambda th: {"N_c": jnp.exp(th[0]), "alpha_N": th[1], "D_c": jnp.exp(th[2]), "alpha_D": th[3]},
    ((10.0, 20.0, 30.0, 40.0), (0.05, 0.1, 0.2, 0.4)) * 2,
)
POWER = Spec(
    OffsetPower,
    ("a", "e", "alpha"),
    _power_log,
    lambda th: {"E": jnp.exp(th[1]), "A": jnp.exp(th[0]), "alpha": th[2]},
    (_steps(0, 25, 5), _steps(-1, 1, 0.5), (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)),
)


def _param_names(spec: Spec) -> list[str]:
    return [f.name for f in dataclasses.fields(spec.form)]


class _Diagnostics(NamedTuple):
    at: Callable  # (θ, inputs, log y) -> (residuals, ∂r/∂θ, ∂params/∂θ, max|∇objective|, params)
    params: Callable  # stacked θ -> stacked law parameters


@functools.cache
def _diagnostics(spec: Spec) -> _Diagnostics:
    """Jitted statistics at the optimum: one compile instead of many small eager ones."""

    def param_vec(t: jax.Array) -> jax.Array:  # in the law's field order
        params = spec.to_params(t)
        return jnp.stack([params[k] for k in _param_names(spec)])

    def at(theta: jax.Array, xs: tuple, log_y: jax.Array) -> tuple:
        def residual_fn(t: jax.Array) -> jax.Array:
            return spec.log_predict(t, xs) - log_y

        def objective(t: jax.Array) -> jax.Array:
            return jnp.sum(optax.huber_loss(residual_fn(t), delta=HUBER_DELTA))

        grad_max = jnp.max(jnp.abs(jax.grad(objective)(theta)))
        jac, g = jax.jacfwd(residual_fn)(theta), jax.jacfwd(param_vec)(theta)
        return residual_fn(theta), jac, g, grad_max, param_vec(theta)

    return _Diagnostics(jax.jit(at), jax.jit(jax.vmap(param_vec)))


def start_grid(spec: Spec, grid: Mapping[str, Sequence[float]] | np.ndarray | None) -> np.ndarray:
    """The ``(S, p)`` starts: the product of ``spec.grid`` with any axes in ``grid`` replaced, or
    ``grid`` itself when it is an array of starts."""
    if grid is None:
        axes = spec.grid
    elif isinstance(grid, Mapping):
        unknown = set(grid) - set(spec.names)
        if unknown:
            raise UserError(f"unknown grid names {sorted(unknown)}; use {spec.names}")
        axes = tuple(tuple(grid.get(n, g)) for n, g in zip(spec.names, spec.grid, strict=True))
    else:
        starts = np.asarray(grid, dtype=np.float64).reshape(-1, len(spec.names))
        return starts
    return np.array(list(itertools.product(*axes)), dtype=np.float64)


def check_data(names: Sequence[str], arrays: Sequence[np.ndarray], n_params: int) -> None:
    """Raise FitDataError (one line) on NaNs, non-positive values or too few points."""
    for name, a in zip(names, arrays, strict=True):
        if not np.all(np.isfinite(a)):
            raise FitDataError(f"{name} has {int(np.sum(~np.isfinite(a)))} NaN/inf values")
        if np.any(a <= 0):
            raise FitDataError(f"{name} must be positive; found {int(np.sum(a <= 0))} values <= 0")
    n = len(arrays[0])
    if n < n_params + 1:
        raise FitDataError(
            f"{n} points are too few: a form with {n_params} parameters needs {n_params + 1}+"
        )


def fit_form(
    spec: Spec,
    inputs: Sequence[Any],
    y: Any,
    *,
    grid: Mapping[str, Sequence[float]] | np.ndarray | None = None,
    bootstrap: int = 0,
    holdout: int = 0,
    holdout_key: Any = None,
    ci_level: float = 0.95,
    restarts: int = 4,
    seed: int = 0,
    solver: Solver | None = None,
) -> FitResult:
    """Fit ``spec`` to points ``(inputs, y)`` by multi-start L-BFGS on the summed Huber objective.

    Σ_i w_i · Huber_δ(log_predict(θ, inputs)_i - log y_i), δ = 1e-3, minimised from every start.

    Args:
      spec: the form (see :data:`CHINCHILLA`, :data:`KAPLAN`, :data:`POWER`).
      inputs: 1-D arrays (e.g. ``(N, D)``), all positive.
      y: observed values (loss, accuracy), positive.
      grid: start values per θ name (others keep the default), or an ``(S, p)`` array of starts.
      bootstrap: number K of resamples for percentile intervals (0: none).
      holdout: fit without the ``holdout`` points of largest ``holdout_key`` (default: the product
        of the inputs, ∝ compute) and report the prediction error on them.
      ci_level: coverage of the bootstrap intervals.
      restarts: starts per resample: the full fit's optimum and the next best grid starts.
      seed: seed of the bootstrap resampling.
      solver: L-BFGS settings (:class:`Solver`).

    Returns:
      A :class:`FitResult`.

    Example:
      >>> fit_form(POWER, [N], loss).law                    # doctest: +SKIP
    """
    xs = [np.asarray(x, dtype=np.float64).ravel() for x in inputs]
    y = np.asarray(y, dtype=np.float64).ravel()
    names = [*spec.form.variables[: len(xs)], "y"]
    check_data(names, [*xs, y], len(spec.names))
    held = None
    if holdout:
        key = np.prod(xs, axis=0) if holdout_key is None else np.asarray(holdout_key, np.float64)
        order = np.argsort(key)
        keep, held = np.sort(order[:-holdout]), np.sort(order[-holdout:])
        check_data(names, [*(x[keep] for x in xs), y[keep]], len(spec.names))
        xs_all, y_all = xs, y
        xs, y = [x[keep] for x in xs], y[keep]
    n, p = len(y), len(spec.names)
    solver = solver or Solver()
    starts = start_grid(spec, grid)
    with x64():
        xs_j, log_y = tuple(jnp.asarray(x) for x in xs), jnp.log(jnp.asarray(y))
        solve = multistart(spec, solver)
        th, values, iters = jax.device_get(solve(jnp.asarray(starts), jnp.ones(n), xs_j, log_y))
        values = np.where(np.isfinite(values), values, np.inf)
        order = np.argsort(values)
        best = int(order[0])
        theta = jnp.asarray(th[best])
        r, jac, g, grad_max, pv = map(np.asarray, _diagnostics(spec).at(theta, xs_j, log_y))
        params = {k: float(v) for k, v in zip(_param_names(spec), pv, strict=True)}
        law = spec.form(**params)
        rss = float(r @ r)
        try:
            cov = rss / max(n - p, 1) * np.linalg.inv(jac.T @ jac)
            se = np.sqrt(np.clip(np.diag(g @ cov @ g.T), 0, None))
        except np.linalg.LinAlgError:
            se = np.full(len(params), np.nan)
        ci, samples = None, None
        if bootstrap:
            rng = np.random.default_rng(seed)
            counts = rng.multinomial(n, np.full(n, 1.0 / n), size=bootstrap).astype(np.float64)
            # Warm starts: the optimum, then the grid starts that ended best.
            th0 = np.concatenate([th[best][None], starts[order[1:restarts]]])
            s = len(th0)
            bt, bv, _ = jax.device_get(
                solve(
                    jnp.asarray(np.tile(th0, (bootstrap, 1))),
                    jnp.asarray(np.repeat(counts, s, axis=0)),
                    xs_j,
                    log_y,
                )
            )
            bv = np.where(np.isfinite(bv), bv, np.inf).reshape(bootstrap, s)
            bt = bt.reshape(bootstrap, s, p)[np.arange(bootstrap), np.argmin(bv, axis=1)]
            samples = np.asarray(_diagnostics(spec).params(jnp.asarray(bt)))
            tail = 100 * (1 - ci_level) / 2
            lo, hi = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
            ci = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(params)}
        held_out = None
        if held is not None:
            pred = np.asarray(law(*(jnp.asarray(x[held]) for x in xs_all)))
            obs = y_all[held]
            rel = (pred - obs) / obs
            held_out = {
                "n": int(holdout),
                "inputs": {
                    v: [float(x[i]) for i in held] for v, x in zip(names, xs_all, strict=False)
                },
                "observed": obs.tolist(),
                "predicted": pred.tolist(),
                "rel_error": rel.tolist(),
                "mean_abs_rel_error": float(np.mean(np.abs(rel))),
            }
    y_hat = np.exp(np.log(y) + r)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1 - float(np.sum((y_hat - y) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    log_lik_term = n * np.log(max(rss, 1e-300) / n)
    near = int(np.sum(values <= values[best] + 1e-6 * max(abs(values[best]), 1e-12)))
    converged = bool(iters[best] < solver.max_iter)
    message = (
        f"{'converged' if converged else 'NOT converged'} after {int(iters[best])} L-BFGS "
        f"iterations (cap {solver.max_iter}), max|grad| {float(grad_max):.2g}; "
        f"best of {len(starts)} starts, {near} within 1e-6 of it"
    )
    return FitResult(
        law=law,
        params=params,
        stderr={k: float(se[i]) for i, k in enumerate(params)},
        objective=float(values[best]),
        converged=converged,
        message=message,
        residuals=r,
        n_points=n,
        aic=float(log_lik_term + 2 * p),
        bic=float(log_lik_term + p * np.log(n)),
        r2=r2,
        n_starts=len(starts),
        ci=ci,
        ci_level=ci_level,
        bootstrap=bootstrap,
        bootstrap_params=samples,
        holdout=held_out,
    )


def fit_chinchilla(
    N: Any,
    D: Any,
    loss: Any,
    *,
    bootstrap: int = 0,
    holdout: int = 0,
    grid: Mapping[str, Sequence[float]] | np.ndarray | None = None,
    seed: int = 0,
    **options: Any,
) -> FitResult:
    """Approach 3: fit L(N, D) = E + A/N^α + B/D^β exactly as Besiroglu et al. 2024 refit it.

    Args:
      N: parameters per point (total, Hoffmann's convention); D: training tokens; loss: final loss.
      bootstrap, holdout, grid, seed, options: see :func:`fit_form`.

    Returns:
      A :class:`FitResult` holding a :class:`Chinchilla` law.

    Example:
      >>> fit_chinchilla(N, D, loss, bootstrap=200).report()   # doctest: +SKIP
    """
    return fit_form(
        CHINCHILLA,
        [N, D],
        loss,
        bootstrap=bootstrap,
        holdout=holdout,
        grid=grid,
        seed=seed,
        **options,
    )


def fit_kaplan(
    N: Any,
    D: Any,
    loss: Any,
    *,
    bootstrap: int = 0,
    holdout: int = 0,
    grid: Mapping[str, Sequence[float]] | np.ndarray | None = None,
    seed: int = 0,
    **options: Any,
) -> FitResult:
    """Fit Kaplan's joint law L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D (same fitter).

    Returns:
      A :class:`FitResult` holding a :class:`Kaplan` law.

    Example:
      >>> fit_kaplan(N, D, loss).params["alpha_N"]              # doctest: +SKIP
    """
    return fit_form(
        KAPLAN,
        [N, D],
        loss,
        bootstrap=bootstrap,
        holdout=holdout,
        grid=grid,
        seed=seed,
        **options,
    )


def fit_power(
    x: Any,
    loss: Any,
    *,
    bootstrap: int = 0,
    holdout: int = 0,
    seed: int = 0,
    **options: Any,
) -> FitResult:
    """Fit the offset power law L(x) = E + A/x^α (x is N or D); holdout drops the largest x.

    Returns:
      A :class:`FitResult` holding an :class:`OffsetPower` law.

    Example:
      >>> fit_power(N, loss, bootstrap=100).ci["alpha"]         # doctest: +SKIP
    """
    return fit_form(POWER, [x], loss, bootstrap=bootstrap, holdout=holdout, seed=seed, **options)
