"""Crash safety: a sweep killed with SIGKILL mid-run resumes from its checkpoints and ends with
the same final losses as an uninterrupted sweep; no result line is lost or repeated."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxscale.results import read_records

CONFIG = """
name: resume
corpus: synthetic:order=1,symbols=16,tokens=400000
context: 32
models:
  - {n_layer: 1, d_model: 16, n_head: 2}
  - {n_layer: 2, d_model: 32, n_head: 2}
tokens: [4.0e4, 1.6e5]
train: {batch_size: 16, lr: 1.0e-2, evals: 3}
eval: {tokens: 1.0e4}
checkpoint_every: 0.2
"""
CLI = [sys.executable, "-c", "from jaxscale.cli import main; main()"]


def sweep_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "sweep", str(config), "--out", str(out), "--quiet", "--no-fit", *extra]


def wait_for_checkpoint_of_unfinished_run(proc: subprocess.Popen, out: Path) -> None:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        done = {r["run"] for r in read_records(out)}
        for ckpts in (out / "runs").glob("*/checkpoints"):
            steps = [p for p in ckpts.iterdir() if p.name.isdigit()]
            if done and ckpts.parent.name not in done and len(steps) >= 1:
                return
        time.sleep(0.05)
    pytest.fail("the sweep finished or stalled before a run was caught mid-way")


def test_sigkill_then_rerun_equals_an_uninterrupted_sweep(tmp_path: Path) -> None:
    config = tmp_path / "resume.yaml"
    config.write_text(CONFIG)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    # checkpoint_every is not part of a run's identity: the reference sweep saves only at the end
    subprocess.run(
        sweep_cmd(config, whole, "--set", "checkpoint_every=3600"), check=True, timeout=600
    )

    proc = subprocess.Popen(sweep_cmd(config, killed), start_new_session=True)
    wait_for_checkpoint_of_unfinished_run(proc, killed)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = read_records(killed)
    assert 1 <= len(partial) < 4
    subprocess.run(sweep_cmd(config, killed), check=True, timeout=600)

    expected = {r["run"]: r for r in read_records(whole)}
    resumed = read_records(killed)
    assert sorted(r["run"] for r in resumed) == sorted(expected)  # none lost, none repeated
    assert any(r["resumed_at"] > 0 for r in resumed)
    for r in resumed:
        assert r["loss"] == pytest.approx(expected[r["run"]]["loss"], abs=1e-5)
        assert r["train_loss"] == pytest.approx(expected[r["run"]]["train_loss"], abs=1e-5)
        metrics = (killed / "runs" / r["run"] / "metrics.jsonl").read_text().splitlines()
        steps = [line for line in metrics if '"loss"' in line]
        assert len(steps) == len(set(steps))  # the metrics log repeats no step


def test_a_damaged_checkpoint_falls_back_to_the_one_before(tmp_path: Path) -> None:
    import jax.numpy as jnp

    from jaxscale.checkpoint import RunCheckpoints

    ckpt = RunCheckpoints(tmp_path / "c", every_s=0)
    like = {"w": jnp.zeros(3)}
    ckpt.save(1, {"w": jnp.ones(3)}, {"step": 1})
    ckpt.save(2, {"w": 2 * jnp.ones(3)}, {"step": 2})
    ckpt.close()
    for f in (tmp_path / "c" / "2").rglob("*"):
        if f.is_file() and "d" in f.parent.name:  # the array data of checkpoint 2
            f.write_bytes(b"garbage")
    reader = RunCheckpoints(tmp_path / "c", every_s=0)
    with pytest.warns(UserWarning, match="checkpoint 2 is unreadable"):
        step, state, meta = reader.restore(like)
    reader.close()
    assert step == 1 and meta == {"step": 1} and float(state["w"][0]) == 1.0
