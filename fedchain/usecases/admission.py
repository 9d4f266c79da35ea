"""May this dataset be used for this proposal? One answer, for the node, the CLI and the console.

:func:`check` runs the checks the contracts run when a member commits
an update (the proposal exists and is approved, the dataset is one of its
targets, the dataset's policy admits it, the member owns the dataset) and, when
given the node's local schema hash, the one check only the node can make (its
data matches the registered schema). The answer names the first failing rule
with a stable code and its one wording (:mod:`fedchain.usecases.refusals`).
"""

from __future__ import annotations

from dataclasses import dataclass

from fedchain.contracts.bindings import dataset_id
from fedchain.contracts.models import ProposalState
from fedchain.usecases.ports import Governance
from fedchain.usecases.refusals import Refused, phrase, sentence


@dataclass(frozen=True)
class AdmissionCheck:
    """``ok``, or the failing rule's ``code`` and ``reason`` (its phrase) with ``context``."""

    ok: bool
    code: str = ""
    reason: str = ""
    context: str = ""

    def __bool__(self) -> bool:
        return self.ok

    @property
    def words(self) -> str:
        """The refusal as one line (empty when admitted)."""
        return "" if self.ok else sentence(self.code, self.context)

    def raise_if_refused(self) -> None:
        """Raise :class:`Refused` unless admitted."""
        if not self.ok:
            raise Refused(self.code, self.context)

    @classmethod
    def refuse(cls, code: str, context: str = "") -> "AdmissionCheck":
        return cls(False, code, phrase(code), context)


def check(
    gov: Governance,
    dataset: str,
    proposal_id: int,
    *,
    owner: str | None = None,
    local_schema_hash: str | None = None,
    known_target: bool = False,
) -> AdmissionCheck:
    """Whether ``dataset`` may be used for ``proposal_id`` now (by ``owner``, with that schema).

    ``known_target``: the caller already saw the dataset among the proposal's targets on
    this chain (a proposal's targets never change), so the proposal is not read again; its
    state and the dataset's policy still are (``admits``), and a refusal is worded as
    without it (the proposal is read for the wording of ``PROPOSAL_NOT_APPROVED`` only, which
    names its state; a policy's refusal is the first failing rule either way). ``owner`` and
    ``local_schema_hash`` are checked after the policy, with or without it.
    """
    where = f"dataset {dataset!r}, proposal {proposal_id}"
    decision = gov.registry.admits(dataset, proposal_id) if known_target else None
    if decision is None or decision.reason == "PROPOSAL_NOT_APPROVED":
        p = gov.proposals.proposal(proposal_id)
        if p is None:
            return AdmissionCheck.refuse("UNKNOWN_PROPOSAL", f"proposal {proposal_id}")
        if p.state != ProposalState.APPROVED:
            return AdmissionCheck.refuse("PROPOSAL_NOT_APPROVED", f"proposal {proposal_id} is {p.state.name.lower()}")
        if dataset_id(dataset) not in p.targets:
            return AdmissionCheck.refuse("NOT_A_TARGET", where)
        if decision is None or not decision.ok:  # approved by now: ask the policy (again)
            decision = gov.registry.admits(dataset, proposal_id)
    if not decision.ok:
        return AdmissionCheck.refuse(decision.reason, where)
    if owner is not None or local_schema_hash is not None:
        info = gov.registry.dataset(dataset)
        if info is None:  # admits() said yes, so it exists; a reorg in between is the only way here
            return AdmissionCheck.refuse("UNKNOWN_DATASET", where)
        if owner is not None and info.owner.lower() != owner.lower():
            return AdmissionCheck.refuse("NOT_OWNER", f"{dataset!r} belongs to {info.owner}, not {owner}")
        if local_schema_hash is not None and local_schema_hash.lower() != "0x" + info.schema_hash.hex():
            return AdmissionCheck.refuse(
                "SCHEMA_MISMATCH",
                f"{dataset!r}: local {local_schema_hash}, on chain 0x{info.schema_hash.hex()}",
            )
    return AdmissionCheck(True)
