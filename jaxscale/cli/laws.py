"""CLI commands of the law library: fit, isoflop, plan, predict, ttc.

Each prints a readable table; ``--json PATH`` also writes the machine-readable result. Mistakes in
the input raise :class:`jaxscale.errors.UserError`, which the group prints as one line (exit 2).
"""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any

import click
import numpy as np

from jaxscale import counting, machine, plots
from jaxscale.cli.lab import echo_report
from jaxscale.config import SweepConfig, config_from_dict, load_config
from jaxscale.errors import UserError
from jaxscale.laws import (
    GPU_PEAK_TFLOPS,
    Chinchilla,
    budget_flops,
    compare_models,
    compute_optimal,
    compute_trade,
    curves_from_records,
    fit_chinchilla,
    fit_coverage,
    fit_envelope,
    fit_isoflop,
    fit_kaplan,
    fit_power,
    fit_test_time,
    inference_optimal,
    isoflop_profile,
    load_law,
    predict_loss,
)
from jaxscale.results import RESULTS_FILE, as_columns, fit_points, read_records
from jaxscale.sweep import default_out_dir, run_sweep

JSON_OPTION = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result as JSON to this path.",
)
PLOT_OPTION = click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also draw the data with the fitted law into this directory (PNG).",
)
LAW_OPTION = click.option(
    "--law",
    "law_name",
    default="chinchilla",
    show_default=True,
    help="A built-in law (chinchilla, besiroglu2024, kaplan2020) or a laws.json path.",
)


def _write_json(path: Path | None, payload: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
        click.echo(f"wrote {path}")


def _read_csv(path: Path) -> dict[str, np.ndarray]:
    """A CSV with a header row -> float64 columns by name."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise UserError(f"{path} has no data rows (a header line and one row per point expected)")
    try:
        return {k.strip(): np.array([float(r[k]) for r in rows]) for k in rows[0]}
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: every value must be a number ({e})") from None


def _read_table(data: Path) -> tuple[dict[str, np.ndarray], list[dict[str, Any]] | None]:
    """DATA -> (columns, sweep records or None for a CSV)."""
    if data.is_dir():
        if not (data / RESULTS_FILE).exists():
            raise UserError(f"{data} is not a sweep directory (no {RESULTS_FILE})")
        records, _ = fit_points(read_records(data))
        return as_columns(records), records
    if not data.is_file():
        raise UserError(f"{data} does not exist")
    return _read_csv(data), None


def _column(cols: dict[str, np.ndarray], name: str, data: Path) -> np.ndarray:
    if name not in cols:
        raise UserError(f"{data} has no column {name!r}; columns: {', '.join(sorted(cols))}")
    return np.asarray(cols[name], dtype=np.float64)


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
    type=click.Choice(["chinchilla", "kaplan", "power"]),
    default="chinchilla",
    show_default=True,
    help="Form for approach 3.",
)
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, help="Resamples for CIs.")
@click.option(
    "--holdout",
    type=click.IntRange(min=0),
    default=0,
    help="Fit without the K largest-compute points and report their prediction error.",
)
@JSON_OPTION
@click.option("--n-col", default="N", show_default=True, help="Column of parameters.")
@click.option("--d-col", default="D", show_default=True, help="Column of training tokens.")
@click.option("--c-col", default="C", show_default=True, help="Column of compute (FLOPs).")
@click.option("--loss-col", default="loss", show_default=True, help="Column of the loss.")
@PLOT_OPTION
def fit(
    data: Path,
    approach: str,
    form: str,
    bootstrap: int,
    holdout: int,
    json_path: Path | None,
    n_col: str,
    d_col: str,
    c_col: str,
    loss_col: str,
    plot_dir: Path | None,
) -> None:
    """Fit a scaling law to DATA: a sweep directory or a CSV with N, loss and D or C.

    Without a D column, D = C/(6N). With --law power and both N and D varying, L(N) is fitted at
    the largest D (L(D) when only D varies).
    """
    cols, records = _read_table(data)
    N, loss = _column(cols, n_col, data), _column(cols, loss_col, data)
    if d_col in cols:
        D = _column(cols, d_col, data)
        C = cols[c_col] if c_col in cols else 6 * N * D
    else:
        C = _column(cols, c_col, data)
        D = C / (6 * N)
    table = {"N": N, "D": D, "C": C, "loss": loss}
    if approach == "1":
        pts = curves_from_records(records) if records else (N, C, loss)
        result = fit_envelope(*pts, bootstrap=bootstrap)
        click.echo("Approach 1 (lower envelope of loss against FLOPs)\n" + result.report())
        _write_json(json_path, result.to_dict())
        if plot_dir:
            env = result.points
            _echo_figures(
                [plots.frontier(env["C"], env["N"], result.a, result.N_opt.G,
                                plot_dir / "frontier.png", ci=result.N_opt.ci)]
            )  # fmt: skip
        return
    if approach == "2":
        result = fit_isoflop(N, D, loss, C, bootstrap=bootstrap)
        click.echo("Approach 2 (IsoFLOP profiles)\n" + result.report())
        _write_json(json_path, result.to_dict())
        if plot_dir:
            _echo_figures(plots.law_figures(table, {}, plot_dir))
        return
    if form == "chinchilla":
        res = fit_chinchilla(N, D, loss, bootstrap=bootstrap, holdout=holdout)
    elif form == "kaplan":
        res = fit_kaplan(N, D, loss, bootstrap=bootstrap, holdout=holdout)
    else:
        x_name, x, keep = "N", N, np.isclose(D, D.max())
        if len(np.unique(N)) == 1:
            x_name, x, keep = "D", D, np.ones_like(D, dtype=bool)
        res = fit_power(x[keep], loss[keep], bootstrap=bootstrap, holdout=holdout)
        click.echo(f"L({x_name}) = E + A/{x_name}^alpha over {int(keep.sum())} points")
    click.echo(res.report())
    payload = {"approach": 3, "law": form, **res.to_dict()}
    if isinstance(res.law, Chinchilla):
        al = compute_optimal(res.law, 1e21)
        payload["optimal"] = {"a": al.a, "b": al.b, "G": al.G}
        click.echo(f"compute-optimal: N_opt = {al.G:.4g}·(C/6)^{al.a:.3f}, D_opt ∝ C^{al.b:.3f}")
    _write_json(json_path, payload)
    if plot_dir:
        if form == "power":
            _echo_figures([plots.residuals(x[keep], res, plot_dir / "residuals.png", x_name)])
        else:
            _echo_figures(plots.law_figures(table, {"L_ND": res}, plot_dir))


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


@click.command()
@click.option("--C", "C", type=float, required=True, help="Compute budget in FLOPs.")
@LAW_OPTION
@JSON_OPTION
@click.option("--run", is_flag=True, help="Train the shapes below at this budget as a sweep.")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="With --run: corpus and training settings (its models and tokens are replaced).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --run: the sweep directory (default reports/isoflop-<C>/).",
)
def isoflop(
    C: float,
    law_name: str,
    json_path: Path | None,
    run: bool,
    config_path: Path | None,
    out: Path | None,
) -> None:
    """The compute-optimal model at budget --C, its IsoFLOP profile and concrete shapes."""
    law = load_law(law_name)
    al = compute_optimal(law, C)
    click.echo(
        f"C = {C:.3g} FLOPs ({law_name}): N_opt = {al.N_opt:.3g}, D_opt = {al.D_opt:.3g}, "
        f"{al.tokens_per_param:.1f} tokens/param, predicted loss {al.loss:.4f}"
    )
    profile = isoflop_profile(law, C, al.N_opt)
    click.echo(f"\nIsoFLOP profile\n  {'N/N_opt':>8} {'N':>10} {'D':>10} {'loss':>8}")
    for row in profile:
        click.echo(
            f"  {row['factor']:>8.2f} {row['N']:>10.3g} {row['D']:>10.3g} {row['loss']:>8.4f}"
        )
    flops_per_s = machine.measured_flops_per_s()
    shapes = []
    click.echo(
        f"\nShapes near N_opt (N non-embedding)\n  {'shape':<14} {'N':>10} {'D':>10}"
        + ("  est. time" if flops_per_s else "")
    )
    near = counting.shapes_near(al.N_opt)
    for s in near:
        n = counting.non_embedding_params(s)
        row = {
            "shape": s.label,
            "n_layer": s.n_layer,
            "d_model": s.d_model,
            "n_head": s.n_head,
            "N": n,
            "D": C / (6 * n),
        }
        line = f"  {s.label:<14} {n:>10.3g} {row['D']:>10.3g}"
        if flops_per_s:
            row["hours"] = C / flops_per_s / 3600
            line += f"  {_duration(row['hours'] * 3600)}"
        shapes.append(row)
        click.echo(line)
    if not flops_per_s:
        click.echo("(wall time unknown: no throughput measured on this machine yet)")
    _write_json(
        json_path,
        {
            **al.to_dict(),
            "law": law_name,
            "profile": profile,
            "shapes": shapes,
            "flops_per_s": flops_per_s,
        },
    )
    if run:
        base = load_config(config_path) if config_path else SweepConfig()
        points = [{"model": dataclasses.asdict(s), "tokens": C / (6 * r["N"])}
                  for s, r in zip(near, shapes, strict=True)]  # fmt: skip
        name = f"isoflop-{C:.3g}"
        cfg = config_from_dict(
            {**base.to_dict(), "name": name, "tokens": [], "tokens_per_param": [], "points": points}
        )
        out_dir = out or default_out_dir(cfg)
        run_sweep(cfg, out_dir)
        echo_report(out_dir)


@click.command()
@click.option("--C", "C", type=float, default=None, help="Compute budget in FLOPs.")
@click.option("--gpu", default=None, help=f"GPU type: {', '.join(GPU_PEAK_TFLOPS)}.")
@click.option("--gpus", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--hours", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--mfu", type=click.FloatRange(0, 1, min_open=True), default=0.4, show_default=True)
@click.option("--price", type=click.FloatRange(min=0), default=None, help="$ per GPU-hour.")
@click.option(
    "--inference-tokens",
    type=click.FloatRange(min=0),
    default=None,
    help="Tokens to be served over the model's life (Sardana et al. 2023).",
)
@LAW_OPTION
@JSON_OPTION
def plan(
    C: float | None,
    gpu: str | None,
    gpus: int,
    hours: float | None,
    mfu: float,
    price: float | None,
    inference_tokens: float | None,
    law_name: str,
    json_path: Path | None,
) -> None:
    """Plan a training run from a budget: --C, or --gpu/--gpus/--hours [--mfu]."""
    if C is None:
        if gpu is None or hours is None:
            raise click.BadParameter("give --C, or --gpu with --hours (and --gpus, --mfu)")
        C = budget_flops(gpu, gpus, hours, mfu)
    out: dict[str, Any] = {"C": C, "mfu": mfu}
    if gpu is not None:
        peak = budget_flops(gpu, 1, 1 / 3600, mfu)  # effective FLOP/s of one GPU
        out["gpu_hours"] = C / peak / 3600
        out["gpu"] = gpu
        if price is not None:
            out["cost"] = out["gpu_hours"] * price
    law = load_law(law_name)
    al = compute_optimal(law, C)
    out["optimal"] = al.to_dict()
    click.echo(
        f"compute: {C:.3g} FLOPs"
        + (f" = {out['gpu_hours']:.4g} {gpu} GPU-hours at {100 * mfu:.0f}% MFU" if gpu else "")
    )
    if "cost" in out:
        click.echo(f"cost: ${out['cost']:,.0f} at ${price}/GPU-hour")
    click.echo(
        f"compute-optimal ({law_name}): N = {al.N_opt:.3g}, D = {al.D_opt:.3g} "
        f"({al.tokens_per_param:.1f} tokens/param), loss {al.loss:.4f}"
    )
    if inference_tokens:
        inf = inference_optimal(law, C, inference_tokens)
        out["inference_optimal"] = inf
        saved = 1 - inf["total_flops"] / inf["compute_optimal_total"]
        click.echo(
            f"inference-aware ({inference_tokens:.3g} tokens served): N = {inf['N']:.3g}, "
            f"D = {inf['D']:.3g} ({inf['D'] / inf['N']:.1f} tokens/param), same loss, "
            f"{100 * saved:.1f}% fewer lifetime FLOPs"
        )
    _write_json(json_path, out)


@click.command()
@click.option("--N", "N", type=float, default=None, help="Parameters.")
@click.option("--D", "D", type=float, default=None, help="Training tokens.")
@click.option("--models", is_flag=True, help="Compare well-known models.")
@LAW_OPTION
@JSON_OPTION
def predict(
    N: float | None, D: float | None, models: bool, law_name: str, json_path: Path | None
) -> None:
    """Predicted loss at --N and --D, or (--models / no arguments) for well-known models."""
    law = load_law(law_name)
    if (N is None) != (D is None):
        raise click.BadParameter("give both --N and --D (or neither, for the model table)")
    if N is not None and not models:
        loss = float(predict_loss(law, N, D))
        click.echo(f"{law_name}: L(N={N:.3g}, D={D:.3g}) = {loss:.4f}  ({D / N:.1f} tokens/param)")
        _write_json(json_path, {"law": law_name, "N": N, "D": D, "loss": loss})
        return
    rows = compare_models(law)
    click.echo(f"  {'model':<16} {'N':>9} {'D':>9} {'tok/param':>9} {'loss':>7}   ({law_name})")
    for r in rows:
        click.echo(
            f"  {r['model']:<16} {r['N']:>9.3g} {r['D']:>9.3g} "
            f"{r['tokens_per_param']:>9.1f} {r['loss']:>7.4f}"
        )
    _write_json(json_path, {"law": law_name, "models": rows})


@click.command()
@click.argument("data", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--form",
    type=click.Choice(["power", "coverage"]),
    default="power",
    show_default=True,
    help="power: min(1, α(N·T)^β); coverage: exp(a·T^b).",
)
@click.option("--bootstrap", type=click.IntRange(min=0), default=0, help="Resamples for CIs.")
@JSON_OPTION
@PLOT_OPTION
def ttc(
    data: Path, form: str, bootstrap: int, json_path: Path | None, plot_dir: Path | None
) -> None:
    """Fit a test-time-compute law to a CSV of T, accuracy and optionally N."""
    if not data.is_file():
        raise UserError(f"{data} does not exist")
    cols = _read_csv(data)
    T, acc = _column(cols, "T", data), _column(cols, "accuracy", data)
    if np.any(acc > 1):
        raise UserError(f"{data}: accuracy must lie in (0, 1]")
    if form == "coverage":
        res = fit_coverage(T, acc, bootstrap=bootstrap)
        click.echo("coverage(k) = exp(a·k^b), k = T\n" + res.report())
        _write_json(
            json_path, {"form": "coverage", **res.params, "r2": res.r2, "fit": res.to_dict()}
        )
        if plot_dir:
            law = res.law
            _echo_figures([plots.test_time(T, acc, plot_dir / "coverage.png", lambda n, t: law(t))])
        return
    N = _column(cols, "N", data) if "N" in cols else None
    res = fit_test_time(T, acc, N, bootstrap=bootstrap)
    click.echo(
        ("Accuracy = min(1, α·(N·T)^β)" if N is not None else "Accuracy = α·T^β")
        + "\n"
        + res.report()
    )
    out = {"form": "power", **res.params, "r2": res.r2, "fit": res.to_dict()}
    if N is not None:
        n0, t0 = float(N.min()), float(T.min())
        trade = compute_trade(res.law, n0, t0)
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
    _write_json(json_path, out)
    if plot_dir:
        # without N the law was fitted as α·T^β, which is the law at N = 1 (test_time's default)
        _echo_figures([plots.test_time(T, acc, plot_dir / "test_time.png", res.law, N)])


def _echo_figures(paths: list[Path]) -> None:
    click.echo("figures: " + ", ".join(str(p) for p in paths))


COMMANDS: list[click.Command] = [fit, isoflop, plan, predict, ttc]
