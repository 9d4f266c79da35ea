"""Model commands: list the trained models, pull one verified, evaluate it on a CSV, describe it in a card.

* ``model list`` -- every closed round's aggregate, per proposal, with the
  validation metric the coordinator recorded;
* ``model pull PROPOSAL [--round R] -o FILE`` -- fetch an aggregate from the
  network's store: at most the plan model's size, sha256 as on chain, exactly a
  model of the plan; the file appears whole or not at all;
* ``model evaluate FILE --csv --schema (--plan P | --proposal N)`` -- accuracy,
  loss, confusion matrix and (binary) ROC AUC on a labelled CSV, with the
  plan's preprocessing, as the nodes evaluate;
* ``model card PROPOSAL [--round R]`` -- the model card (:mod:`fedchain.modelcard`),
  pinned to the store; with an auditor key it carries the replay's verdicts;
* ``model release propose|vote|finalize|cancel|list|mark`` -- release a model by
  a vote of the members (:mod:`fedchain.usecases.releases`), and mark the models
  of a revoked dataset's lineage; ``model pull --released`` serves only a
  released model that is not marked.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from fedchain.cli.audit import auditor_identity
from fedchain.cli.common import DevOpt, HomeOpt, IdentityOpt, connect, console, err_console
from fedchain.cli.governance import _metadata as dataset_metadata  # the verified metadata fetch, shared
from fedchain.cli.governance import _acting, _tx_line, friendly
from fedchain.cli.outputs import check_target
from fedchain.content import pin_document
from fedchain.coordinator.audit.card import build_card
from fedchain.coordinator.audit.replay import replay_live
from fedchain.errors import ConfigError, FedchainError
from fedchain.modelcard import card_bytes, render_markdown
from fedchain.node.dataset import load_dataset
from fedchain.node.evaluation import evaluate_model, read_model_file
from fedchain.plan import TrainingPlan, load_plan, sha256_hex
from fedchain.schema import DatasetSchema, load_schema
from fedchain.serialize import sha256_file
from fedchain.contracts.bindings import dataset_id as to_dataset_id
from fedchain.usecases import models as uc_models
from fedchain.usecases import releases as uc_releases
from fedchain.usecases import statistics as uc_statistics
from fedchain.usecases.proposals import fetch_plan

model_app = typer.Typer(
    help="The trained models: list them, pull one (verified against the chain), evaluate it on a CSV, "
         "describe it in a model card.",
    no_args_is_help=True,
)


release_app = typer.Typer(
    help="Release a trained model by a vote of the members (under its model card), and mark the models of a "
         "revoked dataset.",
    no_args_is_help=True,
)
model_app.add_typer(release_app, name="release")


def register(app: typer.Typer) -> None:
    app.add_typer(model_app, name="model")


def _short(value: str) -> str:
    return f"{value[:10]}…{value[-6:]}" if len(value) > 20 else value


# --------------------------------------------------------------------------- list


@model_app.command("list")
@friendly
def model_list(
    proposal: Annotated[Optional[int], typer.Option(help="Only this proposal's models.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per model).")] = False,
    home: HomeOpt = None,
) -> None:
    """Every closed round's aggregate, per proposal: CID, participants, validation metric."""
    s = connect(home)
    model = s.fed.read_model()
    records = uc_models.closed_models(model, proposal)
    plans: dict[int, TrainingPlan | str] = {}
    with s.store() as store:
        for pid in sorted({r.proposal_id for r in records}):
            try:
                plans[pid] = fetch_plan(store, model.proposals[pid])
            except FedchainError as exc:
                plans[pid] = f"plan unavailable: {exc}"
    if as_json:
        out = []
        for r in records:
            plan = plans[r.proposal_id]
            d = r.to_dict()
            d.update({"plan_name": plan.name, "model_kind": plan.model.kind, "strategy": plan.strategy.name,
                      "metric": plan.metric} if isinstance(plan, TrainingPlan) else {"plan_error": plan})
            out.append(d)
        typer.echo(json.dumps(out, indent=2))
        return
    if not records:
        console.print("no trained models yet: no round has closed" + (f" for proposal {proposal}" if proposal else ""))
        return
    for pid in sorted(plans):
        plan = plans[pid]
        mine = [r for r in records if r.proposal_id == pid]
        if isinstance(plan, TrainingPlan):
            title = (f"proposal {pid}: {escape(plan.name)!r} — {plan.model.kind} ({plan.model.size.parameters:,} "
                     f"parameters), strategy {plan.strategy.name}")
            metric = f"validation {plan.metric}"
        else:
            title, metric = f"proposal {pid} ({escape(plan)})", "validation metric"
        t = Table(title=title, title_justify="left")
        t.add_column("round", no_wrap=True)
        t.add_column("aggregate CID", overflow="fold")  # never cut: it is what people copy
        for col in ("sha256", "participants", "evaluations", metric, "released", "withdrawn"):
            t.add_column(col)
        for r in mine:
            value = "—" if r.validation_metric is None else f"{r.validation_metric:.4f}"
            t.add_row(f"{r.round} of {r.approved_rounds}" + (" (last)" if r.last else ""), r.aggregate_cid,
                      _short(r.aggregate_sha256), str(r.committed), str(r.evaluations), value,
                      "yes" if r.released else "no",
                      ("[red]WITHDRAWN[/] " + escape(", ".join(r.withdrawn))) if r.withdrawn else "—")
        console.print(t)
    console.print(f"[dim]{uc_models.RELEASE_MEANING}. "
                  "Validation: each hospital's held-out rows, sample-weighted.[/]")


# --------------------------------------------------------------------------- pull


@model_app.command("pull")
@friendly
def model_pull(
    proposal: Annotated[int, typer.Argument(help="Proposal id.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Model file to write (canonical safetensors).")],
    round_: Annotated[Optional[int], typer.Option("--round", help="Round (default: the last closed one).")] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    released: Annotated[bool, typer.Option("--released", help="Only a model the members released by vote (the "
                                                              "latest released round unless --round), never one "
                                                              "marked withdrawn.")] = False,
    home: HomeOpt = None,
) -> None:
    """Fetch a round's aggregate from the network's store, verified against its sha256 on chain."""
    check_target(output, force)
    s = connect(home)
    model = s.fed.read_model()
    if released:
        rec = uc_releases.released_record(model, proposal, round_)
    else:
        rec = uc_models.select(model, proposal, round_)
    with s.store() as store:
        plan = fetch_plan(store, model.proposals[proposal])
        uc_models.pull_to_file(store, rec, plan, output, overwrite=force)
    console.print(f"wrote {escape(str(output))}: proposal {proposal}, round {rec.round} of {rec.approved_rounds}, "
                  f"{plan.model.kind} model ({output.stat().st_size:,} bytes); sha256 {rec.aggregate_sha256} "
                  "matches the chain" + (f"; released by vote {model.released[(proposal, rec.round)]}"
                                         if rec.released else ""), soft_wrap=True, highlight=False)
    if rec.withdrawn:
        err_console.print(f"[red]warning:[/] this model is marked WITHDRAWN: dataset(s) "
                          f"{escape(', '.join(rec.withdrawn))} of its lineage were revoked by their owners")
    elif not rec.released:
        err_console.print("[dim]note: this model is trained, not released (fedchain model release propose)[/]")


# --------------------------------------------------------------------------- evaluate


def _schema_matches(schema: DatasetSchema, registered: dict, dataset: str) -> None:
    """Refuse an evaluation schema whose features or labels differ from a training dataset's."""
    reg = registered.get("schema", {})
    features = tuple(f.get("name") for f in reg.get("features", []) if isinstance(f, dict))
    labels = tuple(str(v) for v in reg.get("label", {}).get("values", []))
    if features and features != tuple(schema.feature_names):
        raise ConfigError(
            f"the schema's features differ from those of training dataset {dataset!r} (names or order): the model "
            f"expects {', '.join(features[:6])}{' …' if len(features) > 6 else ''}")
    if labels and labels != tuple(schema.label_values):
        raise ConfigError(f"the schema's label values {list(schema.label_values)} differ from those of training "
                          f"dataset {dataset!r} {list(labels)}: class indices would not match")


@model_app.command("evaluate")
@friendly
def model_evaluate(
    file: Annotated[Path, typer.Argument(help="Model file (e.g. from 'fedchain model pull').")],
    csv: Annotated[Path, typer.Option(help="Labelled CSV to evaluate on (read here only).")],
    schema: Annotated[Path, typer.Option(help="The CSV's schema JSON.")],
    plan: Annotated[Optional[Path], typer.Option(help="The training plan (model and preprocessing).")] = None,
    proposal: Annotated[Optional[int], typer.Option(help="Take the plan from this proposal on chain instead.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """Accuracy, loss, confusion matrix and ROC AUC (binary models) on a CSV, with the plan's preprocessing."""
    if (plan is None) == (proposal is None):
        raise ConfigError("give the plan: --plan FILE or --proposal N (its plan is read from the chain)")
    sch = load_schema(schema)
    provenance = ""
    if plan is not None:
        p = load_plan(plan)
    else:
        s = connect(home)
        model = s.fed.read_model()
        if proposal not in model.proposals:
            raise ConfigError(f"no proposal {proposal} (there are {len(model.proposals)})")
        with s.store() as store:
            # with a statistics phase, the plan as the nodes applied it: the published mean/std
            p = uc_statistics.effective_plan(model, store, proposal, fetch_plan(store, model.proposals[proposal]))
            for name in p.datasets:  # the model was trained on these features, in this order
                d = s.fed.registry.dataset(name)
                meta = dataset_metadata(s, d) if d is not None else None
                if meta:
                    _schema_matches(sch, meta, name)
                    break
    state = read_model_file(file, p)  # refuses a file that is not exactly a model of the plan (size-bounded)
    if proposal is not None:
        digest = "0x" + sha256_file(file)
        match = [r for r in uc_models.closed_models(model, proposal) if r.aggregate_sha256 == digest]
        provenance = (f"the aggregate of round {match[0].round} of proposal {proposal} (sha256 as on chain)" if match
                      else f"not an aggregate recorded on chain for proposal {proposal}")
    data = load_dataset(csv, sch)
    ev = evaluate_model(state, p, data)
    if as_json:
        typer.echo(json.dumps({**ev.to_dict(), "model_file": str(file), "provenance": provenance}, indent=2))
        return
    console.print(f"model {escape(str(file))}: {p.model.kind}, plan {escape(p.name)!r}"
                  + (f" — {provenance}" if provenance else ""), soft_wrap=True, highlight=False)
    console.print(f"evaluated on {escape(str(csv))}: {ev.n_rows} rows, the plan's preprocessing "
                  f"({p.preprocessing.standardize})", soft_wrap=True, highlight=False)
    t = Table(show_header=False, title="metrics", title_justify="left")
    t.add_row("accuracy", f"{ev.accuracy:.4f}")
    t.add_row("loss (cross-entropy)", f"{ev.loss:.4f}")
    t.add_row("ROC AUC", f"{ev.auc:.4f}" if ev.auc is not None else f"— ({ev.auc_note})")
    t.add_row("rows", str(ev.n_rows))
    console.print(t)
    cm = Table("true \\ predicted", *(escape(v) for v in ev.labels), title="confusion matrix", title_justify="left")
    for label, row in zip(ev.labels, ev.confusion):
        cm.add_row(escape(label), *(str(v) for v in row))
    console.print(cm)


# --------------------------------------------------------------------------- card


@model_app.command("card")
@friendly
def model_card(
    proposal: Annotated[int, typer.Argument(help="Proposal id.")],
    round_: Annotated[Optional[int], typer.Option("--round", help="Round (default: the last closed one).")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write the card (canonical JSON) here.")] = None,
    markdown: Annotated[Optional[Path], typer.Option(help="Write the readable rendering (Markdown) here.")] = None,
    auditor: Annotated[Optional[Path], typer.Option(help="Auditor keystore: replay the rounds and put the verdicts "
                                                          "in the card (password from $FEDCHAIN_PASSWORD).")] = None,
    auditor_dev: Annotated[Optional[int], typer.Option(help="DEV ONLY: the auditor is dev account N.")] = None,
    pin: Annotated[bool, typer.Option(help="Pin the card to the network's store and print its CID.")] = True,
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
    home: HomeOpt = None,
) -> None:
    """A model card: datasets and owners, contributors and scores, rounds, strategy, privacy, audit, metrics."""
    for target in (output, markdown):
        if target is not None:
            check_target(target, force)
    s = connect(home)
    model = s.fed.read_model()
    uc_models.select(model, proposal, round_)  # a named error before any replay runs
    who = None
    if auditor is not None or auditor_dev is not None:
        who = auditor_identity(auditor, auditor_dev, None)
    d = s.fed.deployment
    with s.store() as store:
        verdicts, governance, key = None, (), None
        if who is not None:
            plan = fetch_plan(store, model.proposals[proposal])
            key = "0x" + who.x25519_public.hex()
            if key not in plan.auditors:
                raise ConfigError(
                    f"{who.name} ({key}) is not an auditor of proposal {proposal}: the updates were sealed only for "
                    f"the coordinator and {len(plan.auditors)} auditor key(s) named in the plan"
                    + (f" ({', '.join(_short(a) for a in plan.auditors)})" if plan.auditors else ""))
            err_console.print(f"replaying the rounds as auditor {escape(who.name)} …")
            report = replay_live(s.fed, store, who)
            verdicts, governance = report.rounds, report.governance
        card = build_card(model, store, proposal, round_, chain_id=d.chain_id, rounds_address=d.addresses["Rounds"],
                          verdicts=verdicts, governance_problems=governance, auditor_key=key)
        data = card_bytes(card)
        text = render_markdown(card)
        pinned = pin_document(store, data) if pin else None
    if output is not None:
        uc_models.write_atomically(output, data)
    if markdown is not None:
        uc_models.write_atomically(markdown, text.encode("utf-8"))
    typer.echo(text, nl=False)
    digest = sha256_hex(data)
    if pinned is not None:
        err_console.print(f"card pinned: {pinned.cid} (sha256 {digest})", soft_wrap=True, highlight=False)
    else:
        err_console.print(f"card sha256 {digest} (not pinned)", soft_wrap=True, highlight=False)
    for path, what in ((output, "card"), (markdown, "rendering")):
        if path is not None:
            err_console.print(f"wrote the {what} to {escape(str(path))}", highlight=False)


# --------------------------------------------------------------------------- release


def _card_for_release(s, model, store, proposal: int, round_: Optional[int], card: Optional[Path]):
    """The card to release under: the file given, else the card built from the chain now; pinned."""
    if card is not None:
        try:
            data = card.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the card {card}: {exc.strerror or exc}") from None
        if len(data) > uc_releases.MAX_CARD_BYTES:
            raise ConfigError(f"{card} is larger than a model card may be ({uc_releases.MAX_CARD_BYTES:,} bytes)")
    else:
        d = s.fed.deployment
        data = card_bytes(build_card(model, store, proposal, round_, chain_id=d.chain_id,
                                     rounds_address=d.addresses["Rounds"]))
    return pin_document(store, data)


@release_app.command("propose")
@friendly
def release_propose(
    proposal: Annotated[int, typer.Argument(help="Proposal id.")],
    round_: Annotated[Optional[int], typer.Option("--round", help="Round (default: the last closed one).")] = None,
    card: Annotated[Optional[Path], typer.Option(help="The model card (JSON from 'fedchain model card -o'); default: "
                                                      "build it from the chain now.")] = None,
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Propose releasing a closed round's model under its model card (pinned; checked against the chain)."""
    s, _me, fed = _acting(home, identity, dev)
    model = fed.read_model()
    rec = uc_models.select(model, proposal, round_)
    with s.store() as store:
        pinned = _card_for_release(s, model, store, proposal, rec.round, card)
        tx = uc_releases.propose(fed, store, proposal, rec.round, pinned.cid, pinned.sha256)
    info = fed.releases.release(tx.value)
    _tx_line(f"release {tx.value} proposed: round {rec.round} of proposal {proposal} under card {pinned.cid}", tx)
    console.print(f"  voting until block {info.deadline} ({fed.voting_period()} blocks; {info.eligible} members "
                  f"may vote): fedchain model release vote {tx.value} yes|no|abstain", highlight=False)


@release_app.command("vote")
@friendly
def release_vote(
    release: Annotated[int, typer.Argument(help="Release id.")],
    choice: Annotated[str, typer.Argument(help="yes, no or abstain")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Vote on a release; a yes is sent only after the card was fetched and checked against the chain."""
    s, _me, fed = _acting(home, identity, dev)
    with s.store() as store:
        tx = uc_releases.vote(fed, store, release, choice)
    r = fed.releases.release(release)
    _tx_line(f"voted {choice.lower()} on release {release} (now yes {r.yes}, no {r.no}, abstain {r.abstain})", tx)


@release_app.command("finalize")
@friendly
def release_finalize(release: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Close a release vote after its deadline: Approved releases the model."""
    _, _, fed = _acting(home, identity, dev)
    tx = uc_releases.finalize(fed, release)
    r = fed.releases.release(release)
    _tx_line(f"release {release} finalized: {uc_releases.state_name(tx.value)} — round {r.round} of proposal "
             f"{r.proposal_id} (yes {r.yes}, no {r.no}, abstain {r.abstain} of {r.eligible} eligible)", tx)


@release_app.command("cancel")
@friendly
def release_cancel(release: int, home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None) -> None:
    """Withdraw a release proposal you made, before anyone voted."""
    _, _, fed = _acting(home, identity, dev)
    tx = uc_releases.cancel(fed, release)
    _tx_line(f"release {release} cancelled", tx)


@release_app.command("list")
@friendly
def release_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    home: HomeOpt = None,
) -> None:
    """Every release vote: model, card, state, votes; and which models are marked withdrawn."""
    s = connect(home)
    model = s.fed.read_model()
    rows = []
    for r in sorted(model.releases.values(), key=lambda r: r.id):
        state = ("cancelled" if r.cancelled_block is not None else
                 {None: "voting", "Approved": "released", "Rejected": "rejected"}.get(r.final_state, r.final_state))
        marks = model.withdrawals.get((r.proposal_id, r.round), [])
        rows.append({"release": r.id, "proposal": r.proposal_id, "round": r.round, "state": state,
                     "card_cid": r.card_cid, "card_sha256": r.card_sha256, "aggregate_sha256": r.aggregate_sha256,
                     "proposer": r.proposer, "deadline": r.deadline,
                     "votes": {c: sum(1 for v in r.votes.values() if v == c) for c in ("yes", "no", "abstain")},
                     "withdrawn": [model.dataset_name(w.dataset_id) for w in marks]})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        console.print("no release proposals yet (fedchain model release propose PROPOSAL)")
        return
    t = Table(title="release votes", title_justify="left")
    for col in ("id", "model", "state", "yes/no/abstain", "card CID", "withdrawn"):
        t.add_column(col, overflow="fold" if col == "card CID" else "ellipsis")
    for r in rows:
        v = r["votes"]
        t.add_row(str(r["release"]), f"proposal {r['proposal']} round {r['round']}", r["state"],
                  f"{v['yes']}/{v['no']}/{v['abstain']}", r["card_cid"],
                  ("[red]" + escape(", ".join(r["withdrawn"])) + "[/]") if r["withdrawn"] else "—")
    console.print(t)


@release_app.command("mark")
@friendly
def release_mark(
    dataset: Annotated[str, typer.Argument(help="A revoked dataset (name or 0x id).")],
    home: HomeOpt = None, identity: IdentityOpt = None, dev: DevOpt = None,
) -> None:
    """Mark every model whose lineage holds an update of a revoked dataset (anyone; one transaction per model)."""
    _, _, fed = _acting(home, identity, dev)
    did = to_dataset_id(dataset)
    d = fed.registry.dataset(did)
    if d is None:
        raise ConfigError(f"no dataset {dataset!r}")
    if not d.revoked:
        raise ConfigError(f"dataset {dataset!r} is not revoked: only its owner's revocation withdraws consent")
    _print_marks(uc_releases.mark_withdrawn(fed, did), d.name)


def _print_marks(txs, name: str) -> None:
    if not txs:
        console.print(f"no model to mark: no closed round's lineage holds an update of {escape(name)!r} "
                      "that is not marked already")
    for tx in txs:
        ev = tx.event("ModelWithdrawn").args
        _tx_line(f"model of round {ev['round']} of proposal {ev['proposalId']} marked withdrawn "
                 f"({escape(name)!r} committed in round {ev['committedRound']})", tx)
