"""Launchers: where a sweep's jobs run (this process, a SLURM job array, a Ray cluster).

Each job is a pure function of (plan, job, sweep directory): ``execute`` trains it in whatever
process it lands in, resuming from its checkpoints, and writes only its runs' result.json files.
The driver (the ``jaxscale sweep`` process) plans the jobs, hands them to a launcher, waits with a
progress bar, and then assembles results.jsonl from the run directories, so workers never share
a file and a re-launch submits only the jobs whose runs are unfinished.

- ``local``: jobs on this machine, under one progress bar over tokens: one after another in this
  process, or on a CPU, ``workers`` at once in worker processes, each pinned to its own cores
  (tiny models keep one core busy but not two: two such runs side by side train up to twice
  the tokens per second of one run over both cores).
- ``submitit``: one SLURM array task per job (submitit's local executor, subprocesses on this
  machine, where there is no SLURM).
- ``ray``: one Ray task per job, each with its GPU and CPU request, on a local Ray instance or an
  existing cluster.

submitit and Ray are imported only when chosen: ``pip install "jaxscale[cluster]"``.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from tqdm.auto import tqdm

from jaxscale.backend import configure, cpu_cores
from jaxscale.data import load_corpus
from jaxscale.errors import UserError
from jaxscale.jobs import job_tokens, read_result, run_job
from jaxscale.machine import record_flops_per_s
from jaxscale.planner import Job, SweepPlan
from jaxscale.workers import run_workers

LAUNCHERS = ("local", "submitit", "ray")
POLL_S = 2.0  # how often a remote launcher's driver looks for finished jobs


class LaunchError(UserError):
    """Some jobs failed; the line says how many, and a line above each names its log."""


@dataclass(frozen=True, slots=True)
class LaunchOptions:
    """What a remote job asks for, and where it goes (the local launcher needs none of it)."""

    # passed to every worker's backend.configure; None: its own $JAXSCALE_BACKEND, else auto
    backend: str | None = None
    gpus_per_run: int | None = None  # GPUs per job and host; None: 0 on --backend cpu, else 1
    cpus_per_run: int | None = None  # CPU cores per job; None: Ray's 1, SLURM's default
    nodes_per_run: int = 1  # submitit: hosts per job, one process per GPU, jax.distributed joins
    slurm_partition: str | None = None  # None: the cluster's default partition
    slurm_time: str = "24:00:00"  # a job's time limit: minutes, H:MM:SS or D-HH:MM:SS
    # None: SLURM where its srun is on PATH, else submitit's local executor; "local" forces that
    submitit_cluster: str | None = None
    # None: a Ray instance started here (or the one RAY_ADDRESS names); "auto", "ray://host:port"
    ray_address: str | None = None
    # local: jobs at once in worker processes, each pinned to its share of the cores; None:
    # $JAXSCALE_WORKERS, else one per core on a Linux CPU (one on an accelerator, across hosts
    # or where processes cannot be pinned, as on macOS)
    workers: int | None = None

    def gpus(self) -> int:
        """GPUs each job asks for."""
        if self.gpus_per_run is not None:
            return self.gpus_per_run
        return 0 if self.backend == "cpu" else 1


def launch(
    plan: SweepPlan,
    jobs: list[Job],
    out_dir: Path,
    launcher: str,
    *,
    progress: bool = True,
    options: LaunchOptions | None = None,
    on_result: Callable[[dict[str, Any]], None] = lambda record: None,
) -> None:
    """Run ``jobs`` with ``launcher``; each writes its runs' result.json under ``out_dir``.

    Args:
      plan: the sweep's plan.
      jobs: from ``SweepPlan.jobs``, smallest first.
      out_dir: the sweep directory (a filesystem every worker sees, for remote launchers).
      launcher: local | submitit | ray.
      progress: a progress bar and a line per finished run.
      options: resources and destination of remote jobs.
      on_result: called with each run's record as soon as its job has written it.

    Raises:
      UserError: an unknown launcher, a bad option or a launcher's package not installed.
      LaunchError: some jobs failed (the others' results are on disk).
    """
    options = options or LaunchOptions()
    say = tqdm.write if progress else (lambda s: None)
    if launcher == "local":
        _run_local(plan, jobs, out_dir, progress, say, on_result, options)
        return
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown launcher {launcher!r} (allowed: {', '.join(LAUNCHERS)})")
    package = _require(launcher)
    # Fetch and tokenize the corpus once here, so that the jobs find it cached rather than all
    # downloading it at once, and a missing corpus fails now with one line.
    load_corpus(plan.config.corpus, plan.config.tokenizer, progress=progress)
    distributed = options.nodes_per_run > 1
    calls = [(plan, job, str(out_dir.resolve()), options.backend, distributed) for job in jobs]
    bar = tqdm(total=len(jobs), unit="job", disable=not progress, desc=f"{launcher}: jobs done")
    failures: list[str] = []

    def finished(job: Job, error: str | None) -> None:
        if error is None:
            for run in job.runs:
                if (record := read_result(out_dir, run)) is not None:
                    on_result(record)
                    say(run_line(record))
        else:
            failures.append(f"jaxscale: job {job.name} failed: {error}")
            tqdm.write(failures[-1], file=sys.stderr)
        bar.update()

    with bar:
        run = _run_submitit if launcher == "submitit" else _run_ray
        run(package, jobs, calls, out_dir, options, finished, say)
    if failures:
        raise LaunchError(
            f"{len(failures)} of {len(jobs)} jobs failed (each named above with its log); "
            "re-run the same command to retry them"
        )


def execute(
    plan: SweepPlan, job: Job, out_dir: str, backend: str | None, distributed: bool
) -> list[str]:
    """A worker: train ``job`` in this (fresh) process and write its runs' result.json files.

    The entry point of submitit and Ray tasks, top-level so that it pickles by reference; the
    plan and the job (its runs resolved) arrive pickled, so the worker plans nothing again.
    ``configure`` comes first: JAX's backends must not have started yet. Returns the runs written.
    """
    configure(backend, distributed=distributed)
    records = run_job(plan, job, Path(out_dir), say=lambda s: print(s, flush=True))
    return [r["run"] for r in records]


# --- local ---------------------------------------------------------------------------------------


def local_workers(options: LaunchOptions, jobs: int) -> int:
    """How many jobs the local launcher trains at once (see ``LaunchOptions.workers``)."""
    asked = options.workers
    if asked is None and os.environ.get("JAXSCALE_WORKERS", "").isdigit():
        asked = int(os.environ["JAXSCALE_WORKERS"])
    if asked is None:
        alone = jax.default_backend() != "cpu" or jax.process_count() > 1
        asked = 1 if alone else cpu_cores()
    if not hasattr(os, "sched_setaffinity"):  # macOS: no pinning, so one process
        return 1
    return max(1, min(asked, jobs, cpu_cores()))


def _run_local(
    plan: SweepPlan,
    jobs: list[Job],
    out_dir: Path,
    progress: bool,
    say: Callable[[str], None],
    on_result: Callable[[dict[str, Any]], None],
    options: LaunchOptions,
) -> None:
    """Run the jobs here, under one progress bar over tokens: one after another in this
    process, or ``local_workers`` at once (``workers.run_workers``). The corpus is loaded (and, the
    first time, tokenized) here either way, so that workers find it cached."""
    workers = local_workers(options, len(jobs))
    corpus = load_corpus(plan.config.corpus, plan.config.tokenizer, progress=progress)
    bar = tqdm(
        total=sum(job_tokens(plan, job) for job in jobs),
        mininterval=1.0,
        unit="tok",
        unit_scale=True,
        disable=not progress,
        bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tok "
        "[{elapsed}<{remaining}, {rate_fmt}]",
    )

    def finished(record: dict[str, Any]) -> None:
        on_result(record)
        say(run_line(record))
        if record["status"] == "ok" and record["tokens_per_s"] > 0:
            per_token = record["C_counted"] / record["D"]
            record_flops_per_s(per_token * record["tokens_per_s"] * record["pack"])

    with bar:
        if workers > 1:
            run_workers(plan, jobs, out_dir, workers, options.backend, bar, say, finished)
            return
        for i, job in enumerate(jobs, start=1):
            size = f" ({len(job.runs)} runs)" if len(job.runs) > 1 else ""
            bar.set_description(f"job {i}/{len(jobs)} {job.name}{size}")
            for record in run_job(plan, job, out_dir, corpus=corpus, on_tokens=bar.update,
                                  say=say):  # fmt: skip
                finished(record)


def run_line(r: dict[str, Any]) -> str:
    """One finished run, as the sweep prints it."""
    if r["status"] == "diverged":
        return f"{r['run']:<24} diverged at step {r['diverged_at']}"
    if r["loss"] is None:
        return f"{r['run']:<24} stopped at step {r['stopped_at']}, no prediction"
    note = f"  (predicted from {r['stopped_at']}/{r['steps']} steps)" if r["predicted"] else ""
    return (
        f"{r['run']:<24} N={r['N']:<9.3g} D={r['D']:<9.3g} loss {r['loss']:.4f}  "
        f"bpb {r['bpb']:.3f}  {r['tokens_per_s']:,.0f} tok/s  {r['wall_s']:.1f} s{note}"
    )


# --- submitit ------------------------------------------------------------------------------------

Finished = Callable[[Job, "str | None"], None]  # a job's end: None, or why it failed


def _run_submitit(
    submitit: Any,
    jobs: list[Job],
    calls: list[tuple[Any, ...]],
    out_dir: Path,
    options: LaunchOptions,
    finished: Finished,
    say: Callable[[str], None],
) -> None:
    """One SLURM array task per job (or a local subprocess each, without SLURM); wait for all."""
    executor = submitit.AutoExecutor(
        folder=out_dir.resolve() / "submitit", cluster=options.submitit_cluster
    )
    gpus = options.gpus()
    params: dict[str, Any] = {
        "name": f"jaxscale-{out_dir.resolve().name}",
        "timeout_min": slurm_minutes(options.slurm_time),
        "nodes": options.nodes_per_run,
        # jax.distributed on SLURM expects one process per GPU
        "tasks_per_node": max(1, gpus) if options.nodes_per_run > 1 else 1,
        "gpus_per_node": gpus,
        "slurm_partition": options.slurm_partition,
        "cpus_per_task": options.cpus_per_run,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    submitted = executor.map_array(execute, *zip(*calls, strict=True))
    say(f"submitted {len(jobs)} jobs to {executor.cluster} (logs in {executor.folder})")
    pending = dict(zip(jobs, submitted, strict=True))
    try:
        while pending:
            for job, task in list(pending.items()):
                if task.done():
                    del pending[job]
                    error = task.exception()
                    finished(job, None if error is None else _submitit_error(error, task))
            if pending:
                time.sleep(POLL_S)
    except KeyboardInterrupt:  # Ctrl-C stops the sweep's jobs too, so a re-launch is safe
        for task in pending.values():
            task.cancel(check=False)
        raise


def _submitit_error(error: BaseException, task: Any) -> str:
    # A failed task's message holds its traceback between lines of dashes; a task that never
    # finished (timed out, cancelled, killed) has a one-line message.
    text = str(error)
    blocks = re.split(r"\n-{10,}\n", text)
    return f"{_last_line(blocks[1] if len(blocks) > 2 else text)} (log: {task.paths.stderr})"


def _last_line(text: str) -> str:
    """The last non-empty line of an error's text, where Python puts the exception itself."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:240] if lines else "no message"


def slurm_minutes(limit: str) -> int:
    """A job's time limit ("90" minutes, "4:00:00", "1-12:00:00") in whole minutes, rounded up."""
    text = limit.strip()
    if text.isdigit():
        minutes = int(text)
    elif match := re.fullmatch(r"(?:(\d+)-)?(\d+):(\d+):(\d+)", text):
        days, hours, mins, secs = (int(g or 0) for g in match.groups())
        minutes = days * 1440 + hours * 60 + mins + (secs > 0)
    else:
        raise UserError(f"--slurm-time {limit!r}: write minutes, H:MM:SS or D-HH:MM:SS")
    if minutes < 1:
        raise UserError(f"--slurm-time {limit!r}: a job needs at least a minute")
    return minutes


# --- ray -----------------------------------------------------------------------------------------


def _run_ray(
    ray: Any,
    jobs: list[Job],
    calls: list[tuple[Any, ...]],
    out_dir: Path,
    options: LaunchOptions,
    finished: Finished,
    say: Callable[[str], None],
) -> None:
    """One Ray task per job, each in a fresh worker process; wait for all."""
    started = not ray.is_initialized()
    if started:
        ray.init(
            address=options.ray_address,
            include_dashboard=False,
            log_to_driver=False,  # the jobs' own output stays in Ray's logs, not under the bar
            logging_level=logging.WARNING,
        )
    try:
        gpus = options.gpus()
        have = ray.cluster_resources().get("GPU", 0)
        if gpus > have:
            say(f"warning: each job asks for {gpus} GPUs and the Ray cluster has {have:g} now: "
                "jobs wait for one that has them (--gpus-per-run 0 runs on CPU)")  # fmt: skip
        # max_calls=1: a fresh process per job, so that configure() precedes JAX's start
        task = ray.remote(num_gpus=gpus, num_cpus=options.cpus_per_run or 1, max_calls=1)(execute)
        refs = {task.remote(*call): job for job, call in zip(jobs, calls, strict=True)}
        say(f"submitted {len(jobs)} jobs to Ray ({ray.get_runtime_context().gcs_address})")
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1, timeout=POLL_S)
            for ref in done:
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as e:
                    finished(refs[ref], _ray_error(e))
                else:
                    finished(refs[ref], None)
    finally:
        if started:
            ray.shutdown()


def _ray_error(error: BaseException) -> str:
    cause = getattr(error, "cause", None)  # a RayTaskError wraps the task's own exception
    text = f"{type(cause).__name__}: {cause}" if cause is not None else str(error)
    return f"{_last_line(text)} (log: `ray logs`, or /tmp/ray/session_latest/logs on its node)"


def _require(package: str) -> Any:
    """Import a launcher's package, or say in one line how to install it."""
    try:
        return __import__(package)
    except ImportError:
        raise UserError(
            f'--launcher {package} needs the {package} package: pip install "jaxscale[cluster]"'
        ) from None
