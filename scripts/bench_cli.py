"""Time the command line as a user meets it: whole processes, several runs each.

Three commands, interleaved run by run so that a change in the machine's load hits them alike:

* ``python -c "import jax"``: the reference, what any command that computes must pay;
* ``jaxscale --help``;
* ``jaxscale fit`` of the Chinchilla replication's 240 points (Besiroglu et al. 2024: the 5
  highest-loss points dropped, D = C/(6N)), with a fresh jaxscale cache, so the first fit
  compiles and fills JAX's persistent compilation cache and the later ones may reuse it.

    .venv/bin/python scripts/bench_cli.py [--runs 5] [--csv PATH] [--jaxscale PATH]

Prints each run's wall time, the medians, and the load (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_CSV = Path(__file__).resolve().parents[1] / "../shared/data/chinchilla_replication.csv"


def write_points(source: Path, out: Path) -> Path:
    """The replication's 240 fit points as ``N,D,loss`` (columns every jaxscale version reads)."""
    data = np.genfromtxt(source, delimiter=",", names=True)
    keep = np.sort(np.argsort(data["loss"])[:-5])
    N, C, loss = data["N"][keep], data["C"][keep], data["loss"][keep]
    rows = (f"{n:.9g},{c / (6 * n):.9g},{l:.9g}" for n, c, l in zip(N, C, loss, strict=True))
    out.write_text("N,D,loss\n" + "\n".join(rows) + "\n")
    return out


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one process; fails loudly if the command does."""
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[-400:]}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument(
        "--jaxscale",
        default=str(Path(sys.executable).with_name("jaxscale")),
        help="the command to time, split like a shell would (e.g. another checkout's: "
        "\"env PYTHONPATH=/tmp/base python -c 'from jaxscale.cli import main; main()'\")",
    )
    args = parser.parse_args()
    jaxscale = shlex.split(args.jaxscale)
    with tempfile.TemporaryDirectory() as tmp:
        table = write_points(args.csv, Path(tmp) / "points.csv")
        env = {**os.environ, "JAXSCALE_CACHE": str(Path(tmp) / "cache"), "JAX_PLATFORMS": "cpu"}
        commands = {
            "python -c 'import jax'": [sys.executable, "-c", "import jax"],
            "jaxscale --help": [*jaxscale, "--help"],
            "jaxscale fit (240 points)": [*jaxscale, "fit", str(table)],
        }
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(args.runs):
            for name, argv in commands.items():
                times[name].append(timed(argv, env))
                print(f"run {run + 1}: {name:<27} {times[name][-1]:6.2f} s", flush=True)
        load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}")
    for name, t in times.items():
        warm = t[1:] if len(t) > 1 else t
        print(
            f"{name:<27} first {t[0]:6.2f} s   median of the rest {statistics.median(warm):6.2f} s"
            f"   ({', '.join(f'{x:.2f}' for x in t)})"
        )


if __name__ == "__main__":
    main()
