"""Time jaxscale's approach-3 fit against a scipy L-BFGS-B loop over the replication's grid.

Data: the Chinchilla replication's 245 points (Besiroglu et al. 2024); the 5 highest-loss points
are dropped and D = C/(6N). Every fitter minimises the same summed Huber objective (δ = 1e-3,
float64): jaxscale from the exponents' profile (its default), jaxscale from the replication's
4,500-start grid (screened, then refined), and scipy's L-BFGS-B from each of the 4,500 starts
with the analytic gradient (jax.grad, jitted) per call. The replication's optimum is
A ≈ 477.8, B ≈ 2143, E ≈ 1.817, α ≈ 0.3473, β ≈ 0.3672.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python scripts/bench_fit.py [CSV] [--scipy-starts K]

Set OPENBLAS_NUM_THREADS=1 for a fair scipy time: L-BFGS-B's tiny BLAS calls otherwise spin up
OpenBLAS threads on every iteration, which made each start ~30x slower on a busy 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import minimize

from jaxscale.laws.fit import CHINCHILLA, HUBER_DELTA, fit_chinchilla, start_grid, x64

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "../shared/data/chinchilla_replication.csv"


def load(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, loss) of the replication data without its 5 highest-loss points."""
    data = np.genfromtxt(path, delimiter=",", names=True)
    keep = np.argsort(data["loss"])[:-5]
    N, C, loss = data["N"][keep], data["C"][keep], data["loss"][keep]
    return N, C / (6 * N), loss


def scipy_loop(N, D, loss, starts: np.ndarray) -> tuple[float, np.ndarray]:
    """The replication's loop: scipy L-BFGS-B from each start; returns (best objective, θ)."""
    with x64():
        xs, log_y = (jnp.asarray(N), jnp.asarray(D)), jnp.log(jnp.asarray(loss))

        def objective(th):
            r = CHINCHILLA.log_predict(th, xs) - log_y
            return jnp.sum(optax.huber_loss(r, delta=HUBER_DELTA))

        value_and_grad = jax.jit(jax.value_and_grad(objective))

        def fun(th):
            v, g = value_and_grad(jnp.asarray(th))
            return float(v), np.asarray(g, dtype=np.float64)

        fun(starts[0])  # compile outside the timing
        best = (np.inf, None)
        for th0 in starts:
            res = minimize(fun, th0, jac=True, method="L-BFGS-B")
            if res.fun < best[0]:
                best = (float(res.fun), res.x)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", nargs="?", type=Path, default=DEFAULT_CSV)
    parser.add_argument(
        "--scipy-starts",
        type=int,
        default=None,
        help="Time scipy on a random subset of K starts and extrapolate.",
    )
    args = parser.parse_args()
    N, D, loss = load(args.csv)
    print(f"{len(loss)} points from {args.csv}")
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "unset")
    print(f"OPENBLAS_NUM_THREADS={blas}, {os.cpu_count()} CPUs")

    for label, grid in (("profile", None), ("grid", start_grid(CHINCHILLA, None))):
        t0 = time.perf_counter()
        fit = fit_chinchilla(N, D, loss, grid=grid)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fit = fit_chinchilla(N, D, loss, grid=grid)
        t_warm = time.perf_counter() - t0
        print(f"jaxscale from the {label}: {t_warm:.2f} s warm ({t_first:.2f} s with compilation)")
        print(fit.report())
        if label == "profile":
            t_jax, t_jax_first, profile_fit = t_warm, t_first, fit
    fit = profile_fit

    starts = start_grid(CHINCHILLA, None)
    k = len(starts)
    if args.scipy_starts and args.scipy_starts < k:
        rng = np.random.default_rng(0)
        starts = starts[rng.choice(k, args.scipy_starts, replace=False)]
    t0 = time.perf_counter()
    value, th = scipy_loop(N, D, loss, starts)
    t_scipy = (time.perf_counter() - t0) * k / len(starts)
    note = f" (extrapolated from {len(starts)} random starts)" if len(starts) < k else ""
    print(f"scipy L-BFGS-B loop: {t_scipy:.1f} s for {k} starts{note}")
    a, b, e, alpha, beta = th
    print(
        f"  optimum: objective {value:.8g}  A={np.exp(a):.4g} B={np.exp(b):.4g} "
        f"E={np.exp(e):.4g} alpha={alpha:.4f} beta={beta:.4f}"
    )
    p = fit.params
    print(
        f"jaxscale optimum: objective {fit.objective:.8g}  A={p['A']:.4g} B={p['B']:.4g} "
        f"E={p['E']:.4g} alpha={p['alpha']:.4f} beta={p['beta']:.4f}"
    )
    print(
        f"speed-up: {t_scipy / t_jax:.1f}x (warm), {t_scipy / t_jax_first:.1f}x (with compilation)"
    )


if __name__ == "__main__":
    main()
