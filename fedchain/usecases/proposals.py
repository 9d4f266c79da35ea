"""Proposing a training plan, voting on it, finalizing it; reading a proposal's plan back.

A proposal is a plan pinned in its canonical form, with its CID and sha256 on
chain and the terms the contracts enforce (purpose, target datasets, rounds,
minimum participants, round length) copied from the plan — here, and only here,
so the chain's terms can never drift from the document members read. Every
target must already be registered (and not revoked): the chain records each
target's owner with the proposal, so members vote on whose data is used. If the
chain refuses the submission, nothing this call pinned stays pinned.
"""

from __future__ import annotations

from dataclasses import dataclass

from fedchain.content import fetch_document
from fedchain.contracts.models import ProposalInfo, ProposalState, TxResult, Vote
from fedchain.errors import ConfigError
from fedchain.plan import MAX_PLAN_BYTES, TrainingPlan, verify_plan_bytes
from fedchain.usecases.datasets import pin_fresh, undo_pin
from fedchain.usecases.ports import Governance, Store
from fedchain.usecases.refusals import Refused


@dataclass(frozen=True)
class Proposed:
    """A submitted proposal: its id, the pinned plan and the transaction."""

    id: int
    plan_cid: str
    plan_sha256: str
    info: ProposalInfo
    tx: TxResult


def propose(gov: Governance, store: Store, plan: TrainingPlan) -> Proposed:
    """Pin the plan's canonical bytes and submit it as a proposal with the plan's own terms.

    Refuses (``UNKNOWN_TARGET``, naming them) before pinning when a target is not a
    registered, unrevoked dataset.
    """
    missing = [name for name in plan.datasets if (d := gov.registry.dataset(name)) is None or d.revoked]
    if missing:
        raise Refused("UNKNOWN_TARGET", ", ".join(repr(n) for n in missing))
    data = plan.to_canonical_bytes()
    cid, sha, fresh = pin_fresh(store, data)
    try:
        tx = gov.proposals.submit_proposal(
            plan_cid=cid,
            plan_sha256=sha,
            purpose=plan.purpose,
            targets=list(plan.datasets),
            rounds=plan.rounds,
            min_participants=plan.min_participants,
            round_duration=plan.round_deadline_blocks,
        )
    except BaseException:
        undo_pin(store, cid, fresh)
        raise
    pid = int(tx.value)
    info = gov.proposals.proposal(pid)
    assert info is not None  # just submitted
    return Proposed(id=pid, plan_cid=cid, plan_sha256=sha, info=info, tx=tx)


def parse_vote(choice: str | Vote) -> Vote:
    """``yes`` / ``no`` / ``abstain`` (any case) or a :class:`Vote`."""
    if isinstance(choice, Vote):
        return choice
    try:
        return Vote[str(choice).strip().upper()]
    except KeyError:
        raise ConfigError(f"a vote is yes, no or abstain, not {choice!r}") from None


def vote(gov: Governance, proposal_id: int, choice: str | Vote) -> TxResult:
    """Cast the acting member's vote."""
    return gov.proposals.vote(proposal_id, parse_vote(choice))


def finalize(gov: Governance, proposal_id: int) -> TxResult:
    """Close the vote after its deadline; ``value`` is the resulting :class:`ProposalState`."""
    return gov.proposals.finalize(proposal_id)


def cancel(gov: Governance, proposal_id: int) -> TxResult:
    """Withdraw the acting member's own proposal (before any vote)."""
    return gov.proposals.cancel(proposal_id)


def require(gov: Governance, proposal_id: int) -> ProposalInfo:
    """The proposal, or :class:`Refused` (``UNKNOWN_PROPOSAL``)."""
    p = gov.proposals.proposal(proposal_id)
    if p is None:
        raise Refused("UNKNOWN_PROPOSAL", f"proposal {proposal_id}")
    return p


def fetch_plan(store: Store, proposal: ProposalInfo) -> TrainingPlan:
    """The proposal's plan from the store, checked against the sha256 on chain."""
    raw = fetch_document(store, proposal.plan_cid, proposal.plan_sha256, max_size=MAX_PLAN_BYTES)
    return verify_plan_bytes(raw, proposal.plan_sha256)


def is_approved(info: ProposalInfo | None) -> bool:
    return info is not None and info.state == ProposalState.APPROVED
