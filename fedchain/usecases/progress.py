"""Where a proposal stands, read from the chain's events (the read model), for the role loops.

The node and the coordinator decide every step from this — never from what
they remember — so either can be stopped and restarted at any point, two
coordinators can race, and a chain node that was restarted without its
historical state (anvil reloading a state file) answers everything asked here:
nothing is read "as of" an earlier block.
"""

from __future__ import annotations

import time
from enum import Enum
from typing import Sequence

from fedchain import lifecycle
from fedchain.contracts.readmodel import ProposalRecord, ReadModel, RoundRecord
from fedchain.errors import ConfigError

__all__ = [
    "FINALIZE_GRACE_BLOCKS", "Stage", "check_proposals_exist", "last_round", "phase", "stage", "wait_for_block",
]

#: Blocks after a vote's deadline during which its proposal is still expected to be finalized.
FINALIZE_GRACE_BLOCKS = 20


class Stage(Enum):
    """A proposal's stage as the role loops see it."""

    UNKNOWN = "unknown"  # no such proposal (yet)
    VOTING = "voting"  # in its vote, or just past it and not finalized yet
    UNFINALIZED = "unfinalized"  # its vote ended long ago and nobody finalized it
    APPROVED = "approved"
    REJECTED = "rejected"
    CANCELLED = "cancelled"

    @property
    def pending(self) -> bool:
        """Whether rounds may still come of it."""
        return self in (Stage.VOTING, Stage.APPROVED)


def stage(rm: ReadModel, proposal_id: int, head: int) -> Stage:
    """The stage of ``proposal_id`` at block ``head``."""
    p: ProposalRecord | None = rm.proposals.get(int(proposal_id))
    if p is None:
        return Stage.UNKNOWN
    if p.cancelled_block is not None:
        return Stage.CANCELLED
    if p.final_state == "Approved":
        return Stage.APPROVED
    if p.final_state is not None:
        return Stage.REJECTED
    if p.deadline and head > p.deadline + FINALIZE_GRACE_BLOCKS:
        return Stage.UNFINALIZED
    return Stage.VOTING


def last_round(rm: ReadModel, proposal_id: int) -> RoundRecord | None:
    """The last round opened for the proposal (rounds open in order), or None."""
    rounds = [r for (pid, _), r in rm.rounds.items() if pid == int(proposal_id)]
    return max(rounds, key=lambda r: r.round) if rounds else None


def phase(r: RoundRecord) -> str:
    """``"open"``, ``"closed"`` or ``"failed"``."""
    if r.closed is not None:
        return "closed"
    if r.failed_block is not None:
        return "failed"
    return "open"


def check_proposals_exist(gov, proposals: Sequence[int] | None) -> None:
    """Refuse ids that name no proposal on chain, before any is used in a contract call."""
    if not proposals:
        return
    count = gov.proposals.proposal_count()
    missing = [p for p in proposals if not 1 <= p <= count]
    if missing:
        raise ConfigError(f"no proposal {', '.join(map(str, missing))} on chain ({count} proposal(s) so far)")


def wait_for_block(chain, seen: int, poll: float, *, longest: float = 10.0) -> int:
    """Wait until a block after ``seen`` exists (or ``longest`` seconds passed); return the head.

    Polls the block number every ``poll`` seconds through :func:`fedchain.lifecycle.sleep`,
    so a stop request ends the wait at once.
    """
    end = time.monotonic() + max(longest, poll)
    while True:
        lifecycle.sleep(poll)
        head = chain.block_number
        if head > seen or time.monotonic() >= end:
            return head
