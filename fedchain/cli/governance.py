"""Governance commands: members, datasets with access policies, proposals and votes, rounds."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from fedchain.cli.common import DevOpt, HomeOpt, IdentityOpt, connect, console, load_identity_from_options
from fedchain.errors import ConfigError

member_app = typer.Typer(help="Consortium membership: list, admit or remove by vote, rotate keys.", no_args_is_help=True)
dataset_app = typer.Typer(help="Register datasets and manage their access policies.", no_args_is_help=True)
proposal_app = typer.Typer(help="Submit training proposals, vote, finalize.", no_args_is_help=True)
round_app = typer.Typer(help="Inspect and drive training rounds by hand (the coordinator does this in 'coordinator run').", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(member_app, name="member")
    app.add_typer(dataset_app, name="dataset")
    app.add_typer(proposal_app, name="proposal")
    app.add_typer(round_app, name="round")


def _acting(home, identity, dev):
    s = connect(home)
    me = load_identity_from_options(identity, dev)
    return s, me, s.fed.as_(me.account)


def _tx_line(what: str, tx) -> None:
    console.print(f"[green]✓[/] {what}  [dim](block {tx.block_number}, gas {tx.gas_used:,}, tx {tx.tx_hash[:18]}…)[/]")


def _short(addr: str) -> str:
    return addr[:10] + "…" + addr[-4:]


# --- members -----------------------------------------------------------------

@member_app.command("list")
def member_list(home: HomeOpt = None) -> None:
    """List current members (name, address, X25519 key, joined at block)."""
    s = connect(home)
    t = Table("name", "address", "x25519", "joined")
    for m in s.fed.members():
        t.add_row(m.name, m.address, "0x" + m.x25519_pub.hex()[:16] + "…", str(m.joined_at))
    console.print(t)
    console.print(f"coordinator: {s.fed.coordinator()}")


@member_app.command("propose-admit")
def member_propose_admit(
    name: str, address: str, x25519: Annotated[str, typer.Argument(help="Hex X25519 public key (32 bytes).")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Propose admitting a new member (members vote; anyone finalizes after the period)."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.propose_motion_admit(name, address, bytes.fromhex(x25519.removeprefix("0x")))
    _tx_line(f"motion {tx.value} to admit {name} ({address})", tx)


@member_app.command("propose-remove")
def member_propose_remove(address: str, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Propose removing a member."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.propose_motion_remove(address)
    _tx_line(f"motion {tx.value} to remove {address}", tx)


@member_app.command("vote")
def member_vote(
    motion: int, choice: Annotated[str, typer.Argument(help="yes or no")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Vote on a membership motion."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.vote_motion(motion, _yes_no(choice))
    _tx_line(f"voted {choice} on motion {motion}", tx)


@member_app.command("finalize")
def member_finalize(motion: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Finalize a membership motion after its voting period."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.finalize_motion(motion)
    _tx_line(f"motion {motion} finalized: {tx.value}", tx)


def _yes_no(choice: str) -> bool:
    c = choice.lower()
    if c not in ("yes", "no"):
        raise ConfigError(f"vote must be 'yes' or 'no', not {choice!r}")
    return c == "yes"


# --- datasets ----------------------------------------------------------------

def _policy(purpose, proposal, requester, expires, epsilon):
    from contracts.bindings import Policy

    any_proposal = False
    ids: list[int] = []
    for p in proposal:
        if p == "any":
            any_proposal = True
        else:
            try:
                ids.append(int(p))
            except ValueError:
                raise ConfigError(f"--proposal takes a proposal id or 'any', not {p!r}") from None
    if not proposal:
        any_proposal = True
    expiry = 0
    if expires:
        try:
            when = dt.datetime.fromisoformat(expires)
        except ValueError:
            raise ConfigError(f"--expires takes an ISO date like 2027-06-30, not {expires!r}") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.timezone.utc)
        expiry = int(when.timestamp())
    return Policy(
        purposes=list(purpose), proposal_ids=ids, any_approved_proposal=any_proposal,
        requesters=list(requester), expiry=expiry, max_epsilon=epsilon,
    )


PurposeOpt = Annotated[list[str], typer.Option("--purpose", help="Allowed purpose (repeatable; none = any purpose).")]
ProposalOpt = Annotated[list[str], typer.Option("--proposal", help="Allowed proposal id, or 'any' approved proposal (repeatable; default any).")]
RequesterOpt = Annotated[list[str], typer.Option("--requester", help="Allowed proposer address (repeatable; none = any member).")]
ExpiresOpt = Annotated[Optional[str], typer.Option("--expires", help="Policy expiry, ISO date/time (UTC if no zone).")]
EpsilonOpt = Annotated[float, typer.Option("--epsilon", help="Max privacy budget ε (stored; enforced with differential privacy).")]


@dataset_app.command("register")
def dataset_register(
    name: str,
    csv: Annotated[Path, typer.Option(help="The dataset CSV (read locally for the row count; never uploaded).")],
    schema: Annotated[Path, typer.Option(help="Schema JSON: feature columns, label column, types.")],
    description: Annotated[str, typer.Option(help="One-line description for the metadata document.")] = "",
    purpose: PurposeOpt = [], proposal: ProposalOpt = [], requester: RequesterOpt = [],
    expires: ExpiresOpt = None, epsilon: EpsilonOpt = 0.0,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Register a dataset you hold: metadata (schema, rows, description) goes to the store, hashes on chain."""
    from fedchain.content import pin_document
    from node.dataset import load_dataset, load_schema, metadata_document, schema_hash

    s, _, fed = _acting(home, identity, dev)
    sch = load_schema(schema)
    data = load_dataset(csv, sch)
    meta = metadata_document(sch, data.n_rows, description)
    with s.store() as store:
        cid, sha = pin_document(store, meta)
    tx = fed.register_dataset(name, cid, sha, schema_hash(sch), _policy(purpose, proposal, requester, expires, epsilon))
    _tx_line(f"dataset {name!r} registered ({data.n_rows} rows, metadata {cid})", tx)


@dataset_app.command("policy")
def dataset_policy(
    name: str,
    purpose: PurposeOpt = [], proposal: ProposalOpt = [], requester: RequesterOpt = [],
    expires: ExpiresOpt = None, epsilon: EpsilonOpt = 0.0,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Replace the access policy of a dataset you own."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.set_policy(name, _policy(purpose, proposal, requester, expires, epsilon))
    _tx_line(f"policy of {name!r} updated", tx)


@dataset_app.command("revoke")
def dataset_revoke(name: str, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Revoke a dataset you own: no proposal is admitted from now on."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.revoke_dataset(name)
    _tx_line(f"dataset {name!r} revoked", tx)


@dataset_app.command("list")
def dataset_list(home: HomeOpt = None) -> None:
    """List registered datasets with owners and policies."""
    s = connect(home)
    t = Table("name", "owner", "purposes", "proposals", "requesters", "expires", "ε", "state")
    for d in s.fed.datasets():
        p = s.fed.policy(d.name)
        t.add_row(
            d.name, _short(d.owner),
            ", ".join(p.purposes) or "any",
            "any approved" if p.any_approved_proposal else ", ".join(map(str, p.proposal_ids)) or "none",
            ", ".join(_short(a) for a in p.requesters) or "any member",
            dt.datetime.fromtimestamp(p.expiry, dt.timezone.utc).date().isoformat() if p.expiry else "never",
            f"{p.max_epsilon:g}" if p.max_epsilon else "-",
            "[red]revoked[/]" if d.revoked else "active",
        )
    console.print(t)


@dataset_app.command("show")
def dataset_show(name: str, proposal: Annotated[Optional[int], typer.Option(help="Also say whether this proposal is admitted.")] = None, home: HomeOpt = None) -> None:
    """Show one dataset and (optionally) whether its policy admits a proposal."""
    s = connect(home)
    d = s.fed.dataset(name)
    for k, v in vars(d).items():
        console.print(f"{k:<16} {v}")
    if proposal is not None:
        ok, reason = s.fed.admits(name, proposal)
        console.print(f"proposal {proposal}: " + ("[green]admitted[/]" if ok else f"[red]not admitted[/] ({reason})"))


# --- proposals ---------------------------------------------------------------

@proposal_app.command("submit")
def proposal_submit(
    plan: Annotated[Path, typer.Argument(help="Training plan (TOML or JSON).")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Pin a training plan (canonical form) and submit it as a proposal."""
    from fedchain.content import pin_document
    from fedchain.plan import load_plan

    s, _, fed = _acting(home, identity, dev)
    p = load_plan(plan)
    data = p.to_canonical_bytes()
    with s.store() as store:
        cid, sha = pin_document(store, data)
    tx = fed.submit_proposal(
        plan_cid=cid, plan_sha256=sha, purpose=p.purpose, targets=list(p.datasets),
        rounds=p.rounds, min_participants=p.min_participants, round_duration=p.round_deadline_blocks,
    )
    _tx_line(f"proposal {tx.value} submitted: plan {cid} (sha256 {sha[:18]}…)", tx)


@proposal_app.command("vote")
def proposal_vote(
    proposal: int, choice: Annotated[str, typer.Argument(help="yes, no or abstain")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Vote on a proposal (one vote per member, before the deadline)."""
    from contracts.bindings import Vote

    try:
        v = Vote[choice.upper()]
    except KeyError:
        raise ConfigError(f"vote must be yes, no or abstain, not {choice!r}") from None
    _, _, fed = _acting(home, identity, dev)
    tx = fed.vote(proposal, v)
    _tx_line(f"voted {choice.lower()} on proposal {proposal}", tx)


@proposal_app.command("finalize")
def proposal_finalize(proposal: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Close the vote after the deadline: the proposal becomes Approved or Rejected."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.finalize(proposal)
    _tx_line(f"proposal {proposal} finalized: {fed.proposal(proposal).state.name}", tx)


@proposal_app.command("cancel")
def proposal_cancel(proposal: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Cancel your own proposal (only before anyone voted)."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.cancel(proposal)
    _tx_line(f"proposal {proposal} cancelled", tx)


def _proposal_row(p):
    return (str(p.id), p.state.name, p.purpose, _short(p.proposer), str(p.rounds), str(p.min_participants),
            f"{p.yes}/{p.no}/{p.abstain}", str(p.deadline))


@proposal_app.command("show")
def proposal_show(proposal: int, home: HomeOpt = None) -> None:
    """Show one proposal: plan, targets, votes, state."""
    s = connect(home)
    p = s.fed.proposal(proposal)
    for k, v in vars(p).items():
        console.print(f"{k:<20} {v.name if hasattr(v, 'name') and not isinstance(v, str) else v}")


@proposal_app.command("list")
def proposal_list(home: HomeOpt = None) -> None:
    """List all proposals."""
    s = connect(home)
    t = Table("id", "state", "purpose", "proposer", "rounds", "min", "yes/no/abst", "deadline")
    for i in range(1, s.fed.proposal_count() + 1):
        t.add_row(*_proposal_row(s.fed.proposal(i)))
    console.print(t)


# --- rounds ------------------------------------------------------------------

@round_app.command("open")
def round_open(proposal: int, round_: Annotated[int, typer.Argument(metavar="ROUND")], home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Coordinator: open ROUND of an approved proposal."""
    _, _, fed = _acting(home, identity, dev)
    tx = fed.open_round(proposal, round_)
    _tx_line(f"round {round_} of proposal {proposal} open until block {fed.round_info(proposal, round_).deadline}", tx)


@round_app.command("commit")
def round_commit(
    proposal: int, round_: Annotated[int, typer.Argument(metavar="ROUND")],
    dataset: Annotated[str, typer.Option(help="Your dataset this update was trained on.")],
    update: Annotated[Path, typer.Option(help="Model update file (safetensors) to seal for the coordinator and commit.")],
    samples: Annotated[int, typer.Option(help="Number of training samples behind the update.")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Member: seal an update for the coordinator, pin it, and commit its CID + sha256."""
    from fedchain.content import seal_and_pin
    from fedchain.envelope import EnvelopeContext

    s, me, fed = _acting(home, identity, dev)
    coord = fed.member_key(fed.coordinator())
    ctx = EnvelopeContext(chain_id=s.chain.chain_id, contract=fed.deployment.addresses["Rounds"],
                          proposal_id=proposal, round=round_, sender=me.address)
    # Check the policy first so a refused commitment pins nothing.
    ok, reason = fed.admits(dataset, proposal)
    if not ok:
        raise ConfigError(f"dataset {dataset!r} does not admit proposal {proposal}: {reason}")
    with s.store() as store:
        sealed = seal_and_pin(store, update, ctx, me, [coord])
    tx = fed.commit_update(proposal, round_, dataset, sealed.cid, sealed.sha256, samples)
    _tx_line(f"committed update {sealed.cid} for round {round_} of proposal {proposal}", tx)


@round_app.command("show")
def round_show(proposal: int, round_: Annotated[int, typer.Argument(metavar="ROUND")], home: HomeOpt = None) -> None:
    """Show a round's phase, deadline, commitments and aggregate."""
    s = connect(home)
    r = s.fed.round_info(proposal, round_)
    for k, v in vars(r).items():
        console.print(f"{k:<20} {v.name if hasattr(v, 'name') and not isinstance(v, str) else v}")
