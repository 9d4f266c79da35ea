"""Governance commands: members, datasets with access policies, proposals and votes, rounds.

Every command talks to the chain through the façade (``contracts.bindings``).
A transaction the contracts refuse ends the command with one readable line
naming the reason (``error: already voted (voter dev-1 0x7099…79C8, id 1)``)
and exit status 1; see :func:`friendly`.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional, TypeVar

import typer
from eth_utils import is_address, to_checksum_address
from rich.markup import escape
from rich.table import Table

from fedchain.cli.common import (
    DevOpt,
    HomeOpt,
    IdentityOpt,
    connect,
    console,
    err_console,
    load_identity_from_options,
    resolve_home,
)
from fedchain import serialize
from fedchain import usecases as uc
from fedchain.content import fetch_document
from fedchain.contracts.bindings import dataset_id, purpose_hash
from fedchain.contracts.errors import ChainError, ChainRevert, ChainUnavailable, reason_code
from fedchain.errors import ConfigError, FedchainError
from fedchain.identity import DEV_PRIVATE_KEYS, dev_identity, read_public, require_chain_allows
from fedchain.modelcard import SCORE_MEANING
from fedchain.models import initial_state
from fedchain.node.commit import commit_update, precheck_commit, recipients_for
from fedchain.usecases.privacy import budget as privacy_budget, expected_spend
from fedchain.node.dataset import load_dataset
from fedchain.plan import load_plan
from fedchain.schema import load_schema
from fedchain.usecases import scores as uc_scores

member_app = typer.Typer(help="Consortium membership: list, admit or remove by vote.", no_args_is_help=True)
dataset_app = typer.Typer(help="Register datasets and manage their access policies.", no_args_is_help=True)
proposal_app = typer.Typer(help="Submit training proposals, vote, finalize.", no_args_is_help=True)
round_app = typer.Typer(
    help="Inspect and drive training rounds by hand (the coordinator does this in 'coordinator run').",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(member_app, name="member")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(proposal_app, name="proposal")
    app.add_typer(round_app, name="round")


#: Purposes recognised in on-chain policies (which hold only keccak256 hashes) even
#: when no proposal or local command ever spelled them out.
COMMON_PURPOSES = (
    "research", "diagnosis", "prognosis", "treatment", "screening", "triage", "prediction",
    "clinical-research", "medical-research", "public-health", "epidemiology", "quality-improvement",
    "education", "teaching", "drug-discovery", "clinical-trials", "commercial", "benchmarking",
)
PURPOSES_FILE = "purposes.json"  # in HOME: purposes typed into this CLI, to name their hashes


# ============================================================ errors and names


class Refused(FedchainError):
    """The chain refused a transaction; the message names the reason readably."""

    def __init__(self, message: str, revert: Any = None) -> None:
        super().__init__(message)
        self.revert = revert
        self.error = getattr(revert, "error", "")


# The network a command is working on, so error messages can name members and datasets.
_current: dict[str, Any] = {}

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn chain reverts, an unreachable node and bad values into one readable error line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _current.clear()
        try:
            return fn(*args, **kwargs)
        except ChainRevert as exc:
            raise Refused(explain_revert(exc), exc) from None
        except ChainUnavailable as exc:
            detail = "connection refused" if "refused" in exc.detail.lower() else exc.detail.split(":")[0]
            raise FedchainError(
                f"the chain at {exc.url} is not reachable ({detail}); is it running? "
                "Start it with 'fedchain chain up'"
            ) from None
        except ChainError as exc:
            if "insufficient funds" in str(exc).lower():
                who = f" {_current['signer']}" if _current.get("signer") else ""
                raise FedchainError(
                    f"the acting account{who} has no ETH to pay for gas "
                    "(on a local dev chain: 'fedchain chain fund ADDRESS')"
                ) from None
            raise
        except ValueError as exc:  # a malformed value the bindings rejected (address, hash, …)
            if isinstance(exc, FedchainError):
                raise
            raise ConfigError(f"invalid input: {exc}") from None
        finally:
            _current.clear()

    return wrapper  # type: ignore[return-value]


def _short(value: str) -> str:
    return f"{value[:6]}…{value[-4:]}" if len(value) > 14 else value


def _hex(b: bytes) -> str:
    return "0x" + bytes(b).hex()


class Names:
    """Readable names: members by address, datasets by id, purposes by hash (from the read model)."""

    def __init__(self, fed: Any, home: Optional[Path]) -> None:
        model = fed.read_model()
        self.members: dict[str, str] = {a: m.name for a, m in model.members.items()}
        self.datasets: dict[bytes, str] = {bytes.fromhex(d.id[2:]): d.name for d in model.datasets.values()}
        self.purposes: dict[bytes, str] = {purpose_hash(p): p for p in COMMON_PURPOSES}
        for p in load_known_purposes(home):
            self.purposes[purpose_hash(p)] = p
        for prop in model.proposals.values():
            self.purposes[purpose_hash(prop.purpose)] = prop.purpose
        self.coordinator = fed.consortium.coordinator()

    def who(self, address: str, full: bool = False) -> str:
        name = self.members.get(address.lower())
        if name is None and address.lower() == self.coordinator.lower():
            name = "coordinator"
        shown = address if full else _short(address)
        return f"{name} {shown}" if name else shown

    def dataset(self, did: bytes | str) -> str:
        raw = bytes.fromhex(did[2:]) if isinstance(did, str) else bytes(did)
        return self.datasets.get(raw, _short(_hex(raw)))

    def purpose(self, h: bytes | str) -> str:
        raw = bytes.fromhex(h[2:]) if isinstance(h, str) else bytes(h)
        return self.purposes.get(raw, _short(_hex(raw)))


def _names() -> Optional[Names]:
    """Names for the current network (built once per command, only when needed)."""
    if "names" not in _current and "fed" in _current:
        try:
            _current["names"] = Names(_current["fed"], _current.get("home"))
        except Exception:  # names are a nicety; never hide the real error behind another
            _current["names"] = None
    return _current.get("names")


def policy_reason(code: str) -> str:
    """The phrase for an ``admits`` / ``PolicyDenied`` reason code."""
    return uc.phrase(code)


_KEY_LABELS = {"datasetId": "dataset", "proposalId": "proposal", "id": "id", "deadline": "deadline block"}


def explain_revert(exc: Any) -> str:
    """A ChainRevert as one readable line, naming members and datasets where possible."""
    args = exc.args_dict
    names = _names()
    if exc.error == "Error":
        return str(exc)
    if exc.error == "RoundsPolicyDenied":
        ds = names.dataset(args.get("datasetId", "0x")) if names else _short(str(args.get("datasetId")))
        return f"{exc.phrase}: {policy_reason(reason_code(args.get('reason')))} (dataset {ds})"

    def value(key: str, v: Any) -> str:
        if isinstance(v, IntEnum):
            return v.name.lower()
        if isinstance(v, str) and re.fullmatch(r"0x[0-9a-fA-F]{40}", v):
            return names.who(v) if names else _short(v)
        if isinstance(v, str) and re.fullmatch(r"0x[0-9a-fA-F]{64}", v):
            if key == "datasetId" and names:
                return names.dataset(v)
            code = reason_code(v)
            if code and code.isascii() and code.replace("_", "").isalnum() and code.isupper():
                return policy_reason(code)
            return _short(v)
        return str(v)

    def label(key: str) -> str:
        return _KEY_LABELS.get(key) or re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()

    if not args:
        return exc.phrase
    if len(args) == 1:
        (k, v), = args.items()
        return f"{exc.phrase} ({value(k, v)})"
    return f"{exc.phrase} ({', '.join(f'{label(k)} {value(k, v)}' for k, v in args.items())})"


def load_known_purposes(home: Optional[Path]) -> list[str]:
    path = resolve_home(home) / PURPOSES_FILE
    try:
        data = json.loads(path.read_text())
        return [p for p in data if isinstance(p, str)]
    except (OSError, ValueError, TypeError):
        return []


def remember_purposes(home: Optional[Path], purposes: Iterable[str]) -> None:
    """Keep purposes typed into the CLI so their on-chain hashes can be shown as text later."""
    new = [p for p in purposes if isinstance(p, str)]
    if not new:
        return
    known = load_known_purposes(home)
    merged = known + [p for p in dict.fromkeys(new) if p not in known]
    if merged != known:
        path = resolve_home(home) / PURPOSES_FILE
        try:
            path.write_text(json.dumps(merged, indent=2) + "\n")
        except OSError:
            pass


# ============================================================ sessions


def _session(home: Optional[Path]):
    s = connect(home)
    _current.update(fed=s.fed, home=home)
    return s


def _acting(home: Optional[Path], identity: Optional[Path], dev: Optional[int]):
    me = load_identity_from_options(identity, dev)
    s = _session(home)
    require_chain_allows(me, s.fed.chain.chain_id)  # DEV ONLY keys sign on dev chains only
    _current["signer"] = me.address
    return s, me, s.fed.as_(me.account)


def _tx_line(what: str, tx) -> None:
    console.print(f"[green]✓[/] {what}  [dim](block {tx.block_number}, gas {tx.gas_used:,}, tx {tx.tx_hash[:12]}…)[/]",
                  soft_wrap=True)


def _date(ts: int) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    if when.hour == when.minute == when.second == 0:
        return when.date().isoformat()
    return when.strftime("%Y-%m-%d %H:%M:%S UTC")


def _require_proposal(fed, proposal_id: int):
    p = fed.proposals.proposal(proposal_id)
    if p is None:
        raise ConfigError(f"no proposal {proposal_id} (there are {fed.proposals.proposal_count()})")
    return p


def _require_dataset(fed, name: str):
    d = fed.registry.dataset(name)
    if d is None:
        raise ConfigError(f"no dataset named {name!r} is registered")
    return d


def _resolve_member(fed, value: str) -> str:
    """An address, or the name of a member (as in 'member list')."""
    if is_address(value):
        return to_checksum_address(value)
    matches = [m for m in fed.consortium.members(include_removed=True) if m.name == value]
    if len(matches) == 1:
        return matches[0].address
    if len(matches) > 1:
        raise ConfigError(f"several members are named {value!r}; give the address")
    known = ", ".join(m.name for m in fed.consortium.members()) or "none"
    raise ConfigError(f"{value!r} is neither an address nor a member name (members: {known})")


# ============================================================ members


@member_app.command("list")
@friendly
def member_list(
    all_: Annotated[bool, typer.Option("--all", help="Include removed members.")] = False,
    home: HomeOpt = None,
) -> None:
    """List members (name, address, X25519 key, joined at block) and the coordinator."""
    s = _session(home)
    fed = s.fed
    t = Table("#", "name", "address", "x25519 public key", "joined (block)", "state", title="consortium members")
    for m in fed.consortium.members(include_removed=all_):
        t.add_row(str(m.seq), escape(m.name), m.address, _short(_hex(m.x25519_pub)), str(m.joined_at),
                  "active" if m.active else "[red]removed[/]")
    console.print(t)
    coord = fed.consortium.coordinator()
    member = fed.consortium.member(coord)
    console.print(f"coordinator: {coord}" + (f" ({escape(member.name)})" if member.active else " (not a member)"))
    vp = fed.consortium.voting_params()
    console.print(
        f"voting: {vp.voting_period_blocks} blocks, quorum {vp.quorum_bps / 100:g}% of members, "
        f"approval {vp.approval_bps / 100:g}% of yes+no"
    )


@member_app.command("scores")
@friendly
def member_scores(
    proposal: Annotated[Optional[list[int]], typer.Option("--proposal", help="Only these proposals (repeatable).")] = None,
    home: HomeOpt = None,
) -> None:
    """Each member's contribution scores, accumulated over every closed round (and proposal)."""
    s = _session(home)
    fed = s.fed
    names = {m.address.lower(): m.name for m in fed.consortium.members(include_removed=True)}
    with s.store() as store:
        ledger = uc_scores.accumulate(fed.read_model(), store, list(proposal) if proposal else None)
    t = Table("member", "address", "total", "rounds", "mean per round", "excluded", "clipped",
              title=f"contribution scores over {len(ledger.rounds)} closed round(s)")
    for m in sorted(ledger.members.values(), key=lambda m: (-m.total, m.address)):
        t.add_row(escape(names.get(m.address, "?")), m.address, f"{m.total:.3f}", str(m.rounds), f"{m.mean:.3f}",
                  str(m.excluded), str(m.clipped))
    console.print(t)
    methods = ", ".join(f"proposal {pid}: {how}" for pid, how in sorted(ledger.methods.items())) or "no round yet"
    console.print(f"{SCORE_MEANING} Methods: {methods}. Total = rounds' worth of contribution; "
                  "verify every number with 'fedchain audit replay'.", soft_wrap=True)
    for why in ledger.unreadable:
        console.print(f"[yellow]not counted:[/] {escape(why)}")


@member_app.command("motions")
@friendly
def member_motions(home: HomeOpt = None) -> None:
    """List membership motions (admit, remove, change coordinator) and their votes."""
    s = _session(home)
    fed = s.fed
    names = _names()
    head = s.chain.block_number
    t = Table("id", "kind", "target", "state", "proposer", "yes/no", "voting until", title="membership motions")
    for i in range(1, fed.consortium.motion_count() + 1):
        m = fed.consortium.motion(i)
        if m is None:
            continue
        target = (f"{escape(m.name)} " if m.name else "") + (names.who(m.target) if names else m.target)
        until = f"block {m.deadline}" + (" (over)" if head > m.deadline else "")
        t.add_row(str(m.id), m.kind.name.lower(), target, m.state.name.lower(),
                  names.who(m.proposer) if names else m.proposer, f"{m.yes}/{m.no} of {m.eligible}", until)
    console.print(t)


@member_app.command("propose-admit")
@friendly
def member_propose_admit(
    name: Annotated[Optional[str], typer.Argument(help="Member name shown on chain.")] = None,
    address: Annotated[Optional[str], typer.Argument(help="The new member's account address.")] = None,
    x25519: Annotated[Optional[str], typer.Argument(help="Its X25519 public key (0x + 64 hex).")] = None,
    keystore: Annotated[
        Optional[Path], typer.Option("--from", help="Take name, address and key from the new member's keystore (public part).")
    ] = None,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Propose admitting a new member; members vote; anyone finalizes after the voting period."""
    if keystore is not None:
        pub = read_public(keystore)
        name, address, x25519 = name or pub["name"], address or pub["address"], x25519 or pub["x25519"]
    if not (name and address and x25519):
        raise ConfigError("give NAME ADDRESS X25519_KEY, or --from KEYSTORE")
    if not is_address(address):
        raise ConfigError(f"not an address: {address!r}")
    key = _key_bytes(x25519)
    _, _, fed = _acting(home, identity, dev)
    tx = uc.members.propose_admit(fed, name, address, key)
    vp = fed.consortium.voting_params()
    _tx_line(f"motion {tx.value}: admit {escape(name)} ({address}); voting open for {vp.voting_period_blocks} blocks", tx)


def _key_bytes(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ConfigError(f"an X25519 public key is 32 bytes (0x + 64 hex digits), not {text!r}")
    return key


@member_app.command("propose-remove")
@friendly
def member_propose_remove(
    member: Annotated[str, typer.Argument(help="Address or name of the member to remove.")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Propose removing a member."""
    _, _, fed = _acting(home, identity, dev)
    address = _resolve_member(fed, member)
    tx = uc.members.propose_remove(fed, address)
    _tx_line(f"motion {tx.value}: remove {address}", tx)


@member_app.command("vote")
@friendly
def member_vote(
    motion: int,
    choice: Annotated[str, typer.Argument(help="yes or no")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Vote on a membership motion."""
    support = _yes_no(choice)
    _, _, fed = _acting(home, identity, dev)
    tx = uc.members.vote(fed, motion, support)
    _tx_line(f"voted {'yes' if support else 'no'} on motion {motion}", tx)


@member_app.command("finalize")
@friendly
def member_finalize(motion: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Finalize a membership motion after its voting period (an approved one takes effect)."""
    _, _, fed = _acting(home, identity, dev)
    tx = uc.members.finalize(fed, motion)
    m = fed.consortium.motion(motion)
    tally = f" (yes {m.yes}, no {m.no} of {m.eligible})" if m else ""
    _tx_line(f"motion {motion} finalized: {tx.value.name}{tally}", tx)


def _yes_no(choice: str) -> bool:
    c = choice.strip().lower()
    if c not in ("yes", "no"):
        raise ConfigError(f"a motion vote is 'yes' or 'no', not {choice!r}")
    return c == "yes"


# ============================================================ datasets


PurposeOpt = Annotated[
    Optional[list[str]], typer.Option("--purpose", help="Allowed purpose (repeatable). None given: any purpose.")
]
ProposalOpt = Annotated[
    Optional[list[str]],
    typer.Option("--proposal", help="Allowed proposal id, 'any' approved proposal, or 'none' (repeatable). Default: any."),
]
RequesterOpt = Annotated[
    Optional[list[str]],
    typer.Option("--requester", help="Allowed proposer: address or member name (repeatable). None given: any member."),
]
ExpiresOpt = Annotated[
    Optional[str],
    typer.Option("--expires", help="Policy expiry: ISO date (00:00 UTC) or date-time (UTC if no zone); 'never' for none."),
]
EpsilonOpt = Annotated[
    Optional[float], typer.Option("--epsilon", help="Max differential-privacy budget ε (enforced on chain: no commitment may take the spend above it; 0 = no budget).")
]


def build_policy(
    fed,
    base=None,
    *,
    purpose: Optional[list[str]] = None,
    proposal: Optional[list[str]] = None,
    requester: Optional[list[str]] = None,
    expires: Optional[str] = None,
    epsilon: Optional[float] = None,
    any_purpose: bool = False,
    any_requester: bool = False,
):
    """A Policy from the options (member names resolved to addresses); see :func:`fedchain.usecases.make_policy`."""
    requesters = [_resolve_member(fed, r) for r in requester] if requester else None
    return uc.datasets.make_policy(base, purposes=purpose, any_purpose=any_purpose, proposals=proposal, requesters=requesters,
                          any_requester=any_requester, expires=expires, epsilon=epsilon)


def _check_policy_values(expires: Optional[str], epsilon: Optional[float]) -> None:
    """Reject malformed values before touching files or the chain."""
    if expires is not None:
        uc.datasets.parse_expiry(expires)
    if epsilon is not None:
        uc.datasets.epsilon_milli(epsilon)


def _purpose_text(policy, names: Optional[Names]) -> list[str]:
    out = []
    for p in policy.purposes:
        if isinstance(p, str):
            out.append(p)
        else:
            out.append(names.purpose(p) if names else _short(_hex(p)))
    return out


def policy_fields(policy, names: Optional[Names], now: Optional[int] = None) -> dict[str, str]:
    """A policy as readable strings: purposes, proposals, requesters, expires, epsilon."""
    purposes = ", ".join(_purpose_text(policy, names)) or "any"
    if policy.any_approved_proposal:
        proposals = "any approved"
        if policy.proposal_ids:
            proposals += " (listed: " + ", ".join(map(str, policy.proposal_ids)) + ")"
    else:
        proposals = ", ".join(map(str, policy.proposal_ids)) or "none"
    requesters = ", ".join((names.who(a) if names else _short(a)) for a in policy.requesters) or "any member"
    if policy.expiry:
        expires = _date(policy.expiry)
        if now is not None and now >= policy.expiry:
            expires += " (expired)"
    else:
        expires = "never"
    eps = f"{policy.max_epsilon_milli / 1000:g}" if policy.max_epsilon_milli else "-"
    return {"purposes": purposes, "proposals": proposals, "requesters": requesters, "expires": expires, "epsilon": eps}


def _policy_summary(policy, names: Optional[Names]) -> str:
    f = policy_fields(policy, names)
    parts = [f"proposals {f['proposals']}", f"purposes {f['purposes']}", f"requesters {f['requesters']}"]
    if f["expires"] != "never":
        parts.append(f"expires {f['expires']}")
    if f["epsilon"] != "-":
        parts.append(f"ε ≤ {f['epsilon']}")
    return "; ".join(parts)


@dataset_app.command("register")
@friendly
def dataset_register(
    name: Annotated[str, typer.Argument(help="Dataset name (its on-chain id is keccak256 of it).")],
    csv: Annotated[Path, typer.Option(help="The dataset CSV (read locally for validation and the row count; never uploaded).")],
    schema: Annotated[Path, typer.Option(help="Schema JSON: feature columns, label column, types.")],
    description: Annotated[str, typer.Option(help="One-line description for the public metadata document.")] = "",
    purpose: PurposeOpt = None,
    proposal: ProposalOpt = None,
    requester: RequesterOpt = None,
    expires: ExpiresOpt = None,
    epsilon: EpsilonOpt = None,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Register a dataset you hold: its metadata (schema, row count, description) goes to the store, hashes on chain."""
    _check_policy_values(expires, epsilon)
    sch = load_schema(schema)
    data = load_dataset(csv, sch)  # validates every row before anything is published
    s, _, fed = _acting(home, identity, dev)
    policy = build_policy(fed, purpose=purpose, proposal=proposal, requester=requester, expires=expires, epsilon=epsilon)
    remember_purposes(home, purpose or [])
    with s.store() as store:
        done = uc.datasets.register(fed, store, name=name, schema=sch, n_rows=data.n_rows, description=description,
                                   policy=policy)
    _tx_line(f"dataset {escape(name)!r} registered: {data.n_rows} rows, metadata {done.metadata_cid}", done.tx)
    console.print(f"  policy: {escape(_policy_summary(policy, _names()))}")


@dataset_app.command("policy")
@friendly
def dataset_policy(
    name: str,
    purpose: PurposeOpt = None,
    any_purpose: Annotated[bool, typer.Option("--any-purpose", help="Allow every purpose.")] = False,
    proposal: ProposalOpt = None,
    requester: RequesterOpt = None,
    any_requester: Annotated[bool, typer.Option("--any-requester", help="Allow every member as proposer.")] = False,
    expires: ExpiresOpt = None,
    epsilon: EpsilonOpt = None,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Change the access policy of a dataset you own (fields not given keep their current value)."""
    _check_policy_values(expires, epsilon)
    _, _, fed = _acting(home, identity, dev)
    current = _require_dataset(fed, name)
    if not any((purpose, any_purpose, proposal, requester, any_requester, expires is not None, epsilon is not None)):
        raise ConfigError("nothing to change: give --purpose, --proposal, --requester, --expires or --epsilon")
    policy = build_policy(
        fed, current.policy, purpose=purpose, proposal=proposal, requester=requester, expires=expires,
        epsilon=epsilon, any_purpose=any_purpose, any_requester=any_requester,
    )
    remember_purposes(home, purpose or [])
    tx = uc.datasets.set_policy(fed, name, policy)
    _tx_line(f"policy of {escape(name)!r} is now version {tx.value}", tx)
    console.print(f"  policy: {escape(_policy_summary(policy, _names()))}")


@dataset_app.command("revoke")
@friendly
def dataset_revoke(
    name: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    mark: Annotated[bool, typer.Option(help="Then mark every trained model whose lineage holds an update of it "
                                            "(one transaction per model; anyone may do it later: "
                                            "'fedchain model release mark').")] = True,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Revoke a dataset you own, for good: no proposal is admitted from now on, and the models trained on it
    are marked withdrawn (they can no longer be released or served as released)."""
    _, _, fed = _acting(home, identity, dev)
    d = _require_dataset(fed, name)
    if d.revoked:
        raise ConfigError(f"dataset {name!r} is already revoked")
    if not yes and not typer.confirm(f"Revoke {name!r} permanently?", default=False):
        raise typer.Abort()
    tx = uc.datasets.revoke(fed, name)
    _tx_line(f"dataset {escape(name)!r} revoked", tx)
    if mark:
        for m in uc.releases.mark_withdrawn(fed, d.id):
            ev = m.event("ModelWithdrawn").args
            _tx_line(f"model of round {ev['round']} of proposal {ev['proposalId']} marked withdrawn "
                     f"({escape(name)!r} committed in round {ev['committedRound']})", m)


@dataset_app.command("list")
@friendly
def dataset_list(
    active: Annotated[bool, typer.Option("--active", help="Hide revoked datasets.")] = False,
    home: HomeOpt = None,
) -> None:
    """List registered datasets with owners and policies."""
    s = _session(home)
    names = _names()
    now = s.chain.block_timestamp
    t = Table("name", "owner", "purposes", "proposals", "requesters", "expires", "ε", "state", title="datasets")
    for d in s.fed.registry.datasets(include_revoked=not active):
        f = policy_fields(d.policy, names, now)
        state = "[red]revoked[/]" if d.revoked else ("[yellow]expired[/]" if "expired" in f["expires"] else "active")
        t.add_row(escape(d.name), escape(names.who(d.owner) if names else _short(d.owner)),
                  *(escape(f[k]) for k in ("purposes", "proposals", "requesters", "expires", "epsilon")), state)
    console.print(t)


@dataset_app.command("show")
@friendly
def dataset_show(
    name: str,
    proposal: Annotated[Optional[int], typer.Option(help="Also say whether the policy admits this proposal now.")] = None,
    home: HomeOpt = None,
) -> None:
    """Show one dataset, its policy and (optionally) whether it admits a proposal."""
    s = _session(home)
    fed = s.fed
    d = _require_dataset(fed, name)
    names = _names()
    f = policy_fields(d.policy, names, s.chain.block_timestamp)
    t = Table(show_header=False, title=f"dataset {escape(d.name)}")
    t.add_row("id", _hex(d.id))
    t.add_row("owner", escape(names.who(d.owner, full=True) if names else d.owner))
    t.add_row("state", "[red]revoked[/]" if d.revoked else "active")
    t.add_row("registered", f"block {d.registered_at}")
    t.add_row("rows", f"{d.row_count:,} (on chain: no commitment may claim more samples)")
    t.add_row("metadata", f"{d.metadata_cid} (sha256 {_hex(d.metadata_sha256)})")
    meta = _metadata(s, d)
    if meta:
        if meta.get("description"):
            t.add_row("description", escape(str(meta["description"])))
    t.add_row("schema hash", _hex(d.schema_hash))
    t.add_row("policy version", str(d.policy_version))
    t.add_row("purposes", escape(f["purposes"]))
    t.add_row("proposals", escape(f["proposals"]))
    t.add_row("requesters", escape(f["requesters"]))
    t.add_row("expires", f["expires"])
    t.add_row("max ε", f["epsilon"])
    if proposal is not None:
        _require_proposal(fed, proposal)
        check = uc.admission.check(fed, name, proposal)
        t.add_row(f"proposal {proposal}", "[green]admitted[/]" if check else f"[red]not admitted[/]: {escape(check.reason)}")
    console.print(t)


@dataset_app.command("budget")
@friendly
def dataset_budget(
    name: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print the budget as JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """A dataset's differential-privacy budget: allowed, spent (per proposal and round) and left, from the chain."""
    s = _session(home)
    _require_dataset(s.fed, name)
    b = privacy_budget(s.fed, name)
    if as_json:
        typer.echo(json.dumps(b.to_dict(), indent=2))
        return
    d = b.to_dict()
    t = Table(show_header=False, title=f"privacy budget of {escape(name)}")
    t.add_row("allowed", f"ε {d['allowed']:g}" if d["allowed"] is not None else "no budget (any ε; non-private plans too)")
    t.add_row("spent", f"ε {d['spent']:g} (the registry's ledger)")
    t.add_row("left", f"ε {d['left']:g}" if d["left"] is not None else "-")
    console.print(t)
    if d["proposals"]:
        per = Table("proposal", "round", "ε spent", "δ", title="spent per proposal and round (PrivacySpent events)")
        for p in d["proposals"]:
            for r, e in p["rounds"].items():
                per.add_row(str(p["proposal"]), r, f"{e:g}", f"{p['delta']:g}")
            per.add_row(str(p["proposal"]), "all", f"[bold]{p['spent']:g}[/]", "")
        console.print(per)


def _metadata(s, d) -> Optional[dict]:
    """The dataset's public metadata document, if the store has it (verified against the chain)."""
    try:
        with s.store() as store:
            return json.loads(fetch_document(store, d.metadata_cid, d.metadata_sha256, max_size=1 << 20))
    except (FedchainError, ValueError, OSError):
        return None


# ============================================================ proposals


@proposal_app.command("submit")
@friendly
def proposal_submit(
    plan: Annotated[Path, typer.Argument(help="Training plan (TOML or JSON).")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Pin a training plan (its canonical form) and submit it as a proposal for the members to vote on."""
    p = load_plan(plan)
    s, _, fed = _acting(home, identity, dev)
    with s.store() as store:
        done = uc.proposals.propose(fed, store, p)
    remember_purposes(home, [p.purpose])
    _tx_line(f"proposal {done.id} submitted: {escape(p.name)!r}, purpose {escape(p.purpose)!r}, plan {done.plan_cid}",
             done.tx)
    console.print(f"  voting open until block {done.info.deadline} ({done.info.eligible} eligible members)")


@proposal_app.command("vote")
@friendly
def proposal_vote(
    proposal: int,
    choice: Annotated[str, typer.Argument(help="yes, no or abstain")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Vote on a proposal (one vote per member, until its voting deadline)."""
    v = uc.proposals.parse_vote(choice)
    _, _, fed = _acting(home, identity, dev)
    tx = uc.proposals.vote(fed, proposal, v)
    p = fed.proposals.proposal(proposal)
    _tx_line(f"voted {v.name.lower()} on proposal {proposal} (now yes {p.yes}, no {p.no}, abstain {p.abstain})", tx)


@proposal_app.command("finalize")
@friendly
def proposal_finalize(proposal: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Close the vote after the deadline: the proposal becomes Approved or Rejected."""
    _, _, fed = _acting(home, identity, dev)
    tx = uc.proposals.finalize(fed, proposal)
    p = fed.proposals.proposal(proposal)
    _tx_line(
        f"proposal {proposal} finalized: {tx.value.name} "
        f"(yes {p.yes}, no {p.no}, abstain {p.abstain} of {p.eligible} eligible)", tx,
    )


@proposal_app.command("cancel")
@friendly
def proposal_cancel(proposal: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Withdraw your own proposal (only before anyone voted)."""
    _, _, fed = _acting(home, identity, dev)
    tx = uc.proposals.cancel(fed, proposal)
    _tx_line(f"proposal {proposal} cancelled", tx)


def _plan_of(s, p):
    """The proposal's plan from the store, verified against its on-chain hash."""
    with s.store() as store:
        return uc.proposals.fetch_plan(store, p)


def _voting_status(p, head: int) -> str:
    if p.state.name != "ACTIVE":
        return "-"
    left = p.deadline - head
    return f"voting: {left} block(s) left" if left >= 0 else "voting over: finalize it"


@proposal_app.command("show")
@friendly
def proposal_show(proposal: int, home: HomeOpt = None) -> None:
    """Show one proposal: plan, targets and whether each admits it, votes, rounds."""
    s = _session(home)
    fed = s.fed
    p = _require_proposal(fed, proposal)
    names = _names()
    head = s.chain.block_number
    t = Table(show_header=False, title=f"proposal {p.id}")
    t.add_row("state", p.state.name + (f" ({_voting_status(p, head)})" if p.state.name == "ACTIVE" else ""))
    t.add_row("proposer", escape(names.who(p.proposer, full=True) if names else p.proposer))
    t.add_row("purpose", escape(p.purpose))
    t.add_row("plan", f"{p.plan_cid} (sha256 {_hex(p.plan_sha256)})")
    try:
        plan = _plan_of(s, p)
        t.add_row("plan name", escape(plan.name))
        if names:  # the plan names its targets, registered or not
            for n in plan.datasets:
                names.datasets.setdefault(dataset_id(n), n)
        t.add_row("model", f"{plan.model.kind}, strategy {plan.strategy.name}, {plan.local_epochs} local epoch(s)")
    except FedchainError as exc:
        t.add_row("plan name", f"[dim](plan unavailable: {escape(str(exc))})[/]")
    t.add_row("rounds", f"{p.rounds} (min {p.min_participants} participants, {p.round_duration} blocks each)")
    t.add_row("created", f"block {p.created_at}")
    t.add_row("voting until", f"block {p.deadline} (now {head})")
    t.add_row("tally", f"yes {p.yes}, no {p.no}, abstain {p.abstain} of {p.eligible} eligible")
    for m in fed.consortium.members(include_removed=True):
        v = fed.proposals.vote_of(p.id, m.address)
        t.add_row(f"  vote of {escape(m.name)}", v.name.lower() if v else "[dim]-[/]")
    for target, owner in zip(p.targets, p.target_owners):  # the owner recorded at submission: whose data
        label = names.dataset(target) if names else _short(_hex(target))
        d = fed.registry.dataset(target)
        check = uc.admission.check(fed, d.name, p.id)
        status = "[green]admits[/]" if check else f"[red]does not admit[/]: {escape(check.reason)}"
        who = escape(names.who(owner) if names else owner)
        t.add_row(f"  target {escape(label)}", f"owner {who}, {d.row_count:,} rows; {status}")
    last = fed.rounds.last_round(p.id)
    for r in range(1, last + 1):
        info = fed.rounds.round_info(p.id, r)
        t.add_row(f"  round {r}", f"{info.phase.name.lower()}, {info.committed} commitment(s)")
    console.print(t)


@proposal_app.command("list")
@friendly
def proposal_list(home: HomeOpt = None) -> None:
    """List all proposals."""
    s = _session(home)
    fed = s.fed
    names = _names()
    head = s.chain.block_number
    t = Table("id", "state", "purpose", "proposer", "targets", "rounds", "yes/no/abstain", "status", title="proposals")
    for i in range(1, fed.proposals.proposal_count() + 1):
        p = fed.proposals.proposal(i)
        if p is None:
            continue
        t.add_row(str(p.id), p.state.name, escape(p.purpose), escape(names.who(p.proposer) if names else _short(p.proposer)),
                  str(len(p.targets)), f"{fed.rounds.last_round(p.id)}/{p.rounds}", f"{p.yes}/{p.no}/{p.abstain}",
                  _voting_status(p, head))
    console.print(t)


# ============================================================ rounds


@round_app.command("open")
@friendly
def round_open(
    proposal: int,
    round_: Annotated[Optional[int], typer.Argument(metavar="ROUND", help="Round number (default: the next one).")] = None,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Coordinator: open the next round of an approved proposal."""
    _, _, fed = _acting(home, identity, dev)
    p = _require_proposal(fed, proposal)
    r = round_ if round_ is not None else fed.rounds.last_round(proposal) + 1
    tx = fed.rounds.open_round(proposal, r)
    _tx_line(
        f"round {r} of proposal {proposal} open: commitments until block {tx.value} "
        f"(at least {p.min_participants} needed)", tx,
    )


@round_app.command("commit")
@friendly
def round_commit(
    proposal: int,
    dataset: Annotated[str, typer.Option(help="Your dataset this update was trained on.")],
    update: Annotated[Path, typer.Option(help="Model update (canonical safetensors) to seal and commit.")],
    samples: Annotated[int, typer.Option(help="Number of training samples behind the update.")],
    round_: Annotated[Optional[int], typer.Argument(metavar="ROUND", help="Round number (default: the last opened).")] = None,
    coordinator_key: Annotated[
        Optional[str],
        typer.Option(help="The coordinator's X25519 public key, if the coordinator is not a member (its key is then not on chain)."),
    ] = None,
    no_precheck: Annotated[
        bool, typer.Option("--no-precheck", hidden=True, help="Skip the policy pre-check and let the chain refuse (tests, demos).")
    ] = False,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Member: seal an update for the coordinator (and the plan's auditors), pin it, commit its CID + sha256."""
    if samples < 1:
        raise ConfigError("--samples must be at least 1")
    state = serialize.file_to_state_dict(update)  # refuse a file that is not a model update
    s, me, fed = _acting(home, identity, dev)
    p = _require_proposal(fed, proposal)
    _require_dataset(fed, dataset)
    r = round_ if round_ is not None else fed.rounds.last_round(proposal)
    if r < 1:
        raise ConfigError(f"no round of proposal {proposal} has been opened yet")
    plan = _plan_of(s, p)
    # the ε this round of the plan spends on the dataset (0 when the plan is not private)
    eps, delta = expected_spend(plan, fed.read_model(), proposal, dataset, r, samples)
    if not no_precheck:  # the contract's own checks, asked first so a refused update is never pinned
        precheck_commit(fed, me, proposal, r, dataset, epsilon_micro=eps, delta_pico=delta)
    _check_update_matches(state, plan)
    key = _key_bytes(coordinator_key) if coordinator_key else _dev_coordinator_key(fed)
    recipients = recipients_for(fed, plan, key)
    with s.store() as store:
        done = commit_update(fed, store, me, plan, proposal_id=proposal, round_=r, dataset=dataset, payload=update,
                             n_samples=samples, recipients=recipients, precheck=False, epsilon_micro=eps,
                             delta_pico=delta)
    _tx_line(
        f"committed update {done.cid} ({samples} samples, dataset {escape(dataset)}) "
        f"to round {r} of proposal {proposal}", done.tx,
    )


def _check_update_matches(state: dict, plan) -> None:
    expected = {k: tuple(v.shape) for k, v in initial_state(plan.model, plan.seed).items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if got != expected:
        raise ConfigError(f"the update does not fit the plan's {plan.model.kind} model (tensors {got} vs {expected})")


def _dev_coordinator_key(fed) -> Optional[bytes]:
    """DEV ONLY: a coordinator that is not a member but is a public dev account has a known key."""
    coord = fed.consortium.coordinator()
    if fed.consortium.member(coord).active:
        return None  # its key is on chain
    for i in range(len(DEV_PRIVATE_KEYS)):
        ident = dev_identity(i)
        if ident.address == coord:
            err_console.print(f"[yellow]DEV ONLY:[/] sealing for the coordinator's public dev key (dev account {i})")
            return ident.x25519_public
    raise ConfigError(
        f"the coordinator {coord} is not a member, so its encryption key is not on chain; "
        "pass it with --coordinator-key 0x…"
    )


@round_app.command("show")
@friendly
def round_show(
    proposal: int,
    round_: Annotated[Optional[int], typer.Argument(metavar="ROUND", help="Round number (default: the last opened).")] = None,
    home: HomeOpt = None,
) -> None:
    """Show a round: phase, deadline, commitments, aggregate, evaluations."""
    s = _session(home)
    fed = s.fed
    p = _require_proposal(fed, proposal)
    last = fed.rounds.last_round(proposal)
    r = round_ if round_ is not None else last
    if r < 1 or r > last:
        raise ConfigError(f"round {r} of proposal {proposal} has not been opened (rounds opened: {last} of {p.rounds})")
    info = fed.rounds.round_info(proposal, r)
    names = _names()
    head = s.chain.block_number
    t = Table(show_header=False, title=f"proposal {proposal}, round {r} of {p.rounds}")
    phase = info.phase.name
    if phase == "OPEN":
        phase += f" (commitments until block {info.deadline}, now {head})" if head <= info.deadline else " (deadline passed)"
    t.add_row("phase", phase)
    t.add_row("opened", f"block {info.opened_at}")
    t.add_row("committed", f"{info.committed} (min {p.min_participants})")
    for c in fed.rounds.commitments(proposal, r):
        who = names.who(c.member) if names else _short(c.member)
        ds = names.dataset(c.dataset) if names else _short(_hex(c.dataset))
        t.add_row(f"  {escape(who)}", f"{escape(ds)}: {c.cid}, {c.sample_count} samples (block {c.block_number})")
    if info.aggregate_cid:
        t.add_row("aggregate", f"{info.aggregate_cid} (sha256 {_hex(info.aggregate_sha256)})")
        t.add_row("scores", f"{info.scores_cid} (sha256 {_hex(info.scores_sha256)})")
    if info.phase.name == "CLOSED":
        t.add_row("evaluations", str(info.evaluations))
        for e in fed.rounds.evaluations(proposal, r):
            who = names.who(e.member) if names else _short(e.member)
            t.add_row(f"  {escape(who)}", f"{e.metric_ppm / 1e6:.4f} on {e.sample_count} samples")
        t.add_row("global metric", "-" if info.global_metric_ppm is None else f"{info.global_metric_ppm / 1e6:.4f}")
    console.print(t)
