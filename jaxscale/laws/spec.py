"""How a law form is fitted: its log-space prediction, parameters, start grid and scaling.

A :class:`Spec` is everything the generic fitter (``fit.fit_form``) and the multi-start solver
(``solver.multistart``) need to know about a form; both import it from here. The objective is the
Chinchilla replication's (Besiroglu et al. 2024, arXiv:2404.10102):

    objective(θ) = Σ_i w_i · Huber_δ(log_predict(θ, inputs)_i - log y_i),  δ = 1e-3, summed

Inputs are fitted divided by their geometric mean. The objective is unchanged (``rescale`` maps
each θ to the same law in the scaled units), but its conditioning is not: for the Chinchilla form
in raw units, a change of α must be matched by a change of a = log A about ln N ≈ 20 times as
large, a valley L-BFGS crawls along, stopping far from its floor (Li et al. 2025, "(Mis)fitting
scaling laws", on how the parametrisation and the stopping rule decide the optimum found).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxscale.laws.forms import Chinchilla, Kaplan, Law, OffsetPower
from jaxscale.laws.profile import local_minima, profile

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, appendix D.2


@contextlib.contextmanager
def x64() -> Iterator[None]:
    """float64 inside the block only (training stays float32): ``jax.enable_x64`` in new jax,
    ``jax.experimental.enable_x64`` in jax 0.5."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    with enable(True):
        yield


def _identity(th: jax.Array, log_s: jax.Array) -> jax.Array:
    return th


class Spec(NamedTuple):
    """How to fit one law form.

    Attributes:
      form: the law class built from the fit.
      names: names of the unconstrained fit parameters θ (e.g. ``a = log A``).
      log_predict: ``(θ, inputs) -> log ŷ``, with ``inputs`` a tuple of 1-D arrays.
      to_params: ``θ -> {law parameter: value}``, traceable (used for the delta method).
      grid: the default start values of each θ; starts are their Cartesian product.
      rescale: ``(θ, log_s) -> θ'``, the same law's parameters once each input x_j is divided
        by exp(log_s[j]); ``rescale(rescale(θ, s), -s) == θ``. The default leaves θ as it is
        (the inputs are then fitted unscaled).
      profile_starts: ``(log inputs, y, w, k) -> (k', p)`` starts in the scaled units from the
        profile over the form's exponents (``profile.py``), for forms linear in all but their
        exponents; None: the fitter screens the start grid instead.
    """

    form: type[Law]
    names: tuple[str, ...]
    log_predict: Callable[[jax.Array, tuple[jax.Array, ...]], jax.Array]
    to_params: Callable[[jax.Array], dict[str, jax.Array]]
    grid: tuple[tuple[float, ...], ...]
    rescale: Callable[[jax.Array, jax.Array], jax.Array] = _identity
    profile_starts: Callable[..., np.ndarray] | None = None


def objective(
    spec: Spec, th: jax.Array, w: jax.Array, xs: tuple[jax.Array, ...], log_y: jax.Array
) -> jax.Array:
    """Σ_i w_i · Huber_δ(log_predict(θ, xs)_i - log y_i): the fitted objective, summed."""
    huber = optax.huber_loss(spec.log_predict(th, xs) - log_y, delta=HUBER_DELTA)
    return jnp.sum(w * huber)


def input_scales(xs: tuple[np.ndarray, ...], spec: Spec) -> np.ndarray:
    """log of each input's geometric mean, or zeros for a form fitted unscaled."""
    if spec.rescale is _identity:
        return np.zeros(len(xs))
    return np.array([float(np.mean(np.log(x))) for x in xs])


def _offset_power_starts(
    log_x: tuple[np.ndarray, ...], y: np.ndarray, w: np.ndarray, k: int
) -> np.ndarray:
    """Starts θ = (log A_1, ..., log A_m, log E, α_1, ..., α_m) at the k lowest local minima of
    the profile of E + Σ_j A_j·x_j^(-α_j); a coefficient the profile set to 0 starts tiny."""
    exponents, coef, f = profile(log_x, y, w)
    cells = local_minima(f, len(log_x), k)
    logs = np.log(np.maximum(coef[cells], 1e-9 * float(np.mean(y))))
    e, a = logs[:, :1], logs[:, 1:]
    return np.concatenate([a, e, exponents[cells]], axis=1)


def _steps(lo: float, hi: float, step: float) -> tuple[float, ...]:
    return tuple(float(v) for v in np.arange(lo, hi + step / 2, step))


def _chinchilla_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    a, b, e, alpha, beta = th
    log_n, log_d = jnp.log(xs[0]), jnp.log(xs[1])
    terms = jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)])
    return jax.nn.logsumexp(terms, axis=0)


def _chinchilla_rescale(th: jax.Array, log_s: jax.Array) -> jax.Array:
    # A/N^α = (A/s^α)/(N/s)^α
    a, b, e, alpha, beta = th
    return jnp.stack([a - alpha * log_s[0], b - beta * log_s[1], e, alpha, beta])


def _kaplan_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    n_c, alpha_n, d_c, alpha_d = th
    n_term = (alpha_n / alpha_d) * (n_c - jnp.log(xs[0]))
    return alpha_d * jnp.logaddexp(n_term, d_c - jnp.log(xs[1]))


def _kaplan_rescale(th: jax.Array, log_s: jax.Array) -> jax.Array:
    # N_c/N = (N_c/s)/(N/s)
    n_c, alpha_n, d_c, alpha_d = th
    return jnp.stack([n_c - log_s[0], alpha_n, d_c - log_s[1], alpha_d])


def _power_log(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    a, e, alpha = th
    return jnp.logaddexp(a - alpha * jnp.log(xs[0]), e)


def _power_rescale(th: jax.Array, log_s: jax.Array) -> jax.Array:
    a, e, alpha = th
    return jnp.stack([a - alpha * log_s[0], e, alpha])


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
    _chinchilla_rescale,
    _offset_power_starts,  # θ = (a, b, e, α, β) is its layout for m = 2
)
KAPLAN = Spec(
    Kaplan,
    ("log_N_c", "alpha_N", "log_D_c", "alpha_D"),
    _kaplan_log,
    lambda th: {"N_c": jnp.exp(th[0]), "alpha_N": th[1], "D_c": jnp.exp(th[2]), "alpha_D": th[3]},
    ((10.0, 20.0, 30.0, 40.0), (0.05, 0.1, 0.2, 0.4)) * 2,
    _kaplan_rescale,
)
POWER = Spec(
    OffsetPower,
    ("a", "e", "alpha"),
    _power_log,
    lambda th: {"E": jnp.exp(th[1]), "A": jnp.exp(th[0]), "alpha": th[2]},
    (_steps(0, 25, 5), _steps(-1, 1, 0.5), (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)),
    _power_rescale,
    _offset_power_starts,  # θ = (a, e, α) for m = 1
)
