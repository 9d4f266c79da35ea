"""Collect and verify a round's committed updates: the one code path the coordinator and the audit share.

Every commitment of a round becomes exactly one outcome, and nothing a member
controls can turn into an exception out of the round:

* :class:`~fedchain.validation.Accepted` -- the tensors, ready to aggregate;
* :class:`~fedchain.validation.Rejection` -- a stable reason code (what the
  scores document publishes and ``audit replay`` compares) and a short public
  detail (never exception text, never a local path);
* :class:`StoreFailure` -- the *reader's* store failed on this update (a block
  corrupt in the local store, a daemon error, the per-round time budget spent):
  nothing is known about the member's bytes. The coordinator publishes this as
  ``NOT_FOUND`` (it could not have the update intact at close); the audit calls
  it UNVERIFIABLE.

Each update goes through, in this order (the first failing step decides):

1. the dataset's policy at close (the coordinator asks the chain; replay reads
   the policy events): ``NOT_ADMITTED`` when revoked, expired or changed after
   the commitment -- nothing is fetched; then the privacy the commitment charged
   (``WRONG_PRIVACY`` when its ε/δ is not the plan's round's);
2. the CID's syntax (``NOT_FOUND`` for a CID that is not one: deterministic,
   so replay re-derives it);
3. :func:`fedchain.validation.open_update`: fetch bounded by
   :func:`~fedchain.validation.update_size_limit`, sha256 against the
   commitment, envelope v2 opened with the exact expected recipients (the
   coordinator's key and the plan's auditors: an update sealed without an
   auditor is ``BAD_ENVELOPE`` for everyone), then
   :func:`~fedchain.validation.validate_update` against the plan's model layout.

:func:`check_updates` runs step 3 for all of a round's updates at once in a
thread pool under one time budget: commitments whose CIDs exist nowhere wait
out the store's fetch timeout side by side, so they cost the round at most one
timeout, not one each. An update still being fetched when the budget is spent
is a :class:`StoreFailure`. When the store is unreachable altogether
(:class:`~fedchain.ipfs.StoreUnavailable`) the round cannot be judged at all and
:class:`StoreOutage` is raised instead: closing it would reject honest members
for our own outage.
"""

from __future__ import annotations

from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Callable, Sequence, Union

from fedchain.envelope import EnvelopeContext
from fedchain.identity import Identity
from fedchain.ipfs.store import InvalidCid, StoreError, StoreUnavailable
from fedchain.ipfs.unixfs import normalize_cid
from fedchain.validation import Accepted, ModelLayout, Reason, Rejection, open_update

__all__ = [
    "DEFAULT_FETCH_WORKERS",
    "Outcome",
    "StoreFailure",
    "StoreOutage",
    "UpdateJob",
    "check_update",
    "check_updates",
    "cid_rejection",
    "public_rejection",
]

#: Updates fetched at once (each waits mostly on the store: threads, not processes).
DEFAULT_FETCH_WORKERS = 8


class StoreOutage(StoreUnavailable):
    """The reader's own content store is unreachable: the round's updates cannot be judged now.

    A :class:`~fedchain.ipfs.StoreUnavailable`: the store's own retries already rode out what
    they could, so a role process stops with the store-unavailable exit code."""


@dataclass(frozen=True)
class StoreFailure:
    """The reader's store could not deliver this update intact (or not within the round's budget).

    ``why`` is a short public phrase (no paths, no exception text).
    """

    why: str


Outcome = Union[Accepted, Rejection, StoreFailure]


@dataclass(frozen=True)
class UpdateJob:
    """One committed update to check: where it is, its hash, and the envelope context it must carry."""

    key: str  # who committed it (lower-case address): the outcome's key
    cid: str
    sha256: str
    ctx: EnvelopeContext


def cid_rejection(cid: object) -> Rejection | None:
    """``NOT_FOUND`` when ``cid`` is not a CID at all (a deterministic verdict anyone re-derives), else None."""
    if not isinstance(cid, str):
        return Rejection(Reason.NOT_FOUND, "the committed CID is not a CID")
    try:
        normalize_cid(cid)
    except InvalidCid:
        return Rejection(Reason.NOT_FOUND, "the committed CID is not a CID")
    return None


def check_update(store, job: UpdateJob, opener: Identity, layout: ModelLayout,
                 recipients: Sequence[bytes]) -> Outcome:
    """Steps 2 and 3 of the module docstring for one update; raises only :class:`StoreOutage`."""
    bad = cid_rejection(job.cid)
    if bad is not None:
        return bad
    try:
        return open_update(store, job.cid, job.sha256, job.ctx, opener, layout, recipients=recipients)
    except StoreUnavailable:
        raise StoreOutage("the content store is unreachable; the round's updates cannot be checked now") from None
    except StoreError:
        return StoreFailure("the store could not deliver it intact")


def check_updates(
    store,
    jobs: Sequence[UpdateJob],
    opener: Identity,
    layout: ModelLayout,
    recipients: Sequence[bytes],
    *,
    budget: float | None = None,
    workers: int = DEFAULT_FETCH_WORKERS,
    check: Callable[..., Outcome] = check_update,
) -> dict[str, Outcome]:
    """Check every job concurrently; ``{job.key: outcome}``, within ``budget`` seconds (None: no limit).

    Jobs unfinished when the budget is spent are :class:`StoreFailure` (their
    threads are left to end on their own: each fetch is bounded by the store's
    own timeout). Raises :class:`StoreOutage` as soon as one job finds the store
    unreachable.
    """
    if not jobs:
        return {}
    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(jobs))), thread_name_prefix="fedchain-collect")
    try:
        futures = {pool.submit(check, store, job, opener, layout, recipients): job for job in jobs}
        done, _pending = wait(futures, timeout=budget, return_when=FIRST_EXCEPTION)
        out: dict[str, Outcome] = {}
        for f, job in futures.items():
            if f in done:
                out[job.key] = f.result()  # re-raises StoreOutage (the only exception check lets out)
            else:
                f.cancel()
                out[job.key] = StoreFailure(f"not fetched within the round's time budget of {budget:g} s")
        return out
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def public_rejection(outcome: Outcome) -> Rejection:
    """The coordinator's published form of a failed outcome (a :class:`StoreFailure` is ``NOT_FOUND``)."""
    if isinstance(outcome, Rejection):
        return outcome
    if isinstance(outcome, StoreFailure):
        return Rejection(Reason.NOT_FOUND, f"the coordinator could not fetch it: {outcome.why}")
    raise TypeError("an accepted update has no rejection")

