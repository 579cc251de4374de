"""A sweep: every (model, tokens) run of a config, trained as jobs, one result line each.

The sweep plans once (``jaxscale.planner``: every run with its training settings, grouped into
jobs: packs of same-shape runs, or WSD columns), runs the jobs with unfinished runs, and
assembles ``results.jsonl`` from the runs' own ``result.json`` files. Re-running the same
command trains only what is unfinished, and a job killed at any
moment resumes from its checkpoints. A lock file refuses a second sweep on the same directory
while one runs, and results from a different training setup are never mixed into the same table.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import jax

from jaxscale.config import RunSpec, SweepConfig
from jaxscale.errors import UserError
from jaxscale.jobs import RESULT_FILE, is_final
from jaxscale.launch import LaunchOptions, launch
from jaxscale.planner import SweepPlan, plan_sweep
from jaxscale.results import read_records, results_path, write_records


def default_out_dir(cfg: SweepConfig) -> Path:
    """``reports/<config name>/``."""
    return Path("reports") / cfg.name


@contextmanager
def sweep_lock(out_dir: Path) -> Iterator[None]:
    """Hold ``out_dir/.lock`` for the sweep; a second sweep on the directory gets a UserError.

    An OS lock (flock) rather than a marker file: it is released when the process dies, even by
    SIGKILL, so a crash never leaves a stale lock behind.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(out_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(
                f"another sweep (pid {holder}) is running on {out_dir}; wait for it or use --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def collect_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every run's latest record: ``runs/*/result.json``, and results.jsonl lines of runs whose
    directory holds none (a sweep written before run directories held results). Deleting a run's
    directory therefore deletes its result: the next sweep trains it again."""
    by_run = {
        r["run"]: r
        for r in read_records(results_path(out_dir))
        if (out_dir / "runs" / r["run"]).is_dir()
    }
    for path in sorted((out_dir / "runs").glob(f"*/{RESULT_FILE}")):
        record = json.loads(path.read_text())
        by_run[record["run"]] = record
    return list(by_run.values())


def assemble_results(plan: SweepPlan, out_dir: Path) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` from the run directories, in the plan's run order (runs of
    other configs sharing the directory after them); return its records."""
    order = {spec.name: i for i, spec in enumerate(plan.runs)}
    records = sorted(collect_records(out_dir), key=lambda r: (order.get(r["run"], len(order)),
                                                              r["run"]))  # fmt: skip
    write_records(results_path(out_dir), records)
    return records


def pending_runs(plan: SweepPlan, out_dir: Path) -> list[RunSpec]:
    """The plan's runs that have no final result yet in ``out_dir``.

    A result predicted by an early stop counts as final only while ``early_stop`` is on: without
    it, the run is trained on from its checkpoint to its end.

    Raises:
      UserError: ``out_dir`` holds results of a different training setup (the config's
        fingerprint differs), which must not be fitted together.
    """
    records = collect_records(out_dir)
    fingerprint = plan.fingerprint
    other = {r.get("config_fingerprint") for r in records} - {fingerprint}
    if other:
        raise UserError(
            f"{out_dir} holds results of a different setup (config fingerprint {other.pop()}, "
            f"now {fingerprint}); use --out for a new sweep directory"
        )
    done = {r["run"] for r in records if is_final(r, plan)}
    return [spec for spec in plan.runs if spec.name not in done]


def run_sweep(
    cfg: SweepConfig,
    out_dir: Path,
    *,
    progress: bool = True,
    launcher: str = "local",
    options: LaunchOptions | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train every run of ``cfg`` without a final result in ``out_dir``; return all its records.

    Args:
      cfg: the sweep configuration.
      out_dir: where results.jsonl (and later laws, plots and the report) go.
      progress: show a progress bar and a line per finished run.
      launcher: where the jobs run: local (this process), submitit (a SLURM job array) or ray.
      options: resources and destination of a remote launcher's jobs.
      on_record: called with each run's record as it finishes (an experiment tracker).

    Raises:
      LaunchError: some jobs failed; results.jsonl holds every run that finished.
    """
    # A multi-host sweep runs this on every host: they train each job together, and process 0
    # alone holds the lock and writes the results.
    lead = launcher != "local" or jax.process_index() == 0
    plan = plan_sweep(cfg)
    with sweep_lock(out_dir) if lead else nullcontext():
        todo = {spec.name for spec in pending_runs(plan, out_dir)}
        jobs = plan.jobs(done={spec.name for spec in plan.runs} - todo)

        def write(record: dict[str, Any]) -> None:
            if lead:
                assemble_results(plan, out_dir)
                if on_record:
                    on_record(record)

        try:
            if jobs:  # results.jsonl is kept current as runs finish
                launch(plan, jobs, out_dir, launcher, progress=progress and lead, options=options,
                       on_result=write)  # fmt: skip
        finally:  # after a failed job too: the runs that finished are in the table
            records = assemble_results(plan, out_dir) if lead else collect_records(out_dir)
        return records
