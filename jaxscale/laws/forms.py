"""Scaling laws as pytrees: registered frozen dataclasses with a ``__call__``.

Every law is a JAX pytree whose leaves are its parameters, so it can be ``jax.jit``-ed, stacked and
``jax.vmap``-ed over, and differentiated: ``jax.grad(lambda law: law(N, D))(law)`` is a law of the
same form holding the derivatives. Parameters keep the papers' letters.

Example:
  >>> law = Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
  >>> round(float(law(70e9, 1.4e12)), 3)
  1.937
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxscale.errors import UserError

Scalar = float | jax.Array

FORMS: dict[str, type[Law]] = {}


def _law(cls: type) -> type:
    """Make ``cls`` a frozen dataclass registered as a pytree whose leaves are all its fields."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    # data_fields/meta_fields passed explicitly: jax 0.5.0 requires them.
    jax.tree_util.register_dataclass(cls, data_fields=names, meta_fields=[])
    FORMS[cls.__name__] = cls
    return cls


class Law:
    """Common behaviour of every law: its parameters as a dict, JSON round trip."""

    variables: ClassVar[tuple[str, ...]] = ()

    @property
    def params(self) -> dict[str, float]:
        """The parameters by name, as Python floats."""
        return {f.name: float(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_dict(self) -> dict[str, Any]:
        """``{"form": class name, "params": {...}}``, as read by :func:`law_from_dict`."""
        return {"form": type(self).__name__, "params": self.params}

    def save(self, path: str | os.PathLike[str], **extra: Any) -> Path:
        """Write the law (and any ``extra`` JSON-able keys) to ``path``; returns the path."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps({**self.to_dict(), **extra}, indent=2) + "\n")
        return p


@_law
class Chinchilla(Law):
    """Hoffmann et al. 2022 (arXiv:2203.15556), approach 3: L(N, D) = E + A/N^α + B/D^β.

    N counts every parameter, D training tokens.

    Example:
      >>> Chinchilla(1.69, 406.4, 410.7, 0.34, 0.28)(1e9, 20e9)  # doctest: +SKIP
    """

    E: Scalar
    A: Scalar
    B: Scalar
    alpha: Scalar
    beta: Scalar
    variables: ClassVar[tuple[str, ...]] = ("N", "D")

    def __call__(self, N: Any, D: Any) -> jax.Array:
        return self.E + self.A / jnp.power(N, self.alpha) + self.B / jnp.power(D, self.beta)


@_law
class Kaplan(Law):
    """Kaplan et al. 2020 (arXiv:2001.08361), eq. 1.5: L(N, D) = [(N_c/N)^(α_N/α_D) + D_c/D]^α_D.

    N counts non-embedding parameters.

    Example:
      >>> Kaplan(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095)(1e8, 1e10)  # doctest: +SKIP
    """

    N_c: Scalar
    alpha_N: Scalar
    D_c: Scalar
    alpha_D: Scalar
    variables: ClassVar[tuple[str, ...]] = ("N", "D")

    def __call__(self, N: Any, D: Any) -> jax.Array:
        n_term = jnp.power(self.N_c / N, self.alpha_N / self.alpha_D)
        return jnp.power(n_term + self.D_c / D, self.alpha_D)


@_law
class KaplanN(Law):
    """Kaplan 2020, eq. 1.1 (data unlimited): L(N) = (N_c/N)^α_N, N non-embedding."""

    N_c: Scalar
    alpha_N: Scalar
    variables: ClassVar[tuple[str, ...]] = ("N",)

    def __call__(self, N: Any) -> jax.Array:
        return jnp.power(self.N_c / N, self.alpha_N)


@_law
class KaplanD(Law):
    """Kaplan 2020, eq. 1.2 (early-stopped, model unlimited): L(D) = (D_c/D)^α_D."""

    D_c: Scalar
    alpha_D: Scalar
    variables: ClassVar[tuple[str, ...]] = ("D",)

    def __call__(self, D: Any) -> jax.Array:
        return jnp.power(self.D_c / D, self.alpha_D)


@_law
class KaplanC(Law):
    """Kaplan 2020, eq. 1.3 (compute-optimal): L(C) = (C_c/C)^α_C, C in PF-days."""

    C_c: Scalar
    alpha_C: Scalar
    variables: ClassVar[tuple[str, ...]] = ("C",)

    def __call__(self, C: Any) -> jax.Array:
        return jnp.power(self.C_c / C, self.alpha_C)


@_law
class OffsetPower(Law):
    """A power law with an irreducible term (Hestness et al. 2017): L(x) = E + A/x^α.

    x is N or D (or steps, for early-stopping extrapolation).

    Example:
      >>> float(OffsetPower(E=1.8, A=450.0, alpha=0.5)(1e4))
      6.3
    """

    E: Scalar
    A: Scalar
    alpha: Scalar
    variables: ClassVar[tuple[str, ...]] = ("x",)

    def __call__(self, x: Any) -> jax.Array:
        return self.E + self.A / jnp.power(x, self.alpha)


@_law
class TestTime(Law):
    """Test-time compute (Snell et al. 2024): Accuracy(N, T) = min(1, α·(N·T)^β).

    N is model size and T test-time compute (e.g. samples or tokens per problem); pass N=1 for a
    single model, Accuracy(T) = min(1, α·T^β).
    """

    __test__ = False  # not a pytest class despite the name

    alpha: Scalar
    beta: Scalar
    variables: ClassVar[tuple[str, ...]] = ("N", "T")

    def __call__(self, N: Any, T: Any) -> jax.Array:
        return jnp.minimum(1.0, self.alpha * jnp.power(N * T, self.beta))


@_law
class Coverage(Law):
    """Repeated-sampling coverage (Brown et al. 2024, arXiv:2407.21787): c(k) = exp(a·k^b).

    With a < 0 and b < 0 coverage rises towards 1 as the number of samples k grows.
    """

    a: Scalar
    b: Scalar
    variables: ClassVar[tuple[str, ...]] = ("k",)

    def __call__(self, k: Any) -> jax.Array:
        return jnp.exp(self.a * jnp.power(k, self.b))


# Published laws by name.
BUILTINS: dict[str, Law] = {
    # Hoffmann et al. 2022 (arXiv:2203.15556), approach 3 as published.
    "chinchilla": Chinchilla(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    # Besiroglu et al. 2024 (arXiv:2404.10102), the refit on Hoffmann's data.
    "besiroglu2024": Chinchilla(E=1.817, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
    # Kaplan et al. 2020 (arXiv:2001.08361), eq. 1.5 with the constants of eqs. 1.1-1.2.
    "kaplan2020": Kaplan(N_c=8.8e13, alpha_N=0.076, D_c=5.4e13, alpha_D=0.095),
}


def law_from_dict(data: dict[str, Any]) -> Law:
    """Rebuild a law from ``{"form": ..., "params": {...}}`` (extra keys are ignored).

    Raises:
      UserError: not such an object, an unknown form, missing or extra parameters, or a
        parameter that is not a finite number.
    """
    if not isinstance(data, dict):
        raise UserError(f'a law is a JSON object with "form" and "params", not {data!r:.60}')
    form = FORMS.get(str(data.get("form")))
    if form is None:
        raise UserError(f"unknown law form {data.get('form')!r}; known: {', '.join(FORMS)}")
    names = [f.name for f in dataclasses.fields(form)]
    params = data.get("params")
    if not isinstance(params, dict) or sorted(params) != sorted(names):
        got = sorted(params) if isinstance(params, dict) else params
        raise UserError(f"law {form.__name__} needs params {names}, got {got}")
    for k, v in params.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise UserError(
                f"law {form.__name__}: parameter {k} must be a finite number, not {v!r}"
            )
    return form(**{k: float(params[k]) for k in names})


def law_entry(value: Any) -> dict[str, Any]:
    """A law's entry in a laws file: ``{form, params}``, and for a ``FitResult`` its statistics
    under ``"fit"``; :func:`law_from_dict` reads it back."""
    if isinstance(value, Law):
        return value.to_dict()
    stats = value.to_dict()
    return {"form": stats.pop("form"), "params": stats.pop("params"), "fit": stats}


def save_laws(path: str | os.PathLike[str], laws: dict[str, Any], **extra: Any) -> Path:
    """Write several laws to one file: ``{"laws": {key: {form, params, "fit": {...}}}, **extra}``.

    Args:
      path: output JSON file.
      laws: key -> a :class:`Law` or a ``FitResult`` (whose statistics go under ``"fit"``).
      extra: further top-level JSON-able keys (e.g. the sweep's name).

    Example:
      >>> save_laws("reports/quick/laws.json", {"L_ND": fit_chinchilla(N, D, L)})  # doctest: +SKIP
    """
    entries = {key: law_entry(value) for key, value in laws.items()}
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"laws": entries, **extra}, indent=2) + "\n")
    return p


def load_law(name_or_path: str | os.PathLike[str], name: str | None = None) -> Law:
    """A built-in law by name, or a law saved by :meth:`Law.save` or :func:`save_laws`.

    Args:
      name_or_path: a built-in (``chinchilla``, ``besiroglu2024``, ``kaplan2020``,
        ``muennighoff2023``) or a JSON file.
      name: the key to pick in a multi-law file; by default its only law, else ``L_ND``.

    Returns:
      The law, ready to call inside any JAX program.

    Raises:
      UserError: unknown name, unreadable file, or an ambiguous multi-law file.

    Example:
      >>> load_law("chinchilla").params["alpha"]
      0.34
    """
    key = str(name_or_path)
    if key.lower() in BUILTINS:
        return BUILTINS[key.lower()]
    p = Path(key)
    if p.is_dir() and (p / "laws.json").is_file():
        raise UserError(f"{p} is a directory: give its laws file, {p / 'laws.json'}")
    if not p.is_file():
        raise UserError(
            f"unknown law {key!r}: give a built-in ({', '.join(BUILTINS)}) or a law JSON file"
        )
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read law file {p}: {e}") from None
    if not isinstance(data, dict) or "laws" not in data:
        return law_from_dict(data)
    laws = data["laws"]
    if not isinstance(laws, dict) or not laws:
        raise UserError(f'{p}: "laws" must map names to laws, not {laws!r:.60}')
    if name is None:
        if len(laws) == 1:
            name = next(iter(laws))
        elif "L_ND" in laws:
            name = "L_ND"
        else:
            raise UserError(f"{p} holds several laws ({', '.join(laws)}); pick one by name")
    if name not in laws:
        raise UserError(f"{p} has no law {name!r}; it holds {', '.join(laws)}")
    return law_from_dict(laws[name])
