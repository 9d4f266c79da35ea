"""``fedchain console``: the governance console in the browser (see :mod:`fedchain.console`)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from fedchain.cli.common import DevOpt, HomeOpt, IdentityOpt, connect, console, load_identity_from_options, \
    resolve_home
from fedchain.cli.governance import friendly
from fedchain.console import ConsoleState, serve
from fedchain.console.server import DEFAULT_PORT


def register(app: typer.Typer) -> None:
    app.command("console")(console_command)


@friendly
def console_command(
    home: HomeOpt = None,
    identity: IdentityOpt = None,
    dev: DevOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on (default: this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = DEFAULT_PORT,
    read_only: Annotated[bool, typer.Option("--read-only", help="Offer no action, even to a member.")] = False,
) -> None:
    """Serve the governance console: read proposals in plain words, vote, finalize, edit policies, follow rounds.

    The keystore is unlocked here and stays in this process; the browser logs in
    once with the token printed below. Without --identity/--dev, or for a
    non-member, the console is read-only.
    """
    me = load_identity_from_options(identity, dev) if identity is not None or dev is not None else None
    s = connect(home)
    state = ConsoleState(s.chain, s.fed.deployment, s.config.store, me, home=resolve_home(home), read_only=read_only)
    serve(state, host=host, port=port, say=lambda line: console.print(line, soft_wrap=True, highlight=False, markup=False))
