"""Contribution scores accumulated per member, across rounds and proposals.

Every closed round's scores document is named on chain by CID and sha256; this
fetches each one (hash-checked, size-bounded) and adds up, per member:

* ``total`` -- the sum of its shares (a round's shares sum to 1 among the members
  whose update helped, so ``total`` counts "rounds' worth" of contribution);
* ``rounds`` -- rounds in which it had an update aggregated or scored;
* ``excluded`` / ``clipped`` -- how often the plan's defences excluded or clipped one
  of its updates (the decisions in the document, with their reason codes).

The numbers are what the coordinator published; ``fedchain audit replay``
recomputes every one of them. A document that cannot be fetched or read is
listed in ``unreadable`` (never silently counted as zero).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document
from fedchain.errors import FedchainError

__all__ = ["MemberScore", "ScoreLedger", "accumulate"]


@dataclass
class MemberScore:
    address: str
    total: float = 0.0
    rounds: int = 0
    excluded: int = 0
    clipped: int = 0
    per_round: dict[tuple[int, int], float] = field(default_factory=dict)  # (proposal, round) -> share

    @property
    def mean(self) -> float:
        return self.total / self.rounds if self.rounds else 0.0


@dataclass
class ScoreLedger:
    members: dict[str, MemberScore] = field(default_factory=dict)
    rounds: list[tuple[int, int]] = field(default_factory=list)  # (proposal, round) counted
    methods: dict[int, str] = field(default_factory=dict)  # proposal -> contribution method
    unreadable: list[str] = field(default_factory=list)


def _number(x) -> float | None:
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) else None


def accumulate(read_model, store, proposals: list[int] | None = None) -> ScoreLedger:
    """The ledger over every closed round (of ``proposals``, or of all) in the read model."""
    ledger = ScoreLedger()
    for (pid, r), rec in sorted(read_model.rounds.items()):
        if rec.closed is None or (proposals is not None and pid not in proposals):
            continue
        try:
            doc = json.loads(fetch_document(store, rec.closed["scores_cid"], rec.closed["scores_sha256"],
                                            max_size=MAX_DOCUMENT_SIZE))
            scores = doc["scores"]
            if not isinstance(scores, dict):
                raise ValueError("'scores' is not an object")
        except (FedchainError, ValueError, KeyError, TypeError) as exc:
            ledger.unreadable.append(f"proposal {pid} round {r}: {exc}")
            continue
        ledger.rounds.append((pid, r))
        ledger.methods.setdefault(pid, str(doc.get("method", "samples")))
        for member, share in scores.items():
            value = _number(share)
            if value is None:
                ledger.unreadable.append(f"proposal {pid} round {r}: the score of {member} is not a number")
                continue
            m = ledger.members.setdefault(str(member).lower(), MemberScore(str(member).lower()))
            m.total += value
            m.rounds += 1
            m.per_round[(pid, r)] = value
        for d in doc.get("decisions", []) if isinstance(doc.get("decisions"), list) else []:
            if not isinstance(d, dict) or not isinstance(d.get("participant"), str):
                continue
            m = ledger.members.setdefault(d["participant"].lower(), MemberScore(d["participant"].lower()))
            if d.get("action") == "excluded":
                m.excluded += 1
            elif d.get("action") == "clipped":
                m.clipped += 1
    return ledger
