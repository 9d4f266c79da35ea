"""Chain errors as the project's own exceptions, and the one table of refusal phrases.

The phrases are not written here: each custom error's NatSpec ``@notice`` in the
Solidity interfaces (``contracts/src/I*.sol``), and each ``REASON_*`` constant's
``@notice`` in ``DatasetRegistry``, is its wording. solc carries them into the
artifacts' ``userdoc``; :data:`ERROR_PHRASES` and :data:`POLICY_REASONS` are read
from there, so the bindings (:class:`ChainRevert`), the node's refusals and the
CLI all say the same thing.

:class:`ChainRevert` carries the custom error's name (``.error``), its decoded
arguments (``.args_dict``, JSON-friendly) and its phrase (``.phrase``); its
message is the phrase followed by the arguments, e.g. ``not a member (0xf39F…2266)``.
The bindings raise it identically on every backend. :class:`ChainUnavailable`
means the node could not be reached.
"""

from __future__ import annotations

import re
from enum import IntEnum
from typing import Any

from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.errors import FedchainError

#: Phrases of the reverts that are not custom errors.
_GENERIC_PHRASES = {
    "Error": "reverted",
    "Panic": "contract panic",
    "Unknown": "reverted with unrecognised data",
}
_REASON_GETTER = re.compile(r"REASON_([A-Z0-9_]+)\(\)")


def _userdoc_phrases() -> tuple[dict[str, str], dict[str, str]]:
    errors: dict[str, str] = {}
    reasons: dict[str, str] = {}
    for name in CONTRACT_NAMES:
        doc = load_artifact(name).get("userdoc", {})
        for signature, entries in doc.get("errors", {}).items():
            notice = " ".join(e.get("notice", "") for e in entries).strip()
            if notice:
                errors[signature.split("(", 1)[0]] = notice
        for signature, entry in doc.get("methods", {}).items():
            m = _REASON_GETTER.fullmatch(signature)
            if m and entry.get("notice"):
                reasons[m.group(1)] = entry["notice"].strip()
    return errors, reasons


_ERRORS, _REASONS = _userdoc_phrases()

#: Custom error name -> readable phrase (from the contracts' NatSpec, plus Error/Panic/Unknown).
ERROR_PHRASES: dict[str, str] = {**_ERRORS, **_GENERIC_PHRASES}

#: Reason code of ``DatasetRegistry.admits`` / ``RoundsPolicyDenied`` -> phrase (from the
#: NatSpec of the ``REASON_<CODE>`` constants).
POLICY_REASONS: dict[str, str] = dict(_REASONS)


def policy_reason(code: str) -> str:
    """The phrase of a policy reason code (``"PURPOSE_NOT_ALLOWED"`` -> ``"purpose not allowed"``)."""
    return POLICY_REASONS.get(code, code.lower().replace("_", " "))


def reason_code(value: Any) -> str:
    """A reason code from its bytes32 form (bytes or 0x-hex, right-padded with zeros) or as given."""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).rstrip(b"\0").decode("ascii", "replace")
    if isinstance(value, str) and re.fullmatch(r"0x[0-9a-fA-F]{64}", value):
        return bytes.fromhex(value[2:]).rstrip(b"\0").decode("ascii", "replace")
    return str(value)


class ChainError(FedchainError):
    """Base of chain-related errors."""


class ChainUnavailable(ChainError):
    """The chain node at a URL could not be reached (or stopped answering)."""

    def __init__(self, url: str, detail: str = "") -> None:
        self.url = url
        self.detail = detail
        super().__init__(f"chain node unavailable at {url}" + (f": {detail}" if detail else ""))


class WouldSend(Exception):
    """A dry run reached the point of signing: the contract would accept the transaction.

    Raised by a deployment opened with ``Fedchain.dry_run()`` instead of sending, so
    any use case can be asked "would the contracts accept this now?" without a
    word of it repeated. Not a :class:`FedchainError` (it is no failure): callers
    that dry-run catch it; nothing else ever sees it.

    :ivar contract: the contract's name ("Proposals").
    :ivar function: the Solidity function ("vote").
    :ivar arguments: its arguments by their ABI names, in order, JSON-friendly (what would be signed).
    :ivar signer: the address that would sign.
    :ivar gas: the gas limit it would be sent with.
    """

    def __init__(self, contract: str, function: str, args: dict[str, Any], signer: str, gas: int) -> None:
        self.contract = contract
        self.function = function
        self.arguments = dict(args)
        self.signer = signer
        self.gas = gas
        super().__init__(f"{contract}.{function} as {signer} would be accepted ({gas} gas)")


class TransactionConflict(ChainError):
    """Another transaction of the same account took this one's nonce (two processes with one key).

    Nothing of this transaction happened; re-read the chain to see what the other one did.
    """


class ChainRevert(ChainError):
    """A transaction or call reverted.

    :ivar error: custom error name ("ConsortiumNotAMember"), or "Error"/"Panic"/"Unknown".
    :ivar args_dict: decoded arguments by name, JSON-friendly.
    :ivar phrase: the readable phrase for ``error`` (its NatSpec notice).
    :ivar data: the raw revert data as 0x-hex.
    """

    def __init__(self, error: str, args_dict: dict[str, Any] | None = None, data: str = "0x") -> None:
        self.error = error
        self.args_dict = dict(args_dict or {})
        self.phrase = ERROR_PHRASES.get(error, error)
        self.data = data
        super().__init__(format_revert(error, self.args_dict))


def _short(value: Any) -> str:
    if isinstance(value, IntEnum):
        return value.name
    if isinstance(value, str) and value.startswith("0x") and len(value) > 14:
        if len(value) == 66:  # bytes32: show a readable reason code as text
            raw = bytes.fromhex(value[2:]).rstrip(b"\0")
            if raw and all(0x20 <= b < 0x7F for b in raw):
                return raw.decode()
        return f"{value[:6]}…{value[-4:]}"
    return str(value)


def format_revert(error: str, args: dict[str, Any]) -> str:
    """``phrase (arg)`` for one argument, ``phrase (name value, …)`` for several.

    A policy refusal reads ``phrase: reason phrase (datasetId …)``.
    """
    phrase = ERROR_PHRASES.get(error, error)
    if error == "Error" and "message" in args:
        return f"reverted: {args['message']}"
    if error == "RoundsPolicyDenied" and "reason" in args:
        rest = {k: v for k, v in args.items() if k != "reason"}
        head = f"{phrase}: {policy_reason(reason_code(args['reason']))}"
        return f"{head} ({', '.join(_short(v) for v in rest.values())})" if rest else head
    if not args:
        return phrase
    if len(args) == 1:
        return f"{phrase} ({_short(next(iter(args.values())))})"
    return f"{phrase} ({', '.join(f'{k} {_short(v)}' for k, v in args.items())})"
