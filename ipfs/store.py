"""The content-store interface every backend implements."""

from __future__ import annotations

import abc
from typing import BinaryIO

from fedchain.errors import ContentUnavailable, FedchainError, SizeLimitExceeded


class StoreError(FedchainError):
    """Base class for content-store failures."""


class InvalidCid(StoreError, ContentUnavailable):
    """A string is not a CIDv0 (base58btc sha2-256 multihash, ``Qm…``)."""


class ContentNotFound(StoreError, ContentUnavailable):
    """The store does not hold (or could not fetch) the content or one of its blocks."""


class BlockCorrupt(StoreError):
    """A block's bytes do not hash to the CID they were stored or fetched under."""


class ContentMismatch(BlockCorrupt):
    """A daemon returned content (or a CID) that does not match what was asked for / sent."""


class InvalidDag(StoreError, ContentUnavailable):
    """Authentic blocks that are not a UnixFS file DAG this code can read (e.g. a directory)."""


class DagSizeMismatch(InvalidDag):
    """A DAG node's sizes disagree: its children's sizes do not add up to its own, or it holds
    more (or less) than its parent's ``blocksizes`` entry for it says.

    Raised when the node is decoded, before any byte under it is produced, so a DAG can
    never expand beyond the size its root declares.
    """


class DagTooComplex(InvalidDag):
    """A DAG needs more blocks than its size could justify (many tiny or empty leaves)."""


class ContentTooLarge(StoreError, SizeLimitExceeded):
    """The content (as its root declares it, or as it streams in) exceeds the caller's ``max_size``."""

    def __init__(self, cid: str, limit: int, size: int | None = None):
        what = f"declares {size} bytes" if size is not None else "is larger"
        super().__init__(f"content {cid} {what}, more than the limit of {limit} bytes")
        self.cid, self.limit, self.size = cid, limit, size


class NotPinned(StoreError):
    """``unpin`` of a CID that is not pinned (directly or recursively)."""


class StoreUnavailable(StoreError):
    """The IPFS daemon is down, unreachable or timed out."""


class ContentStore(abc.ABC):
    """Content-addressed storage: bytes in, CID out; CID in, verified bytes out.

    CIDs are CIDv0 strings (``Qm…``), exactly what ``ipfs add`` (default
    settings: 256 KiB chunks, balanced DAG, 174 links per node) returns.

    Readers of content another party pinned pass ``max_size``: the read fails with
    :class:`ContentTooLarge` before more than ``max_size`` bytes are produced (a DAG
    whose root declares more fails before the first byte), and with
    :class:`DagSizeMismatch` when a node's sizes disagree with its parent's.
    """

    @abc.abstractmethod
    def put(self, data: bytes | BinaryIO, *, pin: bool = True) -> str:
        """Store bytes (or a binary stream, read in chunks) and return the CID."""

    @abc.abstractmethod
    def get(self, cid: str, *, max_size: int | None = None) -> bytes:
        """Return the whole content of ``cid``; raise a StoreError if absent, corrupt or too large."""

    @abc.abstractmethod
    def get_to(self, cid: str, out: BinaryIO, *, max_size: int | None = None) -> int:
        """Stream the content of ``cid`` into ``out``; return the number of bytes written.

        With ``max_size``, at most that many bytes are ever written to ``out``.
        """

    @abc.abstractmethod
    def has(self, cid: str) -> bool:
        """True when the store holds the whole content of ``cid`` locally."""

    @abc.abstractmethod
    def pin(self, cid: str) -> None:
        """Pin ``cid`` so it survives garbage collection."""

    @abc.abstractmethod
    def unpin(self, cid: str) -> None:
        """Remove the pin on ``cid`` (the content may then be collected)."""

    @abc.abstractmethod
    def is_pinned(self, cid: str) -> bool:
        """True when ``cid`` is pinned (directly or recursively)."""

    def pins(self) -> list[str]:
        """The CIDs pinned directly or recursively (not the blocks pinned through them)."""
        raise NotImplementedError(f"{type(self).__name__} does not list pins")

    def close(self) -> None:  # pragma: no cover - default no-op
        """Release any connection the store holds."""

    def __enter__(self) -> "ContentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
