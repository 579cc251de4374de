"""``jaxscale bench``: how much a vmapped pack of models gains over training them in turn."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from jaxscale.bench import bench_pack
from jaxscale.counting import PRESETS, ModelShape
from jaxscale.errors import UserError


def parse_shape(text: str) -> ModelShape:
    """A preset name (tiny, small, ...) or a label like ``L2-d64-h2``."""
    if text in PRESETS:
        return PRESETS[text]
    m = re.fullmatch(r"L(\d+)-d(\d+)-h(\d+)", text)
    if not m or int(m[2]) % int(m[3]) or min(map(int, m.groups())) < 1:
        raise UserError(
            f"--model: expected a preset ({', '.join(PRESETS)}) or L<layers>-d<width>-h<heads> "
            f"with heads dividing width, got {text!r}"
        )
    return ModelShape(int(m[1]), int(m[2]), int(m[3]))


@click.command()
@click.option(
    "--model",
    default="L2-d64-h2",
    show_default=True,
    help="Shape of every model: a preset or L<layers>-d<width>-h<heads>.",
)
@click.option(
    "--pack", type=click.IntRange(2), default=8, show_default=True, help="Models trained together."
)
@click.option("--batch", type=click.IntRange(1), default=16, show_default=True)
@click.option("--context", type=click.IntRange(2), default=128, show_default=True)
@click.option(
    "--steps",
    type=click.IntRange(3),
    default=30,
    show_default=True,
    help="Steps of each timed run (the first, compiling, is not counted).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the numbers to this JSON file.",
)
def bench(
    model: str, pack: int, batch: int, context: int, steps: int, json_out: Path | None
) -> None:
    """Aggregate tokens/s of a vmapped pack of models against the same runs one after another."""
    shape = parse_shape(model)
    r = bench_pack(shape, pack, batch_size=batch, context=context, steps=steps)
    click.echo(f"{shape.label}, batch {batch} x context {context}, {steps} steps per run")
    click.echo(
        f"  one after another  {r.single_tokens_per_s:>10,.0f} tok/s ({r.devices_single} devices)"
    )
    click.echo(
        f"  pack of {pack:<10} {r.pack_tokens_per_s:>10,.0f} tok/s "
        f"({r.devices_pack} devices)   {r.speedup:.2f}x"
    )
    if json_out:
        json_out.write_text(
            json.dumps(
                {
                    "shape": shape.label,
                    "pack": pack,
                    "batch": batch,
                    "context": context,
                    "steps": steps,
                    "single_tokens_per_s": r.single_tokens_per_s,
                    "pack_tokens_per_s": r.pack_tokens_per_s,
                    "speedup": r.speedup,
                },
                indent=1,
            )
            + "\n"
        )
