"""Role commands: the hospital node, the coordinator, and the one-command demo."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from fedchain.cli.demo import run_demo
from fedchain.coordinator.runner import run_coordinator
from fedchain.node.runner import run_node

node_app = typer.Typer(help="Hospital node: check policy, train locally, seal and commit updates.", no_args_is_help=True)
coordinator_app = typer.Typer(help="Coordinator: open approved rounds, verify and aggregate updates, publish models.", no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Role configuration (TOML).")]


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(coordinator_app, name="coordinator")
    app.command("demo")(demo)


@node_app.command("run")
def node_run(
    config: ConfigOpt,
    proposal: Annotated[Optional[int], typer.Option(help="Only serve this proposal (default: every approved one that targets our dataset).")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once the served proposals have no rounds left.")] = True,
) -> None:
    """Serve training rounds for this hospital's dataset, as long as its on-chain policy admits them."""

    run_node(config, proposal=proposal, exit_when_done=exit_when_done)


@coordinator_app.command("run")
def coordinator_run(
    config: ConfigOpt,
    proposal: Annotated[Optional[int], typer.Option(help="Only drive this proposal (default: every approved one).")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once the driven proposals have no rounds left.")] = True,
) -> None:
    """Drive every approved proposal's rounds: open, collect, verify, aggregate, publish, close."""

    run_coordinator(config, proposal=proposal, exit_when_done=exit_when_done)


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/demo-<timestamp>).")] = None,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for the data split and training.")] = 7,
    hospitals: Annotated[int, typer.Option(help="Number of hospitals (at least 4; the fourth sits out by policy).")] = 4,
) -> None:
    """Hospitals train one model on the embedded chain + store; prints a summary and writes an audit report."""

    run_demo(out=out, rounds=rounds, seed=seed, hospitals=hospitals)
