"""Values in and out of the contracts: ids and hashes, JSON-friendly decoding, custom errors.

web3 encodes calls, decodes results and events (``decode_tuples`` gives structs their
field names); this module adds what web3 does not do:

* the project's value conventions (dataset ids from names, purpose hashes, the
  commitment hash ``Rounds`` stores) and argument checking with clear errors;
* JSON-friendly event arguments (0x-hex for bytes, checksummed addresses, dicts
  for structs, Python enums for Solidity enums);
* custom-error decoding: revert data -> :class:`~fedchain.contracts.errors.ChainRevert`
  with the error's name, decoded arguments and phrase, from the revert *data*
  alone, so it is the same on every backend.
"""

from __future__ import annotations

import re
from enum import IntEnum
from functools import lru_cache
from typing import Any, Mapping

from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import abi_to_signature, function_signature_to_4byte_selector, keccak, to_checksum_address
from eth_utils.abi import get_abi_input_types
import rlp

from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.contracts.errors import ChainError, ChainRevert
from fedchain.contracts.models import SOLIDITY_ENUMS, MotionState

ZERO32 = b"\0" * 32


# ------------------------------------------------------------ project values


def purpose_hash(purpose: str | bytes) -> bytes:
    """keccak256 of a purpose string (a 32-byte value is taken as the hash already)."""
    if isinstance(purpose, bytes):
        if len(purpose) != 32:
            raise ValueError("a purpose hash must be 32 bytes")
        return purpose
    return keccak(text=purpose)


def dataset_id(name_or_id: str | bytes) -> bytes:
    """Dataset id: keccak256 of the name; a 32-byte value or 0x+64-hex string is an id already."""
    if isinstance(name_or_id, (bytes, bytearray)):
        if len(name_or_id) != 32:
            raise ValueError("a dataset id must be 32 bytes")
        return bytes(name_or_id)
    if re.fullmatch(r"0x[0-9a-fA-F]{64}", name_or_id):
        return bytes.fromhex(name_or_id[2:])
    return keccak(text=name_or_id)


def commitment_hash(dataset: str | bytes, cid: str, sha256: bytes | str, sample_count: int) -> bytes:
    """The hash ``Rounds`` stores for an update commitment (same as ``Rounds.commitmentHash``)."""
    return keccak(
        abi_encode(
            ["bytes32", "bytes32", "bytes32", "uint64"],
            [dataset_id(dataset), keccak(text=cid), b32(sha256, "sha256"), sample_count],
        )
    )


def b32(value: bytes | str, what: str = "value") -> bytes:
    """32 bytes from bytes or (0x-)hex, else ValueError naming ``what``."""
    if isinstance(value, str):
        text = value[2:] if value.startswith("0x") else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{what} must be 32 bytes or 64 hex digits") from None
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


def addr(value: str) -> str:
    """A checksummed address, else ValueError."""
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"not an address: {value!r}") from None


def as_account(value: LocalAccount | str | bytes) -> LocalAccount:
    """A LocalAccount from itself or a private key."""
    if isinstance(value, LocalAccount):
        return value
    return Account.from_key(value)


def hexstr(value: Any) -> str:
    """0x-hex of bytes / HexBytes / hex text."""
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


# ---------------------------------------------------------- JSON-friendly


def jsonify(param: Mapping[str, Any], value: Any, contract: str = "") -> Any:
    """A decoded ABI value as JSON-friendly data, guided by its ABI ``param``.

    bytes -> 0x-hex, addresses checksummed, structs -> dicts by field name, arrays ->
    lists, Solidity enums -> Python IntEnums (a VoteState of ``Consortium`` is a
    :class:`MotionState`).
    """
    t = param["type"]
    if t.endswith("]"):
        inner = dict(param, type=t[: t.rindex("[")])
        return [jsonify(inner, v, contract) for v in value]
    if t == "tuple":
        comps = param["components"]
        if isinstance(value, Mapping):
            return {c["name"]: jsonify(c, value[c["name"]], contract) for c in comps}
        return {c["name"]: jsonify(c, v, contract) for c, v in zip(comps, value)}
    if t == "address":
        return to_checksum_address(value)
    if t.startswith("bytes"):
        return "0x" + bytes(value).hex()
    internal = param.get("internalType", "")
    enum: type[IntEnum] | None = SOLIDITY_ENUMS.get(internal)
    if enum is not None and contract == "Consortium" and internal.endswith(".VoteState"):
        enum = MotionState
    if enum is not None:
        try:
            return enum(value)
        except ValueError:
            return value
    return value


def jsonify_args(inputs: list[Mapping[str, Any]], values: Mapping[str, Any], contract: str = "") -> dict[str, Any]:
    """Named ABI values (an event's or error's arguments), in declaration order, JSON-friendly."""
    return {i["name"]: jsonify(i, values[i["name"]], contract) for i in inputs}


# --------------------------------------------------------------- errors


@lru_cache(maxsize=1)
def _error_table() -> dict[bytes, tuple[str, dict[str, Any]]]:
    """4-byte selector -> (contract, error ABI) over the custom errors of all the contracts."""
    table: dict[bytes, tuple[str, dict[str, Any]]] = {}
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract)["abi"]:
            if item["type"] != "error":
                continue
            selector = function_signature_to_4byte_selector(abi_to_signature(item))
            known = table.get(selector)
            if known is not None and known[1] != item:
                raise ChainError(f"error {abi_to_signature(item)} is declared differently in two contracts")
            table.setdefault(selector, (contract, item))
    return table


_ERROR_STRING = function_signature_to_4byte_selector("Error(string)")
_PANIC = function_signature_to_4byte_selector("Panic(uint256)")


def decode_revert(data: bytes) -> ChainRevert:
    """Revert data -> ChainRevert: a custom error of ours, ``Error(string)``, ``Panic`` or Unknown."""
    data = bytes(data)
    hexdata = "0x" + data.hex()
    selector, body = data[:4], data[4:]
    try:
        if selector == _ERROR_STRING:
            (msg,) = abi_decode(["string"], body)
            return ChainRevert("Error", {"message": msg}, hexdata)
        if selector == _PANIC:
            (code,) = abi_decode(["uint256"], body)
            return ChainRevert("Panic", {"code": code}, hexdata)
        found = _error_table().get(selector)
        if found is not None:
            contract, item = found
            values = abi_decode(get_abi_input_types(item), body)
            args = {i["name"]: jsonify(i, v, contract) for i, v in zip(item["inputs"], values)}
            return ChainRevert(item["name"], args, hexdata)
    except Exception:  # noqa: BLE001 - malformed data: reported as Unknown below
        pass
    return ChainRevert("Unknown", {"data": hexdata} if data else {}, hexdata)


def create_address(sender: str, nonce: int) -> str:
    """The address of the contract ``sender`` creates with its transaction of ``nonce`` (CREATE)."""
    return addr("0x" + keccak(rlp.encode([bytes.fromhex(addr(sender)[2:]), int(nonce)]))[12:].hex())
