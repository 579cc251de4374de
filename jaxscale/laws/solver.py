"""The multi-start L-BFGS solver behind :func:`jaxscale.laws.fit.fit_form`.

Every start is minimised by ``optax.lbfgs`` in one jitted call. A vmapped while-loop runs until
its slowest lane stops, so the starts still running are gathered into small chunks that advance a
few iterations at a time (an in-graph compaction): the cost follows the iterations the starts
actually need, while each start still runs to its own stopping rule.

A start stops when its gradient is small *relative to its objective* (max|∇f| <= gtol·f: a
summed Huber objective of 1e-4 with a gradient of 1e-3 is far from its optimum, however small
1e-3 looks), when it has stalled (no relative progress above 1e-13 for ``stall`` iterations), when
its line search fails twice, or at its iteration cap.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from jaxscale.laws.spec import Spec, objective


class Solver(NamedTuple):
    """The global search: every start screened briefly, the best few refined to convergence.

    Attributes:
      screen_iter: L-BFGS iterations each start of the grid gets at most (the screen).
      refine: how many screened ends are refined: the best ones, and the best of each other
        basin (ends whose exponents differ), half each.
      max_iter: iteration cap of a refined start.
      bootstrap_iter: iteration cap of a bootstrap resample's refit (a resample that leaves a
        parameter unidentified runs off along a valley: it stops here, far out as it is).
      gtol: a start has converged when max|∂f/∂θ| <= gtol·f, f the objective.
      stall: iterations without a relative decrease above 1e-13 before a start gives up.
      memory: L-BFGS memory size.
      linesearch: ``"backtracking"`` (Armijo, halving from the full step; cheapest) or
        ``"zoom"`` (strong Wolfe).
      linesearch_steps: cap on line-search steps per iteration (30 halvings reach 1e-9 of the
        full step: the first steps of a far start can be that much too long).
      chunk: starts advanced together; finished starts are swapped out between chunks.
      chunk_iter: iterations a chunk runs before the swap.
    """

    screen_iter: int = 25
    refine: int = 32
    max_iter: int = 3000
    bootstrap_iter: int = 400
    gtol: float = 1e-7
    stall: int = 30
    memory: int = 10
    linesearch: str = "backtracking"
    linesearch_steps: int = 30
    chunk: int = 16
    chunk_iter: int = 8


# A fit counts as converged when max|∇f| <= this·f at its best. At objectives near 1e-6 (losses
# measured to 0.1%), float64 gradients of a summed Huber objective with kinks settle near 1e-4·f;
# a fit stopped early sits orders of magnitude above (an L-BFGS-B run with scipy's default
# tolerances on a 16-run published ladder: 45·f).
CONVERGED_GTOL = 1e-3


class Lane(NamedTuple):
    """One start's solver state: point, L-BFGS state, objective, iterations, flags."""

    th: jax.Array
    state: Any
    f: jax.Array
    k: jax.Array
    running: jax.Array
    restarted: jax.Array
    stalled: jax.Array


def multistart(spec: Spec, cfg: Solver) -> Callable:
    """One jitted call ``solve(θ0, w, xs, log_y, max_iter) -> (θ, objective, iterations)``
    minimising from every row of ``θ0``; ``w`` weighs the points, one row per start or one for
    all. The iteration caps are arguments, so the screen, the refinement and the bootstrap share
    one compiled solver.
    """
    return _multistart(spec, cfg._replace(screen_iter=0, refine=0, max_iter=0, bootstrap_iter=0))


@functools.cache
def _multistart(spec: Spec, cfg: Solver) -> Callable:

    def fun_of(w: jax.Array, xs: tuple, log_y: jax.Array) -> Callable:
        return functools.partial(objective, spec, w=w, xs=xs, log_y=log_y)

    if cfg.linesearch == "zoom":
        search = optax.scale_by_zoom_linesearch(max_linesearch_steps=cfg.linesearch_steps)
    else:
        search = optax.scale_by_backtracking_linesearch(
            max_backtracking_steps=cfg.linesearch_steps, decrease_factor=0.5, store_grad=True
        )
    opt = optax.lbfgs(memory_size=cfg.memory, linesearch=search)

    def advance(lane: Lane, w: jax.Array, xs: tuple, log_y: jax.Array, cap: jax.Array) -> Lane:
        """Up to ``chunk_iter`` L-BFGS iterations of one start.

        A step that does not decrease the objective (the line search gave up) is undone and the
        L-BFGS memory restarted, so the next step is a steepest-descent one; the start stops when
        that fails too.
        """
        fun = fun_of(w, xs, log_y)
        value_and_grad = optax.value_and_grad_from_state(fun)

        def step(c: tuple[Lane, jax.Array]) -> tuple[Lane, jax.Array]:
            lane, inner = c
            value, grad = value_and_grad(lane.th, state=lane.state)
            updates, state = opt.update(
                grad, lane.state, lane.th, value=value, grad=grad, value_fn=fun
            )
            f, g = otu.tree_get(state, "value"), otu.tree_get(state, "grad")
            failed = ~(f < value)  # also when f is NaN
            small = ~failed & (value - f <= 1e-13 * jnp.abs(f))
            stalled = jnp.where(small, lane.stalled + 1, 0)
            k = lane.k + 1
            converged = ~failed & (jnp.max(jnp.abs(g)) <= cfg.gtol * jnp.abs(f))
            done = converged | (failed & lane.restarted) | (stalled >= cfg.stall) | (k >= cap)
            fresh = opt.init(lane.th)
            lane = Lane(
                th=jnp.where(failed, lane.th, optax.apply_updates(lane.th, updates)),
                state=jax.tree.map(lambda a, b: jnp.where(failed, a, b), fresh, state),
                f=jnp.where(failed, value, f),
                k=k,
                running=~done,
                restarted=failed,
                stalled=stalled,
            )
            return lane, inner + 1

        lane, _ = jax.lax.while_loop(
            lambda c: c[0].running & (c[1] < cfg.chunk_iter), step, (lane, 0)
        )
        return lane

    def solve(th0: jax.Array, w: jax.Array, xs: tuple, log_y: jax.Array, cap: jax.Array) -> tuple:
        n_starts = th0.shape[0]
        chunk = min(cfg.chunk, n_starts)
        w_all = jnp.broadcast_to(w, (n_starts, log_y.shape[0]))
        f0 = jax.vmap(lambda th, w: objective(spec, th, w, xs, log_y))(th0, w_all)
        lanes = Lane(
            th=th0,
            state=jax.vmap(opt.init)(th0),
            f=f0,
            k=jnp.zeros(n_starts, dtype=jnp.int32),
            running=jnp.isfinite(f0),
            restarted=jnp.zeros(n_starts, dtype=bool),
            stalled=jnp.zeros(n_starts, dtype=jnp.int32),
        )
        run_chunk = jax.vmap(advance, in_axes=(0, 0, None, None, None))

        def body(lanes: Lane) -> Lane:
            # The running starts first (stable order), then finished ones as idle filler.
            _, idx = jax.lax.top_k(lanes.running.astype(jnp.int32), chunk)
            sub = jax.tree.map(lambda x: x[idx], lanes)
            sub = run_chunk(sub, w_all[idx], xs, log_y, cap)
            return jax.tree.map(lambda x, s: x.at[idx].set(s), lanes, sub)

        lanes = jax.lax.while_loop(lambda c: jnp.any(c.running), body, lanes)
        return lanes.th, lanes.f, lanes.k

    return jax.jit(solve)


def bucket(k: int) -> int:
    """Sizes are padded up to a power of two (at least 8) so that fits of a few more or fewer
    points or starts reuse one compiled solver instead of compiling their own."""
    return max(8, 1 << (k - 1).bit_length())


class Points(NamedTuple):
    """The points as the solver sees them: inputs scaled, padded with zero-weight points."""

    xs: tuple[jax.Array, ...]
    log_y: jax.Array
    n: int  # the real points, first


def padded_points(xs: Sequence[np.ndarray], log_s: np.ndarray, y: np.ndarray) -> Points:
    n = len(y)
    pad = bucket(n) - n
    scaled = tuple(
        jnp.asarray(np.r_[x / np.exp(s), np.ones(pad)]) for x, s in zip(xs, log_s, strict=True)
    )
    return Points(scaled, jnp.asarray(np.r_[np.log(y), np.zeros(pad)]), n)  # fmt: skip


def run_padded(solve: Callable, th: np.ndarray, w: np.ndarray, pts: Points, cap: int) -> tuple:
    """``solve`` from the rows of ``th`` with point weights ``w`` ((n,) or one row per start),
    the starts padded to a bucket with copies that weigh nothing; returns the real starts'
    (θ, objective, iterations)."""
    k, n_pad = len(th), len(pts.log_y)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), (k, pts.n))
    lanes = bucket(k)
    th = np.concatenate([th, np.repeat(th[:1], lanes - k, axis=0)])
    w = np.pad(w, ((0, lanes - k), (0, n_pad - pts.n)))
    out = solve(jnp.asarray(th), jnp.asarray(w), pts.xs, pts.log_y, cap)
    return tuple(np.asarray(v)[:k] for v in jax.device_get(out))
