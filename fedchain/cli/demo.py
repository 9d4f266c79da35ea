"""``fedchain demo``: the whole product in one process, on the embedded defaults.

Four hospitals hold non-IID slices of scikit-learn's breast-cancer data. Each
registers its dataset with a different access policy; hospital D only admits
*research* purposes and so sits out of the *diagnosis* proposal, visibly.
Hospital A proposes a plan, members vote (one votes no; it still passes), and
the coordinator drives the rounds: every node checks its policy on chain,
trains locally, seals its update for the coordinator and the auditor, pins it
and commits it; the coordinator verifies, aggregates, publishes and closes.
At the end the run folder holds the data split, the content store, the
exported audit trail and a summary; the federated model is compared with the
same model trained on the participating hospitals' pooled data.

``--mode secagg`` runs every round through the SecureRounds phases (the
coordinator only ever holds masked vectors and their sum; one hospital may
vanish after its masked input); ``--mode he`` has the nodes CKKS-encrypt under
the auditor's public context, the coordinator sum ciphertexts, and the auditor
(DEV: in this process) decrypt only the aggregate. The replay at the end checks
every round in the mode it ran.

This module wires both roles together, so it lives with the CLI (the only
layer allowed to import ``node`` and ``coordinator`` side by side).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedchain.cli.attacks import ATTACKS, Attack
from fedchain.cli.common import console
from fedchain.cli.robustness import pick_attackers, rule_plan_tables
from fedchain.cli.dpbench import federated_run, without_privacy
from fedchain.cli.simulation import Simulation, settled_heap
from fedchain.contracts.bindings import Policy, Vote
from fedchain.coordinator.audit import export_trail
from fedchain.coordinator.audit.anchor import check_offline
from fedchain.coordinator.audit.history import History
from fedchain.coordinator.audit.replay import Replayer
from fedchain.coordinator.audit.plans import plans_from_documents
from fedchain.coordinator.audit.report import render_report, write_report
from fedchain.coordinator.audit.trail import read_trail
from fedchain.errors import ConfigError, FedchainError
from fedchain.node.baseline import train_pooled
from fedchain.node.dataset import load_dataset
from fedchain.node.train import evaluate
from fedchain.plan import AGGREGATION_MODES
from fedchain.sample_data import demo_plan
from fedchain.serialize import bytes_to_state_dict
from fedchain.usecases import privacy as uc_privacy

#: The demo's range of hospitals (the fourth sits out by policy; 50 keeps a run within minutes).
MIN_HOSPITALS, MAX_HOSPITALS = 4, 50


@dataclass
class DemoRound:
    round: int
    participants: list[str]
    refused: dict[str, str]
    val_accuracy: float | None
    test_accuracy: float
    gas: int
    aggregate_cid: str
    seconds: float
    decisions: list[str] = field(default_factory=list)  # "hospital-f excluded (KRUM_NOT_SELECTED 12.3)"


@dataclass
class DemoResult:
    run_dir: Path
    rounds: list[DemoRound] = field(default_factory=list)
    pooled_accuracy: float = 0.0
    federated_accuracy: float = 0.0
    excluded: list[str] = field(default_factory=list)
    proposal_id: int = 0
    checkpoint: tuple[int, str] = (0, "")  # the last block the trail covers and its hash
    governance_gas: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    strategy: str = "fedavg"
    attack: str = ""
    attackers: list[str] = field(default_factory=list)
    clean: "DemoResult | None" = None  # the same run without attackers (with --attackers)
    mode: str = "plain"
    replay: list[str] = field(default_factory=list)  # each round's replay verdict (with report=True)
    dp: dict | None = None  # with --dp: mode, epsilon, the non-private accuracy and each dataset's budget


def _policies(names: list[str], proposer_address: str, dp: float | None = None) -> dict[str, Policy]:
    """Different access policies; the fourth hospital's excludes the demo's purpose.

    Hospitals beyond the fourth (``--hospitals``) admit any approved proposal. With ``dp`` every
    dataset has a privacy budget of ``dp`` (the plan spends at most that over the run), except the
    third hospital's, which is half of it: its node refuses once a round would exceed it.
    """
    one_year = int(time.time()) + 365 * 24 * 3600
    first = [
        Policy(purposes=("diagnosis", "research"), any_approved_proposal=True),
        Policy(any_approved_proposal=True, requesters=(proposer_address,)),
        Policy(purposes=("diagnosis",), proposal_ids=(1,), expiry=one_year),
        Policy(purposes=("research",), any_approved_proposal=True),
    ]
    out = {h: (first[i] if i < len(first) else Policy.open()) for i, h in enumerate(names)}
    if dp is not None:
        milli = max(1, round(dp * 1000))
        out = {h: replace(p, max_epsilon_milli=milli // 2 if i == 2 else milli) for i, (h, p) in enumerate(out.items())}
    return out


def run_demo(out: Path | None = None, rounds: int = 5, seed: int = 7, quiet: bool = False,
             hospitals: int | None = None, report: bool = True, *, attackers: int = 0, attack: str = "sign-flip",
             strategy: str | None = None, mode: str = "plain", dp: float | None = None,
             dp_mode: str = "client", attackers_from: str = "smallest") -> DemoResult:
    """Run the demo end to end and return its measurements (also written to the run folder).

    ``hospitals`` in 4..MAX_HOSPITALS (default 4, or 7 with attackers): the
    fourth always sits out (its policy excludes the purpose); ``report`` writes
    ``report.html`` (with replay verdicts) at the end. ``mode``: ``plain``,
    ``secagg`` or ``he`` (see the plan's ``mode``).

    ``strategy`` names an aggregation rule of :data:`fedchain.cli.robustness.RULES`
    (default FedAvg). ``attackers`` > 0: that many of the participating hospitals
    (the last ones, the smallest; with ``attackers_from="largest"`` the ones with the most
    rows) run :class:`~fedchain.cli.attacks.AttackingNode` with
    ``attack``; the same demo then runs again without attackers (into
    ``<run>/clean``) and both accuracies are printed side by side with what the
    rule excluded each round.

    ``dp``: train with differential privacy (``dp_mode``: client, dpsgd or server)
    at a target ε of ``dp`` per dataset over the run; every dataset gets that budget
    on chain (the third hospital half of it, so it is refused part-way), and the
    summary sets the accuracy next to the same plan without privacy (trained off
    chain) and the ε each dataset spent.
    """
    if dp is not None and not (dp > 0 and dp <= 1000):
        raise ConfigError(f"--dp must be an epsilon in (0, 1000], not {dp}")
    if dp_mode not in ("client", "dpsgd", "server"):
        raise ConfigError(f"--dp-mode must be client, dpsgd or server, not {dp_mode!r}")
    if dp is not None and (attackers or mode != "plain"):
        raise ConfigError("--dp runs with mode plain and no attackers (one comparison at a time)")
    if attackers_from not in ("smallest", "largest"):
        raise ConfigError(f"--attackers-from must be smallest or largest, not {attackers_from!r}")
    if hospitals is None:
        hospitals = 7 if attackers else MIN_HOSPITALS
    if attack not in ATTACKS:
        raise ConfigError(f"unknown attack {attack!r} (choose one of: {', '.join(ATTACKS)})")
    if attackers < 0 or attackers > hospitals - 2:
        raise ConfigError(f"--attackers must be from 0 to {hospitals - 2} with {hospitals} hospitals (one sits out "
                          f"by policy and at least one must be honest), not {attackers}")
    if strategy is not None:  # refuse a rule the demo's consortium cannot run before anything is written
        demo_plan(seed=seed).with_changes(datasets=[f"h{i}" for i in range(hospitals)],
                                          min_participants=hospitals - 1,
                                          **rule_plan_tables(strategy, hospitals - 1))
    if not MIN_HOSPITALS <= hospitals <= MAX_HOSPITALS:
        raise ConfigError(
            f"the demo runs {MIN_HOSPITALS} to {MAX_HOSPITALS} hospitals (the fourth shows a policy refusal), "
            f"not {hospitals}"
        )
    if rounds < 1:
        raise ConfigError(f"the demo needs at least one round, not {rounds}")
    if mode not in AGGREGATION_MODES:
        raise ConfigError(f"the demo's mode is one of {', '.join(AGGREGATION_MODES)}, not {mode!r}")
    if mode != "plain" and (attackers or strategy):
        raise ConfigError(f"--attackers and --strategy need mode plain: under {mode} the coordinator never sees "
                          "one update, so no robust rule can judge them")
    t0 = time.perf_counter()
    run_dir = out or Path("runs") / f"demo-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    say = (lambda *_a, **_k: None) if quiet else console.print
    say(f"[bold]fedchain demo[/] — run folder [cyan]{run_dir}[/]")

    # --- consortium on the embedded chain -------------------------------------------
    sim = Simulation.create(run_dir, hospitals=hospitals, seed=seed)
    names = sim.names
    sim.deployment.save(run_dir / "deployment.json")
    # The auditor is a public dev key (DEV ONLY): say so, and let 'audit replay' find it.
    auditor_index = hospitals + 1
    (run_dir / "auditor.dev.json").write_text(json.dumps(
        {"dev_account": auditor_index,
         "note": f"DEV ONLY: the demo's auditor is the public dev account {auditor_index}"}, indent=2) + "\n")
    result = DemoResult(run_dir=run_dir, mode=mode)
    say(f"deployed on eth-tester (chain id {sim.chain.chain_id}): "
        + ", ".join(f"{k} {v[:10]}…" for k, v in sim.deployment.addresses.items()))

    # --- datasets with policies ------------------------------------------------------
    policies = _policies(names, sim.members[0].address, dp)
    sim.register_datasets(policies)
    for name in names:
        pol = policies[name]
        budget = f"; privacy budget ε {pol.max_epsilon_milli / 1000:g}" if pol.max_epsilon_milli else ""
        say(f"  {name}: {sim.datasets[name].n_rows} rows registered; purposes {', '.join(pol.purposes) or 'any'}"
            f"{budget}")

    # --- proposal and vote --------------------------------------------------------------
    rule = strategy or "fedavg"
    base = demo_plan(sim.data.hospitals, seed=seed)
    if mode == "secagg":
        plan = sim.secagg_plan(base, max_dropouts=1, rounds=rounds, min_participants=2)
        say(f"mode secagg: SecureRounds phases of {plan.secagg.phase_blocks} blocks, threshold "
            f"{len(plan.datasets) - 1} of {len(plan.datasets)}")
    elif mode == "he":
        plan = sim.he_plan(base, rounds=rounds, min_participants=2)
        say(f"mode he: nodes encrypt under the auditor's CKKS context {plan.he.context_cid[:12]}…; the auditor "
            "decrypts only the aggregate (DEV: in this process)")
    elif dp is None:
        plan = sim.plan(base, rounds=rounds, **(rule_plan_tables(rule, hospitals - 1) if strategy else {}))
    else:  # a hospital may run out of budget part-way: two participants are enough to close a round
        plan = sim.plan(base, rounds=rounds, min_participants=2, privacy={"mode": dp_mode, "epsilon": dp},
                        **(rule_plan_tables(rule, hospitals - 1) if strategy else {}))
        say(f"differential privacy: {dp_mode}, at most ε {dp:g} per dataset over the run (δ {plan.privacy.delta:g})")
    votes = {names[2]: Vote.NO, sim.ops.name: Vote.ABSTAIN}  # everyone else votes yes
    pid = sim.approve(plan, votes=votes)
    result.proposal_id = pid
    prop = sim.fed().proposals.proposal(pid)
    say(f"proposal {pid} ({plan.purpose}, plan {prop.plan_cid[:12]}…): votes yes {prop.yes} / no {prop.no} / "
        f"abstain {prop.abstain} → [bold]{prop.state.name}[/]")

    # --- rounds ----------------------------------------------------------------------
    sits_out = names[3]  # its policy admits research only (see _policies)
    result.strategy, result.attack = rule, attack if attackers else ""
    result.attackers = pick_attackers([n for n in names if n != sits_out],
                                      {h.name: h.n_rows for h in sim.data.hospitals}, attackers,
                                      largest=attackers_from == "largest")
    nodes = sim.nodes({n: Attack(attack) for n in result.attackers})
    if result.attackers:
        say(f"[red]malicious:[/] {', '.join(result.attackers)} ({attack}); aggregation rule [bold]{rule}[/]")
    coord = sim.coordinator()
    by_addr = {m.address.lower(): n for m, n in zip(sim.members, names)}
    test_data = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    for n in nodes:
        check = n.admission(pid)
        if not check:
            result.excluded.append(n.dataset_name)
            say(f"  [yellow]{n.dataset_name} sits out:[/] {check.words}")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress, settled_heap():
        task = progress.add_task("federated rounds", total=rounds)
        for r in range(1, rounds + 1):
            t_round = time.perf_counter()
            done = sim.run_round(pid, r, nodes, coord, start_next=r < rounds,
                                 progress=lambda what: progress.update(task, description=what))
            if not done.result.closed:
                raise FedchainError(f"round {r} could not close: {done.result.reason}")
            model = bytes_to_state_dict(sim.store.get(done.result.aggregate_cid))
            test_acc = evaluate(model, plan, test_data)["accuracy"]
            result.rounds.append(DemoRound(
                round=r, participants=sorted(done.result.participants), refused=done.refused,
                val_accuracy=done.validation_metric, test_accuracy=test_acc, gas=done.gas,
                aggregate_cid=done.result.aggregate_cid, seconds=time.perf_counter() - t_round,
                decisions=[f"{by_addr.get(d.participant.lower(), d.participant)} {d.action} ({d.reason} {d.value:.3g})"
                           for d in done.result.decisions if d.action != "trimmed"],
            ))
            progress.update(task, advance=1, description=f"round {r}: test accuracy {test_acc:.3f}")
            for name, why in done.refused.items():
                if name not in result.excluded:
                    say(f"  [yellow]round {r}: {name} refused:[/] {why}")
    result.governance_gas = dict(sim.gas)

    # --- pooled baseline, summary, audit trail ----------------------------------------------
    participating = [h for h in sim.data.hospitals if h.name not in result.excluded]
    result.pooled_accuracy = train_pooled(without_privacy(plan), participating, sim.data.test)["accuracy"]
    result.federated_accuracy = result.rounds[-1].test_accuracy
    fed = sim.fed()
    if dp is not None:
        reference = federated_run(without_privacy(plan), participating, sim.data.test)
        result.dp = {"mode": dp_mode, "epsilon": dp, "delta": plan.privacy.delta,
                     "non_private_accuracy": reference["accuracy"],
                     "budgets": [uc_privacy.budget(fed, name).to_dict() for name in names]}
    end = sim.chain.block_number
    (run_dir / "trail.jsonl").unlink(missing_ok=True)  # a fresh chain: never append to an earlier run's trail
    export_trail(fed, sim.store, run_dir / "trail.jsonl", to_block=end)
    result.checkpoint = (end, sim.chain.block_hash(end))
    if report:
        result.replay = _write_report(run_dir, sim.store, result.checkpoint[1], sim.auditor, say)
    if attackers:
        say("running the same demo without attackers, for comparison …")
        result.clean = run_demo(out=run_dir / "clean", rounds=rounds, seed=seed, quiet=True, hospitals=hospitals,
                                report=False, strategy=strategy)
    result.seconds = time.perf_counter() - t0
    _write_summary(result, prop.plan_cid)
    if not quiet:
        _print_summary(result, names, sim.members)
        if result.clean is not None:
            _print_attack(result)
    return result


def _print_attack(result: DemoResult) -> None:
    """Clean vs attacked accuracy per round, side by side, and what the rule did."""
    clean = result.clean
    assert clean is not None
    t = Table(title=f"{len(result.attackers)} malicious ({result.attack}) vs clean, rule {result.strategy}")
    for col in ("round", "clean test acc", "attacked test acc", "excluded / clipped by the rule"):
        t.add_column(col)
    for a, c in zip(result.rounds, clean.rounds):
        t.add_row(str(a.round), f"{c.test_accuracy:.3f}", f"{a.test_accuracy:.3f}", "; ".join(a.decisions) or "-")
    console.print(t)
    diff = (result.federated_accuracy - clean.federated_accuracy) * 100
    console.print(f"final global test accuracy: clean [bold]{clean.federated_accuracy:.3f}[/], attacked "
                  f"[bold]{result.federated_accuracy:.3f}[/] ({diff:+.1f} points) with {result.strategy}")


def _write_report(run_dir: Path, store, checkpoint: str, auditor, say) -> list[str]:
    """Replay the run from its exported trail (anchored to the last block's hash) and write report.html."""
    trail = read_trail(run_dir / "trail.jsonl")
    history = History(trail.events, trail.header.get("params"))
    verdicts = Replayer(history, store, auditor, chain_id=trail.chain_id, rounds_address=trail.addresses["Rounds"],
                        documents=trail.documents, anchor=check_offline(trail, checkpoint),
                        secure_address=trail.addresses.get("SecureRounds", "")).run()
    write_report(run_dir / "report.html", render_report(history, verdicts, title="fedchain demo: audit report",
                                                        plans=plans_from_documents(history, trail.documents)))
    n_ok = sum(1 for v in verdicts.rounds if v.ok)
    say(f"audit replay: {n_ok}/{len(verdicts.rounds)} rounds VERIFIED, trail {verdicts.anchor.status} — "
        f"report in [cyan]{run_dir / 'report.html'}[/]")
    return [v.status for v in verdicts.rounds]


def _write_summary(result: DemoResult, plan_cid: str) -> None:
    summary = {
        "proposal": result.proposal_id,
        "plan_cid": plan_cid,
        "checkpoint": {"block": result.checkpoint[0], "hash": result.checkpoint[1]},
        "excluded": result.excluded,
        "pooled_test_accuracy": result.pooled_accuracy,
        "federated_test_accuracy": result.federated_accuracy,
        "governance_gas": result.governance_gas,
        "differential_privacy": result.dp,
        "seconds": round(result.seconds, 2),
        "strategy": result.strategy,
        "attack": result.attack,
        "attackers": result.attackers,
        "clean_test_accuracy": result.clean.federated_accuracy if result.clean else None,
        "rounds": [
            {
                "round": r.round, "participants": r.participants, "refused": r.refused,
                "validation_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                "gas": r.gas, "aggregate_cid": r.aggregate_cid, "seconds": round(r.seconds, 3),
                "decisions": r.decisions,
            }
            for r in result.rounds
        ],
    }
    (result.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _print_privacy(result: DemoResult) -> None:
    dp = result.dp
    diff = (result.federated_accuracy - dp["non_private_accuracy"]) * 100
    console.print(f"differential privacy ({dp['mode']}, target ε {dp['epsilon']:g}, δ {dp['delta']:g}): test accuracy "
                  f"[bold]{result.federated_accuracy:.3f}[/] vs [bold]{dp['non_private_accuracy']:.3f}[/] for the same "
                  f"plan without privacy (off chain) ({diff:+.1f} points)")
    t = Table(title="privacy budget per dataset (from the chain)")
    for col in ("dataset", "budget ε", "spent ε", "left ε", "rounds charged"):
        t.add_column(col)
    for b in dp["budgets"]:
        rounds = sum(len(p["rounds"]) for p in b["proposals"])
        t.add_row(b["dataset"], f"{b['allowed']:g}" if b["allowed"] is not None else "none", f"{b['spent']:.4f}",
                  f"{b['left']:.4f}" if b["left"] is not None else "-", str(rounds))
    console.print(t)


def _print_summary(result: DemoResult, names, members) -> None:
    by_addr = {m.address.lower(): n for m, n in zip(members, names)}
    t = Table(title=f"proposal {result.proposal_id}: rounds")
    for col in ("round", "participants", "val acc", "test acc", "gas", "aggregate CID"):
        t.add_column(col)
    for r in result.rounds:
        t.add_row(
            str(r.round),
            ", ".join(by_addr.get(p.lower(), p[:10]) for p in r.participants),
            f"{r.val_accuracy:.3f}" if r.val_accuracy is not None else "-",
            f"{r.test_accuracy:.3f}",
            f"{r.gas:,}",
            r.aggregate_cid,
        )
    console.print(t)
    diff = (result.federated_accuracy - result.pooled_accuracy) * 100
    console.print(
        f"global test accuracy: federated [bold]{result.federated_accuracy:.3f}[/] vs pooled "
        f"[bold]{result.pooled_accuracy:.3f}[/] ({diff:+.1f} points); "
        f"sat out: {', '.join(result.excluded) or 'nobody'}"
    )
    if result.dp is not None:
        _print_privacy(result)
    console.print(f"done in {result.seconds:.1f} s — artifacts in [cyan]{result.run_dir}[/] "
                  f"(summary.json, trail.jsonl, report.html, store/)")
    console.print(f"the chain ended at block {result.checkpoint[0]}, hash {result.checkpoint[1]}")
    console.print(f"verify it yourself: fedchain audit replay --trail {result.run_dir / 'trail.jsonl'} "
                  f"--checkpoint {result.checkpoint[1]}")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default: runs/demo-<timestamp>).")] = None,
    rounds: Annotated[int, typer.Option(help="Training rounds.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed for the data split and training.")] = 7,
    hospitals: Annotated[Optional[int], typer.Option(
        help="Number of hospitals (at least 4; the fourth sits out by policy). Default 4, or 7 with --attackers.")] = None,
    attackers: Annotated[int, typer.Option(help="How many participating hospitals are malicious (runs a clean "
                                                "comparison too).")] = 0,
    attack: Annotated[str, typer.Option(help="sign-flip, scale, noise, label-flip or free-ride.")] = "sign-flip",
    attackers_from: Annotated[str, typer.Option(
        help="Which hospitals attack: smallest (the fewest rows, default) or largest (the most rows: the most "
             "weight in a weighted mean).")] = "smallest",
    strategy: Annotated[Optional[str], typer.Option(
        help="Aggregation rule: fedavg, median, trimmed_mean, krum, multikrum, normbound, foolsgold.")] = None,
    mode: Annotated[str, typer.Option(help="How updates reach the aggregate: plain, secagg (secure aggregation "
                                           "with on-chain phases) or he (CKKS homomorphic sum).")] = "plain",
    dp: Annotated[Optional[float], typer.Option(
        "--dp", metavar="EPSILON",
        help="Train with differential privacy at this ε per dataset over the run; every dataset gets it as its "
             "budget on chain (the third hospital half of it, to show the refusal).")] = None,
    dp_mode: Annotated[str, typer.Option(help="With --dp: client (clip + noise at each node), dpsgd (Opacus) "
                                              "or server (the coordinator noises the aggregate).")] = "client",
) -> None:
    """Hospitals train one model on the embedded chain + store; prints a summary and writes an audit report.

    With --attackers K, K hospitals attack (--attack) and the chosen rule (--strategy) defends: clean and attacked
    accuracy are printed side by side with who the rule excluded each round."""

    run_demo(out=out, rounds=rounds, seed=seed, hospitals=hospitals, attackers=attackers, attack=attack,
             strategy=strategy, mode=mode, dp=dp, dp_mode=dp_mode, attackers_from=attackers_from)
