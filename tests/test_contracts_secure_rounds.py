"""SecureRounds: every rule has a test that its violation reverts (eth-tester and anvil)."""

from __future__ import annotations

from fixtures_chain import cid, reverts, sha

from fedchain.contracts.models import SessionStage

P = 4  # blocks per phase


def _start(system, threshold=2, phase_blocks=P, **kw):
    pid = system.training_setup(round_duration=40, min_participants=1, **kw)
    system.K.secure.start(pid, 1, threshold, phase_blocks)
    return pid, system.fc.secure.session(pid, 1)


def _to(system, block):
    system.mine_past(block - 1)


def test_start_rules(system):
    pid = system.training_setup(round_duration=20, min_participants=1)
    with reverts("ConsortiumNotCoordinator"):
        system.A.secure.start(pid, 1, 2, P)
    with reverts("SecureRoundsRoundNotOpen"):
        system.K.secure.start(pid, 2, 2, P)
    with reverts("SecureRoundsBadThreshold", threshold=1):
        system.K.secure.start(pid, 1, 1, P)
    with reverts("SecureRoundsBadThreshold", threshold=3):
        system.K.secure.start(pid, 1, 3, P)  # two targets
    with reverts("SecureRoundsPhasesBeyondDeadline"):
        system.K.secure.start(pid, 1, 2, 7)  # masked phase would end after the round's deadline
    with reverts("SecureRoundsPhasesBeyondDeadline"):
        system.K.secure.start(pid, 1, 2, 0)
    system.K.secure.start(pid, 1, 2, P)
    s = system.fc.secure.session(pid, 1)
    assert s.stage == SessionStage.RUNNING and s.threshold == 2 and s.seed != bytes(32)
    with reverts("SecureRoundsAlreadyStarted"):
        system.K.secure.start(pid, 1, 2, P)


def test_phases_have_windows_and_order(system):
    pid, s = _start(system)
    A, B, C = system.A, system.B, system.C
    with reverts("SecureRoundsOutsidePhase", phase=1):
        A.secure.share_keys(pid, 1, cid("s"), sha("s"))
    with reverts("SecureRoundsNotATarget"):
        C.secure.advertise_keys(pid, 1, "ds-a", cid("k"), sha("k"))  # C owns no target
    with reverts("SecureRoundsInvalidCid"):
        A.secure.advertise_keys(pid, 1, "ds-a", "not-a-cid", sha("k"))
    A.secure.advertise_keys(pid, 1, "ds-a", cid("ka"), sha("ka"))
    with reverts("SecureRoundsNotEligible", phase=0):
        A.secure.advertise_keys(pid, 1, "ds-a", cid("ka2"), sha("ka2"))  # once per phase
    B.secure.advertise_keys(pid, 1, "ds-b", cid("kb"), sha("kb"))
    _to(system, s.window(1)[0])
    with reverts("SecureRoundsOutsidePhase", phase=0):
        A.secure.advertise_keys(pid, 1, "ds-a", cid("late"), sha("late"))  # the deadline is enforced
    A.secure.share_keys(pid, 1, cid("sa"), sha("sa"))
    B.secure.share_keys(pid, 1, cid("sb"), sha("sb"))
    _to(system, s.window(2)[0])
    # the masked input must be the member's commitment in Rounds
    with reverts("SecureRoundsNotCommitted"):
        A.secure.mark_masked(pid, 1, "ds-a", cid("u-ds-a-1"), sha("uds-a1"), 100)
    system.commit(A, pid, 1, "ds-a")
    with reverts("SecureRoundsNotCommitted"):
        A.secure.mark_masked(pid, 1, "ds-a", cid("u-ds-a-1"), sha("uds-a1"), 99)
    A.secure.mark_masked(pid, 1, "ds-a", cid("u-ds-a-1"), sha("uds-a1"), 100)
    system.commit(B, pid, 1, "ds-b")
    with reverts("SecureRoundsOutsidePhase", phase=3):
        A.secure.unmask(pid, 1, cid("ua"), sha("ua"))
    B.secure.mark_masked(pid, 1, "ds-b", cid("u-ds-b-1"), sha("uds-b1"), 100)
    with reverts("SecureRoundsTooEarly"):
        system.O.secure.conclude(pid, 1)
    _to(system, s.window(3)[0])
    with reverts("ConsortiumNotAMember"):
        system.O.secure.unmask(pid, 1, cid("uo"), sha("uo"))
    A.secure.unmask(pid, 1, cid("ua"), sha("ua"))
    B.secure.unmask(pid, 1, cid("ub"), sha("ub"))
    # every masked input unmasked: anyone may conclude before the phase ends
    assert system.O.secure.conclude(pid, 1).value == SessionStage.COMPLETED
    with reverts("SecureRoundsNotRunning"):
        A.secure.unmask(pid, 1, cid("ua2"), sha("ua2"))
    rec = system.fc.secure.record(pid, 1)
    assert rec.stage == "COMPLETED" and set(rec.masked) == {system.a.address.lower(), system.b.address.lower()}
    assert set(rec.messages[3]) == set(rec.messages[0])


def test_a_member_that_skipped_a_phase_cannot_come_back(system):
    pid, s = _start(system)
    system.A.secure.advertise_keys(pid, 1, "ds-a", cid("ka"), sha("ka"))
    _to(system, s.window(1)[0])
    with reverts("SecureRoundsNotEligible", phase=1):
        system.B.secure.share_keys(pid, 1, cid("sb"), sha("sb"))  # B never advertised


def test_too_few_in_a_phase_fails_the_session_as_soon_as_it_ends(system):
    pid, s = _start(system)
    system.A.secure.advertise_keys(pid, 1, "ds-a", cid("ka"), sha("ka"))
    system.B.secure.advertise_keys(pid, 1, "ds-b", cid("kb"), sha("kb"))
    _to(system, s.window(1)[0])
    system.A.secure.share_keys(pid, 1, cid("sa"), sha("sa"))
    with reverts("SecureRoundsTooEarly"):
        system.O.secure.conclude(pid, 1)  # the share phase is still open
    _to(system, s.window(2)[0])
    assert system.O.secure.conclude(pid, 1).value == SessionStage.FAILED  # 1 share < threshold 2
    with reverts("SecureRoundsNotRunning"):
        system.O.secure.conclude(pid, 1)
