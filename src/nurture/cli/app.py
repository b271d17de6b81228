"""The ``nurture`` command: sub-commands are registered here from their own modules."""

from __future__ import annotations

import logging
import sys
from datetime import datetime

import typer

from nurture.clock import SYSTEM_CLOCK, Clock
from nurture.errors import NurtureError

app = typer.Typer(
    name="nurture",
    help="Code-first nurture campaigns: check, preview, simulate and run them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)



clock: Clock = SYSTEM_CLOCK
"""The commands' clock: a command reads it through :func:`read_clock` and passes that time on."""


def read_clock() -> datetime:
    """The time now, on the commands' clock."""
    return clock()


def _register(command: str | None = None) -> None:
    """Attach the command modules (each one defines ``register(app)``): only the one that defines ``command`` when
    it is a known command name, else all of them."""
    from nurture.cli import commands

    if app.registered_callback is None:
        # a callback makes the root a group whatever is registered: with only the invoked command's module
        # registered, a lone command (``event``, ``report``) would otherwise become the root and take its own name
        # as an argument
        app.callback()(_root)
    for module in commands.modules_for(command):
        module.register(app)


def _root() -> None:
    pass  # no docstring: it would become the root's help where the app has none of its own


def _command_of(args: list[str]) -> str | None:
    """The command a command line names: its first argument when that is not an option (the root has none but
    ``--help``)."""
    return args[0] if args and not args[0].startswith("-") else None


REVIEW_EXIT_COMMANDS = frozenset({"plan"})
"""Commands whose exit code 2 means "live leads are concerned": their command-line usage errors exit 1 instead of
click's 2, so a pipeline never takes a typo for a plan to review."""


def _usage_exit_code(exc: Exception, args: list[str]) -> int:
    """click's exit code of a usage error, but 1 for the commands where 2 means something else."""
    code = int(getattr(exc, "exit_code", 2))
    command = next((arg for arg in args if not arg.startswith("-")), None)
    return 1 if code == 2 and command in REVIEW_EXIT_COMMANDS else code


def _is_usage_error(exc: Exception) -> bool:
    """Whether ``exc`` is a command-line usage error (click's, or the copy of click that typer vendors)."""
    import click

    kinds: list[type] = [click.ClickException]
    try:
        from typer._click.exceptions import ClickException as VendoredClickException

        kinds.append(VendoredClickException)
    except ImportError:  # a typer that uses click itself
        pass
    return isinstance(exc, tuple(kinds))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: user errors print ``error: ...`` and exit 1 (``-v`` shows the traceback)."""
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in args or "--verbose" in args
    args = [a for a in args if a not in ("-v", "--verbose")]
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _register(_command_of(args))
    try:
        # Without standalone mode click returns (not raises) the code of typer.Exit: pass it on.
        code = app(args=args, prog_name="nurture", standalone_mode=False)
    except NurtureError as exc:
        if verbose:
            raise
        typer.echo(f"error: {exc}", err=True)
        cause = exc.__cause__
        while cause is not None:
            typer.echo(f"  caused by: {cause}", err=True)
            cause = cause.__cause__
        raise SystemExit(1) from None
    except typer.Exit as exc:
        raise SystemExit(exc.exit_code) from None
    except typer.Abort:
        typer.echo("aborted", err=True)
        raise SystemExit(1) from None
    except Exception as exc:  # usage errors arrive here in standalone_mode=False
        if _is_usage_error(exc):
            exc.show()  # type: ignore[attr-defined]
            raise SystemExit(_usage_exit_code(exc, args)) from None
        raise
    if isinstance(code, int) and code != 0:
        raise SystemExit(code)
