"""The ``jaxscale`` command: thin click wrappers over the library.

Commands live by family: ``lab`` (sweep, report, seeds, extrapolate), ``bench``, ``fit`` (fit, ttc:
laws from tables) and ``plan`` (isoflop, plan, predict: decisions from laws). A family's module
is imported only when one of its commands runs or shows its help, and JAX only once a command
runs, so that ``jaxscale --help`` and ``jaxscale fit --help`` answer at once. A user's mistake
(``jaxscale.errors.UserError`` or a click usage error) is printed as one line on stderr with exit
status 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
import warnings

import click

from jaxscale.errors import UserError

# name -> (module that defines it, the line `jaxscale --help` shows). The line is here rather than
# read from the command so that listing the commands imports none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("jaxscale.cli.lab", "Train a config's unfinished runs, then fit and report."),
    "report": ("jaxscale.cli.lab", "Refit a sweep directory's laws and rewrite its report."),
    "seeds": ("jaxscale.cli.lab", "Whether several seeds of one ladder agree, and on what."),
    "extrapolate": ("jaxscale.cli.lab", "Predict a run's final loss from its first steps."),
    "bench": ("jaxscale.cli.bench", "A vmapped pack of models against the same runs in turn."),
    "fit": ("jaxscale.cli.fit", "Fit a scaling law to a table or a sweep directory."),
    "ttc": ("jaxscale.cli.fit", "Fit a test-time-compute law to a table of T and accuracy."),
    "isoflop": ("jaxscale.cli.plan", "The compute-optimal model at a budget and its IsoFLOP set."),
    "plan": ("jaxscale.cli.plan", "What a budget (FLOPs, or GPUs and hours) and a corpus buy."),
    "predict": ("jaxscale.cli.plan", "A law's loss at N and D (and U), or for famous models."),
}
# Commands that only fit or evaluate laws: their compiled solvers are kept in JAX's persistent
# compilation cache, so that a repeated fit skips the compile (training steps are not cached).
LAW_COMMANDS = frozenset(COMMANDS) - {"sweep", "bench"}


class LazyGroup(click.Group):
    """A group that imports a command's module only when that command is run (or its help
    shown); the group's own help lists the commands from :data:`COMMANDS` alone."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return getattr(importlib.import_module(COMMANDS[name][0]), name)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        # `jaxscale fit --help` only prints: the group need not set up JAX for it
        ctx.meta["jaxscale.help_only"] = any(a in ctx.help_option_names for a in rest)
        return name, command, rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, line) for name, (_, line) in COMMANDS.items()])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="jaxscale")
@click.option(
    "--backend",
    default=None,
    metavar="auto|cpu|cuda|metal",
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
    ctx.obj = {"backend": backend}  # what a sweep's remote jobs are asked to use
    if ctx.meta.get("jaxscale.help_only"):
        return
    from jaxscale.backend import configure  # imports JAX: only once a command runs
    from jaxscale.machine import use_compilation_cache

    configure(backend, distributed=distributed)  # before any JAX computation; checks --backend
    if ctx.invoked_subcommand in LAW_COMMANDS:
        use_compilation_cache()


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
