"""Data-constrained scaling (Muennighoff et al. 2023, arXiv:2305.16264): when data repeats.

A run of D tokens drawn from U unique ones repeats them R_D = D/U - 1 times; a model of N
parameters is larger than the unique data justify when N > U_N = min(N, N_opt(U)), the size whose
compute-optimal token count is U, by R_N = N/U_N - 1 "repeated" parameters. Repeats are worth
less and less:

    D' = U + U·R_D*·(1 - e^(-R_D/R_D*))          (effective data, at most U·(1 + R_D*))
    N' = U_N + U_N·R_N*·(1 - e^(-R_N/R_N*))      (effective parameters)
    L(N, D, U) = E + A/N'^α + B/D'^β

with N_opt(U) = G·(G·U)^(β/α), G = (αA/(βB))^(1/(α+β)) from the single-epoch (Chinchilla) part,
exactly as their released code computes it (the datablations repository's README). U is the
unique tokens the run drew from: min(U, D), so unique data a run never reached do not count.

Example:
  >>> law = load_law("muennighoff2023")                          # doctest: +SKIP
  >>> float(law(6.34e9, 242e9, 25e9))  # their README's example   # doctest: +SKIP
  2.2256440889984477
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxscale.errors import FitDataError, UserError
from jaxscale.laws.fit import Spec, fit_chinchilla, fit_form, start_grid, x64
from jaxscale.laws.forms import BUILTINS, Chinchilla, Law, Scalar, _law, law_entry
from jaxscale.laws.result import FitResult


def effective(N: Any, D: Any, U: Any, law: DataConstrained) -> tuple[jax.Array, jax.Array]:
    """The effective parameters N' and data D' of Muennighoff et al. 2023 (eqs. 5-6).

    Args:
      N, D, U: parameters, training tokens and unique tokens (U above D counts as D).
      law: its A, B, α, β give N_opt(U); R_D*, R_N* the worth of repeats.

    Returns:
      ``(N', D')``; both equal (N, D) when nothing repeats and N <= N_opt(U).
    """
    U = jnp.minimum(U, D)
    log_g = (jnp.log(law.alpha * law.A) - jnp.log(law.beta * law.B)) / (law.alpha + law.beta)
    u_n = jnp.minimum(N, jnp.exp(log_g + law.beta / law.alpha * (log_g + jnp.log(U))))
    r_d = jnp.maximum(D / U - 1, 0.0)
    r_n = jnp.maximum(N / u_n - 1, 0.0)
    d_eff = U * (1 - law.R_D_star * jnp.expm1(-r_d / law.R_D_star))
    n_eff = u_n * (1 - law.R_N_star * jnp.expm1(-r_n / law.R_N_star))
    return n_eff, d_eff


@_law
class DataConstrained(Law):
    """Muennighoff et al. 2023: L(N, D, U) = E + A/N'^α + B/D'^β with the effective N', D' of
    :func:`effective`; with unique data to spare (U >= D, N <= N_opt(U)) it is Chinchilla's form.

    N counts all parameters (Hoffmann's convention, as their fit does), D training tokens, U the
    unique tokens among them.

    Example:
      >>> law = BUILTINS["muennighoff2023"]
      >>> round(float(law(6.34e9, 242e9, 25e9)), 6)
      2.225644
    """

    E: Scalar
    A: Scalar
    B: Scalar
    alpha: Scalar
    beta: Scalar
    R_D_star: Scalar
    R_N_star: Scalar
    variables: ClassVar[tuple[str, ...]] = ("N", "D", "U")

    def __call__(self, N: Any, D: Any, U: Any) -> jax.Array:
        n_eff, d_eff = effective(N, D, U, self)
        return self.E + self.A / jnp.power(n_eff, self.alpha) + self.B / jnp.power(d_eff, self.beta)

    @property
    def base(self) -> Chinchilla:
        """The single-epoch law: E + A/N^α + B/D^β with the same constants."""
        return Chinchilla(self.E, self.A, self.B, self.alpha, self.beta)


# Their fit on C4 (the datablations README): a Chinchilla refit with α = β, then R_D*, R_N*.
BUILTINS["muennighoff2023"] = DataConstrained(
    E=math.exp(0.6254804),
    A=math.exp(6.255414),
    B=math.exp(7.3049974),
    alpha=0.3526596,
    beta=0.3526596,
    R_D_star=15.387756,
    R_N_star=5.309743,
)


def _to_params(th: jax.Array) -> dict[str, jax.Array]:
    """θ = (a, b, e, α, β, log R_D*, log R_N*) -> the law's parameters (all but α, β logged)."""
    A, B, E, R_D_star, R_N_star = (jnp.exp(th[i]) for i in (0, 1, 2, 5, 6))
    return dict(E=E, A=A, B=B, alpha=th[3], beta=th[4], R_D_star=R_D_star, R_N_star=R_N_star)


def _log_predict(th: jax.Array, xs: tuple[jax.Array, ...]) -> jax.Array:
    """log L̂ = logsumexp(a - α·log N', b - β·log D', e), as the replication fits Chinchilla."""
    n_eff, d_eff = effective(*xs, DataConstrained(**_to_params(th)))
    log_n, log_d = jnp.log(n_eff), jnp.log(d_eff)
    a, b, e, alpha, beta = th[0], th[1], th[2], th[3], th[4]
    terms = jnp.stack([a - alpha * log_n, b - beta * log_d, jnp.broadcast_to(e, log_n.shape)])
    return jax.nn.logsumexp(terms, axis=0)


_R_STARTS = (1.0, 5.0, 15.0, 50.0)  # R_D*, R_N* starts: repeats worth 1x to 50x a unique set
_LOG_R = tuple(math.log(r) for r in _R_STARTS)
DATA_CONSTRAINED = Spec(
    DataConstrained,
    ("a", "b", "e", "alpha", "beta", "log_R_D_star", "log_R_N_star"),
    _log_predict,
    _to_params,
    # A coarse grid (288 starts); fit_data_constrained adds starts from a Chinchilla fit.
    (
        (0.0, 5.0, 10.0),
        (0.0, 5.0, 10.0),
        (0.0, 0.5),
        (0.3, 0.6),
        (0.3, 0.6),
        (1.0, 3.0),
        (1.0, 3.0),
    ),
)


def fit_data_constrained(
    N: Any,
    D: Any,
    U: Any,
    loss: Any,
    *,
    bootstrap: int = 0,
    holdout: int = 0,
    grid: np.ndarray | None = None,
    seed: int = 0,
    **options: Any,
) -> FitResult:
    """Fit L(N, D, U) (Muennighoff et al. 2023) by the replication's method: the summed Huber
    objective in log space, multi-start L-BFGS (:func:`~jaxscale.laws.fit.fit_form`).

    All seven parameters are fitted together, from 304 starts: the Chinchilla fit (Besiroglu et
    al.'s 4,500-start grid) of the points that repeat their data at most once (all points when
    fewer than 6 do) crossed with R_D*, R_N* in {1, 5, 15, 50}, and the coarse grid of
    :data:`DATA_CONSTRAINED` (that Chinchilla fit alone can start in the wrong basin: repeats
    and excess parameters bend even the least repeated points).

    Args:
      N: parameters; D: training tokens; U: unique tokens (min(U, D) is used); loss: final loss.
      bootstrap, holdout, seed, options: see :func:`~jaxscale.laws.fit.fit_form` (``holdout``
        leaves out the points of largest N·D).
      grid: an ``(S, 7)`` array of starts in θ = (a, b, e, α, β, log R_D*, log R_N*), instead.

    Returns:
      A :class:`~jaxscale.laws.FitResult` holding a :class:`DataConstrained` law.

    Raises:
      FitDataError: no point repeats data (D > U), so R_D* cannot be measured; or too few points.

    Example:
      >>> fit_data_constrained(N, D, U, loss).params["R_D_star"]      # doctest: +SKIP
    """
    N, D, U, loss = (np.asarray(v, dtype=np.float64).ravel() for v in (N, D, U, loss))
    if not np.any(D > U * (1 + 1e-9)):
        raise FitDataError(
            "no point repeats its data (D > U): R_D* cannot be measured; fit the Chinchilla form"
        )
    if grid is None:
        fitted = np.ones(len(N), dtype=bool)
        if holdout:  # the starts come from the points the fit will see
            fitted[np.argsort(N * D)[len(N) - holdout :]] = False
        fresh = fitted & (D <= 2 * U)
        use = fresh if fresh.sum() >= 6 else fitted
        grid = start_grid(DATA_CONSTRAINED, None)
        try:
            base = fit_chinchilla(N[use], D[use], loss[use]).params
        except FitDataError:  # not determined by the fresh points: the coarse grid alone
            base = None
        if base is not None:
            theta = [math.log(base["A"]), math.log(base["B"]), math.log(base["E"])]
            theta += [base["alpha"], base["beta"]]
            from_base = np.array([[*theta, r_d, r_n] for r_d in _LOG_R for r_n in _LOG_R])
            grid = np.concatenate([from_base, grid])
    return fit_form(
        DATA_CONSTRAINED,
        [N, D, U],
        loss,
        grid=grid,
        bootstrap=bootstrap,
        holdout=holdout,
        holdout_key=N * D,
        seed=seed,
        **options,
    )


@dataclass(frozen=True)
class ConstrainedAllocation:
    """The best model for budget C (FLOPs, C = 6ND) when only U unique tokens exist.

    Attributes:
      C, U: the budget and the unique tokens (inf: unlimited).
      N_opt, D_opt, loss: the parameters and tokens of least predicted loss, and that loss.
      epochs: D_opt / U, the passes over the unique data (0 when U is unlimited).
      tokens_per_param: D_opt / N_opt.
    """

    C: float
    U: float
    N_opt: float
    D_opt: float
    epochs: float
    tokens_per_param: float
    loss: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@jax.jit
def _iso_flop_loss(law: DataConstrained, log_n: jax.Array, C: Any, U: Any) -> jax.Array:
    N = jnp.exp(log_n)
    return law(N, C / (6 * N), U)


def constrained_optimal(
    law: DataConstrained, C: float, U: float, *, points: int = 4001
) -> ConstrainedAllocation:
    """Minimise L(N, C/(6N), U) over N: the data-constrained compute-optimal allocation.

    There is no closed form (Muennighoff et al. search a grid); this evaluates the law on
    ``points`` log-spaced sizes from 1e-12 to 1e12 tokens per parameter, then twice more on the
    bracket around the best, to a relative precision in N of about 1e-9.

    Args:
      law: a :class:`DataConstrained` law.
      C: the budget in FLOPs; U: unique tokens available (``math.inf``: unlimited).

    Returns:
      A :class:`ConstrainedAllocation`.

    Raises:
      UserError: not a data-constrained law, or its best allocation lies outside that range.

    Example:
      >>> al = constrained_optimal(BUILTINS["muennighoff2023"], 6 * 8.67e9 * 178e9, 25e9)
      >>> f"{al.N_opt:.2g} {al.D_opt:.3g} {al.epochs:.1f}"  # their README: 6.8B, 227B, 9.1
      '6.8e+09 2.27e+11 9.1'
    """
    if not isinstance(law, DataConstrained):
        raise UserError(f"a data-constrained allocation needs a DataConstrained law, not "
                        f"{type(law).__name__}")  # fmt: skip
    # tokens per parameter r = C/(6N²): N = sqrt(C/(6r)) for r from 1e12 down to 1e-12
    lo, hi = (0.5 * (math.log(C / 6) - math.log(r)) for r in (1e12, 1e-12))
    with x64():
        for zoom in range(3):
            log_n = np.linspace(lo, hi, points)
            losses = np.asarray(_iso_flop_loss(law, jnp.asarray(log_n), C, U))
            best = int(np.argmin(np.where(np.isnan(losses), np.inf, losses)))
            if not np.isfinite(losses[best]) or (zoom == 0 and best in (0, points - 1)):
                raise UserError(
                    f"the law's best allocation of C = {C:.3g} FLOPs lies beyond 1e-12 to 1e12 "
                    "tokens per parameter (or it predicts no finite loss there)"
                )
            lo, hi = log_n[max(best - 1, 0)], log_n[min(best + 1, points - 1)]
    n = math.exp(log_n[best])
    d = C / (6 * n)
    return ConstrainedAllocation(
        C=C,
        U=U,
        N_opt=n,
        D_opt=d,
        epochs=d / U if math.isfinite(U) else 0.0,
        tokens_per_param=d / n,
        loss=float(losses[best]),
    )


def repeated_data_section(
    points: list[dict[str, Any]], n_key: str = "N"
) -> tuple[dict[str, Any] | None, list[str]]:
    """A sweep report's account of repeated data: its ``laws.json`` entry and markdown lines.

    When some fit points train on more tokens than the corpus holds (D > U, their
    ``unique_tokens``), the Chinchilla fit treats the repeats as fresh data: this warns, and
    fits the data-constrained form to all the points.

    Args:
      points: the sweep's fit points (``results.fit_points``).
      n_key: the record field that is the law's N.

    Returns:
      ``(None, [])`` when no point repeats data; else the entry (``repeated_points``,
      ``max_epochs``, ``unique_tokens``, the fitted law or why it was not fitted, and the
      ``warning`` for the report's list) and the report's section.

    Example:
      >>> entry, markdown = repeated_data_section(fit_points(read_records(d))[0])  # doctest: +SKIP
    """
    from jaxscale.results import unique_tokens

    rows = [(r[n_key], r["D"], unique_tokens(r), r["loss"]) for r in points]
    if any(u is None for _, _, u, _ in rows):
        return None, []
    N, D, U, loss = (np.array(col, dtype=np.float64) for col in zip(*rows, strict=True))
    repeats = D > U * (1 + 1e-9)
    if not repeats.any():
        return None, []
    most = float(np.max(D / U))
    entry: dict[str, Any] = {
        "warning": f"{int(repeats.sum())} of {len(D)} fit points repeat their data (up to "
        f"{most:.1f} epochs): the Chinchilla fit L_ND treats repeated tokens as fresh; see the "
        "data-constrained fit (Muennighoff et al. 2023), or train on a larger corpus",
        "repeated_points": int(repeats.sum()),
        "max_epochs": most,
        "unique_tokens": float(U.max()),
        "law": None,
        "not_fitted": None,
    }
    md = [
        "## Repeated data (Muennighoff et al. 2023)",
        "",
        f"{int(repeats.sum())} of {len(D)} points train on more tokens than the corpus' "
        f"{U.max():,.0f} unique ones (up to {most:.1f} epochs). L_ND above treats repeated tokens "
        "as fresh data; the data-constrained form L(N, D, U) discounts them "
        "(D' = U + U·R_D*·(1 - e^(-R_D/R_D*)), and N' likewise past N_opt(U)):",
        "",
    ]
    try:
        fit = fit_data_constrained(N, D, U, loss)
    except UserError as e:
        entry["not_fitted"] = str(e)
        return entry, [*md, f"- not fitted: {e}", ""]
    entry["law"] = law_entry(fit)
    r_d = fit.params["R_D_star"]
    return entry, [
        *md,
        "```",
        fit.report(),
        "```",
        "",
        f"R_D* = {r_d:.3g}: all repeats together are worth at most {r_d:.3g} more passes of "
        "fresh data (Muennighoff et al. fitted 15.4 on C4).",
        "",
    ]
