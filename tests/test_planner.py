"""The plan: a sweep reads its config's runs once, resolves each run's training settings, and
packs only runs that can share a compiled step; runs that differ only in peak lr, warmup,
schedule or token budget do share one compiled step."""

import dataclasses
import logging
import re
from pathlib import Path

import jax
import pytest

from jaxscale.config import (
    ConfigError,
    EvalConfig,
    RunSpec,
    SweepConfig,
    TrainConfig,
    config_from_dict,
)
from jaxscale.counting import ModelShape, flops_per_token_counted, params_with_head
from jaxscale.data import load_corpus
from jaxscale.planner import SweepPlan, plan_sweep
from jaxscale.sweep import run_sweep
from jaxscale.train import train_pack
from jaxscale.train.wsd import wsd_key

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
    compiling = re.compile(r"Compiling (jit\()?_pack_steps\b")  # jax 0.10 | jax 0.5 wording
    assert len([r for r in caplog.records if compiling.match(r.getMessage())]) == 1


ISO = {
    "name": "iso",
    "corpus": "stdlib",
    "context": 128,
    "models": [{"n_layer": 2, "d_model": d, "n_head": 2} for d in (16, 24, 32, 40, 48, 64, 96)],
    "budgets": [1e11, {"C": 1e12, "models": [{"n_layer": 2, "d_model": 32, "n_head": 2}]}],
    "per_budget": 5,
    "expected_tokens_per_param": 20,
}


def test_a_budget_design_trains_each_shape_its_budgets_tokens_around_the_expected_optimum():
    cfg = config_from_dict(ISO)
    runs = cfg.runs()
    low = [s for s in runs if s.budget == 1e11]
    assert len(low) == 5 and [s.budget for s in runs].count(1e12) == 1
    for s in runs:  # C / (counted FLOPs per token) tokens: the budget, whatever the size
        assert flops_per_token_counted(s.shape, 256, 128) * s.tokens == pytest.approx(
            s.budget, rel=1e-5
        )
    # the five straddle the size that trains 20 tokens per parameter at this budget
    n = [params_with_head(s.shape, 256) for s in low]
    ratio = [s.tokens / params_with_head(s.shape, 256) for s in low]
    assert n == sorted(n) and ratio[0] > 20 > ratio[-1]
    assert sum(r > 20 for r in ratio) >= 2 and sum(r < 20 for r in ratio) >= 2


def test_a_budget_may_pick_more_shapes_than_the_sweeps_per_budget():
    cfg = config_from_dict({**ISO, "budgets": [{"C": 1e11, "per_budget": 7}, 1e12]})
    sizes = {b: [s.shape.d_model for s in cfg.runs() if s.budget == b] for b in (1e11, 1e12)}
    assert len(sizes[1e11]) == 7 and len(sizes[1e12]) == 5
    assert set(sizes[1e12]) < set(sizes[1e11])  # the same rule, two more sizes around it
    assert cfg.fingerprint() == config_from_dict(ISO | {"isoflop_window": 5}).fingerprint()


def test_per_run_rules_set_batch_warmup_and_lr_from_the_run():
    cfg = config_from_dict(
        {**ISO, "train": {"batch_size": 32, "min_steps": 500, "warmup_per_param": 1.0,
                          "lr": 8e-3, "lr_ref_width": 32, "lr_width_power": 1.0}}
    )  # fmt: skip
    for s in plan_sweep(cfg).runs:
        t = s.train
        steps = s.tokens / (t.batch_size * 128)
        assert steps >= 500 or t.batch_size == 4
        assert t.batch_size == 32 or steps / 2 < 500  # halved no further than needed
        n = params_with_head(s.shape, 256)
        assert t.warmup == pytest.approx(min(0.5, n / s.tokens))  # N tokens of warmup
        assert t.lr == pytest.approx(8e-3 * 32 / s.shape.d_model)


def test_a_wsd_column_warms_up_over_n_tokens_of_its_trunk_and_stays_one_job():
    cfg = config_from_dict({**ISO, "train": {"schedule": "wsd", "warmup_per_param": 1.0}})
    runs = plan_sweep(cfg).runs
    by_shape: dict = {}
    for s in runs:
        by_shape.setdefault(s.shape, []).append(s)
    assert any(len(column) > 1 for column in by_shape.values())
    for shape, column in by_shape.items():
        trunk = max(s.tokens for s in column)
        n = params_with_head(shape, 256)
        assert len({s.train.warmup for s in column}) == 1
        assert column[0].train.warmup == pytest.approx(min(0.5, n / trunk))
        assert len({wsd_key(s) for s in column}) == 1  # every branch of the column shares it


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tokens": [1e6]}, "exactly one of"),
        ({"per_budget": 2}, "'per_budget' must be at least 3"),
        ({"per_budget": 9}, "fewer than per_budget"),
        ({"budgets": [-1e11]}, "'budgets[0].C' must be positive"),
        ({"train": {"schedule": "wsd", "min_steps": 100}}, "a WSD column shares one"),
        ({"train": {"min_steps": -1}}, "'train.min_steps' must be >= 0"),
        ({"budgets": [{"C": 1e11, "per_budget": 2}]}, "'budgets[0].per_budget' must be at least 3"),
        ({"budgets": [{"C": 1e11, "per_budget": 8}]}, "fewer than budgets[0].per_budget (8)"),
        ({"budgets": [ISO["budgets"][1] | {"per_budget": 3}]}, "give 'models' or 'per_budget'"),
        ({"isoflop_window": 2}, "'isoflop_window' must be at least 3"),
    ],
)
def test_budget_design_mistakes_are_one_line(change, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({**ISO, **change})
