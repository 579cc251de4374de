"""Everything that must be measured on an accelerator, in one process and one call.

The checks (sizes for a GPU; ``--cpu-smoke`` runs each at a tiny size on CPU, for CI):

- ``pack``: a pack of 8 tiny models (L4-d128-h4) in one compiled step against the same runs one
  after another, aggregate tokens/s (``jaxscale.bench.bench_pack``);
- ``mfu``: GPT-2 small (124M parameters, vocabulary 50,257, context 1024) train step's MFU
  against the bfloat16 matmul peak the device reaches (``bench_mfu``);
- ``dtype``: the final validation loss of one short run in bfloat16 against float32
  (``bench_dtypes``);
- ``lag``: a tiny model's training with a host sync per call against its metrics fetched 4
  calls late, tokens/s and whether the records are identical (``bench_loop``).
- ``steps``: the same training at one step a compiled call against 16 (``bench_loop``).

A check that fails is recorded with its error and the others still run; the exit status is 1 if
any failed. Prints a table and writes one JSON file. About 3-4 minutes on one H100/H200.

Example:
    .venv/bin/python scripts/gpu_check.py --json gpu_check.json
    .venv/bin/python scripts/gpu_check.py --cpu-smoke --json /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax

from jaxscale.backend import configure
from jaxscale.bench import bench_dtypes, bench_loop, bench_mfu, bench_pack
from jaxscale.counting import PRESETS, ModelShape
from jaxscale.machine import provenance

# Each check's arguments on an accelerator, and the tiny ones of --cpu-smoke.
SIZES: dict[str, dict[str, dict[str, Any]]] = {
    "gpu": {
        "pack": {"shape": PRESETS["tiny"], "pack": 8, "batch_size": 32, "context": 256,
                 "steps": 60},
        "mfu": {"shape": PRESETS["medium"], "vocab": 50257, "context": 1024, "batch": 16,
                "dtype": "bfloat16", "steps": 10},
        "dtype": {"shape": ModelShape(4, 256, 4), "batch_size": 32, "context": 256,
                  "tokens": 2_621_440},
        "lag": {"shape": PRESETS["tiny"], "values": (0, 4), "batch_size": 16, "context": 128,
                "steps": 200, "repeats": 3},
        "steps": {"shape": PRESETS["tiny"], "values": (1, 16), "batch_size": 16,
                  "context": 128, "steps": 200, "repeats": 3},
    },
    "cpu-smoke": {
        "pack": {"shape": ModelShape(1, 16, 2), "pack": 8, "batch_size": 8, "context": 32,
                 "steps": 8},
        "mfu": {"shape": ModelShape(2, 64, 2), "vocab": 256, "context": 64, "batch": 8,
                "dtype": "float32", "steps": 3, "matmul_n": 256},
        "dtype": {"shape": ModelShape(1, 32, 2), "batch_size": 8, "context": 32,
                  "tokens": 4_096},
        "lag": {"shape": ModelShape(1, 16, 2), "values": (0, 4), "batch_size": 8, "context": 32,
                "steps": 20, "repeats": 1},
        "steps": {"shape": ModelShape(1, 16, 2), "values": (1, 16), "batch_size": 8,
                  "context": 32, "steps": 40, "repeats": 1},
    },
}  # fmt: skip


def flops(per_s: float) -> str:
    """FLOP/s in TFLOP/s, or GFLOP/s below one TFLOP/s (the CPU smoke)."""
    return f"{per_s / 1e12:.1f} TFLOP/s" if per_s >= 1e12 else f"{per_s / 1e9:.1f} GFLOP/s"


def check_pack(**kw: Any) -> dict[str, Any]:
    r = bench_pack(**kw)
    return {
        "shape": r.shape.label,
        "pack": r.pack,
        "pack_tokens_per_s": r.pack_tokens_per_s,
        "single_tokens_per_s": r.single_tokens_per_s,
        "speedup": r.speedup,
        "summary": f"{r.speedup:.2f}x the runs in turn ({r.pack_tokens_per_s:,.0f} against "
        f"{r.single_tokens_per_s:,.0f} tok/s)",
    }


def check_mfu(shape: ModelShape, vocab: int, context: int, batch: int, **kw: Any) -> dict[str, Any]:
    r = bench_mfu(shape, vocab, context, batch, **kw)
    return {
        **{k: v for k, v in dataclasses.asdict(r).items() if k != "shape"},
        "shape": shape.label,
        "mfu": r.mfu,
        "summary": f"MFU {r.mfu:.1%}: {r.tokens_per_s:,.0f} tok/s = "
        f"{flops(r.model_flops_per_s)} of {flops(r.peak_flops_per_s)} peak "
        f"({r.params / 1e6:.3g}M params, {r.dtype})",
    }


def check_dtype(shape: ModelShape, **kw: Any) -> dict[str, Any]:
    losses = bench_dtypes(shape, **kw)
    gap = losses["bfloat16"] / losses["float32"] - 1
    return {
        "shape": shape.label,
        "tokens": kw["tokens"],
        "loss": losses,
        "relative_gap": gap,
        "summary": f"bfloat16 {losses['bfloat16']:.4f} against float32 "
        f"{losses['float32']:.4f} nats/token ({gap:+.2%})",
    }


def check_loop(setting: str, what: str) -> Callable[..., dict[str, Any]]:
    """A check of one training-loop setting (``bench_loop``): ``what`` says what its second
    value does, e.g. "with metrics {} calls late"."""

    def check(shape: ModelShape, values: tuple[int, int], **kw: Any) -> dict[str, Any]:
        r = bench_loop(shape, setting, values, **kw)
        return {
            "shape": shape.label,
            "setting": setting,
            "values": list(r.values),
            "tokens_per_s": list(r.tokens_per_s),
            "speedup": r.speedup,
            "same_records": r.same_records,
            "summary": f"{r.speedup:.2f}x {what.format(values[1])} ({r.tokens_per_s[1]:,.0f}"
            f" against {r.tokens_per_s[0]:,.0f} tok/s), records "
            + ("identical" if r.same_records else "DIFFERENT"),
        }

    return check


CHECKS: dict[str, Callable[..., dict[str, Any]]] = {
    "pack": check_pack,
    "mfu": check_mfu,
    "dtype": check_dtype,
    "lag": check_loop("JAXSCALE_METRICS_LAG", "with metrics {} calls late"),
    "steps": check_loop("JAXSCALE_STEPS_PER_CALL", "at {} steps a call"),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on CPU (CI)")
    p.add_argument("--json", type=Path, default=Path("gpu_check.json"), help="where to write")
    p.add_argument("--only", nargs="+", choices=list(CHECKS), help="run only these checks")
    args = p.parse_args()
    configure("cpu" if args.cpu_smoke else None)
    sizes = SIZES["cpu-smoke" if args.cpu_smoke else "gpu"]
    machine = provenance()
    print(f"{machine['device_kind']} x {machine['local_devices']} ({machine['backend']}), "
          f"jax {jax.__version__}", flush=True)  # fmt: skip
    t_start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in args.only or list(CHECKS):
        t0 = time.perf_counter()
        try:
            results[name] = CHECKS[name](**dict(sizes[name]))
        except Exception as e:  # one failed check must not lose the others' numbers
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
        results[name]["wall_s"] = time.perf_counter() - t0
        line = results[name].get("summary") or results[name]["error"]
        print(f"  {name:<6} {line}  [{results[name]['wall_s']:.0f} s]", flush=True)
    out = {
        "mode": "cpu-smoke" if args.cpu_smoke else "accelerator",
        "machine": machine,
        "checks": results,
        "wall_s": time.perf_counter() - t_start,
    }
    args.json.write_text(json.dumps(out, indent=1, default=str) + "\n")
    print(f"\n{'check':<6} | result\n{'-' * 6}-|-{'-' * 70}")
    for name, r in results.items():
        print(f"{name:<6} | {r.get('summary') or 'FAILED: ' + r['error']}")
    print(f"\n{out['wall_s']:.0f} s in all; wrote {args.json}")
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
