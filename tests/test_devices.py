"""Every local device: one run split over 8 (forced) CPU devices, with its parameters replicated
or sharded FSDP-style, and a pack of models split over them, train the same models as on 1."""

import json
import os
import subprocess
import sys

import pytest

SCRIPT = """
import json
from jaxscale.backend import configure
configure("cpu")
import jax
from jaxscale.config import EvalConfig, RunSpec, TrainConfig
from jaxscale.counting import ModelShape
from jaxscale.data import load_corpus
from jaxscale.train import train_pack, train_run
corpus = load_corpus("synthetic:order=1,symbols=16,tokens=200000", progress=False)
kw = dict(context=32, train=TrainConfig(batch_size=16, lr=1e-2, evals=2),
          eval_cfg=EvalConfig(tokens=8192))
out = train_run(RunSpec("r", ModelShape(2, 32, 2), 20_000, 0), corpus, **kw)
fsdp = train_run(RunSpec("r", ModelShape(2, 32, 2), 20_000, 0), corpus, shard_params_above=0, **kw)
pack = train_pack([RunSpec(f"p{i}", ModelShape(1, 16, 2), 10_000, i, lr)
                   for i, lr in enumerate([3e-3, 1e-2, 3e-2, 1e-1])], corpus, **kw)
print(json.dumps({"devices": out.devices, "loss": out.loss, "curve": out.curve,
                  "fsdp": fsdp.loss, "pack": [o.loss for o in pack],
                  "pack_devices": pack[0].devices}))
"""


def run_with_devices(n: int) -> dict:
    # micro-batches of 64 tokens: small enough that these tiny batches split over every device
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
           "JAXSCALE_CPU_MICRO_TOKENS": "64"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_eight_devices_match_one() -> None:
    one, eight = run_with_devices(1), run_with_devices(8)
    assert (one["devices"], eight["devices"]) == (1, 8)
    assert eight["loss"] == pytest.approx(one["loss"], abs=2e-4)
    for (t1, l1), (t8, l8) in zip(one["curve"], eight["curve"], strict=True):
        assert t1 == t8 and l8 == pytest.approx(l1, abs=2e-4)
    # parameters and optimiser state sharded over the 8 devices: the same training
    assert eight["fsdp"] == pytest.approx(one["loss"], abs=2e-4)
    # a pack of 4 models over 8 devices: one model per 2-device group, each batch split in 2
    assert eight["pack_devices"] == 8
    assert eight["pack"] == pytest.approx(one["pack"], abs=2e-4)


def test_backend_metal_without_the_plugin_warns_once_and_runs_on_cpu(tmp_path) -> None:
    config = tmp_path / "m.yaml"
    config.write_text(
        "name: m\ncorpus: synthetic:order=1,symbols=16,tokens=100000\ncontext: 16\n"
        "models: [{n_layer: 1, d_model: 16, n_head: 2}]\ntokens: [8192]\n"
        "train: {batch_size: 8, evals: 1}\neval: {tokens: 2048}\n"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", "from jaxscale.cli import main; main()", "--backend", "metal",
         "sweep", str(config), "--out", str(out), "--quiet", "--no-fit"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("Metal backend failed its smoke test") == 1
    (record,) = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert record["backend"] == "cpu" and record["status"] == "ok"
