"""What the use cases need from the chain and the content store, as small protocols.

The use cases (:mod:`fedchain.usecases`) are written against these, not against
web3 or a particular store: the chain bindings (``fedchain.contracts``) and the
stores (``fedchain.ipfs``) satisfy them structurally, and a test or a console can
pass anything else that does. Each protocol names only the calls a use case makes.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Protocol, Sequence

from fedchain.contracts.models import (
    Admission,
    DatasetInfo,
    Deployment,
    MemberInfo,
    MotionKind,
    MotionState,
    Policy,
    ProposalInfo,
    ProposalState,
    RoundInfo,
    TxResult,
    Vote,
)


class Store(Protocol):
    """A content store (:class:`fedchain.ipfs.ContentStore`)."""

    def put(self, data: bytes | BinaryIO, *, pin: bool = True) -> str: ...

    def get_to(self, cid: str, out: BinaryIO) -> int: ...

    def is_pinned(self, cid: str) -> bool: ...

    def unpin(self, cid: str) -> None: ...


class Registry(Protocol):
    """Datasets and their access policies."""

    def dataset(self, dataset: str | bytes) -> DatasetInfo | None: ...

    def admits(self, dataset: str | bytes, proposal_id: int) -> Admission: ...

    def privacy_budget(self, dataset: str | bytes) -> tuple[int, int]: ...

    def register_dataset(
        self,
        name: str,
        metadata_cid: str,
        metadata_sha256: bytes | str,
        schema_hash: bytes | str,
        policy: Policy,
        row_count: int,
    ) -> TxResult: ...

    def set_policy(self, dataset: str | bytes, policy: Policy) -> TxResult: ...

    def revoke_dataset(self, dataset: str | bytes) -> TxResult: ...


class Proposals(Protocol):
    """Training proposals and their votes."""

    def proposal(self, proposal_id: int) -> ProposalInfo | None: ...

    def submit_proposal(
        self,
        plan_cid: str,
        plan_sha256: bytes | str,
        purpose: str,
        targets: Sequence[str | bytes],
        rounds: int,
        min_participants: int,
        round_duration: int,
    ) -> TxResult: ...

    def vote(self, proposal_id: int, vote: Vote) -> TxResult: ...

    def finalize(self, proposal_id: int) -> TxResult: ...

    def cancel(self, proposal_id: int) -> TxResult: ...


class Consortium(Protocol):
    """Members and membership motions."""

    def coordinator(self) -> str: ...

    def member(self, address: str) -> MemberInfo: ...

    def propose_motion(
        self, kind: MotionKind, target: str, name: str = "", x25519_pub: bytes | str | None = None
    ) -> TxResult: ...

    def vote_motion(self, motion_id: int, support: bool) -> TxResult: ...

    def finalize_motion(self, motion_id: int) -> TxResult: ...


class Rounds(Protocol):
    """Training rounds."""

    def round_info(self, proposal_id: int, round: int) -> RoundInfo: ...

    def commitment_of(self, proposal_id: int, round: int, address: str) -> bytes | None: ...

    def commit_update(
        self, proposal_id: int, round: int, dataset: str | bytes, cid: str, sha256: bytes | str, sample_count: int,
        epsilon_micro: int = 0, delta_pico: int = 0,
    ) -> TxResult: ...


class Governance(Protocol):
    """One deployment as seen by one acting member: a client per contract."""

    @property
    def registry(self) -> Registry: ...

    @property
    def proposals(self) -> Proposals: ...

    @property
    def consortium(self) -> Consortium: ...

    @property
    def rounds(self) -> Rounds: ...

    @property
    def address(self) -> str: ...

    @property
    def deployment(self) -> Deployment: ...

    def dry_run(self) -> "Governance":
        """The same deployment and signer where sending only simulates (see :mod:`~fedchain.usecases.preflight`)."""
        ...

    def read_model(self) -> Any:
        """The deployment's events folded up to the latest block (:class:`~fedchain.contracts.readmodel.ReadModel`)."""
        ...


__all__ = [
    "Admission", "Consortium", "Governance", "MotionKind", "MotionState", "Policy", "ProposalInfo",
    "ProposalState", "Proposals", "Registry", "Rounds", "Store", "TxResult", "Vote",
]
