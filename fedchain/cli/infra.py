"""Infrastructure commands: compile contracts, run a local chain and IPFS daemon, identities.

``chain up`` starts anvil *detached* (it outlives the command) with
``--state HOME/anvil-state.json``: anvil loads that file at start and writes it
back when it stops (SIGTERM or SIGINT), so ``chain down`` then ``chain up``
brings back the same chain and the same deployment.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from eth_utils import is_address, to_checksum_address
from rich.markup import escape
from rich.table import Table

from fedchain.cli.common import HomeOpt, connect, console, err_console, resolve_home
from fedchain.cli.governance import friendly
from fedchain.contracts import build
from fedchain.contracts.anvil import find_anvil, rpc_ready
from fedchain.contracts.bindings import Chain, Deployment, FounderSpec
from fedchain.errors import ConfigError, FedchainError
from fedchain.identity import create_identity, dev_identity, read_public
from fedchain.ipfs.daemon import JsIpfsDaemon
from fedchain.network import NetworkConfig
from fedchain.services import pid_alive, start_detached, stop_pid

contracts_app = typer.Typer(help="Compile the Solidity contracts into committed artifacts.", no_args_is_help=True)
chain_app = typer.Typer(help="Run a local chain (anvil) with the fedchain contracts deployed.", no_args_is_help=True)
ipfs_app = typer.Typer(help="Run a local IPFS daemon (js-ipfs, Kubo RPC API) for a multi-process network.", no_args_is_help=True)
identity_app = typer.Typer(help="Create and inspect member identities (encrypted keystores).", no_args_is_help=True)

STATE_FILE = "anvil-state.json"
ANVIL_SETTINGS = "anvil.json"  # port and block time of the last 'chain up', reused by the next one
DEFAULT_PORT = 8545
DEV_COORDINATOR = 9


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

    written = build.build(out_dir=out) if out is not None else build.build()
    for name, path in sorted(written.items()):
        console.print(f"  {name:<20} {path}")
    console.print(f"[green]compiled {len(written)} contracts[/]")


# --- process helpers ---------------------------------------------------------

def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _is_running(pid: Optional[int], program: str) -> bool:
    """Whether ``pid`` is alive and (where /proc tells) runs ``program`` - a recycled pid is not ours."""

    if not pid or not pid_alive(pid):
        return False
    cmd = _cmdline(pid)
    return not cmd or program in cmd  # no /proc: trust the pid


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _load_settings(home: Path) -> dict[str, Any]:
    try:
        data = json.loads((home / ANVIL_SETTINGS).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


# --- chain -------------------------------------------------------------------

def _founders_from_options(founders_file: Optional[Path], dev_founders: int):
    if founders_file is not None and dev_founders:
        raise ConfigError("give --founders FILE or --dev-founders N, not both")
    if founders_file is not None:
        try:
            entries = json.loads(founders_file.read_text())
            if isinstance(entries, dict):
                entries = [entries]
            specs = [
                FounderSpec(name=e["name"], address=e["address"],
                            x25519_pub=bytes.fromhex(str(e["x25519"]).removeprefix("0x")))
                for e in entries
            ]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"{founders_file}: expected a JSON list of {{name, address, x25519}} "
                f"(each as printed by 'fedchain identity show --json'): {exc}"
            ) from None
        if not specs:
            raise ConfigError(f"{founders_file} lists no founders")
        return specs
    if dev_founders < 1:
        raise ConfigError("a new consortium needs founders: --founders FILE or --dev-founders N")
    if dev_founders > DEV_COORDINATOR:
        raise ConfigError(f"--dev-founders is at most {DEV_COORDINATOR} (dev account {DEV_COORDINATOR} is the coordinator)")
    err_console.print(f"[yellow]DEV ONLY:[/] founders are the public dev accounts 0..{dev_founders - 1}")
    return [
        FounderSpec(name=ident.name, address=ident.address, x25519_pub=ident.x25519_public)
        for ident in (dev_identity(i) for i in range(dev_founders))
    ]


def _coordinator_address(coordinator: Optional[str], dev_founders: int) -> str:
    if coordinator is None:
        if not dev_founders:
            raise ConfigError("say who coordinates: --coordinator ADDRESS")
        err_console.print(f"[yellow]DEV ONLY:[/] the coordinator is dev account {DEV_COORDINATOR}")
        return dev_identity(DEV_COORDINATOR).address
    if not is_address(coordinator):
        raise ConfigError(f"--coordinator: not an address: {coordinator!r}")
    return to_checksum_address(coordinator)


def _founders_and_coordinator(founders: Optional[Path], dev_founders: int, coordinator: Optional[str]):
    """Founders and coordinator; on a dev network the dev coordinator is a founding member too.

    Nodes seal updates for the coordinator's X25519 key, which they read from the
    member registry, so the organisation running the coordinator is a member.
    """

    specs = _founders_from_options(founders, dev_founders)
    coord = _coordinator_address(coordinator, dev_founders)
    if dev_founders and coordinator is None and coord not in {f.address for f in specs}:
        ops = dev_identity(DEV_COORDINATOR)
        specs.append(FounderSpec(name="consortium-ops (coordinator)", address=ops.address, x25519_pub=ops.x25519_public))
    return specs, coord


@chain_app.command("up")
@friendly
def chain_up(
    home: HomeOpt = None,
    port: Annotated[Optional[int], typer.Option(help=f"Port for anvil on 127.0.0.1 (default: the last one used, else {DEFAULT_PORT}).")] = None,
    block_time: Annotated[
        Optional[float], typer.Option(help="Mine a block every SECONDS (default: a block per transaction). Kept for later 'up's; 0 turns it off.")
    ] = None,
    founders: Annotated[Optional[Path], typer.Option(help="JSON list of founding members {name, address, x25519}.")] = None,
    dev_founders: Annotated[int, typer.Option(help="DEV ONLY: dev accounts 0..N-1 found the consortium.")] = 0,
    coordinator: Annotated[Optional[str], typer.Option(help=f"Coordinator address (default with --dev-founders: dev account {DEV_COORDINATOR}).")] = None,
    voting_period: Annotated[int, typer.Option(help="Voting period in blocks.")] = 10,
    quorum_bps: Annotated[int, typer.Option(help="Quorum: share of eligible members that must vote, in basis points.")] = 5000,
    approval_bps: Annotated[int, typer.Option(help="Approval: share of yes among yes+no, in basis points.")] = 5001,
    store: Annotated[
        Optional[str], typer.Option(help="Content store: 'local' (embedded, HOME/store) or a Kubo RPC multiaddr (default: as before, else local).")
    ] = None,
) -> None:
    """Start anvil (state kept in HOME/anvil-state.json across restarts) and deploy the contracts.

    A later 'up' on the same HOME reloads the saved chain and reuses its deployment
    (founder and voting options then do not apply).
    """

    home = resolve_home(home).resolve()  # network.json holds absolute paths
    home.mkdir(parents=True, exist_ok=True)
    settings = _load_settings(home)
    port = port or int(settings.get("port") or DEFAULT_PORT)
    if block_time is None:
        block_time = settings.get("block_time")
    if block_time is not None and block_time < 0:
        raise ConfigError("--block-time must be positive (0 = a block per transaction)")
    block_time = block_time or None
    cfg_path = NetworkConfig.path(home)
    previous = NetworkConfig.load(home) if cfg_path.exists() else None
    if previous and _is_running(previous.processes.get("anvil"), "anvil"):
        console.print(f"chain already up at {previous.chain_url} (anvil pid {previous.processes['anvil']})")
        return
    state = home / STATE_FILE
    deployment_file = home / "deployment.json"
    fresh = not deployment_file.exists() or not state.exists()
    founder_specs = coord = None
    if fresh:  # check the founders before starting anything
        founder_specs, coord = _founders_and_coordinator(founders, dev_founders, coordinator)
    if _port_in_use(port):
        raise ConfigError(f"port {port} on 127.0.0.1 is in use (another chain?); choose one with --port")

    url = f"http://127.0.0.1:{port}"
    argv = [str(find_anvil()), "--host", "127.0.0.1", "--port", str(port), "--state", str(state), "--silent"]
    if block_time:
        argv += ["--block-time", f"{block_time:g}"]
    reloaded = state.exists()
    pid = start_detached(argv, home / "anvil.log", lambda: rpc_ready(url), what="anvil")
    try:
        chain = Chain.connect(url)
        deployment = None
        if deployment_file.exists() and state.exists():
            deployment = Deployment.load(deployment_file)
            if not chain.is_deployed(deployment):
                err_console.print(f"[yellow]the deployment in {deployment_file} is not on this chain; deploying anew[/]")
                deployment = None
        reused = deployment is not None
        if deployment is None:
            if founder_specs is None:
                founder_specs, coord = _founders_and_coordinator(founders, dev_founders, coordinator)
            deployment = chain.deploy(
                chain.dev_accounts[0], founders=founder_specs, coordinator=coord,
                voting_period_blocks=voting_period, quorum_bps=quorum_bps, approval_bps=approval_bps,
            )
            deployment.save(deployment_file)
            _fund_dev_chain(chain, [f.address for f in founder_specs] + [coord])
        elif founders is not None or dev_founders or coordinator is not None:
            err_console.print("[dim]reusing the saved deployment: founder and coordinator options do not apply[/]")
    except BaseException:
        stop_pid(pid, sig=signal.SIGTERM)  # never leave a half-set-up anvil behind
        raise

    if store is None:
        store_url = previous.store if previous else f"local:{home / 'store'}"
    else:
        store_url = f"local:{home / 'store'}" if store == "local" else store
    processes = dict(previous.processes) if previous else {}
    processes["anvil"] = pid
    NetworkConfig(chain_url=url, deployment_file=str(deployment_file), store=store_url, processes=processes).save(home)
    (home / ANVIL_SETTINGS).write_text(json.dumps({"port": port, "block_time": block_time}) + "\n")

    fed = chain.attach(deployment)
    table = Table(title="fedchain network", show_header=False)
    table.add_row("chain", f"{url} (chain id {chain.chain_id}, block {chain.block_number}, anvil pid {pid})")
    table.add_row("state", f"{state} ({'reloaded' if reloaded else 'new chain'})"
                  + (f", a block every {block_time:g} s" if block_time else ""))
    table.add_row("deployment", f"{deployment_file} ({'reused' if reused else 'deployed now'})")
    for name, addr in deployment.addresses.items():
        table.add_row(f"  {name}", addr)
    table.add_row("members", str(fed.consortium.member_count()))
    table.add_row("coordinator", fed.consortium.coordinator())
    vp = fed.consortium.voting_params()
    table.add_row("voting", f"{vp.voting_period_blocks} blocks, quorum {vp.quorum_bps / 100:g}%, approval {vp.approval_bps / 100:g}%")
    table.add_row("store", store_url)
    table.add_row("config", str(cfg_path))
    console.print(table)


DEV_FUNDING_ETH = 100


def _fund_dev_chain(chain, addresses: list[str]) -> None:
    """DEV: give accounts without a balance some ETH for gas (anvil prefunds only its own dev accounts)."""
    funded = []
    for address in dict.fromkeys(addresses):
        if chain.balance(address) == 0:
            chain.fund(address, DEV_FUNDING_ETH * 10**18)
            funded.append(address)
    if funded:
        err_console.print(f"[yellow]DEV ONLY:[/] funded {len(funded)} account(s) with {DEV_FUNDING_ETH} ETH for gas")


@chain_app.command("fund")
@friendly
def chain_fund(
    address: Annotated[str, typer.Argument(help="Account to fund (e.g. a newly admitted member).")],
    eth: Annotated[float, typer.Option(help="Amount in ETH.")] = DEV_FUNDING_ETH,
    home: HomeOpt = None,
) -> None:
    """DEV ONLY: send ETH for gas from dev account 0 to ADDRESS."""


    if not is_address(address):
        raise ConfigError(f"not an address: {address!r}")
    if not eth > 0:
        raise ConfigError("--eth must be positive")
    s = connect(home)
    s.chain.fund(to_checksum_address(address), int(eth * 10**18))
    console.print(f"funded {to_checksum_address(address)} with {eth:g} ETH; balance "
                  f"{s.chain.balance(address) / 10**18:g} ETH")


@chain_app.command("down")
@friendly
def chain_down(home: HomeOpt = None) -> None:
    """Stop the local anvil cleanly (it writes its state file for the next 'chain up')."""

    home = resolve_home(home)
    cfg = NetworkConfig.load(home)
    pid = cfg.processes.get("anvil")
    if not _is_running(pid, "anvil"):
        cfg.processes.pop("anvil", None)
        cfg.save(home)
        console.print("chain was not running")
        return
    state = home / STATE_FILE
    before = state.stat().st_mtime_ns if state.exists() else None
    try:
        height: Optional[int] = Chain.connect(cfg.chain_url, timeout=5).block_number
    except FedchainError:
        height = None
    stop_pid(pid, sig=signal.SIGTERM, grace=20.0)  # anvil dumps its state on SIGTERM (and SIGINT)
    cfg.processes.pop("anvil", None)
    cfg.save(home)
    saved = state.exists() and state.stat().st_mtime_ns != before
    at = f" at block {height}" if height is not None else ""
    if saved:
        console.print(f"stopped anvil (pid {pid}){at}; state saved to {state}")
    else:
        err_console.print(f"[yellow]stopped anvil (pid {pid}){at}, but it did not write {state}; "
                          f"the next 'chain up' starts from the previous state[/]")


@chain_app.command("status")
@friendly
def chain_status(home: HomeOpt = None) -> None:
    """Show the chain URL, block height, contracts, members and services."""

    home_path = resolve_home(home)
    cfg = NetworkConfig.load(home_path)
    pid = cfg.processes.get("anvil")
    s = connect(home)
    fed = s.fed
    t = Table(title="fedchain network", show_header=False)
    t.add_row("home", str(home_path.resolve()))
    running = f"anvil pid {pid}" if _is_running(pid, "anvil") else "not started by 'chain up'"
    t.add_row("chain", f"{cfg.chain_url} (chain id {s.chain.chain_id}, block {s.chain.block_number}, {running})")
    state = home_path / STATE_FILE
    if state.exists():
        t.add_row("state file", f"{state} ({state.stat().st_size:,} bytes)")
    for name, addr in fed.deployment.addresses.items():
        t.add_row(f"  {name}", addr)
    members = fed.consortium.members()
    t.add_row("members", f"{len(members)}: " + escape(", ".join(m.name for m in members)))
    t.add_row("coordinator", fed.consortium.coordinator())
    vp = fed.consortium.voting_params()
    t.add_row("voting", f"{vp.voting_period_blocks} blocks, quorum {vp.quorum_bps / 100:g}%, approval {vp.approval_bps / 100:g}%")
    t.add_row("datasets", str(fed.registry.dataset_count()))
    t.add_row("proposals", str(fed.proposals.proposal_count()))
    ipfs_pid = cfg.processes.get("ipfs")
    t.add_row("store", cfg.store + (f" (js-ipfs pid {ipfs_pid})" if _is_running(ipfs_pid, "ipfs") else ""))
    console.print(t)


@chain_app.command("mine")
@friendly
def chain_mine(
    blocks: Annotated[int, typer.Argument(help="Number of blocks to mine.")] = 1,
    seconds: Annotated[int, typer.Option(help="First move the chain clock forward this many seconds.")] = 0,
    home: HomeOpt = None,
) -> None:
    """DEV ONLY: mine BLOCKS empty blocks (e.g. to end a voting period on anvil)."""

    if blocks < 0 or seconds < 0:
        raise ConfigError("blocks and --seconds must not be negative")
    if blocks == 0 and seconds == 0:
        raise ConfigError("nothing to do: give a number of blocks or --seconds")
    s = connect(home)
    mined = 0
    if seconds:
        s.chain.advance_time(seconds)  # mines one block
        mined = 1
    if blocks > mined:
        s.chain.mine(blocks - mined)
    console.print(f"mined {max(blocks, mined)} block(s); now at block {s.chain.block_number}"
                  + (f", clock moved {seconds} s forward" if seconds else ""))


# --- ipfs --------------------------------------------------------------------

@ipfs_app.command("up")
@friendly
def ipfs_up(home: HomeOpt = None) -> None:
    """Start js-ipfs (offline, API on 127.0.0.1) and point the network's store at it."""

    home = resolve_home(home).resolve()
    cfg = NetworkConfig.load(home)
    pid = cfg.processes.get("ipfs")
    if _is_running(pid, "ipfs"):
        console.print(f"js-ipfs already up: API {cfg.store} (pid {pid})")
        return
    daemon = JsIpfsDaemon(repo=home / "ipfs-repo", log_file=home / "ipfs.log", detached=True)
    daemon.start()
    if not cfg.store.startswith("local:") and cfg.store != daemon.api_addr:
        err_console.print(f"[yellow]the daemon's API is now {daemon.api_addr}, not {escape(cfg.store)} (that port "
                          "was taken): restart running nodes and coordinators so they use it[/]")
    cfg.processes["ipfs"] = daemon.pid
    cfg.store = daemon.api_addr
    cfg.save(home)
    console.print(f"js-ipfs up: API {daemon.api_addr} (pid {daemon.pid}); the network's store is now this daemon")


@ipfs_app.command("down")
@friendly
def ipfs_down(
    home: HomeOpt = None,
    embedded: Annotated[bool, typer.Option(
        "--switch-to-embedded", help="Also point the network's store back at the embedded one (HOME/store).")] = False,
) -> None:
    """Stop the local js-ipfs daemon; its repo and address stay for the next 'ipfs up'.

    Running nodes and coordinators wait for the daemon to come back
    (their \\[retry] horizon). With --switch-to-embedded the network's store
    becomes the embedded one instead (content pinned in the daemon is not there).
    """

    home = resolve_home(home).resolve()
    cfg = NetworkConfig.load(home)
    pid = cfg.processes.pop("ipfs", None)
    if not _is_running(pid, "ipfs"):
        console.print("ipfs daemon was not running")
    else:
        stop_pid(pid, sig=signal.SIGTERM)
        console.print(f"stopped js-ipfs (pid {pid}); its repo stays in {home / 'ipfs-repo'}")
    if embedded:
        cfg.store = f"local:{home / 'store'}"
        console.print(f"the network's store is now the embedded one: {cfg.store}")
    cfg.save(home)


# --- identity ----------------------------------------------------------------

@identity_app.command("create")
@friendly
def identity_create(
    path: Annotated[Path, typer.Argument(help="Keystore file to create (never overwritten).")],
    name: Annotated[str, typer.Option(help="Member name shown on chain, e.g. 'st-mary'.")],
) -> None:
    """Create an encrypted keystore (Ethereum key + X25519 encryption key) at PATH.

    The password comes from $FEDCHAIN_PASSWORD, else a prompt.
    """

    if path.exists():
        raise ConfigError(f"{path} exists; refusing to overwrite an identity")
    password = os.environ.get("FEDCHAIN_PASSWORD")
    if not password:
        if not sys.stdin.isatty():  # getpass would warn and read the password from a pipe
            raise ConfigError(f"no password for {path}: set $FEDCHAIN_PASSWORD (there is no terminal to ask on)")
        password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    ident = create_identity(path, name, password)
    console.print(f"created {path}: {escape(ident.name)} {ident.address}")
    console.print(f"  x25519 public key 0x{ident.x25519_public.hex()}")
    console.print(f"  for a founders file: fedchain identity founders {escape(str(path))} … > founders.json",
                  highlight=False, soft_wrap=True)
    console.print(f"  as an auditor, in a plan: {escape(_auditor_line(ident.x25519_public.hex()))}", highlight=False,
                  soft_wrap=True)


@identity_app.command("show")
@friendly
def identity_show(
    path: Annotated[Optional[Path], typer.Argument(help="Keystore file (no password needed).")] = None,
    dev: Annotated[Optional[int], typer.Option("--dev", help="DEV ONLY: show dev account N instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {name, address, x25519} for a founders file.")] = False,
) -> None:
    """Show the public part of an identity: name, address, X25519 key."""

    if (path is None) == (dev is None):
        raise ConfigError("give a keystore PATH or --dev N")
    if dev is not None:
        ident = dev_identity(dev)
        pub = {"name": ident.name, "address": ident.address, "x25519": "0x" + ident.x25519_public.hex(),
               "dev_only": "true"}
    else:
        pub = read_public(path)
    if as_json:
        console.print_json(json.dumps(pub))
    else:
        for k, v in pub.items():
            console.print(f"{k:<8} {escape(str(v))}")
        console.print(f"{'plan':<8} {escape(_auditor_line(pub['x25519']))}   "
                      "[dim]# in a plan: lets this identity audit (replay) its rounds[/]", highlight=False,
                      soft_wrap=True)


def _auditor_line(x25519_hex: str) -> str:
    """The plan line naming this key as an auditor (any identity's X25519 key can audit; no membership needed)."""
    return f'auditors = ["0x{x25519_hex.lower().removeprefix("0x")}"]'


MAX_PUBLIC_FILE_BYTES = 64 << 10  # a keystore or an 'identity show --json' output is well under 1 kB
MAX_MEMBER_NAME_BYTES = 64  # Consortium.MAX_NAME_BYTES


class FoundersError(ConfigError):
    """A founders input is not a keystore or a public identity, or the founders clash."""


def _public_entries(path: Path) -> list[dict[str, Any]]:
    """The public identities in ``path``: a keystore, an 'identity show --json' output, or a list of those."""
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_PUBLIC_FILE_BYTES + 1)
    except OSError as exc:
        raise FoundersError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_PUBLIC_FILE_BYTES:
        raise FoundersError(f"{path}: larger than {MAX_PUBLIC_FILE_BYTES} bytes; not a keystore or public identity")
    try:
        doc = json.loads(raw)
    except ValueError:
        raise FoundersError(f"{path}: not JSON (expected a keystore or 'fedchain identity show --json' output)") from None
    if isinstance(doc, dict) and "fedchain_identity" in doc:
        return [read_public(path)]
    entries = doc if isinstance(doc, list) else [doc]
    for e in entries:
        if not isinstance(e, dict) or not {"name", "address", "x25519"} <= set(e):
            raise FoundersError(f"{path}: expected a keystore or {{name, address, x25519}} "
                                "(as printed by 'fedchain identity show --json')")
    return entries


def _founder(entry: dict[str, Any], source: Path, allow_dev: bool) -> dict[str, str]:
    name, address, key = entry.get("name"), entry.get("address"), entry.get("x25519")
    if not isinstance(name, str) or not name.strip() or len(name.encode()) > MAX_MEMBER_NAME_BYTES:
        raise FoundersError(f"{source}: a member name is 1 to {MAX_MEMBER_NAME_BYTES} bytes, not {name!r}")
    if not isinstance(address, str) or not is_address(address):
        raise FoundersError(f"{source} ({name}): not an address: {address!r}")
    try:
        raw_key = bytes.fromhex(str(key).removeprefix("0x"))
    except ValueError:
        raw_key = b""
    if len(raw_key) != 32:
        raise FoundersError(f"{source} ({name}): an X25519 public key is 0x and 64 hex digits, not {key!r}")
    if str(entry.get("dev_only", "")).lower() in ("true", "1") and not allow_dev:
        raise FoundersError(f"{source} ({name}) is a DEV ONLY identity whose private keys are public; "
                            "it cannot found a real consortium (--allow-dev for a local experiment)")
    return {"name": name, "address": to_checksum_address(address), "x25519": "0x" + raw_key.hex()}


@identity_app.command("founders")
@friendly
def identity_founders(
    files: Annotated[list[Path], typer.Argument(help="Keystores (public part read, no password) or "
                                                     "'fedchain identity show --json' outputs, one per founder.")],
    allow_dev: Annotated[bool, typer.Option("--allow-dev", help="DEV ONLY: accept public dev identities.")] = False,
) -> None:
    """Print a founders file (JSON) for 'fedchain chain up --founders' from the founders' public identities.

    Example: fedchain identity founders keys/*.json > founders.json
    """
    founders: list[dict[str, str]] = []
    seen_address: dict[str, Path] = {}
    seen_key: dict[str, Path] = {}
    for path in files:
        for entry in _public_entries(path):
            f = _founder(entry, path, allow_dev)
            if f["address"] in seen_address:
                raise FoundersError(f"{f['address']} ({f['name']}) appears twice: in {seen_address[f['address']]} "
                                    f"and {path}")
            if f["x25519"] in seen_key:
                raise FoundersError(f"{path} ({f['name']}) has the same X25519 key as {seen_key[f['x25519']]}: "
                                    "every member needs its own key")
            seen_address[f["address"]], seen_key[f["x25519"]] = path, path
            founders.append(f)
    typer.echo(json.dumps(founders, indent=2))
    err_console.print(f"{len(founders)} founder(s); start the chain with 'fedchain chain up --founders FILE "
                      "--coordinator ADDRESS'", highlight=False, soft_wrap=True)
