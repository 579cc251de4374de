"""Launchers: a tiny sweep run as submitit jobs (its local executor: subprocesses, no SLURM), as
Ray tasks (a local Ray instance) and on local workers (a process per core) ends with the same
losses as the in-process launcher; a
re-launch submits only the unfinished job; a failed job is named with its log, and what finished
is kept; a missing package or a misplaced option gets one line and exit status 2."""

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jaxscale.sweep
from jaxscale.config import SweepConfig, load_config
from jaxscale.jobs import Job
from jaxscale.launch import LaunchError, LaunchOptions, slurm_minutes
from jaxscale.results import read_records
from jaxscale.sweep import run_sweep

CONFIG = """
name: launch
corpus: synthetic:order=1,symbols=16,tokens=100000
context: 16
models:
  - {n_layer: 1, d_model: 8, n_head: 1}
  - {n_layer: 1, d_model: 16, n_head: 2}
tokens: [4.0e3, 8.0e3]
train: {batch_size: 8, lr: 1.0e-2, evals: 2}
eval: {tokens: 2048}
"""
CLI = [sys.executable, "-c", "from jaxscale.cli import main; main()"]
LOCAL = LaunchOptions(backend="cpu", submitit_cluster="local")


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, float]]]:
    """The config, and the losses of its sweep with the local launcher (in a fresh process, as
    the workers are). Workers run on CPU and share a compilation cache with that sweep, so that
    each starts in seconds rather than compiling again."""
    root = tmp_path_factory.mktemp("launch")
    config = root / "launch.yaml"
    config.write_text(CONFIG)
    mp = pytest.MonkeyPatch()
    mp.setenv("JAX_PLATFORMS", "cpu")
    mp.setenv("JAXSCALE_BACKEND", "cpu")
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(root / "jax-cache"))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    out = root / "local"
    cmd = [*CLI, "sweep", str(config), "--out", str(out), "--quiet", "--no-fit"]
    subprocess.run([*cmd, "--launcher", "local"], check=True, timeout=600)
    yield config, {r["run"]: r["loss"] for r in read_records(out)}
    mp.undo()


def count_launched(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the jobs every later sweep hands to its launcher."""
    launched: list[str] = []
    real = jaxscale.sweep.launch

    def spy(cfg: SweepConfig, jobs: list[Job], *args: Any, **kwargs: Any) -> None:
        launched.extend(job.name for job in jobs)
        real(cfg, jobs, *args, **kwargs)

    monkeypatch.setattr(jaxscale.sweep, "launch", spy)
    return launched


def forget(out: Path, run: str) -> None:
    """Make ``run`` unfinished: no result.json and no results.jsonl line (its checkpoints stay)."""
    (out / "runs" / run / "result.json").unlink()
    lines = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "results.jsonl").write_text("".join(x for x in lines if json.loads(x)["run"] != run))


def assert_same_losses(records: list[dict], expected: dict[str, float]) -> None:
    assert sorted(r["run"] for r in records) == sorted(expected)
    assert {r["status"] for r in records} == {"ok"}
    for r in records:
        assert r["loss"] == pytest.approx(expected[r["run"]], abs=1e-5), r["run"]


@pytest.mark.parametrize("launcher", ["submitit", "ray"])
def test_remote_launchers_match_local_and_relaunch_only_the_unfinished(
    launcher: str,
    reference: tuple[Path, dict[str, float]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, expected = reference
    cfg, out = load_config(config), tmp_path / launcher
    launched = count_launched(monkeypatch)

    records = run_sweep(cfg, out, progress=False, launcher=launcher, options=LOCAL)
    assert len(launched) == 4  # one job per run: one shape and budget each
    assert_same_losses(records, expected)
    assert_same_losses(read_records(out), expected)

    forget(out, "L1-d16-h2_D8k")
    launched.clear()
    records = run_sweep(cfg, out, progress=False, launcher=launcher, options=LOCAL)
    assert launched == ["L1-d16-h2_D8k"]
    assert_same_losses(read_records(out), expected)
    if launcher == "submitit":  # what submitit itself was given: 4 jobs, then 1
        assert len(list((out / "submitit").glob("*_submitted.pkl"))) == 5


def test_local_workers_match_one_process_and_relaunch_only_the_unfinished(
    reference: tuple[Path, dict[str, float]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, expected = reference
    cfg, out = load_config(config), tmp_path / "workers"
    launched = count_launched(monkeypatch)
    workers = LaunchOptions(backend="cpu", workers=2)

    records = run_sweep(cfg, out, progress=False, options=workers)
    assert len(launched) == 4
    assert_same_losses(records, expected)
    assert {r["local_devices"] for r in records} == {1}  # each worker holds one core, one device

    forget(out, "L1-d16-h2_D8k")
    launched.clear()
    run_sweep(cfg, out, progress=False, options=workers)
    assert launched == ["L1-d16-h2_D8k"]
    assert_same_losses(read_records(out), expected)


def test_a_failed_job_is_named_with_its_log_and_the_rest_is_kept(
    reference: tuple[Path, dict[str, float]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config, expected = reference
    out = tmp_path / "failed"
    shutil.copytree(config.parent / "local", out)
    forget(out, "L1-d8-h1_D8k")
    shutil.rmtree(out / "runs" / "L1-d8-h1_D8k")
    (out / "runs" / "L1-d8-h1_D8k").write_text("")  # its job cannot make its directory
    launched = count_launched(monkeypatch)

    with pytest.raises(LaunchError, match="1 of 1 jobs failed"):
        run_sweep(load_config(config), out, progress=False, launcher="submitit", options=LOCAL)
    assert launched == ["L1-d8-h1_D8k"]
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "failed:" in x]
    assert line.startswith("jaxscale: job L1-d8-h1_D8k failed: NotADirectoryError")
    log = Path(line.rsplit("(log: ", 1)[1].rstrip(")"))
    assert "NotADirectoryError" in log.read_text()
    assert sorted(r["run"] for r in read_records(out)) == sorted(set(expected) - {"L1-d8-h1_D8k"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--launcher", "ray", "--slurm-partition", "gpu"), "--slurm-partition applies to"),
        (("--gpus-per-run", "1"), "--gpus-per-run applies to --launcher submitit or ray"),
        (("--launcher", "submitit", "--slurm-time", "4:00"), "write minutes, H:MM:SS"),
        (("--launcher", "ray", "--workers", "2"), "--workers applies to --launcher local"),
        (("--workers", "0"), "'--workers': 0 is not in the range"),
    ],
)
def test_misplaced_cluster_options_get_one_line(
    args: tuple[str, ...],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    run_cli: Callable[..., int],
) -> None:
    config = tmp_path / "launch.yaml"
    config.write_text(CONFIG)
    assert run_cli("sweep", str(config), "--out", str(tmp_path / "out"), *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out" / "runs").exists()


def test_a_missing_launcher_package_says_how_to_install_it(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    run_cli: Callable[..., int],
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    config = tmp_path / "launch.yaml"
    config.write_text(CONFIG)
    assert run_cli("sweep", str(config), "--out", str(tmp_path / "out"), "--launcher", "ray") == 2
    assert 'pip install "jaxscale[cluster]"' in capsys.readouterr().err


def test_slurm_time_limits_read_as_minutes() -> None:
    assert [slurm_minutes(t) for t in ("90", "4:00:00", "1-12:00:00", "0:00:30")] == [
        90,
        240,
        2160,
        1,
    ]


def _children(pid: int) -> set[int]:
    """Worker processes (multiprocessing's spawn) whose parent is ``pid``, from /proc."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == pid and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_sweeps_workers_stop_training(tmp_path: Path) -> None:
    """SIGKILL the sweep process while its two workers train: they leave within seconds instead
    of training on for nobody (they did, before the workers watched their parent)."""
    config = tmp_path / "long.yaml"
    config.write_text(CONFIG.replace("tokens: [4.0e3, 8.0e3]", "tokens: [3.0e7]"))
    sweep = subprocess.Popen([*CLI, "sweep", str(config), "--out", str(tmp_path / "out"),
                              "--quiet", "--no-fit", "--workers", "2"])  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(sweep.pid)) < 2 or not list(tmp_path.glob("out/runs/*")):
            assert sweep.poll() is None and time.monotonic() < deadline, "no workers training"
            time.sleep(0.5)
    finally:
        sweep.kill()
        sweep.wait()
    deadline = time.monotonic() + 15
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not any(_alive(w) for w in workers)
