"""Encrypted, sender-authenticated, context-bound envelopes for updates and models.

A hospital seals its model update for one or more recipients (typically the
coordinator and an auditor); the envelope is pinned to IPFS and its sha256 is
committed on chain.  A recipient opens it with its own X25519 private key, the
sender's *registered* X25519 public key (read from the chain) and the
:class:`EnvelopeContext` it expects (chain, contract, proposal, round, sender
address).  Any disagreement is a named error; nothing is returned unless every
byte authenticated.

Cryptography
============

* X25519 key agreement, HKDF-SHA256, AES-256-GCM (``cryptography``).
* A fresh random 32-byte *content key* ``CK`` per envelope.
* For every recipient ``R`` a key-encryption key::

      KEK_R = HKDF-SHA256(ikm  = X25519(e, R) || X25519(s, R),
                          salt = none,
                          info = "fedchain/envelope/v1/kek" || E || S || R)

  where ``e``/``E`` is a fresh ephemeral key pair and ``s``/``S`` the sender's
  static key pair.  The static-static term authenticates the sender: only the
  holder of ``s`` (or of ``R``'s private key) can produce a wrap that ``R``
  accepts for sender key ``S``.  The ephemeral term gives every envelope a
  fresh KEK.
* ``wrap_R = AES-256-GCM(KEK_R, nonce = 12 zero bytes, CK, AD = preamble)``
  (the KEK is single-use, so a fixed nonce is safe).  The *preamble* is the
  header up to and including the recipient fingerprints: it contains the
  context, so the context is cryptographically bound, not merely labelled.
* The payload key is derived from the content key *and the whole header*::

      PK = HKDF-SHA256(CK, info = "fedchain/envelope/v1/payload" || SHA-256(header))

  so changing any header byte (context, length, recipients, wraps) makes every
  chunk fail.
* The payload is cut into chunks of ``chunk_size`` plaintext bytes (default
  1 MiB).  Chunk ``i`` is ``AES-256-GCM(PK, nonce_i, chunk_i, AD = flag)``
  with ``nonce_i = base_nonce XOR i`` (as 96-bit big-endian integers) and
  ``flag = 0x01`` for the final chunk, ``0x00`` otherwise (the STREAM
  construction).  Reordering, removing or duplicating chunks changes a nonce;
  cutting the stream at a chunk boundary leaves a last chunk without the final
  flag; both fail authentication.

Binary format (version 1, all integers big-endian)
==================================================

======  ========  ===========================================================
offset  size      field
======  ========  ===========================================================
0       4         magic ``b"FCEV"``
4       1         format version (``1``; anything else: EnvelopeVersionError)
5       4         header length in bytes (whole header, from offset 0)
9       136       context: chain_id (u256, 32) | contract (20) |
                  proposal_id (u256, 32) | round (u256, 32) | sender (20)
145     4         chunk_size (plaintext bytes per chunk, 4 KiB .. 64 MiB)
149     8         payload length in bytes (``2**64-1`` = not known in advance)
157     12        base nonce (random)
169     32        ephemeral X25519 public key ``E``
201     32        sender static X25519 public key ``S``
233     2         number of recipients ``n`` (1 .. 1024)
235     8*n       recipient fingerprints (:func:`fingerprint`)
235+8n  48*n      wrapped content keys, same order (32-byte key + 16-byte tag)
======  ========  ===========================================================

The body follows the header: the chunk ciphertexts back to back, each
``len(chunk) + 16`` bytes.  Every chunk except the last holds exactly
``chunk_size`` plaintext bytes; the last holds 1..``chunk_size`` bytes (0 only
for an empty payload, which is a single empty final chunk).

API
===

``seal(payload, ctx, sender_key, recipients) -> bytes`` and
``seal_stream(src, dst, ...)`` encrypt; ``open_(blob_or_file, ctx,
recipient_key, sender_public) -> bytes`` (alias ``unseal``) and
``open_stream(src, dst, ...)`` decrypt; ``read_header`` inspects without keys.
Checks on opening run in this order: format/version, context
(:class:`EnvelopeContextMismatch` names each differing field), sender key
(:class:`EnvelopeSenderMismatch`), recipient (:class:`EnvelopeNotForRecipient`),
key wrap (:class:`EnvelopeAuthenticationError`), then every chunk
(:class:`EnvelopeCorrupt`, :class:`EnvelopeTruncated`).

Limitations
===========

* With several recipients, every recipient learns the content key, so a
  malicious recipient could re-encrypt *different* chunks under the same header
  for another recipient.  In fedchain the sender's on-chain transaction commits
  the sha256 of the exact blob (checked by :mod:`fedchain.content` before
  decryption), which closes that gap; do not rely on the envelope alone to
  authenticate content between mutually distrusting co-recipients.
* :func:`open_stream` writes each chunk to ``dst`` as soon as that chunk has
  authenticated; if a later chunk fails, ``dst`` holds a verified *prefix*.
  Callers that must not see partial output (see :mod:`fedchain.content`) write
  to a temporary file and discard it on error.  :func:`open_` (bytes) returns
  nothing unless everything verified.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
from dataclasses import dataclass, fields
from typing import BinaryIO, Sequence, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedchain.errors import FedchainError

__all__ = [
    "MAGIC",
    "VERSION",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_RECIPIENTS",
    "UNKNOWN_LENGTH",
    "EnvelopeContext",
    "EnvelopeHeader",
    "EnvelopeError",
    "EnvelopeFormatError",
    "EnvelopeVersionError",
    "EnvelopeCorrupt",
    "EnvelopeTruncated",
    "EnvelopeAuthenticationError",
    "EnvelopeContextMismatch",
    "EnvelopeSenderMismatch",
    "EnvelopeNotForRecipient",
    "InvalidContext",
    "fingerprint",
    "public_bytes",
    "seal",
    "seal_stream",
    "open_",
    "unseal",
    "open_stream",
    "read_header",
    "sealed_size",
]

MAGIC = b"FCEV"
VERSION = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
MAX_RECIPIENTS = 1024
UNKNOWN_LENGTH = (1 << 64) - 1

_TAG = 16
_KEY = 32
_WRAP = _KEY + _TAG
_FP = 8
_CTX_LEN = 32 + 20 + 32 + 32 + 20
_FIXED = 4 + 1 + 4 + _CTX_LEN + 4 + 8 + 12 + 32 + 32 + 2  # == 235
_AD_MORE = b"\x00"
_AD_LAST = b"\x01"
_KEK_INFO = b"fedchain/envelope/v1/kek"
_PAYLOAD_INFO = b"fedchain/envelope/v1/payload"
_FP_DOMAIN = b"fedchain/x25519-fingerprint/v1"
_ZERO_NONCE = bytes(12)
_U256 = 1 << 256


# --------------------------------------------------------------------------- errors


class EnvelopeError(FedchainError):
    """Base class for envelope failures."""


class EnvelopeFormatError(EnvelopeError):
    """The bytes are not a well-formed fedchain envelope (bad magic, bad header)."""


class EnvelopeVersionError(EnvelopeFormatError):
    """The envelope declares a format version this code does not understand."""


class EnvelopeCorrupt(EnvelopeError):
    """The envelope failed authentication: it was modified or damaged."""


class EnvelopeTruncated(EnvelopeCorrupt):
    """The envelope ends before its final chunk."""


class EnvelopeAuthenticationError(EnvelopeCorrupt):
    """The recipient's key wrap did not authenticate.

    The header was altered (context, recipients, ...) or the envelope was not
    sealed by the holder of the claimed sender key.
    """


class EnvelopeContextMismatch(EnvelopeError):
    """The envelope was sealed for another context (chain, contract, proposal, round, sender)."""

    def __init__(self, message: str, differences: Sequence[str] = ()):
        super().__init__(message)
        self.differences = tuple(differences)


class EnvelopeSenderMismatch(EnvelopeContextMismatch):
    """The envelope names a different sender key than the one expected."""


class EnvelopeNotForRecipient(EnvelopeError):
    """The given private key is not among the envelope's recipients."""


class InvalidContext(EnvelopeError, ValueError):
    """An :class:`EnvelopeContext` field is out of range or malformed."""


# --------------------------------------------------------------------------- context

_ADDR_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")


def _norm_address(field_name: str, value: object) -> str:
    if isinstance(value, (bytes, bytearray)) and len(value) == 20:
        value = "0x" + bytes(value).hex()
    if not isinstance(value, str) or not _ADDR_RE.match(value):
        raise InvalidContext(f"{field_name} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    from eth_utils import is_checksum_address, to_checksum_address

    body = value[2:]
    if body != body.lower() and body != body.upper() and not is_checksum_address(value):
        raise InvalidContext(f"{field_name} {value} has an invalid EIP-55 checksum")
    return to_checksum_address(value)


def _norm_uint(field_name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < _U256:
        raise InvalidContext(f"{field_name} must be an integer in [0, 2**256), got {value!r}")
    return value


@dataclass(frozen=True)
class EnvelopeContext:
    """What an envelope is *for*; bound into the ciphertext.

    Addresses are normalised to their EIP-55 checksum form, so comparisons are
    case-insensitive.
    """

    chain_id: int
    contract: str
    proposal_id: int
    round: int
    sender: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "chain_id", _norm_uint("chain_id", self.chain_id))
        object.__setattr__(self, "contract", _norm_address("contract", self.contract))
        object.__setattr__(self, "proposal_id", _norm_uint("proposal_id", self.proposal_id))
        object.__setattr__(self, "round", _norm_uint("round", self.round))
        object.__setattr__(self, "sender", _norm_address("sender", self.sender))

    def to_bytes(self) -> bytes:
        """The fixed 136-byte encoding used in the header."""
        return b"".join(
            (
                self.chain_id.to_bytes(32, "big"),
                bytes.fromhex(self.contract[2:]),
                self.proposal_id.to_bytes(32, "big"),
                self.round.to_bytes(32, "big"),
                bytes.fromhex(self.sender[2:]),
            )
        )

    @classmethod
    def from_bytes(cls, b: bytes) -> "EnvelopeContext":
        if len(b) != _CTX_LEN:
            raise EnvelopeFormatError(f"context must be {_CTX_LEN} bytes, got {len(b)}")
        return cls(
            chain_id=int.from_bytes(b[0:32], "big"),
            contract="0x" + b[32:52].hex(),
            proposal_id=int.from_bytes(b[52:84], "big"),
            round=int.from_bytes(b[84:116], "big"),
            sender="0x" + b[116:136].hex(),
        )

    def differences(self, expected: "EnvelopeContext") -> list[str]:
        """Human-readable ``field: envelope X, expected Y`` for every differing field."""
        out = []
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(expected, f.name)
            if mine != theirs:
                out.append(f"{f.name}: envelope has {mine}, expected {theirs}")
        return out


# --------------------------------------------------------------------------- keys

KeyLike = Union[bytes, bytearray, X25519PublicKey]


def public_bytes(key: KeyLike | X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 public key from a public key, private key or raw bytes."""
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    if isinstance(key, X25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise TypeError(f"expected a 32-byte X25519 public key, got {type(key).__name__} {key!r:.80}")


def _private(key: X25519PrivateKey | bytes) -> X25519PrivateKey:
    if isinstance(key, X25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return X25519PrivateKey.from_private_bytes(bytes(key))
    raise TypeError("expected an X25519PrivateKey or 32 raw private-key bytes")


def fingerprint(public_key: KeyLike | X25519PrivateKey) -> bytes:
    """8-byte fingerprint identifying a recipient: SHA-256(domain || pub)[:8]."""
    return hashlib.sha256(_FP_DOMAIN + public_bytes(public_key)).digest()[:_FP]


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=None, info=info).derive(ikm)


def _kek(dh_eph: bytes, dh_static: bytes, eph_pub: bytes, sender_pub: bytes, recip_pub: bytes) -> bytes:
    return _hkdf(dh_eph + dh_static, _KEK_INFO + eph_pub + sender_pub + recip_pub)


def _exchange(priv: X25519PrivateKey, pub: bytes, what: str) -> bytes:
    try:
        return priv.exchange(X25519PublicKey.from_public_bytes(pub))
    except ValueError as exc:  # low-order point -> all-zero shared secret
        raise EnvelopeAuthenticationError(f"key agreement with the {what} key failed: {exc}") from None


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class EnvelopeHeader:
    """A parsed (not yet authenticated) envelope header."""

    version: int
    context: EnvelopeContext
    chunk_size: int
    length: int | None  # payload length, None when unknown at sealing time
    base_nonce: bytes
    ephemeral_public: bytes
    sender_public: bytes
    recipients: tuple[bytes, ...]  # fingerprints
    wraps: tuple[bytes, ...]
    raw: bytes  # exact header bytes

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def preamble(self) -> bytes:
        return self.raw[: _FIXED + _FP * len(self.recipients)]

    @property
    def sender_fingerprint(self) -> bytes:
        return fingerprint(self.sender_public)

    def n_chunks(self) -> int | None:
        if self.length is None:
            return None
        return max(1, -(-self.length // self.chunk_size))

    def body_size(self) -> int | None:
        n = self.n_chunks()
        return None if n is None else self.length + n * _TAG


def _header_len(n_recipients: int) -> int:
    return _FIXED + n_recipients * (_FP + _WRAP)


def _parse_header(raw_fixed: bytes, rest: bytes) -> EnvelopeHeader:
    raw = raw_fixed + rest
    ctx = EnvelopeContext.from_bytes(raw[9 : 9 + _CTX_LEN])
    o = 9 + _CTX_LEN
    chunk_size = int.from_bytes(raw[o : o + 4], "big")
    length = int.from_bytes(raw[o + 4 : o + 12], "big")
    base_nonce = raw[o + 12 : o + 24]
    eph = raw[o + 24 : o + 56]
    sender = raw[o + 56 : o + 88]
    n = int.from_bytes(raw[o + 88 : o + 90], "big")
    fps_start = _FIXED
    wraps_start = fps_start + n * _FP
    fps = tuple(raw[fps_start + i * _FP : fps_start + (i + 1) * _FP] for i in range(n))
    wraps = tuple(raw[wraps_start + i * _WRAP : wraps_start + (i + 1) * _WRAP] for i in range(n))
    return EnvelopeHeader(
        version=raw[4],
        context=ctx,
        chunk_size=chunk_size,
        length=None if length == UNKNOWN_LENGTH else length,
        base_nonce=base_nonce,
        ephemeral_public=eph,
        sender_public=sender,
        recipients=fps,
        wraps=wraps,
        raw=raw,
    )


def _read_exact(src: BinaryIO, buf: memoryview) -> int:
    """Fill ``buf`` from ``src``; return the number of bytes read (< len only at EOF)."""
    n = len(buf)
    got = 0
    readinto = getattr(src, "readinto", None)
    while got < n:
        if readinto is not None:
            k = readinto(buf[got:])
        else:
            data = src.read(n - got)
            k = len(data) if data else 0
            buf[got : got + k] = data if k else b""
        if not k:
            break
        got += k
    return got


def _read_bytes(src: BinaryIO, n: int) -> bytes:
    buf = bytearray(n)
    got = _read_exact(src, memoryview(buf))
    return bytes(buf[:got])


def read_header(src: bytes | bytearray | memoryview | BinaryIO) -> EnvelopeHeader:
    """Parse (without authenticating) the header of an envelope.

    ``src`` is either the envelope bytes or a binary stream positioned at the
    envelope start (left positioned at the first body byte).
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = _HeaderSlice(memoryview(src).cast("B"))
    first = _read_bytes(src, 5)
    if len(first) < 5:
        if MAGIC.startswith(first[:4]) and first:
            raise EnvelopeTruncated(f"envelope header is truncated ({len(first)} bytes)")
        raise EnvelopeFormatError("not a fedchain envelope (too short)")
    if first[:4] != MAGIC:
        raise EnvelopeFormatError(f"not a fedchain envelope (magic {first[:4]!r}, expected {MAGIC!r})")
    if first[4] != VERSION:
        raise EnvelopeVersionError(
            f"unsupported envelope version {first[4]} (this fedchain reads version {VERSION}); "
            "upgrade fedchain or ask the sender to re-seal"
        )
    rest_fixed = _read_bytes(src, _FIXED - 5)
    if len(rest_fixed) < _FIXED - 5:
        raise EnvelopeTruncated(f"envelope header is truncated ({5 + len(rest_fixed)} of {_FIXED}+ bytes)")
    fixed = first + rest_fixed
    declared = int.from_bytes(fixed[5:9], "big")
    n = int.from_bytes(fixed[_FIXED - 2 : _FIXED], "big")
    if not 1 <= n <= MAX_RECIPIENTS:
        raise EnvelopeFormatError(f"envelope header declares {n} recipients (allowed 1..{MAX_RECIPIENTS})")
    if declared != _header_len(n):
        raise EnvelopeFormatError(
            f"envelope header length field is {declared}, but {n} recipients need {_header_len(n)}"
        )
    chunk_size = int.from_bytes(fixed[9 + _CTX_LEN : 13 + _CTX_LEN], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeFormatError(f"envelope chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    rest = _read_bytes(src, declared - _FIXED)
    if len(rest) < declared - _FIXED:
        raise EnvelopeTruncated(f"envelope header is truncated ({_FIXED + len(rest)} of {declared} bytes)")
    try:
        return _parse_header(fixed, rest)
    except InvalidContext as exc:  # cannot happen with fixed-width fields, kept for safety
        raise EnvelopeFormatError(f"malformed envelope context: {exc}") from None


def sealed_size(payload_length: int, n_recipients: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Size in bytes of the envelope for a payload of ``payload_length`` bytes."""
    n_chunks = max(1, -(-payload_length // chunk_size))
    return _header_len(n_recipients) + payload_length + n_chunks * _TAG


# --------------------------------------------------------------------------- sealing


class _Sealer:
    """Builds the header and the chunk cipher for one envelope."""

    def __init__(
        self,
        ctx: EnvelopeContext,
        sender_key: X25519PrivateKey | bytes,
        recipients: Sequence[KeyLike],
        chunk_size: int,
        length: int | None,
    ):
        if not isinstance(ctx, EnvelopeContext):
            raise TypeError("ctx must be an EnvelopeContext")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or not (
            MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE
        ):
            raise ValueError(f"chunk_size must be in {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
        if isinstance(recipients, (bytes, bytearray, X25519PublicKey)):
            raise TypeError("recipients must be a list of public keys, not a single key")
        pubs = [public_bytes(r) for r in recipients]
        if not 1 <= len(pubs) <= MAX_RECIPIENTS:
            raise ValueError(f"need 1..{MAX_RECIPIENTS} recipients, got {len(pubs)}")
        if len(set(pubs)) != len(pubs):
            raise ValueError("duplicate recipient public key")
        if length is not None and not 0 <= length < UNKNOWN_LENGTH:
            raise ValueError(f"invalid payload length {length!r}")
        sender = _private(sender_key)
        sender_pub = public_bytes(sender)
        eph = X25519PrivateKey.generate()
        eph_pub = public_bytes(eph)
        content_key = secrets.token_bytes(_KEY)
        self.base_nonce = secrets.token_bytes(12)
        fps = [fingerprint(p) for p in pubs]
        n = len(pubs)
        preamble = b"".join(
            (
                MAGIC,
                bytes([VERSION]),
                _header_len(n).to_bytes(4, "big"),
                ctx.to_bytes(),
                chunk_size.to_bytes(4, "big"),
                (UNKNOWN_LENGTH if length is None else length).to_bytes(8, "big"),
                self.base_nonce,
                eph_pub,
                sender_pub,
                n.to_bytes(2, "big"),
                *fps,
            )
        )
        wraps = []
        for pub in pubs:
            dh1 = _exchange(eph, pub, "recipient")
            dh2 = _exchange(sender, pub, "recipient")
            kek = _kek(dh1, dh2, eph_pub, sender_pub, pub)
            wraps.append(AESGCM(kek).encrypt(_ZERO_NONCE, content_key, preamble))
        self.header = preamble + b"".join(wraps)
        assert len(self.header) == _header_len(n)
        self.chunk_size = chunk_size
        self.aead = AESGCM(_hkdf(content_key, _PAYLOAD_INFO + hashlib.sha256(self.header).digest()))
        self._nonce_base = int.from_bytes(self.base_nonce, "big")

    def nonce(self, i: int) -> bytes:
        return (self._nonce_base ^ i).to_bytes(12, "big")


def seal(
    payload: bytes | bytearray | memoryview,
    ctx: EnvelopeContext,
    sender_key: X25519PrivateKey | bytes,
    recipients: Sequence[KeyLike],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Encrypt ``payload`` for ``recipients`` (X25519 public keys) and return the envelope."""
    mv = memoryview(payload).cast("B")
    length = len(mv)
    s = _Sealer(ctx, sender_key, recipients, chunk_size, length)
    n_chunks = max(1, -(-length // chunk_size))
    out, om = _output_buffer(len(s.header) + length + n_chunks * _TAG)
    om[: len(s.header)] = s.header
    o = len(s.header)
    enc = s.aead.encrypt_into
    for i in range(n_chunks):
        a = i * chunk_size
        b = min(a + chunk_size, length)
        k = b - a + _TAG
        enc(s.nonce(i), mv[a:b], _AD_LAST if i == n_chunks - 1 else _AD_MORE, om[o : o + k])
        o += k
    assert o == len(om)
    om.release()
    return out.getvalue()


def _output_buffer(size: int) -> tuple[io.BytesIO, memoryview]:
    """A writable view of ``size`` bytes whose content ``getvalue()`` returns as bytes.

    Writing through ``BytesIO.getbuffer()`` and calling ``getvalue()`` after the
    view is released avoids a second full-size copy (CPython hands back its
    internal bytes object); on other implementations it is merely a copy.
    """
    out = io.BytesIO()
    if size:
        out.seek(size - 1)
        out.write(b"\0")
    return out, out.getbuffer()


def _remaining_length(src: BinaryIO) -> int | None:
    try:
        if not src.seekable():
            return None
        cur = src.tell()
        end = src.seek(0, os.SEEK_END)
        src.seek(cur)
        return end - cur
    except (AttributeError, OSError, ValueError):
        return None


def seal_stream(
    src: BinaryIO,
    dst: BinaryIO,
    ctx: EnvelopeContext,
    sender_key: X25519PrivateKey | bytes,
    recipients: Sequence[KeyLike],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    length: int | None = None,
) -> int:
    """Encrypt the binary stream ``src`` into ``dst`` chunk by chunk; return bytes written.

    Memory use is about two chunks regardless of payload size.  The payload
    length is recorded in the header when known: pass ``length`` or use a
    seekable ``src`` (its remaining size is used).  A non-seekable source
    without ``length`` yields an envelope of unknown length (still fully
    protected against truncation by the final-chunk flag).
    """
    if length is None:
        length = _remaining_length(src)
    s = _Sealer(ctx, sender_key, recipients, chunk_size, length)
    dst.write(s.header)
    written = len(s.header)
    cs = chunk_size
    enc = s.aead.encrypt_into
    inbuf = bytearray(cs)
    outbuf = bytearray(cs + _TAG)
    im, om = memoryview(inbuf), memoryview(outbuf)

    if length is not None:
        n_chunks = max(1, -(-length // cs))
        for i in range(n_chunks):
            want = cs if i < n_chunks - 1 else length - cs * (n_chunks - 1)
            got = _read_exact(src, im[:want])
            if got != want:
                raise EnvelopeError(
                    f"source ended after {i * cs + got} bytes but {length} were declared"
                )
            enc(s.nonce(i), im[:want], _AD_LAST if i == n_chunks - 1 else _AD_MORE, om[: want + _TAG])
            dst.write(om[: want + _TAG])
            written += want + _TAG
        if _read_bytes(src, 1):
            raise EnvelopeError(f"source is longer than the declared {length} bytes")
        return written

    # Unknown length: read one chunk ahead to know which chunk is the last.
    nextbuf = bytearray(cs)
    nm = memoryview(nextbuf)
    got = _read_exact(src, im)
    i = 0
    while True:
        nxt = _read_exact(src, nm) if got == cs else 0
        last = nxt == 0
        enc(s.nonce(i), im[:got], _AD_LAST if last else _AD_MORE, om[: got + _TAG])
        dst.write(om[: got + _TAG])
        written += got + _TAG
        if last:
            return written
        im, nm = nm, im
        got = nxt
        i += 1


# --------------------------------------------------------------------------- opening


def _check_and_unwrap(
    hdr: EnvelopeHeader,
    ctx: EnvelopeContext,
    recipient_key: X25519PrivateKey | bytes,
    sender_public: KeyLike,
) -> AESGCM:
    """Verify context, sender and recipient; return the payload cipher."""
    if not isinstance(ctx, EnvelopeContext):
        raise TypeError("ctx must be an EnvelopeContext")
    diffs = hdr.context.differences(ctx)
    if diffs:
        raise EnvelopeContextMismatch(
            "envelope was sealed for a different context: " + "; ".join(diffs), diffs
        )
    sender_pub = public_bytes(sender_public)
    if hdr.sender_public != sender_pub:
        msg = (
            f"envelope was sealed by X25519 key {fingerprint(hdr.sender_public).hex()}, "
            f"expected the registered key {fingerprint(sender_pub).hex()} of {ctx.sender}"
        )
        raise EnvelopeSenderMismatch(msg, [msg])
    priv = _private(recipient_key)
    my_pub = public_bytes(priv)
    my_fp = fingerprint(my_pub)
    slots = [i for i, fp in enumerate(hdr.recipients) if fp == my_fp]
    if not slots:
        raise EnvelopeNotForRecipient(
            f"this key ({my_fp.hex()}) is not a recipient of the envelope "
            f"(recipients: {', '.join(fp.hex() for fp in hdr.recipients)})"
        )
    dh1 = _exchange(priv, hdr.ephemeral_public, "ephemeral")
    dh2 = _exchange(priv, sender_pub, "sender")
    kek = AESGCM(_kek(dh1, dh2, hdr.ephemeral_public, sender_pub, my_pub))
    preamble = hdr.preamble
    for i in slots:
        try:
            content_key = kek.decrypt(_ZERO_NONCE, hdr.wraps[i], preamble)
            break
        except InvalidTag:
            continue
    else:
        raise EnvelopeAuthenticationError(
            "the content key wrapped for this recipient failed authentication: the envelope header "
            f"(context, recipients, ...) was altered, or it was not sealed by the holder of sender key "
            f"{fingerprint(sender_pub).hex()}"
        )
    return AESGCM(_hkdf(content_key, _PAYLOAD_INFO + hashlib.sha256(hdr.raw).digest()))


def _nonce(base: int, i: int) -> bytes:
    return (base ^ i).to_bytes(12, "big")


def _diagnose(aead: AESGCM, nonce: bytes, ct: memoryview, tried_last: bool, i: int) -> EnvelopeCorrupt:
    """Classify a chunk that failed authentication by trying the other final-flag."""
    other = _AD_MORE if tried_last else _AD_LAST
    try:
        aead.decrypt(nonce, bytes(ct), other)
    except InvalidTag:
        return EnvelopeCorrupt(f"chunk {i} failed authentication: the envelope was modified or damaged")
    if tried_last:
        return EnvelopeTruncated(f"envelope ends after chunk {i}, which is not the final chunk (truncated)")
    return EnvelopeCorrupt(f"chunk {i} is marked final but more data follows it (extra data appended)")


def open_(
    blob: bytes | bytearray | memoryview | BinaryIO,
    ctx: EnvelopeContext,
    recipient_key: X25519PrivateKey | bytes,
    sender_public: KeyLike,
) -> bytes:
    """Authenticate and decrypt an envelope; return the plaintext.

    ``blob`` is the envelope bytes or a binary file object positioned at its
    start (read chunk by chunk; memory use is then the plaintext plus one
    chunk).  Nothing is returned unless every chunk authenticated.
    """
    if hasattr(blob, "read"):
        return _open_file_to_bytes(blob, ctx, recipient_key, sender_public)
    mv = memoryview(blob).cast("B")
    hdr = read_header(mv)
    aead = _check_and_unwrap(hdr, ctx, recipient_key, sender_public)
    body = mv[hdr.size :]
    cs, ct_cs = hdr.chunk_size, hdr.chunk_size + _TAG
    if hdr.length is not None:
        n_chunks = hdr.n_chunks()
        expected = hdr.body_size()
        if len(body) < expected:
            raise EnvelopeTruncated(
                f"envelope body is {len(body)} bytes, expected {expected} for a {hdr.length}-byte payload (truncated)"
            )
        if len(body) > expected:
            raise EnvelopeCorrupt(f"envelope has {len(body) - expected} unexpected bytes after the final chunk")
        length = hdr.length
    else:
        if len(body) < _TAG:
            raise EnvelopeTruncated("envelope has no complete chunk (truncated)")
        n_chunks = max(1, -(-len(body) // ct_cs))
        length = len(body) - n_chunks * _TAG
        if length < 0 or (n_chunks > 1 and len(body) - (n_chunks - 1) * ct_cs < _TAG + 1):
            raise EnvelopeTruncated("envelope ends inside a chunk tag (truncated)")
    out, om = _output_buffer(length)
    dec = aead.decrypt_into
    base = int.from_bytes(hdr.base_nonce, "big")
    for i in range(n_chunks):
        a = i * ct_cs
        b = min(a + ct_cs, len(body))
        last = i == n_chunks - 1
        nonce = _nonce(base, i)
        try:
            dec(nonce, body[a:b], _AD_LAST if last else _AD_MORE, om[i * cs : i * cs + (b - a - _TAG)])
        except InvalidTag:
            raise _diagnose(aead, nonce, body[a:b], last, i) from None
    om.release()
    return out.getvalue()


unseal = open_


class _ViewWriter:
    """File-like sink that fills a preallocated memoryview."""

    def __init__(self, view: memoryview):
        self.view = view
        self.pos = 0

    def write(self, b) -> int:
        n = len(b)
        if self.pos + n > len(self.view):
            raise EnvelopeCorrupt("envelope holds more plaintext than its header declares")
        self.view[self.pos : self.pos + n] = b
        self.pos += n
        return n


def _open_file_to_bytes(src: BinaryIO, ctx, recipient_key, sender_public) -> bytes:
    start = src.tell() if _seekable(src) else None
    hdr = read_header(src)
    remaining = _remaining_length(src) if start is not None else None
    if start is not None:
        src.seek(start)
    else:
        src = _Prepend(hdr.raw, src)
    if hdr.length is not None and remaining is not None:
        # check the size before allocating what the (unauthenticated) header claims
        if remaining < hdr.body_size():
            raise EnvelopeTruncated(
                f"envelope body is {remaining} bytes, expected {hdr.body_size()} for a "
                f"{hdr.length}-byte payload (truncated)"
            )
        if remaining > hdr.body_size():
            raise EnvelopeCorrupt(f"envelope has {remaining - hdr.body_size()} unexpected bytes after the final chunk")
    if hdr.length is None or remaining is None:
        out = io.BytesIO()
        open_stream(src, out, ctx, recipient_key, sender_public)
        return out.getvalue()
    out, om = _output_buffer(hdr.length)
    sink = _ViewWriter(om)
    open_stream(src, sink, ctx, recipient_key, sender_public)
    assert sink.pos == hdr.length
    sink.view = None
    om.release()
    return out.getvalue()


def _seekable(f) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


class _Prepend:
    """A stream that yields ``head`` and then the rest of ``tail``."""

    def __init__(self, head: bytes, tail: BinaryIO):
        self._head = memoryview(head)
        self._tail = tail

    def read(self, n: int = -1) -> bytes:
        if self._head:
            k = len(self._head) if n < 0 else min(n, len(self._head))
            data = bytes(self._head[:k])
            self._head = self._head[k:]
            return data
        return self._tail.read(n)


class _HeaderSlice:
    """Minimal stream over a memoryview so read_header needs no copy of the body."""

    def __init__(self, mv: memoryview):
        self._mv = mv
        self._pos = 0

    def read(self, n: int) -> bytes:
        data = bytes(self._mv[self._pos : self._pos + n])
        self._pos += len(data)
        return data


def open_stream(
    src: BinaryIO,
    dst: BinaryIO,
    ctx: EnvelopeContext,
    recipient_key: X25519PrivateKey | bytes,
    sender_public: KeyLike,
) -> int:
    """Authenticate and decrypt the envelope read from ``src`` into ``dst``; return plaintext bytes.

    Each chunk is written only after it authenticated; on error ``dst`` may
    hold a verified prefix and must be discarded by the caller.
    """
    hdr = read_header(src)
    aead = _check_and_unwrap(hdr, ctx, recipient_key, sender_public)
    cs, ct_cs = hdr.chunk_size, hdr.chunk_size + _TAG
    dec = aead.decrypt_into
    base = int.from_bytes(hdr.base_nonce, "big")
    inbuf, outbuf = bytearray(ct_cs), bytearray(cs)
    im, om = memoryview(inbuf), memoryview(outbuf)
    total = 0

    if hdr.length is not None:
        n_chunks = hdr.n_chunks()
        for i in range(n_chunks):
            last = i == n_chunks - 1
            want = ct_cs if not last else hdr.length - cs * (n_chunks - 1) + _TAG
            got = _read_exact(src, im[:want])
            if got != want:
                raise EnvelopeTruncated(
                    f"envelope ends inside chunk {i} of {n_chunks} "
                    f"({total + got} of {hdr.body_size()} body bytes present; truncated)"
                )
            nonce = _nonce(base, i)
            try:
                dec(nonce, im[:want], _AD_LAST if last else _AD_MORE, om[: want - _TAG])
            except InvalidTag:
                raise _diagnose(aead, nonce, im[:want], last, i) from None
            dst.write(om[: want - _TAG])
            total += want - _TAG
        extra = _read_bytes(src, 1)
        if extra:
            raise EnvelopeCorrupt("envelope has unexpected bytes after the final chunk")
        return total

    nextbuf = bytearray(ct_cs)
    nm = memoryview(nextbuf)
    got = _read_exact(src, im)
    i = 0
    while True:
        if got < _TAG:
            raise EnvelopeTruncated(f"envelope ends inside chunk {i} (truncated)")
        nxt = _read_exact(src, nm) if got == ct_cs else 0
        last = nxt == 0
        nonce = _nonce(base, i)
        try:
            dec(nonce, im[:got], _AD_LAST if last else _AD_MORE, om[: got - _TAG])
        except InvalidTag:
            raise _diagnose(aead, nonce, im[:got], last, i) from None
        dst.write(om[: got - _TAG])
        total += got - _TAG
        if last:
            return total
        im, nm = nm, im
        got = nxt
        i += 1
