"""The coordinator's discretion, made visible to replay.

The contract lets the coordinator fail a round after the deadline whatever came
in and record any global metric; it checks a dataset's policy only at commitment.
Before, replay saw none of this: a coordinator could close early to shut out a
hospital still training, fail a round that had enough valid updates, publish a
flattering metric, or aggregate an update whose dataset's owner revoked it
before the close -- and every round verified. Closing early is now refused by the
chain (``RoundsEarlyClose``: before the deadline only once every target
committed); each of the others is a DISCREPANCY naming it, and the honest
coordinator rejects a withdrawn dataset's update (``NOT_ADMITTED``).
"""

from __future__ import annotations

import pytest

from adversary import LyingCoordinator, make_world
from fedchain.coordinator.audit.replay import DISCREPANCY, FAILED, VERIFIED
from fedchain.contracts.errors import ChainRevert
from fedchain.contracts.models import Policy
from fedchain.usecases import datasets
from fedchain.validation import Reason

ALL = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("coord-discretion"), rounds=1)  # 4 hospitals, 3 needed
    w.open(1)
    w.commit_honest(1, (0, 1, 2))
    w.save("three in")  # round 1 open, hospital-d (admitted) not committed yet
    w.commit_honest(1, (3,))
    w.save("all in")
    return w


def deadline(world) -> int:
    return world.fed.rounds.round_info(world.pid, 1).deadline


def test_closing_early_while_an_admitted_hospital_is_still_training_is_refused(world):
    """Once named by the replay only; now the chain refuses it (``RoundsEarlyClose``), and the round stays open."""
    world.restore("three in")  # hospital-d's policy admits the proposal; it has not committed yet
    with pytest.raises(ChainRevert) as exc:
        world.coord.close_round(world.pid, 1)
    assert exc.value.error == "RoundsEarlyClose"
    assert world.fed.rounds.round_info(world.pid, 1).phase.name == "OPEN"


def test_a_round_need_not_wait_for_a_target_whose_policy_refuses_but_waits_again_when_it_admits(world):
    """The early-close rule counts only the targets that could still commit (``awaitedCommitments``).

    Abuse it guards against: a coordinator closing before the deadline to shut out a hospital whose
    policy admits the proposal. Only that dataset's owner can change its own policy, so the rule lets
    nobody else make a hospital "not awaited"; replay judges the close by the same rule.
    """
    world.restore("three in")
    rounds = world.fed.rounds
    assert rounds.awaited_commitments(world.pid, 1) == 1  # hospital-d may still commit
    owner_d = world.sim.fed(world.member(3))
    datasets.set_policy(owner_d, world.sim.names[3], Policy.open(purposes=("another purpose",)))
    assert rounds.awaited_commitments(world.pid, 1) == 0  # it cannot: nothing is left to wait for
    datasets.set_policy(owner_d, world.sim.names[3], Policy.open())
    assert rounds.awaited_commitments(world.pid, 1) == 1  # admitted again: the round waits for it again
    with pytest.raises(ChainRevert) as exc:
        world.coord.close_round(world.pid, 1)
    assert exc.value.error == "RoundsEarlyClose"
    datasets.set_policy(owner_d, world.sim.names[3], Policy.open(purposes=("another purpose",)))
    res = world.coord.close_round(world.pid, 1)
    assert res.closed and len(res.participants) == 3
    assert world.sim.chain.block_number <= deadline(world)  # closed early
    assert world.verdict(1).status == VERIFIED


def test_closing_at_the_deadline_without_a_hospital_is_fine(world):
    world.restore("three in")
    world.sim.chain.mine(deadline(world) - world.sim.chain.block_number + 1)
    assert world.coord.close_round(world.pid, 1).closed
    assert world.verdict(1).status == VERIFIED


def test_failing_a_round_that_had_enough_valid_updates_is_named(world):
    world.restore("three in")
    world.sim.chain.mine(deadline(world) - world.sim.chain.block_number + 1)
    world.coord.fail_round(world.pid, 1)  # the contract lets the coordinator fail any round after its deadline
    v = world.verdict(1)
    assert v.outcome == FAILED and v.status == DISCREPANCY
    assert "although 3 committed update(s) verify (the plan needs 3)" in "\n".join(v.problems)


def test_a_global_metric_that_is_not_the_evaluations_mean_is_named(world):
    world.restore("all in")
    assert world.coord.close_round(world.pid, 1).closed
    world.evaluate(1, ALL)
    flattering = 999_000
    world.sim.fed(world.sim.ops).rounds.record_global_metric(world.pid, 1, flattering)
    v = world.verdict(1)
    assert v.status == DISCREPANCY
    assert f"global metric recorded as {flattering} ppm, but the 4 evaluation(s) submitted before it give" in \
        "\n".join(v.problems)


def test_the_recorded_metric_of_an_honest_coordinator_verifies(world):
    world.restore("all in")
    assert world.coord.close_round(world.pid, 1).closed
    world.evaluate(1, (0, 1))
    world.coord.record_metric(world.pid, 1)
    world.evaluate(1, (2, 3))  # evaluations after the record do not count for it
    assert world.verdict(1).status == VERIFIED


def test_a_metric_recorded_before_any_evaluation_is_named(world):
    world.restore("all in")
    assert world.coord.close_round(world.pid, 1).closed
    world.sim.fed(world.sim.ops).rounds.record_global_metric(world.pid, 1, 900_000)
    assert "was recorded before any evaluation was submitted" in "\n".join(world.verdict(1).problems)


def _revoke_after_commit(world):
    datasets.revoke(world.sim.fed(world.member(3)), world.sim.names[3])  # the owner withdraws its dataset


def test_an_update_whose_dataset_was_revoked_before_the_close_is_rejected(world):
    world.restore("all in")
    _revoke_after_commit(world)
    res = world.coord.close_round(world.pid, 1)
    assert res.closed and res.rejected[world.address(3)].code == Reason.NOT_ADMITTED
    assert "revoked" in res.rejected[world.address(3)].detail
    assert world.verdict(1).status == VERIFIED


def test_aggregating_an_update_whose_dataset_was_revoked_before_the_close_is_named(world):
    world.restore("all in", LyingCoordinator, skip_policy=True)
    _revoke_after_commit(world)
    res = world.coord.close_round(world.pid, 1)
    assert res.closed and world.address(3) in res.participants
    v = world.verdict(1)
    assert v.status == DISCREPANCY
    assert f"update of {world.address(3).lower()}" in "\n".join(v.problems)
    assert "was included but fails verification: NOT_ADMITTED" in "\n".join(v.problems)


def test_the_early_close_rule_holds_on_anvil(tmp_path, anvil_node):
    """The same rule on a real JSON-RPC node: a round waits for a target whose policy admits the proposal
    (``RoundsEarlyClose``), not for one whose policy refuses it; the early close verifies."""
    w = make_world(tmp_path, rounds=1, chain_url=anvil_node.url)
    w.open(1)
    w.commit_honest(1, (0, 1, 2))
    rounds = w.fed.rounds
    assert rounds.awaited_commitments(w.pid, 1) == 1
    with pytest.raises(ChainRevert) as exc:
        w.coord.close_round(w.pid, 1)
    assert exc.value.error == "RoundsEarlyClose"
    datasets.set_policy(w.sim.fed(w.member(3)), w.sim.names[3], Policy.open(purposes=("another purpose",)))
    assert rounds.awaited_commitments(w.pid, 1) == 0
    res = w.coord.close_round(w.pid, 1)
    assert res.closed and len(res.participants) == 3
    assert w.sim.chain.block_number <= rounds.round_info(w.pid, 1).deadline  # closed early
    assert w.verdict(1).status == VERIFIED
