"""The actions a member can take in the console, each one use case call.

A form names an action kind and its inputs; :func:`build` checks the inputs and
returns an :class:`Action` that holds the use case call. The console then
asks the contracts (``preflight.ask``: a dry run of that very call) and shows
the confirmation page — the contract function, its arguments in words, the
acting account — or the contracts' refusal. Only a confirmed action is run, and
it is run exactly as confirmed (it is kept server side; see ``security``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Callable

from eth_utils import is_address, to_checksum_address

from fedchain.console.state import ConsoleState, Names, date_words
from fedchain.contracts.bindings import dataset_id
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import ConfigError
from fedchain.plan import TrainingPlan, parse_plan
from fedchain.plandoc import describe
from fedchain.usecases import datasets as uc_datasets
from fedchain.usecases import members as uc_members
from fedchain.usecases import proposals as uc_proposals
from fedchain.usecases.preflight import Preflight

#: Bounds on what a form may carry.
MAX_TEXT = 2000
MAX_LIST = 64


@dataclass
class Action:
    """One use case call, described for the confirmation page."""

    kind: str
    title: str
    #: What it means, as (topic, words) pairs.
    details: list[tuple[str, str]]
    #: ``call(gov, store)`` runs the use case.
    call: Callable[[Any, Any], Any]
    #: Where to go afterwards.
    back: str
    #: Purposes to remember as words once it succeeded (policy edits).
    purposes: list[str] = field(default_factory=list)


def _text(form: Any, key: str, *, required: bool = True, limit: int = MAX_TEXT) -> str:
    value = form.get(key)
    if value is None or not isinstance(value, str) or not value.strip():
        if required:
            raise ConfigError(f"missing {key!r}")
        return ""
    if len(value) > limit:
        raise ConfigError(f"{key!r} is longer than {limit} characters")
    return value.strip()


def _int(form: Any, key: str) -> int:
    text = _text(form, key, limit=20)
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{key!r} must be a positive whole number, not {text!r}")
    return int(text)


def _words_list(text: str) -> list[str]:
    items = [w.strip() for w in re.split(r"[,\n]", text) if w.strip()]
    if len(items) > MAX_LIST:
        raise ConfigError(f"at most {MAX_LIST} entries")
    return items


def _address(text: str, what: str) -> str:
    if not is_address(text):
        raise ConfigError(f"{what} is not an address: {text!r}")
    return to_checksum_address(text)


def build(kind: str, form: Any, plan_bytes: bytes | None, plan_name: str, state: ConsoleState,
          model: ReadModel) -> Action:
    """The action a form asks for (inputs checked; a :class:`ConfigError` names what is wrong)."""
    names = state.names(model)
    if kind == "vote":
        pid = _int(form, "proposal")
        choice = uc_proposals.parse_vote(_text(form, "choice", limit=10))
        word = choice.name.lower()
        return Action(kind, f"Vote {word} on proposal {pid}",
                      _proposal_words(model, names, pid) + [("your vote", word)],
                      lambda g, s: uc_proposals.vote(g, pid, choice), f"/proposals/{pid}")
    if kind == "finalize":
        pid = _int(form, "proposal")
        return Action(kind, f"Finalize the vote on proposal {pid}",
                      _proposal_words(model, names, pid) + [("effect", "closes the vote: the proposal becomes "
                                                             "approved or rejected by the consortium's rules")],
                      lambda g, s: uc_proposals.finalize(g, pid), f"/proposals/{pid}")
    if kind == "cancel":
        pid = _int(form, "proposal")
        return Action(kind, f"Withdraw proposal {pid}", _proposal_words(model, names, pid),
                      lambda g, s: uc_proposals.cancel(g, pid), f"/proposals/{pid}")
    if kind == "propose":
        if not plan_bytes:
            raise ConfigError("choose a plan file (TOML or JSON) to submit")
        fmt = "json" if plan_name.lower().endswith(".json") else ("toml" if plan_name.lower().endswith(".toml") else None)
        plan: TrainingPlan = parse_plan(plan_bytes, source=plan_name or "uploaded plan", fmt=fmt)
        missing = [n for n in plan.datasets if "0x" + dataset_id(n).hex() not in model.datasets]
        details = list(describe(plan))
        if missing:
            details.append(("note", "not registered yet: " + ", ".join(missing)))
        return Action(kind, f"Submit the plan {plan.name!r} as a proposal", details,
                      lambda g, s: uc_proposals.propose(g, s, plan), "/")
    if kind == "policy":
        return _policy_action(form, state, model, names)
    if kind == "motion-admit":
        name = _text(form, "name", limit=64)
        address = _address(_text(form, "address", limit=64), "the new member's address")
        key_text = _text(form, "x25519", limit=70).removeprefix("0x")
        try:
            key = bytes.fromhex(key_text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise ConfigError("an X25519 public key is 32 bytes: 0x and 64 hex digits")
        return Action(kind, f"Propose admitting {name}",
                      [("new member", f"{name} ({address})"), ("encryption key", "0x" + key.hex()),
                       ("effect", "opens a membership vote; if approved, they join the consortium")],
                      lambda g, s: uc_members.propose_admit(g, name, address, key), "/members")
    if kind == "motion-remove":
        address = _address(_text(form, "address", limit=64), "the member to remove")
        return Action(kind, f"Propose removing {names.who(address)}",
                      [("member", names.who(address)),
                       ("effect", "opens a membership vote; if approved, they leave the consortium")],
                      lambda g, s: uc_members.propose_remove(g, address), "/members")
    if kind == "motion-vote":
        mid = _int(form, "motion")
        support = _text(form, "support", limit=5).lower()
        if support not in ("yes", "no"):
            raise ConfigError("a motion vote is yes or no")
        return Action(kind, f"Vote {support} on motion {mid}", _motion_words(model, names, mid) + [("your vote", support)],
                      lambda g, s: uc_members.vote(g, mid, support == "yes"), "/members")
    if kind == "motion-finalize":
        mid = _int(form, "motion")
        return Action(kind, f"Finalize motion {mid}", _motion_words(model, names, mid),
                      lambda g, s: uc_members.finalize(g, mid), "/members")
    raise ConfigError(f"unknown action {kind!r}")


def _proposal_words(model: ReadModel, names: Names, pid: int) -> list[tuple[str, str]]:
    p = model.proposals.get(pid)
    if p is None:
        return [("proposal", f"{pid} (unknown)")]
    return [("proposal", f"{pid}: purpose {p.purpose!r}, by {names.who(p.proposer)}"),
            ("voting until", f"block {p.deadline}")]


def _motion_words(model: ReadModel, names: Names, mid: int) -> list[tuple[str, str]]:
    m = model.motions.get(mid)
    if m is None:
        return [("motion", f"{mid} (unknown)")]
    kind = {1: "admit", 2: "remove", 3: "set coordinator"}.get(m.kind, str(m.kind))
    return [("motion", f"{mid}: {kind} {names.who(m.target)}, proposed by {names.who(m.proposer)}"),
            ("voting until", f"block {m.deadline}")]


def _policy_action(form: Any, state: ConsoleState, model: ReadModel, names: Names) -> Action:
    name = _text(form, "dataset", limit=128)
    with state.lock:
        info = state.fed.registry.dataset(name)
    if info is None:
        raise ConfigError(f"no dataset named {name!r} is registered")
    purposes = _words_list(_text(form, "purposes", required=False))
    any_purpose = form.get("any_purpose") == "on"
    keep = [h for h in form.getlist("keep_purpose")[:MAX_LIST] if re.fullmatch(r"0x[0-9a-fA-F]{64}", h)]
    proposals = _words_list(_text(form, "proposals", required=False) or "any")
    requesters = [_address(a, "a requester") for a in form.getlist("requesters")[:MAX_LIST]]
    expires = _text(form, "expires", required=False, limit=40) or "never"
    eps_text = _text(form, "epsilon", required=False, limit=30)
    try:
        epsilon = float(eps_text) if eps_text else 0.0
    except ValueError:
        raise ConfigError(f"ε must be a number, not {eps_text!r}") from None
    kept = tuple(bytes.fromhex(h[2:]) for h in keep)  # purposes known only by their hash, kept as they are
    if not purposes and not kept and not any_purpose:
        raise ConfigError("name at least one purpose, or tick 'any purpose'")
    policy = uc_datasets.make_policy(
        info.policy, purposes=purposes or None, any_purpose=not purposes,
        proposals=proposals, requesters=requesters or None, any_requester=not requesters,
        expires=expires, epsilon=epsilon,
    )
    if kept:
        policy = dataclasses.replace(policy, purposes=tuple(policy.purposes) + kept)
    all_purposes = purposes + [names.purpose("0x" + h.hex()) for h in kept]
    words = [
        ("dataset", f"{name}, owned by {names.who(info.owner)}"),
        ("purposes", ", ".join(all_purposes) if all_purposes else "any purpose"),
        ("proposals", "any approved proposal" if policy.any_approved_proposal else
         ("only proposal(s) " + ", ".join(map(str, policy.proposal_ids)) if policy.proposal_ids else "no proposal")),
        ("requesters", ", ".join(names.who(a) for a in policy.requesters) if policy.requesters else "any member"),
        ("expires", date_words(policy.expiry) if policy.expiry else "never"),
        ("privacy budget ε", f"{policy.max_epsilon_milli / 1000:g}" if policy.max_epsilon_milli else "not set"),
        ("effect", "replaces the current policy from the next block on; every later round checks the new one"),
    ]
    return Action("policy", f"Change the policy of {name}", words,
                  lambda g, s: uc_datasets.set_policy(g, name, policy), f"/datasets/{name}", purposes=purposes)


# -- what will be signed, in words ----------------------------------------------------------------


def signing_words(answer: Preflight, names: Names) -> list[tuple[str, str]]:
    """The arguments the contract function will be called with, each in words."""
    return [(k, value_words(k, v, names)) for k, v in answer.args.items()]


def value_words(key: str, v: Any, names: Names) -> str:
    if isinstance(v, IntEnum):
        return f"{v.name.lower()} ({int(v)})"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", v):
        return names.who(v) + f" — {v}"
    if isinstance(v, str) and re.fullmatch(r"0x[0-9a-fA-F]{64}", v):
        low = key.lower()
        if "dataset" in low or (low == "id" and v.lower() in names.datasets):
            return f"dataset {names.dataset(v)} — {v}"
        if "purpose" in low:
            return f"purpose {names.purpose(v)} — {v}"
        return v
    if isinstance(v, dict):
        return "; ".join(f"{k}: {value_words(k, x, names)}" for k, x in v.items()) or "(empty)"
    if isinstance(v, list):
        if key.lower() in ("targets", "datasets"):
            return ", ".join(value_words("dataset", x, names) for x in v) or "(none)"
        if key.lower() == "purposes":
            return ", ".join(value_words("purpose", x, names) for x in v) or "(none: any purpose)"
        return ", ".join(value_words(key, x, names) for x in v) or "(none)"
    return str(v)
