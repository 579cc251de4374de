"""Experiment tracking: a sweep run with --track tensorboard writes event files that TensorBoard's
own reader reads back as each run's curves, validation points and final numbers, and the laws
and figures of the fit; the same records go to W&B in offline mode, read back from its files."""

import json
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import event_accumulator
from wandb.proto import wandb_internal_pb2

from jaxscale.results import read_records
from jaxscale.tracking import open_tracker

CONFIG = """
name: tracked
corpus: synthetic:order=1,symbols=16,tokens=200000
context: 16
models: [{n_layer: 1, d_model: 16, n_head: 2}]  # one shape, 4 budgets: L(D) can be fitted
tokens: [2.0e3, 4.0e3, 8.0e3, 1.6e4]
train: {batch_size: 8, lr: 1.0e-2, evals: 2}
eval: {tokens: 2048}
"""


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory, run_cli: Callable[..., int]) -> Path:
    root = tmp_path_factory.mktemp("track")
    (root / "tracked.yaml").write_text(CONFIG)
    out = root / "out"
    args = ("sweep", str(root / "tracked.yaml"), "--out", str(out), "--quiet")
    assert run_cli(*args, "--track", "tensorboard") == 0
    return out


def metrics_of(out: Path, run: str) -> list[dict]:
    lines = (out / "runs" / run / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_tensorboard_event_files_hold_each_run_and_the_laws(tracked: Path) -> None:
    def read(name: str):
        acc = event_accumulator.EventAccumulator(
            str(tracked / "tensorboard" / name), size_guidance={"scalars": 0, "images": 0}
        )
        acc.Reload()
        return acc

    records = read_records(tracked)
    assert len(records) == 4
    for r in records:
        acc = read(r["run"])
        lines = metrics_of(tracked, r["run"])
        train = [(m["tokens"], m["loss"]) for m in lines if "loss" in m and "tokens" in m]
        got = [(e.step, e.value) for e in acc.Scalars("train/loss")]
        assert [t for t, _ in got] == [t for t, _ in train] and len(got) >= 10
        assert [v for _, v in got] == pytest.approx([v for _, v in train], rel=1e-6)
        val = [(e.step, e.value) for e in acc.Scalars("val/loss")]
        assert val == [(t, pytest.approx(v, rel=1e-6)) for t, v in r["curve"]]
        assert acc.Scalars("final/loss")[0].value == pytest.approx(r["loss"], rel=1e-6)
        assert "config/text_summary" in acc.Tags()["tensors"]
    laws = json.loads((tracked / "laws.json").read_text())["laws"]
    acc = read("tracked-laws")
    fitted = {key: law["params"] for key, law in laws.items()}
    assert fitted  # the fit wrote at least one law
    for key, params in fitted.items():
        for name, value in params.items():
            assert acc.Scalars(f"laws/{key}/{name}")[0].value == pytest.approx(value, rel=1e-6)
    figures = {p.stem for p in tracked.glob("*.png")}
    assert figures and {f"figures/{f}" for f in figures} <= set(acc.Tags()["images"])


def wandb_records(run_dir: Path) -> list:
    """The records of an offline W&B run, read from its ``.wandb`` file: a 7-byte header, then
    LevelDB-log records (crc32, length, type; 32 KiB blocks) of ``wandb_internal_pb2.Record``."""
    (path,) = run_dir.glob("run-*.wandb")
    data, pos, block, buf, out = path.read_bytes(), 7, 32768, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            out.append(record)
            buf = b""
    return out


def test_wandb_offline_runs_hold_the_same_records(
    tracked: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    tracker = open_tracker("wandb", tracked, "tracked")
    records = read_records(tracked)
    for r in records:
        tracker.log_run(r)
    tracker.log_laws()
    runs = sorted((tracked / "wandb").glob("offline-run-*"))
    assert len(runs) == len(records) + 1
    by_name = {}
    for run_dir in runs:
        recs = wandb_records(run_dir)
        (run,) = [x.run for x in recs if x.WhichOneof("record_type") == "run"]
        history = []
        for x in recs:
            if x.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in x.history.item}  # fmt: skip
                history.append(items)
        by_name[run.display_name] = history
    assert set(by_name) == {r["run"] for r in records} | {"tracked-laws"}
    for r in records:
        lines = metrics_of(tracked, r["run"])
        losses = [(h["tokens"], h["train/loss"]) for h in by_name[r["run"]] if "train/loss" in h]
        assert losses == [(m["tokens"], m["loss"]) for m in lines if "loss" in m and "tokens" in m]
        vals = [[h["tokens"], h["val/loss"]] for h in by_name[r["run"]] if "val/loss" in h]
        assert vals == r["curve"]
