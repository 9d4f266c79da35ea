"""The federated statistics phase, as nodes, the coordinator and the CLI read it.

A plan with ``preprocessing.standardize = "federated"`` has a statistics phase
before round 1 (the ``Statistics`` contract): each target dataset's owner
commits its feature moments sealed for the coordinator and the auditors, and the
coordinator publishes the pooled mean/std as a public document whose CID and
sha256 are on chain. :func:`published` fetches that document verified;
:func:`effective_plan` is the plan as every node applies it (the published
mean/std in place of ``"federated"``); :func:`moments_context` is the envelope
context sealed moments carry (the Statistics contract, round 0).
"""

from __future__ import annotations

from typing import Any

from fedchain.content import fetch_document
from fedchain.contracts.readmodel import ReadModel
from fedchain.envelope import EnvelopeContext
from fedchain.errors import FedchainError
from fedchain.moments import MAX_STATISTICS_BYTES, Statistics, parse_statistics, with_statistics
from fedchain.plan import TrainingPlan

__all__ = ["StatisticsPending", "has_phase", "moments_context", "published", "effective_plan"]


class StatisticsPending(FedchainError):
    """The plan's statistics phase has not published its pooled statistics yet: nothing can be trained or
    evaluated with the plan's preprocessing until it has."""


def has_phase(plan: TrainingPlan) -> bool:
    """Whether the plan declares a statistics phase before training."""
    return plan.preprocessing.standardize == "federated"


def moments_context(deployment: Any, proposal_id: int, sender: str) -> EnvelopeContext:
    """The envelope context of sealed moments: the Statistics contract, round 0."""
    return EnvelopeContext(chain_id=deployment.chain_id, contract=deployment.addresses["Statistics"],
                           proposal_id=int(proposal_id), round=0, sender=sender)


def published(model: ReadModel, store: Any, proposal_id: int) -> Statistics | None:
    """The published statistics document of a proposal, fetched and checked against its sha256 (None: not yet)."""
    rec = model.statistics.get(int(proposal_id))
    if rec is None or rec.published is None:
        return None
    data = fetch_document(store, rec.published["cid"], rec.published["sha256"], max_size=MAX_STATISTICS_BYTES)
    doc = parse_statistics(data, f"the statistics of proposal {proposal_id} ({rec.published['cid']})")
    if doc.proposal != int(proposal_id):
        raise FedchainError(f"the statistics published for proposal {proposal_id} are those of proposal {doc.proposal}")
    return doc


def effective_plan(model: ReadModel, store: Any, proposal_id: int, plan: TrainingPlan) -> TrainingPlan:
    """``plan`` as nodes apply it: with a statistics phase, the published mean/std (:class:`StatisticsPending`
    until they are published); any other plan unchanged."""
    if not has_phase(plan):
        return plan
    stats = published(model, store, proposal_id)
    if stats is None:
        committed = len(model.statistics[proposal_id].commits) if proposal_id in model.statistics else 0
        raise StatisticsPending(f"proposal {proposal_id}'s statistics phase is not over: {committed} hospital(s) "
                                "committed their moments, the coordinator has not published the pooled statistics")
    return with_statistics(plan, stats)
