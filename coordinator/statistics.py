"""Pooling a statistics phase: open every committed moments document, combine, publish the statistics document.

The same function serves the coordinator (which publishes its result) and replay
(which rebuilds it as an auditor and compares the bytes): each committed moments
blob is fetched (bounded, sha256 as committed), opened (sealed by the member that
committed it, for the coordinator and the plan's auditors exactly), parsed
strictly (:func:`fedchain.moments.parse_moments`) and must cover exactly the rows
committed on chain. What fails is left out with a code; the rest are combined
into the pooled mean/std (features must agree: the most common feature list wins,
a document with another one is ``FEATURES_DIFFER``). The document lists what went
in and what was left out, in chain order, so it is the same bytes on every machine.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Sequence

from fedchain.content import fetch_verified
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import FedchainError
from fedchain.moments import MAX_MOMENTS_BYTES, Moments, combine_moments, parse_moments, statistics_document
from fedchain.usecases.statistics import moments_context

__all__ = ["Pooled", "pool_moments"]


@dataclass(frozen=True)
class Pooled:
    document: bytes
    contributors: int
    rejected: tuple[dict, ...]


def pool_moments(model: ReadModel, store: Any, deployment: Any, proposal_id: int, reader: Any,
                 recipients: Sequence[bytes]) -> Pooled:
    """The statistics document of ``proposal_id`` from its committed moments, opened as ``reader``."""
    rec = model.statistics.get(int(proposal_id))
    commits = list(rec.commits) if rec is not None else []
    opened: list[tuple[Any, Moments]] = []
    rejected: list[dict] = []
    for c in commits:
        ctx = moments_context(deployment, proposal_id, c.member)
        try:
            plain = fetch_verified(store, c.cid, c.sha256, ctx, reader, max_size=MAX_MOMENTS_BYTES + 4096,
                                   recipients=list(recipients))
            doc = parse_moments(plain, f"the moments of {c.member}")
        except FedchainError as exc:
            rejected.append({"member": c.member, "dataset": c.dataset_id, "code": "UNREADABLE",
                             "detail": type(exc).__name__})
            continue
        if doc.n != c.n_samples:
            rejected.append({"member": c.member, "dataset": c.dataset_id, "code": "ROW_COUNT_DIFFERS",
                             "detail": f"{doc.n} rows in the document, {c.n_samples} committed"})
            continue
        opened.append((c, doc))
    if opened:
        common = Counter(d.features for _c, d in opened).most_common(1)[0][0]
        kept = []
        for c, d in opened:
            if d.features == common:
                kept.append((c, d))
            else:
                rejected.append({"member": c.member, "dataset": c.dataset_id, "code": "FEATURES_DIFFER",
                                 "detail": f"{len(d.features)} features, not the {len(common)} the others share"})
        opened = kept
    if not opened:
        raise FedchainError(f"proposal {proposal_id}: no committed moments could be used "
                            f"({len(commits)} committed, {len(rejected)} left out)")
    std = combine_moments([d for _c, d in opened], [c.member for c, _d in opened])
    contributors = [{"member": c.member, "dataset": c.dataset_id, "cid": c.cid, "rows": c.n_samples}
                    for c, _d in opened]
    rejected.sort(key=lambda r: (r["member"], r["dataset"]))
    return Pooled(statistics_document(proposal_id, std, contributors, rejected), len(contributors), tuple(rejected))
