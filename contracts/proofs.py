"""Ethereum block headers and receipts as bytes: what ties an exported event to the chain, offline.

A block's hash is ``keccak256(rlp(header))``; the header holds its parent's hash,
its number and timestamp, the root of the Merkle-Patricia trie of the block's
transaction receipts (``receiptsRoot``) and a 2048-bit bloom filter of every log
address and topic in the block (``logsBloom``). So, given a trusted block hash
(a *checkpoint*), a chain of raw headers back from it is authentic if each hashes
to the next one's parent hash, and a block's raw receipts are authentic if their
trie root is the header's ``receiptsRoot`` -- and each receipt lists the block's
logs in order (address, topics, data), which is exactly what the contracts emitted.

Why the receipts root and not a log commitment of our own: it is the chain's
own consensus commitment to the logs, checked by every node, so an auditor
needs to trust nothing but the one block hash it obtains independently. The
bloom closes the remaining gap: it has no false negatives, so a block whose bloom
does not contain a contract's address certainly holds no log of that contract,
and a block whose bloom does must come with its receipts. Together they prove a
trail holds *every* event of the contracts up to the checkpoint, not just
authentic ones.

Pure functions over bytes (``rlp``, ``trie``, pycryptodome's keccak); no web3.
Everything here raises :class:`ProofError` (a :class:`~fedchain.errors.FedchainError`)
on malformed input, never a library exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import rlp
from Crypto.Hash import keccak as _keccak
from trie import HexaryTrie

from fedchain.errors import FedchainError

__all__ = [
    "HEADER_FIELDS",
    "Header",
    "ProofError",
    "RawLog",
    "Receipt",
    "bloom_contains",
    "bloom_of",
    "decode_receipt",
    "encode_header",
    "encode_receipt",
    "keccak",
    "receipts_root",
]

#: Header fields in RLP order, as JSON-RPC names them; the optional tail grows by fork
#: (London: base fee; Shanghai: withdrawals; Cancun: blob gas, beacon root; Prague: requests).
HEADER_FIELDS = (
    "parentHash", "sha3Uncles", "miner", "stateRoot", "transactionsRoot", "receiptsRoot", "logsBloom",
    "difficulty", "number", "gasLimit", "gasUsed", "timestamp", "extraData", "mixHash", "nonce",
    "baseFeePerGas", "withdrawalsRoot", "blobGasUsed", "excessBlobGas", "parentBeaconBlockRoot", "requestsHash",
)
_INT_FIELDS = {"difficulty", "number", "gasLimit", "gasUsed", "timestamp", "baseFeePerGas", "blobGasUsed",
               "excessBlobGas"}
_BLOOM_BYTES = 256
#: The most receipts (transactions) one block may carry here (a 30M-gas block holds < 1,500).
MAX_RECEIPTS = 10_000


class ProofError(FedchainError):
    """A raw header or receipt is malformed, or does not prove what it is said to."""


def keccak(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's hash) of ``data``."""
    h = _keccak.new(digest_bits=256)
    h.update(bytes(data))
    return h.digest()


# --------------------------------------------------------------------------- bloom


def _bloom_bits(item: bytes) -> tuple[int, int, int]:
    h = keccak(item)
    return tuple(((h[i] << 8) | h[i + 1]) & 2047 for i in (0, 2, 4))  # type: ignore[return-value]


def bloom_of(logs: Sequence["RawLog"]) -> bytes:
    """The 256-byte bloom of ``logs`` (every log's address and topics), as in a receipt or header."""
    value = 0
    for log in logs:
        for item in (log.address, *log.topics):
            for bit in _bloom_bits(item):
                value |= 1 << bit
    return value.to_bytes(_BLOOM_BYTES, "big")


def bloom_contains(bloom: bytes, item: bytes) -> bool:
    """False only if ``item`` (an address or topic) is certainly not in the bloom (no false negatives)."""
    if len(bloom) != _BLOOM_BYTES:
        raise ProofError(f"a bloom is {_BLOOM_BYTES} bytes, not {len(bloom)}")
    value = int.from_bytes(bloom, "big")
    return all(value >> bit & 1 for bit in _bloom_bits(item))


# --------------------------------------------------------------------------- headers


def _field_bytes(name: str, value: object) -> bytes | int:
    if isinstance(value, bool):
        raise ProofError(f"header field {name} is a boolean")
    if name in _INT_FIELDS:
        if isinstance(value, str):
            value = int(value, 16)
        if not isinstance(value, int) or value < 0:
            raise ProofError(f"header field {name} is not a non-negative integer")
        return value
    if isinstance(value, int):  # some nodes give the bloom as a number
        if name != "logsBloom":
            raise ProofError(f"header field {name} is a number, not bytes")
        return value.to_bytes(_BLOOM_BYTES, "big")
    if isinstance(value, str):
        value = bytes.fromhex(value.removeprefix("0x"))
    out = bytes(value)  # type: ignore[arg-type]
    return out.rjust(_BLOOM_BYTES, b"\0") if name == "logsBloom" else out


def encode_header(block: dict) -> bytes:
    """RLP of a block header from a JSON-RPC block (the fields present, in fork order)."""
    try:
        return rlp.encode([_field_bytes(f, block[f]) for f in HEADER_FIELDS if f in block and block[f] is not None])
    except (ValueError, TypeError) as exc:
        raise ProofError(f"cannot encode the header: {exc}") from None


@dataclass(frozen=True)
class Header:
    """The parts of a raw header the audit reads, and its hash."""

    raw: bytes
    hash: bytes
    parent_hash: bytes
    receipts_root: bytes
    bloom: bytes
    number: int
    timestamp: int

    @classmethod
    def decode(cls, raw: bytes) -> "Header":
        """Parse a raw (RLP) header; :class:`ProofError` unless it is a list of at least 15 byte strings."""
        try:
            fields = rlp.decode(bytes(raw))
        except (rlp.exceptions.DecodingError, rlp.exceptions.DeserializationError, ValueError, TypeError) as exc:
            raise ProofError(f"a block header is not RLP ({type(exc).__name__})") from None
        if not isinstance(fields, list) or len(fields) < 15 or not all(isinstance(f, bytes) for f in fields):
            raise ProofError("a block header is not a list of at least 15 byte strings")
        if len(fields[0]) != 32 or len(fields[5]) != 32 or len(fields[6]) != _BLOOM_BYTES:
            raise ProofError("a block header's parent hash, receipts root or bloom has the wrong length")
        if len(fields[8]) > 8 or len(fields[11]) > 8:
            raise ProofError("a block header's number or timestamp is too large")
        return cls(raw=bytes(raw), hash=keccak(raw), parent_hash=fields[0], receipts_root=fields[5],
                   bloom=fields[6], number=int.from_bytes(fields[8], "big"),
                   timestamp=int.from_bytes(fields[11], "big"))


# --------------------------------------------------------------------------- receipts


@dataclass(frozen=True)
class RawLog:
    """One log as the chain stores it."""

    address: bytes  # 20 bytes
    topics: tuple[bytes, ...]  # 32 bytes each
    data: bytes


@dataclass(frozen=True)
class Receipt:
    """A transaction receipt as committed in ``receiptsRoot`` (EIP-2718 typed or legacy)."""

    type: int
    status: int
    cumulative_gas: int
    logs: tuple[RawLog, ...]


def encode_receipt(receipt: Receipt) -> bytes:
    """The consensus encoding of a receipt: ``type || rlp([status, cumulativeGas, bloom, logs])`` (no type byte for legacy)."""
    logs = [[log.address, list(log.topics), log.data] for log in receipt.logs]
    body = rlp.encode([receipt.status, receipt.cumulative_gas, bloom_of(receipt.logs), logs])
    return body if receipt.type == 0 else bytes([receipt.type]) + body


def decode_receipt(raw: bytes) -> Receipt:
    """Parse :func:`encode_receipt`'s bytes; the bloom must be the logs' own."""
    raw = bytes(raw)
    if not raw:
        raise ProofError("an empty receipt")
    kind, body = (raw[0], raw[1:]) if raw[0] < 0x80 else (0, raw)
    try:
        fields = rlp.decode(body)
    except (rlp.exceptions.DecodingError, rlp.exceptions.DeserializationError, ValueError, TypeError) as exc:
        raise ProofError(f"a receipt is not RLP ({type(exc).__name__})") from None
    if not (isinstance(fields, list) and len(fields) == 4 and all(isinstance(f, bytes) for f in fields[:3])
            and isinstance(fields[3], list)):
        raise ProofError("a receipt is not [status, cumulative gas, bloom, logs]")
    logs = []
    for entry in fields[3]:
        if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], bytes) and len(entry[0]) == 20
                and isinstance(entry[1], list) and len(entry[1]) <= 4
                and all(isinstance(t, bytes) and len(t) == 32 for t in entry[1]) and isinstance(entry[2], bytes)):
            raise ProofError("a receipt's log is not [address, topics, data]")
        logs.append(RawLog(entry[0], tuple(entry[1]), entry[2]))
    if len(fields[1]) > 8 or len(fields[0]) > 1:
        raise ProofError("a receipt's status or cumulative gas is out of range")
    out = Receipt(kind, int.from_bytes(fields[0], "big"), int.from_bytes(fields[1], "big"), tuple(logs))
    if fields[2] != bloom_of(out.logs):
        raise ProofError("a receipt's bloom is not the bloom of its logs")
    return out


def receipts_root(raw_receipts: Sequence[bytes]) -> bytes:
    """The root of the trie ``rlp(index) -> receipt`` (a header's ``receiptsRoot``)."""
    if len(raw_receipts) > MAX_RECEIPTS:
        raise ProofError(f"more than {MAX_RECEIPTS} receipts in one block")
    t = HexaryTrie({})
    for i, raw in enumerate(raw_receipts):
        t[rlp.encode(i)] = bytes(raw)
    return t.root_hash
