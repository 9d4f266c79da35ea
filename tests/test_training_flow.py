"""Federated training under on-chain governance: who may open, commit, close — and what is refused.

Runs hospital nodes and the coordinator in-process on the embedded chain
(eth-tester) with the embedded store; the multi-process run on anvil + js-ipfs
is in ``test_faults_outages.py`` (with chain and IPFS restarts).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import ChainRevert, Policy, Vote
from fedchain.coordinator.audit.replay import UNVERIFIABLE, replay_live
from fedchain.coordinator.runner import Coordinator, CoordinatorService, NotApproved
from fedchain.content import HashMismatch, pin_document
from fedchain.plan import PlanHashMismatch, verify_plan_bytes
from fedchain.sample_data import demo_plan
from fedchain.serialize import bytes_to_state_dict
from fedchain.ipfs.store import BlockCorrupt
from fedchain.node.runner import HospitalNode
from fedchain.usecases.refusals import sentence
from fedchain.validation import Reason

N = 3


@dataclass
class World:
    sim: Simulation
    nodes: list
    coordinator: Coordinator

    @property
    def chain(self):
        return self.sim.chain

    @property
    def fed(self):
        return self.sim.fed()

    @property
    def store(self):
        return self.sim.store

    @property
    def members(self):
        return self.sim.members

    @property
    def coord(self):
        return self.sim.ops

    @property
    def auditor(self):
        return self.sim.auditor

    @property
    def data(self):
        return self.sim.data

    def propose(self, plan, *, votes=None, finalize=True, plan_bytes=None) -> int:
        if plan_bytes is None:
            return self.sim.approve(plan, votes=votes, finalize_vote=finalize)
        # A dishonest proposer: the chain gets the plan's hash, the store other bytes.
        cid, _ = pin_document(self.store, plan_bytes)
        pid = self.sim.fed(self.members[0]).proposals.submit_proposal(
            plan_cid=cid, plan_sha256=plan.sha256, purpose=plan.purpose, targets=list(plan.datasets),
            rounds=plan.rounds, min_participants=plan.min_participants, round_duration=plan.round_deadline_blocks,
        ).value
        for ident in self.members + [self.coord]:
            self.sim.fed(ident).proposals.vote(pid, (votes or {}).get(ident.name, Vote.YES))
        if finalize:
            self.sim.end_vote(pid)
            self.sim.fed(self.coord).proposals.finalize(pid)
        return pid

    def run_round(self, pid: int, r: int):
        self.coordinator.open_round(pid, r)
        outcomes = [n.train_and_commit(pid, r) for n in self.nodes]
        return outcomes, self.coordinator.close_round(pid, r)

    def rounds_opened(self, pid: int) -> list:
        return [e for e in self.fed.events() if e.event == "RoundOpened" and e.args["proposalId"] == pid]


def make_world(tmp_path, policies=None, seed=11) -> World:
    sim = Simulation.create(tmp_path, hospitals=N, seed=seed, approval_bps=5001, voting_period_blocks=8, fsync=False)
    sim.register_datasets({sim.names[i]: p for i, p in (policies or {}).items()})
    return World(sim, sim.nodes(), sim.coordinator())


def plan_for(w: World, **changes):
    base = dict(rounds=2, min_participants=2, auditors=["0x" + w.auditor.x25519_public.hex()])
    base.update(changes)
    return demo_plan(w.data.hospitals, seed=11).with_changes(**base)


@pytest.fixture
def world(tmp_path):
    return make_world(tmp_path)


# -- nothing opens unless the chain approved it ----------------------------------------------

def test_unapproved_proposal_opens_no_round(world):
    pid = world.propose(plan_for(world), finalize=False)  # still in its voting period
    with pytest.raises(NotApproved, match="not approved"):
        world.coordinator.open_round(pid, 1)
    with pytest.raises(ChainRevert) as exc:  # the contract refuses on its own as well
        world.fed.as_(world.coord.account).rounds.open_round(pid, 1)
    assert exc.value.error == "RoundsProposalNotApproved"
    assert world.rounds_opened(pid) == []


def test_rejected_proposal_opens_no_round_and_lands_no_aggregate(world):
    no = {m.name: Vote.NO for m in world.members + [world.coord]}
    pid = world.propose(plan_for(world), votes=no)
    assert world.fed.proposals.proposal(pid).state.name == "REJECTED"
    svc = CoordinatorService(world.coordinator)
    assert svc.step(pid) is True  # nothing to do
    assert world.rounds_opened(pid) == []
    assert not [e for e in world.fed.events() if e.event == "RoundClosed"]


def test_expired_vote_never_finalized_opens_no_round(world):
    pid = world.propose(plan_for(world), finalize=False)
    world.chain.mine(12)  # voting period over, nobody finalized
    with pytest.raises(NotApproved):
        world.coordinator.open_round(pid, 1)
    assert world.rounds_opened(pid) == []


def test_rounds_beyond_the_approved_number_are_refused(world):
    pid = world.propose(plan_for(world, rounds=1))
    world.run_round(pid, 1)
    with pytest.raises(NotApproved, match="rounds 1..1"):
        world.coordinator.open_round(pid, 2)
    with pytest.raises(ChainRevert):
        world.fed.as_(world.coord.account).rounds.open_round(pid, 2)


# -- policies ---------------------------------------------------------------------------------

def test_node_refuses_and_chain_reverts_when_the_policy_excludes_the_proposal(tmp_path):
    w = make_world(tmp_path, policies={2: Policy.open(purposes=("research",))})
    pid = w.propose(plan_for(w, min_participants=1))
    svc = CoordinatorService(w.coordinator, eval_grace_blocks=1)
    svc.step(pid)  # opens round 1
    refused = w.nodes[2].train_and_commit(pid, 1)
    assert not refused.committed and refused.reason == sentence(
        "PURPOSE_NOT_ALLOWED", f"dataset {w.nodes[2].dataset_name!r}, proposal {pid}")
    # Even a node that skips its own check cannot get a commitment past the contract.
    with pytest.raises(ChainRevert) as exc:
        w.nodes[2].fed.rounds.commit_update(pid, 1, w.nodes[2].dataset_name, "Qm" + "1" * 44, b"\x01" * 32, 10)
    assert exc.value.error == "RoundsPolicyDenied"
    assert "purpose not allowed" in str(exc.value) and exc.value.args_dict["reason"].startswith("0x505552504f5345"), str(exc.value)
    # One admitted hospital committed (enough for the plan), the other is still training: the service waits for it
    assert w.nodes[0].train_and_commit(pid, 1).committed
    assert w.fed.rounds.awaited_commitments(pid, 1) == 1
    svc.step(pid)
    assert w.fed.rounds.round_info(pid, 1).phase.name == "OPEN"
    # Once it committed, the target that sat out could not commit anyway: the round closes before its deadline.
    assert w.nodes[1].train_and_commit(pid, 1).committed
    assert w.fed.rounds.awaited_commitments(pid, 1) == 0
    svc.step(pid)
    info = w.fed.rounds.round_info(pid, 1)
    assert info.phase.name == "CLOSED" and w.chain.block_number <= info.deadline
    assert len(svc.results[(pid, 1)].participants) == 2
    committers = {e.args["member"].lower() for e in w.fed.events() if e.event == "UpdateCommitted"}
    assert w.members[2].address.lower() not in committers


def test_a_node_refused_by_its_policy_does_not_read_the_proposal_again_until_it_is_admitted(tmp_path, monkeypatch):
    """The refusal confirms the dataset is a target (targets never change), so later rounds ask only the
    policy; the words stay those of a full check, and an admission after a policy change is found."""
    w = make_world(tmp_path, policies={2: Policy.open(purposes=("research",))})
    pid = w.propose(plan_for(w))
    node = w.nodes[2]
    first = node.admission(pid)
    reads = []
    real = node.fed.proposals.proposal
    monkeypatch.setattr(node.fed.proposals, "proposal", lambda p: reads.append(p) or real(p))
    again = node.admission(pid)
    assert not again and again.code == first.code == "PURPOSE_NOT_ALLOWED" and again.words == first.words
    assert reads == []
    w.sim.fed(w.members[2]).registry.set_policy(node.dataset_name, Policy.open())
    assert node.admission(pid) and reads == []


# -- tampering ------------------------------------------------------------------------------------

def _corrupt(store, cid: str) -> None:
    path = store.block_path(cid)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(raw))


def test_plan_tampered_in_the_store_stops_node_and_coordinator(world):
    plan = plan_for(world)
    pid = world.propose(plan)
    _corrupt(world.store, world.fed.proposals.proposal(pid).plan_cid)
    with pytest.raises(BlockCorrupt):
        world.nodes[0].train_and_commit(pid, 1)
    with pytest.raises(BlockCorrupt):
        world.coordinator.open_round(pid, 1)
    assert world.rounds_opened(pid) == []


def test_plan_that_does_not_match_its_onchain_hash_is_refused(world):
    plan = plan_for(world)
    other = plan.with_changes(local_epochs=plan.local_epochs + 1)  # what a tamperer pinned
    pid = world.propose(plan, plan_bytes=other.to_canonical_bytes())
    with pytest.raises(HashMismatch, match="does not match its on-chain hash"):
        world.nodes[0].train_and_commit(pid, 1)
    with pytest.raises(HashMismatch):
        world.coordinator.open_round(pid, 1)
    assert world.rounds_opened(pid) == []
    # The plan check itself also refuses bytes that do not hash to the on-chain value.
    with pytest.raises(PlanHashMismatch):
        verify_plan_bytes(other.to_canonical_bytes(), plan.sha256)


def test_tampered_update_is_rejected_and_the_round_still_closes(world):
    pid = world.propose(plan_for(world))
    world.coordinator.open_round(pid, 1)
    outcomes = [n.train_and_commit(pid, 1) for n in world.nodes]
    _corrupt(world.store, outcomes[1].cid)
    closed = world.coordinator.close_round(pid, 1)
    assert closed.closed
    rejection = closed.rejected[world.members[1].address]
    assert rejection.code == Reason.NOT_FOUND and "could not deliver it intact" in rejection.detail
    assert sorted(closed.participants) == sorted([world.members[0].address, world.members[2].address])
    # The auditor (reading the same corrupt store) cannot judge the rejected update -- it says so, and
    # never counts it as rightly rejected -- and finds the aggregate of the other two right.
    report = replay_live(world.fed, world.store, world.auditor)
    (v,) = report.rounds
    assert v.status == UNVERIFIABLE and not v.problems, v
    assert "the auditor cannot check it" in v.unverifiable[0] and "could not deliver it" in v.unverifiable[0]


def test_update_claimed_by_another_member_is_rejected(world):
    pid = world.propose(plan_for(world))
    world.coordinator.open_round(pid, 1)
    a = world.nodes[0].train_and_commit(pid, 1)
    world.nodes[1].train_and_commit(pid, 1)
    # Member C commits member A's sealed blob as if it were its own.
    node_c = world.nodes[2]
    node_c.fed.rounds.commit_update(pid, 1, node_c.dataset_name, a.cid, a.sha256, min(a.n_samples, node_c.data.n_rows))
    closed = world.coordinator.close_round(pid, 1)
    assert closed.closed
    reason = closed.rejected[world.members[2].address]
    assert reason.code == Reason.BAD_ENVELOPE and "sender" in reason.detail
    assert replay_live(world.fed, world.store, world.auditor).ok


def test_round_fails_when_too_few_valid_updates_remain(world):
    pid = world.propose(plan_for(world, min_participants=3))
    world.coordinator.open_round(pid, 1)
    outcomes = [n.train_and_commit(pid, 1) for n in world.nodes]
    _corrupt(world.store, outcomes[0].cid)
    result = world.coordinator.close_round(pid, 1)
    assert not result.closed and "needs 3" in result.reason
    assert world.fed.rounds.round_info(pid, 1).phase.name == "OPEN"  # nothing was published
    world.chain.mine(plan_for(world).round_deadline_blocks + 1)
    world.coordinator.fail_round(pid, 1)
    assert world.fed.rounds.round_info(pid, 1).phase.name == "FAILED"


# -- the service loop and determinism ------------------------------------------------------------------

def test_coordinator_service_drives_all_rounds(world):
    pid = world.propose(plan_for(world, rounds=2))
    svc = CoordinatorService(world.coordinator, eval_grace_blocks=1)
    for _ in range(12):
        if svc.step(pid):
            break
        for n in world.nodes:
            r = world.fed.rounds.last_round(pid)
            info = world.fed.rounds.round_info(pid, r)
            if info.phase.name == "OPEN" and world.fed.rounds.commitment_of(pid, r, n.identity.address) is None:
                n.train_and_commit(pid, r)
            elif info.phase.name == "CLOSED" and not world.fed.rounds.has_evaluated(pid, r, n.identity.address):
                n.evaluate_and_submit(pid, r)
    for r in (1, 2):
        info = world.fed.rounds.round_info(pid, r)
        assert info.phase.name == "CLOSED" and info.committed == N
        assert info.global_metric_ppm is not None and info.global_metric_ppm > 800_000


def test_the_service_takes_a_proposals_target_count_from_its_submission_event(world, monkeypatch):
    """Targets are fixed when a proposal is submitted: the service counts them from the event it already
    folded, not by asking the contract each round."""
    pid = world.propose(plan_for(world, rounds=2))
    svc = CoordinatorService(world.coordinator, eval_grace_blocks=1)
    reads = []
    real = world.coordinator.fed.proposals.proposal
    monkeypatch.setattr(world.coordinator.fed.proposals, "proposal", lambda p: reads.append(p) or real(p))
    assert [svc.expected(pid, r) for r in (0, 1, 2)] == [N] * 3 == [len(real(pid).targets)] * 3
    assert reads == []  # (the comparison above calls the contract directly, not through the patch)


def test_same_seed_same_data_same_global_model_bytes(tmp_path):
    shas = []
    for run in ("a", "b"):
        w = make_world(tmp_path / run)
        pid = w.propose(plan_for(w))
        for r in (1, 2):
            _, closed = w.run_round(pid, r)
        shas.append([w.fed.rounds.round_info(pid, r).aggregate_sha256 for r in (1, 2)])
        model = bytes_to_state_dict(w.store.get(closed.aggregate_cid))
        assert set(model) == {"linear.weight", "linear.bias"}
    assert shas[0] == shas[1]


def test_a_restarted_coordinator_resumes_server_optimizer_state(world):
    plan = plan_for(world, rounds=3, strategy={"name": "fedadam", "server_lr": 0.1, "beta1": 0.9,
                                               "beta2": 0.99, "tau": 0.001})
    pid = world.propose(plan)
    for r in (1, 2):
        world.run_round(pid, r)
    # A new coordinator process: nothing in memory, only the chain and the store.
    world.coordinator = Coordinator(world.fed.as_(world.coord.account), world.store, world.coord)
    _, closed = world.run_round(pid, 3)
    assert closed.closed
    report = replay_live(world.fed, world.store, world.auditor)
    assert [v.status for v in report.rounds] == ["VERIFIED"] * 3, report


def test_an_update_stays_valid_when_its_sender_rotates_keys_before_the_close(world):
    pid = world.propose(plan_for(world))
    world.coordinator.open_round(pid, 1)
    for n in world.nodes:
        n.train_and_commit(pid, 1)
    world.nodes[0].fed.consortium.set_x25519_key(b"\x07" * 32)  # rotated after committing
    closed = world.coordinator.close_round(pid, 1)
    assert closed.closed and closed.rejected == {} and len(closed.participants) == N
    report = replay_live(world.fed, world.store, world.auditor)
    assert report.ok, report


# -- plans whose model a node will not hold ---------------------------------------------------

def test_node_refuses_a_model_above_its_own_limit_before_training(world, monkeypatch):
    """An approved plan within the consortium limit can still be more than one
    hospital agreed to hold; that node refuses, saying why, and never trains."""
    import fedchain.node.runner as node_runner

    def no_training(*_a, **_k):
        raise AssertionError("the node trained a model it should have refused")

    plan = plan_for(world)
    pid = world.propose(plan)
    world.coordinator.open_round(pid, 1)
    small = world.nodes[0]
    small.max_model_parameters = plan.model.size.parameters - 1
    monkeypatch.setattr(node_runner, "train_local", no_training)
    out = small.train_and_commit(pid, 1)
    assert not out.committed
    assert f"{plan.model.size.parameters:,} parameters" in out.reason and "configured to hold" in out.reason
    assert world.fed.rounds.commitment_of(pid, 1, small.identity.address) is None


def test_node_refuses_an_invalid_plan_pinned_behind_a_proposal(world, monkeypatch):
    """A proposer who bypasses the CLI and pins plan bytes that do not validate
    (here a 40 GB model) gets a refusal from every node, not a crash."""
    import fedchain.node.runner as node_runner
    from fedchain.plan import PlanError, canonical_json

    plan = plan_for(world)
    doc = plan.to_dict()
    doc["model"] = {"kind": "mlp", "in_features": plan.model.in_features, "n_classes": 2, "hidden": [100000, 100000]}
    raw = canonical_json(doc)
    cid, sha = pin_document(world.store, raw)
    fed = world.fed.as_(world.members[0].account)
    pid = fed.proposals.submit_proposal(plan_cid=cid, plan_sha256=sha, purpose=plan.purpose, targets=list(plan.datasets),
                              rounds=plan.rounds, min_participants=plan.min_participants,
                              round_duration=plan.round_deadline_blocks).value
    for ident in world.members + [world.coord]:
        world.fed.as_(ident.account).proposals.vote(pid, Vote.YES)
    world.chain.mine(9)
    world.fed.as_(world.coord.account).proposals.finalize(pid)
    with pytest.raises(PlanError, match="40.0 GB"):  # the coordinator opens nothing
        world.coordinator.open_round(pid, 1)
    world.fed.as_(world.coord.account).rounds.open_round(pid, 1)  # even if the round is opened by hand
    monkeypatch.setattr(node_runner, "train_local", lambda *a, **k: pytest.fail("trained an invalid plan"))
    out = world.nodes[0].train_and_commit(pid, 1)
    assert not out.committed and "the plan cannot be used" in out.reason and "40.0 GB" in out.reason
