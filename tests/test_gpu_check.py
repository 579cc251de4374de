"""scripts/gpu_check.py, the one accelerator check, runs end to end at its CPU smoke sizes: one
process, every check measured, one JSON file with sane numbers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.slow
def test_gpu_check_cpu_smoke_measures_every_check(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    got = json.loads(out.read_text())
    checks = got["checks"]
    assert set(checks) == {"pack", "mfu", "dtype", "lag", "steps"}
    assert not any("error" in c for c in checks.values())
    assert checks["pack"]["pack"] == 8 and checks["pack"]["speedup"] > 0
    assert 0 < checks["mfu"]["mfu"] < 1 and checks["mfu"]["peak_flops_per_s"] > 0
    losses = checks["dtype"]["loss"]
    assert all(math.isfinite(v) and 0 < v < 6 for v in losses.values())
    assert abs(checks["dtype"]["relative_gap"]) < 0.05  # bf16 trains what float32 trains
    assert checks["lag"]["same_records"] is True
    assert "check  | result" in done.stdout  # the table
