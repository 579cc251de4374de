"""Robust multi-start fitting of a law's parameters (Hoffmann et al. 2022, approach 3).

One generic fitter, :func:`fit_form`, fits any :class:`~jaxscale.laws.spec.Spec`. The Chinchilla
spec is the replication's method (Besiroglu et al. 2024, arXiv:2404.10102):

    log L̂ = logsumexp(a - α·log N, b - β·log D, e),  A = e^a, B = e^b, E = e^e
    objective(θ) = Σ_i w_i · Huber_δ(log L̂_i - log L_i),  δ = 1e-3, summed (not averaged)

minimised by L-BFGS (``optax.lbfgs``) from every point of the replication's start grid, in
float64 on CPU, with the inputs scaled by their geometric means (``spec.py``). The search has two
stages (``Solver``): every start is *screened* for a few dozen iterations, then the best ends and
the best end of each other basin are *refined* until their gradient is small relative to the
objective. The result says whether the best one got there (``converged``), how many starts ended
in its basin, and how close the best *other* optimum came (``runner_up``): a second law that
fits almost as well is a warning that the data do not determine the parameters. Bootstrap
resamples enter as multinomial counts ``w`` and restart from the refined optima.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import FitDataError, UserError
from jaxscale.laws.result import FitResult
from jaxscale.laws.solver import (
    CONVERGED_GTOL,
    Solver,
    multistart,
    padded_points,
    run_padded,
)
from jaxscale.laws.spec import (
    CHINCHILLA,
    HUBER_DELTA,
    KAPLAN,
    POWER,
    Spec,
    input_scales,
    objective,
    x64,
)

__all__ = [
    "CHINCHILLA",
    "HUBER_DELTA",
    "KAPLAN",
    "POWER",
    "Spec",
    "check_data",
    "fit_chinchilla",
    "fit_form",
    "fit_kaplan",
    "fit_power",
    "start_grid",
    "x64",
]

BASIN_RTOL = 0.01  # optima whose parameters all agree to 1% (or 1e-3 absolute) are one basin


def _param_names(spec: Spec) -> list[str]:
    return [f.name for f in dataclasses.fields(spec.form)]


class _Compiled(NamedTuple):
    """Jitted pieces of one spec: one compile each instead of many small eager calls."""

    at: Callable  # (θ, inputs, log y) -> (residuals, ∂r/∂θ, ∂params/∂θ, params)
    grad: Callable  # (θ scaled, weights, inputs scaled, log y) -> (objective, max|∇objective|)
    params: Callable  # stacked θ -> stacked law parameters
    rescale: Callable  # stacked θ, log scales -> stacked θ in the scaled units


@functools.cache
def _compiled(spec: Spec) -> _Compiled:
    def param_vec(t: jax.Array) -> jax.Array:  # in the law's field order
        params = spec.to_params(t)
        return jnp.stack([params[k] for k in _param_names(spec)])

    def at(theta: jax.Array, xs: tuple, log_y: jax.Array) -> tuple:
        def residual_fn(t: jax.Array) -> jax.Array:
            return spec.log_predict(t, xs) - log_y

        jac, g = jax.jacfwd(residual_fn)(theta), jax.jacfwd(param_vec)(theta)
        return residual_fn(theta), jac, g, param_vec(theta)

    def grad(theta: jax.Array, w: jax.Array, xs: tuple, log_y: jax.Array) -> tuple:
        f, g = jax.value_and_grad(objective, argnums=1)(spec, theta, w, xs, log_y)
        return f, jnp.max(jnp.abs(g))

    return _Compiled(
        jax.jit(at),
        jax.jit(grad),
        jax.jit(jax.vmap(param_vec)),
        jax.jit(jax.vmap(spec.rescale, in_axes=(0, None))),
    )


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


def same_basin(p: np.ndarray, q: np.ndarray, rtol: float = BASIN_RTOL) -> np.ndarray:
    """Whether law-parameter rows ``p`` (..., k) agree with ``q`` (k,): each within ``rtol``
    relative or 1e-3 absolute (an E heading to 0 is one basin whatever its log)."""
    return np.all(np.abs(p - q) <= rtol * np.maximum(np.abs(p), np.abs(q)) + 1e-3, axis=-1)


def _refine_set(params: np.ndarray, values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the screened ends to refine: the k/2 best, then the best end of each other
    basin (at 5%: coarser than a basin, so that near-copies do not crowd out the others)."""
    order = np.argsort(values)
    order = order[np.isfinite(values[order])]
    chosen = list(order[: k // 2])
    for i in order[k // 2 :]:
        if len(chosen) >= k:
            break
        if not np.any(same_basin(params[chosen], params[i], rtol=0.05)):
            chosen.append(i)
    return np.asarray(chosen)


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

    Σ_i w_i · Huber_δ(log_predict(θ, inputs)_i - log y_i), δ = 1e-3, minimised from every start
    (screened, then the best refined: see :class:`Solver`).

    Args:
      spec: the form (see :data:`CHINCHILLA`, :data:`KAPLAN`, :data:`POWER`).
      inputs: 1-D arrays (e.g. ``(N, D)``), all positive.
      y: observed values (loss, accuracy), positive.
      grid: start values per θ name (others keep the default), or an ``(S, p)`` array of starts.
      bootstrap: number K of resamples for percentile intervals (0: none).
      holdout: fit without the ``holdout`` points of largest ``holdout_key`` (default: the product
        of the inputs, ∝ compute) and report the prediction error on them.
      ci_level: coverage of the bootstrap intervals.
      restarts: warm starts per resample: the optimum and the next best distinct optima (a
        form with a profile adds the two lowest minima of each resample's own profile).
      seed: seed of the bootstrap resampling.
      solver: the search's settings (:class:`Solver`).

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
    log_s = input_scales(tuple(xs), spec)
    c = _compiled(spec)
    with x64():
        xs_j, log_y = tuple(jnp.asarray(x) for x in xs), jnp.log(jnp.asarray(y))
        pts = padded_points(xs, log_s, y)
        log_s_j = jnp.asarray(log_s)
        solve = multistart(spec, solver)
        ones = np.ones(n)
        log_xn = tuple(np.log(x) - s for x, s in zip(xs, log_s, strict=True))
        if grid is None and spec.profile_starts is not None:
            # exhaustive over the exponents: the profile's lowest local minima, refined
            th1 = spec.profile_starts(log_xn, y, ones, solver.refine)
            searched = f"the exponents' profile ({_count(len(th1), 'local minimum')})"
        else:
            # the screen: every start of the grid, a few dozen iterations
            starts = start_grid(spec, grid)
            scaled = np.asarray(c.rescale(jnp.asarray(starts), log_s_j))
            screened, f1, _ = run_padded(solve, scaled, ones, pts, solver.screen_iter)
            f1 = np.where(np.isfinite(f1), f1, np.inf)
            p1 = np.asarray(c.params(c.rescale(jnp.asarray(screened), -log_s_j)))
            th1 = screened[_refine_set(p1, f1, solver.refine)]
            searched = f"the {len(th1)} best of {len(starts)} grid starts after a screen"
        # the refinement, to convergence
        th2, f2, k2 = run_padded(solve, th1, ones, pts, solver.max_iter)
        f2 = np.where(np.isfinite(f2), f2, np.inf)
        order = np.argsort(f2)
        best = int(order[0])
        w_pad = jnp.asarray(np.r_[ones, np.zeros(len(pts.log_y) - n)])
        value, grad_max = map(float, c.grad(jnp.asarray(th2[best]), w_pad, pts.xs, pts.log_y))
        theta = c.rescale(jnp.asarray(th2[best])[None], -log_s_j)[0]
        r, jac, g, pv = map(np.asarray, c.at(theta, xs_j, log_y))
        params = {k: float(v) for k, v in zip(_param_names(spec), pv, strict=True)}
        unbounded = [k for k, v in params.items() if not np.isfinite(v)]
        if unbounded:
            # the best fit lies at infinity: a term these points cannot pin down
            raise FitDataError(
                f"{spec.form.__name__} is not determined by these {n} points: the best fit "
                f"sends {', '.join(unbounded)} to infinity; add sizes and budgets"
            )
        law = spec.form(**params)
        p2 = np.asarray(c.params(c.rescale(jnp.asarray(th2), -log_s_j)))
        others = [i for i in order[1:] if np.isfinite(f2[i]) and not same_basin(p2[i], pv)]
        runner_up = None
        if others:
            j = int(others[0])
            runner_up = {
                "objective": float(f2[j]),
                "rel_gap": float((f2[j] - f2[best]) / max(f2[best], 1e-300)),
                "params": {k: float(v) for k, v in zip(_param_names(spec), p2[j], strict=True)},
            }
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
            warm = [th2[best], *(th2[int(i)] for i in others[: restarts - 1])]
            profiled = spec.profile_starts if grid is None else None
            th0 = _bootstrap_starts(warm, profiled, log_xn, y, counts, 2)
            s = th0.shape[1]
            bt, bv, _ = run_padded(
                solve, th0.reshape(-1, p), np.repeat(counts, s, axis=0), pts,
                solver.bootstrap_iter,
            )  # fmt: skip
            bv = np.where(np.isfinite(bv), bv, np.inf).reshape(bootstrap, s)
            bt = bt.reshape(bootstrap, s, p)[np.arange(bootstrap), np.argmin(bv, axis=1)]
            samples = np.asarray(c.params(c.rescale(jnp.asarray(bt), -log_s_j)))
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
    grad_rel = grad_max / max(value, 1e-300)
    converged = bool(grad_max <= CONVERGED_GTOL * value + 1e-14)
    in_basin = int(np.sum(same_basin(p2, pv) & np.isfinite(f2)))
    message = (
        f"{'converged' if converged else 'NOT converged'}: max|grad| {grad_max:.2g} = "
        f"{grad_rel:.2g} x objective after {int(k2[best])} iterations; refined from "
        f"{searched}, {in_basin} reach it"
    )
    if runner_up is not None:
        message += f"; next optimum {100 * runner_up['rel_gap']:.3g}% worse"
    return FitResult(
        law=law,
        params=params,
        stderr={k: float(se[i]) for i, k in enumerate(params)},
        objective=value,
        converged=converged,
        message=message,
        residuals=r,
        n_points=n,
        aic=float(log_lik_term + 2 * p),
        bic=float(log_lik_term + p * np.log(n)),
        r2=r2,
        n_starts=len(th1),
        ci=ci,
        ci_level=ci_level,
        bootstrap=bootstrap,
        bootstrap_params=samples,
        holdout=held_out,
        grad_rel=grad_rel,
        starts_in_basin=in_basin,
        runner_up=runner_up,
    )


def _bootstrap_starts(
    warm: list[np.ndarray],
    profile_starts: Callable[..., np.ndarray] | None,
    log_xn: tuple[np.ndarray, ...],
    y: np.ndarray,
    counts: np.ndarray,
    k: int,
) -> np.ndarray:
    """(resamples, starts, p): each resample starts from the optimum and the next best distinct
    optima (``warm``) and, for a form with a profile, from the lowest ``k`` minima of its own
    profile, so that a resample may change basin (padded with the optimum to a common count)."""
    if profile_starts is None:
        return np.tile(np.stack(warm), (len(counts), 1, 1))
    rows = []
    for w in counts:
        own = list(profile_starts(log_xn, y, w, k))
        rows.append(np.stack([*warm, *own, *[warm[0]] * (k - len(own))]))
    return np.stack(rows)


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what.replace('minimum', 'minima')}"


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
    """Approach 3: fit L(N, D) = E + A/N^α + B/D^β as Besiroglu et al. 2024 refit it.

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
