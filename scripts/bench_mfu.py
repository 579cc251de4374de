"""Model FLOPs utilisation of jaxscale's train step against a measured matmul peak.

The peak is what the step's devices actually reach on square matmuls in the step's compute
dtype (bfloat16 on GPUs by default), all of them at once, each on its own: not a datasheet
number. The step is the one a sweep runs for a single run (``jaxscale.bench.model_step``).
MFU = tokens/s x training FLOPs per token (``counting.flops_per_token_counted``: every matmul and
the attention products) / peak. ``scripts/gpu_check.py`` runs this for GPT-2 small among the
other accelerator checks.

Example (a GPU; GPT-2 small, 124M parameters with its 50,257-token vocabulary):
    .venv/bin/python scripts/bench_mfu.py --model medium --vocab 50257 --context 1024 --batch 16
On CPU (checks the script, and gives the CPU's own MFU):
    .venv/bin/python scripts/bench_mfu.py --model tiny --vocab 256 --context 256 --batch 32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from jaxscale.backend import configure
from jaxscale.bench import bench_mfu
from jaxscale.cli.bench import parse_shape


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="medium", help="a preset or L<layers>-d<width>-h<heads>")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--steps", type=int, default=10, help="timed steps (after compiling)")
    p.add_argument("--matmul", type=int, default=None, help="peak matmul size (GPU 8192, CPU 2048)")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    configure()
    shape = parse_shape(args.model)
    r = bench_mfu(
        shape,
        args.vocab,
        args.context,
        args.batch,
        dtype=args.dtype,
        steps=args.steps,
        matmul_n=args.matmul,
    )
    print(r.where)
    print(
        f"  {r.dtype} matmul peak ({r.matmul_n}^3 on {r.devices})   "
        f"{r.peak_flops_per_s / 1e12:8.2f} TFLOP/s"
    )
    print(
        f"  {shape.label} ({r.params / 1e6:.0f}M), batch {args.batch} x {args.context}: "
        f"{r.tokens_per_s:,.0f} tok/s = {r.model_flops_per_s / 1e12:.2f} TFLOP/s, MFU {r.mfu:.1%}"
    )
    if args.json:
        out = {**dataclasses.asdict(r), "shape": shape.label, "mfu": r.mfu}
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
