"""The approved plans of a history, verified against their on-chain hashes, for the audit report.

A plan is taken from an exported trail's ``document`` records or from a content
store; either way its bytes must hash to the ``planSha256`` the proposal
recorded and be the plan's canonical form (:func:`fedchain.plan.verify_plan_bytes`).
A plan that is missing or does not verify is left out (the report then says
"plan not available"), never trusted.
"""

from __future__ import annotations

from typing import Mapping

from fedchain.content import fetch_document
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import FedchainError
from fedchain.plan import MAX_PLAN_BYTES, TrainingPlan, verify_plan_bytes

__all__ = ["plans_from_documents", "plans_from_store"]


def plans_from_documents(history: ReadModel, documents: Mapping[str, dict]) -> dict[int, TrainingPlan]:
    """Plans from a trail's documents (``Trail.documents``: CID -> record with ``content``)."""
    out: dict[int, TrainingPlan] = {}
    for pid, p in history.proposals.items():
        rec = documents.get(p.plan_cid)
        content = rec.get("content") if isinstance(rec, dict) else None
        if not isinstance(content, str) or len(content) > MAX_PLAN_BYTES:
            continue
        try:
            out[pid] = verify_plan_bytes(content.encode("utf-8"), p.plan_sha256)
        except FedchainError:
            continue
    return out


def plans_from_store(history: ReadModel, store) -> dict[int, TrainingPlan]:
    """Plans fetched from a content store (size-bounded, hash-checked)."""
    out: dict[int, TrainingPlan] = {}
    for pid, p in history.proposals.items():
        try:
            out[pid] = verify_plan_bytes(fetch_document(store, p.plan_cid, p.plan_sha256, max_size=MAX_PLAN_BYTES),
                                         p.plan_sha256)
        except FedchainError:
            continue
    return out
