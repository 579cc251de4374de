"""Early-stop extrapolation on a real run's training curve."""

from pathlib import Path

import pytest

from jaxscale.cli import main
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.errors import UserError
from jaxscale.extrapolate import extrapolate_run
from jaxscale.train import train_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    corpus = load_corpus("synthetic:order=1,symbols=16,tokens=600000", progress=False)
    out = tmp_path_factory.mktemp("run") / "r"
    train_run(
        RunSpec("r", ModelShape(1, 32, 2), 400_000, 0), corpus, context=32,
        train=TrainConfig(batch_size=16, lr=3e-3, schedule="constant", evals=2),
        eval_cfg=EvalConfig(tokens=4096), run_dir=out,
    )  # fmt: skip
    return out


def test_the_more_of_the_curve_it_sees_the_closer_the_prediction(run_dir: Path) -> None:
    early, late = extrapolate_run(run_dir, 0.2), extrapolate_run(run_dir, 0.8)
    assert early.actual is not None and early.actual == late.actual
    assert early.tokens == round(400_000 / 512) * 512  # whole steps of 16 x 32 tokens
    assert abs(late.relative_error) < 0.03
    assert abs(late.relative_error) < abs(early.relative_error)


def test_cli_reports_the_error_and_refuses_bad_input(run_dir: Path, capsys) -> None:
    main(["extrapolate", str(run_dir), "--fraction", "0.5"])
    assert "error" in capsys.readouterr().out
    with pytest.raises(UserError, match="fraction"):
        extrapolate_run(run_dir, 1.5)
    with pytest.raises(UserError, match="not a run directory"):
        extrapolate_run(run_dir.parent, 0.2)
