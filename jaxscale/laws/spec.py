"""What the fitter and its solver share: how a law form is fitted (``Spec``) and the robust
objective's scale (``HUBER_DELTA``). Both ``fit.py`` and ``solver.py`` import this module and
neither imports the other's internals, so there is no import circle."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax

from jaxscale.laws.forms import Law

HUBER_DELTA = 1e-3  # Hoffmann et al. 2022, appendix D.2


class Spec(NamedTuple):
    """How to fit one law form.

    Attributes:
      form: the law class built from the fit.
      names: names of the unconstrained fit parameters θ (e.g. ``a = log A``).
      log_predict: ``(θ, inputs) -> log ŷ``, with ``inputs`` a tuple of 1-D arrays.
      to_params: ``θ -> {law parameter: value}``, traceable (used for the delta method).
      grid: the default start values of each θ; starts are their Cartesian product.

    Example:
      >>> POWER = Spec(OffsetPower, ("a", "e", "alpha"), log_predict, to_params, grid)
      ... # doctest: +SKIP
    """

    form: type[Law]
    names: tuple[str, ...]
    log_predict: Callable[[jax.Array, tuple[jax.Array, ...]], jax.Array]
    to_params: Callable[[jax.Array], dict[str, jax.Array]]
    grid: tuple[tuple[float, ...], ...]
