"""The law commands end to end through ``jaxscale.cli.main`` (fit, isoflop, plan, predict, ttc)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxscale import machine
from jaxscale.cli import main
from jaxscale.laws import Chinchilla, TestTime, compute_optimal, predict_loss
from jaxscale.results import write_records

TRUE = Chinchilla(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)


def run(argv, capsys):
    """Run the CLI; returns (exit status, stdout, stderr)."""
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def write_csv(path, header, rows):
    path.write_text(
        ",".join(header) + "\n" + "\n".join(",".join(f"{v:.8g}" for v in r) for r in rows) + "\n"
    )
    return path


@pytest.fixture
def ladder_csv(tmp_path):
    """N, C, loss (no D column) for 8 sizes x 6 token counts."""
    rng = np.random.default_rng(0)
    N = np.repeat(np.logspace(6.5, 9.5, 8), 6)
    D = N * np.tile(np.logspace(0, 2.5, 6), 8)
    loss = predict_loss(TRUE, N, D) * np.exp(rng.normal(0, 0.003, N.size))
    return write_csv(
        tmp_path / "ladder.csv", ["N", "C", "loss"], zip(N, 6 * N * D, loss, strict=True)
    )


def test_fit_csv_approach_3_json(ladder_csv, tmp_path, capsys):
    out_json = tmp_path / "fit.json"
    code, out, _ = run(
        ["fit", str(ladder_csv), "--bootstrap", "10", "--json", str(out_json)], capsys
    )
    assert code == 0 and "alpha" in out
    res = json.loads(out_json.read_text())
    assert res["approach"] == 3 and res["law"] == "chinchilla"
    assert set(res["params"]) == {"E", "A", "B", "alpha", "beta"}
    assert set(res["ci"]) == set(res["params"]) and res["n_points"] == 48
    assert res["objective"] > 0 and set(res["optimal"]) == {"a", "b", "G"}
    assert res["params"]["alpha"] == pytest.approx(0.35, abs=0.02)


def test_fit_csv_power_and_kaplan_with_holdout(ladder_csv, tmp_path, capsys):
    N = np.repeat(np.logspace(6.5, 9.5, 8), 6)
    D = np.tile(np.logspace(8, 11, 6), 8)
    grid = write_csv(
        tmp_path / "grid.csv", ["N", "D", "loss"], zip(N, D, predict_loss(TRUE, N, D), strict=True)
    )
    code, out, _ = run(["fit", str(grid), "--law", "power"], capsys)
    assert code == 0 and "L(N) = E + A/N^alpha over 8 points" in out
    out_json = tmp_path / "k.json"
    code, _, _ = run(
        ["fit", str(ladder_csv), "--law", "kaplan", "--holdout", "3", "--json", str(out_json)],
        capsys,
    )
    res = json.loads(out_json.read_text())
    assert code == 0 and res["form"] == "Kaplan" and res["holdout"]["n"] == 3


@pytest.fixture
def sweep_dir(tmp_path):
    """A sweep directory: an IsoFLOP set (3 budgets x 7 sizes) with training curves."""
    out = tmp_path / "sweep"
    records = []
    for c in (1e17, 1e18, 1e19):
        for n in compute_optimal(TRUE, c).N_opt * np.logspace(-0.75, 0.75, 7):
            d = c / (6 * n)
            tokens = d * np.array([0.25, 0.5, 1.0])
            curve = [[float(t), float(predict_loss(TRUE, n, t))] for t in tokens]
            records.append(
                {
                    "N": float(n),
                    "D": float(d),
                    "C": float(c),
                    "loss": curve[-1][1],
                    "status": "ok",
                    "curve": curve,
                }
            )
    records.append({"N": 1e6, "D": 1e6, "status": "diverged"})
    write_records(out / "results.jsonl", records)
    return out


def test_fit_sweep_dir_approaches_2_and_1(sweep_dir, tmp_path, capsys):
    out_json = tmp_path / "iso.json"
    code, out, _ = run(["fit", str(sweep_dir), "--approach", "2", "--json", str(out_json)], capsys)
    assert code == 0 and "IsoFLOP" in out
    res = json.loads(out_json.read_text())
    assert res["approach"] == 2 and res["a"] == pytest.approx(0.37 / 0.72, abs=0.03)
    assert len(res["budgets"]) == 3
    assert {"C", "N_opt", "D_opt", "loss_min"} <= set(res["budgets"][0])
    code, out, _ = run(["fit", str(sweep_dir), "--approach", "1"], capsys)
    assert code == 0 and "envelope" in out
    code, out, _ = run(["fit", str(sweep_dir), "--approach", "2", "--window", "5"], capsys)
    assert code == 0 and out.count(" 5/7 ") == 3 and "around its minimum" in out
    for args in (["--window", "2"], ["--approach", "3", "--window", "5"]):
        code, _, err = run(["fit", str(sweep_dir), *args], capsys)
        assert code == 2 and len(err.strip().splitlines()) <= 2 and "--window" in err


def test_isoflop_command(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(machine, "measured_flops_per_s", lambda *a: 1e12)
    out_json = tmp_path / "iso.json"
    code, out, _ = run(["isoflop", "--C", "1e18", "--json", str(out_json)], capsys)
    assert code == 0 and "IsoFLOP profile" in out and "est. time" in out
    res = json.loads(out_json.read_text())
    assert res["N_opt"] == pytest.approx(8.1e7, rel=0.02)
    assert res["D_opt"] == pytest.approx(2.1e9, rel=0.03) and res["loss"] > 0
    assert len(res["profile"]) == 9 and res["shapes"][0]["hours"] == pytest.approx(1e6 / 3600)


def test_plan_from_gpus(tmp_path, capsys):
    out_json = tmp_path / "plan.json"
    code, out, _ = run(
        [
            "plan",
            "--gpu",
            "H100",
            "--gpus",
            "8",
            "--hours",
            "720",
            "--price",
            "2",
            "--inference-tokens",
            "1e13",
            "--json",
            str(out_json),
        ],
        capsys,
    )
    assert code == 0 and "inference-aware" in out
    res = json.loads(out_json.read_text())
    assert res["gpu_hours"] == pytest.approx(5760) and res["cost"] == pytest.approx(11520)
    assert res["C"] == pytest.approx(989e12 * 0.4 * 8 * 720 * 3600)
    assert res["inference_optimal"]["N"] < res["optimal"]["N_opt"]
    code, out, _ = run(["plan", "--C", "1e21"], capsys)
    assert code == 0 and "compute-optimal" in out


def test_predict_point_and_models(tmp_path, capsys):
    code, out, _ = run(["predict", "--N", "70e9", "--D", "1.4e12"], capsys)
    assert code == 0 and "1.9366" in out
    out_json = tmp_path / "models.json"
    code, out, _ = run(["predict", "--json", str(out_json)], capsys)
    assert code == 0 and "LLaMA-3 70B" in out
    assert len(json.loads(out_json.read_text())["models"]) == 8


def test_ttc_power_and_coverage(tmp_path, capsys):
    rng = np.random.default_rng(0)
    N = np.repeat([1e8, 1e9, 1e10], 8)
    T = np.tile(np.logspace(0, 2, 8), 3)
    acc = np.minimum(np.asarray(TestTime(1e-3, 0.3)(N, T)) * np.exp(rng.normal(0, 0.005, 24)), 1)
    data = write_csv(tmp_path / "ttc.csv", ["N", "T", "accuracy"], zip(N, T, acc, strict=True))
    out_json = tmp_path / "ttc.json"
    code, out, _ = run(["ttc", str(data), "--json", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and "trade" in out
    assert res["beta"] == pytest.approx(0.3, abs=0.01) and res["r2"] > 0.99 and res["alpha"] > 0
    assert res["trade"]["T_factor"] == pytest.approx(10, rel=1e-6)
    k = np.logspace(0, 3, 10)
    cov = np.exp(-2.0 * k**-0.4)
    data = write_csv(tmp_path / "cov.csv", ["T", "accuracy"], zip(k, cov, strict=True))
    code, _, _ = run(["ttc", str(data), "--form", "coverage", "--json", str(out_json)], capsys)
    res = json.loads(out_json.read_text())
    assert code == 0 and res["a"] == pytest.approx(-2.0, abs=0.01) and res["r2"] > 0.999


def test_plot_option_draws_each_approach_and_the_test_time_law(
    ladder_csv, sweep_dir, tmp_path, capsys
):
    def drawn(argv: list[str], folder: str) -> set[str]:
        code, out, _ = run([*argv, "--plot", str(tmp_path / folder)], capsys)
        assert code == 0 and "figures:" in out
        return {p.name for p in (tmp_path / folder).iterdir() if p.stat().st_size > 0}

    assert {"loss_vs_n.png", "residuals.png"} <= drawn(["fit", str(ladder_csv)], "a3")
    assert {"isoflop.png", "frontier.png"} <= drawn(
        ["fit", str(sweep_dir), "--approach", "2"], "a2"
    )
    assert drawn(["fit", str(sweep_dir), "--approach", "1"], "a1") == {"frontier.png"}
    T = np.logspace(0, 2, 8)
    data = write_csv(tmp_path / "t.csv", ["T", "accuracy"], zip(T, 0.1 * T**0.3, strict=True))
    assert drawn(["ttc", str(data)], "ttc") == {"test_time.png"}


@pytest.mark.parametrize(
    "argv",
    [
        ["fit", "{csv}", "--loss-col", "val_loss"],
        ["predict", "--law", "gpt5"],
        ["isoflop", "--C", "1e18", "--law", "nope.json"],
        ["plan", "--gpu", "TPUv9", "--hours", "1"],
        ["plan"],
        ["fit", "{missing}"],
        ["ttc", "{csv}"],
    ],
)
def test_bad_input_exits_2_with_one_line(argv, ladder_csv, tmp_path, capsys):
    argv = [a.format(csv=ladder_csv, missing=tmp_path / "none.csv") for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 2
    assert err.startswith("jaxscale: error:") and err.count("\n") == 1, err


CLI = [sys.executable, "-c", "from jaxscale.cli import main; main()"]


@pytest.mark.parametrize(
    ("argv", "shown", "unused"),
    [
        (["--help"], ["fit ", "predict "], ("jax", "numpy", "matplotlib", "jaxscale.laws")),
        (["fit", "--help"], ["--best-per-point"], ("jax", "matplotlib", "jaxscale.laws")),
    ],
)
def test_help_imports_no_jax(argv, shown, unused):
    code = (
        f"import sys; from jaxscale.cli import main; main({argv!r}); "
        f"print([m for m in {unused!r} if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert all(s in done.stdout for s in shown)
    assert done.stdout.strip().endswith("[]"), done.stdout


def test_a_repeated_fit_loads_its_solver_from_the_compilation_cache(tmp_path):
    x = np.logspace(6, 9, 8)
    table = write_csv(
        tmp_path / "t.csv", ["N", "D", "loss"], ((n, 1e9, 2 + 50 / n**0.3) for n in x)
    )
    env = {**os.environ, "JAXSCALE_CACHE": str(tmp_path / "cache"), "JAX_LOG_COMPILES": "1"}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    runs = [
        subprocess.run([*CLI, "fit", str(table), "--law", "power"], env=env, capture_output=True,
                       text=True, check=True)
        for _ in range(2)
    ]  # fmt: skip
    hit = "Persistent compilation cache hit for 'jit_solve'"
    assert hit not in runs[0].stderr and hit in runs[1].stderr
    assert runs[0].stdout.splitlines()[-1] == runs[1].stdout.splitlines()[-1]  # the same fit
    (folder,) = (tmp_path / "cache" / "xla").iterdir()  # one folder per jax version and CPU
    assert re.fullmatch(rf"jax{re.escape(jax.__version__)}-[0-9a-f]{{16}}", folder.name)
