"""Time the command line as a user meets it: whole processes, several runs each.

Interleaved run by run, so that a change in the machine's load hits them alike:

* ``python -c "import jax"``: the reference, what any command that computes must pay;
* for each jaxscale given (e.g. this checkout and an older one, to time a change):
  ``jaxscale --help``, and ``jaxscale fit`` of the Chinchilla replication's 240 points (Besiroglu
  et al. 2024: the 5 highest-loss points dropped, D = C/(6N)) with a cache directory of its own
  that starts empty, so its first fit compiles and fills JAX's persistent compilation cache and
  the later ones may reuse it.

    .venv/bin/python scripts/bench_cli.py [--runs 5] [--csv PATH] [--jaxscale [NAME=]COMMAND]...

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
        action="append",
        metavar="[NAME=]COMMAND",
        help="a jaxscale to time, split like a shell would; repeat it to time several side by "
        "side, e.g. before=\"env PYTHONPATH=/tmp/base python -c 'from jaxscale.cli import "
        "main; main()'\" (default: this venv's jaxscale)",
    )
    args = parser.parse_args()
    versions = {}
    for i, given in enumerate(args.jaxscale or [str(Path(sys.executable).with_name("jaxscale"))]):
        name, _, command = given.partition("=") if "=" in given.split()[0] else ("", "", given)
        versions[name or f"jaxscale{i if i else ''}"] = shlex.split(command)
    with tempfile.TemporaryDirectory() as tmp:
        table = write_points(args.csv, Path(tmp) / "points.csv")
        commands = {"python -c 'import jax'": ([sys.executable, "-c", "import jax"], None)}
        for name, argv in versions.items():
            cache = str(Path(tmp) / f"cache-{name}")  # each starts empty: its first fit compiles
            commands[f"{name} --help"] = ([*argv, "--help"], cache)
            commands[f"{name} fit (240 points)"] = ([*argv, "fit", str(table)], cache)
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in commands}
        for run in range(args.runs):
            for name, (argv, cache) in commands.items():
                env = {**os.environ, "JAX_PLATFORMS": "cpu"}
                env |= {"JAXSCALE_CACHE": cache} if cache else {}
                times[name].append(timed(argv, env))
                print(f"run {run + 1}: {name:<34} {times[name][-1]:6.2f} s", flush=True)
        load_after = os.getloadavg()
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}")
    reference = statistics.median(
        times["python -c 'import jax'"][1:] or times["python -c 'import jax'"]
    )
    for name, t in times.items():
        warm = statistics.median(t[1:] if len(t) > 1 else t)
        print(
            f"{name:<34} first {t[0]:6.2f} s, median of the rest {warm:6.2f} s "
            f"({warm / reference:.2f}x import jax)   [{', '.join(f'{x:.2f}' for x in t)}]"
        )


if __name__ == "__main__":
    main()
