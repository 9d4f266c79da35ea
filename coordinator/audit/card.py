"""Gather a model card (:mod:`fedchain.modelcard`) from the chain's records and the documents they hash.

Everything in a card comes from the event read model (the live chain's
``fed.read_model()`` or an exported trail's :class:`History`) and from
documents whose sha256 the chain holds: the plan, each round's scores document,
each dataset's metadata document -- every one fetched with a size bound and its
hash checked. Nothing is taken on the coordinator's word beyond what it
committed on chain; the replay (``audit`` verdicts) is what checks the
coordinator's arithmetic, and a card says "not audited" when none ran.

It lives with the audit because it reads the same history and carries the
replay's verdicts; it never retrains or re-aggregates by itself.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document
from fedchain.contracts.readmodel import APPROVED, ReadModel
from fedchain.errors import FedchainError
from fedchain.modelcard import CARD_FORMAT, NOT_AUDITED, SCORE_MEANING
from fedchain.plan import PlanStandardization, TrainingPlan
from fedchain.usecases import models as usecase_models
from fedchain.usecases.proposals import fetch_plan

__all__ = ["CardError", "build_card", "PRIVACY_SUMMARY"]

MAX_METADATA_BYTES = 1 << 20

PRIVACY_SUMMARY = (
    "No formal privacy protection was applied in training: no differential-privacy noise and no secure "
    "aggregation. Raw rows never left a hospital, but each hospital's model update was encrypted to the "
    "coordinator and the plan's auditors, who can read it, and the aggregate is readable by anyone with access to "
    "the consortium's store. The ε limits some datasets' policies declare are recorded, not consumed: no "
    "differential-privacy mechanism exists yet to spend them."
)


class CardError(FedchainError):
    """A card cannot be assembled: a document the chain references is missing or does not verify."""


def _who(model: ReadModel, address: str) -> dict[str, Any]:
    addr = address.lower()
    m = model.members.get(addr)
    name = m.name if m is not None else ("coordinator" if addr == (model.coordinator or "") else None)
    return {"address": addr, "name": name}


def _scores_doc(store, pid: int, rnd: int, closed: dict) -> dict:
    try:
        doc = json.loads(fetch_document(store, closed["scores_cid"], closed["scores_sha256"],
                                        max_size=MAX_DOCUMENT_SIZE))
    except (FedchainError, ValueError) as exc:
        raise CardError(f"the scores document of round {rnd} of proposal {pid} ({closed['scores_cid']}) cannot be "
                        f"read: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("included"), list) or not isinstance(doc.get("scores"), dict):
        raise CardError(f"the scores document of round {rnd} of proposal {pid} is not a scores document")
    return doc


def _metadata(store, d) -> dict | None:
    """The owner's public metadata document (rows, description), or None when the store lacks it."""
    if not d.metadata_cid:
        return None
    try:
        doc = json.loads(fetch_document(store, d.metadata_cid, d.metadata_sha256, max_size=MAX_METADATA_BYTES))
    except (FedchainError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _preprocessing_words(plan: TrainingPlan) -> str:
    if isinstance(plan.preprocessing, PlanStandardization):
        return (f"features standardized with the plan's agreed mean/std ({len(plan.preprocessing.mean)} features; "
                "pooled values computed from the hospitals' shared moments)")
    if plan.preprocessing.standardize == "federated":
        return ("features standardized with the pooled mean/std of the statistics phase (each hospital's sealed "
                "moments; the coordinator's statistics document on chain)")
    return "features used as they are (no standardization)"


def build_card(model: ReadModel, store, proposal_id: int, round_: int | None = None, *, chain_id: int,
               rounds_address: str, verdicts: Iterable[Any] | None = None, governance_problems: Iterable[str] = (),
               auditor_key: str | None = None) -> dict[str, Any]:
    """The card of round ``round_`` (default: the last closed) of ``proposal_id``.

    ``verdicts``: the replay's per-round verdicts (objects with ``proposal_id``,
    ``round``, ``status``, ``problems``), or None when no auditor ran it.
    """
    rec = usecase_models.select(model, proposal_id, round_)
    p = model.proposals[proposal_id]
    try:
        plan = fetch_plan(store, p)
    except FedchainError as exc:
        raise CardError(f"the plan of proposal {proposal_id} ({p.plan_cid}) cannot be read: {exc}") from None
    upto = [r for (pid, n), r in sorted(model.rounds.items()) if pid == proposal_id and n <= rec.round]

    # Rounds, contributors and their scores (from the scores documents the chain hashes).
    rounds_out: list[dict[str, Any]] = []
    contributors: dict[tuple[str, str], dict[str, Any]] = {}
    contributed: dict[str, set[int]] = {}
    for r in upto:
        state = "closed" if r.closed is not None else ("failed" if r.failed_block is not None else "open")
        entry: dict[str, Any] = {
            "round": r.round, "state": state, "participants": 0, "rejected": [],
            "aggregate_cid": r.closed["aggregate_cid"] if r.closed else None,
            "validation_metric": None if r.global_metric_ppm is None else r.global_metric_ppm / 1e6,
        }
        if r.closed is not None:
            doc = _scores_doc(store, proposal_id, r.round, r.closed)
            try:
                scores = {str(k).lower(): float(v) for k, v in doc["scores"].items()}
                included = [(str(inc["participant"]).lower(), str(inc["dataset"]), int(inc["n_samples"]))
                            for inc in doc["included"]]
                rejected = sorted(dict(doc.get("rejected", {})).items())
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise CardError(f"the scores document of round {r.round} of proposal {proposal_id} is malformed "
                                f"({type(exc).__name__}: {exc})") from None
            if not all(map(math.isfinite, scores.values())):
                raise CardError(f"the scores document of round {r.round} of proposal {proposal_id} holds a "
                                "non-finite score")
            for member, dataset, n_samples in included:
                c = contributors.setdefault((member, dataset), {
                    "member": _who(model, member), "dataset": dataset, "samples": {}, "scores": {}})
                c["samples"][str(r.round)] = n_samples
                if member in scores:
                    c["scores"][str(r.round)] = scores[member]
                contributed.setdefault(dataset, set()).add(r.round)
            entry["participants"] = len({m for m, _d, _n in included})
            entry["rejected"] = [{"address": str(a).lower(), "name": _who(model, str(a))["name"], "reason": str(why)}
                                 for a, why in rejected]
        else:
            entry["participants"] = len({c.member for c in r.commits})
        rounds_out.append(entry)
    for c in contributors.values():
        vals = list(c["scores"].values())
        c["mean_score"] = sum(vals) / len(vals) if vals else None

    # Datasets the proposal targeted.
    datasets_out = []
    for did in p.targets:
        d = model.datasets.get(did)
        if d is None:
            datasets_out.append({"name": did, "owner": None, "rows": None, "description": None,
                                 "schema_hash": None, "contributed_rounds": [], "policy_max_epsilon": None,
                                 "note": "not registered"})
            continue
        meta = _metadata(store, d)
        pol = d.policy_at(rec.closed_block)
        n_rows = meta.get("n_rows") if meta else None
        datasets_out.append({
            "name": d.name, "owner": _who(model, d.owner),
            "rows": n_rows if isinstance(n_rows, int) and not isinstance(n_rows, bool) else None,
            "description": str(meta.get("description", "")) if meta else None,
            "schema_hash": d.schema_hash, "contributed_rounds": sorted(contributed.get(d.name, ())),
            "policy_max_epsilon": (pol.max_epsilon_milli / 1000 if pol and pol.max_epsilon_milli else None),
            "note": "" if meta else "metadata document unavailable in the store",
        })

    # Metrics of this round's model on each hospital's validation split.
    this = model.rounds[(proposal_id, rec.round)]
    per_hospital = sorted(({"member": _who(model, e.member), "dataset": model.dataset_name(e.dataset_id),
                            "value": e.metric_ppm / 1e6, "samples": e.n_samples} for e in this.evaluations),
                          key=lambda h: (h["dataset"], h["member"]["address"]))

    yes = sum(1 for v in p.votes.values() if v == "yes")
    no = sum(1 for v in p.votes.values() if v == "no")
    abstain = sum(1 for v in p.votes.values() if v == "abstain")
    all_rounds = [r for (pid, _n), r in model.rounds.items() if pid == proposal_id]

    if verdicts is None:
        audit: dict[str, Any] = {
            "status": NOT_AUDITED,
            "note": "no auditor key was given, so the aggregates were not re-derived from the committed updates; "
                    "an auditor named in the plan can run 'fedchain model card PROPOSAL --auditor KEYSTORE' "
                    "or 'fedchain audit replay'.",
        }
    else:
        mine = sorted((v for v in verdicts if v.proposal_id == proposal_id and v.round <= rec.round),
                      key=lambda v: v.round)
        n_ok = sum(1 for v in mine if v.status == "VERIFIED" and not v.problems)
        audit = {
            "status": "replayed", "auditor": auditor_key,
            "summary": f"{n_ok} of {len(mine)} round(s) VERIFIED",
            "rounds": [{"round": v.round, "verdict": v.status, "problems": list(v.problems)} for v in mine],
            "governance_problems": list(governance_problems),
        }

    return {
        "format": CARD_FORMAT,
        "network": {"chain_id": int(chain_id), "rounds_contract": rounds_address.lower()},
        "model": {
            "proposal": proposal_id, "round": rec.round, "aggregate_cid": rec.aggregate_cid,
            "aggregate_sha256": rec.aggregate_sha256, "closed_block": rec.closed_block, "kind": plan.model.kind,
            "parameters": plan.model.size.parameters, "in_features": plan.model.n_features,
            "n_classes": plan.model.n_classes, "last_closed_round": rec.last,
        },
        "release": {"released": None, "note": usecase_models.CARD_RELEASE_NOTE},
        "proposal": {
            "id": proposal_id, "name": plan.name, "purpose": p.purpose, "proposer": _who(model, p.proposer),
            "plan_cid": p.plan_cid, "plan_sha256": p.plan_sha256,
            "state": "Cancelled" if p.cancelled_block is not None else (p.final_state or "Voting"),
            "votes": {"yes": yes, "no": no, "abstain": abstain,
                      "eligible": p.eligible if p.eligible is not None else len(p.votes)},
        },
        "training": {
            "rounds_approved": p.rounds,
            "rounds_closed": sum(1 for r in all_rounds if r.closed is not None),
            "rounds_failed": sum(1 for r in all_rounds if r.failed_block is not None),
            "strategy": {"name": plan.strategy.name, "params": plan.strategy.params()},
            "optimizer": plan.optimizer.model_dump(mode="json"),
            "local_epochs": plan.local_epochs, "batch_size": plan.batch_size,
            "validation_fraction": plan.validation_fraction, "metric": plan.metric,
            "preprocessing": _preprocessing_words(plan), "seed": plan.seed,
            "approved": p.final_state == APPROVED,
        },
        "datasets": datasets_out,
        "score_meaning": SCORE_MEANING,
        "contributors": sorted(contributors.values(), key=lambda c: (c["dataset"], c["member"]["address"])),
        "rounds": rounds_out,
        "metrics": {
            "name": plan.metric, "split": "validation", "round": rec.round,
            "split_note": (f"Each hospital evaluated this round's model on its own held-out validation rows "
                           f"({plan.validation_fraction:g} of its data, split by the plan's seed) and submitted the "
                           "value on chain; the coordinator recorded their sample-weighted mean. These rows were not "
                           "trained on, but they are not an independent test set either."),
            "weighted_mean": rec.validation_metric,
            "per_hospital": per_hospital,
        },
        "privacy": {"differential_privacy": "none", "secure_aggregation": "none", "summary": PRIVACY_SUMMARY},
        "audit": audit,
    }
