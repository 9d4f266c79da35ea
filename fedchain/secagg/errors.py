"""Named errors of secure aggregation.

Every failure a party can provoke (a malformed or tampered message, a message
for another round, a request that breaks the protocol, too many dropouts) is
one of these; all derive from :class:`fedchain.errors.FedchainError`.
"""

from __future__ import annotations

from fedchain.errors import FedchainError

__all__ = [
    "SecAggError",
    "SecAggConfigError",
    "SecAggInputError",
    "SecAggFormatError",
    "SecAggVersionError",
    "SecAggProtocolError",
    "SecAggAuthenticationError",
    "SecAggDropoutError",
    "SecAggReconstructionError",
]


class SecAggError(FedchainError):
    """Base class of every secure-aggregation error."""


class SecAggConfigError(SecAggError):
    """Round parameters are invalid (threshold, degree, ring size, overflow bound)."""


class SecAggInputError(SecAggError):
    """A model vector cannot be encoded (wrong length or shape, NaN or infinity)."""


class SecAggFormatError(SecAggError):
    """Bytes are not a well-formed message (magic, type, length, order, bounds)."""


class SecAggVersionError(SecAggFormatError):
    """A message declares a format version this code does not speak."""


class SecAggProtocolError(SecAggError):
    """A well-formed message breaks the protocol: wrong round, wrong phase, wrong
    sender or recipient set, or a request that would reveal too much."""


class SecAggAuthenticationError(SecAggError):
    """An encrypted share did not authenticate (tampered, re-addressed or for another round)."""


class SecAggDropoutError(SecAggError):
    """Too few participants are left (or too few shares arrived) to reach the threshold."""


class SecAggReconstructionError(SecAggError):
    """Shares were enough in number but no set of them reconstructs a secret that
    matches its public commitment (a revealed share was wrong)."""
