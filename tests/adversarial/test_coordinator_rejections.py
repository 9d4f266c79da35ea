"""A coordinator drops honest updates and hopes the audit counts "could not check" as "rightly rejected".

Before: replay accepted any rejection of an update it could not open itself --
the auditor not a recipient, the blob missing from its store, the store timing
out -- and never compared the reason the coordinator gave with what the bytes
give. A coordinator could leave out an honest member (deleting the blob from the
store it runs, or naming a reason of its choosing) and the trail still verified.

Now every rejection is re-derived from the bytes and its code compared; what the
auditor cannot check is UNVERIFIABLE with the reason, and ``fedchain audit
replay`` exits 1 on it unless told ``--allow-unverifiable``.

The dishonest coordinator is the real one with its verdicts rewritten
(:class:`adversary.LyingCoordinator`); it then aggregates, pins and closes on
chain through the real code path.
"""

from __future__ import annotations

import pytest

from adversary import LyingCoordinator, bad_update, make_world
from fedchain.cli import main as cli_main
from fedchain.coordinator.audit.replay import DISCREPANCY, UNVERIFIABLE, VERIFIED
from fedchain.coordinator.audit.trail import export_trail
from fedchain.identity import dev_identity
from fedchain.validation import Reason, Rejection

VICTIM = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = make_world(tmp_path_factory.mktemp("coord-rejections"), hospitals=5, min_participants=3, rounds=1)
    w.open(1)
    w.commit_honest(1, (0, 1, 2, 3, 4))
    w.save("all honest")  # round 1 open, five honest updates committed: each test closes it its own way
    return w


def rewrite(victim: str, rejection: Rejection):
    """A tamper function: the victim's outcome becomes ``rejection``, whatever its bytes say."""
    def tamper(items):
        return [(c, rejection if c.participant.lower() == victim.lower() else o) for c, o in items]
    return tamper


def test_a_rejection_with_another_code_than_the_bytes_give_is_a_discrepancy(world):
    """The member's update really is broken (wrong shape), but the coordinator publishes another reason."""
    world.fresh(LyingCoordinator, tamper=rewrite(world.address(VICTIM), Rejection(Reason.NOT_FINITE, "NaN")))
    world.open(1)
    world.commit_honest(1, (0, 1, 2, 4))
    world.seal_and_commit(VICTIM, 1, bad_update(world.plan, "WRONG_SHAPE"))
    assert world.coord.close_round(world.pid, 1).closed
    v = world.verdict(1)
    assert v.status == DISCREPANCY
    assert (f"update of {world.address(VICTIM).lower()}" in v.problems[0]
            and "was rejected as NOT_FINITE, but it fails with WRONG_SHAPE" in v.problems[0]), v.problems


def test_dropping_an_honest_update_and_deleting_its_blob_is_never_verified(world, tmp_path, capsys):
    """The coordinator runs the store: it calls the honest update NOT_FOUND and removes its only block."""
    world.restore("all honest", LyingCoordinator,
                  tamper=rewrite(world.address(VICTIM), Rejection(Reason.NOT_FOUND, "gone")))
    victim_cid = world.fed.rounds.commitments(world.pid, 1)[VICTIM].cid
    assert world.coord.close_round(world.pid, 1).closed
    block = world.sim.store.block_path(victim_cid)
    kept = block.read_bytes()  # (put back at the end: the other tests share the committed updates)
    block.unlink()
    try:
        _judge_dropped(world, victim_cid, tmp_path, capsys)
    finally:
        block.write_bytes(kept)


def _judge_dropped(world, victim_cid, tmp_path, capsys):
    """Replay (and the CLI on the exported trail) with the victim's blob gone from the store."""
    v = world.verdict(1)
    assert v.status == UNVERIFIABLE and not v.problems
    assert any(f"({victim_cid}) was rejected as NOT_FOUND; the auditor cannot check it: the blob is missing" in u
               for u in v.unverifiable), v.unverifiable

    # The CLI on the exported trail: exit 1, and 0 only when the auditor accepts what it could not check.
    trail = tmp_path / "trail.jsonl"
    export_trail(world.fed, world.sim.store, trail)
    head = world.sim.chain.block_number
    argv = ["audit", "replay", "--trail", str(trail), "--store", str(world.sim.store.root),
            "--auditor-dev", str(len(world.sim.members) + 1), "--checkpoint", world.sim.chain.block_hash(head)]
    assert cli_main(argv) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "UNVERIFIABLE" in out and "the blob is missing" in out and "trail ANCHORED" in out
    assert cli_main(argv + ["--allow-unverifiable"]) == 0
    # The HTML report says the same, in words for hospital staff.
    page = tmp_path / "report.html"
    assert cli_main(["audit", "report", "--out", str(page), *argv[2:]]) == 0
    html = page.read_text()
    assert '<div class="banner warn">Nothing contradicts the record, but not everything could be checked' in html
    assert "not checked: update of" in html and "the blob is missing" in html


def test_not_found_for_an_update_the_auditor_can_fetch_is_unverifiable(world):
    """Availability at close cannot be re-derived later: such a rejection is not VERIFIED (nor blamed)."""
    world.restore("all honest", LyingCoordinator,
                  tamper=rewrite(world.address(VICTIM), Rejection(Reason.NOT_FOUND, "timeout")))
    assert world.coord.close_round(world.pid, 1).closed
    v = world.verdict(1)
    assert v.status == UNVERIFIABLE and not v.problems
    assert "the auditor can fetch it and it verifies" in "\n".join(v.unverifiable)


def test_rejecting_an_honest_update_for_any_other_reason_is_a_discrepancy(world):
    world.restore("all honest", LyingCoordinator,
                  tamper=rewrite(world.address(VICTIM), Rejection(Reason.BAD_ENVELOPE, "no")))
    assert world.coord.close_round(world.pid, 1).closed
    v = world.verdict(1)
    assert v.status == DISCREPANCY
    assert "was rejected as BAD_ENVELOPE but it verifies" in "\n".join(v.problems)


def test_an_auditor_who_is_not_a_recipient_cannot_verify_anything(world):
    """Another identity than the plan's auditor: every update is unreadable to it -- UNVERIFIABLE, not judged."""
    world.fresh()
    world.open(1)
    world.commit_honest(1, (0, 1, 2, 3))
    world.seal_and_commit(4, 1, bad_update(world.plan, "NOT_FINITE"))
    res = world.coord.close_round(world.pid, 1)
    assert res.closed and res.rejected[world.address(4)].code == Reason.NOT_FINITE
    stranger = dev_identity(len(world.sim.members) + 2)
    v = world.verdict(1, auditor=stranger)
    assert v.status == UNVERIFIABLE and not v.problems, v.problems
    assert "the auditor's key is not one of the plan's auditors" in "\n".join(v.unverifiable)
    assert world.verdict(1).status == VERIFIED  # the plan's auditor agrees with the NOT_FINITE rejection
