"""The hospital's own use case: seal an update, pin it, commit it on chain.

:func:`commit_update` is the one implementation of "seal - pin - commit", used by
the node after local training and by ``fedchain round commit`` for an update
trained elsewhere. Before anything is pinned it asks the chain what the contract
would refuse (the round is open, this member has not committed yet, the dataset
is a target of the proposal, the member owns it, its policy admits the proposal,
the sample count is within the dataset's registered rows, the dataset's privacy
budget can take the ε the update states), so a refused update is never published; if the transaction is refused anyway
(the deadline passed meanwhile), the blob it pinned is unpinned again.

Who receives the sealed update: the coordinator (its X25519 key as registered
on chain) and the auditors the plan names. A coordinator that is not a member
has no key on chain; its key must then be given explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import BinaryIO, Sequence, Union

from fedchain.content import Sealed, pin_document, seal_and_pin
from fedchain.contracts.models import RoundPhase, TxResult
from fedchain.envelope import EnvelopeContext
from fedchain.identity import Identity
from fedchain.plan import TrainingPlan
from fedchain.usecases import admission
from fedchain.usecases.datasets import undo_pin
from fedchain.usecases.ports import Governance, Store
from fedchain.usecases.privacy import check_budget
from fedchain.usecases.refusals import Refused

Payload = Union[bytes, bytearray, memoryview, str, PathLike, BinaryIO]


@dataclass(frozen=True)
class Committed:
    """A committed update: where it is, its hash, and the transaction."""

    cid: str
    sha256: str
    size: int
    n_samples: int
    tx: TxResult


def recipients_for(gov: Governance, plan: TrainingPlan, coordinator_key: bytes | None = None) -> list[bytes]:
    """X25519 keys an update is sealed for: the coordinator's, then the plan's auditors'."""
    if coordinator_key is None:
        coordinator = gov.consortium.coordinator()
        info = gov.consortium.member(coordinator)
        if not info.active:
            raise Refused(
                "COORDINATOR_KEY_UNKNOWN",
                f"the coordinator {coordinator} is not a member, so its encryption key is not on chain",
            )
        coordinator_key = info.x25519_pub
    return [coordinator_key, *(bytes.fromhex(k.removeprefix("0x")) for k in plan.auditors)]


def precheck_commit(
    gov: Governance, identity: Identity, proposal_id: int, round_: int, dataset: str, n_samples: int | None = None,
    epsilon_micro: int | None = None, delta_pico: int | None = None,
) -> None:
    """Raise :class:`Refused` if the contract would refuse this commitment (of ``n_samples``, spending
    ``epsilon_micro`` of the dataset's privacy budget; 0 = not private, None = not checked) now."""
    where = f"dataset {dataset!r}, proposal {proposal_id}, round {round_}"
    info = gov.rounds.round_info(proposal_id, round_)
    if info.phase != RoundPhase.OPEN:
        raise Refused("ROUND_NOT_OPEN", f"{where}, phase {info.phase.name.lower()}")
    if gov.rounds.commitment_of(proposal_id, round_, identity.address) is not None:
        raise Refused("ALREADY_COMMITTED", where)
    admission.check(gov, dataset, proposal_id, owner=identity.address).raise_if_refused()
    registered = gov.registry.dataset(dataset)
    if n_samples is not None and registered is not None and n_samples > registered.row_count:
        raise Refused("TOO_MANY_SAMPLES", f"{where}: {n_samples} claimed, {registered.row_count} registered")
    if epsilon_micro is not None:
        check_budget(gov, dataset, epsilon_micro, where, delta_pico)


def update_context(gov: Governance, identity: Identity, proposal_id: int, round_: int) -> EnvelopeContext:
    """The envelope context an update of ``identity`` for this round is sealed under (the coordinator checks it)."""
    return EnvelopeContext(
        chain_id=gov.deployment.chain_id,
        contract=gov.deployment.addresses["Rounds"],
        proposal_id=proposal_id,
        round=round_,
        sender=identity.address,
    )


def seal_update(gov: Governance, store: Store, identity: Identity, *, proposal_id: int, round_: int,
                payload: Payload, recipients: Sequence[bytes]) -> Sealed:
    """Seal ``payload`` for ``recipients`` and pin it, as :func:`commit_update` does, without a chain request
    (a simulation runs it on the thread that trained; hand the result to ``commit_update(sealed=...)``)."""
    return seal_and_pin(store, payload, update_context(gov, identity, proposal_id, round_), identity,
                        list(recipients))


def commit_update(
    gov: Governance,
    store: Store,
    identity: Identity,
    plan: TrainingPlan,
    *,
    proposal_id: int,
    round_: int,
    dataset: str,
    payload: Payload,
    n_samples: int,
    recipients: Sequence[bytes] | None = None,
    precheck: bool = True,
    seal: bool = True,
    epsilon_micro: int = 0,
    delta_pico: int = 0,
    sealed: Sealed | None = None,
) -> Committed:
    """Seal ``payload`` for the coordinator and the plan's auditors, pin it, commit CID + sha256
    and the differential privacy it spends (``epsilon_micro``/``delta_pico``, 0/0 = not private;
    :func:`fedchain.usecases.privacy.expected_spend` says what the plan's round spends).

    ``seal=False`` pins ``payload`` (bytes) as it is: a payload already encrypted for its only
    reader (a CKKS ciphertext under ``mode = "he"``); the member's transaction authenticates it.
    ``sealed``: the envelope :func:`seal_update` already sealed and pinned for this round (``payload``
    and ``recipients`` are then not used); it is unpinned if the transaction is refused."""
    if precheck:
        precheck_commit(gov, identity, proposal_id, round_, dataset, n_samples, epsilon_micro, delta_pico)
    if not seal:
        pinned = pin_document(store, payload)
        try:
            tx = gov.rounds.commit_update(proposal_id, round_, dataset, pinned.cid, pinned.sha256, n_samples,
                                          epsilon_micro=epsilon_micro, delta_pico=delta_pico)
        except BaseException:
            undo_pin(store, pinned.cid, True)  # fresh CKKS randomness: nobody else pinned these bytes
            raise
        return Committed(cid=pinned.cid, sha256=pinned.sha256, size=len(payload), n_samples=n_samples, tx=tx)
    if sealed is None:
        keys = list(recipients) if recipients is not None else recipients_for(gov, plan)
        sealed = seal_and_pin(store, payload, update_context(gov, identity, proposal_id, round_), identity, keys)
    try:
        tx = gov.rounds.commit_update(proposal_id, round_, dataset, sealed.cid, sealed.sha256, n_samples,
                                      epsilon_micro, delta_pico)
    except BaseException:
        undo_pin(store, sealed.cid, True)  # a sealed envelope is fresh randomness: nobody else pinned it
        raise
    return Committed(cid=sealed.cid, sha256=sealed.sha256, size=sealed.size, n_samples=n_samples, tx=tx)
