"""Starts from the profile over the exponents: variable projection for E + Σ_j A_j·x_j^(-α_j).

For fixed exponents the form is linear in its coefficients (E, A_1, ..., A_m) >= 0, so each
point of a dense grid over the exponents gets its best coefficients from a small non-negative
least-squares problem in closed form, and the exponents' *profile* (the best objective at each
grid point) is searched exhaustively instead of by luck of a start grid (Golub & Pereyra 1973,
variable projection; used for exactly this form by Open-Athena's VPNLS, arXiv:2603.22339). The
profile here is the relative squared error Σ_i w_i·(L̂_i/L_i - 1)², a smooth stand-in for the
fitted log-space Huber objective; its lowest local minima are where L-BFGS refines from.
"""

from __future__ import annotations

import itertools

import numpy as np

EXPONENTS = np.round(np.arange(0.02, 2.5001, 0.02), 4)  # the profile's grid of each exponent


def _solve(G: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Batched solves of (..., k, k) systems for k <= 3 by Cramer's rule: far cheaper than a
    LAPACK call per cell for the profile's ~15,000 tiny systems."""
    k = G.shape[-1]
    if k == 1:
        return r / G[..., 0]
    if k == 2:
        det = G[..., 0, 0] * G[..., 1, 1] - G[..., 0, 1] * G[..., 1, 0]
        b0 = G[..., 1, 1] * r[..., 0] - G[..., 0, 1] * r[..., 1]
        b1 = G[..., 0, 0] * r[..., 1] - G[..., 1, 0] * r[..., 0]
        return np.stack([b0, b1], axis=-1) / det[..., None]
    det = _det3(G)
    out = []
    for i in range(3):
        Gi = G.copy()
        Gi[..., :, i] = r
        out.append(_det3(Gi))
    return np.stack(out, axis=-1) / det[..., None]


def _det3(M: np.ndarray) -> np.ndarray:
    a, b, c = M[..., 0, 0], M[..., 0, 1], M[..., 0, 2]
    d, e, f = M[..., 1, 0], M[..., 1, 1], M[..., 1, 2]
    g, h, i = M[..., 2, 0], M[..., 2, 1], M[..., 2, 2]
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)


def _nnls_small(G: np.ndarray, r: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Batched NNLS min_{β>=0} βᵀGβ - 2βᵀr + c over (..., k, k) Gram matrices, by trying every
    active set (2^k - 1 of them, k <= 3 here). Returns (coefficients (..., k), objective (...))."""
    k = G.shape[-1]
    best_f = np.full(G.shape[:-2], np.inf)
    best_b = np.zeros(G.shape[:-1])
    for size in range(1, k + 1):
        for subset in itertools.combinations(range(k), size):
            idx = np.array(subset)
            G_s = G[..., idx[:, None], idx[None, :]]
            r_s = r[..., idx]
            # a tiny ridge keeps collinear columns (an exponent near 0 copies E) solvable
            ridge = 1e-12 * np.trace(G_s, axis1=-2, axis2=-1)[..., None, None] * np.eye(size)
            with np.errstate(divide="ignore", invalid="ignore"):
                b_s = _solve(G_s + ridge, r_s)
            b_s = np.where(np.isfinite(b_s), b_s, -1.0)  # a singular system: not a solution
            f = c - np.einsum("...i,...i->...", b_s, r_s)  # at the solution, βᵀGβ = βᵀr
            ok = np.all(b_s >= 0, axis=-1) & (f < best_f)
            best_f = np.where(ok, f, best_f)
            full = np.zeros(G.shape[:-1])
            full[..., idx] = b_s
            best_b = np.where(ok[..., None], full, best_b)
    return best_b, best_f


def profile(
    log_x: tuple[np.ndarray, ...], y: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The profile of E + Σ_j A_j·exp(-α_j·log x_j) over a grid of exponents (one axis per term).

    Args:
      log_x: the m inputs' logs (each (n,)), scaled as the fitter scales them.
      y: observed values (n,); w: weights of the points (n,), e.g. bootstrap counts.

    Returns:
      (exponents (G^m, m), coefficients (G^m, 1 + m) as (E, A_1, ..., A_m), objective (G^m,)),
      the grid in C order over the m exponent axes.
    """
    m, g = len(log_x), len(EXPONENTS)
    u = w / y**2  # weights of the relative error (L̂ - L)/L
    # column 0 is the constant (E), column 1 + j the powers x_j^-α over the grid: (g, n) each
    powers = [np.exp(-EXPONENTS[:, None] * lx[None, :]) for lx in log_x]
    k = 1 + m
    G = np.empty((g,) * m + (k, k))
    r = np.empty((g,) * m + (k,))

    def along(values: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        """Broadcast values over the given exponent axes into the m-dimensional grid."""
        shape = [1] * m
        for ax in axes:
            shape[ax] = g
        return values.reshape(shape)

    G[..., 0, 0] = np.sum(u)
    r[..., 0] = np.sum(u * y)
    for j, pj in enumerate(powers):
        G[..., 0, 1 + j] = G[..., 1 + j, 0] = along(pj @ u, (j,))
        G[..., 1 + j, 1 + j] = along((pj * pj) @ u, (j,))
        r[..., 1 + j] = along(pj @ (u * y), (j,))
        for i in range(j):  # a pair of exponent axes: one matrix product over the points
            G[..., 1 + i, 1 + j] = G[..., 1 + j, 1 + i] = along((powers[i] * u) @ pj.T, (i, j))
    coef, f = _nnls_small(G, r, float(np.sum(u * y * y)))
    grid = np.stack(np.meshgrid(*[EXPONENTS] * m, indexing="ij"), axis=-1)
    return grid.reshape(-1, m), coef.reshape(-1, k), f.reshape(-1)


def local_minima(f: np.ndarray, m: int, k: int) -> np.ndarray:
    """Indices of the k lowest local minima of a C-ordered grid of m axes (neighbours: the 3^m - 1
    adjacent cells), lowest first."""
    grid = f.reshape((len(EXPONENTS),) * m)
    padded = np.pad(grid, 1, constant_values=np.inf)
    is_min = np.ones(grid.shape, dtype=bool)
    for shift in itertools.product((-1, 0, 1), repeat=m):
        if any(shift):
            view = tuple(slice(1 + s, 1 + s + len(EXPONENTS)) for s in shift)
            is_min &= grid <= padded[view]
    cells = np.flatnonzero(is_min.ravel() & np.isfinite(grid.ravel()))
    return cells[np.argsort(f[cells])][:k]
