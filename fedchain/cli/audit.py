"""Audit commands: export the on-chain trail, replay every round, write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fedchain.cli.common import HomeOpt

audit_app = typer.Typer(help="Export the audit trail, replay every round bit for bit, report.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Option(help="Trail file (JSON lines).")],
    home: HomeOpt = None,
) -> None:
    """Write every event of every contract, in block order, plus the documents they reference."""
    from coordinator.audit import export_trail
    from fedchain.cli.common import connect

    s = connect(home)
    with s.store() as store:
        n = export_trail(s.fed, store, out)
    typer.echo(f"exported {n} events to {out}")


@audit_app.command("replay")
def audit_replay(
    trail: Annotated[Optional[Path], typer.Option(help="Replay from an exported trail instead of the live chain.")] = None,
    store: Annotated[Optional[str], typer.Option(help="Content store holding the artifacts (path or Kubo multiaddr).")] = None,
    auditor: Annotated[Optional[Path], typer.Option(help="Auditor keystore, to decrypt updates.")] = None,
    auditor_dev: Annotated[Optional[int], typer.Option(help="DEV ONLY: auditor is dev account N.")] = None,
    home: HomeOpt = None,
) -> None:
    """Re-derive every aggregate and score from the committed updates; exit 1 on any discrepancy."""
    from coordinator.audit import replay_cli

    code = replay_cli(trail=trail, store=store, auditor=auditor, auditor_dev=auditor_dev, home=home)
    raise typer.Exit(code)


@audit_app.command("report")
def audit_report(
    out: Annotated[Path, typer.Option(help="HTML report to write.")],
    trail: Annotated[Optional[Path], typer.Option(help="Build from an exported trail instead of the live chain.")] = None,
    home: HomeOpt = None,
) -> None:
    """Write one self-contained HTML page: accuracy, participants, scores, votes, gas, verdicts."""
    from coordinator.audit import report_cli

    report_cli(out=out, trail=trail, home=home)
