"""The coordinator checks committed updates while the round is still open (``Coordinator.check_early``).

Who could abuse it: a member whose dataset's policy changes after its update was checked (the close must
still refuse it), and a store that fails to deliver an update early (the close must fetch it again, not
publish the early failure). Both are tests here, with the speed-up itself: the close does not fetch an
update that was checked early.
"""

from __future__ import annotations

import threading
import time

import pytest

import fedchain.coordinator.runner as coord_runner
import fedchain.cli.simulation as simulation
from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import ChainRevert
from fedchain.coordinator.collect import StoreFailure
from fedchain.sample_data import demo_plan
from fedchain.usecases import datasets as uc_datasets
from fedchain.validation import Reason


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    sim = Simulation.create(tmp_path_factory.mktemp("early"), hospitals=3, seed=11, fsync=False)
    sim.register_datasets()
    return sim


@pytest.fixture
def sim(consortium):
    snap = consortium.chain.snapshot()
    yield consortium
    consortium.chain.revert(snap)


def _round_committed(sim):
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=11), rounds=1, min_participants=2))
    nodes, coord = sim.nodes(), sim.coordinator()
    coord.open_round(pid, 1)
    for n in nodes:
        assert n.train_and_commit(pid, 1).committed
    return pid, coord


EARLY_THREAD = "fedchain-early"


def _counting(monkeypatch, early_outcome=None):
    """Count the updates checked early (on the coordinator's early thread) and at the close (anywhere else);
    ``early_outcome(job)``, if given and not None, answers an early check instead of fetching."""
    calls = {"early": 0, "close": 0}
    real = coord_runner.check_update

    def counted(store, job, *a, **kw):
        if threading.current_thread().name == EARLY_THREAD:
            calls["early"] += 1
            got = early_outcome(job) if early_outcome is not None else None
            if got is not None:
                return got
        else:
            calls["close"] += 1
        return real(store, job, *a, **kw)

    monkeypatch.setattr(coord_runner, "check_update", counted)
    return calls


def _until(condition, timeout: float = 30.0) -> None:
    """Wait until ``condition()`` holds (the early thread's progress is not ours to schedule)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("threshold, expected", [(0, {"early": 3, "close": 0}),
                                                  (None, {"early": 0, "close": 3})])
def test_a_simulated_round_checks_each_update_once_while_it_is_open(sim, monkeypatch, threshold, expected):
    """Updates as large as the simulation's threshold are checked while the round is open, once; the demo's
    small updates (under the default threshold) at the close."""
    if threshold is not None:
        monkeypatch.setattr(simulation, "EARLY_CHECK_BYTES", threshold)
    calls = _counting(monkeypatch)
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=11), rounds=1, min_participants=2))
    coord = sim.coordinator()
    if expected["early"]:  # the close waits until the early thread began them all (it does not schedule it)
        real_close = coord.close_round
        monkeypatch.setattr(coord, "close_round", lambda *a: _until(lambda: calls["early"] == 3) or real_close(*a))
    done = sim.run_round(pid, 1, sim.nodes(), coord)
    assert done.result.closed and len(done.result.participants) == 3 and not done.result.rejected
    assert calls == expected


def test_a_policy_changed_after_the_early_check_is_still_refused_at_the_close(sim, monkeypatch):
    calls = _counting(monkeypatch)
    pid, coord = _round_committed(sim)
    assert coord.check_early(pid, 1) == 3
    assert coord.check_early(pid, 1) == 0  # each commitment once
    # every early check has begun (a check not begun by the close is done there instead: see below)
    _until(lambda: calls["early"] == 3)
    member = sim.members[0].address.lower()
    uc_datasets.revoke(sim.fed(sim.members[0]), sim.names[0])
    result = coord.close_round(pid, 1)
    assert result.closed and member not in [p.lower() for p in result.participants]
    rejected = {k.lower(): v for k, v in result.rejected.items()}
    assert rejected[member].code == Reason.NOT_ADMITTED
    assert calls["close"] == 0


def test_an_update_the_store_failed_to_deliver_early_is_fetched_again_at_the_close(sim, monkeypatch):
    calls = _counting(monkeypatch, early_outcome=lambda job: StoreFailure("the store timed out"))
    pid, coord = _round_committed(sim)
    assert coord.check_early(pid, 1) == 3
    result = coord.close_round(pid, 1)
    assert result.closed and len(result.participants) == 3 and not result.rejected
    assert calls["close"] == 3


def test_an_early_check_stuck_on_one_update_costs_the_close_one_budget_and_delays_no_other(sim, monkeypatch):
    """A member whose CID the store cannot deliver holds the early thread (one at a time): the close must not
    wait for it update by update. The stuck one is judged under the round's one budget, the others, queued
    behind it, are checked at the close beside it."""
    entered, released = threading.Event(), threading.Event()

    def hang(job):
        entered.set()
        released.wait(60)  # the store never answers while the close runs
        return StoreFailure("the store timed out")

    pid, coord = _round_committed(sim)
    stuck = coord.commitments(pid, 1)[0].participant.lower()  # the first in line: the others queue behind it
    calls = _counting(monkeypatch, early_outcome=lambda job: hang(job) if job.key == stuck else None)
    coord.fetch_budget = 3.0
    try:
        assert coord.check_early(pid, 1) == 3
        assert entered.wait(30)  # the early thread has taken the first update and hangs on it
        began = time.monotonic()
        result = coord.close_round(pid, 1)
        took = time.monotonic() - began
    finally:
        released.set()
    rejected = {k.lower(): v for k, v in result.rejected.items()}
    assert result.closed and len(result.participants) == 2 and list(rejected) == [stuck]
    assert rejected[stuck].code == Reason.NOT_FOUND
    assert took < 2 * coord.fetch_budget  # one budget, not one per queued update
    assert calls["close"] == 2  # the two queued behind it, checked at the close


def test_an_update_sealed_off_the_chain_thread_is_unpinned_when_the_chain_refuses_it(sim):
    """A simulated node seals and pins on its training thread and commits later: a commitment the contract
    refuses (the dataset was revoked in between) must not leave the sealed update pinned."""
    pid = sim.approve(sim.plan(demo_plan(sim.data.hospitals, seed=11), rounds=1, min_participants=2))
    node, coord = sim.nodes()[0], sim.coordinator()
    coord.open_round(pid, 1)
    job = node.prepare(pid, 1)
    result = job.train()
    sealed = node.seal(job, result, node.recipients(job.plan))
    assert sealed.cid in set(sim.store.pins())
    uc_datasets.revoke(sim.fed(sim.members[0]), sim.names[0])
    with pytest.raises(ChainRevert) as info:
        node.commit(job, result, sealed=sealed)
    assert info.value.error == "RoundsPolicyDenied"
    assert sealed.cid not in set(sim.store.pins())
