"""Tie an exported trail to the chain it claims to come from.

A trail is a JSON file anyone can edit: deleting the ``UpdateCommitted`` line of
an update the coordinator left out (and editing the round's count to match)
would erase the exclusion from the record, and replay judges only what the
events say. So before the rounds are replayed, the events themselves are
checked, and the verdict says how far they could be:

* **ANCHORED** -- every event is the chain's, and none of the contracts' events
  up to the anchor block is missing;
* **UNANCHORED** -- nothing contradicts the chain, but nothing ties the trail to
  it either (no node to ask, no trusted block hash, or events past the
  checkpoint);
* **DISCREPANCY** -- the trail is not the chain's; the detail names the first
  mismatch.

Two ways to anchor:

* **online** (:func:`check_online`, ``audit replay --chain URL``): the node is
  asked for the deployment's events over the block range the trail covers and
  they are compared one by one with the trail's -- block number and hash,
  transaction hash, log index, contract, event, arguments, block time, gas --
  and the trail's checkpoint hashes with the node's;
* **offline** (:func:`check_offline`, ``--checkpoint BLOCKHASH``): the trail
  carries every block's raw header from the deploy block on and the raw receipts
  of every block whose bloom may hold one of the contracts' logs
  (:mod:`fedchain.contracts.proofs`). The headers must hash-link (each one's
  parent hash is the previous one's hash) up to the block whose hash the user
  supplies -- obtained independently, e.g. from a node or block explorer they
  trust, or written down when the run ended. Each receipts list must hash to its
  header's receipts root (the chain's own commitment to the block's logs, so no
  log can be added, dropped or altered); the contracts' logs in those receipts,
  decoded with the ABIs, must be exactly the trail's events of that block, in
  order, with the header's timestamp and the receipt's gas; and a block whose
  bloom holds none of the contracts' addresses must have no events (the bloom
  has no false negatives), which proves no event was deleted with its receipts.
  Without a checkpoint the same checks run, so a naive edit is still a
  DISCREPANCY, but the verdict is at best UNANCHORED: a forger can rebuild
  consistent headers for a dev chain. Transaction hashes are not part of a
  receipt, so offline they stay unchecked (they only key the gas figures).

Both checks name the contract addresses they anchored: they prove the events
are those of the contracts at these addresses, and the auditor compares them
with the consortium's deployment.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fedchain.contracts.bindings import Chain, ChainError, Deployment
from fedchain.contracts.bindings.proofs import LogDecoder
from fedchain.contracts.proofs import Header, ProofError, bloom_contains, decode_receipt, receipts_root
from fedchain.coordinator.audit.trail import TRAIL_FORMAT, Trail, TrailEvent, chain_events
from fedchain.errors import FedchainError

__all__ = ["ANCHORED", "UNANCHORED", "DISCREPANCY", "AnchorVerdict", "check_offline", "check_online", "connect"]

ANCHORED = "ANCHORED"
UNANCHORED = "UNANCHORED"
DISCREPANCY = "DISCREPANCY"


@dataclass(frozen=True)
class AnchorVerdict:
    """How far the trail's events are tied to the chain, and why."""

    status: str
    detail: str


class _Mismatch(Exception):
    """The first way the trail is not the chain's (message: the sentence)."""


def _norm(value: Any) -> Any:
    """JSON-equal form (IntEnums as ints, tuples as lists) for comparing decoded arguments."""
    return json.loads(json.dumps(value, sort_keys=True))


def _label(ev: TrailEvent) -> str:
    return f"{ev.contract}.{ev.event} at block {ev.block}, log {ev.log_index}"


def _addresses(trail: Trail) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(trail.addresses.items()))


# --------------------------------------------------------------------------- offline


def check_offline(trail: Trail, checkpoint: str | None) -> AnchorVerdict:
    """Check the trail against the headers and receipts it carries, up to the ``checkpoint`` block hash."""
    if not trail.blocks:
        return AnchorVerdict(UNANCHORED, "the trail carries no block headers (exported without them, or an old "
                                         "format): its events are tied to no chain; replay with --chain URL")
    try:
        last = _check_blocks(trail)
    except _Mismatch as exc:
        return AnchorVerdict(DISCREPANCY, f"the trail is not the chain's: {exc}")
    first, end = min(trail.blocks), max(trail.blocks)
    if checkpoint is None:
        return AnchorVerdict(UNANCHORED, f"the trail's blocks {first}..{end} are consistent with its events, but "
                                         "tied to no block hash you trust: pass --checkpoint BLOCKHASH (a hash of "
                                         f"one of these blocks you obtained independently) or --chain URL")
    want = checkpoint.lower() if checkpoint.lower().startswith("0x") else "0x" + checkpoint.lower()
    at = next((n for n, b in trail.blocks.items() if b.hash == want), None)
    if at is None:
        return AnchorVerdict(DISCREPANCY, f"the checkpoint {want} is not the hash of any of the trail's blocks "
                                          f"{first}..{end}: the trail is not of that chain (or ends before it)")
    beyond = [ev for ev in trail.events if ev.block > at]
    if beyond:
        return AnchorVerdict(UNANCHORED, f"the events up to block {at} are anchored to its hash, but "
                                         f"{len(beyond)} event(s) after it are not (from {_label(beyond[0])}); "
                                         "use a later checkpoint")
    return AnchorVerdict(ANCHORED, f"every event up to block {at} ({want}) is in the chain's receipts and none "
                                   f"of the contracts' events is missing ({last} event(s); contracts "
                                   f"{_addresses(trail)}; transaction hashes are not checked offline)")


def _check_blocks(trail: Trail) -> int:
    """Raise :class:`_Mismatch` unless blocks and events agree (see the module docstring); the number of events."""
    headers: dict[int, Header] = {}
    for n, blk in sorted(trail.blocks.items()):
        try:
            h = Header.decode(blk.header)
        except ProofError as exc:
            raise _Mismatch(f"block {n}: {exc}") from None
        if h.number != n or "0x" + h.hash.hex() != blk.hash:
            raise _Mismatch(f"block {n}: its header is that of block {h.number} with hash 0x{h.hash.hex()}, "
                            f"not {blk.hash}")
        if n - 1 in headers and h.parent_hash != headers[n - 1].hash:
            raise _Mismatch(f"block {n}'s parent hash is not the hash of block {n - 1}")
        headers[n] = h
    first, end = min(headers), max(headers)
    missing = next((n for n in range(first, end + 1) if n not in headers), None)
    if missing is not None:
        raise _Mismatch(f"the header of block {missing} is missing (blocks {first}..{end} must all be there)")
    if first > trail.deploy_block:
        raise _Mismatch(f"the headers start at block {first}, after the deploy block {trail.deploy_block}")
    events: dict[int, list[TrailEvent]] = {}
    previous = None
    for ev in trail.events:
        if previous is not None and (ev.block, ev.log_index) <= (previous.block, previous.log_index):
            raise _Mismatch(f"{_label(ev)} comes after {_label(previous)}: the events are not in chain order")
        previous = ev
        if not first <= ev.block <= end:
            raise _Mismatch(f"{_label(ev)} lies outside the trail's blocks {first}..{end}")
        events.setdefault(ev.block, []).append(ev)
    try:
        decoder = LogDecoder(trail.addresses)
    except (FedchainError, ValueError) as exc:
        raise _Mismatch(f"the trail's contract addresses cannot be read: {exc}") from None
    contracts = decoder.addresses
    count = 0
    for n in range(first, end + 1):
        h, mine = headers[n], events.get(n, [])
        for ev in mine:
            if ev.block_hash != "0x" + h.hash.hex():
                raise _Mismatch(f"{_label(ev)} names block hash {ev.block_hash}, but block {n}'s is 0x{h.hash.hex()}")
            if ev.timestamp != h.timestamp:
                raise _Mismatch(f"{_label(ev)} has time {ev.timestamp}, but block {n} was made at {h.timestamp}")
        if not any(bloom_contains(h.bloom, a) for a in contracts):
            if mine:
                raise _Mismatch(f"{_label(mine[0])}: block {n}'s bloom holds no log of the contracts")
            continue
        receipts = trail.blocks[n].receipts
        if receipts is None:
            raise _Mismatch(f"block {n}'s bloom may hold the contracts' logs, but the trail has no receipts for it")
        chain_logs = _contract_logs(n, h, receipts, decoder)
        for i in range(max(len(chain_logs), len(mine))):
            if i >= len(mine):
                c = chain_logs[i]
                raise _Mismatch(f"the chain's {c['contract']}.{c['event']} at block {n}, log {c['log_index']} is "
                                f"missing from the trail (args {json.dumps(c['args'], sort_keys=True)[:200]})")
            ev = mine[i]
            if i >= len(chain_logs):
                raise _Mismatch(f"{_label(ev)} is not in block {n}'s receipts")
            c = chain_logs[i]
            for key, got in (("log_index", ev.log_index), ("contract", ev.contract), ("event", ev.event),
                             ("args", _norm(ev.args)), ("gas_used", ev.gas_used)):
                if got != c[key]:
                    raise _Mismatch(f"{_label(ev)}: its {key} in the trail is not the chain's "
                                    f"({json.dumps(got, sort_keys=True)[:120]} vs "
                                    f"{json.dumps(c[key], sort_keys=True)[:120]})")
            count += 1
    return count


def _contract_logs(n: int, header: Header, receipts, decoder: LogDecoder) -> list[dict]:
    """The contracts' logs of block ``n`` from its receipts (checked against the header's receipts root)."""
    try:
        if receipts_root(receipts) != header.receipts_root:
            raise _Mismatch(f"block {n}'s receipts do not hash to its receipts root")
        decoded = [decode_receipt(r) for r in receipts]
    except ProofError as exc:
        raise _Mismatch(f"block {n}'s receipts: {exc}") from None
    out, index, previous_gas = [], 0, 0
    for r in decoded:
        gas = r.cumulative_gas - previous_gas
        previous_gas = r.cumulative_gas
        for log in r.logs:
            try:
                found = decoder.decode(log)
            except ChainError as exc:
                raise _Mismatch(f"block {n}, log {index}: {exc}") from None
            if found is not None:
                contract, event, args = found
                out.append({"log_index": index, "contract": contract, "event": event, "args": _norm(args),
                            "gas_used": gas})
            index += 1
    return out


# --------------------------------------------------------------------------- online


def connect(url: str) -> Chain:
    """A read-only connection to the node at ``url`` (``http(s)://``)."""
    return Chain.connect(url)


def check_online(trail: Trail, chain: Chain) -> AnchorVerdict:
    """Compare every event of the trail with the node's, over the blocks the trail covers."""
    try:
        return _check_online(trail, chain)
    except _Mismatch as exc:
        return AnchorVerdict(DISCREPANCY, f"the trail is not the chain's: {exc}")


def _check_online(trail: Trail, chain: Chain) -> AnchorVerdict:
    if chain.chain_id != trail.chain_id:
        raise _Mismatch(f"it is of chain {trail.chain_id}, the node at {chain.url} serves chain {chain.chain_id}")
    head = chain.block_number
    ends = [b for b in (trail.end_block, max((e.block for e in trail.events), default=None)) if b is not None]
    end = max(ends, default=trail.deploy_block)
    if end > head:
        raise _Mismatch(f"it covers blocks up to {end}, but the node's chain ends at block {head}")
    deployment = Deployment(chain_id=trail.chain_id, addresses=trail.addresses, deploy_block=trail.deploy_block,
                            params=dict(trail.header.get("params") or {}))
    fed = chain.attach(deployment)
    node = {(e.block, e.log_index): e for e in chain_events(fed, trail.deploy_block, end)}
    anchored_format = trail.header.get("format") == TRAIL_FORMAT
    mine = trail.events
    position: dict[tuple[int, int], int] = {}
    for i, ev in enumerate(mine):
        if position.setdefault((ev.block, ev.log_index), i) != i:
            raise _Mismatch(f"{_label(ev)} appears twice in the trail")
    for key in sorted(set(node) | set(position)):
        if key not in position:
            raise _Mismatch(f"the node's {_label(node[key])} is missing from the trail")
        a = mine[position[key]]
        b = node.get(key)
        if b is None:
            raise _Mismatch(f"{_label(a)} is not among the node's events")
        for field in ("block_hash", "tx", "contract", "event", "args", "timestamp", "gas_used"):
            if field == "block_hash" and not a.block_hash and not anchored_format:
                continue  # a format-1 trail names no block hashes
            got, want = getattr(a, field), getattr(b, field)
            if field == "args":
                got, want = _norm(got), _norm(want)
            elif field in ("block_hash", "tx"):
                got, want = str(got).lower(), str(want).lower()
            if got != want:
                raise _Mismatch(f"{_label(a)} (event {position[key] + 1} of the trail): its {field} is not the "
                                f"node's ({json.dumps(got, sort_keys=True)[:120]} vs "
                                f"{json.dumps(want, sort_keys=True)[:120]})")
    order = [(e.block, e.log_index) for e in mine]
    if order != sorted(order):
        raise _Mismatch("its events are not in chain order")
    for to_block, block_hash in trail.checkpoints:
        if block_hash and block_hash != chain.block_hash(to_block).lower():
            raise _Mismatch(f"its checkpoint names block {to_block} with hash {block_hash}, the node's is "
                            f"{chain.block_hash(to_block).lower()}")
    event_blocks = {e.block for e in mine}
    for n, blk in sorted(trail.blocks.items()):
        if n in event_blocks and blk.hash != chain.block_hash(n).lower():
            raise _Mismatch(f"its header of block {n} has hash {blk.hash}, the node's is {chain.block_hash(n).lower()}")
    later = f"; the node's chain goes on to block {head}" if head > end else ""
    return AnchorVerdict(ANCHORED, f"all {len(mine)} event(s) match the node at {chain.url} through block {end}"
                                   f"{later} (contracts {_addresses(trail)})")
