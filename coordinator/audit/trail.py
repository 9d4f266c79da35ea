"""The exported audit trail: JSON lines, one record per line, in chain order.

Records (``kind``):

* ``header`` -- first line: format, chain id, contract addresses, deploy block,
  deploy parameters;
* ``block`` -- one per block from the deploy block on, written before that
  block's events: its number, hash and raw header (the RLP its hash is computed
  over), plus its raw receipts whenever its bloom may hold a log of one of the
  contracts (see :mod:`fedchain.contracts.proofs`). These make the trail
  checkable offline against one block hash the auditor trusts
  (:mod:`fedchain.coordinator.audit.anchor`); ``export_trail(headers=False)``
  leaves them out (the trail is then UNANCHORED offline);
* ``event`` -- one per contract event: block, block hash, block timestamp,
  tx hash, log index, contract, event name, decoded args (JSON types; bytes as
  0x-hex), gas used by the transaction that emitted it;
* ``document`` -- a public document an event references (a plan), by CID and
  sha256, with its content, so a reader can see what was approved;
* ``checkpoint`` -- written after each page: every record up to ``to_block``
  (whose hash it names) is above it. An interrupted export resumes after the
  last checkpoint.

Events are read in pages of blocks, so a chain with 100k events exports in
bounded memory, and the records of a block never depend on the page size.

A trail is untrusted input: :func:`read_trail` checks every record's shape and
every event's arguments against the contract's ABI, measures each line's JSON
nesting before parsing it, and raises only :class:`TrailError` (naming the
line) -- never a parser's or a library's exception.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from fedchain.content import fetch_document
from fedchain.contracts.bindings.proofs import LogDecoder, raw_header, raw_receipts
from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.contracts.errors import ChainError
from fedchain.contracts.proofs import bloom_contains
from fedchain.errors import FedchainError
from fedchain.plan import MAX_PLAN_BYTES
from fedchain.serialize import json_depth

TRAIL_FORMAT = "fedchain-trail/2"
#: Formats read (version 1 has no block records and no event block hashes: never anchored offline).
READABLE_FORMATS = ("fedchain-trail/1", TRAIL_FORMAT)
PAGE_BLOCKS = 2000
#: Deepest JSON nesting a trail record can need (event -> args -> policy -> list).
MAX_RECORD_DEPTH = 5

_HEX32 = re.compile(r"0x[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")


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
    block_hash: str = ""

    def to_record(self) -> dict:
        return {"kind": "event", "block": self.block, "block_hash": self.block_hash, "timestamp": self.timestamp,
                "tx": self.tx, "log_index": self.log_index, "contract": self.contract, "event": self.event,
                "args": self.args, "gas_used": self.gas_used}


@dataclass(frozen=True)
class TrailBlock:
    """A block's raw header and (when its bloom may hold the contracts' logs) its raw receipts."""

    number: int
    hash: str
    header: bytes
    receipts: tuple[bytes, ...] | None = None

    def to_record(self) -> dict:
        rec: dict[str, Any] = {"kind": "block", "number": self.number, "hash": self.hash,
                               "header": "0x" + self.header.hex()}
        if self.receipts is not None:
            rec["receipts"] = ["0x" + r.hex() for r in self.receipts]
        return rec


@dataclass
class Trail:
    """A parsed trail: the header, every event in order, the documents, the blocks, the checkpoints."""

    header: dict
    events: list[TrailEvent] = field(default_factory=list)
    documents: dict[str, dict] = field(default_factory=dict)
    blocks: dict[int, TrailBlock] = field(default_factory=dict)
    checkpoints: list[tuple[int, str]] = field(default_factory=list)  # (to_block, its hash or "")

    @property
    def chain_id(self) -> int:
        return int(self.header["chain_id"])

    @property
    def addresses(self) -> dict[str, str]:
        return dict(self.header["addresses"])

    @property
    def deploy_block(self) -> int:
        return int(self.header["deploy_block"])

    @property
    def end_block(self) -> int | None:
        """The last block the export covered (its last checkpoint), if any."""
        return self.checkpoints[-1][0] if self.checkpoints else None


def _event_from_chain(ev) -> TrailEvent:
    return TrailEvent(
        block=ev.block_number, timestamp=ev.timestamp, tx=ev.tx_hash, log_index=ev.log_index,
        contract=ev.contract, event=ev.event, args=ev.args, gas_used=ev.gas_used, block_hash=ev.block_hash,
    )


def chain_events(fed, from_block: int = 0, to_block: int | None = None) -> Iterator[TrailEvent]:
    """Every event of the deployment, in order, read in pages."""
    for ev in fed.events(from_block=from_block, to_block=to_block, page_size=PAGE_BLOCKS):
        yield _event_from_chain(ev)


def block_record(fed, number: int, contract_addresses: list[bytes]) -> TrailBlock:
    """Block ``number``'s proof: its header, and its receipts when its bloom names one of the contracts."""
    header = raw_header(fed.chain, number)
    receipts = None
    if any(bloom_contains(header.bloom, a) for a in contract_addresses):
        receipts = tuple(raw_receipts(fed.chain, header))
    return TrailBlock(number, "0x" + header.hash.hex(), header.raw, receipts)


def _header(fed) -> dict:
    d = fed.deployment
    return {"kind": "header", "format": TRAIL_FORMAT, "chain_id": d.chain_id,
            "addresses": dict(d.addresses), "deploy_block": d.deploy_block, "params": dict(d.params)}


def _resume_point(out: Path, header: dict, block_hash=None) -> tuple[int, set[str]]:
    """Block to continue from and the documents already written, or (-1, {}) for a fresh file.

    ``block_hash(n)`` gives the chain's hash of block ``n``: a trail whose last
    checkpoint names another hash is of another chain (a restarted dev chain
    reuses addresses) and is refused, not appended to.
    """
    if not out.exists() or out.stat().st_size == 0:
        return -1, set()
    last_checkpoint, last_hash = None, None
    docs: set[str] = set()
    good_bytes = 0
    with open(out, "rb") as f:
        first = True
        for line in f:
            try:
                if json_depth(line) > MAX_RECORD_DEPTH:
                    break
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    break
            except ValueError:
                break  # a torn last line from an interrupted export
            if first:
                if (rec.get("kind") != "header" or rec.get("format") != header["format"]
                        or rec.get("chain_id") != header["chain_id"] or rec.get("addresses") != header["addresses"]):
                    raise TrailError(f"{out} is a trail of another deployment or format; refusing to append to it")
                first = False
            if rec.get("kind") == "document" and isinstance(rec.get("cid"), str):
                docs.add(rec["cid"])
            if rec.get("kind") == "checkpoint" and isinstance(rec.get("to_block"), int):
                last_checkpoint, last_hash = rec["to_block"], rec.get("block_hash")
                good_bytes = f.tell()
    if last_checkpoint is None:
        return -1, set()
    if block_hash is not None and isinstance(last_hash, str) and last_hash:
        if block_hash(last_checkpoint).lower() != last_hash.lower():
            raise TrailError(f"{out} is a trail of another chain (its block {last_checkpoint} has another hash); "
                             "refusing to append to it")
    # Drop whatever follows the last checkpoint (a partly written page).
    with open(out, "r+b") as f:
        f.truncate(good_bytes)
    return last_checkpoint, docs


def export_trail(fed, store, out: Path, *, to_block: int | None = None, headers: bool = True) -> int:
    """Write (or resume) the trail of ``fed``'s deployment to ``out``; return the number of events written.

    With ``headers`` (default) every block's raw header, and the raw receipts of
    blocks whose bloom may hold the contracts' logs, are written too; a node whose
    headers fedchain cannot reproduce is a :class:`TrailError` (export with
    ``headers=False`` then).
    """

    out = Path(out)
    header = _header(fed)
    last, docs = _resume_point(out, header, fed.chain.block_hash)
    end = fed.chain.block_number if to_block is None else to_block
    start = max(last + 1, header["deploy_block"])
    contracts = LogDecoder(header["addresses"]).addresses
    n = 0
    mode = "a" if last >= 0 else "w"
    with open(out, mode) as f:
        if last < 0:
            f.write(json.dumps(header, sort_keys=True) + "\n")
        page_start = start
        while page_start <= end:
            page_end = min(page_start + PAGE_BLOCKS - 1, end)
            by_block: dict[int, list[TrailEvent]] = {}
            for ev in chain_events(fed, page_start, page_end):
                by_block.setdefault(ev.block, []).append(ev)
            end_hash = ""
            for number in range(page_start, page_end + 1):
                if headers:
                    try:
                        blk = block_record(fed, number, contracts)
                    except ChainError as exc:
                        raise TrailError(f"cannot export block {number}'s header and receipts: {exc}; "
                                         "export without them (--no-headers) to get an unanchored trail") from None
                    f.write(json.dumps(blk.to_record(), sort_keys=True) + "\n")
                    end_hash = blk.hash
                for ev in by_block.get(number, ()):
                    f.write(json.dumps(ev.to_record(), sort_keys=True) + "\n")
                    n += 1
                    if ev.event == "ProposalSubmitted" and ev.args["planCid"] not in docs:
                        f.write(json.dumps(_plan_document(store, ev.args), sort_keys=True) + "\n")
                        docs.add(ev.args["planCid"])
            if not end_hash:
                end_hash = fed.chain.block_hash(page_end).lower()
            f.write(json.dumps({"kind": "checkpoint", "to_block": page_end, "block_hash": end_hash}) + "\n")
            f.flush()
            os.fsync(f.fileno())
            page_start = page_end + 1
    return n


def _plan_document(store, args: dict) -> dict:
    cid, sha = args["planCid"], args["planSha256"]
    try:
        content = fetch_document(store, cid, sha, max_size=MAX_PLAN_BYTES).decode()
        return {"kind": "document", "role": "plan", "cid": cid, "sha256": sha, "content": content}
    except (FedchainError, UnicodeDecodeError) as exc:
        return {"kind": "document", "role": "plan", "cid": cid, "sha256": sha, "missing": str(exc)}


# --------------------------------------------------------------------------- reading


class _Bad(Exception):
    """A record does not have the shape its kind needs (message: what is wrong)."""


def _int(rec: dict, key: str, *, lo: int = 0, hi: int = 2**256 - 1) -> int:
    v = rec.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise _Bad(f"{key!r} must be an integer in {lo}..{hi}")
    return v


def _str(rec: dict, key: str, pattern: re.Pattern | None = None, *, optional: bool = False) -> str:
    v = rec.get(key, "" if optional else None)
    if not isinstance(v, str) or (pattern is not None and not (optional and v == "") and not pattern.fullmatch(v)):
        raise _Bad(f"{key!r} must be {'a ' + pattern.pattern if pattern is not None else 'a string'}")
    return v


def _only(rec: dict, allowed: set[str]) -> None:
    extra = set(rec) - allowed
    if extra:
        raise _Bad(f"unknown field(s) {sorted(extra)}")


#: Contracts a trail may lack: those added to the deployment after trails were first written.
LATER_CONTRACTS = frozenset({"Releases", "Statistics", "SecureRounds"})
OPTIONAL_CONTRACTS = LATER_CONTRACTS


@lru_cache(maxsize=None)
def _event_abis() -> dict[tuple[str, str], list[dict]]:
    out = {}
    for name in CONTRACT_NAMES:
        for item in load_artifact(name)["abi"]:
            if item.get("type") == "event":
                out[(name, item["name"])] = item["inputs"]
    return out


def _check_value(param: dict, value: Any, where: str) -> None:
    """``value`` is what the bindings' JSON-friendly decoding of an ABI ``param`` gives."""
    t = param["type"]
    if t.endswith("]"):
        if not isinstance(value, list):
            raise _Bad(f"{where} must be a list")
        inner = dict(param, type=t[: t.rindex("[")])
        for i, item in enumerate(value):
            _check_value(inner, item, f"{where}[{i}]")
    elif t == "tuple":
        comps = param["components"]
        if not isinstance(value, dict) or set(value) != {c["name"] for c in comps}:
            raise _Bad(f"{where} must be an object with fields {[c['name'] for c in comps]}")
        for c in comps:
            _check_value(c, value[c["name"]], f"{where}.{c['name']}")
    elif t == "address":
        if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
            raise _Bad(f"{where} must be an address")
    elif t == "bytes32":
        if not isinstance(value, str) or not _HEX32.fullmatch(value):
            raise _Bad(f"{where} must be 32 bytes of hex")
    elif t.startswith("bytes"):
        if not isinstance(value, str) or not _HEX.fullmatch(value):
            raise _Bad(f"{where} must be hex")
    elif t == "string":
        if not isinstance(value, str):
            raise _Bad(f"{where} must be a string")
    elif t == "bool":
        if not isinstance(value, bool):
            raise _Bad(f"{where} must be a boolean")
    elif t.startswith(("uint", "int")):
        bits = int(t.lstrip("uint") or 256)
        lo, hi = (0, 2**bits - 1) if t.startswith("uint") else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise _Bad(f"{where} must be a {t}")
    else:  # pragma: no cover - the contracts use no other types
        raise _Bad(f"{where}: unsupported ABI type {t}")


def _read_header(rec: dict, path: Path) -> dict:
    if rec.get("kind") != "header" or rec.get("format") not in READABLE_FORMATS:
        raise TrailError(f"{path}:1: not a {TRAIL_FORMAT} trail")
    _only(rec, {"kind", "format", "chain_id", "addresses", "deploy_block", "params"})
    _int(rec, "chain_id")
    _int(rec, "deploy_block", hi=2**63)
    addresses = rec.get("addresses")
    required = set(CONTRACT_NAMES) - LATER_CONTRACTS
    if not isinstance(addresses, dict) or not required <= set(addresses) <= set(CONTRACT_NAMES):
        raise _Bad(f"'addresses' must name {sorted(required)} (and may name {sorted(LATER_CONTRACTS)})")
    for k in addresses:
        _str(addresses, k, _ADDRESS)
    params = rec.get("params", {})
    if not isinstance(params, dict):
        raise _Bad("'params' must be an object")
    for key in ("quorum_bps", "approval_bps"):  # the deploy parameters the audit computes with
        if key in params:
            _int(params, key, hi=10_000)
    return rec


def _read_event(rec: dict, anchored: bool) -> TrailEvent:
    _only(rec, {"kind", "block", "block_hash", "timestamp", "tx", "log_index", "contract", "event", "args",
                "gas_used"})
    contract, event = _str(rec, "contract"), _str(rec, "event")
    inputs = _event_abis().get((contract, event))
    if inputs is None:
        raise _Bad(f"{contract}.{event} is not an event of fedchain's contracts")
    args = rec.get("args")
    if not isinstance(args, dict) or set(args) != {i["name"] for i in inputs}:
        raise _Bad(f"the args of {event} must be exactly {[i['name'] for i in inputs]}")
    for i in inputs:
        _check_value(i, args[i["name"]], f"args.{i['name']}")
    return TrailEvent(
        block=_int(rec, "block", hi=2**63), timestamp=_int(rec, "timestamp", hi=2**63), tx=_str(rec, "tx", _HEX32),
        log_index=_int(rec, "log_index", hi=2**32), contract=contract, event=event, args=args,
        gas_used=_int(rec, "gas_used", hi=2**63) if "gas_used" in rec else 0,
        block_hash=_str(rec, "block_hash", _HEX32, optional=not anchored).lower(),
    )


def _read_block(rec: dict) -> TrailBlock:
    _only(rec, {"kind", "number", "hash", "header", "receipts"})
    receipts = rec.get("receipts")
    if receipts is not None and not (isinstance(receipts, list) and all(
            isinstance(r, str) and _HEX.fullmatch(r) for r in receipts)):
        raise _Bad("'receipts' must be a list of hex strings")
    return TrailBlock(
        number=_int(rec, "number", hi=2**63), hash=_str(rec, "hash", _HEX32).lower(),
        header=bytes.fromhex(_str(rec, "header", _HEX)[2:]),
        receipts=tuple(bytes.fromhex(r[2:]) for r in receipts) if receipts is not None else None,
    )


def _read_document(rec: dict) -> dict:
    _only(rec, {"kind", "role", "cid", "sha256", "content", "missing"})
    _str(rec, "cid"), _str(rec, "sha256"), _str(rec, "role")
    for key in ("content", "missing"):
        if key in rec and not isinstance(rec[key], str):
            raise _Bad(f"{key!r} must be a string")
    return rec


def read_trail(path: Path) -> Trail:
    """Parse an exported trail; anything malformed is a :class:`TrailError` naming the line."""
    path = Path(path)
    trail: Trail | None = None
    try:
        f = open(path, "rb")
    except OSError as exc:
        raise TrailError(f"cannot read the trail {path}: {exc.strerror}") from None
    with f:
        for lineno, line in enumerate(f, 1):
            try:
                if json_depth(line) > MAX_RECORD_DEPTH:
                    raise _Bad(f"nested deeper than a trail record ({MAX_RECORD_DEPTH} levels)")
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise _Bad("a record must be a JSON object")
                kind = rec.get("kind")
                if trail is None:
                    trail = Trail(header=_read_header(rec, path))
                elif kind == "event":
                    trail.events.append(_read_event(rec, trail.header["format"] == TRAIL_FORMAT))
                elif kind == "block":
                    blk = _read_block(rec)
                    if blk.number in trail.blocks:
                        raise _Bad(f"block {blk.number} appears twice")
                    trail.blocks[blk.number] = blk
                elif kind == "document":
                    doc = _read_document(rec)
                    trail.documents[doc["cid"]] = doc
                elif kind == "checkpoint":
                    _only(rec, {"kind", "to_block", "block_hash"})
                    trail.checkpoints.append((_int(rec, "to_block", hi=2**63),
                                              _str(rec, "block_hash", _HEX32, optional=True).lower()))
                else:
                    raise _Bad(f"unknown record kind {kind!r}")
            except _Bad as exc:
                raise TrailError(f"{path}:{lineno}: malformed trail record ({exc})") from None
            except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError)
                raise TrailError(f"{path}:{lineno}: malformed trail record (not a JSON line)") from None
    if trail is None:
        raise TrailError(f"{path} is empty")
    return trail
