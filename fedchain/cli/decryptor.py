"""``fedchain decryptor``: the ``mode = "he"`` decryptor as its own process (see :mod:`fedchain.usecases.he_decryptor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fedchain.cli.common import console
from fedchain.cli.roles import ConfigOpt, LogJsonOpt, _run_role
from fedchain.usecases import he_decryptor

decryptor_app = typer.Typer(
    help="The he decryptor: holds a plan's CKKS secret key (encrypted on disk) and decrypts only each round's "
         "verified aggregate, for the coordinator, over HTTP.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(decryptor_app, name="decryptor")


@decryptor_app.command("keygen")
def keygen(config: ConfigOpt) -> None:
    """Create the CKKS key pair of the config's identity: write the secret key encrypted to \\[decryptor]
    key_file (never overwritten; password from \\[decryptor] password_file or password_env), pin the public
    context, and print the \\[he] lines to paste into a plan with mode = "he"."""
    got = he_decryptor.keygen(Path(config))
    console.print("# secret key written (encrypted) to the config's key_file; paste into the plan:", soft_wrap=True,
                  markup=False, highlight=False)
    console.print("[he]\n" + "".join(f'{k} = "{got[k]}"\n' for k in ("decryptor", "context_cid", "context_sha256")),
                  soft_wrap=True, markup=False, highlight=False, end="")


@decryptor_app.command("serve")
def serve(config: ConfigOpt, log_json: LogJsonOpt = None) -> None:
    """Answer decryption requests on \\[decryptor] listen (default 127.0.0.1:8610) until stopped.

    A request carries public data only; it is refused unless the plan is the proposal's on chain and
    names this decryptor, the round is open on chain, every input is a commitment on chain and no
    valid committed input is left out. One aggregate per round, remembered in \\[decryptor]
    answers_file across restarts (the same request again gets the same answer)."""
    _run_role(lambda: he_decryptor.serve(Path(config), log_json=log_json))
