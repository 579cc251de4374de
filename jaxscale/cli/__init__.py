"""The ``jaxscale`` command: thin click wrappers over the library.

Commands live by family: ``lab`` (sweep, report, bench) and ``laws`` (fit, isoflop, plan, predict,
ttc). A user's mistake (``jaxscale.errors.UserError`` or a click usage error) is printed as one
line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
import warnings

import click

from jaxscale.backend import BACKENDS, configure
from jaxscale.cli import lab, laws
from jaxscale.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jaxscale")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default=None,
    help="Where to compute (default $JAXSCALE_BACKEND or auto). metal is smoke-tested first "
    "and falls back to CPU with a warning.",
)
def cli(backend: str | None) -> None:
    """Train small-GPT ladders and fit scaling laws on one machine."""
    configure(backend)  # before any JAX computation: backends initialise lazily


for _command in (*lab.COMMANDS, *laws.COMMANDS):
    cli.add_command(_command)


def _one_line_warning(message: Warning | str, category: type[Warning], *args: object) -> str:
    return f"jaxscale: warning: {message}\n"


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; maps user errors to one line and exit status 2."""
    warnings.formatwarning = _one_line_warning  # warnings read as one line, not a source dump
    try:
        cli.main(args=argv, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("jaxscale: aborted", err=True)
        sys.exit(130)
    except click.UsageError as e:  # includes BadParameter and NoSuchOption
        click.echo(f"jaxscale: error: {e.format_message()}", err=True)
        sys.exit(2)
    except UserError as e:
        click.echo(f"jaxscale: error: {e}", err=True)
        sys.exit(2)
    except click.ClickException as e:
        click.echo(f"jaxscale: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
