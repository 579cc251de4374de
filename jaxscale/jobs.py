"""Jobs: the units a sweep hands to a launcher, each a pure function of (plan, job, directory).

A job (``planner.Job``) is either a *pack* (runs of one shape and one token budget, up to
``pack`` of them, that differ in seed or learning rate and train together in one vmapped step)
or, under ``schedule: wsd``, a *WSD column* (every token budget of one shape, as branches of one
trunk). A single run is a pack of one. Its runs carry their own training settings.

``run_job`` trains a job and writes each of its runs' result to ``DIR/runs/<run>/result.json``
(atomically) as soon as it is known; it resumes from the job's checkpoints. Nothing else is
shared between jobs, so any launcher (in-process, SLURM through submitit, Ray) can run them in
any order or at once, and ``sweep.assemble_results`` builds results.jsonl from the run
directories afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jaxscale import counting
from jaxscale.backend import is_lead
from jaxscale.config import RunSpec
from jaxscale.data import Corpus, load_corpus
from jaxscale.errors import UserError
from jaxscale.extrapolate import extrapolate_run
from jaxscale.machine import provenance
from jaxscale.planner import Job, SweepPlan
from jaxscale.results import write_records
from jaxscale.train import (
    RunOutcome,
    bits_per_byte,
    planned_steps,
    stop_step,
    train_pack,
    train_wsd,
    wsd_steps,
)

RESULT_FILE = "result.json"


def run_dir(out_dir: Path, run: str) -> Path:
    """``DIR/runs/<run>``: a run's metrics, plan and result."""
    return out_dir / "runs" / run


def job_dir(out_dir: Path, job: Job) -> Path:
    """Where a job's checkpoints go: the run's own directory for a single run, else
    ``DIR/jobs/<job>``."""
    if len(job.runs) == 1:
        return run_dir(out_dir, job.runs[0])
    return out_dir / "jobs" / job.name


def read_result(out_dir: Path, run: str) -> dict[str, Any] | None:
    """A run's result record, or None if it has none yet."""
    path = run_dir(out_dir, run) / RESULT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def write_result(out_dir: Path, record: dict[str, Any]) -> None:
    """Write a run's result.json atomically: complete or absent, never half-written.

    In a multi-host run only process 0 writes."""
    if not is_lead():
        return
    write_records(run_dir(out_dir, record["run"]) / RESULT_FILE, [record])


def is_final(record: dict[str, Any] | None, plan: SweepPlan) -> bool:
    """Whether a result settles its run: a prediction does only while early stop is on."""
    if record is None:
        return False
    return record.get("status") in ("ok", "diverged") or bool(plan.config.early_stop)


def job_tokens(plan: SweepPlan, job: Job) -> int:
    """Tokens a job trains over all its models (its progress bar's total), from its runs' own
    training settings."""
    context, first = plan.config.context, job.specs[0]
    per_step = first.train.batch_size * context
    if job.kind == "pack":
        steps = planned_steps(first.tokens, first.train, context)
        return len(job.specs) * stop_step(steps, plan.config.early_stop) * per_step
    budgets = sorted({s.tokens for s in job.specs})
    models = len(job.specs) // len(budgets)
    return models * per_step * wsd_steps(budgets, first.train, context)


def job_flops(plan: SweepPlan, job: Job) -> float:
    """Training FLOPs of a job (counted: attention and head), what a launcher orders jobs by."""
    cfg = plan.config
    vocab = counting.TOKENIZER_VOCAB[cfg.tokenizer]
    per_token = counting.flops_per_token_counted(job.specs[0].shape, vocab, cfg.context)
    return job_tokens(plan, job) * per_token


def run_job(
    plan: SweepPlan,
    job: Job,
    out_dir: Path,
    *,
    corpus: Corpus | None = None,
    on_tokens: Callable[[int], None] = lambda n: None,
    say: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Train ``job`` (resuming from its checkpoints) and write its runs' result.json files.

    Args:
      plan: the sweep's plan (its shared settings).
      job: from ``SweepPlan.jobs``: its runs carry their own training settings.
      out_dir: the sweep directory.
      corpus: the loaded corpus (loaded here when None, as in a launcher's worker).
      on_tokens: progress callback, tokens per finished step over the job's models.
      say: where one-line notes go (a run training repeated data, a failed prediction).

    Returns:
      The records written, in the job's run order.
    """
    cfg = plan.config
    corpus = corpus or load_corpus(cfg.corpus, cfg.tokenizer, progress=False)
    specs = job.specs
    for spec in specs:
        if spec.tokens > corpus.unique_train_tokens:
            say(
                f"warning: {spec.name} trains {spec.tokens / corpus.unique_train_tokens:.1f}"
                f" epochs of {corpus.name}'s {corpus.unique_train_tokens:,} unique tokens;"
                " repeated data bends the law (Muennighoff et al. 2023)"
            )
    machine = provenance()
    dirs = [run_dir(out_dir, s.name) for s in specs]
    common = {
        "context": cfg.context,
        "eval_cfg": cfg.eval,
        "job_dir": job_dir(out_dir, job),
        "run_dirs": dirs,
        "checkpoint_every": cfg.checkpoint_every,
        "shard_params_above": cfg.shard_params_above,
        "on_tokens": on_tokens,
    }
    written = []

    def finish(spec: RunSpec, outcome: RunOutcome) -> None:
        if not is_lead():  # the others hold no metrics logs, and write no results
            return
        record = make_record(spec, outcome, plan, corpus, machine)
        if outcome.stopped_at is not None and record["status"] == "ok":
            record["loss_at_stop"] = record["loss"]
            record.update(_prediction(run_dir(out_dir, spec.name), cfg.early_stop, say))
            if record["loss"] is not None:
                record["bpb"] = bits_per_byte(record["loss"], corpus.bytes_per_token)
        write_result(out_dir, record)
        written.append(record)

    if job.kind == "wsd":
        train_wsd(
            specs,
            corpus,
            finished=lambda s: is_final(read_result(out_dir, s.name), plan),
            on_outcome=finish,
            **common,
        )
    else:
        outcomes = train_pack(specs, corpus, stop_fraction=cfg.early_stop, **common)
        for spec, outcome in zip(specs, outcomes, strict=True):
            finish(spec, outcome)
    return written


def _prediction(path: Path, fraction: float, say: Callable[[str], None]) -> dict[str, Any]:
    """The fields of an early-stopped run: its extrapolated final loss, marked as predicted."""
    try:
        e = extrapolate_run(path, fraction)
    except UserError as err:
        say(f"warning: {path.name} stopped early but its end could not be predicted: {err}")
        return {"status": "stopped", "loss": None, "bpb": None}
    return {
        "status": "predicted",
        "predicted": True,
        "loss": e.predicted,  # L(t) at the run's planned end: not measured
        "predicted_from": fraction,
        "prediction_fit": {k: float(v) for k, v in e.fit.params.items()},
    }


def make_record(
    spec: RunSpec, outcome: RunOutcome, plan: SweepPlan, corpus: Corpus, machine: dict[str, Any]
) -> dict[str, Any]:
    """The results line of one run: the numbers, then everything needed to reproduce them."""
    cfg, shape = plan.config, spec.shape
    n = counting.non_embedding_params(shape)
    d = outcome.tokens
    ok = outcome.diverged_at is None
    loss = outcome.loss if ok else None
    return {
        "run": spec.name,
        "n_layer": shape.n_layer,
        "d_model": shape.d_model,
        "n_head": shape.n_head,
        "context": cfg.context,
        "N": n,
        "N_total": counting.total_params(shape, corpus.n_vocab, cfg.context),
        "N_with_head": counting.params_with_head(shape, corpus.n_vocab),
        "D": d,
        "D_target": spec.tokens,
        "C": 6.0 * n * d,
        "C_counted": counting.flops_per_token_counted(shape, corpus.n_vocab, cfg.context) * d,
        "budget": spec.budget,
        "loss": loss,
        "bpb": bits_per_byte(loss, corpus.bytes_per_token) if loss is not None else None,
        "train_loss": outcome.train_loss,
        "curve": [list(p) for p in outcome.curve],
        "steps": outcome.steps,
        "stopped_at": outcome.stopped_at,
        "branch_at": outcome.branch_at,
        "predicted": False,
        "epochs": d / corpus.unique_train_tokens,
        "unique_tokens": min(d, corpus.unique_train_tokens),  # U of the data-constrained law
        "tokens_per_s": outcome.tokens_per_s,
        "pack": outcome.pack,
        "devices": outcome.devices,
        "dtype": outcome.dtype,
        "spikes": outcome.spikes,
        "max_grad_norm": outcome.max_grad_norm,
        "resumed_at": outcome.resumed_at,
        "wall_s": outcome.wall_s,
        "status": "ok" if ok else "diverged",
        "diverged_at": outcome.diverged_at,
        "seed": spec.seed,
        "lr": spec.train.lr,
        "schedule": spec.train.schedule,
        "batch_size": spec.train.batch_size,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus.fingerprint,
        "tokenizer": corpus.tokenizer,
        "entropy": corpus.entropy,
        "config_fingerprint": plan.fingerprint,
        "config": cfg.to_dict(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **machine,
    }
