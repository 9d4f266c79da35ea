"""Chain errors as the project's own exceptions, with readable messages.

:class:`ChainRevert` carries the custom error's name (``.error``) and its
decoded arguments (``.args_dict``, JSON-friendly); its message is a phrase from
:data:`ERROR_PHRASES` followed by the arguments, e.g.
``not a member (0xf39F…2266)``. The bindings raise it identically on every
backend. :class:`ChainUnavailable` means the node could not be reached.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from fedchain.errors import FedchainError

#: Custom error name -> readable phrase (used in messages and by the CLI).
ERROR_PHRASES: dict[str, str] = {
    # shared (Errors.sol)
    "NotAMember": "not a member",
    "NotEligible": "member joined after the vote was created and may not vote on it",
    "AlreadyVoted": "already voted",
    "VotingClosed": "the voting period is over",
    "VotingOpen": "the voting period is still running",
    "InvalidChoice": "invalid vote choice",
    "EmptyCid": "a content identifier (CID) is empty",
    "InvalidName": "name is empty or too long",
    "ZeroAddress": "the zero address is not allowed",
    "NotCoordinator": "only the coordinator may do this",
    # Consortium
    "InvalidFounderCount": "invalid number of founding members",
    "InvalidVotingParameters": "invalid voting parameters (period > 0, quorum <= 10000 bps, approval 1..10000 bps)",
    "InvalidX25519Key": "the X25519 public key is empty",
    "AlreadyMember": "already a member",
    "AlreadyCoordinator": "already the coordinator",
    "LastMember": "the last member cannot be removed",
    "InvalidMotionKind": "invalid motion kind",
    "UnknownMotion": "no such motion",
    "MotionNotActive": "the motion is already finalized",
    "RoleManagedByMotions": "roles change only through coordinator motions",
    "AccessControlUnauthorizedAccount": "account lacks the required role",
    "AccessControlBadConfirmation": "bad role confirmation",
    # Proposals
    "UnknownProposal": "no such proposal",
    "ProposalNotActive": "the proposal is not open for voting",
    "NotProposer": "only the proposer may do this",
    "VotesAlreadyCast": "votes were already cast; the proposal can no longer be cancelled",
    "InvalidTargetCount": "invalid number of target datasets",
    "InvalidTarget": "invalid or duplicate target dataset",
    "InvalidRounds": "invalid number of rounds",
    "InvalidMinParticipants": "minimum participants must be at least 1",
    "InvalidRoundDuration": "round duration must be at least 1 block",
    # DatasetRegistry
    "DatasetExists": "a dataset with this name is already registered",
    "UnknownDataset": "no such dataset",
    "NotDatasetOwner": "not the owner of the dataset",
    "DatasetIsRevoked": "the dataset is revoked",
    "TooManyPolicyEntries": "too many entries in a policy list",
    "InvalidExpiry": "the expiry must be in the future",
    # Rounds
    "ProposalNotApproved": "the proposal is not approved",
    "RoundOutOfOrder": "rounds must be opened in order",
    "PreviousRoundOpen": "the previous round is still open",
    "RoundBeyondPlan": "the proposal planned fewer rounds",
    "RoundNotOpen": "the round is not open",
    "RoundNotClosed": "the round is not closed",
    "RoundDeadlinePassed": "the round's deadline has passed",
    "RoundDeadlineNotReached": "the round's deadline has not passed yet",
    "AlreadyCommitted": "already committed an update in this round",
    "NotATarget": "the dataset is not a target of the proposal",
    "PolicyDenied": "the dataset's policy does not admit the proposal",
    "InvalidSampleCount": "sample count must be positive",
    "NotEnoughParticipants": "not enough participants committed",
    "EnoughParticipants": "the round reached its participants; only the coordinator may fail it",
    "AlreadyEvaluated": "already submitted an evaluation for this round",
    "GlobalMetricAlreadyRecorded": "the global metric of this round is already recorded",
    "MetricOutOfRange": "metric out of range (0..1000000 ppm)",
    # generic
    "Error": "reverted",
    "Panic": "contract panic",
    "Unknown": "reverted with unrecognised data",
}

#: Phrases of the reason codes ``DatasetRegistry.admits`` / ``PolicyDenied`` report.
POLICY_REASONS: dict[str, str] = {
    "UNKNOWN_DATASET": "unknown dataset",
    "REVOKED": "dataset revoked",
    "EXPIRED": "policy expired",
    "PURPOSE_NOT_ALLOWED": "purpose not allowed",
    "PROPOSAL_NOT_ALLOWED": "proposal not allowed",
    "REQUESTER_NOT_ALLOWED": "requester not allowed",
    "PROPOSAL_NOT_APPROVED": "proposal not approved",
}


class ChainError(FedchainError):
    """Base of chain-related errors."""


class ChainUnavailable(ChainError):
    """The chain node at a URL could not be reached (or stopped answering)."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"chain node unavailable at {url}" + (f": {detail}" if detail else ""))


class ChainRevert(ChainError):
    """A transaction or call reverted.

    :ivar error: custom error name ("NotAMember"), or "Error"/"Panic"/"Unknown".
    :ivar args_dict: decoded arguments by name, JSON-friendly.
    :ivar phrase: the readable phrase for ``error``.
    :ivar data: the raw revert data as 0x-hex.
    """

    def __init__(self, error: str, args_dict: dict[str, Any] | None = None, data: str = "0x") -> None:
        self.error = error
        self.args_dict = dict(args_dict or {})
        self.phrase = ERROR_PHRASES.get(error, error)
        self.data = data
        super().__init__(format_revert(error, self.args_dict))


def _short(value: Any) -> str:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, str) and value.startswith("0x") and len(value) > 14:
        if len(value) == 66:  # bytes32: show a readable reason code as text
            raw = bytes.fromhex(value[2:]).rstrip(b"\0")
            if raw and all(0x20 <= b < 0x7F for b in raw):
                return raw.decode()
        return f"{value[:6]}…{value[-4:]}"
    return str(value)


def format_revert(error: str, args: dict[str, Any]) -> str:
    """``phrase (arg)`` for one argument, ``phrase (name value, …)`` for several."""
    phrase = ERROR_PHRASES.get(error, error)
    if error == "Error" and "message" in args:
        return f"reverted: {args['message']}"
    if not args:
        return phrase
    if len(args) == 1:
        return f"{phrase} ({_short(next(iter(args.values())))})"
    return f"{phrase} ({', '.join(f'{k} {_short(v)}' for k, v in args.items())})"
