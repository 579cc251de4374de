"""A sweep: every (model, tokens) run of a config, trained in turn, one result line each.

Re-running the same command skips the runs already in ``results.jsonl``, so a sweep killed at
any moment loses at most the run in flight. A lock file refuses a second sweep on the same
directory while one runs, and results from a different training setup are never mixed into the
same table.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from jaxscale import counting
from jaxscale.config import RunSpec, SweepConfig
from jaxscale.data import Corpus, load_corpus
from jaxscale.errors import UserError
from jaxscale.machine import provenance, record_flops_per_s
from jaxscale.results import append_record, read_records, results_path
from jaxscale.train import RunOutcome, bits_per_byte, planned_steps, train_run


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


def pending_runs(cfg: SweepConfig, out_dir: Path) -> list[RunSpec]:
    """The config's runs that have no result yet in ``out_dir``.

    Raises:
      UserError: ``out_dir`` holds results of a different training setup (the config's
        fingerprint differs), which must not be fitted together.
    """
    records = read_records(results_path(out_dir))
    fingerprint = cfg.fingerprint()
    other = {r.get("config_fingerprint") for r in records} - {fingerprint}
    if other:
        raise UserError(
            f"{out_dir} holds results of a different setup (config fingerprint {other.pop()}, "
            f"now {fingerprint}); use --out for a new sweep directory"
        )
    done = {r["run"] for r in records}
    return [spec for spec in cfg.runs() if spec.name not in done]


def make_record(
    spec: RunSpec, outcome: RunOutcome, cfg: SweepConfig, corpus: Corpus, machine: dict[str, Any]
) -> dict[str, Any]:
    """The results line of one run: the numbers, then everything needed to reproduce them."""
    shape = spec.shape
    n = counting.non_embedding_params(shape)
    d = outcome.tokens
    ok = outcome.diverged_at is None
    return {
        "run": spec.name,
        "n_layer": shape.n_layer,
        "d_model": shape.d_model,
        "n_head": shape.n_head,
        "context": cfg.context,
        "N": n,
        "N_total": counting.total_params(shape, corpus.n_vocab, cfg.context),
        "D": d,
        "D_target": spec.tokens,
        "C": 6.0 * n * d,
        "C_counted": counting.flops_per_token_counted(shape, corpus.n_vocab, cfg.context) * d,
        "loss": outcome.loss if ok else None,
        "bpb": bits_per_byte(outcome.loss, corpus.bytes_per_token) if ok else None,
        "train_loss": outcome.train_loss,
        "curve": [list(p) for p in outcome.curve],
        "steps": outcome.steps,
        "epochs": d / corpus.unique_train_tokens,
        "tokens_per_s": outcome.tokens_per_s,
        "devices": outcome.devices,
        "dtype": outcome.dtype,
        "spikes": outcome.spikes,
        "max_grad_norm": outcome.max_grad_norm,
        "resumed_at": outcome.resumed_at,
        "wall_s": outcome.wall_s,
        "status": "ok" if ok else "diverged",
        "diverged_at": outcome.diverged_at,
        "seed": spec.seed,
        "lr": cfg.train.lr,
        "batch_size": cfg.train.batch_size,
        "corpus": corpus.name,
        "corpus_fingerprint": corpus.fingerprint,
        "tokenizer": corpus.tokenizer,
        "entropy": corpus.entropy,
        "config_fingerprint": cfg.fingerprint(),
        "config": cfg.to_dict(),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **machine,
    }


def run_sweep(cfg: SweepConfig, out_dir: Path, *, progress: bool = True) -> list[dict[str, Any]]:
    """Train every run of ``cfg`` not yet in ``out_dir/results.jsonl``; return all its records.

    Args:
      cfg: the sweep configuration.
      out_dir: where results.jsonl (and later laws, plots and the report) go.
      progress: show a progress bar (runs done, tokens/s, ETA) and a line per finished run.
    """
    with sweep_lock(out_dir):
        todo = pending_runs(cfg, out_dir)
        n_runs = len(cfg.runs())
        if not todo:
            return read_records(results_path(out_dir))
        corpus = load_corpus(cfg.corpus, cfg.tokenizer, progress=progress)
        machine = provenance()
        say = tqdm.write if progress else (lambda s: None)
        tokens_per_step = cfg.train.batch_size * cfg.context
        bar = tqdm(
            total=tokens_per_step
            * sum(planned_steps(s.tokens, cfg.train, cfg.context) for s in todo),
            mininterval=1.0,
            unit="tok",
            unit_scale=True,
            disable=not progress,
            bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} tok "
            "[{elapsed}<{remaining}, {rate_fmt}]",
        )
        done_before = n_runs - len(todo)
        with bar:
            for i, spec in enumerate(todo, start=done_before + 1):
                bar.set_description(f"run {i}/{n_runs} {spec.name}")
                if spec.tokens > corpus.unique_train_tokens:
                    say(
                        f"warning: {spec.name} trains "
                        f"{spec.tokens / corpus.unique_train_tokens:.1f}"
                        f" epochs of {corpus.name}'s {corpus.unique_train_tokens:,} unique tokens;"
                        " repeated data bends the law (Muennighoff et al. 2023)"
                    )
                outcome = train_run(
                    spec,
                    corpus,
                    context=cfg.context,
                    train=cfg.train,
                    eval_cfg=cfg.eval,
                    run_dir=out_dir / "runs" / spec.name,
                    checkpoint_every=cfg.checkpoint_every,
                    on_tokens=bar.update,
                )
                record = make_record(spec, outcome, cfg, corpus, machine)
                append_record(results_path(out_dir), record)
                say(_run_line(record))
                if record["status"] == "ok" and outcome.tokens_per_s > 0:
                    record_flops_per_s(record["C_counted"] / record["D"] * outcome.tokens_per_s)
    return read_records(results_path(out_dir))


def _run_line(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return f"{r['run']:<24} diverged at step {r['diverged_at']}"
    return (
        f"{r['run']:<24} N={r['N']:<9.3g} D={r['D']:<9.3g} loss {r['loss']:.4f}  "
        f"bpb {r['bpb']:.3f}  {r['tokens_per_s']:,.0f} tok/s  {r['wall_s']:.1f} s"
    )
