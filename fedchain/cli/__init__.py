"""The ``fedchain`` command line: one entry point, one sub-command group per role.

Every :class:`~fedchain.errors.FedchainError` raised below is printed as a
one-line readable message (no stack trace) and the command exits with status 1.
"""

from __future__ import annotations

import sys

import typer
from rich.markup import escape

from fedchain.cli import audit, console as console_cli, decryptor, governance, infra, models, plan, roles, simulate, stats
from fedchain.cli.common import console, err_console
from fedchain.errors import FedchainError

app = typer.Typer(
    name="fedchain",
    help=(
        "Blockchain-governed federated learning for hospitals.\n\n"
        "Members register datasets with access policies, vote on training proposals, "
        "and train one model together; every step is an event on chain."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)


def _register() -> None:
    infra.register(app)
    governance.register(app)
    roles.register(app)
    decryptor.register(app)
    audit.register(app)
    plan.register(app)
    console_cli.register(app)
    stats.register(app)
    models.register(app)
    simulate.register(app)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    try:
        # Without standalone mode click *returns* the code of a typer.Exit instead of exiting.
        code = app(args=argv, standalone_mode=False)
    except FedchainError as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
        return 1
    except typer.Exit as exc:  # raised by commands that end early on purpose
        return exc.exit_code
    except typer.Abort:
        err_console.print("aborted")
        return 130
    except KeyboardInterrupt:
        err_console.print("interrupted")
        return 130
    except Exception as exc:  # click usage errors and the like
        from typer._click.exceptions import ClickException  # vendored click

        if isinstance(exc, ClickException):
            exc.show()
            return exc.exit_code
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["app", "main", "console"]
