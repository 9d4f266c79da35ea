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
