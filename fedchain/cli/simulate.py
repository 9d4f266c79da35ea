"""``fedchain simulate``: many hospitals in one process, real transactions, a timed summary.

A :class:`~fedchain.cli.simulation.Simulation` of ``--hospitals`` members (separate
dev identities, one dataset each from the demo data, every policy open to the
plan's purpose), its coordinator and auditor, on the embedded chain or any
JSON-RPC URL (``--chain http://127.0.0.1:8545`` for an anvil started with
``fedchain chain up``). One plan (the demo's, or an MLP with ``--model mlp``) is
proposed, voted by every member and finalized; then ``--rounds`` rounds run with
the real node and coordinator objects. The summary gives per-round wall time,
committed hospitals, the recorded validation metric and gas, the set-up time
and the final model's accuracy on the global test split; ``summary.json`` in the
run folder keeps it.

It measures fedchain itself: nothing is mocked, so the chain, the content store,
encryption and training share the process. ``scripts/bench_flower`` runs the
same jobs side by side with Flower.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer
from rich.table import Table

from fedchain.cli.common import console
from fedchain.cli.simulation import Simulation, settled_heap
from fedchain.errors import ConfigError, FedchainError
from fedchain.node.dataset import load_dataset
from fedchain.node.train import evaluate
from fedchain.plan import MAX_DATASETS, TrainingPlan
from fedchain.sample_data import MAX_HOSPITALS, demo_plan
from fedchain.serialize import bytes_to_state_dict

#: What ``--model`` may name: the demo's logistic regression or an MLP of ``--hidden`` widths.
MODELS = ("logreg", "mlp")


@dataclass
class SimulatedRound:
    round: int
    seconds: float
    committed: int
    refused: int
    validation_metric: float | None
    gas: int


@dataclass
class SimulationSummary:
    hospitals: int
    rounds: list[SimulatedRound] = field(default_factory=list)
    chain: str = ""
    model_parameters: int = 0
    setup_seconds: float = 0.0
    total_seconds: float = 0.0
    test_accuracy: float = 0.0
    blocks: int = 0
    run_dir: str = ""

    @property
    def rounds_after_first(self) -> list[SimulatedRound]:
        return self.rounds[1:]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def simulation_plan(sim: Simulation, *, rounds: int, seed: int, model: str = "logreg",
                    hidden: tuple[int, ...] = (64,), local_epochs: int | None = None) -> TrainingPlan:
    """The demo plan for this consortium, with ``rounds`` and, for ``model="mlp"``, an MLP."""
    if model not in MODELS:
        raise ConfigError(f"--model must be one of {', '.join(MODELS)}, not {model!r}")
    base = demo_plan(sim.data.hospitals, seed=seed)
    changes: dict[str, Any] = {"rounds": rounds}
    if model == "mlp":
        changes["model"] = {"kind": "mlp", "in_features": base.model.in_features, "hidden": list(hidden),
                            "n_classes": base.model.n_classes}
    if local_epochs is not None:
        changes["local_epochs"] = local_epochs
    return sim.plan(base, **changes)


def run_simulation(
    *,
    hospitals: int,
    rounds: int,
    chain_url: str = "eth-tester://",
    seed: int = 7,
    out: Path | None = None,
    model: str = "logreg",
    hidden: tuple[int, ...] = (64,),
    local_epochs: int | None = None,
    fsync: bool = True,
    progress: Callable[[str], None] | None = None,
) -> SimulationSummary:
    """Set up the consortium, run ``rounds`` rounds, return (and write) the summary."""
    if not 2 <= hospitals <= min(MAX_HOSPITALS, MAX_DATASETS):
        raise ConfigError(f"--hospitals must be from 2 to {min(MAX_HOSPITALS, MAX_DATASETS)} "
                          f"(a plan targets at most {MAX_DATASETS} datasets), not {hospitals}")
    if rounds < 1:
        raise ConfigError(f"--rounds must be at least 1, not {rounds}")
    if model not in MODELS:
        raise ConfigError(f"--model must be one of {', '.join(MODELS)}, not {model!r}")
    say = progress or (lambda _msg: None)
    run_dir = out or Path("runs") / f"simulate-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    t0 = time.perf_counter()
    say(f"setting up {hospitals} hospitals on {chain_url}")
    sim = Simulation.create(run_dir, hospitals=hospitals, seed=seed, chain_url=chain_url, fsync=fsync)
    sim.register_datasets(description="simulation")
    plan = simulation_plan(sim, rounds=rounds, seed=seed, model=model, hidden=hidden, local_epochs=local_epochs)
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    summary = SimulationSummary(hospitals=hospitals, chain=chain_url, model_parameters=plan.model.size.parameters,
                                setup_seconds=time.perf_counter() - t0, run_dir=str(run_dir))
    done = None
    with settled_heap():
        for r in range(1, rounds + 1):
            t = time.perf_counter()
            done = sim.run_round(pid, r, nodes, coord, start_next=r < rounds)
            if not done.result.closed:
                raise FedchainError(f"round {r} did not close: {done.result.reason}")
            summary.rounds.append(SimulatedRound(r, time.perf_counter() - t, len(done.committed), len(done.refused),
                                                 done.validation_metric, done.gas))
            say(f"round {r}: {summary.rounds[-1].seconds:.2f} s, {len(done.committed)} committed")
    assert done is not None
    final = bytes_to_state_dict(sim.store.get(done.result.aggregate_cid))
    test = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    summary.test_accuracy = evaluate(final, plan, test)["accuracy"]
    summary.blocks = sim.chain.block_number
    summary.total_seconds = time.perf_counter() - t0
    (run_dir / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return summary


def print_summary(s: SimulationSummary) -> None:
    t = Table(title=f"{s.hospitals} hospitals on {s.chain} ({s.model_parameters:,} parameters)")
    for col in ("round", "seconds", "committed", "validation", "gas"):
        t.add_column(col, justify="right")
    for r in s.rounds:
        t.add_row(str(r.round), f"{r.seconds:.2f}", str(r.committed),
                  f"{r.validation_metric:.3f}" if r.validation_metric is not None else "-", f"{r.gas:,}")
    console.print(t)
    later = s.rounds_after_first
    mean_later = sum(r.seconds for r in later) / len(later) if later else 0.0
    console.print(
        f"set-up {s.setup_seconds:.1f} s; first round {s.rounds[0].seconds:.2f} s"
        + (f", later rounds {mean_later:.2f} s on average" if later else "")
        + f"; total {s.total_seconds:.1f} s; {s.blocks} blocks; "
        f"final global-test accuracy [bold]{s.test_accuracy:.3f}[/] — summary in [cyan]{s.run_dir}/summary.json[/]"
    )


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate)


def simulate(
    hospitals: Annotated[int, typer.Option(help="Hospitals in the consortium, each its own member and dataset.")] = 10,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 5,
    chain: Annotated[str, typer.Option(help="eth-tester:// (embedded) or a JSON-RPC URL such as http://127.0.0.1:8545.")] = "eth-tester://",
    model: Annotated[str, typer.Option(help="logreg (the demo's) or mlp.")] = "logreg",
    hidden: Annotated[str, typer.Option(help="MLP hidden widths, comma-separated (with --model mlp).")] = "64",
    local_epochs: Annotated[Optional[int], typer.Option(help="Local epochs per round (default: the demo plan's 3).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for the data split and training.")] = 7,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/simulate-<timestamp>).")] = None,
    fsync: Annotated[bool, typer.Option(help="fsync the embedded store's writes (as a node does).")] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
) -> None:
    """Many hospitals in one process with real transactions; prints per-round times and the final accuracy."""

    try:
        widths = tuple(int(w) for w in hidden.split(",") if w.strip())
    except ValueError:
        raise ConfigError(f"--hidden takes comma-separated integers, not {hidden!r}") from None
    say = (lambda _m: None) if json_out else (lambda m: console.print(m, highlight=False))
    summary = run_simulation(hospitals=hospitals, rounds=rounds, chain_url=chain, seed=seed, out=out, model=model,
                             hidden=widths, local_epochs=local_epochs, fsync=fsync, progress=say)
    if json_out:
        print(json.dumps(summary.to_dict(), indent=2))
    else:
        print_summary(summary)
