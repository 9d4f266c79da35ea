"""Releasing a trained model by vote, and marking models when a hospital withdraws consent.

A closed round's aggregate is what training produced; a **release** is the
consortium's decision to use it (the ``Releases`` contract):

* :func:`propose` -- a member proposes releasing the model of (proposal, round)
  under its model card (a document pinned in the store: CID + sha256). The card
  is fetched back (size-bounded, hash-checked) and checked against the chain
  before anything is sent: it must be a ``fedchain-model-card`` of *this*
  network, proposal, round and aggregate (:func:`check_card`);
* :func:`vote` -- a member votes; a YES is refused (:class:`CardMismatch`) unless
  the card checks out against the release record, so an honest member never
  approves a card that lies about the model it releases;
* :func:`finalize` (anyone) / :func:`cancel` (proposer, before any vote);
* :func:`released_record` -- what ``model pull --released`` serves: only a model
  with an Approved release, never one marked withdrawn.

**Withdrawal.** When a dataset's owner revokes it, every model whose lineage
holds one of its updates (the commitments of the proposal's closed rounds up to
the model's round) is marked on chain, one transaction per model, O(1) gas each
(:func:`withdrawal_marks` finds them in the event read model,
:func:`mark_withdrawn` sends them). A marked model cannot be released.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from fedchain.content import fetch_document
from fedchain.contracts.models import (
    ModelStatus, ProposalState, ReleaseInfo, TxResult, UpdateCommitment, Vote,
)
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import ConfigError, FedchainError
from fedchain.modelcard import CARD_FORMAT
from fedchain.usecases.models import ModelNotFound, ModelRecord, closed_models, select
from fedchain.usecases.proposals import parse_vote

__all__ = [
    "MAX_CARD_BYTES", "CardMismatch", "ModelNotReleased", "ModelWithdrawn", "Mark", "check_card", "fetch_card",
    "propose", "vote", "finalize", "cancel", "release_of", "released_record", "withdrawal_marks",
    "mark_withdrawn",
]

#: Largest model card accepted (a card with 128 datasets and 10 000 rounds stays well below).
MAX_CARD_BYTES = 4 * 1024 * 1024


class CardMismatch(FedchainError):
    """The model card is not a card of the model it is proposed to release (or cannot be read as one)."""


class ModelNotReleased(ConfigError):
    """The consortium has not released that model (no Approved release vote)."""


class ModelWithdrawn(FedchainError):
    """A dataset in the model's lineage was revoked: the model is marked and is not served or released."""


class Releases(Protocol):
    def propose_release(self, proposal_id: int, round: int, card_cid: str, card_sha256: bytes | str) -> TxResult: ...

    def vote(self, release_id: int, vote: Vote) -> TxResult: ...

    def finalize(self, release_id: int) -> TxResult: ...

    def cancel(self, release_id: int) -> TxResult: ...

    def release(self, release_id: int) -> ReleaseInfo | None: ...

    def model_status(self, proposal_id: int, round: int) -> ModelStatus: ...

    def mark_withdrawn(self, proposal_id: int, round: int, commitment: UpdateCommitment) -> TxResult: ...


class ReleaseGovernance(Protocol):
    """The deployment as the release use cases need it."""

    @property
    def releases(self) -> Releases: ...

    @property
    def deployment(self) -> Any: ...

    def read_model(self) -> ReadModel: ...


def _hex(value: bytes | str) -> str:
    return ("0x" + value.hex()) if isinstance(value, (bytes, bytearray)) else str(value).lower()


def fetch_card(store: Any, cid: str, sha256: bytes | str) -> dict:
    """The card document at ``cid`` whose sha256 is ``sha256``, parsed (bounded: :data:`MAX_CARD_BYTES`)."""
    try:
        data = fetch_document(store, cid, sha256, max_size=MAX_CARD_BYTES)
        card = json.loads(data)
    except (FedchainError, ValueError) as exc:
        raise CardMismatch(f"the model card {cid} cannot be read as the chain names it: {exc}") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        raise CardMismatch(f"{cid} is not a {CARD_FORMAT} document")
    return card


def check_card(card: dict, *, chain_id: int, rounds_address: str, proposal_id: int, round_: int,
               aggregate_sha256: str) -> None:
    """Refuse a card that describes another network, proposal, round or aggregate than the one released."""
    model = card.get("model") if isinstance(card.get("model"), dict) else {}
    network = card.get("network") if isinstance(card.get("network"), dict) else {}
    expected = {
        "network.chain_id": (network.get("chain_id"), int(chain_id)),
        "network.rounds_contract": (str(network.get("rounds_contract", "")).lower(), rounds_address.lower()),
        "model.proposal": (model.get("proposal"), int(proposal_id)),
        "model.round": (model.get("round"), int(round_)),
        "model.aggregate_sha256": (str(model.get("aggregate_sha256", "")).lower(), aggregate_sha256.lower()),
    }
    wrong = [f"{k} is {got!r}, the chain says {want!r}" for k, (got, want) in expected.items() if got != want]
    if wrong:
        raise CardMismatch("the model card does not describe the model it releases: " + "; ".join(wrong))


def propose(gov: ReleaseGovernance, store: Any, proposal_id: int, round_: int | None, card_cid: str,
            card_sha256: str) -> TxResult:
    """Propose releasing a closed round's model (default: the last closed round) under the card at ``card_cid``.

    The card is fetched back and checked against the chain first (:class:`CardMismatch`);
    the contract then refuses a round that is not closed, a marked or already released model.
    ``value`` of the result is the release id.
    """
    rec = select(gov.read_model(), proposal_id, round_)
    card = fetch_card(store, card_cid, card_sha256)
    d = gov.deployment
    check_card(card, chain_id=d.chain_id, rounds_address=d.addresses["Rounds"], proposal_id=rec.proposal_id,
               round_=rec.round, aggregate_sha256=rec.aggregate_sha256)
    return gov.releases.propose_release(rec.proposal_id, rec.round, card_cid, card_sha256)


def require(gov: ReleaseGovernance, release_id: int) -> ReleaseInfo:
    info = gov.releases.release(release_id)
    if info is None:
        raise ConfigError(f"no release {release_id}")
    return info


def vote(gov: ReleaseGovernance, store: Any, release_id: int, choice: str | Vote) -> TxResult:
    """Vote on a release; a YES only after the card was fetched and checked against the release record."""
    v = parse_vote(choice)
    if v == Vote.YES:
        info = require(gov, release_id)
        card = fetch_card(store, info.card_cid, info.card_sha256)
        d = gov.deployment
        check_card(card, chain_id=d.chain_id, rounds_address=d.addresses["Rounds"], proposal_id=info.proposal_id,
                   round_=info.round, aggregate_sha256=_hex(info.aggregate_sha256))
    return gov.releases.vote(release_id, v)


def finalize(gov: ReleaseGovernance, release_id: int) -> TxResult:
    """Finalize a release after its voting period; ``value`` is the ProposalState (APPROVED: released)."""
    return gov.releases.finalize(release_id)


def cancel(gov: ReleaseGovernance, release_id: int) -> TxResult:
    """Withdraw a release proposal (its proposer, before any vote)."""
    return gov.releases.cancel(release_id)


def release_of(model: ReadModel, proposal_id: int, round_: int) -> int | None:
    """The Approved release of a model, or None."""
    return model.released.get((int(proposal_id), int(round_)))


def released_record(model: ReadModel, proposal_id: int, round_: int | None = None) -> ModelRecord:
    """The released model of a proposal (default: its latest released round): what may be served.

    :class:`ModelNotReleased` when there is none; :class:`ModelWithdrawn` when it is marked.
    """
    records = closed_models(model, proposal_id)
    released = [r for r in records if r.released and (round_ is None or r.round == round_)]
    if not released:
        which = f"round {round_} of proposal {proposal_id}" if round_ is not None else f"any model of proposal {proposal_id}"
        pending = [r for r in model.releases.values() if r.proposal_id == proposal_id and r.final_state is None
                   and r.cancelled_block is None]
        raise ModelNotReleased(
            f"the consortium has not released {which}"
            + (f" (release vote(s) {', '.join(str(r.id) for r in pending)} still open)" if pending else
               " (propose one: fedchain model release propose)"))
    rec = released[-1]
    if rec.withdrawn:
        raise ModelWithdrawn(
            f"round {rec.round} of proposal {proposal_id} was released but is marked withdrawn: dataset(s) "
            f"{', '.join(rec.withdrawn)} of its lineage were revoked by their owners; it is no longer served")
    return rec


@dataclass(frozen=True)
class Mark:
    """One model to mark for a revoked dataset, and the commitment that puts the dataset in its lineage."""

    proposal_id: int
    round: int
    commitment: UpdateCommitment


def withdrawal_marks(model: ReadModel, dataset_id: bytes) -> list[Mark]:
    """Every model whose lineage holds an update of ``dataset_id`` and that is not yet marked for it."""
    did = _hex(dataset_id)
    marked = {(w.proposal_id, w.round) for ws in model.withdrawals.values() for w in ws if w.dataset_id == did}
    out: list[Mark] = []
    for pid in sorted(model.proposals):
        first: UpdateCommitment | None = None
        for (p, n), r in sorted(model.rounds.items()):
            if p != pid or r.closed is None:
                continue
            if first is None:
                c = next((c for c in r.commits if c.dataset_id == did), None)
                if c is not None:
                    first = UpdateCommitment(pid, n, c.member, bytes.fromhex(c.dataset_id[2:]), c.cid,
                                             bytes.fromhex(c.sha256[2:]), c.n_samples, c.block, c.tx)
            if first is not None and (pid, n) not in marked:
                out.append(Mark(pid, n, first))
    return out


def mark_withdrawn(gov: ReleaseGovernance, dataset_id: bytes) -> list[TxResult]:
    """Mark, one transaction each, every model of a revoked dataset's lineage not yet marked."""
    return [gov.releases.mark_withdrawn(m.proposal_id, m.round, m.commitment)
            for m in withdrawal_marks(gov.read_model(), dataset_id)]


def state_name(state: ProposalState) -> str:
    return {ProposalState.ACTIVE: "voting", ProposalState.APPROVED: "released",
            ProposalState.REJECTED: "rejected", ProposalState.CANCELLED: "cancelled"}.get(state, state.name.lower())


__all__ += ["ModelNotFound", "require", "state_name"]
