"""CLI commands of the lab: ``sweep`` (train a ladder, then fit and report) and ``report``."""

from __future__ import annotations

from pathlib import Path

import click

from jaxscale.config import load_config
from jaxscale.extrapolate import extrapolate_run
from jaxscale.report import summary, write_report
from jaxscale.sweep import default_out_dir, run_sweep


@click.command()
@click.argument("config", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Sweep directory (default reports/<config name>/).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config key, e.g. --set train.lr=1e-3 (repeatable).",
)
@click.option("--no-fit", is_flag=True, help="Train only; skip fitting and the report.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def sweep(
    config: Path, out: Path | None, overrides: tuple[str, ...], no_fit: bool, quiet: bool
) -> None:
    """Train every (model, tokens) run of CONFIG not yet done, then fit and report.

    Results go to DIR/results.jsonl (one line per run); re-running skips finished runs.
    """
    cfg = load_config(config, overrides)
    out_dir = out or default_out_dir(cfg)
    records = run_sweep(cfg, out_dir, progress=not quiet)
    ok = sum(r["status"] == "ok" for r in records)
    click.echo(f"{ok} of {len(records)} runs finished in {out_dir}/results.jsonl")
    if not no_fit:
        echo_report(out_dir)


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
def report(directory: Path) -> None:
    """Refit the laws of a sweep DIRECTORY and rewrite its laws.json, figures and report.md."""
    echo_report(directory)


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--fraction", type=float, default=0.2, show_default=True,
              help="Share of the run's tokens to fit.")  # fmt: skip
def extrapolate(run_dir: Path, fraction: float) -> None:
    """Predict a run's final loss from the first --fraction of its training curve (DIR/runs/RUN)."""
    e = extrapolate_run(run_dir, fraction)
    click.echo(
        f"{e.run}: L(t) = L_inf + A·t^-alpha fitted to the first {fraction:.0%} of its tokens"
    )
    click.echo(e.fit.report())
    line = f"predicted final loss at D = {e.tokens:,}: {e.predicted:.4f}"
    if e.actual is not None:
        line += f"; measured {e.actual:.4f} (error {100 * e.relative_error:+.2f}%)"
    click.echo(line)


def echo_report(out_dir: Path) -> None:
    """Fit and write a sweep directory's report, then print the laws and where they went."""
    fits = write_report(out_dir)
    click.echo(summary(fits))
    click.echo(f"laws: {out_dir}/laws.json   report: {out_dir}/report.md")


COMMANDS: list[click.Command] = [sweep, report, extrapolate]
