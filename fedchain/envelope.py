"""Encrypted, sender-signed, context-bound, key-committing envelopes for updates and models.

A hospital seals its model update for one or more recipients (typically the
coordinator and the plan's auditors); the envelope is pinned to IPFS and its
sha256 is committed on chain.  A recipient opens it with its own X25519 private
key and the :class:`EnvelopeContext` it expects (chain, contract, proposal,
round, sender address).  Any disagreement is a named error; nothing is returned
unless every byte authenticated.

Guarantees
==========

* **Confidentiality** for the listed recipients (HPKE, RFC 9180).
* **Sender authentication**: the header is signed with the sender's *Ethereum*
  key (the account that is a member on chain and commits the envelope's hash);
  every recipient -- and anyone else -- checks that the signature recovers
  ``context.sender``.  The signature is public, so all recipients agree on it.
* **Context binding**: chain id, contract, proposal, round and sender are in the
  signed header and in the HPKE ``info`` of every key wrap.
* **One envelope, one content** (key commitment): the header commits to the
  content key, and each recipient, after opening its own wrap, re-derives *every*
  recipient's wrap from the content key and compares them byte for byte.  So
  either every recipient opens the same plaintext or none does.  (AES-GCM does
  not commit to its key: in version 1, each recipient's wrap could carry a
  different content key and one ciphertext could be crafted to decrypt under two
  keys -- one blob, one on-chain hash, two contents -- letting a member frame an
  honest coordinator before the auditor, or hide an update from the auditor.)

Cryptography (version 2)
========================

* A fresh random 32-byte content key ``CK`` per envelope.
* ``commitment = HMAC-SHA256(CK, "fedchain/envelope/v2/key-commitment" ||
  SHA-256(core))`` where ``core`` is the header up to the recipients' keys
  (context, sizes, nonce, every recipient's public key).  ``preamble = core ||
  commitment``.
* For recipient ``i`` with X25519 key ``pk_i``, one HPKE Base-mode message
  (RFC 9180; suite DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM; via
  ``pyhpke``)::

      ikm_i   = HKDF-SHA256(CK, info = "fedchain/envelope/v2/ephemeral" || u16(i) || pk_i)
      skE_i   = DeriveKeyPair(ikm_i)                        (RFC 9180 section 7.1.3)
      enc_i, ctx_i = SetupBaseS(pk_i, info = "fedchain/envelope/v2/wrap" || SHA-256(preamble))
                     with the ephemeral key skE_i
      wrap_i  = ctx_i.Seal(aad = "", CK)                   (32-byte key + 16-byte tag)

  The ephemeral key is derived from ``CK`` rather than drawn at random so that any
  holder of ``CK`` can recompute every ``(enc_j, wrap_j)``: that is the
  consistency check above.  It stays secret from everyone who cannot read the
  content anyway, and is unique per envelope and recipient, which is all HPKE
  asks of an ephemeral key.
* ``signature``: 65 bytes ``r || s || v``, the EIP-191 ``personal_sign`` of
  ``SHA-256("fedchain/envelope/v2/signature" || signed)`` by the sender's
  Ethereum key, where ``signed`` is the whole header before the signature.
* Payload key ``PK = HKDF-SHA256(CK, info = "fedchain/envelope/v2/payload" ||
  SHA-256(signed))``: changing any signed header byte makes every chunk fail.
* The payload is cut into chunks of ``chunk_size`` plaintext bytes (default
  1 MiB).  Chunk ``i`` is ``AES-256-GCM(PK, nonce_i, chunk_i, AD = flag)`` with
  ``nonce_i = base_nonce XOR i`` (as 96-bit big-endian integers) and ``flag =
  0x01`` for the final chunk, ``0x00`` otherwise (the STREAM construction).
  Reordering, removing or duplicating chunks changes a nonce; cutting the stream
  at a chunk boundary leaves a last chunk without the final flag; both fail.

Binary format (version 2, all integers big-endian)
==================================================

============  ========  =====================================================
offset        size      field
============  ========  =====================================================
0             4         magic ``b"FCEV"``
4             1         format version (``2``; anything else: EnvelopeVersionError)
5             4         header length in bytes (whole header, = 268 + 112*n)
9             136       context: chain_id (u256, 32) | contract (20) |
                        proposal_id (u256, 32) | round (u256, 32) | sender (20)
145           4         chunk_size (plaintext bytes per chunk, 4 KiB .. 64 MiB)
149           8         payload length in bytes (``2**64-1`` = not known in advance)
157           12        base nonce (random)
169           2         number of recipients ``n`` (1 .. 64)
171           32*n      recipients' X25519 public keys (distinct)
171+32n       32        key commitment
203+32n       32*n      HPKE encapsulated keys ``enc_i``, same order
203+64n       48*n      wrapped content keys ``wrap_i``, same order
203+112n      65        sender's signature (r, s, v) over bytes 0 .. 203+112n
============  ========  =====================================================

The body follows the header: the chunk ciphertexts back to back, each
``len(chunk) + 16`` bytes.  Every chunk except the last holds exactly
``chunk_size`` plaintext bytes; the last holds 1..``chunk_size`` bytes (0 only
for an empty payload, which is a single empty final chunk).

Version 1 (X25519 static-static key wraps, no key commitment) is no longer
read: no deployment holds v1 envelopes, and v1's weakness is exactly that two
recipients may open two different contents.  A v1 blob is an
:class:`EnvelopeVersionError`.

API
===

``seal(payload, ctx, sender, recipients) -> bytes`` and ``seal_stream(src,
dst, ...)`` encrypt (``sender``: the Ethereum account whose address is
``ctx.sender``); ``open_(blob_or_file, ctx, recipient_key) -> bytes`` (alias
``unseal``) and ``open_stream(src, dst, ...)`` decrypt; ``read_header``
inspects without keys; ``sealed_size`` / ``max_sealed_size`` give sizes, for
size-limited fetches.  Checks on opening run in this order: format/version,
context (:class:`EnvelopeContextMismatch` names each differing field), the
expected recipient set when given (:class:`EnvelopeRecipientsMismatch`), sender
signature (:class:`EnvelopeSenderMismatch`), recipient
(:class:`EnvelopeNotForRecipient`), own key wrap
(:class:`EnvelopeAuthenticationError`), key commitment and every other
recipient's wrap (:class:`EnvelopeInconsistent`), then every chunk
(:class:`EnvelopeCorrupt`, :class:`EnvelopeTruncated`).

Limitations
===========

* Every recipient learns the content key, so a malicious recipient could
  encrypt *different chunks* under the same (validly signed) header.  In
  fedchain the sender's own transaction commits the sha256 of the exact blob
  (checked by :mod:`fedchain.content` before decryption), which closes that gap;
  do not rely on the envelope alone to authenticate the *body* between mutually
  distrusting co-recipients.
* The signature makes an envelope non-repudiable (the sender's on-chain hash
  commitment already is).
* :func:`open_stream` writes each chunk to ``dst`` as soon as that chunk has
  authenticated; if a later chunk fails, ``dst`` holds a verified *prefix*.
  Callers that must not see partial output (see :mod:`fedchain.content`) write
  to a temporary file and discard it on error.  :func:`open_` (bytes) returns
  nothing unless everything verified.
"""

from __future__ import annotations

import hashlib
import hmac
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
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import is_checksum_address, to_checksum_address
from pyhpke import AEADId, CipherSuite, KDFId, KEMId
from pyhpke.exceptions import PyHPKEError

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
    "EnvelopeInconsistent",
    "EnvelopeContextMismatch",
    "EnvelopeSenderMismatch",
    "EnvelopeNotForRecipient",
    "EnvelopeRecipientsMismatch",
    "InvalidContext",
    "fingerprint",
    "public_bytes",
    "seal",
    "seal_stream",
    "open_",
    "unseal",
    "open_stream",
    "read_header",
    "header_size",
    "sealed_size",
    "max_sealed_size",
]

MAGIC = b"FCEV"
VERSION = 2
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
MAX_RECIPIENTS = 64  # every opener re-derives every wrap: keep that work small
UNKNOWN_LENGTH = (1 << 64) - 1

_TAG = 16
_KEY = 32
_PUB = 32
_WRAP = _KEY + _TAG
_SIG = 65
_FP = 8
_CTX_LEN = 32 + 20 + 32 + 32 + 20
_FIXED = 4 + 1 + 4 + _CTX_LEN + 4 + 8 + 12 + 2  # == 171, up to the recipients' keys
_AD_MORE = b"\x00"
_AD_LAST = b"\x01"
_COMMIT_LABEL = b"fedchain/envelope/v2/key-commitment"
_EPH_LABEL = b"fedchain/envelope/v2/ephemeral"
_WRAP_INFO = b"fedchain/envelope/v2/wrap"
_SIG_LABEL = b"fedchain/envelope/v2/signature"
_PAYLOAD_INFO = b"fedchain/envelope/v2/payload"
_FP_DOMAIN = b"fedchain/x25519-fingerprint/v1"
_U256 = 1 << 256
_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


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
    """The recipient's own key wrap did not authenticate (the header was altered or forged)."""


class EnvelopeInconsistent(EnvelopeCorrupt):
    """The recipients would not all open the same content.

    The content key does not match the header's key commitment, or another
    recipient's wrap is not the one the content key gives: the sender (or someone
    who rewrote the header) tried to give different recipients different contents,
    or to give some of them nothing.  Every recipient refuses such an envelope.
    """


class EnvelopeContextMismatch(EnvelopeError):
    """The envelope was sealed for another context (chain, contract, proposal, round, sender)."""

    def __init__(self, message: str, differences: Sequence[str] = ()):
        super().__init__(message)
        self.differences = tuple(differences)


class EnvelopeSenderMismatch(EnvelopeContextMismatch):
    """The header's signature is not by the context's sender (forged, or signed by someone else)."""


class EnvelopeRecipientsMismatch(EnvelopeError):
    """The envelope is not sealed for exactly the recipients the opener expects (e.g. an auditor left out)."""


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
SenderKey = Union[LocalAccount, bytes, str]


def public_bytes(key: KeyLike | X25519PrivateKey) -> bytes:
    """Raw 32-byte X25519 public key from a public key, private key or raw bytes."""
    if isinstance(key, X25519PrivateKey):
        key = key.public_key()
    if isinstance(key, X25519PublicKey):
        return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return bytes(key)
    raise TypeError(f"expected a 32-byte X25519 public key, got {type(key).__name__} of length "
                    f"{len(key) if isinstance(key, (bytes, bytearray)) else '?'}")


def _private(key: X25519PrivateKey | bytes) -> X25519PrivateKey:
    if isinstance(key, X25519PrivateKey):
        return key
    if isinstance(key, (bytes, bytearray)) and len(key) == 32:
        return X25519PrivateKey.from_private_bytes(bytes(key))
    raise TypeError("expected an X25519PrivateKey or 32 raw private-key bytes")


def _account(sender: SenderKey) -> LocalAccount:
    if isinstance(sender, LocalAccount):
        return sender
    if isinstance(sender, (bytes, bytearray, str)):
        try:
            return Account.from_key(sender)
        except (ValueError, TypeError) as exc:
            raise TypeError(f"sender must be an Ethereum account or private key: {exc}") from None
    raise TypeError(f"sender must be an eth_account LocalAccount or an Ethereum private key, "
                    f"not {type(sender).__name__}")


def fingerprint(public_key: KeyLike | X25519PrivateKey) -> bytes:
    """8-byte fingerprint naming a recipient key in messages: SHA-256(domain || pub)[:8]."""
    return hashlib.sha256(_FP_DOMAIN + public_bytes(public_key)).digest()[:_FP]


def _hkdf(ikm: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=_KEY, salt=None, info=info).derive(ikm)


def _commitment(content_key: bytes, core: bytes) -> bytes:
    return hmac.new(content_key, _COMMIT_LABEL + hashlib.sha256(core).digest(), hashlib.sha256).digest()


def _wrap(content_key: bytes, preamble: bytes, index: int, recipient: bytes) -> tuple[bytes, bytes]:
    """``(enc, wrap)`` of recipient ``index``: deterministic in the content key, see the module docstring."""
    ikm = _hkdf(content_key, _EPH_LABEL + index.to_bytes(2, "big") + recipient)
    eph = _SUITE.kem.derive_key_pair(ikm)
    try:
        pk = _SUITE.kem.deserialize_public_key(recipient)
        enc, ctx = _SUITE.create_sender_context(pk, info=_WRAP_INFO + hashlib.sha256(preamble).digest(), eks=eph)
    except (PyHPKEError, ValueError):  # a low-order point gives an all-zero shared secret
        raise EnvelopeAuthenticationError(
            f"key agreement with recipient key {fingerprint(recipient).hex()} failed (not a usable X25519 key)"
        ) from None
    return enc, ctx.seal(content_key)


def _signed_digest(signed: bytes) -> bytes:
    return hashlib.sha256(_SIG_LABEL + signed).digest()


def _sign(account: LocalAccount, signed: bytes) -> bytes:
    return bytes(account.sign_message(encode_defunct(primitive=_signed_digest(signed))).signature)


def _signer(signed: bytes, signature: bytes) -> str | None:
    """The address that signed, or None when the signature is malformed."""
    try:
        return Account.recover_message(encode_defunct(primitive=_signed_digest(signed)), signature=signature)
    except Exception:  # noqa: BLE001 - eth_keys raises assorted errors on hostile signatures
        return None


def _payload_key(content_key: bytes, signed: bytes) -> bytes:
    return _hkdf(content_key, _PAYLOAD_INFO + hashlib.sha256(signed).digest())


def _payload_cipher(content_key: bytes, signed: bytes) -> AESGCM:
    return AESGCM(_payload_key(content_key, signed))


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class EnvelopeHeader:
    """A parsed (not yet authenticated) envelope header."""

    version: int
    context: EnvelopeContext
    chunk_size: int
    length: int | None  # payload length, None when unknown at sealing time
    base_nonce: bytes
    recipients: tuple[bytes, ...]  # X25519 public keys
    key_commitment: bytes
    encs: tuple[bytes, ...]
    wraps: tuple[bytes, ...]
    signature: bytes
    raw: bytes  # exact header bytes

    @property
    def size(self) -> int:
        return len(self.raw)

    @property
    def core(self) -> bytes:
        """The header up to and including the recipients' keys (what the key commitment hashes)."""
        return self.raw[: _FIXED + _PUB * len(self.recipients)]

    @property
    def preamble(self) -> bytes:
        """``core || key commitment`` (what every wrap's HPKE info hashes)."""
        return self.raw[: _FIXED + _PUB * len(self.recipients) + _KEY]

    @property
    def signed(self) -> bytes:
        """Everything the sender's signature covers (the header without the signature)."""
        return self.raw[: -_SIG]

    @property
    def fingerprints(self) -> tuple[bytes, ...]:
        return tuple(fingerprint(r) for r in self.recipients)

    def n_chunks(self) -> int | None:
        if self.length is None:
            return None
        return max(1, -(-self.length // self.chunk_size))

    def body_size(self) -> int | None:
        n = self.n_chunks()
        return None if n is None else self.length + n * _TAG


def header_size(n_recipients: int) -> int:
    """Bytes of the header of an envelope for ``n_recipients`` recipients."""
    return _FIXED + n_recipients * (_PUB + _PUB + _WRAP) + _KEY + _SIG


def _parse_header(raw: bytes, n: int) -> EnvelopeHeader:
    ctx = EnvelopeContext.from_bytes(raw[9 : 9 + _CTX_LEN])
    o = 9 + _CTX_LEN
    chunk_size = int.from_bytes(raw[o : o + 4], "big")
    length = int.from_bytes(raw[o + 4 : o + 12], "big")
    base_nonce = raw[o + 12 : o + 24]
    p = _FIXED
    recipients = tuple(raw[p + i * _PUB : p + (i + 1) * _PUB] for i in range(n))
    p += n * _PUB
    commitment = raw[p : p + _KEY]
    p += _KEY
    encs = tuple(raw[p + i * _PUB : p + (i + 1) * _PUB] for i in range(n))
    p += n * _PUB
    wraps = tuple(raw[p + i * _WRAP : p + (i + 1) * _WRAP] for i in range(n))
    p += n * _WRAP
    assert len(raw) - p == _SIG
    return EnvelopeHeader(
        version=raw[4], context=ctx, chunk_size=chunk_size,
        length=None if length == UNKNOWN_LENGTH else length, base_nonce=base_nonce,
        recipients=recipients, key_commitment=commitment, encs=encs, wraps=wraps,
        signature=raw[p:], raw=raw,
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
    envelope start (left positioned at the first body byte).  At most
    :func:`header_size` of :data:`MAX_RECIPIENTS` bytes are read, whatever the
    input claims.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = _HeaderSlice(memoryview(src).cast("B"))
    first = _read_bytes(src, 5)
    if len(first) < 5:
        if MAGIC.startswith(first[:4]) and first:
            raise EnvelopeTruncated(f"envelope header is truncated ({len(first)} bytes)")
        raise EnvelopeFormatError("not a fedchain envelope (too short)")
    if first[:4] != MAGIC:
        raise EnvelopeFormatError(f"not a fedchain envelope (magic {first[:4].hex()}, expected {MAGIC.hex()})")
    if first[4] != VERSION:
        raise EnvelopeVersionError(
            f"unsupported envelope version {first[4]} (this fedchain reads version {VERSION} only); "
            "ask the sender to re-seal with a current fedchain"
        )
    rest_fixed = _read_bytes(src, _FIXED - 5)
    if len(rest_fixed) < _FIXED - 5:
        raise EnvelopeTruncated(f"envelope header is truncated ({5 + len(rest_fixed)} of {_FIXED}+ bytes)")
    fixed = first + rest_fixed
    declared = int.from_bytes(fixed[5:9], "big")
    n = int.from_bytes(fixed[_FIXED - 2 : _FIXED], "big")
    if not 1 <= n <= MAX_RECIPIENTS:
        raise EnvelopeFormatError(f"envelope header declares {n} recipients (allowed 1..{MAX_RECIPIENTS})")
    if declared != header_size(n):
        raise EnvelopeFormatError(
            f"envelope header length field is {declared}, but {n} recipients need {header_size(n)}"
        )
    chunk_size = int.from_bytes(fixed[9 + _CTX_LEN : 13 + _CTX_LEN], "big")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise EnvelopeFormatError(f"envelope chunk size {chunk_size} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    rest = _read_bytes(src, declared - _FIXED)
    if len(rest) < declared - _FIXED:
        raise EnvelopeTruncated(f"envelope header is truncated ({_FIXED + len(rest)} of {declared} bytes)")
    raw = fixed + rest
    recipients = [raw[_FIXED + i * _PUB : _FIXED + (i + 1) * _PUB] for i in range(n)]
    if len(set(recipients)) != n:
        raise EnvelopeFormatError("envelope header lists a recipient key twice")
    try:
        return _parse_header(raw, n)
    except InvalidContext as exc:  # cannot happen with fixed-width fields, kept for safety
        raise EnvelopeFormatError(f"malformed envelope context: {exc}") from None


def sealed_size(payload_length: int, n_recipients: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Size in bytes of the envelope for a payload of ``payload_length`` bytes."""
    n_chunks = max(1, -(-payload_length // chunk_size))
    return header_size(n_recipients) + payload_length + n_chunks * _TAG


def max_sealed_size(payload_length: int, n_recipients: int = 1) -> int:
    """The largest valid envelope of a ``payload_length``-byte payload, whatever chunk size the sender chose.

    The bound a size-limited fetch of someone else's envelope uses (the smallest
    allowed chunk size gives the most tags).
    """
    return sealed_size(payload_length, n_recipients, MIN_CHUNK_SIZE)


# --------------------------------------------------------------------------- sealing


class _Sealer:
    """Builds the header and the chunk cipher for one envelope."""

    def __init__(
        self,
        ctx: EnvelopeContext,
        sender: SenderKey,
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
        account = _account(sender)
        if account.address != ctx.sender:
            raise InvalidContext(f"the context's sender is {ctx.sender}, but the signing account is {account.address}")
        pubs = [public_bytes(r) for r in recipients]
        if not 1 <= len(pubs) <= MAX_RECIPIENTS:
            raise ValueError(f"need 1..{MAX_RECIPIENTS} recipients, got {len(pubs)}")
        if len(set(pubs)) != len(pubs):
            raise ValueError("duplicate recipient public key")
        if length is not None and not 0 <= length < UNKNOWN_LENGTH:
            raise ValueError(f"invalid payload length {length!r}")
        content_key = secrets.token_bytes(_KEY)
        self.base_nonce = secrets.token_bytes(12)
        n = len(pubs)
        core = b"".join(
            (
                MAGIC,
                bytes([VERSION]),
                header_size(n).to_bytes(4, "big"),
                ctx.to_bytes(),
                chunk_size.to_bytes(4, "big"),
                (UNKNOWN_LENGTH if length is None else length).to_bytes(8, "big"),
                self.base_nonce,
                n.to_bytes(2, "big"),
                *pubs,
            )
        )
        preamble = core + _commitment(content_key, core)
        wrapped = [_wrap(content_key, preamble, i, pub) for i, pub in enumerate(pubs)]
        signed = preamble + b"".join(e for e, _ in wrapped) + b"".join(w for _, w in wrapped)
        self.header = signed + _sign(account, signed)
        assert len(self.header) == header_size(n)
        self.chunk_size = chunk_size
        self.aead = _payload_cipher(content_key, signed)
        self._nonce_base = int.from_bytes(self.base_nonce, "big")

    def nonce(self, i: int) -> bytes:
        return (self._nonce_base ^ i).to_bytes(12, "big")


def seal(
    payload: bytes | bytearray | memoryview,
    ctx: EnvelopeContext,
    sender: SenderKey,
    recipients: Sequence[KeyLike],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> bytes:
    """Encrypt ``payload`` for ``recipients`` (X25519 public keys) and return the envelope.

    ``sender`` is the Ethereum account (or its private key) whose address is ``ctx.sender``.
    """
    mv = memoryview(payload).cast("B")
    length = len(mv)
    s = _Sealer(ctx, sender, recipients, chunk_size, length)
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
    sender: SenderKey,
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
    s = _Sealer(ctx, sender, recipients, chunk_size, length)
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
    recipients: Sequence[KeyLike] | None,
) -> AESGCM:
    """Verify context, signature, recipient, own wrap, key commitment, every wrap; return the payload cipher."""
    if not isinstance(ctx, EnvelopeContext):
        raise TypeError("ctx must be an EnvelopeContext")
    diffs = hdr.context.differences(ctx)
    if diffs:
        raise EnvelopeContextMismatch(
            "envelope was sealed for a different context: " + "; ".join(diffs), diffs
        )
    if recipients is not None:
        want = {public_bytes(r) for r in recipients}
        have = set(hdr.recipients)
        if want != have:
            missing = ", ".join(sorted(fingerprint(k).hex() for k in want - have)) or "none"
            extra = ", ".join(sorted(fingerprint(k).hex() for k in have - want)) or "none"
            raise EnvelopeRecipientsMismatch(
                f"envelope is not sealed for exactly the expected recipients (missing: {missing}; unexpected: {extra})"
            )
    signed = hdr.signed
    signer = _signer(signed, hdr.signature)
    if signer != ctx.sender:
        msg = (f"envelope header is signed by {signer}, not by the sender {ctx.sender}" if signer
               else f"envelope header carries no valid signature (expected one by {ctx.sender})")
        raise EnvelopeSenderMismatch(msg, [msg])
    priv = _private(recipient_key)
    my_pub = public_bytes(priv)
    try:
        i = hdr.recipients.index(my_pub)
    except ValueError:
        raise EnvelopeNotForRecipient(
            f"this key ({fingerprint(my_pub).hex()}) is not a recipient of the envelope "
            f"(recipients: {', '.join(fp.hex() for fp in hdr.fingerprints)})"
        ) from None
    preamble = hdr.preamble
    try:
        rctx = _SUITE.create_recipient_context(
            hdr.encs[i], _SUITE.kem.deserialize_private_key(_raw_private(priv)),
            info=_WRAP_INFO + hashlib.sha256(preamble).digest(),
        )
        content_key = rctx.open(hdr.wraps[i])
    except (PyHPKEError, ValueError, InvalidTag):
        raise EnvelopeAuthenticationError(
            f"the content key wrapped for recipient {i} failed authentication: the envelope header was "
            "altered, or this recipient was given a key it cannot open"
        ) from None
    # Key commitment, then every recipient's wrap: all open the same content or none does.
    if not hmac.compare_digest(_commitment(content_key, hdr.core), hdr.key_commitment):
        raise EnvelopeInconsistent(
            f"the content key wrapped for recipient {i} is not the one the header commits to: "
            "recipients would open different contents"
        )
    for j, pub in enumerate(hdr.recipients):
        if j == i:
            continue
        try:
            enc, wrap = _wrap(content_key, preamble, j, pub)
        except EnvelopeAuthenticationError:
            enc, wrap = b"", b""
        if not (hmac.compare_digest(enc, hdr.encs[j]) and hmac.compare_digest(wrap, hdr.wraps[j])):
            raise EnvelopeInconsistent(
                f"recipient {j} ({fingerprint(pub).hex()}) was not given this envelope's content key: "
                "recipients would not all open the same content"
            )
    return _payload_cipher(content_key, signed)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes_raw()


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
    *,
    recipients: Sequence[KeyLike] | None = None,
) -> bytes:
    """Authenticate and decrypt an envelope; return the plaintext.

    ``blob`` is the envelope bytes or a binary file object positioned at its
    start (read chunk by chunk; memory use is then the plaintext plus one
    chunk).  Nothing is returned unless every chunk authenticated.  With
    ``recipients`` (public keys), the envelope must be sealed for exactly that
    set (:class:`EnvelopeRecipientsMismatch`): how a coordinator makes sure the
    plan's auditors can open what it accepts.
    """
    if hasattr(blob, "read"):
        return _open_file_to_bytes(blob, ctx, recipient_key, recipients)
    mv = memoryview(blob).cast("B")
    hdr = read_header(mv)
    aead = _check_and_unwrap(hdr, ctx, recipient_key, recipients)
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


def _open_file_to_bytes(src: BinaryIO, ctx, recipient_key, recipients) -> bytes:
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
        open_stream(src, out, ctx, recipient_key, recipients=recipients)
        return out.getvalue()
    out, om = _output_buffer(hdr.length)
    sink = _ViewWriter(om)
    open_stream(src, sink, ctx, recipient_key, recipients=recipients)
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
    *,
    recipients: Sequence[KeyLike] | None = None,
) -> int:
    """Authenticate and decrypt the envelope read from ``src`` into ``dst``; return plaintext bytes.

    Each chunk is written only after it authenticated; on error ``dst`` may
    hold a verified prefix and must be discarded by the caller.  ``recipients``:
    as for :func:`open_`.
    """
    hdr = read_header(src)
    aead = _check_and_unwrap(hdr, ctx, recipient_key, recipients)
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
