"""A sweep: every (model, tokens) run of a config, trained as jobs, one result line each.

The sweep plans its unfinished runs into jobs (``jaxscale.jobs``: packs of same-shape runs, or
WSD columns), runs them, and assembles ``results.jsonl`` from the runs' own ``result.json``
files. Re-running the same command plans only what is unfinished, and a job killed at any
moment resumes from its checkpoints. A lock file refuses a second sweep on the same directory
while one runs, and results from a different training setup are never mixed into the same table.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from jaxscale.config import RunSpec, SweepConfig
from jaxscale.data import load_corpus
from jaxscale.errors import UserError
from jaxscale.jobs import RESULT_FILE, Job, is_final, job_tokens, plan_jobs, run_job
from jaxscale.machine import record_flops_per_s
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
    """Every run's latest record: ``runs/*/result.json``, and results.jsonl lines of runs
    without one (a sweep directory written before run directories held results)."""
    by_run = {r["run"]: r for r in read_records(results_path(out_dir))}
    for path in sorted((out_dir / "runs").glob(f"*/{RESULT_FILE}")):
        record = json.loads(path.read_text())
        by_run[record["run"]] = record
    return list(by_run.values())


def assemble_results(cfg: SweepConfig, out_dir: Path) -> list[dict[str, Any]]:
    """Rewrite ``results.jsonl`` from the run directories, in the config's run order (runs of
    other configs sharing the directory after them); return its records."""
    order = {spec.name: i for i, spec in enumerate(cfg.runs())}
    records = sorted(collect_records(out_dir), key=lambda r: (order.get(r["run"], len(order)),
                                                              r["run"]))  # fmt: skip
    write_records(results_path(out_dir), records)
    return records


def pending_runs(cfg: SweepConfig, out_dir: Path) -> list[RunSpec]:
    """The config's runs that have no final result yet in ``out_dir``.

    A result predicted by an early stop counts as final only while ``early_stop`` is on: without
    it, the run is trained on from its checkpoint to its end.

    Raises:
      UserError: ``out_dir`` holds results of a different training setup (the config's
        fingerprint differs), which must not be fitted together.
    """
    records = collect_records(out_dir)
    fingerprint = cfg.fingerprint()
    other = {r.get("config_fingerprint") for r in records} - {fingerprint}
    if other:
        raise UserError(
            f"{out_dir} holds results of a different setup (config fingerprint {other.pop()}, "
            f"now {fingerprint}); use --out for a new sweep directory"
        )
    done = {r["run"] for r in records if is_final(r, cfg)}
    return [spec for spec in cfg.runs() if spec.name not in done]


def run_sweep(cfg: SweepConfig, out_dir: Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train every run of ``cfg`` without a final result in ``out_dir``; return all its records.

    Args:
      cfg: the sweep configuration.
      out_dir: where results.jsonl (and later laws, plots and the report) go.
      progress: show a progress bar (tokens, tokens/s, ETA) and a line per finished run.
    """
    with sweep_lock(out_dir):
        todo = {spec.name for spec in pending_runs(cfg, out_dir)}
        jobs = plan_jobs(cfg, {spec.name for spec in cfg.runs()} - todo)
        if jobs:
            _run_local(cfg, jobs, out_dir, progress)
        return assemble_results(cfg, out_dir)


def _run_local(cfg: SweepConfig, jobs: list[Job], out_dir: Path, progress: bool) -> None:
    """Run the jobs one after another in this process, under one progress bar."""
    corpus = load_corpus(cfg.corpus, cfg.tokenizer, progress=progress)
    say = tqdm.write if progress else (lambda s: None)
    bar = tqdm(
        total=sum(job_tokens(cfg, job) for job in jobs),
        mininterval=1.0,
        unit="tok",
        unit_scale=True,
        disable=not progress,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tok "
        "[{elapsed}<{remaining}, {rate_fmt}]",
    )
    with bar:
        for i, job in enumerate(jobs, start=1):
            size = f" ({len(job.runs)} runs)" if len(job.runs) > 1 else ""
            bar.set_description(f"job {i}/{len(jobs)} {job.name}{size}")
            for record in run_job(cfg, job, out_dir, corpus=corpus, on_tokens=bar.update,
                                  say=say):  # fmt: skip
                assemble_results(cfg, out_dir)
                say(_run_line(record))
                if record["status"] == "ok" and record["tokens_per_s"] > 0:
                    per_token = record["C_counted"] / record["D"]
                    record_flops_per_s(per_token * record["tokens_per_s"] * record["pack"])


def _run_line(r: dict[str, Any]) -> str:
    if r["status"] == "diverged":
        return f"{r['run']:<24} diverged at step {r['diverged_at']}"
    if r["loss"] is None:
        return f"{r['run']:<24} stopped at step {r['stopped_at']}, no prediction"
    note = f"  (predicted from {r['stopped_at']}/{r['steps']} steps)" if r["predicted"] else ""
    return (
        f"{r['run']:<24} N={r['N']:<9.3g} D={r['D']:<9.3g} loss {r['loss']:.4f}  "
        f"bpb {r['bpb']:.3f}  {r['tokens_per_s']:,.0f} tok/s  {r['wall_s']:.1f} s{note}"
    )
