"""Binding content to the chain: seal + pin on the way in, fetch + verify + open on the way out.

What goes on chain for an update is ``(cid, sha256)`` of the *stored blob*
(the encrypted envelope, or the plain bytes of a public document).  The CID
says where to find it; the sha256, committed by the sender's own transaction,
pins the exact bytes independently of the content store and of the CID
scheme.

Fetching is all-or-nothing and size-limited.  Every fetch takes ``max_size``
(no default: the caller must say how much it is prepared to receive -- see
:mod:`fedchain.validation` for the exact bounds of a plan's models and updates).
The blob is streamed from the store into a temporary file while being hashed;
the store refuses a DAG whose root declares more than ``max_size`` before the
first byte and stops the stream before it grows past it, so a member cannot fill
the reader's disk.  Only when the hash matches the on-chain value is it
decrypted (envelope authentication: context, sender signature, recipient, key
commitment, every chunk); only when *that* fully succeeds is anything returned.
Errors are named: :class:`HashMismatch` (CID, expected, actual),
:class:`~fedchain.errors.SizeLimitExceeded` (this module's
:class:`ContentTooLarge` or the store's), the envelope errors of
:mod:`fedchain.envelope`, :class:`~fedchain.serialize.SerializationError`, and
the store's own ``StoreError``.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, NamedTuple, Sequence, Union

import torch

from fedchain import envelope, serialize
from fedchain.envelope import EnvelopeContext
from fedchain.errors import FedchainError, SizeLimitExceeded
from fedchain.identity import Identity

__all__ = [
    "MAX_DOCUMENT_SIZE",
    "ContentError",
    "HashMismatch",
    "ContentTooLarge",
    "Sealed",
    "Pinned",
    "normalize_sha256",
    "seal_and_pin",
    "fetch_verified",
    "fetch_verified_to_file",
    "fetch_model",
    "pin_document",
    "fetch_document",
]

PathLike = Union[str, os.PathLike]
Payload = Union[bytes, bytearray, memoryview, PathLike, BinaryIO]
_COPY_CHUNK = 1 << 20
#: A bound for small public JSON documents (scores, dataset metadata) whose exact size is not known.
MAX_DOCUMENT_SIZE = 16 << 20


class ContentError(FedchainError):
    """Content could not be pinned or fetched as committed on chain."""


class HashMismatch(ContentError):
    """The bytes fetched for a CID do not have the sha256 committed on chain."""

    def __init__(self, cid: str, expected: str, actual: str):
        super().__init__(
            f"content {cid} does not match its on-chain hash: expected sha256 {expected}, got {actual}"
        )
        self.cid, self.expected, self.actual = cid, expected, actual


class ContentTooLarge(ContentError, SizeLimitExceeded):
    """The fetched content exceeds the caller's size limit."""


class Sealed(NamedTuple):
    """A sealed, pinned blob: what the sender commits on chain."""

    cid: str
    sha256: str  # lower-case hex of the stored (encrypted) blob
    size: int  # bytes of the stored blob

    @property
    def sha256_bytes(self) -> bytes:
        """The hash as 32 raw bytes (a ``bytes32`` contract argument)."""
        return bytes.fromhex(self.sha256)


class Pinned(NamedTuple):
    """A pinned public document: ``cid, sha256 = pin_document(...)``."""

    cid: str
    sha256: str

    @property
    def sha256_bytes(self) -> bytes:
        return bytes.fromhex(self.sha256)


def normalize_sha256(value: str | bytes | bytearray) -> str:
    """Accept a bytes32 (raw 32 bytes) or hex string (with or without 0x); return lower-case hex."""
    if isinstance(value, (bytes, bytearray)):
        if len(value) != 32:
            raise ContentError(f"a sha256 must be 32 bytes, got {len(value)}")
        return bytes(value).hex()
    if isinstance(value, str):
        h = value[2:] if value[:2].lower() == "0x" else value
        if len(h) == 64:
            try:
                bytes.fromhex(h)
                return h.lower()
            except ValueError:
                pass
    raise ContentError(f"not a sha256 value: {value!r}")


class _HashingWriter:
    """Write-through file wrapper that hashes and counts, with an optional size limit."""

    def __init__(self, f: BinaryIO, cid: str, max_size: int | None):
        self.f = f
        self.h = hashlib.sha256()
        self.size = 0
        self.cid = cid
        self.max_size = max_size

    def write(self, b) -> int:
        n = len(b)
        self.size += n
        if self.max_size is not None and self.size > self.max_size:
            raise ContentTooLarge(f"content {self.cid} exceeds the limit of {self.max_size} bytes")
        self.h.update(b)
        self.f.write(b)
        return n


class _HashingReader:
    """Read-through file wrapper that hashes what is read."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def readinto(self, buf) -> int:
        k = self.f.readinto(buf)
        if k:
            self.h.update(memoryview(buf)[:k])
        return k

    def readable(self) -> bool:
        return True


def _recipient_key(r: object) -> bytes:
    if isinstance(r, Identity):
        return r.x25519_public
    return envelope.public_bytes(r)  # type: ignore[arg-type]


def _is_path(x: object) -> bool:
    return isinstance(x, (str, os.PathLike))


# --------------------------------------------------------------------------- sealed content


def seal_and_pin(
    store,
    payload: Payload,
    ctx: EnvelopeContext,
    sender: Identity,
    recipients: Sequence[bytes],
    *,
    chunk_size: int = envelope.DEFAULT_CHUNK_SIZE,
    tmp_dir: PathLike | None = None,
) -> Sealed:
    """Encrypt ``payload`` (bytes, a file path or a binary file object) and pin it.

    ``recipients`` are X25519 public keys (32 bytes; :class:`Identity` objects
    are accepted too).  The envelope is signed with ``sender``'s Ethereum key.
    Paths and file objects are sealed through a temporary file, never fully in
    memory.  Returns ``Sealed(cid, sha256, size)``; commit ``cid`` and ``sha256``
    on chain.
    """
    if not isinstance(sender, Identity):
        raise TypeError("sender must be an Identity")
    if ctx.sender != sender.address:
        raise ContentError(
            f"context sender {ctx.sender} is not the sealing identity's address {sender.address}"
        )
    keys = [_recipient_key(r) for r in recipients]
    if isinstance(payload, (bytes, bytearray, memoryview)):
        blob = envelope.seal(payload, ctx, sender.account, keys, chunk_size=chunk_size)
        digest = hashlib.sha256(blob).hexdigest()
        cid = store.put(blob)
        return Sealed(cid, digest, len(blob))
    with tempfile.TemporaryFile(dir=tmp_dir) as tmp:
        writer = _HashingWriter(tmp, "<new>", None)
        if _is_path(payload):
            with open(payload, "rb") as src:
                envelope.seal_stream(src, writer, ctx, sender.account, keys, chunk_size=chunk_size)
        elif hasattr(payload, "read"):
            envelope.seal_stream(payload, writer, ctx, sender.account, keys, chunk_size=chunk_size)
        else:
            raise TypeError(f"payload must be bytes, a path or a binary file, got {type(payload).__name__}")
        tmp.flush()
        tmp.seek(0)
        cid = store.put(tmp)
        return Sealed(cid, writer.h.hexdigest(), writer.size)


def _check_limit(max_size: object) -> int:
    if isinstance(max_size, bool) or not isinstance(max_size, int) or max_size < 0:
        raise TypeError(f"max_size must be a non-negative integer (bytes), got {max_size!r}")
    return max_size


#: :func:`fetch_verified` fetches a blob into memory, not a temporary file, when its limit is at most this
#: (a 4.3M-parameter update is ~17 MB: the file's write, read back and deletion cost ~10-20 ms a fetch).
IN_MEMORY_BYTES = 64 << 20


def _fetch_to_temp(store, cid: str, expected: str, tmp: BinaryIO, max_size: int) -> None:
    """Stream ``cid`` into ``tmp`` and verify its sha256 (raises HashMismatch); rewinds ``tmp``."""
    writer = _HashingWriter(tmp, cid, max_size)
    store.get_to(cid, writer, max_size=max_size)
    actual = writer.h.hexdigest()
    if actual != expected:
        raise HashMismatch(cid, expected, actual)
    tmp.flush()
    tmp.seek(0)


def fetch_verified(
    store,
    cid: str,
    expected_sha256: str | bytes,
    ctx: EnvelopeContext,
    recipient: Identity,
    *,
    max_size: int,
    recipients: Sequence[bytes] | None = None,
    tmp_dir: PathLike | None = None,
) -> bytes:
    """Fetch ``cid``, check its sha256 against the on-chain value, open the envelope, return plaintext.

    ``ctx`` is the context the caller expects (its ``sender`` the address that
    committed the CID: the envelope must be signed by it).  ``max_size`` bounds
    the fetched blob (e.g. :func:`fedchain.validation.update_size_limit`);
    ``recipients``, when given, the exact set of X25519 keys it must be sealed for.
    A blob allowed up to :data:`IN_MEMORY_BYTES` is fetched into memory and opened there; a larger
    one goes through a temporary file in ``tmp_dir``, so what is held in memory is the plaintext.
    """
    expected = normalize_sha256(expected_sha256)
    max_size = _check_limit(max_size)
    if max_size <= IN_MEMORY_BYTES:
        buf = io.BytesIO()
        _fetch_to_temp(store, cid, expected, buf, max_size)
        return envelope.open_(buf.getbuffer(), ctx, recipient.x25519_private, recipients=recipients)
    with tempfile.TemporaryFile(dir=tmp_dir) as tmp:
        _fetch_to_temp(store, cid, expected, tmp, max_size)
        return envelope.open_(tmp, ctx, recipient.x25519_private, recipients=recipients)


def fetch_verified_to_file(
    store,
    cid: str,
    expected_sha256: str | bytes,
    ctx: EnvelopeContext,
    recipient: Identity,
    dest: PathLike,
    *,
    max_size: int,
    recipients: Sequence[bytes] | None = None,
) -> Path:
    """Like :func:`fetch_verified` but write the plaintext to ``dest``.

    ``dest`` appears (atomically) only once everything verified; memory use
    stays around two chunks whatever the size.
    """
    expected = normalize_sha256(expected_sha256)
    max_size = _check_limit(max_size)
    dest = Path(dest)
    fd, part = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with tempfile.TemporaryFile(dir=dest.parent) as tmp, os.fdopen(fd, "wb") as out:
            _fetch_to_temp(store, cid, expected, tmp, max_size)
            envelope.open_stream(tmp, out, ctx, recipient.x25519_private, recipients=recipients)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, dest)
    except BaseException:
        try:
            os.unlink(part)
        except FileNotFoundError:
            pass
        raise
    return dest


def fetch_model(
    store,
    cid: str,
    expected_sha256: str | bytes,
    ctx: EnvelopeContext,
    recipient: Identity,
    *,
    max_size: int,
    recipients: Sequence[bytes] | None = None,
    tmp_dir: PathLike | None = None,
) -> dict[str, torch.Tensor]:
    """:func:`fetch_verified` + canonical deserialization (:func:`fedchain.serialize.file_to_state_dict`).

    This checks the *format* only; to check an update against the plan's model
    (names, shapes, dtypes, finite values) use :func:`fedchain.validation.open_update`.
    """
    with tempfile.TemporaryDirectory(dir=tmp_dir) as d:
        path = fetch_verified_to_file(
            store, cid, expected_sha256, ctx, recipient, Path(d) / "model.safetensors",
            max_size=max_size, recipients=recipients,
        )
        return serialize.file_to_state_dict(path)


# --------------------------------------------------------------------------- public documents


def pin_document(store, data: bytes | bytearray | memoryview | PathLike) -> Pinned:
    """Pin a public (unencrypted) document; return ``Pinned(cid, sha256)``."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        data = bytes(data)
        return Pinned(store.put(data), hashlib.sha256(data).hexdigest())
    if _is_path(data):
        with open(data, "rb") as f:
            reader = _HashingReader(f)
            cid = store.put(reader)  # hash exactly the bytes the store consumed
        return Pinned(cid, reader.h.hexdigest())
    raise TypeError(f"data must be bytes or a path, got {type(data).__name__}")


def fetch_document(
    store,
    cid: str,
    expected_sha256: str | bytes,
    *,
    max_size: int,
) -> bytes:
    """Fetch a public document and return it only if its sha256 matches the on-chain value.

    ``max_size``: the most bytes the caller accepts (a plan:
    :data:`fedchain.plan.MAX_PLAN_BYTES`; an aggregate:
    :func:`fedchain.validation.model_size`; other small documents:
    :data:`MAX_DOCUMENT_SIZE`).
    """
    expected = normalize_sha256(expected_sha256)
    max_size = _check_limit(max_size)
    buf = io.BytesIO()
    writer = _HashingWriter(buf, cid, max_size)
    store.get_to(cid, writer, max_size=max_size)
    actual = writer.h.hexdigest()
    if actual != expected:
        raise HashMismatch(cid, expected, actual)
    return buf.getvalue()
