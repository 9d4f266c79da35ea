"""The project's exception hierarchy.

Every error a user can provoke derives from :class:`FedchainError`; the CLI
prints its message (no stack trace) and exits non-zero.
"""


class FedchainError(Exception):
    """Base class for every error fedchain reports to a user."""


class ConfigError(FedchainError):
    """A configuration, plan or input file is missing or invalid."""


class SizeLimitExceeded(FedchainError):
    """Untrusted content is (or declares itself) larger than the caller's limit.

    Raised while streaming, before the excess is produced: by the content stores
    (:class:`fedchain.ipfs.ContentTooLarge`) and by :mod:`fedchain.content`
    (:class:`fedchain.content.ContentTooLarge`); catch this base class to handle both.
    """


class ContentUnavailable(FedchainError):
    """The content a CID names cannot be had as committed: absent, an invalid CID, or not a
    valid file DAG. The stores' ``ContentNotFound``, ``InvalidCid`` and ``InvalidDag`` derive
    from it, so core code can tell "the member's content is not there" from "our own store
    is down" (``StoreUnavailable``, which does not)."""
