"""Plain data types of the contract façade (no web3 in here).

(Not named ``types.py``: running a script from ``contracts/`` would shadow the
standard library module.)

Conventions: addresses are checksummed ``str``; bytes32 values (hashes, keys,
dataset ids) are ``bytes`` of length 32 in dataclasses and ``0x``-hex strings in
event arguments (JSON-friendly); block numbers and timestamps are ``int``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import IntEnum
from pathlib import Path
from typing import Any, Sequence

from fedchain.errors import FedchainError


class Vote(IntEnum):
    """A member's vote on a proposal (``Proposals.Choice``)."""

    YES = 1
    NO = 2
    ABSTAIN = 3


class ProposalState(IntEnum):
    """A proposal's ``IMemberVoting.VoteState``. ``ACTIVE`` (alias ``PENDING``) while voting.

    ``EXPIRED`` is only ever a motion's (an approved motion not applied in time).
    """

    NONE = 0
    ACTIVE = 1
    APPROVED = 2
    REJECTED = 3
    CANCELLED = 4
    EXPIRED = 5
    PENDING = 1


#: ``IMemberVoting.VoteState`` in general (errors of the voting base, which serves both kinds of vote).
VoteState = ProposalState


class MotionKind(IntEnum):
    """``IConsortium.MotionKind``."""

    ADMIT = 1
    REMOVE = 2
    SET_COORDINATOR = 3


class MotionState(IntEnum):
    """A motion's ``IMemberVoting.VoteState`` (motions are never cancelled).

    ``EXPIRED``: still Active in storage, but its finalization window closed, so it can no
    longer be finalized or applied (the contract's ``stateOf`` reports it so).
    """

    NONE = 0
    ACTIVE = 1
    APPROVED = 2
    REJECTED = 3
    EXPIRED = 5


class RoundPhase(IntEnum):
    """``IRounds.Phase``."""

    NONE = 0
    OPEN = 1
    CLOSED = 2
    FAILED = 3


class SessionStage(IntEnum):
    """``ISecureRounds.Stage``."""

    NONE = 0
    RUNNING = 1
    COMPLETED = 2
    FAILED = 3


@dataclass(frozen=True)
class SessionInfo:
    """A secure-aggregation session (``ISecureRounds.Session``)."""

    proposal_id: int
    round: int
    start: int
    phase_blocks: int
    threshold: int
    advertised: int
    shared: int
    masked: int
    unmasked: int
    stage: "SessionStage"
    seed: bytes

    def window(self, phase: int) -> tuple[int, int]:
        """First and last block in which phase ``phase`` (0..3) accepts messages."""
        first = self.start + phase * self.phase_blocks + 1
        return first, first + self.phase_blocks - 1


#: Solidity enum type (ABI ``internalType``) -> Python enum, for decoding. A VoteState
#: emitted or raised by ``Consortium`` is a :class:`MotionState` (see ``codec``).
SOLIDITY_ENUMS: dict[str, type[IntEnum]] = {
    "enum IMemberVoting.VoteState": ProposalState,
    "enum IMemberVoting.Choice": Vote,
    "enum IConsortium.MotionKind": MotionKind,
    "enum IRounds.Phase": RoundPhase,
    "enum ISecureRounds.Stage": SessionStage,
}


class DeploymentError(FedchainError):
    """A deployment file is missing or invalid, or does not match the chain."""


@dataclass(frozen=True)
class FounderSpec:
    """A founding member: name, account address and X25519 public key (32 bytes)."""

    name: str
    address: str
    x25519_pub: bytes


@dataclass(frozen=True)
class Policy:
    """A dataset's data-use policy.

    ``purposes``: purpose strings (hashed with keccak256 on the way in) or
    32-byte hashes; empty = any purpose. ``proposal_ids``: admitted proposals,
    or ``any_approved_proposal``. ``requesters``: admitted proposers; empty =
    any member. ``expiry``: unix timestamp (0 = never). ``max_epsilon_milli``:
    differential-privacy budget in thousandths of epsilon (0 = none; the ε ledger enforces it).
    The default policy admits nothing (no proposal listed, flag off).
    Policies read back from the chain carry purpose *hashes* (bytes).
    """

    purposes: tuple[str | bytes, ...] = ()
    proposal_ids: tuple[int, ...] = ()
    any_approved_proposal: bool = False
    requesters: tuple[str, ...] = ()
    expiry: int = 0
    max_epsilon_milli: int = 0

    def __post_init__(self) -> None:
        for name in ("purposes", "proposal_ids", "requesters"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))

    @classmethod
    def open(cls, **kw: Any) -> "Policy":
        """A policy admitting every approved proposal (other fields as given)."""
        return cls(any_approved_proposal=True, **kw)


@dataclass(frozen=True)
class VotingParams:
    """Voting period (blocks), quorum and approval threshold (basis points)."""

    voting_period_blocks: int
    quorum_bps: int
    approval_bps: int


@dataclass(frozen=True)
class MemberInfo:
    """A member record (``active`` False once removed; all zero if never a member)."""

    address: str
    name: str
    x25519_pub: bytes
    joined_at: int
    seq: int
    active: bool


@dataclass(frozen=True)
class MotionInfo:
    """A membership motion. ``deadline``: last voting block; ``expiry``: last block in which
    it may be finalized (and so applied)."""

    id: int
    kind: MotionKind
    state: MotionState
    proposer: str
    target: str
    name: str
    x25519_pub: bytes
    created_at: int
    deadline: int
    eligible: int
    yes: int
    no: int
    expiry: int = 0


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset with its current policy; ``row_count``: the rows registered (no
    commitment or evaluation on it may claim more samples)."""

    id: bytes
    name: str
    owner: str
    metadata_cid: str
    metadata_sha256: bytes
    schema_hash: bytes
    registered_at: int
    policy_version: int
    revoked: bool
    policy: Policy
    row_count: int = 0
    epsilon_spent_micro: int = 0  # the ε ledger: differential privacy spent on it (millionths)


@dataclass(frozen=True)
class Admission:
    """Result of ``admits``: ``reason`` is "" when ``ok``, else e.g. "PURPOSE_NOT_ALLOWED"."""

    ok: bool
    reason: str

    def __bool__(self) -> bool:
        return self.ok

    def __iter__(self):  # ``ok, reason = fc.admits(...)``
        return iter((self.ok, self.reason))


@dataclass(frozen=True)
class ProposalInfo:
    """A proposal. ``target_owners``: the owner of each target as recorded at submission
    (same order as ``targets``); only that owner may commit for it."""

    id: int
    proposer: str
    state: ProposalState
    plan_cid: str
    plan_sha256: bytes
    purpose: str
    purpose_hash: bytes
    targets: tuple[bytes, ...]
    rounds: int
    min_participants: int
    round_duration: int
    created_at: int
    deadline: int
    eligible: int
    yes: int
    no: int
    abstain: int
    target_owners: tuple[str, ...] = ()


@dataclass(frozen=True)
class RoundInfo:
    """A training round (phase NONE if never opened)."""

    proposal_id: int
    round: int
    phase: RoundPhase
    opened_at: int
    deadline: int
    committed: int
    evaluations: int
    global_metric_ppm: int | None
    aggregate_cid: str
    aggregate_sha256: bytes
    scores_cid: str
    scores_sha256: bytes


@dataclass(frozen=True)
class ReleaseInfo:
    """A release vote on the model of (``proposal_id``, ``round``) under a model card (``Releases``)."""

    id: int
    proposal_id: int
    round: int
    proposer: str
    state: ProposalState
    aggregate_sha256: bytes
    card_cid: str
    card_sha256: bytes
    created_at: int
    deadline: int
    eligible: int
    yes: int
    no: int
    abstain: int


@dataclass(frozen=True)
class ModelStatus:
    """Release and withdrawal state of one model: its Approved release id (0: none), its marks."""

    release_id: int
    withdrawals: int

    @property
    def released(self) -> bool:
        return self.release_id != 0

    @property
    def withdrawn(self) -> bool:
        return self.withdrawals != 0


@dataclass(frozen=True)
class UpdateCommitment:
    """One member's update commitment in a round, as its UpdateCommitted event recorded it."""

    proposal_id: int
    round: int
    member: str
    dataset: bytes
    cid: str
    sha256: bytes
    sample_count: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class Evaluation:
    """One member's evaluation of a closed round, as its EvaluationSubmitted event recorded it."""

    proposal_id: int
    round: int
    member: str
    dataset: bytes
    metric_ppm: int
    sample_count: int
    block_number: int
    tx_hash: str


@dataclass(frozen=True)
class ChainEvent:
    """One decoded contract event; ``args`` are JSON-friendly (hex strings for bytes).

    ``timestamp`` is the block's unix time and ``gas_used`` the gas of the whole
    transaction that emitted the event (both 0 when not fetched, see
    ``Fedchain.iter_events(details=False)``).
    """

    block_number: int
    tx_hash: str
    log_index: int
    contract: str
    event: str
    args: dict[str, Any]
    timestamp: int = 0
    gas_used: int = 0
    block_hash: str = ""  # 0x-hex hash of the block it was emitted in

    @property
    def block(self) -> int:
        """Alias of ``block_number`` (the read model's event shape, shared with trail events)."""
        return self.block_number

    @property
    def tx(self) -> str:
        """Alias of ``tx_hash`` (the read model's event shape, shared with trail events)."""
        return self.tx_hash

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict."""
        return asdict(self)


@dataclass(frozen=True)
class TxResult:
    """Outcome of a mined transaction.

    ``value`` is the function's result where it has one (new ids, final
    states), taken from the transaction's own events.
    """

    tx_hash: str
    block_number: int
    gas_used: int
    events: tuple[ChainEvent, ...] = ()
    value: Any = None

    def event(self, name: str) -> ChainEvent:
        """The first event called ``name`` (KeyError if absent)."""
        for ev in self.events:
            if ev.event == name:
                return ev
        raise KeyError(f"transaction {self.tx_hash} emitted no {name} event")


@dataclass
class Deployment:
    """Where the contracts live and with which parameters they were deployed."""

    chain_id: int
    addresses: dict[str, str]
    deploy_block: int
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-serializable dict."""
        return {
            "chain_id": self.chain_id,
            "addresses": dict(sorted(self.addresses.items())),
            "deploy_block": self.deploy_block,
            "params": self.params,
        }

    def save(self, path: str | Path) -> Path:
        """Write as JSON (sorted keys, trailing newline)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return p

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> "Deployment":
        """Inverse of :meth:`to_json`; raises :class:`DeploymentError` on bad input."""
        try:
            return cls(
                chain_id=int(doc["chain_id"]),
                addresses={str(k): str(v) for k, v in doc["addresses"].items()},
                deploy_block=int(doc["deploy_block"]),
                params=dict(doc.get("params", {})),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DeploymentError(f"invalid deployment document: {exc!r}") from None

    @classmethod
    def load(cls, path: str | Path) -> "Deployment":
        """Read a file written by :meth:`save`."""
        p = Path(path)
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DeploymentError(f"deployment file {p} not found") from None
        except ValueError as exc:
            raise DeploymentError(f"deployment file {p} is not JSON: {exc}") from None
        return cls.from_json(doc)


def as_tuple(values: Sequence[Any] | None) -> tuple[Any, ...]:
    """``tuple(values)`` with ``None`` as empty."""
    return tuple(values) if values else ()
