"""One member takes over the global model by over-claiming its sample count (issue 10).

FedAvg weighs each update by the sample count its committer claims. Before the fix
the chain only checked the count was positive, so one hospital that committed a
sign-flipped model with a claimed 2^62 samples *was* the global model after one
round (test accuracy 0.947 -> 0.053 in the demo). Now the row count is registered
on chain with the dataset, the proposal records it with the target, and a
commitment (or evaluation) claiming more samples than the dataset has rows reverts
with ``RoundsSampleCountTooHigh``. With its true count the same attacker is one
voice in five and the run stays close to a clean one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import ChainRevert, dataset_id
from fedchain.coordinator.strategies.base import ClientUpdate
from fedchain.coordinator.strategies.registry import from_spec
from fedchain.node.commit import commit_update
from fedchain.node.dataset import load_dataset, split_for_plan
from fedchain.node.runner import HospitalNode, RoundOutcome
from fedchain.node.train import evaluate, train_local
from fedchain.plan import train_config
from fedchain.sample_data import demo_plan
from fedchain.serialize import state_dict_to_bytes
from fedchain.usecases.refusals import Refused
from fixtures_chain import ROWS, cid, reverts, sha

OVER_CLAIM = 2**62
HOSPITALS = 5
ROUNDS = 5  # the demo plan's rounds
SEED = 7


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


# ----------------------------------------------------------- the rule, on both backends


def test_over_claimed_commitment_reverts(system):
    s = system
    s.register(s.A, "ds-a", rows=500)
    s.register(s.B, "ds-b")
    pid = s.approved_proposal(["ds-a", "ds-b"], round_duration=30)
    assert s.fc.registry.dataset("ds-a").row_count == 500  # what the members saw when they voted
    s.K.rounds.open_round(pid, 1)
    for claim in (OVER_CLAIM, 501):
        with reverts("RoundsSampleCountTooHigh", datasetId=_hex(dataset_id("ds-a")), sampleCount=claim, rowCount=500):
            s.A.rounds.commit_update(pid, 1, "ds-a", cid("flipped"), sha("flipped"), claim)
    assert s.fc.rounds.round_info(pid, 1).committed == 0
    s.A.rounds.commit_update(pid, 1, "ds-a", cid("flipped"), sha("flipped"), 500)  # all its rows: allowed


def test_over_claimed_evaluation_reverts(system):
    """The global metric is sample-weighted too: evaluations are bounded the same way."""
    s = system
    pid = s.training_setup(round_duration=30)
    s.commit(s.A, pid, 1, "ds-a")
    s.commit(s.B, pid, 1, "ds-b")
    s.K.rounds.close_round(pid, 1, "bafy-aggregate", sha("agg"), "bafy-scores", sha("scores"))
    with reverts("RoundsSampleCountTooHigh", datasetId=_hex(dataset_id("ds-b")), sampleCount=ROWS + 1, rowCount=ROWS):
        s.B.rounds.submit_evaluation(pid, 1, "ds-b", 999_999, ROWS + 1)
    s.B.rounds.submit_evaluation(pid, 1, "ds-b", 999_999, ROWS)


def test_row_count_cannot_be_raised_after_the_vote(system):
    """The count the members voted on is the one enforced: nothing can change it later."""
    s = system
    s.register(s.A, "ds-a", rows=10)
    writers = sorted(i["name"] for i in s.fc.registry.contract.abi
                     if i["type"] == "function" and i.get("stateMutability") not in ("view", "pure"))
    # no setter for the row count (spendPrivacy writes only the ε ledger, and only Rounds may call it)
    assert writers == ["registerDataset", "revokeDataset", "setPolicy", "spendPrivacy"]
    with reverts("DatasetRegistryAlreadyRegistered"):
        s.register(s.A, "ds-a", rows=10**9)


# ------------------------------------------------- the attack, end to end with the demo


@dataclass
class SignFlipper:
    """A hospital node that trains honestly, then commits the negated weights claiming ``claim`` samples.

    It goes through the node's own seal-pin-commit use case; only the payload and the
    claimed count are the attacker's. Evaluations are the honest node's.
    """

    node: HospitalNode
    claim: int | None = None  # None: its true training-sample count

    @property
    def dataset_name(self) -> str:
        return self.node.dataset_name

    def flipped_update(self, pid: int, round_: int):
        node = self.node
        plan = node.plan(pid)
        train, _val = split_for_plan(node.data, plan, node.dataset_name)
        result = train_local(node.global_state(pid, round_), plan, train, config=train_config(plan, round_),
                             dataset_seed_key=node.dataset_name)
        return plan, {k: -v for k, v in result.state_dict.items()}, result.n_samples

    def train_and_commit(self, pid: int, round_: int) -> RoundOutcome:
        plan, flipped, n = self.flipped_update(pid, round_)
        done = commit_update(
            self.node.fed, self.node.store, self.node.identity, plan, proposal_id=pid, round_=round_,
            dataset=self.dataset_name, payload=state_dict_to_bytes(flipped),
            n_samples=n if self.claim is None else self.claim,
        )
        return RoundOutcome(pid, round_, self.dataset_name, committed=True, cid=done.cid, sha256=done.sha256,
                            n_samples=done.n_samples, gas_used=done.tx.gas_used)

    def evaluate_and_submit(self, pid: int, round_: int):
        return self.node.evaluate_and_submit(pid, round_)


def _run(root, *, attacker: int | None):
    """A 5-hospital demo run; hospital ``attacker`` (if any) sign-flips with its true count.

    Returns (simulation, proposal id, plan, test accuracy after each round, nodes).
    """
    sim = Simulation.create(root, hospitals=HOSPITALS, seed=SEED, fsync=False)
    sim.register_datasets()
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=SEED), rounds=ROUNDS)
    pid = sim.approve(plan)
    nodes = sim.nodes()
    if attacker is not None:
        nodes[attacker] = SignFlipper(nodes[attacker])
    coord = sim.coordinator()
    test = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    accuracy = []
    for r in range(1, ROUNDS + 1):
        done = sim.run_round(pid, r, nodes, coord)
        assert done.result.closed, done.result.reason
        accuracy.append(evaluate(coord.global_state(pid), plan, test)["accuracy"])
    return sim, pid, plan, accuracy, nodes


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("clean"), attacker=None)


def test_over_claim_by_one_of_five_hospitals_reverts_and_honest_weight_keeps_accuracy(clean_run, tmp_path):
    _sim, _pid, plan, clean, _nodes = clean_run
    sim = Simulation.create(tmp_path / "attacked", hospitals=HOSPITALS, seed=SEED, fsync=False)
    sim.register_datasets()
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=SEED), rounds=ROUNDS))
    nodes = sim.nodes()
    flipper = SignFlipper(nodes[1], claim=OVER_CLAIM)
    coord = sim.coordinator()
    coord.open_round(pid, 1)

    # The over-claim is refused by the node's own commit use case before anything is pinned ...
    pinned = set(sim.store.pins())
    with pytest.raises(Refused) as refused:
        flipper.train_and_commit(pid, 1)
    assert refused.value.code == "TOO_MANY_SAMPLES"
    assert set(sim.store.pins()) == pinned
    # ... and by the chain when a member goes around it, straight to the contract.
    rows = sim.datasets[flipper.dataset_name].n_rows
    with pytest.raises(ChainRevert) as info:
        sim.fed(sim.members[1]).rounds.commit_update(pid, 1, flipper.dataset_name,
                                                     "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "ab" * 32,
                                                     OVER_CLAIM)
    assert info.value.error == "RoundsSampleCountTooHigh"
    assert info.value.args_dict["sampleCount"] == OVER_CLAIM and info.value.args_dict["rowCount"] == rows
    assert sim.fed().rounds.commitment_of(pid, 1, sim.members[1].address) is None

    # ... and it would have been decisive: FedAvg with the claimed weight is the flipped model.
    honest = []
    for n in nodes:
        if n is nodes[1]:
            continue
        train, _ = split_for_plan(n.data, n.plan(pid), n.dataset_name)
        res = train_local(n.global_state(pid, 1), n.plan(pid), train, config=train_config(n.plan(pid), 1),
                          dataset_seed_key=n.dataset_name)
        honest.append(ClientUpdate(n.identity.address, n.dataset_name, res.n_samples, res.state_dict))
    _plan, flipped, _n = flipper.flipped_update(pid, 1)
    attack = ClientUpdate(sim.members[1].address, flipper.dataset_name, OVER_CLAIM, flipped)
    fedavg = from_spec(plan.strategy, min_participants=plan.min_participants)
    taken_over = fedavg.aggregate_train(1, coord.global_state(pid), honest + [attack])
    test = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    assert evaluate(taken_over, plan, test)["accuracy"] < 0.2 < 0.9 < clean[0]

    # With its true sample count the attacker is one voice in five: the run stays near the clean one.
    flipper.claim = None
    attacked = []
    nodes[1] = flipper
    out = flipper.train_and_commit(pid, 1)  # round 1 is open already
    assert out.n_samples <= rows
    for n in nodes:
        if n is not flipper:
            assert n.train_and_commit(pid, 1).committed
    result = coord.close_round(pid, 1)
    assert result.closed, result.reason
    attacked.append(evaluate(coord.global_state(pid), plan, test)["accuracy"])
    for r in range(2, ROUNDS + 1):
        done = sim.run_round(pid, r, nodes, coord)
        assert done.result.closed, done.result.reason
        attacked.append(evaluate(coord.global_state(pid), plan, test)["accuracy"])
    print(f"test accuracy per round: clean {clean}, one of five sign-flipping at its true weight {attacked}")
    assert abs(attacked[-1] - clean[-1]) <= 0.02, (clean, attacked)
