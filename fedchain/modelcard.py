"""Model cards: what a trained model is, who made it from what, and how far to trust it.

A card is a JSON document (``format`` :data:`CARD_FORMAT`) assembled from the
chain's records and the documents they hash (``coordinator.audit.card`` does
the gathering; ``fedchain model card`` pins it). It is encoded with
:func:`card_bytes` (RFC 8785, as plans are), so the same chain state gives the
same bytes and the same sha256 on every machine: a card holds no generation
time and nothing local.

Sections (keys of the document):

* ``model`` -- proposal, round, the aggregate's CID and sha256, kind and size;
* ``release`` -- ``released`` is always ``null``: a card is what a release
  vote approves (``Releases``, ``fedchain model release``), so the outcome is
  on chain, not in the card; the sentence says so;
* ``proposal`` -- plan name, purpose, proposer, plan CID/sha256, the vote;
* ``training`` -- rounds approved/closed/failed, strategy and its parameters,
  optimizer, epochs, batch size, preprocessing, seed;
* ``datasets`` -- every target dataset: owner, rows and description (from
  the owner's metadata document), schema hash, the rounds it contributed to,
  the privacy budget its policy declares;
* ``contributors`` -- per member and dataset: samples and contribution score
  in each round (a score is the member's share of the round's measured
  contribution, :data:`SCORE_MEANING`; a round's scores sum to 1);
* ``rounds`` -- each round up to this one: state, participants, rejected
  updates and why, aggregate CID, validation metric;
* ``metrics`` -- the plan's metric on each hospital's **validation** split (its
  own held-out rows) for this round, and their sample-weighted mean; not a
  test on independent data;
* ``privacy`` -- what protected the data during training (today: no
  differential privacy, no secure aggregation; said plainly);
* ``audit`` -- the replay's verdict per round when an auditor ran it, else
  ``"not audited"``.

:func:`render_markdown` is the readable rendering. Every string in a card that
a member chose (names, descriptions, purposes, problem sentences) is shown
with HTML and Markdown metacharacters escaped and control characters removed,
so a name cannot inject markup into whatever displays the card.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping

from fedchain.errors import ConfigError
from fedchain.plan import canonical_json, sha256_hex

__all__ = ["CARD_FORMAT", "NOT_AUDITED", "SCORE_MEANING", "card_bytes", "card_sha256", "render_markdown", "md_text"]

CARD_FORMAT = "fedchain-model-card/1"
NOT_AUDITED = "not audited"
#: One line on what a contribution score is (the report and the card say the same).
SCORE_MEANING = ("a contribution score is the hospital's share of what the round's updates measurably contributed "
                 "(by the plan's method: how closely its update pointed where the model went, or how much it "
                 "improved the model on the plan's public validation set); a round's scores sum to 1, and a "
                 "free-rider or an update the defences excluded scores 0.")


def card_bytes(card: Mapping[str, Any]) -> bytes:
    """The card's canonical bytes (RFC 8785): what is pinned and hashed."""
    if card.get("format") != CARD_FORMAT:
        raise ConfigError(f"not a {CARD_FORMAT} document")
    return canonical_json(card)


def card_sha256(card: Mapping[str, Any]) -> str:
    return sha256_hex(card_bytes(card))


# What could start markup inside a line: code spans, links and images, table cells, emphasis.
# ('<', '>' and '&' become HTML entities, so no raw HTML or autolink survives.)
_MD_SPECIAL = re.compile(r"([\\`*\[\]|])")


def md_text(value: Any, limit: int = 200) -> str:
    """Member-chosen text made safe for Markdown: one line, no controls, HTML and Markdown escaped."""
    s = "".join(" " if unicodedata.category(ch)[0] == "C" else ch for ch in str(value))
    s = " ".join(s.split()) or "(empty)"
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MD_SPECIAL.sub(r"\\\1", s)


def _code(value: Any) -> str:
    """A hash, CID or address in backticks (never contains a backtick after cleaning)."""
    s = "".join(ch for ch in str(value) if ch.isprintable() and ch != "`")
    return f"`{s}`" if s else "—"


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _who(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "—"
    name = entry.get("name")
    addr = _code(entry.get("address", ""))
    return f"{md_text(name, 60)} ({addr})" if name else addr


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render_markdown(card: Mapping[str, Any]) -> str:
    """A readable Markdown rendering of a card (for a terminal, a file or a wiki page)."""
    m, prop, tr, met = card["model"], card["proposal"], card["training"], card["metrics"]
    lines: list[str] = []
    w = lines.append
    w(f"# Model card: {md_text(prop.get('name') or 'unnamed plan', 80)} — proposal {m['proposal']}, "
      f"round {m['round']} of {tr['rounds_approved']}")
    w("")
    w(f"- **Model**: {md_text(m['kind'])}, {m['parameters']:,} parameters, {m['in_features']} input features, "
      f"{m['n_classes']} classes; canonical safetensors")
    w(f"- **Aggregate**: {_code(m['aggregate_cid'])} (sha256 {_code(m['aggregate_sha256'])}), closed at block "
      f"{m['closed_block']}")
    rel = card["release"]
    if rel["released"] is None:
        w(f"- **Release**: {md_text(rel['note'], 300)}")
    else:
        w(f"- **Released**: {'yes' if rel['released'] else 'no'} ({md_text(rel['note'], 300)})")
    w(f"- **Purpose**: {md_text(prop['purpose'])}; proposed by {_who(prop['proposer'])}; {md_text(prop['state'])} "
      f"with {prop['votes']['yes']} yes / {prop['votes']['no']} no / {prop['votes']['abstain']} abstain of "
      f"{prop['votes']['eligible']} eligible")
    w(f"- **Plan**: {_code(prop['plan_cid'])} (sha256 {_code(prop['plan_sha256'])})")
    w(f"- **Network**: chain {card['network']['chain_id']}, Rounds contract {_code(card['network']['rounds_contract'])}")
    w("")
    w("## Training")
    w("")
    strat = tr["strategy"]
    params = ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in sorted(strat.get("params", {}).items()))
    opt = tr["optimizer"]
    w(f"- {tr['rounds_closed']} round(s) closed, {tr['rounds_failed']} failed, of {tr['rounds_approved']} approved")
    w(f"- Strategy **{md_text(strat['name'])}**" + (f" ({params})" if params else ""))
    opt_params = ", ".join(f"{md_text(k)} {md_text(v)}" for k, v in opt.items() if k != "name")
    w(f"- Local training: {tr['local_epochs']} epoch(s) per round, batch {tr['batch_size']}, optimizer "
      f"{md_text(opt.get('name', '?'))}" + (f" ({opt_params})" if opt_params else ""))
    w(f"- Preprocessing: {md_text(tr['preprocessing'], 300)}; seed {tr['seed']}")
    w("")
    w("## Datasets")
    w("")
    rows = []
    for d in card["datasets"]:
        eps = "—" if d.get("policy_max_epsilon") is None else _num(d["policy_max_epsilon"], 3)
        rows.append([md_text(d["name"], 60), _who(d["owner"]), "—" if d["rows"] is None else str(d["rows"]),
                     md_text(d.get("description") or "—", 120),
                     ", ".join(map(str, d["contributed_rounds"])) or "none", eps])
    lines += _table(["dataset", "owner", "rows", "description", "contributed to rounds", "policy ε limit"], rows)
    w("")
    w("## Contributors and scores")
    w("")
    w(f"Score: {md_text(card['score_meaning'], 400)}")
    w("")
    rounds = [r["round"] for r in card["rounds"]]
    rows = []
    for c in card["contributors"]:
        per = {int(k): v for k, v in c["scores"].items()}
        rows.append([_who(c["member"]), md_text(c["dataset"], 60)]
                    + [_num(per.get(r), 3) for r in rounds] + [_num(c["mean_score"], 3)])
    lines += _table(["member", "dataset"] + [f"round {r}" for r in rounds] + ["mean"], rows)
    w("")
    w("## Rounds")
    w("")
    rows = []
    for r in card["rounds"]:
        rej = "; ".join(f"{md_text(a['name'] or a['address'], 40)}: {md_text(a['reason'], 120)}"
                        for a in r.get("rejected", [])) or "none"
        rows.append([str(r["round"]), md_text(r["state"]), str(r["participants"]), rej,
                     _code(r["aggregate_cid"]) if r.get("aggregate_cid") else "—", _num(r["validation_metric"])])
    lines += _table(["round", "state", "participants", "rejected updates", "aggregate", f"validation {met['name']}"],
                    rows)
    w("")
    w(f"## Metrics (round {met['round']}, validation split)")
    w("")
    w(md_text(met["split_note"], 400))
    w("")
    rows = [[_who(h["member"]), md_text(h["dataset"], 60), _num(h["value"]), str(h["samples"])]
            for h in met["per_hospital"]]
    rows.append(["**sample-weighted mean** (recorded on chain)", "", _num(met["weighted_mean"]),
                 str(sum(h["samples"] for h in met["per_hospital"]))])
    lines += _table(["hospital", "dataset", f"validation {met['name']}", "validation rows"], rows)
    w("")
    w("## Privacy")
    w("")
    pv = card["privacy"]
    w(f"- Differential privacy: **{md_text(pv['differential_privacy'])}**")
    w(f"- Secure aggregation: **{md_text(pv['secure_aggregation'])}**")
    w(f"- {md_text(pv['summary'], 600)}")
    w("")
    w("## Audit")
    w("")
    au = card["audit"]
    if au["status"] == NOT_AUDITED:
        w(f"**Not audited.** {md_text(au['note'], 400)}")
    else:
        w(f"Replayed by the auditor key {_code(au['auditor'])}: {md_text(au['summary'], 200)}")
        w("")
        rows = [[str(v["round"]), md_text(v["verdict"]), "; ".join(md_text(p, 300) for p in v["problems"]) or "none"]
                for v in au["rounds"]]
        lines += _table(["round", "verdict", "problems"], rows)
        for g in au.get("governance_problems", []):
            w(f"- governance: {md_text(g, 300)}")
    w("")
    return "\n".join(lines)
