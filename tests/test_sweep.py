"""The core lab end to end, through the real CLI: a tiny ladder trains, fits and reports; a re-run
skips finished runs; bad input gets one line and exit status 2 and loses nothing."""

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import jaxscale
from jaxscale.results import load_results, read_records
from jaxscale.sweep import sweep_lock

TINY = """
name: tiny
corpus: stdlib
tokenizer: bytes
context: 32
models:
  - {n_layer: 1, d_model: 8, n_head: 1}
  - {n_layer: 1, d_model: 16, n_head: 2}
  - {n_layer: 2, d_model: 32, n_head: 2}
  - {n_layer: 2, d_model: 64, n_head: 4}
tokens: [2.5e4, 5.0e4, 1.0e5, 2.0e5]
train: {batch_size: 16, lr: 1.0e-2, evals: 2}
eval: {tokens: 2.0e4}
"""

REQUIRED = (
    "run",
    "n_layer",
    "d_model",
    "n_head",
    "context",
    "N",
    "N_total",
    "D",
    "C",
    "C_counted",
    "loss",
    "bpb",
    "train_loss",
    "tokens_per_s",
    "wall_s",
    "seed",
    "corpus",
    "corpus_fingerprint",
    "tokenizer",
    "backend",
    "jax_version",
    "status",
)


@pytest.fixture(scope="module")
def sweep_dir(
    tmp_path_factory: pytest.TempPathFactory, run_cli: Callable[..., int]
) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sweep")
    config = root / "tiny.yaml"
    config.write_text(TINY)
    out = root / "out"
    assert run_cli("sweep", str(config), "--out", str(out), "--quiet") == 0
    return config, out


def test_sweep_writes_one_complete_line_per_run(sweep_dir: tuple[Path, Path]) -> None:
    _, out = sweep_dir
    records = read_records(out)
    assert len(records) == 16
    assert all(key in r for r in records for key in REQUIRED)
    assert {r["status"] for r in records} == {"ok"}
    assert len({r["run"] for r in records}) == 16
    r = records[0]
    assert r["C"] == pytest.approx(6 * r["N"] * r["D"])
    assert r["C_counted"] > r["C"]  # attention and the head, uncounted by 6N
    assert r["D"] == r["steps"] * 16 * 32
    assert r["bpb"] == pytest.approx(r["loss"] / np.log(2))  # one byte per token


def test_loss_falls_with_n_and_with_d(sweep_dir: tuple[Path, Path]) -> None:
    cols = load_results(sweep_dir[1])
    N, D, loss = cols["N"], cols["D"], cols["loss"]
    at_d = D.max() == D
    by_n = loss[at_d][np.argsort(N[at_d])]
    at_n = N.max() == N
    by_d = loss[at_n][np.argsort(D[at_n])]
    assert by_n[-1] < by_n[0] - 0.05
    assert by_d[-1] < by_d[0] - 0.05


def test_laws_plots_and_report(sweep_dir: tuple[Path, Path]) -> None:
    _, out = sweep_dir
    for name in ("laws.json", "report.md", "loss_vs_n.png", "loss_vs_d.png"):
        assert (out / name).stat().st_size > 0
    saved = json.loads((out / "laws.json").read_text())
    assert {"L_N", "L_D", "L_ND"} <= set(saved["laws"])
    law = jaxscale.load_law(out / "laws.json")  # the Chinchilla-form L(N, D) by default
    cols = load_results(out)
    predicted = np.asarray(law(cols["N"], cols["D"]))
    assert np.mean(np.abs(predicted - cols["loss"]) / cols["loss"]) < 0.05


def test_rerun_skips_finished_runs(
    sweep_dir: tuple[Path, Path], capsys, run_cli: Callable[..., int]
) -> None:
    config, out = sweep_dir
    before = (out / "results.jsonl").read_bytes()
    assert run_cli("sweep", str(config), "--out", str(out), "--quiet") == 0
    assert (out / "results.jsonl").read_bytes() == before
    assert "L_ND" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "train.lrr=1"], "unknown key 'train.lrr'"),
        (["--set", "models=[{n_layer: 2, d_model: 30, n_head: 4}]"], "must divide d_model"),
        (["--set", "train.lr=5e-3"], "different setup"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_loses_nothing(
    sweep_dir: tuple[Path, Path], capsys, args: list[str], message: str, run_cli: Callable[..., int]
) -> None:
    config, out = sweep_dir
    before = (out / "results.jsonl").read_bytes()
    assert run_cli("sweep", str(config), "--out", str(out), *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert (out / "results.jsonl").read_bytes() == before


def test_missing_config_and_running_sweep_are_refused(
    sweep_dir: tuple[Path, Path], capsys, run_cli: Callable[..., int]
) -> None:
    config, out = sweep_dir
    assert run_cli("sweep", str(out / "nope.yaml")) == 2
    assert "not found" in capsys.readouterr().err
    assert (
        run_cli(
            "sweep",
            str(config),
            "--out",
            str(out.parent / "other"),
            "--set",
            "corpus=text:/no/such/place",
        )
        == 2
    )
    assert "/no/such/place" in capsys.readouterr().err
    with sweep_lock(out):
        assert run_cli("sweep", str(config), "--out", str(out), "--quiet") == 2
    assert "another sweep" in capsys.readouterr().err


def test_isoflop_run_trains_the_shapes_around_n_opt_at_that_budget(
    tmp_path: Path, run_cli: Callable[..., int]
) -> None:
    config = tmp_path / "base.yaml"
    config.write_text(
        "name: base\ncorpus: synthetic:order=1,symbols=16,tokens=300000\ncontext: 16\n"
        "models: [tiny]\ntokens: [1]\ntrain: {batch_size: 8, evals: 1}\neval: {tokens: 2048}\n"
    )
    out, summary = tmp_path / "iso", tmp_path / "iso.json"
    args = ["isoflop", "--C", "2e9", "--run", "--config", str(config), "--out", str(out)]
    assert run_cli(*args, "--json", str(summary)) == 0
    n_opt = json.loads(summary.read_text())["N_opt"]
    records = read_records(out)
    assert len(records) == 4
    sizes = sorted(r["N"] for r in records)
    assert sizes[0] < n_opt < sizes[-1]  # the shapes straddle the optimum
    for r in records:  # every run spends the budget: C = 6ND, up to whole steps of 128 tokens
        assert r["C"] == pytest.approx(2e9, rel=0.02)


# A ladder with a known answer: an order-1 Markov chain over 16 symbols (exact entropy rate
# 1.7745 nats/token). Its widest models hold the whole transition table, so the runs approach
# the floor and the fitted E must find it.
TRUTH = """
name: truth
corpus: synthetic:order=1,symbols=16,tokens=2000000
tokenizer: bytes
context: 16
models:
  - {n_layer: 1, d_model: 4, n_head: 1}
  - {n_layer: 1, d_model: 8, n_head: 2}
  - {n_layer: 1, d_model: 16, n_head: 2}
  - {n_layer: 1, d_model: 24, n_head: 2}
tokens: [5.0e4, 1.0e5, 2.0e5, 4.0e5]
train: {batch_size: 16, lr: 8.0e-3, lr_ref_width: 32, lr_width_power: 0.5, warmup_per_param: 1,
        beta2: 0.99, evals: 1}
eval: {tokens: 1.0e5}
"""


def test_the_fitted_floor_of_a_synthetic_ladder_is_its_exact_entropy(
    tmp_path: Path, run_cli: Callable[..., int]
) -> None:
    config = tmp_path / "truth.yaml"
    config.write_text(TRUTH)
    out = tmp_path / "out"
    assert run_cli("sweep", str(config), "--out", str(out), "--quiet") == 0
    truth = json.loads((out / "laws.json").read_text())["truth"]
    assert truth["entropy"] == pytest.approx(1.7745, abs=1e-4)
    assert abs(truth["E"] - truth["entropy"]) <= 0.05 * truth["entropy"], truth
    assert truth["E_ci"][0] <= truth["E"] <= truth["E_ci"][1]
