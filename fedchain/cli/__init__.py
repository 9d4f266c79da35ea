"""The ``fedchain`` command line: one entry point, one sub-command group per role.

Every :class:`~fedchain.errors.FedchainError` raised below is printed as a
one-line readable message (no stack trace) and the command exits with status 1.
"""

from __future__ import annotations

import importlib
import sys

import typer
from rich.markup import escape
from typer.core import TyperGroup

from fedchain import allocator
from fedchain.cli.common import console, err_console
from fedchain.errors import FedchainError

# Top-level command -> (module under fedchain.cli that registers it, the one-line help shown by
# 'fedchain --help'). A command's module is imported only when that command runs: importing every
# module (torch, web3, matplotlib, TenSEAL, ...) took ~10 s before even '--help' printed.
# tests/test_cli_startup.py checks this table against the commands the modules register.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("demo", "Hospitals train one model on the embedded chain + store; prints a summary and writes an audit report."),
    "console": ("console", "Serve the governance console: read proposals in plain words, vote, finalize, edit policies, follow rounds."),
    "simulate": ("simulate", "Many hospitals in one process with real transactions; prints per-round times and the final accuracy."),
    "contracts": ("infra", "Compile the Solidity contracts into committed artifacts."),
    "chain": ("infra", "Run a local chain (anvil) with the fedchain contracts deployed."),
    "ipfs": ("infra", "Run a local IPFS daemon (js-ipfs, Kubo RPC API) for a multi-process network."),
    "identity": ("infra", "Create and inspect member identities (encrypted keystores)."),
    "member": ("governance", "Consortium membership: list, admit or remove by vote."),
    "dataset": ("governance", "Register datasets and manage their access policies."),
    "proposal": ("governance", "Submit training proposals, vote, finalize."),
    "round": ("governance", "Inspect and drive training rounds by hand (the coordinator does this in 'coordinator run')."),
    "node": ("roles", "Hospital node: check policy, train locally, seal and commit updates."),
    "coordinator": ("roles", "Coordinator: open approved rounds, verify and aggregate updates, publish models."),
    "decryptor": ("decryptor", "The he decryptor: holds a plan's CKKS secret key (encrypted on disk) and decrypts only "
                               "each round's verified aggregate, for the coordinator, over HTTP."),
    "audit": ("audit", "Export the audit trail, replay every round bit for bit, report."),
    "plan": ("plan", "Write, check and read training plans (offline: never touches the chain)."),
    "model": ("models", "The trained models: list them, pull one (verified against the chain), evaluate it on a CSV, "
                        "describe it in a model card."),
}
# Modules that add commands to other modules' groups ('dataset moments', 'plan standardize'),
# registered once, before the groups they extend are built.
EXTENDS: dict[str, tuple[str, ...]] = {"governance": ("stats",), "plan": ("stats",)}
_extended: set[str] = set()
_built: dict[str, dict] = {}


def load_module_commands(module: str) -> dict:
    """The click commands one CLI module registers, by top-level name (imports it on first use)."""
    if module not in _built:
        holder = typer.Typer(add_completion=False, rich_markup_mode="rich", pretty_exceptions_enable=False)
        holder.callback()(lambda: None)  # always a group, even for a module with a single command
        importlib.import_module(f"fedchain.cli.{module}").register(holder)
        for extra in EXTENDS.get(module, ()):
            if extra not in _extended:
                importlib.import_module(f"fedchain.cli.{extra}").register(holder)
                _extended.add(extra)
        _built[module] = dict(typer.main.get_command(holder).commands)
    return _built[module]


class LazyGroup(TyperGroup):
    """The root group: lists every command from :data:`COMMANDS`, imports a command's module on use."""

    _listing = False

    def list_commands(self, ctx) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx, cmd_name: str):
        if cmd_name not in COMMANDS:
            return None
        module, short = COMMANDS[cmd_name]
        if self._listing and module not in _built:
            return typer.core.TyperCommand(cmd_name, help=short)  # for the root --help table only
        return load_module_commands(module)[cmd_name]

    def format_help(self, ctx, formatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="fedchain",
    cls=LazyGroup,
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


# No command is registered up front; a callback is what makes Typer build the root as a group
# (of class LazyGroup). Its docstring is not shown: the app's help above is.
@app.callback()
def _root() -> None:
    """Blockchain-governed federated learning for hospitals."""


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point; returns the process exit status."""
    allocator.tune()  # before any command allocates (see fedchain.allocator)
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
