"""Members commit CIDs that exist nowhere: the round costs at most one fetch timeout, not one per such update.

Before: the coordinator fetched updates one after another, so every well-formed
CID that no store holds stalled it for the store's whole lookup timeout (60 s
against an IPFS daemon) -- two such members, two minutes; a dozen, a quarter of
an hour, every round. Now the round's updates are fetched concurrently under one
time budget. The audit cannot tell "absent everywhere" from "absent from my
store", so it says UNVERIFIABLE for those updates (naming them), never VERIFIED.

Six commitments, two of which point at well-formed CIDs of content nobody ever
stored; on the embedded store and on the real js-ipfs daemon through KuboStore.
"""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from adversary import make_world
from fedchain.coordinator.audit.replay import UNVERIFIABLE
from fedchain.ipfs import KuboStore
from fedchain.ipfs.local import LocalStore
from fedchain.ipfs.store import ContentNotFound
from fedchain.ipfs.unixfs import compute_cid
from fedchain.validation import Reason

HONEST = (0, 1, 2, 3)
ABSENT = (4, 5)
#: The daemon-side lookup timeout the js-ipfs store is given (seconds).
FETCH_TIMEOUT = 5.0


def _absent_commitments(world, which=ABSENT) -> dict[str, str]:
    """Members ``which`` commit CIDs of random bytes that were never stored anywhere; {address: cid}."""
    out = {}
    for i in which:
        blob = os.urandom(4096)
        cid = compute_cid(blob)
        world.commit_raw(i, 1, cid, hashlib.sha256(blob).hexdigest())
        out[world.address(i)] = cid
    return out


def _check(world, res, absent: dict[str, str]) -> None:
    assert res.closed, res.reason
    assert sorted(res.participants) == sorted(world.address(i) for i in HONEST)
    assert set(res.rejected) == set(absent)
    for who in absent:
        assert res.rejected[who].code == Reason.NOT_FOUND
    doc = world.scores_doc(1)
    assert {k: v["code"] for k, v in doc["rejected"].items()} == {a.lower(): "NOT_FOUND" for a in absent}
    v = world.verdict(1)
    assert v.status == UNVERIFIABLE and not v.problems, v.problems
    text = "\n".join(v.unverifiable)
    for who, cid in absent.items():
        assert f"update of {who.lower()} ({cid}) was rejected as NOT_FOUND; the auditor cannot check it" in text


def test_missing_blobs_on_the_embedded_store(tmp_path):
    world = make_world(tmp_path, hospitals=6, rounds=1, min_participants=3)
    world.open(1)
    world.commit_honest(1, HONEST)
    absent = _absent_commitments(world)
    res = world.coord.close_round(world.pid, 1)
    _check(world, res, absent)


@pytest.mark.ipfsd
def test_missing_blobs_on_js_ipfs_cost_one_timeout(tmp_path, ipfs_daemon):
    store = KuboStore(ipfs_daemon.api_addr, fetch_timeout=FETCH_TIMEOUT, has_timeout=1)
    try:
        world = make_world(tmp_path, hospitals=6, rounds=1, min_participants=3, store=store)
        world.open(1)
        world.commit_honest(1, HONEST)
        absent = _absent_commitments(world)
        t0 = time.monotonic()
        res = world.coord.close_round(world.pid, 1)
        elapsed = time.monotonic() - t0
        # Concurrent lookups: the two absent CIDs wait out one daemon timeout together (sequentially it was
        # two); the rest of the close (four small fetches, aggregation, two pins, one transaction) is short.
        assert FETCH_TIMEOUT <= elapsed < 1.6 * FETCH_TIMEOUT, elapsed
        _check(world, res, absent)
    finally:
        store.close()


def test_a_round_budget_bounds_a_store_that_never_answers(tmp_path):
    """A store whose lookups for absent content hang far past the budget: the round closes at the budget."""
    hang = 10.0

    class SlowMissStore(LocalStore):
        """The embedded store, but a lookup of content it lacks waits like a daemon searching the network."""

        def get_to(self, cid, out, *, max_size=None):
            if not self.has(cid):
                time.sleep(hang)
                raise ContentNotFound(cid)
            return super().get_to(cid, out, max_size=max_size)

    world = make_world(tmp_path, hospitals=4, rounds=1, min_participants=2,
                       store=SlowMissStore(tmp_path / "slow-store", fsync=False))
    budget = 2.0
    world.coord.fetch_budget = budget
    world.open(1)
    world.commit_honest(1, (0, 1))
    absent = _absent_commitments(world, (2, 3))
    t0 = time.monotonic()
    res = world.coord.close_round(world.pid, 1)
    elapsed = time.monotonic() - t0
    assert budget <= elapsed < budget + 0.5 * hang, elapsed
    for who in absent:
        assert "time budget of 2 s" in res.rejected[who].detail
    assert sorted(res.participants) == sorted(world.address(i) for i in (0, 1))
