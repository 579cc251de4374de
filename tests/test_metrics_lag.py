"""Step metrics fetched a few steps behind the device (as on accelerators) against a host sync
per step (as on CPU): the same metrics.jsonl lines, results and divergence step either way."""

import math
from pathlib import Path

import pytest

from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.train import train_pack

CORPUS = "synthetic:order=1,symbols=16,tokens=200000"


def train(tmp_path: Path, lag: int, lrs: list[float], monkeypatch: pytest.MonkeyPatch) -> tuple:
    monkeypatch.setenv("JAXSCALE_METRICS_LAG", str(lag))
    corpus = load_corpus(CORPUS, progress=False)
    specs = [RunSpec(f"m{i}", ModelShape(1, 16, 2), 12_288, 0, lr) for i, lr in enumerate(lrs)]
    dirs = [tmp_path / f"lag{lag}" / s.name for s in specs]
    outcomes = train_pack(
        specs,
        corpus,
        context=16,
        train=TrainConfig(batch_size=8, grad_clip=0.0, warmup=0.0, evals=3),
        eval_cfg=EvalConfig(tokens=2048),
        run_dirs=dirs,
    )
    logs = [(d / "metrics.jsonl").read_text() for d in dirs]
    fields = [(o.loss, o.train_loss, o.curve, o.diverged_at, o.spikes, o.max_grad_norm)
              for o in outcomes]  # fmt: skip
    return fields, logs


@pytest.mark.parametrize("lrs", [[1e-2, 1e9], [1e9]], ids=["one-of-two-diverges", "all-diverge"])
def test_lagged_metrics_record_what_a_sync_per_step_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lrs: list[float]
) -> None:
    sync, sync_logs = train(tmp_path, 0, lrs, monkeypatch)
    lagged, lagged_logs = train(tmp_path, 5, lrs, monkeypatch)
    assert lagged_logs == sync_logs  # line for line, the divergence's included
    assert str(lagged) == str(sync)  # nan-safe equality of every field
    diverged = sync[-1]
    assert diverged[3] is not None and math.isnan(diverged[0])
    assert '"diverged": true' in sync_logs[-1].splitlines()[-1]
    if len(lrs) == 2:  # the other model trained on to its end
        assert sync[0][3] is None and math.isfinite(sync[0][0]) and len(sync[0][2]) == 3
