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

This module wires both roles together, so it lives with the CLI (the only
layer allowed to import ``node`` and ``coordinator`` side by side).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from fedchain.cli.common import console

PPM = 1_000_000


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


@dataclass
class DemoResult:
    run_dir: Path
    rounds: list[DemoRound] = field(default_factory=list)
    pooled_accuracy: float = 0.0
    federated_accuracy: float = 0.0
    excluded: list[str] = field(default_factory=list)
    proposal_id: int = 0
    governance_gas: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def _policies(hospitals, proposer_address: str):
    """Different access policies; the fourth hospital's excludes the demo's purpose.

    Hospitals beyond the fourth (``--hospitals``) admit any approved proposal.
    """
    from fedchain.contracts.bindings import Policy

    one_year = int(time.time()) + 365 * 24 * 3600
    first = [
        Policy(purposes=("diagnosis", "research"), any_approved_proposal=True),
        Policy(any_approved_proposal=True, requesters=(proposer_address,)),
        Policy(purposes=("diagnosis",), proposal_ids=(1,), expiry=one_year, max_epsilon_milli=8000),
        Policy(purposes=("research",), any_approved_proposal=True),
    ]
    return {h: (first[i] if i < len(first) else Policy.open()) for i, h in enumerate(hospitals)}


def run_demo(out: Path | None = None, rounds: int = 5, seed: int = 7, quiet: bool = False,
             hospitals: int = 4, report: bool = True) -> DemoResult:
    """Run the demo end to end and return its measurements (also written to the run folder).

    ``hospitals`` >= 4: the fourth always sits out (its policy excludes the
    purpose); ``report`` writes ``report.html`` (with replay verdicts) at the end.
    """
    from fedchain.errors import ConfigError

    if hospitals < 4:
        raise ConfigError("the demo needs at least 4 hospitals (the fourth shows a policy refusal)")
    from fedchain.contracts.bindings import Chain, FounderSpec, Vote
    from fedchain.coordinator.audit import export_trail
    from fedchain.coordinator.runner import Coordinator
    from fedchain.content import pin_document
    from fedchain.identity import dev_identity
    from fedchain.sample_data import demo_plan, make_demo_data
    from fedchain.node.baseline import train_pooled
    from fedchain.serialize import bytes_to_state_dict
    from fedchain.ipfs.local import LocalStore
    from fedchain.node.dataset import load_dataset, load_schema, metadata_document, schema_hash
    from fedchain.node.runner import HospitalNode
    from fedchain.node.train import evaluate

    t0 = time.perf_counter()
    run_dir = out or Path("runs") / f"demo-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"
    run_dir.mkdir(parents=True, exist_ok=True)
    say = (lambda *_a, **_k: None) if quiet else console.print
    say(f"[bold]fedchain demo[/] — run folder [cyan]{run_dir}[/]")

    # --- consortium on the embedded chain -------------------------------------------
    data = make_demo_data(run_dir / "data", n_hospitals=hospitals, seed=seed)
    names = [h.name for h in data.hospitals]
    members = [dev_identity(i, name=n) for i, n in enumerate(names)]
    # Members use dev accounts 0..n-1; the coordinator and auditor come after them.
    ops = dev_identity(hospitals, name="consortium-ops")  # runs the coordinator
    auditor_index = hospitals + 1
    auditor = dev_identity(auditor_index, name="auditor")  # not a member; reads updates through the plan
    chain = Chain.connect("eth-tester://")
    deployment = chain.deploy(
        chain.dev_accounts[0],
        founders=[FounderSpec(m.name, m.address, m.x25519_public) for m in members + [ops]],
        coordinator=ops.address,
        voting_period_blocks=5,
        quorum_bps=5000,
        approval_bps=6000,
    )
    deployment.save(run_dir / "deployment.json")
    # The auditor is a public dev key (DEV ONLY): say so, and let 'audit replay' find it.
    (run_dir / "auditor.dev.json").write_text(json.dumps(
        {"dev_account": auditor_index,
         "note": f"DEV ONLY: the demo's auditor is anvil's public dev account {auditor_index}"}, indent=2) + "\n")
    fed = chain.attach(deployment)
    store = LocalStore(run_dir / "store")
    result = DemoResult(run_dir=run_dir)
    say(f"deployed on eth-tester (chain id {chain.chain_id}): " + ", ".join(f"{k} {v[:10]}…" for k, v in deployment.addresses.items()))

    # --- datasets with policies ------------------------------------------------------
    policies = _policies(names, members[0].address)
    schemas = {}
    datasets = {}
    for m, h in zip(members, data.hospitals):
        schemas[h.name] = load_schema(h.schema_path)
        datasets[h.name] = load_dataset(h.csv_path, schemas[h.name])
        meta = metadata_document(schemas[h.name], datasets[h.name].n_rows, f"{h.name}: breast-cancer slice (demo)")
        cid, sha = pin_document(store, meta)
        tx = fed.as_(m.account).registry.register_dataset(h.name, cid, sha, schema_hash(schemas[h.name]), policies[h.name])
        result.governance_gas[f"register {h.name}"] = tx.gas_used
        pol = policies[h.name]
        say(f"  {h.name}: {datasets[h.name].n_rows} rows registered; purposes "
            f"{', '.join(pol.purposes) or 'any'}")

    # --- proposal and vote --------------------------------------------------------------
    plan = demo_plan(data.hospitals, seed=seed).with_changes(
        rounds=rounds, auditors=["0x" + auditor.x25519_public.hex()]
    )
    plan_cid, plan_sha = pin_document(store, plan.to_canonical_bytes())
    proposer = fed.as_(members[0].account)
    tx = proposer.proposals.submit_proposal(
        plan_cid=plan_cid, plan_sha256=plan_sha, purpose=plan.purpose, targets=list(plan.datasets),
        rounds=plan.rounds, min_participants=plan.min_participants, round_duration=plan.round_deadline_blocks,
    )
    pid = tx.value
    result.proposal_id = pid
    result.governance_gas["submit proposal"] = tx.gas_used
    votes = {names[2]: Vote.NO, ops.name: Vote.ABSTAIN}  # everyone else votes yes
    for ident in members + [ops]:
        tx = fed.as_(ident.account).proposals.vote(pid, votes.get(ident.name, Vote.YES))
        result.governance_gas.setdefault("vote", tx.gas_used)
    chain.mine(5)
    tx = fed.as_(ops.account).proposals.finalize(pid)
    result.governance_gas["finalize"] = tx.gas_used
    prop = fed.proposals.proposal(pid)
    say(f"proposal {pid} ({plan.purpose}, plan {plan_cid[:12]}…): votes yes {prop.yes} / no {prop.no} / "
        f"abstain {prop.abstain} → [bold]{prop.state.name}[/]")

    # --- rounds ----------------------------------------------------------------------
    nodes = [
        HospitalNode(fed.as_(m.account), store, m, h.name, schemas[h.name], datasets[h.name])
        for m, h in zip(members, data.hospitals)
    ]
    coord = Coordinator(fed.as_(ops.account), store, ops)
    test_data = load_dataset(data.test.csv_path, data.test.schema_path)
    for n in nodes:
        ok, why = n.admission(pid)
        if not ok:
            result.excluded.append(n.dataset_name)
            say(f"  [yellow]{n.dataset_name} sits out:[/] {why}")

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn())
    with Progress(*columns, console=console, disable=quiet, transient=False) as progress:
        task = progress.add_task("federated rounds", total=rounds)
        for r in range(1, rounds + 1):
            t_round = time.perf_counter()
            gas = coord.open_round(pid, r).gas_used
            refused = {}
            for n in nodes:
                progress.update(task, description=f"round {r}: {n.dataset_name} training")
                outcome = n.train_and_commit(pid, r)
                if outcome.committed:
                    gas += outcome.gas_used
                else:
                    refused[n.dataset_name] = outcome.reason
            progress.update(task, description=f"round {r}: aggregating")
            closed = coord.close_round(pid, r)
            if not closed.closed:
                raise RuntimeError(f"round {r} could not close: {closed.reason}")
            gas += closed.gas_used
            for n in nodes:
                if n.dataset_name not in refused:
                    n.evaluate_and_submit(pid, r)
            val = coord.record_metric(pid, r)
            model = bytes_to_state_dict(store.get(closed.aggregate_cid))
            test_acc = evaluate(model, plan, test_data)["accuracy"]
            result.rounds.append(DemoRound(
                round=r, participants=sorted(closed.participants), refused=refused, val_accuracy=val,
                test_accuracy=test_acc, gas=gas, aggregate_cid=closed.aggregate_cid,
                seconds=time.perf_counter() - t_round,
            ))
            progress.update(task, advance=1, description=f"round {r}: test accuracy {test_acc:.3f}")

    # --- pooled baseline, summary, audit trail ----------------------------------------------
    participating = [h for h in data.hospitals if h.name not in result.excluded]
    result.pooled_accuracy = train_pooled(plan, participating, data.test)["accuracy"]
    result.federated_accuracy = result.rounds[-1].test_accuracy
    export_trail(fed, store, run_dir / "trail.jsonl")
    if report:
        _write_report(run_dir, store, fed, auditor, say)
    result.seconds = time.perf_counter() - t0
    _write_summary(result, plan_cid)
    if not quiet:
        _print_summary(result, names, members)
    return result


def _write_report(run_dir: Path, store, fed, auditor, say) -> None:
    """Replay the run from its exported trail and write report.html with the verdicts."""
    from fedchain.coordinator.audit.history import History
    from fedchain.coordinator.audit.replay import Replayer
    from fedchain.coordinator.audit.report import render_report, write_report
    from fedchain.coordinator.audit.trail import read_trail

    trail = read_trail(run_dir / "trail.jsonl")
    history = History(trail.events, trail.header.get("params"))
    verdicts = Replayer(history, store, auditor, chain_id=trail.chain_id,
                        rounds_address=trail.addresses["Rounds"]).run()
    write_report(run_dir / "report.html", render_report(history, verdicts, title="fedchain demo: audit report"))
    n_ok = sum(1 for v in verdicts.rounds if v.ok)
    say(f"audit replay: {n_ok}/{len(verdicts.rounds)} rounds VERIFIED — report in [cyan]{run_dir / 'report.html'}[/]")


def _write_summary(result: DemoResult, plan_cid: str) -> None:
    summary = {
        "proposal": result.proposal_id,
        "plan_cid": plan_cid,
        "excluded": result.excluded,
        "pooled_test_accuracy": result.pooled_accuracy,
        "federated_test_accuracy": result.federated_accuracy,
        "governance_gas": result.governance_gas,
        "seconds": round(result.seconds, 2),
        "rounds": [
            {
                "round": r.round, "participants": r.participants, "refused": r.refused,
                "validation_accuracy": r.val_accuracy, "test_accuracy": r.test_accuracy,
                "gas": r.gas, "aggregate_cid": r.aggregate_cid, "seconds": round(r.seconds, 3),
            }
            for r in result.rounds
        ],
    }
    (result.run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


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
    console.print(f"done in {result.seconds:.1f} s — artifacts in [cyan]{result.run_dir}[/] "
                  f"(summary.json, trail.jsonl, report.html, store/)")
    console.print(f"verify it yourself: fedchain audit replay --trail {result.run_dir / 'trail.jsonl'}")
