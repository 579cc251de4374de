"""Data-constrained scaling (Muennighoff et al. 2023): the published law and its allocation,
recovery of known R_D*, R_N* from noisy data, the commands, and a sweep that repeats its corpus."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxscale.cli import main
from jaxscale.laws import (
    Chinchilla,
    DataConstrained,
    constrained_optimal,
    fit_data_constrained,
    load_law,
    predict_loss,
    x64,
)
from jaxscale.laws.constrained import effective
from jaxscale.results import read_records

PUBLISHED = load_law("muennighoff2023")
TRUE = DataConstrained(E=1.8, A=480.0, B=2100.0, alpha=0.35, beta=0.37, R_D_star=15.4, R_N_star=5.3)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    return code, capsys.readouterr().out


def test_the_published_law_reproduces_their_readme_example() -> None:
    with x64():
        # datablations README: scaling_law(6.34e9, 242e9, 25e9) and (8.67e9, 178e9, 25e9)
        assert float(PUBLISHED(6.34e9, 242e9, 25e9)) == pytest.approx(2.2256440889984477, abs=1e-9)
        assert float(PUBLISHED(8.67e9, 178e9, 25e9)) == pytest.approx(2.2269634075087867, abs=1e-9)


def test_it_is_a_pytree_law_that_jits_vmaps_and_differentiates() -> None:
    N, D, U = 3e9, 4e11, 2e10  # repeated data and more parameters than U justifies
    with x64():
        grad = jax.grad(lambda law: law(N, D, U))(PUBLISHED)
        assert isinstance(grad, DataConstrained)
        for name, g in grad.params.items():
            h = 1e-6 * abs(PUBLISHED.params[name])
            up, down = (PUBLISHED.params | {name: PUBLISHED.params[name] + s} for s in (h, -h))
            numeric = (DataConstrained(**up)(N, D, U) - DataConstrained(**down)(N, D, U)) / (2 * h)
            assert g == pytest.approx(float(numeric), rel=1e-5, abs=1e-12), name
        batch = jax.jit(jax.vmap(PUBLISHED))(
            jnp.array([N, 1e8]), jnp.array([D, 2e9]), jnp.array([U, 1e12])
        )
        assert batch[0] == pytest.approx(float(PUBLISHED(N, D, U)), rel=1e-12)


def test_with_data_to_spare_it_is_its_chinchilla_base_and_repeats_cost() -> None:
    base = PUBLISHED.base
    assert isinstance(base, Chinchilla)
    N, D = 1e8, 2e9  # N far below N_opt for 2e9 unique tokens
    fresh = predict_loss(PUBLISHED, N, D, 1e12)  # U above D counts as D: nothing repeats
    assert fresh == pytest.approx(float(predict_loss(base, N, D)), rel=1e-12)
    assert predict_loss(PUBLISHED, N, D) == pytest.approx(fresh, rel=1e-12)  # U defaults to D
    # four epochs cost little, sixty-four a lot (Muennighoff et al.'s headline)
    with x64():  # D' / D: what the repeated tokens are worth
        four, many = (float(effective(N, D, D / e, PUBLISHED)[1]) / D for e in (4, 64))
    assert 0.9 < four < 1 and many < 0.3
    assert predict_loss(PUBLISHED, N, D, D / 4) > fresh


def test_the_allocation_matches_their_readme_grid_search() -> None:
    # datablations README: optimal_allocation(8.67e9, 178e9, 25e9) -> 227B tokens, 9.1 epochs,
    # 6.8B parameters
    al = constrained_optimal(PUBLISHED, 6 * 8.67e9 * 178e9, 25e9)
    assert al.N_opt == pytest.approx(6.8e9, rel=0.01)
    assert al.D_opt == pytest.approx(227e9, rel=0.01)
    assert al.epochs == pytest.approx(9.1, abs=0.05)
    assert 6 * al.N_opt * al.D_opt == pytest.approx(al.C, rel=1e-12)
    assert al.loss < float(predict_loss(PUBLISHED, 8.67e9, 178e9, 25e9))


def noisy_ladder(seed: int) -> tuple[np.ndarray, ...]:
    """6 sizes x 7 epoch counts (1 to 64) at 2 corpus sizes from TRUE, 0.2% noise."""
    rng = np.random.default_rng(seed)
    U = np.repeat([1e8, 1e9], 42)
    N = np.tile(np.repeat(np.logspace(6, 8.5, 6), 7), 2)
    D = U * np.tile(2.0 ** np.arange(7), 12)
    loss = predict_loss(TRUE, N, D, U) * np.exp(rng.normal(0, 0.002, N.size))
    return N, D, U, loss


@pytest.mark.slow
def test_fit_recovers_known_repeat_constants_from_noisy_data() -> None:
    fit = fit_data_constrained(*noisy_ladder(0))
    assert fit.converged, fit.message
    assert fit.params["R_D_star"] == pytest.approx(15.4, rel=0.05)
    assert fit.params["R_N_star"] == pytest.approx(5.3, rel=0.08)
    assert fit.params["alpha"] == pytest.approx(0.35, abs=0.01)
    assert fit.params["beta"] == pytest.approx(0.37, abs=0.01)
    assert fit.params["E"] == pytest.approx(1.8, abs=0.03)
    # the truth lies within three standard errors
    for name in ("R_D_star", "R_N_star"):
        assert abs(fit.params[name] - TRUE.params[name]) < 3 * fit.stderr[name], name


def test_commands_predict_and_plan_with_the_published_law(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    argv = ["predict", "--law", "muennighoff2023", "--N", "6.34e9", "--D", "242e9", "--U", "25e9"]
    assert cli([*argv, "--json", str(out)], capsys)[0] == 0
    assert json.loads(out.read_text())["loss"] == pytest.approx(2.2256440889984477, abs=1e-9)
    argv = ["plan", "--C", "1e22", "--unique-tokens", "25e9", "--law", "muennighoff2023"]
    code, text = cli([*argv, "--json", str(out)], capsys)
    plan = json.loads(out.read_text())
    assert code == 0 and "epochs" in text
    assert 6 * plan["optimal"]["N_opt"] * plan["optimal"]["D_opt"] == pytest.approx(1e22)
    assert plan["optimal"]["epochs"] == pytest.approx(plan["optimal"]["D_opt"] / 25e9)
    assert plan["optimal"]["epochs"] > 1  # too few unique tokens for 1e22 FLOPs
    assert plan["unlimited_data"]["loss"] < plan["optimal"]["loss"]


def test_plan_with_chinchilla_says_when_its_data_would_repeat(tmp_path: Path, capsys) -> None:
    out = tmp_path / "out.json"
    code, text = cli(["plan", "--C", "1e22", "--unique-tokens", "1e11", "--json", str(out)], capsys)
    optimal = json.loads(out.read_text())["optimal"]
    assert code == 0 and optimal["epochs"] == pytest.approx(optimal["D_opt"] / 1e11)
    assert optimal["epochs"] > 1 and "D > U" in text and "--law muennighoff2023" in text
    code, text = cli(["plan", "--C", "1e22", "--unique-tokens", "1e13"], capsys)
    assert code == 0 and "D > U" not in text


def test_fit_command_fits_the_data_constrained_form_and_warns_chinchilla(tmp_path: Path, capsys):
    N, D, U, loss = noisy_ladder(1)
    table = tmp_path / "repeats.csv"
    columns = (c.tolist() for c in (N, D, U, loss))
    rows = (",".join(map(repr, row)) for row in zip(*columns, strict=True))
    table.write_text("params,tokens,unique_tokens,loss\n" + "\n".join(rows) + "\n")
    out = tmp_path / "fit.json"
    argv = ["fit", str(table), "--law", "data-constrained", "--json", str(out)]
    assert cli(argv, capsys)[0] == 0
    constrained = json.loads(out.read_text())
    assert constrained["form"] == "DataConstrained" and "U = 'unique_tokens'" in constrained["note"]
    assert constrained["params"]["R_D_star"] == pytest.approx(15.4, rel=0.05)
    with pytest.warns(UserWarning, match="72 rows train on more tokens than they have unique"):
        assert cli(["fit", str(table), "--json", str(out)], capsys)[0] == 0
    # the form that discounts repeats explains the data far better (AIC, same points)
    assert constrained["aic"] < json.loads(out.read_text())["aic"] - 100


CONFIG = """
name: repeats
corpus: text:{corpus}
tokenizer: bytes
context: 16
models:
  - {{n_layer: 1, d_model: 16, n_head: 2}}
  - {{n_layer: 1, d_model: 32, n_head: 2}}
  - {{n_layer: 1, d_model: 48, n_head: 2}}
tokens: [2.0e3, 4.0e3, 1.6e4, 6.4e4]
train: {{batch_size: 8, lr: 1.0e-2, evals: 1}}
eval: {{tokens: 512}}
"""


@pytest.mark.slow
def test_a_sweep_that_repeats_its_corpus_reports_the_data_constrained_fit(
    tmp_path: Path, run_cli
) -> None:
    rng = np.random.default_rng(0)
    words = [
        w.encode()
        for w in ["the", "law", "of", "data", "that", "repeats", "bends", "as", "epochs", "grow"]
    ]
    corpus = tmp_path / "small.txt"
    corpus.write_bytes(b"\n".join(b" ".join(rng.choice(words, 12)) for _ in range(60)) + b"\n")
    config = tmp_path / "repeats.yaml"
    config.write_text(CONFIG.format(corpus=corpus))
    out = tmp_path / "out"
    assert run_cli("sweep", str(config), "--out", str(out), "--quiet") == 0
    records = read_records(out)
    unique = {r["unique_tokens"] for r in records if r["epochs"] >= 1}
    assert len(unique) == 1  # the corpus: every run past it drew from all of it
    corpus_tokens = unique.pop()
    for r in records:
        assert r["unique_tokens"] == min(r["D"], corpus_tokens)
    assert max(r["epochs"] for r in records) > 10
    laws = json.loads((out / "laws.json").read_text())
    assert any("repeat their data" in w for w in laws["warnings"])
    entry = laws["data_constrained"]
    assert entry["repeated_points"] == sum(r["D"] > corpus_tokens for r in records)
    assert entry["law"]["form"] == "DataConstrained"
    assert all(math.isfinite(v) for v in entry["law"]["params"].values())
    report = (out / "report.md").read_text()
    assert "## Repeated data (Muennighoff et al. 2023)" in report
    assert "DataConstrained fit:" in report and "R_D*" in report
