"""Throughput of jaxscale's train step on CPU next to the nanoGPT-style PyTorch reference.

The JAX step is the one a sweep runs for a single run (``jaxscale.train.make_pack_steps`` on a
pack of one GPT from ``jaxscale.model.init_model``, micro-batched as sweeps do, one step a call
where a sweep runs 16: ``scripts/bench_steps.py`` measures that); the reference is
``../shared/bench/torch_cpu_gpt.py`` (eager and ``torch.compile``), run in its own Python (a
separate venv with torch) as a subprocess. Each repeat times the JAX step and then the
reference back to back, so that both see the same machine load; the printed numbers are medians
over the repeats, and each repeat is itself the median of its timed steps.

Each repeat also prints the 1-minute load average before it. Read ratios from unloaded repeats
only: under contention torch's OpenMP threads slow down far more than XLA's (measured: JAX 2x
ahead of eager on repeats sharing the 2 cores with a test suite, 0.7x on quiet ones).

The JAX step runs as ``train_run`` runs it: ``jaxscale.backend.configure`` exposes one XLA host
device per core and the batch is split over them (``--devices 1`` times a single device).

The reference hard-codes d_model 128, 4 heads, context 256, batch 32 and vocabulary 256 (only
its layer count is an argument): for any other shape only the JAX step is timed.

Example:
    .venv/bin/python scripts/bench_cpu.py                       # the issue's shape, 3 repeats
    .venv/bin/python scripts/bench_cpu.py --layers 2 --d-model 64 --heads 2 --context 128
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from jaxscale.backend import configure
from jaxscale.bench import model_step
from jaxscale.config import TrainConfig
from jaxscale.counting import ModelShape

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REFERENCE = REPO.parent / "shared" / "bench" / "torch_cpu_gpt.py"
DEFAULT_TORCH_PYTHON = Path("/tmp/torchenv/bin/python")
# The shape torch_cpu_gpt.py hard-codes: (d_model, n_head, context, batch, vocab).
REFERENCE_SHAPE = (128, 4, 256, 32, 256)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d-model", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--vocab", type=int, default=256)
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--devices", type=int, default=None, help="CPU devices (default: one a core)")
    p.add_argument("--steps", type=int, default=12, help="timed steps per repeat (>= 12)")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps after compiling")
    p.add_argument("--repeats", type=int, default=3, help="JAX-then-torch measurements")
    p.add_argument(
        "--torch-python",
        type=Path,
        default=DEFAULT_TORCH_PYTHON if DEFAULT_TORCH_PYTHON.exists() else None,
        help="a Python with torch installed (default /tmp/torchenv/bin/python if it exists)",
    )
    p.add_argument("--reference", type=Path, default=DEFAULT_REFERENCE)
    args = p.parse_args()
    if args.steps < 12:
        p.error("--steps must be at least 12")
    return args


def make_jax_step(args: argparse.Namespace) -> Callable[[], None]:
    """Build, compile and warm up the JAX step; return a closure running one blocking step."""
    cfg = TrainConfig(batch_size=args.batch, dtype=args.dtype)
    shape = ModelShape(args.layers, args.d_model, args.heads)
    t0 = time.perf_counter()
    one_step, _, where = model_step(shape, args.vocab, args.context, cfg)
    print(f"{where}, first step (compile) {time.perf_counter() - t0:.1f}s", flush=True)
    for _ in range(args.warmup):
        one_step()
    return one_step


def time_jax(one_step: Callable[[], None], steps: int, tokens_per_step: int) -> float:
    """Tokens/s of the median of ``steps`` blocking steps."""
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        one_step()
        times.append(time.perf_counter() - t0)
    return tokens_per_step / statistics.median(times)


def run_torch(args: argparse.Namespace) -> dict[str, float]:
    """Run the reference once; return its tokens/s by mode ("eager", "compile")."""
    proc = subprocess.run(
        [str(args.torch_python), str(args.reference), str(args.layers)],
        capture_output=True,
        text=True,
        check=False,
    )
    found = re.findall(r"torch (eager|compile) .*tok/s=(\d+)", proc.stdout)
    if not found:
        print(f"torch reference failed (rc {proc.returncode}): {proc.stderr[-500:]}", flush=True)
    for line in proc.stdout.splitlines():
        if line.startswith("compile failed"):
            print(f"torch: {line}", flush=True)
    return {mode: float(tok_s) for mode, tok_s in found}


def main() -> None:
    args = parse_args()
    if args.devices:
        os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"
    configure("cpu")
    torch_ok = args.torch_python is not None and args.reference.exists()
    shape = (args.d_model, args.heads, args.context, args.batch, args.vocab)
    if args.torch_python is None:
        print("torch: no --torch-python and no /tmp/torchenv: timing JAX only", flush=True)
    elif not args.reference.exists():
        print(f"torch: no reference at {args.reference}: timing JAX only", flush=True)
    elif shape != REFERENCE_SHAPE or args.dtype != "float32":
        print(
            "torch: the reference only varies --layers (d 128, 4 heads, context 256, batch 32, "
            "vocab 256, float32): timing JAX only",
            flush=True,
        )
        torch_ok = False

    one_step = make_jax_step(args)
    tokens_per_step = args.batch * args.context
    jax_tok_s: list[float] = []
    torch_tok_s: dict[str, list[float]] = {}
    for repeat in range(1, args.repeats + 1):
        load = os.getloadavg()[0]
        jax_tok_s.append(time_jax(one_step, args.steps, tokens_per_step))
        line = f"repeat {repeat} (load {load:.1f}): jax {jax_tok_s[-1]:.0f} tok/s"
        if torch_ok:
            for mode, tok_s in run_torch(args).items():
                torch_tok_s.setdefault(mode, []).append(tok_s)
                line += f", torch {mode} {tok_s:.0f}"
        print(line, flush=True)

    jax_med = statistics.median(jax_tok_s)
    label = (
        f"L{args.layers}-d{args.d_model}-h{args.heads} context {args.context} batch {args.batch}"
    )
    print(f"\n{label}: medians over {args.repeats} repeats of {args.steps} steps")
    print(f"  jax            {jax_med:8.0f} tok/s")
    for mode, values in torch_tok_s.items():
        # The ratio pairs each repeat's JAX and torch numbers (same machine load), then medians.
        ratio = statistics.median(j / t for j, t in zip(jax_tok_s, values, strict=False))
        print(f"  torch {mode:8s} {statistics.median(values):8.0f} tok/s   jax/torch {ratio:.2f}")


if __name__ == "__main__":
    sys.exit(main())
