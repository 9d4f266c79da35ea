"""The exported audit trail: JSON lines, one record per line, in chain order.

Records (``kind``):

* ``header`` — first line: format, chain id, contract addresses, deploy block;
* ``event`` — one per contract event: block, block timestamp, tx hash, log
  index, contract, event name, decoded args (JSON types; bytes as 0x-hex), gas
  used by the transaction that emitted it;
* ``document`` — a public document an event references (a plan), by CID and
  sha256, with its content, so a reader can see what was approved;
* ``checkpoint`` — written after each page: every event up to ``to_block``
  is above it. An interrupted export resumes after the last checkpoint.

Events are read in pages of blocks, so a chain with 100k events exports in
bounded memory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fedchain.content import fetch_document
from fedchain.errors import FedchainError
from fedchain.plan import MAX_PLAN_BYTES

TRAIL_FORMAT = "fedchain-trail/1"
PAGE_BLOCKS = 2000


class TrailError(FedchainError):
    """The trail file is malformed or does not belong to this chain."""


@dataclass
class TrailEvent:
    block: int
    timestamp: int
    tx: str
    log_index: int
    contract: str
    event: str
    args: dict
    gas_used: int = 0

    def to_record(self) -> dict:
        return {"kind": "event", "block": self.block, "timestamp": self.timestamp, "tx": self.tx,
                "log_index": self.log_index, "contract": self.contract, "event": self.event,
                "args": self.args, "gas_used": self.gas_used}


@dataclass
class Trail:
    """A parsed trail: the header, every event in order, the documents."""

    header: dict
    events: list[TrailEvent] = field(default_factory=list)
    documents: dict[str, dict] = field(default_factory=dict)

    @property
    def chain_id(self) -> int:
        return int(self.header["chain_id"])

    @property
    def addresses(self) -> dict[str, str]:
        return dict(self.header["addresses"])


def _event_from_chain(ev) -> TrailEvent:
    return TrailEvent(
        block=ev.block_number, timestamp=ev.timestamp, tx=ev.tx_hash, log_index=ev.log_index,
        contract=ev.contract, event=ev.event, args=ev.args, gas_used=ev.gas_used,
    )


def chain_events(fed, from_block: int = 0, to_block: int | None = None) -> Iterator[TrailEvent]:
    """Every event of the deployment, in order, read in pages."""
    for ev in fed.events(from_block=from_block, to_block=to_block, page_size=PAGE_BLOCKS):
        yield _event_from_chain(ev)


def _header(fed) -> dict:
    d = fed.deployment
    return {"kind": "header", "format": TRAIL_FORMAT, "chain_id": d.chain_id,
            "addresses": dict(d.addresses), "deploy_block": d.deploy_block, "params": dict(d.params)}


def _resume_point(out: Path, header: dict) -> tuple[int, set[str]]:
    """Block to continue from and the documents already written, or (-1, {}) for a fresh file."""
    if not out.exists() or out.stat().st_size == 0:
        return -1, set()
    last_checkpoint = None
    docs: set[str] = set()
    good_bytes = 0
    with open(out, "rb") as f:
        first = True
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                break  # a torn last line from an interrupted export
            if first:
                if rec.get("kind") != "header" or rec.get("chain_id") != header["chain_id"] or rec.get("addresses") != header["addresses"]:
                    raise TrailError(f"{out} is a trail of another deployment; refusing to append to it")
                first = False
            if rec.get("kind") == "document":
                docs.add(rec["cid"])
            if rec.get("kind") == "checkpoint":
                last_checkpoint = rec["to_block"]
                good_bytes = f.tell()
    if last_checkpoint is None:
        return -1, set()
    # Drop whatever follows the last checkpoint (a partly written page).
    with open(out, "r+b") as f:
        f.truncate(good_bytes)
    return last_checkpoint, docs


def export_trail(fed, store, out: Path, *, to_block: int | None = None) -> int:
    """Write (or resume) the trail of ``fed``'s deployment to ``out``; return the number of events written."""

    out = Path(out)
    header = _header(fed)
    last, docs = _resume_point(out, header)
    end = fed.chain.block_number if to_block is None else to_block
    start = max(last + 1, header["deploy_block"])
    n = 0
    mode = "a" if last >= 0 else "w"
    with open(out, mode) as f:
        if last < 0:
            f.write(json.dumps(header, sort_keys=True) + "\n")
        page_start = start
        while page_start <= end:
            page_end = min(page_start + PAGE_BLOCKS - 1, end)
            for ev in chain_events(fed, page_start, page_end):
                f.write(json.dumps(ev.to_record(), sort_keys=True) + "\n")
                n += 1
                if ev.event == "ProposalSubmitted" and ev.args["planCid"] not in docs:
                    cid, sha = ev.args["planCid"], ev.args["planSha256"]
                    try:
                        content = fetch_document(store, cid, sha, max_size=MAX_PLAN_BYTES).decode()
                        rec = {"kind": "document", "role": "plan", "cid": cid, "sha256": sha, "content": content}
                    except FedchainError as exc:
                        rec = {"kind": "document", "role": "plan", "cid": cid, "sha256": sha, "missing": str(exc)}
                    f.write(json.dumps(rec, sort_keys=True) + "\n")
                    docs.add(cid)
            f.write(json.dumps({"kind": "checkpoint", "to_block": page_end}) + "\n")
            f.flush()
            os.fsync(f.fileno())
            page_start = page_end + 1
    return n


def read_trail(path: Path) -> Trail:
    """Parse an exported trail; a malformed line is a :class:`TrailError` naming it."""
    trail: Trail | None = None
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            try:
                rec = json.loads(line)
                kind = rec["kind"]
                if trail is None:
                    if kind != "header" or rec.get("format") != TRAIL_FORMAT:
                        raise TrailError(f"{path}:1: not a {TRAIL_FORMAT} trail")
                    trail = Trail(header=rec)
                elif kind == "event":
                    trail.events.append(TrailEvent(
                        block=rec["block"], timestamp=rec["timestamp"], tx=rec["tx"], log_index=rec["log_index"],
                        contract=rec["contract"], event=rec["event"], args=rec["args"], gas_used=rec.get("gas_used", 0),
                    ))
                elif kind == "document":
                    trail.documents[rec["cid"]] = rec
                elif kind != "checkpoint":
                    raise TrailError(f"{path}:{lineno}: unknown record kind {kind!r}")
            except (ValueError, KeyError, TypeError) as exc:
                raise TrailError(f"{path}:{lineno}: malformed trail record ({exc})") from exc
    if trail is None:
        raise TrailError(f"{path} is empty")
    return trail
