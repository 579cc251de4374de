"""Real tables in: other column names, NaN rows, filters, the best row per point, JSON lines,
sweep directories and the table shipped with the package, through ``jaxscale fit``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import jaxscale
from jaxscale.cli import main
from jaxscale.laws import Chinchilla, fit_chinchilla, predict_loss
from jaxscale.laws.points import scaling_points
from jaxscale.results import write_records
from jaxscale.tables import read_table

TRUE = Chinchilla(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37)
EXAMPLE = Path(jaxscale.__file__).parent / "examples" / "chinchilla_replication.csv"


def ladder(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """6 sizes x 5 token counts from TRUE with 0.3% multiplicative noise."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.logspace(6.5, 9.5, 6), 5)
    D = N * np.tile(np.logspace(0, 2.5, 5), 6)
    return N, D, predict_loss(TRUE, N, D) * np.exp(rng.normal(0, 0.003, N.size))


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_fit_reads_other_names_leaves_out_a_nan_row_and_says_what_it_did(tmp_path, capsys):
    N, D, loss = ladder()
    lines = ["params,train_tokens,val_loss,lr,model"]
    for i, (n, d, l) in enumerate(zip(N, D, loss, strict=True)):
        shown = "nan" if i == 7 else f"{l:.6f}"  # a diverged run
        lines.append(f"{n:.6g},{d:.6g},{shown},3e-3,m{i}")
        lines.append(f"{n:.6g},{d:.6g},{l + 0.2:.6f},1e-2,m{i}")  # another lr, to filter out
    table = tmp_path / "runs.csv"
    table.write_text("\n".join(lines) + "\n")
    out_json = tmp_path / "fit.json"
    dropped = r"left out 1 of 30 rows whose loss \('val_loss'\).*: line 16"
    with pytest.warns(UserWarning, match=dropped):
        code, out, _ = cli(
            ["fit", str(table), "--where", "lr==3e-3", "--json", str(out_json)], capsys
        )
    assert code == 0
    assert "29 rows; N = 'params' (convention not stated" in out
    assert "D = 'train_tokens', loss = 'val_loss'" in out
    fit = json.loads(out_json.read_text())
    assert fit["n_points"] == 29 and "val_loss" in fit["note"]
    assert fit["params"]["alpha"] == pytest.approx(0.35, abs=0.02)
    assert fit["params"]["beta"] == pytest.approx(0.37, abs=0.02)
    assert fit["params"]["E"] == pytest.approx(1.8, abs=0.05)


def test_best_per_point_keeps_the_lowest_loss_of_each_n_and_d(tmp_path, capsys):
    # 29 points, as in the test above, so that this fit reuses its compiled solver
    N, D, loss = (column[np.arange(30) != 7].tolist() for column in ladder(1))
    rows = [f"{n!r},{6 * n * d!r},{l + extra!r}"
            for extra in (0.3, 0.0, 0.1) for n, d, l in zip(N, D, loss, strict=True)]  # fmt: skip
    table = tmp_path / "sweep.csv"
    table.write_text("N_total,flops,loss\n" + "\n".join(rows) + "\n")
    out_json = tmp_path / "fit.json"
    code, out, _ = cli(["fit", str(table), "--best-per-point", "--json", str(out_json)], capsys)
    assert code == 0
    assert "the lowest loss of each (N, D): 29 of 87 rows" in out
    assert "N = 'N_total' (all parameters, embeddings included" in out
    assert "D = C/(6N) with C = 'flops'" in out
    fit = json.loads(out_json.read_text())
    alone = fit_chinchilla(N, D, loss).params  # the best rows, fitted by themselves
    assert fit["n_points"] == 29
    assert fit["params"] == pytest.approx(alone, rel=1e-4)


def test_json_lines_a_json_list_and_a_csv_with_comments_read_alike(tmp_path):
    N, D, loss = ladder(2)
    rows = [{"non_embedding_params": n, "tokens": d, "eval_loss": l, "tag": "a"}
            for n, d, l in zip(N.tolist(), D.tolist(), loss.tolist(), strict=True)]  # fmt: skip
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n\n" for r in rows))
    (tmp_path / "b.json").write_text(json.dumps(rows))
    csv = ["# exported by hand", "non_embedding_params, tokens, eval_loss, tag"]
    csv += [f"{r['non_embedding_params']!r},{r['tokens']!r},{r['eval_loss']!r},a" for r in rows]
    (tmp_path / "c.csv").write_text("\ufeff" + "\n".join(csv) + "\n")  # with a byte-order mark
    read = [scaling_points(read_table(tmp_path / f), {}) for f in ("a.jsonl", "b.json", "c.csv")]
    for points in read:
        assert "non-embedding parameters: Kaplan's convention" in points.note
        for key, want in (("N", N), ("D", D), ("loss", loss), ("C", 6 * N * D)):
            np.testing.assert_allclose(points.columns[key], want, rtol=1e-12)


def test_where_on_a_sweep_selects_runs_before_the_best_lr_is_chosen(tmp_path):
    records = [
        {"run": f"r{n:g}_lr{lr:g}", "N": n, "D": 1e9, "lr": lr, "status": "ok",
         "loss": 3.0 + (0.1 if lr == 1e-3 else 0.0) - n / 1e9, "epochs": 2.0}
        for n in (1e6, 1e7, 1e8) for lr in (1e-3, 3e-3)
    ]  # fmt: skip
    records.append({"run": "x", "N": 1e9, "D": 1e9, "lr": 3e-3, "status": "diverged", "loss": None})
    write_records(tmp_path / "results.jsonl", records)
    best = scaling_points(read_table(tmp_path), {})
    assert len(best.columns["N"]) == 3 and "best learning rate per (N, D)" in best.note
    np.testing.assert_allclose(best.columns["loss"], 3.0 - np.array([1e6, 1e7, 1e8]) / 1e9)
    slow = scaling_points(read_table(tmp_path, ["lr==1e-3"]), {})
    np.testing.assert_allclose(slow.columns["loss"], 3.1 - np.array([1e6, 1e7, 1e8]) / 1e9)
    # records from before unique_tokens was recorded: U = D / epochs
    np.testing.assert_allclose(slow.columns["U"], 0.5e9)
    assert "non-embedding parameters" in slow.note


def test_the_shipped_table_reproduces_the_chinchilla_replication(tmp_path, capsys):
    """The README's first fit: Besiroglu et al.'s 240 points give their refit."""
    out_json = tmp_path / "fit.json"
    code, out, _ = cli(
        ["fit", str(EXAMPLE), "--where", "loss<3.44", "--json", str(out_json)], capsys
    )
    assert code == 0 and "240 rows; N = 'total_params' (all parameters" in out
    p = json.loads(out_json.read_text())["params"]
    # Besiroglu et al. 2024: E = 1.817, A = 482.01, B = 2085.43, α = 0.3478, β = 0.3658
    assert p["E"] == pytest.approx(1.817, abs=0.02)
    assert p["alpha"] == pytest.approx(0.3478, abs=0.005)
    assert p["beta"] == pytest.approx(0.3658, abs=0.005)
    assert np.log(p["A"]) == pytest.approx(np.log(482.01), abs=0.1)
    assert np.log(p["B"]) == pytest.approx(np.log(2085.43), abs=0.1)
