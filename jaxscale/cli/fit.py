"""``jaxscale fit`` and ``jaxscale ttc``: laws fitted to a table of runs or a sweep directory.

Each says which columns it read, prints a readable fit and, with ``--json PATH``, writes the
machine-readable result. The library (JAX, the fitters, matplotlib) is imported inside the
commands, so that their help answers at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from jaxscale.cli.options import JSON_OPTION, PLOT_OPTION, echo_figures, refuse_unused, write_json
from jaxscale.errors import UserError

if TYPE_CHECKING:
    from jaxscale.laws.points import Points

FORMS = ("chinchilla", "kaplan", "power", "data-constrained")
# The fewest distinct sizes and token counts a form of N and D can separate its terms with (its
# parameter count is the fitter's check).
SPREAD = {"N": 2, "D": 2}
BOOTSTRAP_OPTION = click.option(
    "--bootstrap",
    type=click.IntRange(0, 10_000),
    default=0,
    help="Resamples for confidence intervals (Besiroglu et al. used 4,000).",
)


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option(
    "--approach",
    type=click.Choice(["1", "2", "3"]),
    default="3",
    show_default=True,
    help="1: loss envelope, 2: IsoFLOP parabolas, 3: parametric fit.",
)
@click.option(
    "--law",
    "form",
    type=click.Choice(FORMS),
    default="chinchilla",
    show_default=True,
    help="Form for approach 3 (data-constrained: Muennighoff et al. 2023, needs a U column).",
)
@BOOTSTRAP_OPTION
@click.option(
    "--holdout",
    type=click.IntRange(min=0),
    default=0,
    help="Fit without the K largest-compute points and report their prediction error.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="COLUMN<OP>VALUE",
    help='Keep the rows passing this filter, e.g. "lr==3e-3" (ops == != < <= > >=; repeatable).',
)
@click.option(
    "--best-per-point", is_flag=True, help="Keep only the lowest-loss row of each (N, D)."
)
@click.option(
    "--window",
    type=click.IntRange(min=3),
    default=None,
    help="Approach 2: fit each parabola to the K sizes around its budget's lowest loss [all].",
)
@JSON_OPTION
@click.option("--n-col", default=None, help="Column of parameters [found by name: N, params, ...].")
@click.option("--d-col", default=None, help="Column of training tokens [D, tokens, ...].")
@click.option("--c-col", default=None, help="Column of compute in FLOPs [C, flops, compute, ...].")
@click.option("--loss-col", default=None, help="Column of the loss [loss, val_loss, ...].")
@click.option("--u-col", default=None, help="Column of unique tokens [U, unique_tokens, ...].")
@PLOT_OPTION
@click.pass_context
def fit(
    ctx: click.Context,
    data: Path,
    approach: str,
    form: str,
    bootstrap: int,
    holdout: int,
    where: tuple[str, ...],
    best_per_point: bool,
    window: int | None,
    json_path: Path | None,
    n_col: str | None,
    d_col: str | None,
    c_col: str | None,
    loss_col: str | None,
    u_col: str | None,
    plot_dir: Path | None,
) -> None:
    """Fit a scaling law to DATA: a sweep directory, a CSV or JSON lines with N, loss and D or C.

    Columns are found by their usual names unless given. Without D, D = C/(6N). With --law power
    and both N and D varying, L(N) is fitted at the largest D (L(D) when only D varies). Rows
    without a finite loss are left out with a warning.
    """
    from jaxscale.laws.points import scaling_points
    from jaxscale.tables import read_table

    if approach != "3":
        refuse_unused(ctx, ["form", "holdout", "u_col"], f"applies to approach 3, not {approach}")
    if approach != "2":
        refuse_unused(ctx, ["window"], f"applies to approach 2, not {approach}")
    names = {"N": n_col, "D": d_col, "C": c_col, "loss": loss_col, "U": u_col}
    points = scaling_points(read_table(data, where), names, best_per_point=best_per_point)
    click.echo(points.note)
    if approach == "1":
        _envelope(points, bootstrap, json_path, plot_dir)
    elif approach == "2":
        _isoflop(points.columns, bootstrap, window, json_path, plot_dir)
    elif form == "power":
        _power(points, bootstrap, holdout, json_path, plot_dir)
    else:
        _parametric(points, form, bootstrap, holdout, json_path, plot_dir)


def _parametric(
    points: Points,
    form: str,
    bootstrap: int,
    holdout: int,
    json_path: Path | None,
    plot_dir: Path | None,
) -> None:
    """Approach 3 with a form of N and D (and U): Chinchilla, Kaplan or data-constrained."""
    from jaxscale import laws

    points.require_spread(SPREAD, form)
    cols = points.columns
    N, D, C, loss = cols["N"], cols["D"], cols["C"], cols["loss"]
    if form == "data-constrained":
        if "U" not in cols:
            points.table.require("U", None, "--u-col")
        res = laws.fit_data_constrained(N, D, cols["U"], loss, bootstrap=bootstrap, holdout=holdout)
    else:
        repeats = cols["U"] < D if "U" in cols else np.zeros(len(D), dtype=bool)
        if repeats.any():
            warnings.warn(
                f"{int(repeats.sum())} rows train on more tokens than they have unique ones (up "
                f"to {float(np.max(D / cols['U'])):.1f} epochs): the {form} form treats repeated "
                "tokens as fresh; fit --law data-constrained, which discounts them",
                stacklevel=1,
            )
        fitter = laws.fit_chinchilla if form == "chinchilla" else laws.fit_kaplan
        res = fitter(N, D, loss, bootstrap=bootstrap, holdout=holdout)
    click.echo(res.report())
    payload = {"approach": 3, "law": form, "note": points.note, **res.to_dict()}
    if isinstance(res.law, laws.Chinchilla):
        al = laws.compute_optimal(res.law, 1e21)
        payload["optimal"] = {"a": al.a, "b": al.b, "G": al.G}
        click.echo(f"compute-optimal: N_opt = {al.G:.4g}·(C/6)^{al.a:.3f}, D_opt ∝ C^{al.b:.3f}")
    write_json(json_path, payload)
    if not plot_dir:
        return
    from jaxscale import plots  # matplotlib: only to draw

    if form == "data-constrained":  # its curves need U: the residuals alone
        echo_figures([plots.residuals(C, res, plot_dir / "residuals.png")])
    else:
        echo_figures(plots.law_figures(cols, {"L_ND": res}, plot_dir))


def _envelope(
    points: Points, bootstrap: int, json_path: Path | None, plot_dir: Path | None
) -> None:
    """Approach 1 over the sweep's training curves, or over the table's rows."""
    from jaxscale import laws

    cols = points.columns
    if points.table.sweep:
        curves = laws.curves_from_records(points.table.rows)
    else:
        curves = (cols["N"], cols["C"], cols["loss"])
    result = laws.fit_envelope(*curves, bootstrap=bootstrap)
    click.echo("Approach 1 (lower envelope of loss against FLOPs)\n" + result.report())
    write_json(json_path, result.to_dict())
    if plot_dir:
        from jaxscale import plots

        env = result.points
        echo_figures([plots.frontier(env["C"], env["N"], result.a, result.N_opt.G,
                                     plot_dir / "frontier.png", ci=result.N_opt.ci)])  # fmt: skip


def _isoflop(
    cols: dict[str, np.ndarray],
    bootstrap: int,
    window: int | None,
    json_path: Path | None,
    plot_dir: Path | None,
) -> None:
    """Approach 2: a parabola per compute budget (over ``window`` sizes), then N_opt ∝ C^a."""
    from jaxscale import laws

    result = laws.fit_isoflop(
        cols["N"], cols["D"], cols["loss"], cols["C"], bootstrap=bootstrap, window=window
    )
    click.echo("Approach 2 (IsoFLOP profiles)\n" + result.report())
    write_json(json_path, result.to_dict())
    if plot_dir:
        from jaxscale import plots

        echo_figures(plots.law_figures(cols, {}, plot_dir))


def _power(
    points: Points, bootstrap: int, holdout: int, json_path: Path | None, plot_dir: Path | None
) -> None:
    """L(N) = E + A/N^α at the largest D, or L(D) when only D varies."""
    from jaxscale import laws

    N, D, loss = (points.columns[k] for k in ("N", "D", "loss"))
    x_name, x, keep = "N", N, np.isclose(D, D.max())
    if len(np.unique(N)) == 1:
        x_name, x, keep = "D", D, np.ones_like(D, dtype=bool)
    if len(np.unique(x[keep])) < 3:
        raise UserError(
            f"{points.table.source}: {len(np.unique(x[keep]))} distinct {x_name} at "
            f"{'the largest D' if x_name == 'N' else 'one N'}; the power form needs 3 or more"
        )
    res = laws.fit_power(x[keep], loss[keep], bootstrap=bootstrap, holdout=holdout)
    click.echo(f"L({x_name}) = E + A/{x_name}^alpha over {int(keep.sum())} points\n" + res.report())
    write_json(json_path, {"approach": 3, "law": "power", "note": points.note, **res.to_dict()})
    if plot_dir:
        from jaxscale import plots

        echo_figures([plots.residuals(x[keep], res, plot_dir / "residuals.png", x_name)])


@click.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--form",
    type=click.Choice(["power", "coverage"]),
    default="power",
    show_default=True,
    help="power: min(1, α(N·T)^β); coverage: exp(a·T^b).",
)
@BOOTSTRAP_OPTION
@JSON_OPTION
@PLOT_OPTION
def ttc(
    data: Path, form: str, bootstrap: int, json_path: Path | None, plot_dir: Path | None
) -> None:
    """Fit a test-time-compute law to a table of T, accuracy and optionally N."""
    from jaxscale import laws
    from jaxscale.laws.points import test_time_points
    from jaxscale.tables import read_table

    points = test_time_points(read_table(data))
    click.echo(points.note)
    T, acc = points.columns["T"], points.columns["accuracy"]
    if form == "coverage":
        res = laws.fit_coverage(T, acc, bootstrap=bootstrap)
        click.echo("coverage(k) = exp(a·k^b), k = T\n" + res.report())
        out = {"form": "coverage", **res.params, "r2": res.r2, "fit": res.to_dict()}
        write_json(json_path, out)
        if plot_dir:
            from jaxscale import plots

            law = res.law
            echo_figures([plots.test_time(T, acc, plot_dir / "coverage.png", lambda n, t: law(t))])
        return
    N = points.columns.get("N")
    res = laws.fit_test_time(T, acc, N, bootstrap=bootstrap)
    click.echo(
        ("Accuracy = min(1, α·(N·T)^β)" if N is not None else "Accuracy = α·T^β")
        + "\n"
        + res.report()
    )
    out = {"form": "power", **res.params, "r2": res.r2, "fit": res.to_dict()}
    if N is not None:
        n0, t0 = float(N.min()), float(T.min())
        trade = laws.compute_trade(res.law, n0, t0)
        out["trade"] = {"N": n0, "T": t0, **trade}
        if trade["capped"]:
            click.echo(
                f"trade: a 10x larger model than N={n0:.3g} is capped at accuracy 1 at "
                f"T={t0:.3g}; N={n0:.3g} reaches 1 at T={trade['T_equivalent']:.3g} "
                f"({trade['T_factor']:.3g}x)"
            )
        else:
            click.echo(
                f"trade: at N={n0:.3g}, T={t0:.3g}, {trade['T_factor']:.3g}x more test-time "
                f"compute buys the accuracy of a 10x larger model "
                f"({trade['target']:.3f})"
            )
    write_json(json_path, out)
    if plot_dir:
        from jaxscale import plots

        # without N the law was fitted as α·T^β, which is the law at N = 1 (test_time's default)
        echo_figures([plots.test_time(T, acc, plot_dir / "test_time.png", res.law, N)])
