"""Multi-host: two processes (one CPU device each) joined by jax.distributed run the same sweep
as one process with two devices, FSDP-sharded parameters and a pack split across the hosts
included; process 0 alone writes the results."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = """
name: hosts
corpus: synthetic:order=1,symbols=16,tokens=200000
context: 32
models: [{n_layer: 1, d_model: 16, n_head: 2}]
tokens: [2.0e4]
train: {batch_size: 16, lr: [3.0e-3, 1.0e-2], evals: 2}
eval: {tokens: 8192}
shard_params_above: 0
"""
CLI = [sys.executable, "-c", "from jaxscale.cli import main; main()"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sweep(config: Path, out: Path, devices: int, env: dict[str, str]) -> subprocess.Popen:
    # micro-batches of 64 tokens: small enough that these tiny batches split over every device
    env = {**os.environ, **env, "JAXSCALE_CPU_MICRO_TOKENS": "64",
           "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}  # fmt: skip
    args = ["--backend", "cpu", "sweep", str(config), "--out", str(out), "--quiet", "--no-fit"]
    return subprocess.Popen(
        [*CLI, *(["--distributed"] if "JAXSCALE_PROCESS_ID" in env else []), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def losses(out: Path) -> dict[str, tuple[float, int]]:
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    return {r["run"]: (r["loss"], r["devices"]) for r in records}


def test_two_hosts_train_what_one_host_with_two_devices_trains(tmp_path: Path) -> None:
    config = tmp_path / "hosts.yaml"
    config.write_text(CONFIG)
    one = sweep(config, tmp_path / "one", 2, {})
    assert one.wait(timeout=300) == 0, one.stderr.read()[-2000:]
    port = free_port()
    hosts = [
        sweep(
            config,
            tmp_path / "two",
            1,
            {
                "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                "JAXSCALE_NUM_PROCESSES": "2",
                "JAXSCALE_PROCESS_ID": str(i),
            },
        )
        for i in range(2)
    ]
    for proc in hosts:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()[-2000:]
    expected, got = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert got.keys() == expected.keys() and len(got) == 2
    for run, (loss, devices) in got.items():
        assert devices == 2 and loss == pytest.approx(expected[run][0], abs=2e-4)
