"""The plan: a sweep reads its config's runs once, resolves each run's training settings, and
packs only runs that can share a compiled step; runs that differ only in peak lr, warmup,
schedule or token budget do share one compiled step."""

import dataclasses
import logging
import re
from pathlib import Path

import jax
import pytest

from jaxscale.config import EvalConfig, RunSpec, SweepConfig, TrainConfig, config_from_dict
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.planner import SweepPlan, plan_sweep
from jaxscale.sweep import run_sweep
from jaxscale.train import train_pack

CORPUS = "synthetic:order=1,symbols=16,tokens=100000"
RAW = {
    "name": "plan",
    "corpus": CORPUS,
    "context": 16,
    "models": [{"n_layer": 1, "d_model": 8, "n_head": 1}],
    "tokens": [2048, 4096],
    "train": {"batch_size": 8, "lr": [1e-3, 1e-2], "evals": 1},
    "eval": {"tokens": 1024},
}


def test_a_sweep_reads_its_runs_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config_from_dict(RAW)
    calls = []
    real = SweepConfig.runs
    monkeypatch.setattr(SweepConfig, "runs", lambda self: calls.append(1) or real(self))
    records = run_sweep(cfg, tmp_path / "out", progress=False)
    assert len(calls) == 1 and len(records) == 4
    # each record carries its own resolved lr and batch size
    assert sorted(r["lr"] for r in records) == [1e-3, 1e-3, 1e-2, 1e-2]
    assert {r["batch_size"] for r in records} == {8}


def test_jobs_carry_resolved_runs_and_pack_only_what_shares_a_step() -> None:
    plan = plan_sweep(config_from_dict(RAW))
    assert all(s.train is not None and s.train.lr == s.lr for s in plan.runs)
    jobs = plan.jobs(done=set())
    assert [len(j.specs) for j in jobs] == [2, 2]  # one pack per token budget, lrs together
    # a run given its own batch size (or betas) no longer packs with the others
    first, *rest = plan.runs
    other = dataclasses.replace(first, train=dataclasses.replace(first.train, batch_size=16))
    split = SweepPlan(plan.config, (other, *rest), plan.fingerprint).jobs(done=set())
    assert sorted(len(j.specs) for j in split) == [1, 1, 2]
    beta = dataclasses.replace(first, train=dataclasses.replace(first.train, beta2=0.99))
    split = SweepPlan(plan.config, (beta, *rest), plan.fingerprint).jobs(done=set())
    assert sorted(len(j.specs) for j in split) == [1, 1, 2]
    # while a run's own warmup or schedule does not split its pack
    warm = dataclasses.replace(first, train=dataclasses.replace(first.train, warmup=0.3))
    same = SweepPlan(plan.config, (warm, *rest), plan.fingerprint).jobs(done=set())
    assert [len(j.specs) for j in same] == [2, 2]


def test_lr_warmup_schedule_and_tokens_share_one_compiled_step(
    caplog: pytest.LogCaptureFixture,
) -> None:
    corpus = load_corpus(CORPUS, progress=False)
    shape = ModelShape(1, 24, 3)  # a shape no other test compiles
    base = TrainConfig(batch_size=8, evals=1)
    settings = [
        (3072, base),
        (4096, dataclasses.replace(base, lr=1e-2, warmup=0.2)),
        (2048, dataclasses.replace(base, schedule="constant", min_lr_ratio=0.5)),
    ]
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        for tokens, train in settings:
            spec = RunSpec("r", shape, tokens, 0, train=train)
            train_pack([spec], corpus, context=16, eval_cfg=EvalConfig(tokens=512))
    compiling = re.compile(r"Compiling (jit\()?_pack_step\b")  # jax 0.10 | jax 0.5 wording
    assert len([r for r in caplog.records if compiling.match(r.getMessage())]) == 1
