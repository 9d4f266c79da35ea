"""Role commands: the hospital node and the coordinator (the one-command demo is in fedchain.cli.demo).

``node run`` and ``coordinator run`` are long-running services. Their exit
status says why they stopped (:class:`fedchain.lifecycle.ExitCode`, listed in
their ``--help`` and the README): an unreachable chain node or store is
ridden out for the configured retry horizon first, and SIGTERM / SIGINT stop
them gracefully.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.markup import escape

from fedchain import lifecycle
from fedchain.cli.common import err_console
from fedchain.contracts.bindings import ChainUnavailable
from fedchain.coordinator.runner import run_coordinator
from fedchain.ipfs import StoreUnavailable
from fedchain.lifecycle import EXIT_CODES_HELP, ExitCode
from fedchain.node.runner import run_node

node_app = typer.Typer(help="Hospital node: check policy, train locally, seal and commit updates.", no_args_is_help=True)
coordinator_app = typer.Typer(help="Coordinator: open approved rounds, verify and aggregate updates, publish models.", no_args_is_help=True)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Role configuration (TOML; see the README).")]
LogJsonOpt = Annotated[Optional[bool], typer.Option(
    "--log-json/--log-text", help="Log one JSON object per line (for log collectors) or readable lines "
    "(default: the config's \\[log] json, else readable).", show_default=False)]

#: Proposal ids are uint256 on chain.
MAX_PROPOSAL_ID = 2**256 - 1


def _proposal_ids(values: Optional[list[int]]) -> Optional[list[int]]:
    for v in values or ():
        if not 1 <= v <= MAX_PROPOSAL_ID:
            raise typer.BadParameter(f"{v} is not a proposal id (ids are 1 .. 2**256 - 1)", param_hint="--proposal")
    return values or None


def register(app: typer.Typer) -> None:
    app.add_typer(node_app, name="node")
    app.add_typer(coordinator_app, name="coordinator")


def _run_role(run: Callable[[], None]) -> None:
    """Run a role process; turn the reasons it can stop for into its documented exit code."""
    try:
        run()
    except lifecycle.StopRequested as stop:  # already logged by the role
        raise typer.Exit(int(stop.exit_code)) from None
    except ChainUnavailable as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))} (gave up after the retry horizon)", soft_wrap=True)
        raise typer.Exit(int(ExitCode.CHAIN_UNAVAILABLE)) from None
    except StoreUnavailable as exc:
        err_console.print(f"[bold red]error:[/] {escape(str(exc))} (gave up after the retry horizon)", soft_wrap=True)
        raise typer.Exit(int(ExitCode.STORE_UNAVAILABLE)) from None


@node_app.command("run", epilog=EXIT_CODES_HELP)
def node_run(
    config: ConfigOpt,
    proposal: Annotated[Optional[list[int]], typer.Option(
        help="Serve this proposal (repeat for several; default: every approved one, or one in its vote, "
             "that targets our dataset).", callback=_proposal_ids, metavar="ID")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once the served proposals have nothing left to do.")] = True,
    log_json: LogJsonOpt = None,
) -> None:
    """Serve training rounds for this hospital's dataset, as its policy admits.

    Every step is decided from the chain, so the node can be stopped
    (SIGTERM: it finishes the step under way) and started again at any time.
    An unreachable chain node or IPFS daemon is waited for
    (\\[retry] horizon_seconds in the config, default 10 minutes).
    """

    _run_role(lambda: run_node(config, proposals=proposal, exit_when_done=exit_when_done, log_json=log_json))


@coordinator_app.command("run", epilog=EXIT_CODES_HELP)
def coordinator_run(
    config: ConfigOpt,
    proposal: Annotated[Optional[list[int]], typer.Option(
        help="Drive exactly this proposal (repeat for several; default: every approved proposal that is "
             "not finished, and those still in their vote).", callback=_proposal_ids, metavar="ID")] = None,
    exit_when_done: Annotated[bool, typer.Option(help="Exit once no driven proposal has rounds left.")] = True,
    log_json: LogJsonOpt = None,
) -> None:
    """Drive approved proposals: open, collect, verify, aggregate, close, record.

    Every step is decided from the chain: a restarted coordinator resumes
    where the chain stands, a step another coordinator did first is skipped
    with a log line, and it exits 0 when no proposal is left. An unreachable
    chain node or IPFS daemon is waited for (\\[retry] in the config).
    A mode = "he" plan needs \\[coordinator] decryptor_url (its 'fedchain
    decryptor serve'); without it no round of that proposal is opened.
    """

    _run_role(lambda: run_coordinator(config, proposals=proposal, exit_when_done=exit_when_done, log_json=log_json))


