"""The local launcher's worker processes: ``workers`` jobs at once on one machine, each worker
pinned to its share of the cores with one XLA device a core, reporting tokens and lines to the
driver's progress bar through a queue, and leaving when the driver does.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from jaxscale.backend import configure
from jaxscale.jobs import job_flops, read_result, run_job
from jaxscale.machine import use_compilation_cache
from jaxscale.planner import Job, SweepPlan

WORKER_POLL_S = 1.0  # how often a worker checks that its sweep is still running


# A local worker's end of the driver's event queue: ("tokens", n) and ("say", line) messages.
_EVENTS: Any = None


def _start_worker(cores: Any, events: Any, backend: str | None) -> None:
    """A local worker's set-up, before JAX starts: pin to its cores, one XLA device a core,
    and leave when the sweep does."""
    global _EVENTS
    _EVENTS = events
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    os.sched_setaffinity(0, cores.get())
    # the driver's device count (one per core of the machine) is in the inherited XLA_FLAGS
    flags = os.environ.get("XLA_FLAGS", "").split()
    os.environ["XLA_FLAGS"] = " ".join(f for f in flags if not f.startswith("--xla_force_host"))
    configure(backend)
    use_compilation_cache()  # a shape another worker compiled is loaded, not compiled again


def _exit_with(sweep_pid: int) -> None:
    """End this worker once the sweep process that started it is gone. A sweep killed by a
    signal (``kill``, a scheduler's time limit) runs no clean-up, and its workers, blocked in a
    job or on the task queue, went on training for nobody and kept their cores busy (here, two
    workers of a killed sweep ran on beside the next sweep's first jobs). Polling the parent's pid
    works on Linux and macOS alike (Linux's PR_SET_PDEATHSIG does not exist on macOS); a
    resumed sweep picks the job up from its last checkpoint."""
    while os.getppid() == sweep_pid:
        time.sleep(WORKER_POLL_S)
    os._exit(1)


def _work(plan: SweepPlan, job: Job, out_dir: str) -> None:
    run_job(plan, job, Path(out_dir), on_tokens=lambda n: _EVENTS.put(("tokens", n)),
            say=lambda s: _EVENTS.put(("say", s)))  # fmt: skip


def run_workers(
    plan: SweepPlan,
    jobs: list[Job],
    out_dir: Path,
    workers: int,
    backend: str | None,
    bar: Any,
    say: Callable[[str], None],
    finished: Callable[[dict[str, Any]], None],
) -> None:
    """``workers`` jobs at once, each worker process pinned to its share of the cores and
    configured for ``backend`` (the sweep's ``--backend``), as remote launchers' workers are.

    Jobs start largest first (most FLOPs), so the last to finish are short ones and no core
    idles long at the end. A failed job stops the sweep (the others' results stay on disk).
    """
    ctx = multiprocessing.get_context("spawn")  # a fresh process: JAX must not be forked
    cores, events = ctx.Queue(), ctx.Queue()
    mine = sorted(os.sched_getaffinity(0))
    for i in range(workers):
        cores.put(set(mine[i::workers]))
    order = sorted(jobs, key=lambda job: job_flops(plan, job), reverse=True)
    bar.set_description(f"{len(jobs)} jobs, {workers} at once")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_start_worker,
                             initargs=(cores, events, backend)) as pool:  # fmt: skip
        pending: dict[Future, Job] = {
            pool.submit(_work, plan, job, str(out_dir)): job for job in order
        }
        try:
            while pending:
                done, _ = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(events, bar, say)
                for future in done:
                    job = pending.pop(future)
                    future.result()  # a job's error ends the sweep here, as in one process
                    for run in job.runs:
                        if (record := read_result(out_dir, run)) is not None:
                            finished(record)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        _drain(events, bar, say)


def _drain(events: Any, bar: Any, say: Callable[[str], None]) -> None:
    while True:
        try:
            kind, value = events.get_nowait()
        except queue.Empty:
            return
        if kind == "tokens":
            bar.update(value)
        else:
            say(value)
