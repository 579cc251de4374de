"""The ``jaxscale`` command: thin click wrappers over the library.

Commands live by family: ``lab`` (sweep, report, extrapolate), ``bench``, and ``laws`` (fit,
isoflop, plan, predict, ttc). A user's mistake (``jaxscale.errors.UserError`` or a click usage
error) is printed as one line on stderr with exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
import warnings

import click

from jaxscale.backend import BACKENDS, configure
from jaxscale.cli import bench, lab, laws
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
@click.option(
    "--distributed",
    is_flag=True,
    default=None,
    help="This process is one of a multi-host run: join the others with "
    "jax.distributed.initialize() (SLURM and Open MPI are detected). Default "
    "$JAXSCALE_DISTRIBUTED=1.",
)
@click.pass_context
def cli(ctx: click.Context, backend: str | None, distributed: bool | None) -> None:
    """Train small-GPT ladders and fit scaling laws on one machine."""
    configure(backend, distributed=distributed)  # before any JAX computation
    ctx.obj = {"backend": backend}  # what a sweep's remote jobs are asked to use


for _command in (*lab.COMMANDS, *bench.COMMANDS, *laws.COMMANDS):
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
