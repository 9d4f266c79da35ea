"""The in-process consortium at scale and ``fedchain simulate``: members beyond the founders are
admitted by motion, plans give every hospital time to commit, and the command runs rounds for real
and refuses what it cannot run."""

from __future__ import annotations

import json

import pytest
import torch

import fedchain.cli.simulation as simulation
from fedchain.cli import main
from fedchain.cli.simulate import run_simulation
from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import Chain, FounderSpec
from fedchain.identity import dev_identity
from fedchain.plan import MAX_DATASETS
from fedchain.sample_data import demo_plan


def test_founder_limit_is_the_contracts():
    chain = Chain.connect("eth-tester://")
    ident = dev_identity(0, name="one")
    dep = chain.deploy(chain.dev_accounts[0], founders=[FounderSpec("one", ident.address, ident.x25519_public)],
                       coordinator=ident.address)
    fed = chain.attach(dep)
    assert int(fed.consortium.call("MAX_FOUNDERS")) == simulation.MAX_FOUNDERS


def test_members_beyond_the_founder_limit_are_admitted_by_motion(tmp_path, monkeypatch):
    # A founder limit of 3 (2 hospitals + the coordinator): hospitals 3 and 4 join by motion,
    # voted by enough founders for the quorum, and then train like the others.
    monkeypatch.setattr(simulation, "MAX_FOUNDERS", 3)
    sim = Simulation.create(tmp_path, hospitals=4, seed=3, fsync=False)
    fed = sim.fed()
    assert [m.address for m in fed.consortium.members()] == [m.address for m in sim.members[:2]] + [
        sim.ops.address] + [m.address for m in sim.members[2:]]
    rm = fed.read_model()
    admitted = [mo for mo in rm.motions.values() if mo.final_state == "Approved"]
    assert sorted(mo.target for mo in admitted) == sorted(m.address.lower() for m in sim.members[2:])
    for mo in admitted:  # each motion had the votes its quorum needed, all from earlier members
        assert len(mo.votes) * 10_000 >= mo.eligible * 5000 and all(mo.votes.values())
    sim.register_datasets()
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=3), rounds=1))
    done = sim.run_round(pid, 1, sim.nodes(), sim.coordinator())
    assert done.result.closed and sorted(done.committed) == sorted(sim.names)


def test_plans_leave_every_hospital_time_to_commit(tmp_path):
    sim = Simulation.create(tmp_path, hospitals=2, seed=3, fsync=False)
    base = demo_plan(sim.data.hospitals, seed=3)
    assert sim.plan(base).round_deadline_blocks == max(base.round_deadline_blocks, sim.round_blocks)
    sim.members = sim.members * 30  # as if 60 hospitals
    assert sim.plan(base).round_deadline_blocks == sim.round_blocks > len(sim.members)
    assert sim.plan(base, round_deadline_blocks=7).round_deadline_blocks == 7  # a plan's explicit choice stays


def test_simulate_command_runs_rounds_and_writes_its_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["simulate", "--hospitals", "3", "--rounds", "2", "--out", str(out), "--no-fsync", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((out / "summary.json").read_text())
    assert printed == summary
    assert summary["hospitals"] == 3 and [r["round"] for r in summary["rounds"]] == [1, 2]
    assert all(r["committed"] == 3 and r["refused"] == 0 and r["gas"] > 0 for r in summary["rounds"])
    assert all(0.5 < r["validation_metric"] <= 1.0 for r in summary["rounds"])
    assert 0.8 < summary["test_accuracy"] <= 1.0 and summary["blocks"] > 0


def test_simulate_mlp_trains_the_model_it_names(tmp_path):
    s = run_simulation(hospitals=2, rounds=1, out=tmp_path, model="mlp", hidden=(8, 4), local_epochs=1, fsync=False)
    assert s.model_parameters == 30 * 8 + 8 + 8 * 4 + 4 + 4 * 2 + 2
    assert s.rounds[0].committed == 2


@pytest.mark.parametrize(
    "args, words",
    [
        (["--hospitals", "1"], "--hospitals must be from 2"),
        (["--hospitals", str(MAX_DATASETS + 1)], f"at most {MAX_DATASETS} datasets"),
        (["--rounds", "0"], "--rounds must be at least 1"),
        (["--model", "transformer"], "--model must be one of logreg, mlp"),
        (["--model", "mlp", "--hidden", "8,x"], "--hidden takes comma-separated integers"),
    ],
)
def test_simulate_refuses_what_it_cannot_run(tmp_path, capsys, args, words):
    out = tmp_path / "run"
    assert main(["simulate", "--out", str(out), *args]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert words in err
    assert not (out / "summary.json").exists()


@pytest.mark.anvil
def test_simulate_on_anvil(tmp_path, anvil_node):
    # The same consortium and rounds over JSON-RPC: the node's own simulation, signed raw transactions.
    s = run_simulation(hospitals=2, rounds=2, chain_url=anvil_node.url, out=tmp_path, fsync=False)
    assert s.chain == anvil_node.url
    assert [r.committed for r in s.rounds] == [2, 2] and all(r.gas > 0 for r in s.rounds)
    assert 0.8 < s.test_accuracy <= 1.0


def test_simulate_refuses_a_chain_that_is_not_a_dev_chain(tmp_path, monkeypatch):
    # The simulation's identities are public dev keys: on any other chain it stops before writing anything.
    import fedchain.identity as identity

    monkeypatch.setattr(identity, "DEV_CHAIN_IDS", {31337: "anvil"})  # as if eth-tester were a real chain
    out = tmp_path / "run"
    with pytest.raises(identity.DevKeyOnRealChain, match="DEV ONLY"):
        run_simulation(hospitals=2, rounds=1, out=out)
    assert not out.exists()


def test_the_simulated_nodes_fetch_each_aggregate_once_and_share_only_what_they_asked_for(tmp_path, monkeypatch):
    """A simulation's nodes hand a checked aggregate to each other (one fetch per round, not one per node),
    and a shared entry answers only a node asking for the same CID and sha256 within its size limit."""
    import fedchain.node.runner as node_runner
    from fedchain.node.runner import SharedAggregates

    sim = Simulation.create(tmp_path, hospitals=3, seed=7, fsync=False)
    sim.register_datasets()
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=2, min_participants=2))
    nodes, coord = sim.nodes(), sim.coordinator()
    fetched = []
    real = node_runner.fetch_document

    threads = set()

    def counted(store, cid, sha256, **kw):
        fetched.append(cid)
        threads.add(torch.get_num_threads())
        return real(store, cid, sha256, **kw)

    monkeypatch.setattr(node_runner, "fetch_document", counted)
    before = torch.get_num_threads()
    for r in (1, 2):
        assert sim.run_round(pid, r, nodes, coord).result.closed
    assert threads == {1} and torch.get_num_threads() == before  # one torch thread per party during a round
    aggregates = {sim.fed().read_model().round(pid, r).closed["aggregate_cid"] for r in (1, 2)}
    assert sorted(c for c in fetched if c in aggregates) == sorted(aggregates)  # each once, by one node
    a, b = nodes[0].aggregate(pid, 2), nodes[2].aggregate(pid, 2)
    assert a is b

    shared = SharedAggregates(keep=1)
    shared.put("bafyA", b"\x01" * 32, 100, {"w": 1})
    assert shared.get("bafyA", b"\x01" * 32, 100) == {"w": 1}
    assert shared.get("bafyA", b"\x02" * 32, 100) is None  # another hash: fetch and check it yourself
    assert shared.get("bafyB", b"\x01" * 32, 100) is None
    assert shared.get("bafyA", b"\x01" * 32, 99) is None  # this node's plan allows fewer bytes
    shared.put("bafyC", b"\x03" * 32, 1, {})
    assert shared.get("bafyA", b"\x01" * 32, 100) is None  # bounded: only the last `keep`


def test_the_simulated_evaluations_run_on_the_workers_and_are_submitted_in_node_order(tmp_path, monkeypatch):
    """The forward passes of a round's evaluations run on the worker threads; the chain hears them in node
    order from the main thread, each with the metric a node evaluating alone would submit."""
    import threading

    import fedchain.node.runner as node_runner
    from fedchain.node.dataset import split_for_plan
    from fedchain.node.runner import metric_to_ppm

    sim = Simulation.create(tmp_path, hospitals=3, seed=7, fsync=False)
    sim.register_datasets()
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=1, min_participants=2)
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    where = []
    real = node_runner.evaluate
    monkeypatch.setattr(node_runner, "evaluate", lambda *a: where.append(threading.current_thread().name) or real(*a))
    assert sim.run_round(pid, 1, nodes, coord).result.closed
    assert len(where) == 3 and all(name.startswith("sim-eval") for name in where)
    events = [e for e in sim.fed().events() if e.event == "EvaluationSubmitted"]
    assert [e.args["member"].lower() for e in events] == [n.identity.address.lower() for n in nodes]
    model = nodes[0].aggregate(pid, 1)
    for n, e in zip(nodes, events):
        _train, val = split_for_plan(n.data, plan, n.dataset_name)
        assert e.args["metricPpm"] == metric_to_ppm(real(model, plan, val)["accuracy"])
        assert e.args["sampleCount"] == val.n_rows


def _three_rounds(root):
    sim = Simulation.create(root, hospitals=3, seed=7, fsync=False)
    sim.register_datasets()
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=3, min_participants=2))
    nodes, coord = sim.nodes(), sim.coordinator()
    return sim, pid, nodes, coord


def test_a_round_started_ahead_trains_while_the_last_one_is_evaluated_and_changes_nothing(tmp_path):
    """run_round(start_next=True) opens the next round and starts its training before the closed round's
    evaluations are submitted; the next call takes it over. The chain sees round r + 1 opened before round r's
    evaluations and metric, and every aggregate, metric and verdict is what rounds run one after the other give."""
    from fedchain.coordinator.audit.replay import VERIFIED, replay_live

    seq, pid, nodes, coord = _three_rounds(tmp_path / "seq")
    expected = [seq.run_round(pid, r, nodes, coord) for r in (1, 2, 3)]

    sim, pid, nodes, coord = _three_rounds(tmp_path / "ahead")
    before = torch.get_num_threads()
    got = []
    for r in (1, 2, 3):
        got.append(sim.run_round(pid, r, nodes, coord, start_next=True))  # ignored for the plan's last round
        if r < 3:  # the next round is open and training; torch keeps one thread per party until it is taken over
            info = sim.fed().rounds.round_info(pid, r + 1)
            assert info.phase.name == "OPEN" and info.committed == 0
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert [d.result.aggregate_cid for d in got] == [d.result.aggregate_cid for d in expected]
    assert [d.validation_metric for d in got] == [d.validation_metric for d in expected]
    assert [d.committed for d in got] == [d.committed for d in expected]

    events = [(e.event, e.args.get("round")) for e in sim.fed().events()
              if e.event in ("RoundOpened", "EvaluationSubmitted", "GlobalMetricRecorded")]
    for r in (1, 2):
        assert events.index(("RoundOpened", r + 1)) < events.index(("EvaluationSubmitted", r))
        assert events.index(("RoundOpened", r + 1)) < events.index(("GlobalMetricRecorded", r))
    report = replay_live(sim.fed(), sim.store, sim.auditor)
    assert [v.status for v in report.rounds] == [VERIFIED] * 3


def test_a_round_started_ahead_leaves_every_hospital_time_to_commit(tmp_path):
    """A round started ahead opens before the closed round's evaluations and metric are sent (one block each
    on a chain that mines per transaction); its deadline still leaves a block for every commitment."""
    sim = Simulation.create(tmp_path, hospitals=8, seed=7, fsync=False)
    sim.register_datasets()
    base = demo_plan(sim.data.hospitals, seed=7).with_changes(round_deadline_blocks=5)  # the simulation's own
    pid = sim.approve(sim.plan(base, rounds=2, local_epochs=1))
    nodes, coord = sim.nodes(), sim.coordinator()
    assert sim.run_round(pid, 1, nodes, coord, start_next=True).result.closed
    assert sim.run_round(pid, 2, nodes, coord).committed == sim.names


def test_a_round_started_ahead_must_be_run_next(tmp_path):
    """Running another round while one was started ahead is refused by name, and the started round is still
    there to be run: its training is not lost, and torch gets its threads back once it ran."""
    from fedchain.errors import FedchainError

    sim, pid, nodes, coord = _three_rounds(tmp_path)
    before = torch.get_num_threads()
    assert sim.run_round(pid, 1, nodes, coord, start_next=True).result.closed
    with pytest.raises(FedchainError, match="round 2 of proposal .* was already started"):
        sim.run_round(pid, 3, nodes, coord)
    assert sim.fed().rounds.round_info(pid, 2).committed == 0 and torch.get_num_threads() == 1
    assert sim.run_round(pid, 2, nodes, coord).committed == sim.names
    assert torch.get_num_threads() == before
    assert sim.run_round(pid, 3, nodes, coord).result.closed


def test_the_close_gets_every_torch_thread_back_while_nothing_trains(tmp_path, monkeypatch):
    """During a simulated round each party trains on one torch thread; the coordinator's close runs when every
    update is in, so its aggregation and scores get the thread count the process had (restored after)."""
    from fedchain.coordinator.runner import Coordinator
    from fedchain.node.runner import TrainingJob

    sim, pid, nodes, coord = _three_rounds(tmp_path)
    seen = {"close": set(), "train": set()}
    real_close, real_train = Coordinator.close_round, TrainingJob.train
    monkeypatch.setattr(Coordinator, "close_round",
                        lambda self, *a: seen["close"].add(torch.get_num_threads()) or real_close(self, *a))
    monkeypatch.setattr(TrainingJob, "train", lambda self: seen["train"].add(torch.get_num_threads()) or real_train(self))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        assert sim.run_round(pid, 1, nodes, coord, start_next=True).result.closed
        assert sim.run_round(pid, 2, nodes, coord).result.closed
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    assert seen == {"close": {3}, "train": {1}}


def test_the_heap_is_frozen_only_while_a_command_runs_its_rounds():
    """settled_heap freezes what exists (full collections skip it during the rounds) and thaws it on the way
    out, even on an error and when nested, so a process that goes on keeps nothing it would free."""
    import gc

    from fedchain.cli.simulation import settled_heap

    assert gc.get_freeze_count() == 0
    with settled_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 0
        with settled_heap():  # nested: nothing more frozen, nothing thawed early
            assert gc.get_freeze_count() == frozen
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    try:
        with settled_heap():
            raise RuntimeError("a round failed")
    except RuntimeError:
        pass
    assert gc.get_freeze_count() == 0
