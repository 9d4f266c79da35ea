"""Random governance sequences against the contracts, each step checked against a model of the rules.

A Hypothesis :class:`~hypothesis.stateful.RuleBasedStateMachine` drives members,
the coordinator and outsiders through every governance action - membership
motions (admit, remove, set coordinator; vote, finalize), datasets (register,
set policy, revoke), proposals (submit, vote, finalize, cancel) and rounds (open,
commit, close, fail) - with valid and invalid arguments, and lets blocks pass.
:class:`Rules` is a plain-Python model of the contracts: before each action it
predicts either success or the *exact* custom error the contract must revert
with (so the order of the checks is part of the model); the action then goes
through the bindings on eth-tester and must do just that. The invariants compare
the model's member count, admission counter and coordinator with the chain after
every step that changed it (a refused action changes nothing), and each sequence
ends by comparing every object it touched.

Speed: every sequence starts from one of a few prepared states, each an eth-tester
snapshot built once through the same checked actions (a fresh consortium with two
datasets and an approved proposal; the same with a round open and one of its two
targets committed; with both committed;
the same with a passed motion waiting to be applied and another one pending; the
same once that motion has expired), so short sequences reach deep states and no
sequence pays for a deployment. An action
the model expects to be refused is built by the bindings' clients as usual but only
simulated, with one direct ``eth_call`` on eth-tester (what the bindings' own
simulation does, without web3's request layers), and views are read the same way;
actions expected to succeed go all the way through the bindings.
"""

from __future__ import annotations

import ast
import copy
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from eth_abi import decode as abi_decode
from eth_tester.exceptions import TransactionFailed
from eth_utils.abi import get_abi_output_types

from fedchain.contracts.bindings import Chain, ChainRevert, MotionKind, Policy, ProposalState, RoundPhase, Vote, dataset_id
from fedchain.contracts.bindings.clients import MIN_APPLY_WINDOW
from fedchain.contracts.bindings.codec import decode_revert
from fixtures_chain import cid, make_founders, sha

PERIOD = 4  # voting period, blocks
QUORUM_BPS, APPROVAL_BPS = 5000, 5001
EXAMPLES = 1000
STEPS = 5

FOUNDERS, COORD, OUTSIDERS = (0, 1, 2), 3, (4, 5)
ACTORS = st.sampled_from(FOUNDERS + (COORD,) + OUTSIDERS)
#: For the coordinator's actions: mostly whoever is the coordinator now (None), sometimes anybody.
CALLERS = st.one_of(st.none(), st.none(), ACTORS)
#: Proposal ids: mostly the approved base proposal, sometimes one a sequence submitted, or none.
PIDS = st.sampled_from([1, 1, 2, 3])
NAMES = ("d0", "d1", "d2")
GOOD_CID, BAD_CID = cid("update"), "bafy-not-a-cid"
_STATE = {"Active": 1, "Approved": 2, "Rejected": 3, "Cancelled": 4, "Expired": 5}  # IMemberVoting.VoteState
_PHASE = {p.name.capitalize(): int(p) for p in RoundPhase}


# ---------------------------------------------------------------------- the model


@dataclass
class Tally:
    created: int
    seq: int  # admission sequence snapshot
    eligible: int
    state: str = "Active"
    yes: int = 0
    no: int = 0
    abstain: int = 0
    voters: set[int] = field(default_factory=set)

    @property
    def deadline(self) -> int:
        return self.created + PERIOD

    def succeeded(self) -> bool:
        turnout = self.yes + self.no + self.abstain
        decided = self.yes + self.no
        return (turnout * 10_000 >= self.eligible * QUORUM_BPS and decided > 0
                and self.yes * 10_000 >= decided * APPROVAL_BPS)


@dataclass
class Motion:
    kind: MotionKind
    target: int
    tally: Tally

    @property
    def expiry(self) -> int:
        return self.tally.deadline + max(PERIOD, MIN_APPLY_WINDOW)


@dataclass
class Dataset:
    owner: int
    rows: int
    open: bool = True
    revoked: bool = False


@dataclass
class Proposal:
    proposer: int
    targets: dict[str, tuple[int, int]]  # name -> (owner, rows) recorded at submission
    rounds: int
    min_participants: int
    duration: int
    tally: Tally


@dataclass
class Round:
    deadline: int
    phase: str = "Open"
    committed: set[int] = field(default_factory=set)


class Rules:
    """What the contracts allow, as plain Python: ``check_*`` returns the error name or None."""

    def __init__(self, head: int) -> None:
        self.head = head  # last mined block; a transaction runs in head + 1
        self.seq = {i: n + 1 for n, i in enumerate(FOUNDERS)}  # admission numbers
        self.active = set(FOUNDERS)
        self.member_seq = len(FOUNDERS)
        self.coordinator = COORD
        self.motions: dict[int, Motion] = {}
        self.last_motion: dict[tuple[MotionKind, int], int] = {}
        self.datasets: dict[str, Dataset] = {}
        self.proposals: dict[int, Proposal] = {}
        self.rounds: dict[tuple[int, int], Round] = {}
        self.last_round: dict[int, int] = {}

    @property
    def now(self) -> int:
        return self.head + 1

    # -- shared voting rules (MemberVoting) --

    def check_vote(self, tally: Tally | None, voter: int) -> str | None:
        if tally is None:
            return "MemberVotingUnknown"
        if tally.state != "Active":
            return "MemberVotingNotActive"
        if self.now > tally.deadline:
            return "MemberVotingClosed"
        if voter not in self.active:
            return "ConsortiumNotAMember"
        if self.seq[voter] > tally.seq:
            return "MemberVotingNotEligible"
        if voter in tally.voters:
            return "MemberVotingAlreadyVoted"
        return None

    def check_finalize(self, tally: Tally | None, expiry: int | None = None) -> str | None:
        if tally is None:
            return "MemberVotingUnknown"
        if tally.state != "Active":
            return "MemberVotingNotActive"
        if self.now <= tally.deadline:
            return "MemberVotingStillOpen"
        if expiry is not None and self.now > expiry:
            return "MemberVotingExpired"
        return None

    def open_tally(self) -> Tally:
        return Tally(created=self.now, seq=self.member_seq, eligible=len(self.active))

    # -- Consortium --

    def motion_state(self, mid: int) -> str:
        m = self.motions[mid]
        return "Expired" if m.tally.state == "Active" and self.now - 1 > m.expiry else m.tally.state

    def check_propose_motion(self, caller: int, kind: MotionKind, target: int) -> str | None:
        if caller not in self.active:
            return "ConsortiumNotAMember"
        if kind == MotionKind.ADMIT and target in self.active:
            return "ConsortiumAlreadyMember"
        if kind == MotionKind.REMOVE and target not in self.active:
            return "ConsortiumNotAMember"
        if kind == MotionKind.SET_COORDINATOR and target == self.coordinator:
            return "ConsortiumAlreadyCoordinator"
        last = self.last_motion.get((kind, target))
        if last is not None:
            m = self.motions[last]
            if m.tally.state == "Active" and self.now <= m.expiry:
                return "ConsortiumDuplicateMotion"
        return None

    def check_apply(self, m: Motion) -> str | None:
        if not m.tally.succeeded():
            return None
        if m.kind == MotionKind.ADMIT and m.target in self.active:
            return "ConsortiumAlreadyMember"
        if m.kind == MotionKind.REMOVE:
            if m.target not in self.active:
                return "ConsortiumNotAMember"
            if len(self.active) == 1:
                return "ConsortiumLastMember"
        if m.kind == MotionKind.SET_COORDINATOR and m.target == self.coordinator:
            return "ConsortiumAlreadyCoordinator"
        return None

    def apply(self, m: Motion) -> None:
        if m.kind == MotionKind.ADMIT:
            self.member_seq += 1
            self.seq[m.target] = self.member_seq
            self.active.add(m.target)
        elif m.kind == MotionKind.REMOVE:
            self.active.discard(m.target)
        else:
            self.coordinator = m.target

    # -- DatasetRegistry --

    def check_register(self, caller: int, name: str, rows: int) -> str | None:
        if caller not in self.active:
            return "ConsortiumNotAMember"
        if rows == 0:
            return "DatasetRegistryInvalidRowCount"
        if name in self.datasets:
            return "DatasetRegistryAlreadyRegistered"
        return None

    def check_owned(self, caller: int, name: str) -> str | None:  # setPolicy, revokeDataset: no membership check
        d = self.datasets.get(name)
        if d is None:
            return "DatasetRegistryUnknownDataset"
        if d.owner != caller:
            return "DatasetRegistryNotOwner"
        if d.revoked:
            return "DatasetRegistryRevoked"
        return None

    # -- Proposals --

    def check_submit(self, caller: int, targets: list[str], min_participants: int) -> str | None:
        if caller not in self.active:
            return "ConsortiumNotAMember"
        if not targets:
            return "ProposalsInvalidTargetCount"
        if min_participants == 0:
            return "ProposalsInvalidMinParticipants"
        seen = set()
        for t in targets:
            if t in seen:
                return "ProposalsInvalidTarget"
            d = self.datasets.get(t)
            if d is None or d.revoked:
                return "ProposalsUnknownTarget"
            seen.add(t)
        return None

    def check_cancel(self, caller: int, pid: int) -> str | None:
        p = self.proposals.get(pid)
        if p is None:
            return "MemberVotingUnknown"
        if p.tally.state != "Active":
            return "MemberVotingNotActive"
        if p.proposer != caller:
            return "ProposalsNotProposer"
        if p.tally.voters:
            return "ProposalsVotesAlreadyCast"
        return None

    # -- Rounds --

    def phase(self, pid: int, r: int) -> str:
        rd = self.rounds.get((pid, r))
        return rd.phase if rd else "None"

    def check_open(self, caller: int, pid: int, r: int) -> str | None:
        if caller != self.coordinator:
            return "ConsortiumNotCoordinator"
        p = self.proposals.get(pid)
        if p is None or p.tally.state != "Approved":
            return "RoundsProposalNotApproved"
        last = self.last_round.get(pid, 0)
        if r != last + 1:
            return "RoundsOutOfOrder"
        if r > p.rounds:
            return "RoundsBeyondPlan"
        if last and self.phase(pid, last) == "Open":
            return "RoundsPreviousRoundOpen"
        return None

    def check_commit(self, caller: int, pid: int, r: int, name: str, good_cid: bool, samples: int) -> str | None:
        if caller not in self.active:
            return "ConsortiumNotAMember"
        rd = self.rounds.get((pid, r))
        if rd is None or rd.phase != "Open":
            return "RoundsNotOpen"
        if self.now > rd.deadline:
            return "RoundsDeadlinePassed"
        if caller in rd.committed:
            return "RoundsAlreadyCommitted"
        if not good_cid:
            return "RoundsInvalidCid"
        if samples == 0:
            return "RoundsInvalidSampleCount"
        target = self.proposals[pid].targets.get(name)
        if target is None:
            return "RoundsNotATarget"
        owner, rows = target
        if owner != caller:
            return "RoundsNotDatasetOwner"
        if samples > rows:
            return "RoundsSampleCountTooHigh"
        d = self.datasets[name]
        if d.revoked or not d.open:
            return "RoundsPolicyDenied"
        return None

    def check_close(self, caller: int, pid: int, r: int) -> str | None:
        if caller != self.coordinator:
            return "ConsortiumNotCoordinator"
        rd = self.rounds.get((pid, r))
        if rd is None or rd.phase != "Open":
            return "RoundsNotOpen"
        p = self.proposals[pid]
        if len(rd.committed) < p.min_participants:
            return "RoundsNotEnoughParticipants"
        if self.now <= rd.deadline and len(rd.committed) < len(p.targets) and self.awaited(pid, r):
            return "RoundsEarlyClose"
        return None

    def awaited(self, pid: int, r: int) -> int:
        """Targets a round still waits for: owner a member, not committed, the dataset's policy admits."""
        rd = self.rounds[(pid, r)]
        return sum(1 for name, (owner, _rows) in self.proposals[pid].targets.items()
                   if owner not in rd.committed and owner in self.active
                   and not (self.datasets[name].revoked or not self.datasets[name].open))

    def check_fail(self, caller: int, pid: int, r: int) -> str | None:
        rd = self.rounds.get((pid, r))
        if rd is None or rd.phase != "Open":
            return "RoundsNotOpen"
        if self.now <= rd.deadline:
            return "RoundsDeadlineNotReached"
        if caller != self.coordinator and len(rd.committed) >= self.proposals[pid].min_participants:
            return "RoundsEnoughParticipants"
        return None



# ------------------------------------------------------------------ the chain side

SIMULATION_GAS = 15_000_000


class Accepted(Exception):
    """The simulation of an action the model expected to be refused went through."""


def _revert_bytes(exc: TransactionFailed) -> bytes:
    raw = exc.args[0] if exc.args else b""
    return raw if isinstance(raw, bytes) else ast.literal_eval(raw)


@contextmanager
def simulated(chain: Chain) -> Iterator[None]:
    """Clients send nothing while inside: each action is one direct ``eth_call`` on the pending block."""
    tester = chain.backend.tester

    def simulate(account: Any, action: Any, *, value: int = 0) -> Any:
        call = {"from": account.address, "to": action.address, "gas": SIMULATION_GAS, "value": value,
                "data": action._encode_transaction_data()}
        try:
            tester.call(call, "pending")
        except TransactionFailed as exc:
            raise decode_revert(_revert_bytes(exc)) from None
        raise Accepted

    chain.send = simulate  # an instance attribute shadows the method
    try:
        yield
    finally:
        del chain.send


def view(chain: Chain, fn: Any) -> Any:
    """A view (``contract.functions.f(...)``) read with one direct ``eth_call``; one output unwrapped."""
    call = {"from": chain.dev_accounts[0].address, "to": fn.address, "gas": SIMULATION_GAS,
            "data": fn._encode_transaction_data()}
    raw = chain.backend.tester.call(call, "latest")
    out = abi_decode(get_abi_output_types(fn.abi), bytes(raw) if not isinstance(raw, str) else bytes.fromhex(raw[2:]))
    return out[0] if len(out) == 1 else out


class Driver:
    """Actions on the chain, each checked against the model first (``attempt``)."""

    def __init__(self, fc: Any, accounts: list[Any], model: Rules, stats: dict[str, int]) -> None:
        self.chain = fc.chain
        self.fc = fc
        self.as_ = [fc.as_(a) for a in accounts]
        self.addr = [a.address for a in accounts]
        self.m = model
        self.stats = stats
        self.changed = False  # membership or coordinator changed since the invariants last looked
        self.touched: dict[str, set] = {"motion": set(), "dataset": set(), "proposal": set(), "round": set()}

    def attempt(self, label: str, expected: str | None, action: Callable[[], Any]) -> Any:
        """Run ``action``; it must revert with exactly ``expected``, or succeed if that is None."""
        try:
            if expected is None:
                result = action()
            else:
                with simulated(self.chain):
                    action()
        except Accepted:
            raise AssertionError(f"{label}: expected {expected}, the chain would accept it") from None
        except ChainRevert as exc:
            assert expected is not None, f"{label}: the model allows it, the chain reverted with {exc.error} ({exc})"
            assert exc.error == expected, f"{label}: expected {expected}, the chain reverted with {exc.error} ({exc})"
            self.stats[expected] = self.stats.get(expected, 0) + 1
            return None
        assert expected is None, f"{label}: expected {expected}, the chain accepted it"
        self.stats[label] = self.stats.get(label, 0) + 1
        self.m.head += 1
        assert result.block_number == self.m.head, "one transaction, one block"
        return result

    # -- membership motions --

    def propose_motion(self, caller: int, kind: MotionKind, whom: int) -> None:
        m = self.m
        name, key = (f"member {whom}", sha(f"key {whom}")) if kind == MotionKind.ADMIT else ("", None)
        r = self.attempt("proposeMotion", m.check_propose_motion(caller, kind, whom),
                         lambda: self.as_[caller].consortium.propose_motion(kind, self.addr[whom], name, key))
        if r is not None:
            mid = len(m.motions) + 1
            assert r.value == mid
            m.motions[mid] = Motion(kind, whom, m.open_tally())
            m.motions[mid].tally.created = r.block_number
            m.last_motion[(kind, whom)] = mid
            assert r.event("MotionProposed").args["expiry"] == m.motions[mid].expiry
            self.touched["motion"].add(mid)

    def vote_motion(self, voter: int, mid: int, support: bool) -> None:
        m = self.m
        motion = m.motions.get(mid)
        if self.attempt("voteMotion", m.check_vote(motion.tally if motion else None, voter),
                        lambda: self.as_[voter].consortium.vote_motion(mid, support)):
            motion.tally.voters.add(voter)
            if support:
                motion.tally.yes += 1
            else:
                motion.tally.no += 1
            self.touched["motion"].add(mid)

    def finalize_motion(self, caller: int, mid: int) -> None:
        m = self.m
        motion = m.motions.get(mid)
        expected = m.check_finalize(motion.tally if motion else None, motion.expiry if motion else None)
        if expected is None:
            expected = m.check_apply(motion)
        r = self.attempt("finalizeMotion", expected, lambda: self.as_[caller].consortium.finalize_motion(mid))
        if r is not None:
            approved = motion.tally.succeeded()
            motion.tally.state = "Approved" if approved else "Rejected"
            assert r.value.name == motion.tally.state.upper()
            if approved:
                m.apply(motion)
                self.changed = True
            self.touched["motion"].add(mid)

    # -- datasets --

    def register(self, caller: int, name: str, rows: int, open_: bool) -> None:
        m = self.m
        policy = Policy.open() if open_ else Policy()
        if self.attempt("registerDataset", m.check_register(caller, name, rows), lambda: self.as_[caller].registry.register_dataset(
                name, GOOD_CID, sha(name), sha("schema"), policy, row_count=rows)):
            m.datasets[name] = Dataset(caller, rows, open_)
            self.touched["dataset"].add(name)

    def set_policy(self, caller: int, name: str, open_: bool) -> None:
        m = self.m
        policy = Policy.open() if open_ else Policy()
        if self.attempt("setPolicy", m.check_owned(caller, name), lambda: self.as_[caller].registry.set_policy(name, policy)):
            m.datasets[name].open = open_
            self.touched["dataset"].add(name)

    def revoke(self, caller: int, name: str) -> None:
        m = self.m
        if self.attempt("revokeDataset", m.check_owned(caller, name), lambda: self.as_[caller].registry.revoke_dataset(name)):
            m.datasets[name].revoked = True
            self.touched["dataset"].add(name)

    # -- proposals --

    def propose(self, caller: int, targets: list[str], min_participants: int, rounds: int, duration: int) -> None:
        m = self.m
        r = self.attempt("submit", m.check_submit(caller, targets, min_participants), lambda: self.as_[caller].proposals.submit_proposal(
            GOOD_CID, sha("plan"), "diagnosis", targets, rounds, min_participants, duration))
        if r is not None:
            pid = len(m.proposals) + 1
            assert r.value == pid
            recorded = {t: (m.datasets[t].owner, m.datasets[t].rows) for t in targets}
            m.proposals[pid] = Proposal(caller, recorded, rounds, min_participants, duration, m.open_tally())
            m.proposals[pid].tally.created = r.block_number
            assert r.event("ProposalSubmitted").args["owners"] == [self.addr[o] for o, _ in recorded.values()]
            self.touched["proposal"].add(pid)

    def vote(self, voter: int, pid: int, choice: Vote) -> None:
        m = self.m
        p = m.proposals.get(pid)
        if self.attempt("vote", m.check_vote(p.tally if p else None, voter),
                        lambda: self.as_[voter].proposals.vote(pid, choice)):
            p.tally.voters.add(voter)
            setattr(p.tally, choice.name.lower(), getattr(p.tally, choice.name.lower()) + 1)
            self.touched["proposal"].add(pid)

    def finalize(self, caller: int, pid: int) -> None:
        m = self.m
        p = m.proposals.get(pid)
        r = self.attempt("finalize", m.check_finalize(p.tally if p else None),
                         lambda: self.as_[caller].proposals.finalize(pid))
        if r is not None:
            p.tally.state = "Approved" if p.tally.succeeded() else "Rejected"
            assert r.value == ProposalState[p.tally.state.upper()]
            self.touched["proposal"].add(pid)

    def cancel(self, caller: int, pid: int) -> None:
        m = self.m
        if self.attempt("cancel", m.check_cancel(caller, pid), lambda: self.as_[caller].proposals.cancel(pid)):
            m.proposals[pid].tally.state = "Cancelled"
            self.touched["proposal"].add(pid)

    # -- rounds --

    def open_round(self, caller: int, pid: int, r: int) -> None:
        m = self.m
        res = self.attempt("openRound", m.check_open(caller, pid, r), lambda: self.as_[caller].rounds.open_round(pid, r))
        if res is not None:
            m.rounds[(pid, r)] = Round(deadline=res.block_number + m.proposals[pid].duration)
            m.last_round[pid] = r
            assert res.value == m.rounds[(pid, r)].deadline
            self.touched["round"].add((pid, r))

    def commit(self, caller: int, pid: int, r: int, name: str, good_cid: bool, samples: int) -> None:
        m = self.m
        if self.attempt("commitUpdate", m.check_commit(caller, pid, r, name, good_cid, samples),
                        lambda: self.as_[caller].rounds.commit_update(
                            pid, r, name, GOOD_CID if good_cid else BAD_CID, sha("u"), samples)):
            m.rounds[(pid, r)].committed.add(caller)
            self.touched["round"].add((pid, r))

    def close_round(self, caller: int, pid: int, r: int) -> None:
        m = self.m
        if self.attempt("closeRound", m.check_close(caller, pid, r), lambda: self.as_[caller].rounds.close_round(
                pid, r, GOOD_CID, sha("agg"), GOOD_CID, sha("scores"))):
            m.rounds[(pid, r)].phase = "Closed"
            self.touched["round"].add((pid, r))

    def fail_round(self, caller: int, pid: int, r: int) -> None:
        m = self.m
        if self.attempt("failRound", m.check_fail(caller, pid, r), lambda: self.as_[caller].rounds.fail_round(pid, r)):
            m.rounds[(pid, r)].phase = "Failed"
            self.touched["round"].add((pid, r))

    def mine(self, chain: Chain, blocks: int) -> None:
        chain.mine(blocks)
        self.m.head += blocks


@dataclass
class World:
    chain: Chain
    fc: Any
    accounts: list[Any]
    bases: dict[str, tuple[Any, Rules]]  # name -> (snapshot, model of that state)
    stats: dict[str, int] = field(default_factory=dict)


def _build_bases(chain: Chain, fc: Any, accounts: list[Any]) -> dict[str, tuple[Any, Rules]]:
    """The starting states, built through the checked actions (so the model of each is right)."""
    stats: dict[str, int] = {}
    d = Driver(fc, accounts, Rules(chain.block_number), stats)
    d.register(0, "d0", 50, True)
    d.register(1, "d1", 50, True)
    d.propose(0, ["d0", "d1"], 1, 2, 8)
    for voter in FOUNDERS:
        d.vote(voter, 1, Vote.YES)
    d.mine(chain, PERIOD)
    d.finalize(2, 1)
    assert d.m.proposals[1].tally.state == "Approved"

    def snapshot(name: str) -> None:
        # eth-tester reverts by re-importing the snapshot's block: an empty one costs little
        d.mine(chain, 1)
        bases[name] = (chain.snapshot(), copy.deepcopy(d.m))

    bases: dict[str, tuple[Any, Rules]] = {}
    snapshot("approved")
    d.open_round(COORD, 1, 1)
    d.commit(0, 1, 1, "d0", True, 40)
    snapshot("round")
    d.commit(1, 1, 1, "d1", True, 50)
    snapshot("committed")  # every target committed: the round may close early
    chain.revert(bases["approved"][0])
    d.m = copy.deepcopy(bases["approved"][1])
    d.propose_motion(0, MotionKind.SET_COORDINATOR, 4)
    for voter in FOUNDERS:
        d.vote_motion(voter, 1, True)
    d.propose_motion(1, MotionKind.ADMIT, 5)
    d.vote_motion(0, 2, True)
    snapshot("motions")
    d.mine(chain, d.m.motions[1].expiry - d.m.head)
    snapshot("expired")  # the passed motion can no longer be applied
    assert d.m.motions[1].tally.succeeded() and not [k for k in stats if k[0].isupper()]  # no refusals
    return bases


@pytest.fixture(scope="module")
def world() -> World:
    chain = Chain.connect("eth-tester://")
    accounts = list(chain.dev_accounts[:6])
    dep = chain.deploy(accounts[0], make_founders([accounts[i] for i in FOUNDERS]), accounts[COORD].address,
                       voting_period_blocks=PERIOD, quorum_bps=QUORUM_BPS, approval_bps=APPROVAL_BPS)
    fc = chain.attach(dep)
    return World(chain, fc, accounts, _build_bases(chain, fc, accounts))


class GovernanceMachine(RuleBasedStateMachine):
    world: World  # set by the test

    @initialize(base=st.sampled_from(["approved", "round", "committed", "motions", "expired"]))
    def start(self, base):
        w = self.world
        snapshot, model = w.bases[base]
        w.chain.revert(snapshot)
        w.bases[base] = (w.chain.snapshot(), model)
        self.d = Driver(w.fc, w.accounts, copy.deepcopy(model), w.stats)
        self.d.changed = True  # let the invariants look once at the start

    # -- choosing arguments: mostly what exists, sometimes anything --

    def pick(self, data: Any, existing: Any, anything: Any) -> Any:
        """An existing id (or key) four times in five when there is one, else any value of ``anything``."""
        existing = sorted(existing)
        if existing and data.draw(st.integers(0, 4)):
            return data.draw(st.sampled_from(existing))
        return data.draw(anything)

    def voter(self, data: Any) -> int:
        """A member four times in five, else anybody."""
        return self.pick(data, self.d.m.active, ACTORS)

    # -- membership motions --

    @rule(caller=ACTORS, kind=st.sampled_from(list(MotionKind)), whom=ACTORS)  # ("target" is rule()'s own)
    def propose_motion(self, caller, kind, whom):
        self.d.propose_motion(caller, kind, whom)

    def active(self, votes: dict[int, Any]) -> list[int]:
        return [i for i, v in votes.items() if v.tally.state == "Active"]

    @rule(data=st.data(), support=st.booleans())
    def vote_motion(self, data, support):
        self.d.vote_motion(self.voter(data), self.pick(data, self.active(self.d.m.motions), st.integers(1, 4)), support)

    @rule(caller=ACTORS, data=st.data())
    def finalize_motion(self, caller, data):
        self.d.finalize_motion(caller, self.pick(data, self.d.m.motions, st.integers(1, 4)))

    @precondition(lambda self: self.d.m.motions)
    @rule(data=st.data(), caller=ACTORS)
    def rally_motion(self, data, caller):
        """Every member votes yes on a motion (each vote checked like any other), the vote ends, it is finalized."""
        mid = data.draw(st.sampled_from(sorted(self.d.m.motions)))
        for voter in sorted(self.d.m.active):
            self.d.vote_motion(voter, mid, True)
        self.d.mine(self.world.chain, PERIOD)
        self.d.finalize_motion(caller, mid)

    # -- datasets --

    @rule(caller=ACTORS, name=st.sampled_from(NAMES), rows=st.sampled_from([0, 1, 50]), open_=st.booleans())
    def register(self, caller, name, rows, open_):
        self.d.register(caller, name, rows, open_)

    def owner_or_anybody(self, data: Any, name: str) -> int:
        ds = self.d.m.datasets.get(name)
        return self.pick(data, [ds.owner] if ds else [], ACTORS)

    @rule(data=st.data(), name=st.sampled_from(NAMES), open_=st.booleans())
    def set_policy(self, data, name, open_):
        self.d.set_policy(self.owner_or_anybody(data, name), name, open_)

    @rule(data=st.data(), name=st.sampled_from(NAMES))
    def revoke(self, data, name):
        self.d.revoke(self.owner_or_anybody(data, name), name)

    # -- proposals --

    @rule(data=st.data(), names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=3),
          min_participants=st.integers(0, 2), rounds=st.integers(1, 2), duration=st.sampled_from([2, 8]))
    def propose(self, data, names, min_participants, rounds, duration):
        """By a member (mostly) - on registered datasets (mostly), or on whatever names, possibly none."""
        m = self.d.m
        if data.draw(st.integers(0, 4)):
            live = [n for n, ds in m.datasets.items() if not ds.revoked]
            names = data.draw(st.lists(st.sampled_from(live), min_size=1, max_size=3, unique=True)) if live else names
        elif not data.draw(st.integers(0, 3)):
            names = []
        self.d.propose(self.voter(data), names, min_participants, rounds, duration)

    @rule(data=st.data(), choice=st.sampled_from(list(Vote)))
    def vote(self, data, choice):
        self.d.vote(self.voter(data), self.pick(data, self.active(self.d.m.proposals), st.integers(1, 4)), choice)

    @rule(caller=ACTORS, data=st.data())
    def finalize(self, caller, data):
        self.d.finalize(caller, self.pick(data, self.d.m.proposals, st.integers(1, 4)))

    @rule(caller=ACTORS, data=st.data())
    def cancel(self, caller, data):
        self.d.cancel(caller, self.pick(data, self.d.m.proposals, st.integers(1, 4)))

    @precondition(lambda self: len(self.d.m.proposals) > 1)
    @rule(data=st.data(), caller=ACTORS)
    def rally_proposal(self, data, caller):
        """Every member votes yes on a proposal, the vote ends, it is finalized."""
        pid = data.draw(st.sampled_from(sorted(self.d.m.proposals)[1:]))
        for voter in sorted(self.d.m.active):
            self.d.vote(voter, pid, Vote.YES)
        self.d.mine(self.world.chain, PERIOD)
        self.d.finalize(caller, pid)

    # -- rounds --

    def round_key(self, data: Any) -> tuple[int, int]:
        """An open round four times in five when there is one, else any (proposal, round)."""
        m = self.d.m
        return self.pick(data, [k for k, rd in m.rounds.items() if rd.phase == "Open"],
                         st.tuples(PIDS, st.integers(1, 2)))

    @rule(caller=CALLERS, data=st.data())
    def open_round(self, caller, data):
        m = self.d.m
        pid = self.pick(data, [p for p, pr in m.proposals.items() if pr.tally.state == "Approved"], PIDS)
        r = data.draw(st.sampled_from([m.last_round.get(pid, 0) + 1, 1, 2]))
        self.d.open_round(m.coordinator if caller is None else caller, pid, r)

    @rule(caller=st.one_of(st.none(), st.none(), ACTORS), data=st.data(), good_cid=st.integers(0, 4),
          samples=st.sampled_from([1, 50, 50, 0, 51, 2**62]))
    def commit(self, caller, data, good_cid, samples):
        """For a target of the round's proposal (mostly), by the dataset's owner (None) or anybody."""
        m = self.d.m
        pid, r = self.round_key(data)
        p = m.proposals.get(pid)
        name = self.pick(data, p.targets if p else (), st.sampled_from(NAMES))
        d = m.datasets.get(name)
        who = (d.owner if d else 0) if caller is None else caller
        self.d.commit(who, pid, r, name, good_cid > 0, samples)

    @precondition(lambda self: any(rd.phase == "Open" for rd in self.d.m.rounds.values()))
    @rule(data=st.data())
    def round_trip(self, data):
        """In an open round, a target's owner commits properly; then the coordinator tries to close it."""
        m = self.d.m
        pid, r = data.draw(st.sampled_from(sorted(k for k, rd in m.rounds.items() if rd.phase == "Open")))
        name = data.draw(st.sampled_from(sorted(m.proposals[pid].targets)))
        self.d.commit(m.datasets[name].owner, pid, r, name, True, data.draw(st.sampled_from([1, 50])))
        self.d.close_round(m.coordinator, pid, r)

    @rule(caller=CALLERS, data=st.data())
    def close_round(self, caller, data):
        pid, r = self.round_key(data)
        self.d.close_round(self.d.m.coordinator if caller is None else caller, pid, r)

    @rule(caller=CALLERS, data=st.data())
    def fail_round(self, caller, data):
        pid, r = self.round_key(data)
        self.d.fail_round(self.d.m.coordinator if caller is None else caller, pid, r)

    # -- the attacks of issue 10, as steps (each still predicted by the model) --

    def open_target(self, data: Any) -> tuple[int, int, str] | None:
        """An open round and one of its targets whose owner has not committed yet, if any."""
        m = self.d.m
        options = sorted((pid, r, name) for (pid, r), rd in m.rounds.items() if rd.phase == "Open"
                         for name, (owner, _rows) in m.proposals[pid].targets.items() if owner not in rd.committed)
        return data.draw(st.sampled_from(options)) if options else None

    @precondition(lambda self: any(rd.phase == "Open" for rd in self.d.m.rounds.values()))
    @rule(data=st.data())
    def over_claim(self, data):
        """A target's owner claims more samples than it registered, then names no CID."""
        found = self.open_target(data)
        if found is None:
            return
        pid, r, name = found
        owner = self.d.m.datasets[name].owner
        self.d.commit(owner, pid, r, name, True, 2**62)
        self.d.commit(owner, pid, r, name, False, 1)

    @precondition(lambda self: any(rd.phase == "Open" for rd in self.d.m.rounds.values()))
    @rule(data=st.data(), revoke=st.booleans())
    def withdraw_then_commit(self, data, revoke):
        """A target's owner revokes (or closes) its dataset mid-round, then commits anyway."""
        found = self.open_target(data)
        if found is None:
            return
        pid, r, name = found
        owner = self.d.m.datasets[name].owner
        if revoke:
            self.d.revoke(owner, name)
        else:
            self.d.set_policy(owner, name, False)
        self.d.commit(owner, pid, r, name, True, 1)

    @rule(data=st.data())
    def squat(self, data):
        """A member proposes on a name nobody has registered yet; then registers it and tries again."""
        m = self.d.m
        free = [n for n in NAMES if n not in m.datasets]
        if not free:
            return
        name, member = data.draw(st.sampled_from(free)), self.voter(data)
        self.d.propose(member, ["d0", name], 1, 1, 8)
        self.d.register(member, name, 50, True)
        self.d.propose(member, ["d0", name], 1, 1, 8)

    @precondition(lambda self: self.d.m.motions)
    @rule(data=st.data(), caller=ACTORS)
    def duplicate_motion(self, data, caller):
        """Anybody proposes again the motion of an existing one (same kind, same account)."""
        motion = self.d.m.motions[data.draw(st.sampled_from(sorted(self.d.m.motions)))]
        self.d.propose_motion(caller, motion.kind, motion.target)

    # -- time --

    @rule(blocks=st.sampled_from([1, PERIOD, 2 * PERIOD]))  # (the "expired" start is past a motion's expiry)
    def mine(self, blocks):
        self.d.mine(self.world.chain, blocks)

    # -- invariants --

    @invariant()
    def members_and_coordinator(self):
        """Member count, admission counter and coordinator as the model has them (read after changes)."""
        d = getattr(self, "d", None)
        if d is None or not d.changed:
            return
        d.changed = False
        f = d.fc.consortium.contract.functions
        seq, count = view(d.chain, f.memberSnapshot())
        assert (seq, count) == (d.m.member_seq, len(d.m.active))
        assert view(d.chain, f.coordinator()).lower() == d.addr[d.m.coordinator].lower()

    def teardown(self):
        """Once per sequence: every object it created or changed, as the model has it."""
        d = getattr(self, "d", None)
        if d is None:
            return
        m, touched = d.m, d.touched
        consortium, registry, proposals, rounds = (
            d.fc.consortium.contract.functions, d.fc.registry.contract.functions,
            d.fc.proposals.contract.functions, d.fc.rounds.contract.functions)
        assert d.chain.block_number == m.head
        if touched["motion"]:
            assert view(d.chain, consortium.motionCount()) == len(m.motions)
        for mid in sorted(touched["motion"]):
            assert view(d.chain, consortium.stateOf(mid)) == _STATE[m.motion_state(mid)], mid
        if touched["dataset"]:
            assert view(d.chain, registry.datasetCount()) == len(m.datasets)
        for name in sorted(touched["dataset"]):
            ds, info = m.datasets[name], view(d.chain, registry.dataset(dataset_id(name)))
            owner, flags, rows = info[0], info[3], info[6]  # IDatasetRegistry.Dataset: owner, ..., flags, ..., rowCount
            assert (owner.lower(), bool(flags & 1), rows) == (d.addr[ds.owner].lower(), ds.revoked, ds.rows)
        if touched["proposal"]:
            assert view(d.chain, proposals.proposalCount()) == len(m.proposals)
        for pid in sorted(touched["proposal"]):
            assert view(d.chain, proposals.stateOf(pid)) == _STATE[m.proposals[pid].tally.state]
        for pid, r in sorted(touched["round"]):
            rd, info = m.rounds[(pid, r)], view(d.chain, rounds.roundOf(pid, r))
            assert (info[3], info[2]) == (_PHASE[rd.phase], len(rd.committed))  # IRounds.Round: phase, committed
            if rd.phase == "Open":  # what an early close is judged by
                assert view(d.chain, rounds.awaitedCommitments(pid, r)) == m.awaited(pid, r), (pid, r)


def test_governance_state_machine(world):
    """>= 1,000 random sequences; the time and what was exercised are printed (``-s``)."""

    class Machine(GovernanceMachine):
        pass

    Machine.world = world
    started = time.perf_counter()
    run_state_machine_as_test(Machine, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
    took = time.perf_counter() - started
    stats = world.stats
    print(f"\ngovernance state machine: {EXAMPLES} sequences of <= {STEPS} steps in {took:.1f} s; "
          f"outcomes {dict(sorted(stats.items()))}")
    # the sequences reached deep states, not only the first refusals
    for reached in ("finalizeMotion", "ConsortiumDuplicateMotion", "MemberVotingExpired", "submit",
                    "ProposalsUnknownTarget", "openRound", "commitUpdate", "RoundsSampleCountTooHigh",
                    "RoundsInvalidCid", "closeRound", "RoundsEarlyClose", "RoundsPolicyDenied"):
        assert stats.get(reached, 0) > 0, f"no sequence reached {reached}: {stats}"
