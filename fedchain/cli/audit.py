"""Audit commands: export the on-chain trail, replay every round, write a report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from fedchain import identity as ident
from fedchain.cli.common import HomeOpt, connect, console, err_console, resolve_home
from fedchain.coordinator.audit.anchor import ANCHORED, AnchorVerdict, check_offline, check_online, connect as connect_node
from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.plans import plans_from_documents, plans_from_store
from fedchain.coordinator.audit.replay import Replayer, print_report
from fedchain.coordinator.audit.report import (
    coordinator_names,
    render_report,
    write_report,
)
from fedchain.coordinator.audit.trail import chain_events, export_trail, read_trail
from fedchain.errors import ConfigError, FedchainError
from fedchain.ipfs import open_store
from fedchain.network import NetworkConfig

audit_app = typer.Typer(help="Export the audit trail, replay every round bit for bit, report.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


TrailOpt = Annotated[Optional[Path], typer.Option(help="Use an exported trail instead of the live chain.")]
StoreOpt = Annotated[Optional[str], typer.Option(help="Content store with the artifacts: a folder, local:PATH or a Kubo multiaddr (default: TRAIL_DIR/store, else the network's store).")]
AuditorOpt = Annotated[Optional[Path], typer.Option(help="Auditor keystore, to decrypt updates (default: TRAIL_DIR/auditor.json when present).")]
AuditorDevOpt = Annotated[Optional[int], typer.Option(help="DEV ONLY: the auditor is dev account N.")]
ChainOpt = Annotated[Optional[str], typer.Option(
    "--chain", help="With --trail: a node (http(s)://host:port) to check every event of the trail against.")]
CheckpointOpt = Annotated[Optional[str], typer.Option(
    help="With --trail: a block hash you trust (obtained independently); the trail's headers must lead to it.")]
AllowOpt = Annotated[bool, typer.Option(
    "--allow-unverifiable", help="Exit 0 when nothing contradicts the record even if some of it could not be "
                                 "checked (UNVERIFIABLE rounds, an UNANCHORED trail); a DISCREPANCY still exits 1.")]


def auditor_identity(auditor: Optional[Path], auditor_dev: Optional[int], trail: Optional[Path]):
    """The auditor key: --auditor-dev, --auditor, or what a demo run left beside its trail.

    A demo run writes ``auditor.dev.json`` naming the public dev account it used
    as auditor (DEV ONLY); a real auditor passes an encrypted keystore.
    """


    if auditor_dev is None and auditor is None and trail is not None and (trail.parent / "auditor.dev.json").exists():
        try:
            auditor_dev = int(json.loads((trail.parent / "auditor.dev.json").read_text())["dev_account"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{trail.parent / 'auditor.dev.json'} is malformed: {exc}") from None
    if auditor_dev is not None:
        err_console.print(f"[yellow]DEV ONLY:[/] auditing with public dev account {auditor_dev}")
        return ident.dev_identity(auditor_dev)
    if auditor is None:
        raise ConfigError("replay needs the auditor key to decrypt updates: --auditor KEYSTORE")
    return ident.load_identity(auditor, os.environ.get("FEDCHAIN_PASSWORD", ""))


def store_url(trail: Optional[Path], store: Optional[str], session) -> str:
    """The content store to audit from: ``--store``, else the trail's folder's ``store/``, else the network's."""
    if store is not None:
        return store
    if trail is not None and (trail.parent / "store").is_dir():
        return str(trail.parent / "store")
    if session is not None:
        return session.config.store
    if trail is not None:
        try:
            return NetworkConfig.load(resolve_home(None)).store
        except ConfigError:
            pass
    raise ConfigError(
        f"no content store found: {trail.parent / 'store' if trail is not None else 'the network'} does not exist "
        "and no network is configured; pass --store (a folder, local:PATH or a Kubo multiaddr)"
    )


def open_audit_store(url: str):
    """Open a store for reading only: a local folder that holds no store is an error, never created."""
    return open_store(url, create=False) if _is_local(url) else open_store(url)


def _is_local(url: str) -> bool:
    return url.startswith("local:") or not (url.startswith(("http://", "https://", "/ip4/", "/ip6/", "/dns")))


@dataclass
class AuditInputs:
    """What a replay reads: the history, where the updates were sealed for, and how the events are anchored."""

    history: History
    chain_id: int
    rounds_address: str
    session: object | None
    documents: dict
    anchor: AnchorVerdict
    statistics_address: str | None = None  # where sealed moments were committed (plans with a statistics phase)
    secure_address: str = ""  # SecureRounds (mode = "secagg")


def load_history(trail: Optional[Path], home, *, chain: Optional[str] = None,
                 checkpoint: Optional[str] = None) -> AuditInputs:
    """The history from a trail file (anchored by ``chain`` or ``checkpoint`` when given) or the live chain."""

    if trail is not None:
        if not trail.is_file():
            raise ConfigError(f"trail file {trail} does not exist (write one with 'fedchain audit export --out FILE')")
        t = read_trail(trail)
        if chain is not None:
            anchor = check_online(t, connect_node(chain))
        else:
            anchor = check_offline(t, checkpoint)
        return AuditInputs(History(t.events, t.header.get("params")), t.chain_id, t.addresses["Rounds"], None,
                           t.documents, anchor, t.addresses.get("Statistics"), t.addresses.get("SecureRounds", ""))
    if chain is not None or checkpoint is not None:
        raise ConfigError("--chain and --checkpoint anchor an exported trail: use them with --trail")
    s = connect(home)
    d = s.fed.deployment
    events = list(chain_events(s.fed, d.deploy_block))
    return AuditInputs(History(events, dict(d.params)), d.chain_id, d.addresses["Rounds"], s, {},
                       AnchorVerdict(ANCHORED, f"events read from the node at {s.fed.chain.url}"),
                       d.addresses.get("Statistics"), d.addresses.get("SecureRounds", ""))


def report_plans(history: History, trail: Optional[Path], store: Optional[str], session) -> dict:
    """The proposals' plans for the report (model, strategy, metric): from the trail's documents, else the store.

    Each is verified against its on-chain hash; a missing one is left out (the page says so).
    """
    plans = plans_from_documents(history, read_trail(trail).documents) if trail is not None else {}
    if len(plans) == len(history.proposals):
        return plans
    try:
        with open_audit_store(store_url(trail, store, session)) as st:
            return {**plans_from_store(history, st), **plans}
    except FedchainError:
        return plans


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="Trail file (JSON lines); an interrupted export resumes.")],
    home: HomeOpt = None,
    headers: Annotated[bool, typer.Option(help="Include every block's header and the receipts of the blocks with "
                                                "the contracts' events, so the trail can be checked offline.")] = True,
) -> None:
    """Write every event of every contract, in block order, plus the plan documents they reference."""

    s = connect(home)
    out.parent.mkdir(parents=True, exist_ok=True)
    end = s.fed.chain.block_number
    with s.store() as store:
        n = export_trail(s.fed, store, out, to_block=end, headers=headers)
    console.print(f"exported {n} events to {out}")
    if headers:
        console.print(f"checkpoint: block {end} has hash {s.fed.chain.block_hash(end)} "
                      "(keep it: 'audit replay --checkpoint' checks the trail against it offline)")


@audit_app.command("replay")
def audit_replay(
    trail: TrailOpt = None, store: StoreOpt = None, auditor: AuditorOpt = None,
    auditor_dev: AuditorDevOpt = None, home: HomeOpt = None, chain: ChainOpt = None,
    checkpoint: CheckpointOpt = None, allow_unverifiable: AllowOpt = False,
) -> None:
    """Re-derive every round from the committed updates; exit 1 unless everything is VERIFIED.

    Each round is VERIFIED, DISCREPANCY (the problem named) or UNVERIFIABLE (what
    could not be checked, and why). An exported trail is checked against a node
    (--chain) or against the block headers it carries up to a block hash you
    trust (--checkpoint); otherwise it is UNANCHORED.
    """

    who = auditor_identity(auditor, auditor_dev, trail)
    inputs = load_history(trail, home, chain=chain, checkpoint=checkpoint)
    with open_audit_store(store_url(trail, store, inputs.session)) as st:
        report = _replayer(inputs, st, who).run()
    print_report(report, console)
    raise typer.Exit(0 if report.passes(allow_unverifiable=allow_unverifiable) else 1)


def _replayer(inputs: AuditInputs, store, who) -> Replayer:
    return Replayer(inputs.history, store, who, chain_id=inputs.chain_id, rounds_address=inputs.rounds_address,
                    documents=inputs.documents, anchor=inputs.anchor, statistics_address=inputs.statistics_address,
                    secure_address=inputs.secure_address)


@audit_app.command("report")
def audit_report(
    out: Annotated[Path, typer.Option(help="HTML report to write.")],
    trail: TrailOpt = None, store: StoreOpt = None, auditor: AuditorOpt = None,
    auditor_dev: AuditorDevOpt = None, home: HomeOpt = None, chain: ChainOpt = None,
    checkpoint: CheckpointOpt = None,
) -> None:
    """Write one self-contained HTML page: accuracy, participants, scores, votes, gas, verdicts.

    With an auditor key (and the store) the page carries the replay's verdict for
    every round; without one it says so and shows what the events alone tell.
    """

    inputs = load_history(trail, home, chain=chain, checkpoint=checkpoint)
    history, chain_id, session = inputs.history, inputs.chain_id, inputs.session
    if trail is not None:
        subtitle = f"From the exported trail {trail.name} (chain {chain_id}, {sum(1 for _ in history.rounds)} rounds)."
    else:
        subtitle = f"From the live chain (chain {chain_id}, network folder {session.home})."
    report, note = None, None
    try:
        who = auditor_identity(auditor, auditor_dev, trail)
        with open_audit_store(store_url(trail, store, session)) as st:
            report = _replayer(inputs, st, who).run()
    except ConfigError as exc:
        note = f"Not replayed: {exc}"
        err_console.print(f"[yellow]no verdicts in the report:[/] {exc}")
    except FedchainError as exc:
        note = f"The replay could not run: {exc}"
        err_console.print(f"[yellow]no verdicts in the report:[/] {exc}")
    write_report(out, render_report(history, report, title="fedchain audit report", subtitle=subtitle,
                                    note=note, member_names=coordinator_names(history),
                                    plans=report_plans(history, trail, store, session)))
    console.print(f"wrote {out}")
