"""Shared CLI plumbing: consoles, the --home / --identity / --dev options, connecting."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from fedchain import identity as ident
from fedchain.config import read_password
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.errors import ConfigError
from fedchain.ipfs import open_store
from fedchain.network import NetworkConfig, default_home

console = Console()
err_console = Console(stderr=True)

HomeOpt = Annotated[
    Optional[Path],
    typer.Option("--home", help="Network folder written by 'chain up' (default: $FEDCHAIN_HOME or ./.fedchain)."),
]
IdentityOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--identity", "-i",
        help="Encrypted keystore of the acting member (password from $FEDCHAIN_PASSWORD or a prompt).",
    ),
]
DevOpt = Annotated[
    Optional[int],
    typer.Option("--dev", help="DEV ONLY: act as anvil's well-known dev account N (public keys, never for real data)."),
]


def resolve_home(home: Optional[Path]) -> Path:
    return home if home is not None else default_home()


def load_identity_from_options(identity: Optional[Path], dev: Optional[int]):
    """Return the acting :class:`fedchain.identity.Identity` from --identity or --dev."""

    if identity is not None and dev is not None:
        raise ConfigError("give either --identity or --dev, not both")
    if identity is not None:  # $FEDCHAIN_PASSWORD, else a prompt on a terminal (never without one)
        return ident.load_identity(identity, read_password(str(identity)))
    if dev is not None:
        err_console.print(f"[yellow]DEV ONLY:[/] acting as well-known dev account {dev}")
        return ident.dev_identity(dev)
    raise ConfigError("say who acts: --identity KEYSTORE (or --dev N on a local dev network)")


@dataclass
class Session:
    """A connected network: config, chain, the deployed façade and the content store."""

    home: Path
    config: NetworkConfig
    chain: object
    fed: object

    def store(self):
        return open_store(self.config.store)


def connect(home: Optional[Path]) -> Session:
    """Connect to the network described in ``<home>/network.json``."""

    home = resolve_home(home)
    config = NetworkConfig.load(home)
    chain = Chain.connect(config.chain_url)
    deployment = Deployment.load(Path(config.deployment_file))
    return Session(home=home, config=config, chain=chain, fed=chain.attach(deployment))
