"""CLI commands of the lab: ``sweep`` (train a ladder here or on a cluster, then fit and report),
``report``, ``seeds`` (what several seeds of one ladder say together) and ``extrapolate``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import click

from jaxscale.analysis import BOOTSTRAP
from jaxscale.cli.options import JSON_OPTION, echo_figures, write_json
from jaxscale.config import load_config
from jaxscale.errors import UserError
from jaxscale.extrapolate import extrapolate_run
from jaxscale.launch import LAUNCHERS, LaunchOptions, slurm_minutes
from jaxscale.report import summary, write_report
from jaxscale.results import check_fields, read_records
from jaxscale.seeds import compare_seeds, seed_line, seeds_summary
from jaxscale.sweep import default_out_dir, run_sweep
from jaxscale.tracking import TRACKERS, open_tracker


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
@click.option(
    "--launcher",
    type=click.Choice(LAUNCHERS),
    default="local",
    show_default=True,
    help="Where jobs run: this process, a SLURM job array (submitit; local subprocesses without "
    "SLURM) or Ray.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="local: jobs at once, each in a process pinned to its share of the cores. Default "
    "$JAXSCALE_WORKERS, else one per core on a Linux CPU, one on a GPU or macOS.",
)
@click.option(
    "--gpus-per-run",
    type=click.IntRange(min=0),
    default=None,
    help="GPUs per job (per host). Default 1, or 0 with --backend cpu.",
)
@click.option(
    "--cpus-per-run",
    type=click.IntRange(min=1),
    default=None,
    help="CPU cores per job. Default: Ray's 1, SLURM's default.",
)
@click.option(
    "--nodes-per-run",
    type=click.IntRange(min=1),
    default=None,
    help="submitit: hosts per job, default 1 (more: a process per GPU, joined by jax.distributed).",
)
@click.option("--slurm-partition", default=None, help="submitit: the SLURM partition.")
@click.option(
    "--slurm-time",
    default=None,
    help="submitit: a job's time limit: minutes, H:MM:SS or D-HH:MM:SS (default 24:00:00).",
)
@click.option(
    "--ray-address",
    default=None,
    help="ray: an existing cluster (auto, ray://HOST:10001); default a local one.",
)
@click.option(
    "--track",
    type=click.Choice(TRACKERS),
    default=None,
    help="Also log each run (config, curves, validation) and the fitted laws and figures to "
    'TensorBoard (DIR/tensorboard) or W&B; pip install "jaxscale[track]".',
)
@click.pass_obj
def sweep(
    obj: dict[str, Any] | None,
    config: Path,
    out: Path | None,
    overrides: tuple[str, ...],
    no_fit: bool,
    quiet: bool,
    launcher: str,
    track: str | None,
    **cluster: Any,
) -> None:
    """Train every (model, tokens) run of CONFIG not yet done, then fit and report.

    Results go to DIR/results.jsonl (one line per run); re-running skips finished runs. A
    config with a ttc: section then samples every model on its task (DIR/ttc.json). With
    --launcher submitit or ray each job (a run, or a pack of runs) is a task of its own.
    """
    cfg = load_config(config, overrides)
    out_dir = out or default_out_dir(cfg)
    options = launch_options(launcher, (obj or {}).get("backend"), cluster)
    tracker = open_tracker(track, out_dir, cfg.name) if track else None
    records = run_sweep(
        cfg,
        out_dir,
        progress=not quiet,
        launcher=launcher,
        options=options,
        on_record=tracker.log_run if tracker else None,
    )
    ok = sum(r["status"] == "ok" for r in records)
    click.echo(f"{ok} of {len(records)} runs finished in {out_dir}/results.jsonl")
    if not no_fit:
        if cfg.ttc is not None:  # before the report, which includes its section
            from jaxscale.ttc_lab import run_ttc  # lazy: sampling and its figures

            run_ttc(cfg, out_dir, progress=not quiet, say=click.echo)
            click.echo(f"test-time compute: {out_dir}/ttc.json")
        echo_report(out_dir)
        if tracker:
            tracker.log_laws()


# What the report reads of every run's record (a results.jsonl of jaxscale's own).
REPORT_FIELDS = ("run", "N", "N_total", "D", "C", "C_counted", "loss", "bpb", "steps", "status",
                 "tokens_per_s", "wall_s", "config")  # fmt: skip


@click.command()
@click.argument("directory", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--with-predicted",
    is_flag=True,
    help="Also fit the losses early-stopped runs predicted (marked in laws.json).",
)
@click.option(
    "--against",
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Compare the laws and losses with another sweep directory's "
    "(e.g. a cosine grid beside a WSD sweep).",
)
def report(directory: Path, with_predicted: bool, against: Path | None) -> None:
    """Refit the laws of a sweep DIRECTORY and rewrite its laws.json, figures and report.md."""
    for sweep_dir in (directory, against) if against else (directory,):
        check_fields(
            read_records(sweep_dir), REPORT_FIELDS, sweep_dir
        )  # before anything is written
    echo_report(directory, include_predicted=with_predicted, against=against)


@click.command()
@click.argument("sweeps", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--bootstrap", type=click.IntRange(min=0), default=BOOTSTRAP, show_default=True,
              help="Resamples behind each seed's intervals (the sweep's).")  # fmt: skip
@JSON_OPTION
@click.option(
    "--plot",
    "plot_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also draw each seed's held-out errors and the gains beyond the law's (PNG).",
)
def seeds(
    sweeps: tuple[Path, ...], bootstrap: int, json_path: Path | None, plot_path: Path | None
) -> None:
    """Whether several seeds of one ladder agree: each seed's checks, the sign test on their
    held-out misses (noise, or a bias of the law's form), the runs averaged over the seeds,
    and each shape's gain from doubling D beside the law's.

    SWEEPS: one sweep directory (or results.jsonl) per seed, all of one config, e.g.
    reports/quick and the output of jaxscale sweep configs/quick.yaml --set seed=1.
    """
    result = compare_seeds(
        [str(s) for s in sweeps], bootstrap=bootstrap, on_seed=lambda c: click.echo(seed_line(c))
    )
    click.echo(seeds_summary(result))
    write_json(json_path, result.to_dict())
    if plot_path is not None:
        from jaxscale import plots  # lazy: matplotlib only when a figure is asked for

        echo_figures([plots.seeds(result, plot_path)])


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


def launch_options(launcher: str, backend: str | None, cluster: dict[str, Any]) -> LaunchOptions:
    """The sweep's cluster options, refusing those that the chosen launcher would ignore."""
    given = {key: value for key, value in cluster.items() if value is not None}
    remote = "submitit or ray"
    owners = {"slurm_partition": "submitit", "slurm_time": "submitit", "nodes_per_run": "submitit",
              "ray_address": "ray", "gpus_per_run": remote, "cpus_per_run": remote,
              "workers": "local"}  # fmt: skip
    for key in given:
        if launcher not in owners[key].split(" or "):
            flag = "--" + key.replace("_", "-")
            raise UserError(f"{flag} applies to --launcher {owners[key]}, not {launcher}")
    options = LaunchOptions(backend=backend or os.environ.get("JAXSCALE_BACKEND"), **given)
    if launcher == "submitit":
        slurm_minutes(options.slurm_time)  # a bad time limit fails before anything is trained
    return options


def echo_report(out_dir: Path, **kwargs: Any) -> None:
    """Fit and write a sweep directory's report (``write_report``'s keyword arguments), then
    print the laws, the training cost if it beat a cosine grid, and where they went."""
    click.echo(summary(write_report(out_dir, **kwargs)))
    laws = json.loads((out_dir / "laws.json").read_text())
    cost = laws["training_tokens"]
    if cost["saving"] > 0:
        click.echo(
            f"trained {cost['trained']:,.0f} tokens per model, "
            f"{100 * cost['saving']:.0f}% fewer than a cosine grid of the same points"
        )
    constrained = (laws.get("data_constrained") or {}).get("law")
    if constrained:
        params = ", ".join(f"{k}={v:.4g}" for k, v in constrained["params"].items())
        click.echo(f"L(N, D, U), data-constrained: {params}")
    for c in laws["lr_choices"]:
        click.echo(
            f"{c['point']}: fitted at lr {c['lr']:g} (lowest loss of {len(c['loss_by_lr'])})"
        )
    if laws.get("comparison"):
        cmp = laws["comparison"]
        for key, params in cmp["laws"].items():
            agree = sum(v["agrees"] for v in params.values())
            click.echo(
                f"{key}: {agree} of {len(params)} parameters within 2 standard errors "
                f"of {cmp['other']}'s"
            )
    click.echo(f"laws: {out_dir}/laws.json   report: {out_dir}/report.md")
