"""The models a consortium trained: every closed round's aggregate, found on chain and fetched verified.

A round that closes publishes its aggregate (canonical safetensors) in the
store and records the CID and sha256 on chain. :func:`closed_models` lists
them from the event read model, :func:`select` picks one (by default the last
closed round of a proposal), and :func:`fetch_model_bytes` /
:func:`pull_to_file` fetch it: never more bytes than the plan's model has
(:func:`fedchain.validation.model_size`), only bytes whose sha256 is the one
on chain, and only a file that is exactly a model of the plan's layout.

Release: a closed round's model is what training produced, not something the
members have agreed to use. :attr:`ModelRecord.released` is ``True`` once a
release vote on it was Approved (the ``Releases`` contract, see
:mod:`fedchain.usecases.releases`); :attr:`ModelRecord.withdrawn` names the
revoked datasets of its lineage for which it was marked.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from fedchain.content import fetch_document
from fedchain.contracts.readmodel import ReadModel, RoundRecord
from fedchain.errors import ConfigError, FedchainError
from fedchain.plan import TrainingPlan
from fedchain.usecases.ports import Store
from fedchain.validation import Rejection, model_layout, validate_update

__all__ = [
    "RELEASE_MEANING",
    "CARD_RELEASE_NOTE",
    "ModelNotFound",
    "ModelUnusable",
    "ModelRecord",
    "closed_models",
    "select",
    "fetch_model_bytes",
    "pull_to_file",
    "write_atomically",
]

#: What :attr:`ModelRecord.released` means, in words.
RELEASE_MEANING = ("released: the members approved the model by a release vote (fedchain model release); until then "
                   "a closed round's model is trained, not released. withdrawn: a dataset of its lineage was revoked")
#: What a model card says about release (a card is what a release vote approves, so it cannot say the outcome).
CARD_RELEASE_NOTE = ("whether this model is released is recorded on chain (the Releases contract: fedchain model list), "
                     "not in its card: a card is what a release vote approves")


class ModelNotFound(ConfigError):
    """No closed round matches (unknown proposal, round not closed, nothing trained yet)."""


class ModelUnusable(FedchainError):
    """A closed round's aggregate cannot be had as the chain records it: missing, larger than the plan's
    model, not the bytes its sha256 names, or not a model of the plan."""


@dataclass(frozen=True)
class ModelRecord:
    """One closed round's aggregate, as the chain records it."""

    proposal_id: int
    round: int
    approved_rounds: int
    aggregate_cid: str
    aggregate_sha256: str
    scores_cid: str
    scores_sha256: str
    closed_block: int
    committed: int
    evaluations: int
    validation_metric: float | None  # the sample-weighted mean the coordinator recorded (plan.metric)
    last: bool  # the proposal's latest closed round
    released: bool = False  # an Approved release vote (see the module docstring)
    withdrawn: tuple[str, ...] = ()  # names of the revoked datasets it is marked for

    def to_dict(self) -> dict:
        return {
            "proposal": self.proposal_id, "round": self.round, "approved_rounds": self.approved_rounds,
            "aggregate_cid": self.aggregate_cid, "aggregate_sha256": self.aggregate_sha256,
            "scores_cid": self.scores_cid, "scores_sha256": self.scores_sha256, "closed_block": self.closed_block,
            "committed": self.committed, "evaluations": self.evaluations,
            "validation_metric": self.validation_metric, "last": self.last, "released": self.released,
            "withdrawn": list(self.withdrawn),
        }


def _record(model: ReadModel, r: RoundRecord, last: bool) -> ModelRecord:
    assert r.closed is not None and r.closed_block is not None
    p = model.proposals.get(r.proposal_id)
    return ModelRecord(
        proposal_id=r.proposal_id, round=r.round, approved_rounds=p.rounds if p else 0,
        aggregate_cid=r.closed["aggregate_cid"], aggregate_sha256=r.closed["aggregate_sha256"],
        scores_cid=r.closed["scores_cid"], scores_sha256=r.closed["scores_sha256"], closed_block=r.closed_block,
        committed=len(r.commits), evaluations=len(r.evaluations),
        validation_metric=None if r.global_metric_ppm is None else r.global_metric_ppm / 1e6, last=last,
        released=(r.proposal_id, r.round) in model.released,
        withdrawn=tuple(model.dataset_name(w.dataset_id) for w in model.withdrawals.get((r.proposal_id, r.round), ())),
    )


def closed_models(model: ReadModel, proposal_id: int | None = None) -> list[ModelRecord]:
    """Every closed round's aggregate (of one proposal, or all), by proposal then round."""
    if proposal_id is not None and proposal_id not in model.proposals:
        raise ModelNotFound(f"no proposal {proposal_id} (proposals: {len(model.proposals)})")
    out: list[ModelRecord] = []
    for pid in sorted(model.proposals):
        if proposal_id is not None and pid != proposal_id:
            continue
        closed = [r for (p, _n), r in sorted(model.rounds.items()) if p == pid and r.closed is not None]
        out.extend(_record(model, r, last=(i == len(closed) - 1)) for i, r in enumerate(closed))
    return out


def select(model: ReadModel, proposal_id: int, round_: int | None = None) -> ModelRecord:
    """The aggregate of ``round_`` (default: the last closed round) of a proposal."""
    models = closed_models(model, proposal_id)
    if round_ is None:
        if not models:
            rounds = [r for (p, _n), r in sorted(model.rounds.items()) if p == proposal_id]
            state = (f"{len(rounds)} round(s) opened, none closed" if rounds else "no round opened yet")
            raise ModelNotFound(f"proposal {proposal_id} has no trained model yet ({state})")
        return models[-1]
    for m in models:
        if m.round == round_:
            return m
    r = model.rounds.get((proposal_id, round_))
    p = model.proposals[proposal_id]
    if r is None:
        why = f"it has not been opened (the proposal has {p.rounds} approved round(s))"
    elif r.failed_block is not None:
        why = "it failed (too few valid updates), so it has no model"
    else:
        why = "it is still open"
    closed = ", ".join(str(m.round) for m in models) or "none"
    raise ModelNotFound(f"round {round_} of proposal {proposal_id} has no model: {why} (closed rounds: {closed})")


def fetch_model_bytes(store: Store, record: ModelRecord, plan: TrainingPlan) -> bytes:
    """The aggregate's bytes: at most the plan model's size, sha256 as on chain, a model of the plan."""
    layout = model_layout(plan.model)
    what = f"the aggregate of round {record.round} of proposal {record.proposal_id} ({record.aggregate_cid})"
    try:
        data = fetch_document(store, record.aggregate_cid, record.aggregate_sha256, max_size=layout.size)
    except FedchainError as exc:
        raise ModelUnusable(f"{what} cannot be used: {exc}") from None
    verdict = validate_update(data, layout)
    if isinstance(verdict, Rejection):
        raise ModelUnusable(f"{what} is not a model of its plan: {verdict.code.value}: {verdict.detail}")
    return data


def pull_to_file(store: Store, record: ModelRecord, plan: TrainingPlan, dest: str | Path, *,
                 overwrite: bool = False) -> Path:
    """Fetch the aggregate and write it to ``dest`` whole or not at all (a partial file never remains)."""
    dest = Path(dest)
    if dest.exists() and not overwrite:
        raise ConfigError(f"{dest} already exists (use --force to overwrite it)")
    if not dest.parent.is_dir():
        raise ConfigError(f"cannot write {dest}: folder {dest.parent} does not exist")
    data = fetch_model_bytes(store, record, plan)  # everything verified before a byte is written
    write_atomically(dest, data)
    return dest


def write_atomically(dest: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``dest``, fsync, rename; remove it on any failure."""
    try:
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as exc:
        raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model or a card is not a secret
        os.replace(tmp, dest)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise ConfigError(f"cannot write {dest}: {exc.strerror or exc}") from None
        raise
