"""Canonical, versioned byte encodings of every secure-aggregation message.

No pickle, no JSON: fixed binary layouts, big-endian integers, lists sorted
strictly by id, so one message has exactly one encoding and one SHA-256 (what
the lead pins to the store and puts on chain).  :func:`decode_message` checks
every size against the bytes actually present and against fixed bounds
(:data:`~fedchain.secagg.config.MAX_CLIENTS` entries,
:data:`~fedchain.secagg.config.MAX_VECTOR_LENGTH` coordinates) before
allocating anything, and raises :class:`SecAggFormatError` (or
:class:`SecAggVersionError`) for anything else, including trailing bytes.
Whether a well-formed message fits the round (its digest, sender, recipient
sets) is checked by the client and server code, which raise
:class:`SecAggProtocolError`.

Common header (38 bytes)::

    magic "FCSA" (4) | version 1 (1) | type (1) | config digest (32)

Bodies (``u16`` ids are client ids ``1..n``):

=====  ==================  ==========================================================
type   message             body
=====  ==================  ==========================================================
1      AdvertiseKeys       sender u16 | channel public key (32) | mask public key (32)
2      ShareKeys           sender u16 | self-mask commitment (32) | count u16 |
                           count x (recipient u16 | ciphertext 86), recipients ascending
3      MaskedInput         sender u16 | ring_bits u8 | length u32 |
                           length x ring element (little-endian u32 / u64)
4      UnmaskRequest       count u16 | survivor ids (u16 each, ascending) |
                           count u16 | dropped ids (ascending)
5      UnmaskResponse      sender u16 | request SHA-256 (32) | count u16 |
                           count x (owner u16 | kind u8 | x-coordinate u16 | share 32),
                           owners ascending; kind 1 = self-mask share, 2 = mask-key share
=====  ==================  ==========================================================

(Type 0 is the round config itself, :class:`~fedchain.secagg.config.SecAggConfig`.)

An encrypted share (ciphertext 86 bytes) is AES-256-GCM of the 70-byte
plaintext ``dealer u16 | recipient u16 | x-coordinate u16 | self-mask share 32
| mask-key share 32``, with associated data ``"FCSA" | version | 2 | digest |
dealer u16 | recipient u16`` (see :mod:`fedchain.secagg.crypto`).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from typing import Union

import numpy as np

from fedchain.secagg.config import MAGIC, MAX_CLIENTS, MAX_VECTOR_LENGTH, RING_BITS, VERSION, ring_dtype
from fedchain.secagg.crypto import SHARE_SIZE
from fedchain.secagg.errors import SecAggFormatError, SecAggVersionError

__all__ = [
    "TYPE_ADVERTISE",
    "TYPE_SHARES",
    "TYPE_MASKED",
    "TYPE_REQUEST",
    "TYPE_RESPONSE",
    "KIND_SELF_MASK",
    "KIND_MASK_KEY",
    "HEADER_SIZE",
    "SHARE_PLAINTEXT_SIZE",
    "SHARE_CIPHERTEXT_SIZE",
    "AdvertiseKeys",
    "EncryptedShare",
    "ShareKeys",
    "MaskedInput",
    "UnmaskRequest",
    "RevealedShare",
    "UnmaskResponse",
    "Message",
    "decode_message",
    "share_ad",
    "max_message_size",
]

TYPE_ADVERTISE = 1
TYPE_SHARES = 2
TYPE_MASKED = 3
TYPE_REQUEST = 4
TYPE_RESPONSE = 5
KIND_SELF_MASK = 1
KIND_MASK_KEY = 2
_HEADER = struct.Struct(">4sBB32s")
HEADER_SIZE = _HEADER.size
SHARE_PLAINTEXT_SIZE = 6 + 2 * SHARE_SIZE
SHARE_CIPHERTEXT_SIZE = SHARE_PLAINTEXT_SIZE + 16
_SHARE_ENTRY = 2 + SHARE_CIPHERTEXT_SIZE
_REVEAL_ENTRY = struct.Struct(">HBH32s")


def _check_id(i: object, what: str) -> None:
    if not isinstance(i, int) or isinstance(i, bool) or not 1 <= i <= MAX_CLIENTS:
        raise SecAggFormatError(f"{what} must be a client id in 1..{MAX_CLIENTS}, got {i!r}")


def _check_bytes(b: object, size: int, what: str) -> None:
    if not isinstance(b, bytes) or len(b) != size:
        raise SecAggFormatError(f"{what} must be {size} bytes")


def _check_ascending(ids: tuple[int, ...], what: str) -> None:
    if len(ids) > MAX_CLIENTS:
        raise SecAggFormatError(f"{what}: more than {MAX_CLIENTS} entries")
    for a, b in zip(ids, ids[1:]):
        if a >= b:
            raise SecAggFormatError(f"{what} must be strictly ascending (got {a} before {b})")


def _header(typ: int, digest: bytes) -> bytes:
    return _HEADER.pack(MAGIC, VERSION, typ, digest)


def share_ad(digest: bytes, dealer: int, recipient: int) -> bytes:
    """Associated data of the encrypted share from ``dealer`` to ``recipient``."""
    return _header(TYPE_SHARES, digest) + dealer.to_bytes(2, "big") + recipient.to_bytes(2, "big")


class _Base:
    config_digest: bytes

    def encode(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def digest(self) -> bytes:
        """SHA-256 of the canonical encoding."""
        return hashlib.sha256(self.encode()).digest()


@dataclass(frozen=True)
class AdvertiseKeys(_Base):
    """Phase 0, client -> all: the two fresh public keys of ``sender`` for this round."""

    config_digest: bytes
    sender: int
    channel_public: bytes
    mask_public: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.config_digest, 32, "config digest")
        _check_id(self.sender, "sender")
        _check_bytes(self.channel_public, 32, "channel public key")
        _check_bytes(self.mask_public, 32, "mask public key")

    def encode(self) -> bytes:
        return (_header(TYPE_ADVERTISE, self.config_digest) + self.sender.to_bytes(2, "big")
                + self.channel_public + self.mask_public)


@dataclass(frozen=True)
class EncryptedShare:
    """One holder's shares of one dealer's two secrets, encrypted to the holder."""

    recipient: int
    ciphertext: bytes

    def __post_init__(self) -> None:
        _check_id(self.recipient, "recipient")
        _check_bytes(self.ciphertext, SHARE_CIPHERTEXT_SIZE, "share ciphertext")


@dataclass(frozen=True)
class ShareKeys(_Base):
    """Phase 1, client -> holders (through the server): encrypted shares and the self-mask commitment."""

    config_digest: bytes
    sender: int
    self_mask_commitment: bytes
    shares: tuple[EncryptedShare, ...]

    def __post_init__(self) -> None:
        _check_bytes(self.config_digest, 32, "config digest")
        _check_id(self.sender, "sender")
        _check_bytes(self.self_mask_commitment, 32, "self-mask commitment")
        object.__setattr__(self, "shares", tuple(self.shares))
        if not all(isinstance(s, EncryptedShare) for s in self.shares):
            raise SecAggFormatError("shares must be EncryptedShare values")
        _check_ascending(tuple(s.recipient for s in self.shares), "share recipients")

    def for_recipient(self, recipient: int) -> EncryptedShare | None:
        for s in self.shares:
            if s.recipient == recipient:
                return s
        return None

    def encode(self) -> bytes:
        parts = [_header(TYPE_SHARES, self.config_digest), self.sender.to_bytes(2, "big"),
                 self.self_mask_commitment, len(self.shares).to_bytes(2, "big")]
        for s in self.shares:
            parts += [s.recipient.to_bytes(2, "big"), s.ciphertext]
        return b"".join(parts)


@dataclass(frozen=True, eq=True)
class MaskedInput(_Base):
    """Phase 2, client -> server: the masked, encoded model vector (ring elements, little-endian)."""

    config_digest: bytes
    sender: int
    ring_bits: int
    data: bytes

    def __post_init__(self) -> None:
        _check_bytes(self.config_digest, 32, "config digest")
        _check_id(self.sender, "sender")
        if self.ring_bits not in RING_BITS:
            raise SecAggFormatError(f"ring_bits must be one of {RING_BITS}, got {self.ring_bits!r}")
        if not isinstance(self.data, bytes):
            raise SecAggFormatError("masked data must be bytes")
        width = self.ring_bits // 8
        if len(self.data) % width or not 1 <= len(self.data) // width <= MAX_VECTOR_LENGTH:
            raise SecAggFormatError(f"masked data must hold 1..{MAX_VECTOR_LENGTH} elements of {width} bytes")

    @classmethod
    def from_vector(cls, config_digest: bytes, sender: int, ring_bits: int, vector: np.ndarray) -> "MaskedInput":
        return cls(config_digest, sender, ring_bits, np.ascontiguousarray(vector, dtype=ring_dtype(ring_bits)).tobytes())

    @property
    def length(self) -> int:
        return len(self.data) // (self.ring_bits // 8)

    @property
    def vector(self) -> np.ndarray:
        """The ring elements (a read-only view of :attr:`data`)."""
        return np.frombuffer(self.data, dtype=ring_dtype(self.ring_bits))

    def encode(self) -> bytes:
        return (_header(TYPE_MASKED, self.config_digest) + self.sender.to_bytes(2, "big")
                + bytes([self.ring_bits]) + self.length.to_bytes(4, "big") + self.data)

    def __repr__(self) -> str:
        return f"MaskedInput(sender={self.sender}, ring_bits={self.ring_bits}, length={self.length})"


@dataclass(frozen=True)
class UnmaskRequest(_Base):
    """Phase 3, server -> survivors: who sent a masked input (survivors) and who did not (dropped).

    Both lists are explicit so a client can refuse a request that names one
    client in both (which would reveal that client's input)."""

    config_digest: bytes
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]

    def __post_init__(self) -> None:
        _check_bytes(self.config_digest, 32, "config digest")
        for name in ("survivors", "dropped"):
            ids = tuple(getattr(self, name))
            object.__setattr__(self, name, ids)
            for i in ids:
                _check_id(i, name)
            _check_ascending(ids, name)

    def encode(self) -> bytes:
        parts = [_header(TYPE_REQUEST, self.config_digest), len(self.survivors).to_bytes(2, "big")]
        parts += [i.to_bytes(2, "big") for i in self.survivors]
        parts.append(len(self.dropped).to_bytes(2, "big"))
        parts += [i.to_bytes(2, "big") for i in self.dropped]
        return b"".join(parts)


@dataclass(frozen=True)
class RevealedShare:
    """A holder's share of ``owner``'s self-mask seed (kind 1) or mask private key (kind 2)."""

    owner: int
    kind: int
    index: int
    share: bytes

    def __post_init__(self) -> None:
        _check_id(self.owner, "share owner")
        if self.kind not in (KIND_SELF_MASK, KIND_MASK_KEY):
            raise SecAggFormatError(f"share kind must be {KIND_SELF_MASK} or {KIND_MASK_KEY}, got {self.kind!r}")
        _check_id(self.index, "share x-coordinate")
        _check_bytes(self.share, SHARE_SIZE, "share")


@dataclass(frozen=True)
class UnmaskResponse(_Base):
    """Phase 3, survivor -> server: the shares the request asked of ``sender``."""

    config_digest: bytes
    sender: int
    request_digest: bytes
    shares: tuple[RevealedShare, ...]

    def __post_init__(self) -> None:
        _check_bytes(self.config_digest, 32, "config digest")
        _check_id(self.sender, "sender")
        _check_bytes(self.request_digest, 32, "request digest")
        object.__setattr__(self, "shares", tuple(self.shares))
        if not all(isinstance(s, RevealedShare) for s in self.shares):
            raise SecAggFormatError("shares must be RevealedShare values")
        _check_ascending(tuple(s.owner for s in self.shares), "share owners")

    def encode(self) -> bytes:
        parts = [_header(TYPE_RESPONSE, self.config_digest), self.sender.to_bytes(2, "big"),
                 self.request_digest, len(self.shares).to_bytes(2, "big")]
        parts += [_REVEAL_ENTRY.pack(s.owner, s.kind, s.index, s.share) for s in self.shares]
        return b"".join(parts)


Message = Union[AdvertiseKeys, ShareKeys, MaskedInput, UnmaskRequest, UnmaskResponse]
_CLASSES = {TYPE_ADVERTISE: AdvertiseKeys, TYPE_SHARES: ShareKeys, TYPE_MASKED: MaskedInput,
            TYPE_REQUEST: UnmaskRequest, TYPE_RESPONSE: UnmaskResponse}


class _Reader:
    def __init__(self, data: bytes, pos: int):
        self.data, self.pos = data, pos

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise SecAggFormatError(f"truncated message: {what} needs {n} bytes, {len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def u16(self, what: str) -> int:
        return int.from_bytes(self.take(2, what), "big")

    def count(self, what: str, entry_size: int) -> int:
        c = self.u16(what)
        if c > MAX_CLIENTS:
            raise SecAggFormatError(f"{what}: {c} entries exceed the bound {MAX_CLIENTS}")
        if c * entry_size > len(self.data) - self.pos:
            raise SecAggFormatError(f"truncated message: {c} {what} do not fit")
        return c


def decode_message(data: bytes, expected: type | None = None) -> Message:
    """Parse any message (or only ``expected``'s type); :class:`SecAggFormatError` on anything malformed."""
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise SecAggFormatError(f"a message is at least {HEADER_SIZE} bytes, got {len(data)}")
    magic, version, typ, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise SecAggFormatError("not a secure-aggregation message (bad magic)")
    if version != VERSION:
        raise SecAggVersionError(f"message format version {version} is not supported (expected {VERSION})")
    cls = _CLASSES.get(typ)
    if cls is None:
        raise SecAggFormatError(f"unknown message type {typ}")
    if expected is not None and cls is not expected:
        raise SecAggFormatError(f"expected a {expected.__name__}, got a {cls.__name__}")
    r = _Reader(data, HEADER_SIZE)
    if cls is AdvertiseKeys:
        msg: Message = AdvertiseKeys(digest, r.u16("sender"), r.take(32, "channel key"), r.take(32, "mask key"))
    elif cls is ShareKeys:
        sender = r.u16("sender")
        commitment = r.take(32, "commitment")
        n = r.count("shares", _SHARE_ENTRY)
        shares = tuple(EncryptedShare(r.u16("recipient"), r.take(SHARE_CIPHERTEXT_SIZE, "ciphertext")) for _ in range(n))
        msg = ShareKeys(digest, sender, commitment, shares)
    elif cls is MaskedInput:
        sender = r.u16("sender")
        ring_bits = r.take(1, "ring bits")[0]
        if ring_bits not in RING_BITS:
            raise SecAggFormatError(f"ring_bits must be one of {RING_BITS}, got {ring_bits}")
        length = int.from_bytes(r.take(4, "length"), "big")
        if not 1 <= length <= MAX_VECTOR_LENGTH:
            raise SecAggFormatError(f"vector length {length} outside 1..{MAX_VECTOR_LENGTH}")
        msg = MaskedInput(digest, sender, ring_bits, r.take(length * (ring_bits // 8), "vector"))
    elif cls is UnmaskRequest:
        surv = tuple(r.u16("survivor") for _ in range(r.count("survivors", 2)))
        drop = tuple(r.u16("dropped") for _ in range(r.count("dropped", 2)))
        msg = UnmaskRequest(digest, surv, drop)
    else:
        sender = r.u16("sender")
        req = r.take(32, "request digest")
        n = r.count("revealed shares", _REVEAL_ENTRY.size)
        shares = []
        for _ in range(n):
            owner, kind, index, share = _REVEAL_ENTRY.unpack(r.take(_REVEAL_ENTRY.size, "revealed share"))
            shares.append(RevealedShare(owner, kind, index, share))
        msg = UnmaskResponse(digest, sender, req, tuple(shares))
    if r.pos != len(data):
        raise SecAggFormatError(f"{len(data) - r.pos} trailing bytes after a {cls.__name__}")
    return msg


def max_message_size(cls: type, n_clients: int, vector_length: int = MAX_VECTOR_LENGTH, ring_bits: int = 64) -> int:
    """Upper bound on the encoded size of a ``cls`` message in a round of ``n_clients``
    (so a reader can refuse larger blobs before fetching them)."""
    body = {
        AdvertiseKeys: 66,
        ShareKeys: 2 + 32 + 2 + n_clients * _SHARE_ENTRY,
        MaskedInput: 2 + 1 + 4 + vector_length * (ring_bits // 8),
        UnmaskRequest: 4 + 2 * n_clients,
        UnmaskResponse: 2 + 32 + 2 + n_clients * _REVEAL_ENTRY.size,
    }
    if cls not in body:
        raise TypeError(f"not a message class: {cls!r}")
    return HEADER_SIZE + body[cls]
