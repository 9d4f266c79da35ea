"""Infrastructure commands: compile contracts, run a local chain and IPFS daemon, identities."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from fedchain.cli.common import HomeOpt, console, err_console, resolve_home
from fedchain.errors import ConfigError
from fedchain.network import NetworkConfig

contracts_app = typer.Typer(help="Compile the Solidity contracts into committed artifacts.", no_args_is_help=True)
chain_app = typer.Typer(help="Run a local chain (anvil) with the fedchain contracts deployed.", no_args_is_help=True)
ipfs_app = typer.Typer(help="Run a local IPFS daemon (js-ipfs, Kubo RPC API) for a multi-process network.", no_args_is_help=True)
identity_app = typer.Typer(help="Create and inspect member identities (encrypted keystores).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(contracts_app, name="contracts")
    app.add_typer(chain_app, name="chain")
    app.add_typer(ipfs_app, name="ipfs")
    app.add_typer(identity_app, name="identity")


# --- contracts ---------------------------------------------------------------

@contracts_app.command("build")
def contracts_build(
    out: Annotated[Optional[Path], typer.Option(help="Artifact folder (default: contracts/artifacts).")] = None,
) -> None:
    """Compile contracts/src with solc 0.8.28 (native, else solc-js) and write the artifacts."""
    from contracts import build

    written = build.build(out_dir=out) if out is not None else build.build()
    for name, path in sorted(written.items()):
        console.print(f"  {name:<20} {path}")
    console.print(f"[green]compiled {len(written)} contracts[/]")


# --- chain -------------------------------------------------------------------

def _founders_from_options(founders_file: Optional[Path], dev_founders: int):
    from contracts.bindings import FounderSpec
    from fedchain.identity import dev_identity

    if founders_file is not None:
        try:
            entries = json.loads(founders_file.read_text())
            return [
                FounderSpec(name=e["name"], address=e["address"], x25519_pub=bytes.fromhex(e["x25519"].removeprefix("0x")))
                for e in entries
            ]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"{founders_file}: expected a JSON list of {{name, address, x25519}} "
                f"(as printed by 'fedchain identity show --json'): {exc}"
            ) from exc
    if dev_founders < 1:
        raise ConfigError("a consortium needs founders: --founders FILE or --dev-founders N")
    err_console.print(f"[yellow]DEV ONLY:[/] founders are dev accounts 0..{dev_founders - 1}")
    out = []
    for i in range(dev_founders):
        ident = dev_identity(i)
        out.append(FounderSpec(name=ident.name, address=ident.address, x25519_pub=ident.x25519_public))
    return out


@chain_app.command("up")
def chain_up(
    home: HomeOpt = None,
    port: Annotated[int, typer.Option(help="Port for anvil on 127.0.0.1.")] = 8545,
    founders: Annotated[Optional[Path], typer.Option(help="JSON list of founding members {name, address, x25519}.")] = None,
    dev_founders: Annotated[int, typer.Option(help="DEV ONLY: use dev accounts 0..N-1 as founders.")] = 0,
    coordinator: Annotated[Optional[str], typer.Option(help="Coordinator address (default: dev account 9).")] = None,
    voting_period: Annotated[int, typer.Option(help="Voting period in blocks.")] = 10,
    quorum_bps: Annotated[int, typer.Option(help="Quorum: share of eligible members that must vote, in basis points.")] = 5000,
    approval_bps: Annotated[int, typer.Option(help="Approval: share of yes among yes+no, in basis points.")] = 5001,
    store: Annotated[str, typer.Option(help="Content store: 'local' (embedded, under HOME/store) or a Kubo RPC multiaddr.")] = "local",
) -> None:
    """Start anvil (state kept in HOME/anvil-state.json across restarts) and deploy the contracts.

    A second 'up' on the same HOME reloads the saved chain and reuses the deployment.
    """
    from contracts.anvil import find_anvil
    from contracts.bindings import Chain, Deployment
    from fedchain.identity import dev_identity
    from fedchain.services import pid_alive, start_detached

    home = resolve_home(home).resolve()  # network.json holds absolute paths
    home.mkdir(parents=True, exist_ok=True)
    cfg_path = NetworkConfig.path(home)
    previous = NetworkConfig.load(home) if cfg_path.exists() else None
    if previous and previous.processes.get("anvil") and pid_alive(previous.processes["anvil"]):
        console.print(f"chain already up at {previous.chain_url} (pid {previous.processes['anvil']})")
        return
    url = f"http://127.0.0.1:{port}"
    state = home / "anvil-state.json"
    argv = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--state", str(state), "--silent"]

    def ready() -> bool:
        Chain.connect(url).block_number  # noqa: B018 - raises until anvil answers
        return True

    pid = start_detached(argv, home / "anvil.log", ready, what="anvil")
    chain = Chain.connect(url)
    deployment_file = home / "deployment.json"
    deployment = None
    if deployment_file.exists():
        deployment = Deployment.load(deployment_file)
        if not chain.is_deployed(deployment):
            err_console.print("saved deployment not found on this chain; deploying anew")
            deployment = None
    if deployment is None:
        founder_specs = _founders_from_options(founders, dev_founders)
        coord = coordinator or dev_identity(9).address
        deployment = chain.deploy(
            chain.dev_accounts[0],
            founders=founder_specs,
            coordinator=coord,
            voting_period_blocks=voting_period,
            quorum_bps=quorum_bps,
            approval_bps=approval_bps,
        )
        deployment.save(deployment_file)
    store_url = f"local:{home / 'store'}" if store == "local" else store
    NetworkConfig(chain_url=url, deployment_file=str(deployment_file), store=store_url, processes={"anvil": pid}).save(home)
    table = Table(title="fedchain network", show_header=False)
    table.add_row("chain", f"{url} (chain id {chain.chain_id}, anvil pid {pid})")
    for name, addr in deployment.addresses.items():
        table.add_row(name, addr)
    table.add_row("store", store_url)
    table.add_row("config", str(cfg_path))
    console.print(table)


@chain_app.command("down")
def chain_down(home: HomeOpt = None) -> None:
    """Stop the local anvil cleanly; its state file stays for the next 'chain up'."""
    from fedchain.services import stop_pid

    home = resolve_home(home)
    cfg = NetworkConfig.load(home)
    pid = cfg.processes.pop("anvil", None)
    if pid is None or not stop_pid(pid):
        console.print("chain was not running")
    else:
        console.print(f"stopped anvil (pid {pid}); state kept in {home / 'anvil-state.json'}")
    cfg.save(home)


@chain_app.command("status")
def chain_status(home: HomeOpt = None) -> None:
    """Show the chain URL, block height and contract addresses."""
    from fedchain.cli.common import connect

    s = connect(home)
    console.print(f"chain {s.config.chain_url}: chain id {s.chain.chain_id}, block {s.chain.block_number}")
    for name, addr in s.fed.deployment.addresses.items():
        console.print(f"  {name:<16} {addr}")


@chain_app.command("mine")
def chain_mine(blocks: int, home: HomeOpt = None) -> None:
    """DEV ONLY: mine BLOCKS empty blocks (e.g. to end a voting period on anvil)."""
    from fedchain.cli.common import connect

    s = connect(home)
    s.chain.mine(blocks)
    console.print(f"mined {blocks} blocks; now at block {s.chain.block_number}")


# --- ipfs --------------------------------------------------------------------

@ipfs_app.command("up")
def ipfs_up(home: HomeOpt = None) -> None:
    """Start js-ipfs (offline, API on 127.0.0.1) and point the network's store at it."""
    from ipfs.daemon import JsIpfsDaemon

    home = resolve_home(home)
    cfg = NetworkConfig.load(home)
    daemon = JsIpfsDaemon(repo=home / "ipfs-repo", log_file=home / "ipfs.log", detached=True)
    daemon.start()
    cfg.processes["ipfs"] = daemon.pid
    cfg.store = daemon.api_addr
    cfg.save(home)
    console.print(f"js-ipfs up: API {daemon.api_addr} (pid {daemon.pid})")


@ipfs_app.command("down")
def ipfs_down(home: HomeOpt = None) -> None:
    """Stop the local js-ipfs daemon and switch the store back to the embedded one."""
    from fedchain.services import stop_pid

    home = resolve_home(home)
    cfg = NetworkConfig.load(home)
    pid = cfg.processes.pop("ipfs", None)
    if pid is None or not stop_pid(pid, sig=15):
        console.print("ipfs daemon was not running")
    else:
        console.print(f"stopped js-ipfs (pid {pid})")
    cfg.store = f"local:{home / 'store'}"
    cfg.save(home)


# --- identity ----------------------------------------------------------------

@identity_app.command("create")
def identity_create(
    path: Path,
    name: Annotated[str, typer.Option(help="Member name shown on chain, e.g. 'St Mary Hospital'.")],
) -> None:
    """Create an encrypted keystore (Ethereum key + X25519 encryption key) at PATH."""
    from fedchain.identity import create_identity

    password = os.environ.get("FEDCHAIN_PASSWORD") or typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    ident = create_identity(path, name, password)
    console.print(f"created {path}: {ident.name} {ident.address}")
    console.print(f"  x25519 public key 0x{ident.x25519_public.hex()}")


@identity_app.command("show")
def identity_show(
    path: Path,
    as_json: Annotated[bool, typer.Option("--json", help="Print {name, address, x25519} for a founders file.")] = False,
) -> None:
    """Show the public part of a keystore (no password needed)."""
    from fedchain.identity import read_public

    pub = read_public(path)
    if as_json:
        console.print_json(json.dumps(pub))
    else:
        for k, v in pub.items():
            console.print(f"{k:<8} {v}")
