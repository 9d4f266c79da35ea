"""Registering datasets and governing their access policies.

A hospital registers a dataset by publishing a metadata document (schema, row
count, description: never a row) to the content store and recording its CID,
its sha256, the schema's hash and the row count on chain together with the first
access policy. The row count on chain is what members see when they vote and the
most samples any commitment on the dataset may claim (FedAvg weighs by it), and
it cannot be changed later. If the chain refuses (the name is taken, the signer
is not a member, a policy value is out of range) nothing stays pinned that this
call pinned.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from fedchain.content import pin_document
from fedchain.contracts.models import Policy, TxResult
from fedchain.errors import ConfigError, FedchainError
from fedchain.ipfs.unixfs import compute_cid
from fedchain.schema import DatasetSchema, metadata_document, schema_hash
from fedchain.usecases.ports import Governance, Store
from fedchain.usecases.refusals import Refused

#: The chain stores ε in thousandths.
EPSILON_RESOLUTION = 1000
#: Most rows a dataset can register (the chain stores the count in 32 bits).
MAX_ROW_COUNT = 2**32 - 1


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset now on chain: its id and metadata document, and the transaction."""

    name: str
    id: bytes
    metadata_cid: str
    metadata_sha256: str
    tx: TxResult


def pin_fresh(store: Store, data: bytes) -> tuple[str, str, bool]:
    """Pin ``data``; return ``(cid, sha256, newly_pinned)`` so a refused action can undo only its own pin."""
    cid = compute_cid(data)
    already = store.is_pinned(cid)
    pinned = pin_document(store, data)
    return pinned.cid, pinned.sha256, not already


def undo_pin(store: Store, cid: str, newly_pinned: bool) -> None:
    """Unpin what a refused action pinned (never a pin somebody else holds)."""
    if newly_pinned:
        try:
            store.unpin(cid)
        except FedchainError:
            pass  # the refusal is what the caller must see; a pin left behind is only garbage


def register(
    gov: Governance,
    store: Store,
    *,
    name: str,
    schema: DatasetSchema,
    n_rows: int,
    description: str,
    policy: Policy,
) -> RegisteredDataset:
    """Publish the metadata document and register the dataset (``n_rows`` rows) with its first policy."""
    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or not 1 <= n_rows <= MAX_ROW_COUNT:
        raise ConfigError(f"dataset {name!r}: a registered dataset has 1 to {MAX_ROW_COUNT:,} rows, not {n_rows!r}")
    if gov.registry.dataset(name) is not None:
        raise Refused("DATASET_EXISTS", f"dataset {name!r}")
    meta = metadata_document(schema, n_rows, description)
    cid, sha, fresh = pin_fresh(store, meta)
    try:
        tx = gov.registry.register_dataset(name, cid, sha, schema_hash(schema), policy, row_count=n_rows)
    except BaseException:
        undo_pin(store, cid, fresh)
        raise
    return RegisteredDataset(name=name, id=bytes(tx.value), metadata_cid=cid, metadata_sha256=sha, tx=tx)


def set_policy(gov: Governance, dataset: str, policy: Policy) -> TxResult:
    """Replace a dataset's policy (owner only); ``value`` is the new policy version."""
    return gov.registry.set_policy(dataset, policy)


def revoke(gov: Governance, dataset: str) -> TxResult:
    """Revoke a dataset for good (owner only)."""
    return gov.registry.revoke_dataset(dataset)


# -- policies from words ------------------------------------------------------------------


def parse_expiry(text: str) -> int:
    """An expiry as a unix timestamp: ISO date (00:00 UTC) or date-time (UTC if no zone); 'never' -> 0."""
    t = text.strip()
    if t.lower() in ("never", "none", "0"):
        return 0
    try:
        when = dt.datetime.fromisoformat(t)
    except ValueError:
        raise ConfigError(
            f"--expires takes an ISO date like 2027-06-30 or 2027-06-30T18:00 (or 'never'), not {text!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return int(when.timestamp())


def epsilon_milli(value: float) -> int:
    """A privacy budget ε as the chain stores it (thousandths); 0 = unset."""
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or value < 0 or value > 1e12:
        raise ConfigError(f"--epsilon must be a non-negative number, not {value!r}")
    milli = int(round(value * EPSILON_RESOLUTION))
    if value > 0 and milli == 0:
        raise ConfigError(f"--epsilon {value!r} is below the chain's resolution (0.001)")
    return milli


def parse_proposals(words: Iterable[str]) -> tuple[bool, tuple[int, ...]]:
    """``--proposal`` words ('any', 'none' or ids) as ``(any_approved, ids)``."""
    any_approved, ids = False, []
    for w in words:
        word = w.strip().lower()
        if word == "any":
            any_approved = True
        elif word == "none":
            continue
        else:
            try:
                n = int(word)
                if n < 1:
                    raise ValueError
            except ValueError:
                raise ConfigError(f"--proposal takes a proposal id, 'any' or 'none', not {w!r}") from None
            ids.append(n)
    return any_approved, tuple(dict.fromkeys(ids))


def make_policy(
    base: Policy | None = None,
    *,
    purposes: Sequence[str] | None = None,
    any_purpose: bool = False,
    proposals: Sequence[str] | None = None,
    requesters: Sequence[str] | None = None,
    any_requester: bool = False,
    expires: str | None = None,
    epsilon: float | None = None,
) -> Policy:
    """A policy from a member's words; what is not given keeps ``base``'s value (or the default:
    any approved proposal, any purpose, any requester, no expiry, no ε).

    ``requesters`` are addresses (resolving member names is the caller's business).
    """
    if any_purpose and purposes:
        raise ConfigError("give --purpose or --any-purpose, not both")
    if any_requester and requesters:
        raise ConfigError("give --requester or --any-requester, not both")
    p_purposes: tuple = tuple(base.purposes) if base is not None else ()
    p_any = base.any_approved_proposal if base is not None else True
    p_ids: tuple = tuple(base.proposal_ids) if base is not None else ()
    p_requesters: tuple = tuple(base.requesters) if base is not None else ()
    p_expiry = base.expiry if base is not None else 0
    p_eps = base.max_epsilon_milli if base is not None else 0
    if purposes:
        if any(not p.strip() for p in purposes):
            raise ConfigError("--purpose must not be empty")
        p_purposes = tuple(dict.fromkeys(p.strip() for p in purposes))
    elif any_purpose:
        p_purposes = ()
    if proposals:
        p_any, p_ids = parse_proposals(proposals)
    if requesters:
        p_requesters = tuple(dict.fromkeys(requesters))
    elif any_requester:
        p_requesters = ()
    if expires is not None:
        p_expiry = parse_expiry(expires)
    if epsilon is not None:
        p_eps = epsilon_milli(epsilon)
    return Policy(purposes=p_purposes, proposal_ids=p_ids, any_approved_proposal=p_any,
                  requesters=p_requesters, expiry=p_expiry, max_epsilon_milli=p_eps)
