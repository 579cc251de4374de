"""Model FLOPs utilisation of jaxscale's train step against a measured matmul peak.

The peak is what the step's devices actually reach on square matmuls in the step's compute
dtype (bfloat16 on GPUs by default), all of them at once, each on its own: not a datasheet
number. The step is the one a sweep runs for a single run (``jaxscale.bench.model_step``).
MFU = tokens/s x training FLOPs per token (``counting.flops_per_token_counted``: every matmul and
the attention products) / peak.

Example (a GPU; GPT-2 small, 124M parameters with its 50,257-token vocabulary):
    .venv/bin/python scripts/bench_mfu.py --model medium --vocab 50257 --context 1024 --batch 16
On CPU (checks the script, and gives the CPU's own MFU):
    .venv/bin/python scripts/bench_mfu.py --model tiny --vocab 256 --context 256 --batch 32
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxscale.backend import compute_dtype, configure
from jaxscale.bench import model_step
from jaxscale.cli.bench import parse_shape
from jaxscale.config import TrainConfig
from jaxscale.counting import flops_per_token_counted, total_params


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


def median_seconds(fn: Callable[[], None], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(n: int, dtype: str, devices: int) -> float:
    """FLOP/s of the first ``devices`` devices each multiplying its own n x n matrices at the
    same time, median of 20 (on CPU the cores then share nothing, as in a data-parallel step)."""
    sharding = NamedSharding(Mesh(np.asarray(jax.devices()[:devices]), ("d",)), PartitionSpec("d"))
    a, b = (
        jax.device_put(jax.random.normal(jax.random.key(i), (devices, n, n), dtype), sharding)
        for i in range(2)
    )
    matmul = jax.jit(jnp.matmul)
    return 2 * devices * n**3 / median_seconds(lambda: jax.block_until_ready(matmul(a, b)), 20)


def main() -> None:
    args = parse_args()
    configure()
    shape = parse_shape(args.model)
    cfg = TrainConfig(batch_size=args.batch, dtype=args.dtype)
    dtype = compute_dtype(args.dtype)
    one_step, devices, where = model_step(shape, args.vocab, args.context, cfg)
    n = args.matmul or (8192 if jax.default_backend() == "gpu" else 2048)
    peak = matmul_peak(n, dtype, devices)
    tokens_per_s = args.batch * args.context / median_seconds(one_step, args.steps)
    flops = flops_per_token_counted(shape, args.vocab, args.context)
    out = {
        "where": where,
        "model": shape.label,
        "params": total_params(shape, args.vocab, args.context),
        "batch": args.batch,
        "context": args.context,
        "dtype": dtype,
        "matmul_peak_tflops": peak / 1e12,
        "tokens_per_s": tokens_per_s,
        "model_tflops": tokens_per_s * flops / 1e12,
        "devices": devices,
        "mfu": tokens_per_s * flops / peak,
    }
    print(where)
    print(f"  {dtype} matmul peak ({n}^3 on {devices})   {peak / 1e12:8.2f} TFLOP/s")
    print(
        f"  {shape.label} ({out['params'] / 1e6:.0f}M), batch {args.batch} x {args.context}: "
        f"{tokens_per_s:,.0f} tok/s = {out['model_tflops']:.2f} TFLOP/s, MFU {out['mfu']:.1%}"
    )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
