"""Steps a compiled call: a sweep's real training loop (``train_pack``) at 1 step a call against
16, on the quick ladder's shapes and batch (2 layers; configs/quick.yaml's windows a step and
context), one process on one core, alternating the two settings so both see the same load.
Prints tokens/s, the ratio and whether the two trained the same numbers, and names the
processor.

    taskset -c 0 .venv/bin/python scripts/bench_steps.py [--widths 16 24 48 80] [--steps 2000]

One core is how a sweep's local workers run (``jaxscale sweep --workers``): one pinned process
per core.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jaxscale.bench import bench_loop
from jaxscale.config import load_config
from jaxscale.counting import ModelShape
from jaxscale.machine import cpu_facts


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[16, 24, 48, 80])
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    quick = load_config(Path(__file__).resolve().parents[1] / "configs" / "quick.yaml")
    print(f"processor: {cpu_facts('model name')[0].split(':', 1)[-1].strip() or 'unknown'}")
    print("| shape | 1 step a call (tok/s) | 16 steps a call (tok/s) | ratio | same numbers |")
    print("|---|---|---|---|---|")
    for width in args.widths:
        shape = ModelShape(2, width, 2)
        r = bench_loop(shape, "JAXSCALE_STEPS_PER_CALL", (1, 16),
                       batch_size=quick.train.batch_size, context=quick.context,
                       steps=args.steps, repeats=args.repeats)  # fmt: skip
        one, many = r.tokens_per_s
        print(f"| {shape.label} | {one:,.0f} | {many:,.0f} | {r.speedup:.2f}x | {r.same_records} |")


if __name__ == "__main__":
    main()
