"""What the law commands share: checked number types, the common options, writing results.

Imports nothing heavy: a command's module is loaded to show its help, before anything computes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from jaxscale.errors import UserError


class Finite(click.FloatRange):
    """A finite number within optional bounds.

    click's ``FloatRange`` lets ``nan`` through (every comparison with NaN is false) and ``inf``
    whenever there is no upper bound; a budget, a size or a price must be a finite number.

    Example:
      >>> Finite(min=0, min_open=True).convert("1e18", None, None)
      1e+18
    """

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


POSITIVE = Finite(min=0, min_open=True)

JSON_OPTION = click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result as JSON to this path.",
)
PLOT_OPTION = click.option(
    "--plot",
    "plot_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Also draw the data with the fitted law into this directory (PNG).",
)
LAW_OPTION = click.option(
    "--law",
    "law_name",
    default="chinchilla",
    show_default=True,
    help="A built-in law (chinchilla, besiroglu2024, kaplan2020, muennighoff2023) or a laws.json "
    "path.",
)


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user gave option ``name`` (rather than its default applying)."""
    return ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)


def refuse_unused(ctx: click.Context, names: list[str], why: str) -> None:
    """A one-line error for options given where they would be ignored, e.g. ``--holdout`` with
    approach 2: an option that silently does nothing is a mistake the user should hear of."""
    for name in names:
        if given(ctx, name):
            flag = next(p.opts[0] for p in ctx.command.params if p.name == name)
            raise UserError(f"{flag} {why}")


def write_json(path: Path | None, payload: dict[str, Any]) -> None:
    """Write ``payload`` as JSON to ``path`` (nothing when None); an unwritable path is a user
    error, not a traceback."""
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None
    click.echo(f"wrote {path}")


def echo_figures(paths: list[Path]) -> None:
    """Say where the figures went."""
    click.echo("figures: " + ", ".join(str(p) for p in paths))
