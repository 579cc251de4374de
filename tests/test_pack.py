"""Packs and WSD: runs of one shape train together in one compiled step and each still gets its
own result; the fit takes each point's best learning rate; a NaN in a pack fells only its model;
a WSD column costs less than the cosine grid of the same points and resumes exactly."""

import logging
import math
import re
from pathlib import Path

import jax
import pytest

from jaxscale.config import EvalConfig, RunSpec, TrainConfig, config_from_dict
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.results import fit_points, load_results, read_records
from jaxscale.sweep import run_sweep
from jaxscale.train import train_pack, train_wsd

CORPUS = "synthetic:order=1,symbols=16,tokens=300000"
SHAPE = {"n_layer": 1, "d_model": 16, "n_head": 2}


def sweep(tmp_path: Path, name: str, **overrides) -> tuple[list[dict], Path]:
    raw = {
        "name": name,
        "corpus": CORPUS,
        "context": 16,
        "models": [SHAPE],
        "tokens": [3.2e4],
        "train": {"batch_size": 16, "lr": 3e-3, "evals": 2},
        "eval": {"tokens": 4096},
        **overrides,
    }
    out = tmp_path / name
    return run_sweep(config_from_dict(raw), out, progress=False), out


def test_a_pack_of_four_lrs_is_one_step_function_and_four_results(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        records, _ = sweep(tmp_path, "lrs", train={"batch_size": 16, "lr": lrs, "evals": 2})
    compiling = re.compile(r"Compiling (jit\()?_pack_steps\b")  # jax 0.10 | jax 0.5 wording
    compiled = [r for r in caplog.records if compiling.match(r.getMessage())]
    assert len(compiled) == 1  # the 4 models train in one compiled step function
    assert [r["lr"] for r in records] == lrs
    assert all(r["pack"] == 4 and r["status"] == "ok" for r in records)
    assert len({r["loss"] for r in records}) == 4
    # each model of the pack is the run it would have been alone
    corpus = load_corpus(CORPUS, progress=False)
    alone = train_pack(
        [RunSpec("x", ModelShape(**SHAPE), 32_000, 0, lrs[2])],
        corpus,
        context=16,
        train=TrainConfig(batch_size=16, evals=2),
        eval_cfg=EvalConfig(tokens=4096),
    )[0]
    assert alone.loss == pytest.approx(records[2]["loss"], abs=1e-5)
    # the fit uses the best lr of the point, and says so
    points, choices = fit_points(records)
    best = min(records, key=lambda r: r["loss"])
    assert len(points) == 1 and points[0]["loss"] == best["loss"]
    assert choices[0]["lr"] == best["lr"] and len(choices[0]["loss_by_lr"]) == 4


def test_sixteen_steps_a_call_train_what_one_step_a_call_trains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 137 steps with validations after 46, 91 and 137: calls of 16 stop short at each of them
    corpus = load_corpus(CORPUS, progress=False)
    specs = [RunSpec(f"m{i}", ModelShape(**SHAPE), 137 * 8 * 16, i, lr)
             for i, lr in enumerate([3e-3, 3e-2])]  # fmt: skip
    kw = {"context": 16, "train": TrainConfig(batch_size=8, evals=3), "eval_cfg": EvalConfig(2048)}
    got = {}
    for per_call in (1, 16):
        monkeypatch.setenv("JAXSCALE_STEPS_PER_CALL", str(per_call))
        outs = train_pack(specs, corpus, **kw)
        got[per_call] = [(o.loss, o.train_loss, o.curve, o.steps) for o in outs]
    assert [len(c) for _, _, c, _ in got[16]] == [3, 3] and got[16][0][3] == 137
    assert got[16] == got[1]  # the same numbers, bit for bit
    assert got[16][0][0] != got[16][1][0]


def test_seeds_are_averaged_per_point(tmp_path: Path) -> None:
    records, out = sweep(tmp_path, "seeds", seeds=[0, 1, 2])
    assert [r["seed"] for r in records] == [0, 1, 2]
    assert len({r["loss"] for r in records}) == 3  # different inits and data orders
    cols = load_results(out)
    assert cols["loss"].tolist() == pytest.approx([sum(r["loss"] for r in records) / 3])


def test_a_nan_fells_only_its_model_of_the_pack(tmp_path: Path) -> None:
    train = {"batch_size": 16, "lr": [1e-2, 1e9], "grad_clip": 0.0, "warmup": 0.0, "evals": 2}
    records, _ = sweep(tmp_path, "nan", train=train)
    ok, bad = records
    assert ok["status"] == "ok" and math.isfinite(ok["loss"])
    assert bad["status"] == "diverged" and bad["diverged_at"] >= 1 and bad["loss"] is None


def corpus_entropy() -> float:
    return load_corpus(CORPUS, progress=False).entropy


WSD = {
    "models": [SHAPE],
    "tokens": [1.6e4, 3.2e4, 6.4e4],
    "train": {"batch_size": 16, "lr": 1e-2, "evals": 2, "schedule": "wsd", "decay": 0.2},
}


def test_wsd_column_costs_less_and_lands_near_the_cosine_grid(tmp_path: Path) -> None:
    wsd, _ = sweep(tmp_path, "wsd", **WSD)
    cosine, _ = sweep(tmp_path, "cos", **{**WSD, "train": {**WSD["train"], "schedule": "cosine"}})
    assert [r["D"] for r in wsd] == [r["D"] for r in cosine]
    steps = [r["steps"] for r in wsd]
    assert [r["branch_at"] for r in wsd] == [s - round(0.2 * s) for s in steps]
    trained = steps[-1] + sum(s - r["branch_at"] for s, r in zip(steps[:-1], wsd, strict=False))
    assert trained < 0.75 * sum(steps)  # 62 + 13 + 25 of 218 steps here
    for w, c in zip(wsd, cosine, strict=True):
        # Hägele et al.: a cooldown matches (or beats) a cosine run of the same length
        assert w["status"] == "ok" and corpus_entropy() - 0.02 < w["loss"] < 1.02 * c["loss"]
    assert wsd[0]["loss"] > wsd[1]["loss"] > wsd[2]["loss"]


def test_wsd_resumes_exactly_after_a_crash_between_branches(tmp_path: Path) -> None:
    corpus = load_corpus(CORPUS, progress=False)
    specs = [RunSpec(f"D{d}", ModelShape(**SHAPE), d, 0, 1e-2) for d in (16_000, 32_000, 64_000)]
    kwargs = {
        "context": 16,
        "train": TrainConfig(batch_size=16, schedule="wsd", decay=0.2, evals=2),
        "eval_cfg": EvalConfig(tokens=4096),
        "checkpoint_every": 0.0,
    }
    whole: dict[str, float] = {}
    train_wsd(specs, corpus, on_outcome=lambda s, o: whole.__setitem__(s.name, o.loss), **kwargs)

    class Crash(Exception):
        pass

    got: dict[str, float] = {}

    def crash_after_first(spec: RunSpec, outcome) -> None:
        got[spec.name] = outcome.loss
        raise Crash

    job = tmp_path / "job"
    with pytest.raises(Crash):
        train_wsd(specs, corpus, job_dir=job, on_outcome=crash_after_first, **kwargs)
    assert list(got) == ["D16000"]
    resumed: list[int] = []

    def collect(spec: RunSpec, outcome) -> None:
        got[spec.name] = outcome.loss
        resumed.append(outcome.resumed_at)

    train_wsd(specs, corpus, job_dir=job, finished=lambda s: s.name in got,
              on_outcome=collect, **kwargs)  # fmt: skip
    assert resumed[0] > 0  # restored from the trunk's checkpoint, not retrained
    assert got == pytest.approx(whole, abs=1e-5)


def test_early_stop_records_predictions_apart_then_finishes_them(tmp_path: Path) -> None:
    over = {"tokens": [1.0e5], "train": {"batch_size": 8, "lr": 1e-2, "evals": 2}}
    records, out = sweep(tmp_path, "early", early_stop=0.3, **over)
    (r,) = records
    assert r["status"] == "predicted" and r["predicted"] is True
    assert r["stopped_at"] == round(0.3 * r["steps"])
    assert r["loss"] < r["loss_at_stop"]  # the curve is still falling where it stopped
    assert fit_points(read_records(out))[0] == []  # never fitted as if measured
    assert load_results(out, include_predicted=True)["loss"].tolist() == [r["loss"]]
    # without the early stop, the same sweep trains the run on from where it stopped
    records, _ = sweep(tmp_path, "early", **over)
    (done,) = records
    assert done["status"] == "ok" and done["resumed_at"] == r["stopped_at"]
    assert not done["predicted"] and len(read_records(out)) == 1
