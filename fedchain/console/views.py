"""What each page shows, as plain data for the templates.

Everything comes from the read model (members, datasets with every policy
version, proposals with their votes, motions, rounds), the use cases
(``admission.check``, ``proposals.fetch_plan``, ``preflight.ask``) and the
documents the chain points at (plan, dataset metadata, round scores), each
checked against the hash on chain. Fields that later versions of the contracts
add are read with defaults, so a page degrades to "not recorded" rather than
failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fedchain.console.chart import line_chart
from fedchain.console.state import ConsoleState, Names, Role, date_words, short
from fedchain.contracts.bindings import dataset_id
from fedchain.contracts.readmodel import DatasetRecord, PolicyVersion, ProposalRecord, ReadModel
from fedchain.errors import FedchainError
from fedchain.plandoc import describe
from fedchain.usecases import admission, preflight
from fedchain.usecases import datasets as uc_datasets
from fedchain.usecases import members as uc_members
from fedchain.usecases import proposals as uc_proposals
from fedchain.usecases.refusals import phrase

MOTION_KINDS = {1: "admit", 2: "remove", 3: "set coordinator"}
METRIC_SCALE = 1e6  # metrics are recorded on chain in parts per million


@dataclass
class Button:
    """One action the contracts would accept now: the form that leads to its confirmation page."""

    kind: str
    label: str
    fields: dict[str, Any]
    style: str = ""


@dataclass
class Refusal:
    """An action the contracts would refuse now, and their reason."""

    label: str
    reason: str
    error: str


@dataclass
class Offer:
    buttons: list[Button] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def offer(state: ConsoleState, role: Role, candidates: list[tuple[Button, Callable[[Any], Any]]]) -> Offer:
    """The buttons among ``candidates`` whose use case the contracts would accept now (asked by dry run)."""
    out = Offer()
    me = state.me()
    if not role.can_act or me is None:
        return out
    for button, call in candidates:
        with state.lock:
            answer = preflight.ask(me, call)
        if answer.ok:
            out.buttons.append(button)
        else:
            out.refusals.append(Refusal(button.label, answer.reason, answer.error))
    return out


# -- words ------------------------------------------------------------------------------------


def proposal_state(p: ProposalRecord, head: int) -> str:
    if p.cancelled_block is not None:
        return "cancelled"
    if p.final_state:
        return p.final_state.lower()
    if p.deadline and head > p.deadline:
        return "voting over: waiting to be finalized"
    return "voting"


def policy_words(pol: PolicyVersion | None, names: Names, now: int) -> dict[str, str]:
    if pol is None:
        return {"purposes": "-", "proposals": "no policy recorded", "requesters": "-", "expires": "-",
                "epsilon": "-", "version": "-"}
    if pol.expiry:
        expires = date_words(pol.expiry) + (" (expired)" if now >= pol.expiry else "")
    else:
        expires = "never"
    if pol.any_approved:
        props = "any approved proposal"
    elif pol.proposal_ids:
        props = "only proposal(s) " + ", ".join(str(i) for i in pol.proposal_ids)
    else:
        props = "no proposal"
    eps = getattr(pol, "max_epsilon_milli", 0)
    return {
        "purposes": ", ".join(names.purpose(h) for h in pol.purposes) if pol.purposes else "any purpose",
        "proposals": props,
        "requesters": ", ".join(names.who(a) for a in pol.requesters) if pol.requesters else "any member",
        "expires": expires,
        "epsilon": f"{eps / 1000:g}" if eps else "not set",
        "version": str(getattr(pol, "version", "") or "-"),
    }


def dataset_state(d: DatasetRecord, now: int) -> str:
    if d.revoked_block is not None:
        return "revoked"
    pol = d.policies[-1] if d.policies else None
    if pol is not None and pol.expiry and now >= pol.expiry:
        return "policy expired"
    return "active"


def metric_of(value_ppm: int | None) -> float | None:
    return None if value_ppm is None else value_ppm / METRIC_SCALE


# -- pages ------------------------------------------------------------------------------------


def overview(state: ConsoleState, model: ReadModel, role: Role, head: int, now: int) -> dict:
    names = state.names(model)
    members = sorted(model.members.values(), key=lambda m: m.seq)
    datasets = []
    for d in model.datasets.values():
        pw = policy_words(d.policies[-1] if d.policies else None, names, now)
        datasets.append({"name": d.name, "owner": names.who(d.owner), "state": dataset_state(d, now), **pw})
    props = []
    for p in sorted(model.proposals.values(), key=lambda p: -p.id):
        done = sum(1 for (pid, _), r in model.rounds.items() if pid == p.id and r.closed is not None)
        props.append({
            "id": p.id, "purpose": p.purpose, "proposer": names.who(p.proposer), "state": proposal_state(p, head),
            "votes": len(p.votes), "eligible": p.eligible, "deadline": p.deadline, "rounds": p.rounds,
            "rounds_done": done,
            "my_vote": p.votes.get(role.address.lower(), "") if role.address else "",
        })
    live = []
    for (pid, r), rec in sorted(model.rounds.items()):
        if rec.closed is None and rec.failed_block is None:
            live.append({"proposal": pid, "round": r, "commits": len(rec.commits), "deadline": rec.deadline,
                         "opened": rec.opened_block})
    return {
        "members": [{"name": m.name, "address": m.address, "joined": m.joined_block, "active": m.active,
                     "coordinator": m.address == (model.coordinator or "").lower()} for m in members],
        "datasets": datasets, "proposals": props, "live_rounds": live,
        "coordinator": names.who(model.coordinator) if model.coordinator else "-",
    }


def proposal(state: ConsoleState, model: ReadModel, role: Role, pid: int, head: int, now: int) -> dict | None:
    p = model.proposals.get(pid)
    if p is None:
        return None
    names = state.names(model)
    try:
        plan = state.plan(pid)
        words = describe(plan)
        plan_error = ""
        for n in plan.datasets:  # the plan names its targets, registered or not
            names.datasets.setdefault(_id_hex(n), n)
    except FedchainError as exc:
        plan, words, plan_error = None, [], str(exc)
    state_words = proposal_state(p, head)
    targets = []
    for t in p.targets:
        d = model.datasets.get(t)
        row = {"name": names.dataset(t), "id": t, "owner": "", "now": "", "admits": False, "if_approved": ""}
        if d is None:
            row["now"] = "not registered"
        else:
            row["owner"] = names.who(d.owner)
            with state.lock:
                check = admission.check(state.fed, d.name, pid)
            row["admits"] = bool(check)
            row["now"] = "admits it" if check else check.words
            if p.final_state is None or p.final_state != "Approved":
                why = model.policy_refusal(d, p, head, now)
                row["if_approved"] = ("its policy would admit it once approved" if not why
                                      else f"its policy would refuse it: {phrase(why)}")
        targets.append(row)
    voters = []
    for m in sorted(model.members.values(), key=lambda m: m.seq):
        eligible = m.member_at(p.block)
        choice = p.votes.get(m.address)
        if eligible or choice:
            voters.append({"name": m.name, "address": m.address, "choice": choice or "",
                           "block": p.vote_blocks.get(m.address)})
    counts = {c: sum(1 for v in p.votes.values() if v == c) for c in ("yes", "no", "abstain")}
    candidates: list[tuple[Button, Callable[[Any], Any]]] = []
    if p.final_state is None and p.cancelled_block is None:
        candidates += [
            (Button("vote", f"Vote {c}", {"proposal": pid, "choice": c}, c),
             (lambda g, c=c: uc_proposals.vote(g, pid, c))) for c in ("yes", "no", "abstain")
        ]
        candidates.append((Button("finalize", "Finalize the vote", {"proposal": pid}),
                           lambda g: uc_proposals.finalize(g, pid)))
        if role.address and role.address.lower() == p.proposer:
            candidates.append((Button("cancel", "Withdraw this proposal", {"proposal": pid}, "danger"),
                               lambda g: uc_proposals.cancel(g, pid)))
    actions = offer(state, role, candidates)
    # the three vote choices share one rule: say it once
    seen: set[str] = set()
    actions.refusals = [r for r in actions.refusals if not (r.label.startswith("Vote") and (r.error in seen or seen.add(r.error)))]
    rounds = [_round_row(model, names, rec) for (rp, _), rec in sorted(model.rounds.items()) if rp == pid]
    return {
        "p": p, "state": state_words, "proposer": names.who(p.proposer), "plan": plan, "words": words,
        "plan_error": plan_error, "targets": targets, "voters": voters, "counts": counts,
        "actions": actions, "rounds": rounds, "until_block": p.deadline + 1 if p.final_state is None else None,
        "final_counts": p.final_counts,
    }


def _id_hex(name: str) -> str:
    """The id a dataset name hashes to, as the read model keys datasets."""
    return "0x" + dataset_id(name).hex()


def datasets(state: ConsoleState, model: ReadModel, now: int) -> list[dict]:
    names = state.names(model)
    out = []
    for d in model.datasets.values():
        pw = policy_words(d.policies[-1] if d.policies else None, names, now)
        out.append({"name": d.name, "owner": names.who(d.owner), "state": dataset_state(d, now), **pw})
    return out


def dataset(state: ConsoleState, model: ReadModel, role: Role, name: str, head: int, now: int) -> dict | None:
    d = next((x for x in model.datasets.values() if x.name == name), None)
    if d is None:
        return None
    names = state.names(model)
    meta, meta_error = state.try_document(d.metadata_cid, d.metadata_sha256, max_size=1 << 20)
    history = []
    for pol in reversed(d.policies):
        history.append({"block": pol.block, **policy_words(pol, names, now)})
    uses = []
    for p in sorted(model.proposals.values(), key=lambda p: -p.id):
        if d.id in p.targets:
            with state.lock:
                check = admission.check(state.fed, d.name, p.id)
            uses.append({"id": p.id, "purpose": p.purpose, "state": proposal_state(p, head),
                         "admits": bool(check), "words": "admits it" if check else check.words})
    current = d.policies[-1] if d.policies else None
    editor = None
    if role.can_act and role.address and role.address.lower() == d.owner and d.revoked_block is None:
        with state.lock:
            info = state.fed.registry.dataset(d.name)
        if info is not None:
            acts = offer(state, role, [(Button("policy", "Change the policy", {"dataset": d.name}),
                                        _same_policy(d.name, info.policy))])
            if acts.buttons:
                editor = _editor_defaults(current, names, model)
    return {"d": d, "owner": names.who(d.owner), "state": dataset_state(d, now), "meta": meta,
            "meta_error": meta_error, "history": history, "uses": uses, "editor": editor,
            "policy": policy_words(current, names, now)}


def _same_policy(name: str, policy: Any) -> Callable[[Any], Any]:
    """The owner's right to set a policy, asked by setting the current one again (a dry run)."""
    return lambda g: uc_datasets.set_policy(g, name, policy)


def _editor_defaults(pol: PolicyVersion | None, names: Names, model: ReadModel) -> dict:
    members = sorted((m for m in model.members.values() if m.active), key=lambda m: m.seq)
    if pol is None:
        return {"purposes": "", "any_purpose": True, "proposals": "any", "requesters": [], "expires": "",
                "epsilon": "", "members": members, "unnamed_purposes": []}
    purposes = [names.purposes.get(h) for h in pol.purposes]
    return {
        "purposes": ", ".join(p for p in purposes if p),
        "unnamed_purposes": [h for h, p in zip(pol.purposes, purposes) if not p],
        "any_purpose": not pol.purposes,
        "proposals": "any" if pol.any_approved else (", ".join(map(str, pol.proposal_ids)) or "none"),
        "requesters": list(pol.requesters),
        "expires": date_words(pol.expiry)[:10] if pol.expiry else "",
        "epsilon": f"{pol.max_epsilon_milli / 1000:g}" if getattr(pol, "max_epsilon_milli", 0) else "",
        "members": members,
    }


def _round_row(model: ReadModel, names: Names, rec: Any, scores: dict | None = None, scores_error: str = "") -> dict:
    if rec.closed is not None:
        phase = "closed"
    elif rec.failed_block is not None:
        phase = "failed"
    else:
        phase = "open"
    rejected = {}
    if scores is not None:
        for member, why in dict(scores.get("rejected", {})).items():
            rejected[names.who(str(member))] = str(why)
    return {
        "round": rec.round, "phase": phase, "opened": rec.opened_block, "deadline": rec.deadline,
        "participants": [{"who": names.who(c.member), "dataset": names.dataset(c.dataset_id), "samples": c.n_samples,
                          "block": c.block} for c in rec.commits],
        "rejected": rejected, "scores_error": scores_error,
        "evaluations": len(rec.evaluations), "metric": metric_of(rec.global_metric_ppm),
        "aggregate": (rec.closed or {}).get("aggregate_cid", ""),
    }


def rounds(state: ConsoleState, model: ReadModel, head: int) -> list[dict]:
    names = state.names(model)
    out = []
    for p in sorted(model.proposals.values(), key=lambda p: -p.id):
        recs = [rec for (pid, _), rec in sorted(model.rounds.items()) if pid == p.id]
        if not recs and p.final_state != "Approved":
            continue
        rows = []
        for rec in recs:
            scores, err = (None, "")
            if rec.closed is not None:
                scores, err = state.try_document(rec.closed.get("scores_cid", ""), rec.closed.get("scores_sha256", ""))
            rows.append(_round_row(model, names, rec, scores, err))
        try:
            metric = state.plan(p.id).metric
        except FedchainError:
            metric = "metric"
        points = [(r["round"], r["metric"]) for r in rows if r["metric"] is not None]
        y_range = (0.0, 1.0) if metric in ("accuracy", "auc") else None
        out.append({"p": p, "purpose": p.purpose, "rows": rows, "metric": metric, "planned": p.rounds,
                    "chart": line_chart(points, title=f"proposal {p.id}: {metric} per round", y_label=metric,
                                        y_range=y_range)})
    return out


def motions(state: ConsoleState, model: ReadModel, role: Role, head: int) -> dict:
    names = state.names(model)
    rows = []
    for m in sorted(model.motions.values(), key=lambda m: -m.id):
        candidates: list[tuple[Button, Callable[[Any], Any]]] = []
        if m.final_state is None:
            candidates = [
                (Button("motion-vote", "Vote yes", {"motion": m.id, "support": "yes"}, "yes"),
                 lambda g, i=m.id: uc_members.vote(g, i, True)),
                (Button("motion-vote", "Vote no", {"motion": m.id, "support": "no"}, "no"),
                 lambda g, i=m.id: uc_members.vote(g, i, False)),
                (Button("motion-finalize", "Finalize the motion", {"motion": m.id}),
                 lambda g, i=m.id: uc_members.finalize(g, i)),
            ]
        acts = offer(state, role, candidates)
        seen: set[str] = set()
        acts.refusals = [r for r in acts.refusals
                         if not (r.label.startswith("Vote") and (r.error in seen or seen.add(r.error)))]
        if m.final_state:
            status = m.final_state.lower()
        elif head > m.deadline:
            status = "voting over: waiting to be finalized"
        else:
            status = "voting"
        rows.append({
            "id": m.id, "kind": MOTION_KINDS.get(m.kind, str(m.kind)), "target": names.who(m.target),
            "proposer": names.who(m.proposer), "status": status, "deadline": m.deadline, "eligible": m.eligible,
            "votes": [{"who": names.who(a), "support": "yes" if s else "no"} for a, s in m.votes.items()],
            "actions": acts, "expires": getattr(m, "expiry", None),
        })
    members = [{"name": m.name, "address": m.address, "joined": m.joined_block, "left": m.left_block,
                "active": m.active, "key": m.key, "coordinator": m.address == (model.coordinator or "").lower()}
               for m in sorted(model.members.values(), key=lambda m: m.seq)]
    return {"motions": rows, "members": members,
            "until_block": min((m.deadline + 1 for m in model.motions.values()
                                if m.final_state is None and m.deadline >= head), default=None)}


def audit_rows(report: Any, names: Names) -> list[dict]:
    """The replay's verdicts per round (fields added later read with defaults)."""
    out = []
    for v in getattr(report, "rounds", []) or []:
        status = str(getattr(v, "status", "?"))
        out.append({
            "proposal": getattr(v, "proposal_id", "?"), "round": getattr(v, "round", "?"), "status": status,
            "tone": verdict_tone(status), "problems": list(getattr(v, "problems", []) or []),
            "participants": [names.who(a) for a in getattr(v, "participants", []) or []],
            "rejected": {names.who(a): str(w) for a, w in (getattr(v, "rejected", {}) or {}).items()},
            "aggregate": getattr(v, "aggregate_cid", ""),
        })
    return out


def verdict_tone(status: str) -> str:
    s = status.upper()
    if s.startswith("VERIFIED"):
        return "good"
    if s.startswith("DISCREPANCY"):
        return "bad"
    return "neutral"  # UNVERIFIABLE, OPEN, FAILED, and verdicts added later
