"""The typed façade over fedchain's contracts - the only module that talks to web3.

Backends, chosen by URL in :meth:`Chain.connect`:

* ``eth-tester://`` - an in-process chain (eth-tester + py-evm), fresh per connect;
* ``http://…`` / ``https://…`` - any JSON-RPC node (anvil, geth, Besu).

Transactions are always signed locally with an ``eth_account`` LocalAccount and
sent raw, so dev keys and keystores behave the same everywhere. Before sending,
each transaction is simulated against the pending block (``eth_estimateGas``;
``eth_call`` on eth-tester); a revert becomes
:class:`~contracts.errors.ChainRevert` carrying the custom error's name and
decoded arguments, identically on every backend. Unreachable nodes raise
:class:`~contracts.errors.ChainUnavailable`.

Typical use::

    chain = Chain.connect("eth-tester://")
    alice, bob, coord = chain.dev_accounts[:3]
    dep = chain.deploy(alice, founders=[FounderSpec("A", alice.address, key_a), ...],
                       coordinator=coord.address)
    fc = chain.attach(dep).as_(alice)
    pid = fc.submit_proposal(...).value
"""

from __future__ import annotations

import ast
import dataclasses
import re
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import requests
from eth_abi import decode as abi_decode
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from web3 import EthereumTesterProvider, HTTPProvider, Web3
from web3.exceptions import ProviderConnectionError, TransactionNotFound, Web3Exception

from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.contracts.errors import (
    ERROR_PHRASES,
    POLICY_REASONS,
    ChainError,
    ChainRevert,
    ChainUnavailable,
)
from fedchain.contracts.models import (
    SOLIDITY_ENUMS,
    Admission,
    ChainEvent,
    DatasetInfo,
    Deployment,
    DeploymentError,
    Evaluation,
    FounderSpec,
    MemberInfo,
    MotionInfo,
    MotionKind,
    MotionState,
    Policy,
    ProposalInfo,
    ProposalState,
    RoundInfo,
    RoundPhase,
    TxResult,
    UpdateCommitment,
    Vote,
    VotingParams,
)
from fedchain.errors import FedchainError
# DEV ONLY: anvil's ten public dev keys, defined once with the identities.
from fedchain.identity import DEV_MNEMONIC, DEV_PRIVATE_KEYS  # noqa: F401  (re-exported)

__all__ = [
    "Admission", "Chain", "ChainError", "ChainEvent", "ChainRevert", "ChainUnavailable",
    "DEV_MNEMONIC", "DEV_PRIVATE_KEYS", "DatasetInfo", "Deployment", "DeploymentError",
    "ERROR_PHRASES", "Evaluation", "Fedchain", "FounderSpec", "MemberInfo", "MotionInfo", "MotionKind",
    "MotionState", "POLICY_REASONS", "Policy", "ProposalInfo", "ProposalState", "RoundInfo",
    "RoundPhase", "TxResult", "UpdateCommitment", "Vote", "VotingParams", "commitment_hash", "dataset_id",
    "purpose_hash",
]

#: Balance given to each dev account on eth-tester (anvil prefunds its own).
DEV_FUNDING_WEI = 10_000 * 10**18

_ZERO32 = b"\0" * 32
_GAS_MARGIN = 1.25  # on top of eth_estimateGas
_TESTER_GAS_LIMIT = 15_000_000  # per-transaction ceiling on eth-tester (see Chain._simulate)
_CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
)


# ---------------------------------------------------------------- helpers


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
            [dataset_id(dataset), keccak(text=cid), _b32(sha256, "sha256"), sample_count],
        )
    )


def _b32(value: bytes | str, what: str = "value") -> bytes:
    if isinstance(value, str):
        text = value[2:] if value.startswith("0x") else value
        try:
            value = bytes.fromhex(text)
        except ValueError:
            raise ValueError(f"{what} must be 32 bytes or 64 hex digits") from None
    if not isinstance(value, (bytes, bytearray)) or len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes")
    return bytes(value)


def _addr(value: str) -> str:
    try:
        return to_checksum_address(value)
    except (ValueError, TypeError):
        raise ValueError(f"not an address: {value!r}") from None


def _account(value: LocalAccount | str | bytes) -> LocalAccount:
    if isinstance(value, LocalAccount):
        return value
    return Account.from_key(value)


def _abi_type(param: dict[str, Any]) -> str:
    t = param["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in param["components"]) + ")" + t[len("tuple"):]
    return t


def _jsonify(param: dict[str, Any], value: Any) -> Any:
    """ABI value -> JSON-friendly value (hex for bytes, dicts for structs, IntEnum for enums)."""
    t = param["type"]
    if t.endswith("]"):
        inner = dict(param, type=t[: t.rindex("[")])
        return [_jsonify(inner, v) for v in value]
    if t == "tuple":
        return {c["name"]: _jsonify(c, v) for c, v in zip(param["components"], value)}
    if t == "address":
        return to_checksum_address(value)
    if t.startswith("bytes"):
        return "0x" + bytes(value).hex()
    enum = SOLIDITY_ENUMS.get(param.get("internalType", ""))
    if enum is not None:
        try:
            return enum(value)
        except ValueError:
            return value
    return value


def _topic(value: int) -> str:
    """An indexed integer argument as a log topic."""
    return "0x" + int(value).to_bytes(32, "big").hex()


def _is_dynamic(t: str) -> bool:
    return t in ("string", "bytes") or t.endswith("]") or t.startswith("tuple")


class _Codec:
    """Event and custom-error tables of all four contracts."""

    def __init__(self, abis: dict[str, list[dict[str, Any]]]) -> None:
        self.events: dict[tuple[str, bytes], dict[str, Any]] = {}  # (contract, topic0) -> abi
        self.errors: dict[bytes, dict[str, Any]] = {}  # selector -> abi
        for contract, abi in abis.items():
            for item in abi:
                sig = f"{item.get('name')}({','.join(_abi_type(i) for i in item.get('inputs', []))})"
                if item["type"] == "event":
                    self.events[(contract, keccak(text=sig))] = item
                elif item["type"] == "error":
                    selector = keccak(text=sig)[:4]
                    known = self.errors.get(selector)
                    if known is not None and [i["name"] for i in known["inputs"]] != [
                        i["name"] for i in item["inputs"]
                    ]:
                        raise ChainError(f"error {sig} is declared with different argument names")
                    self.errors[selector] = item

    def decode_log(self, contract: str, log: Any) -> ChainEvent | None:
        topics = [bytes(t) for t in log["topics"]]
        if not topics:
            return None
        item = self.events.get((contract, topics[0]))
        if item is None:
            return None
        args: dict[str, Any] = {}
        indexed = [i for i in item["inputs"] if i["indexed"]]
        plain = [i for i in item["inputs"] if not i["indexed"]]
        for param, topic in zip(indexed, topics[1:]):
            if _is_dynamic(param["type"]):
                args[param["name"]] = "0x" + topic.hex()  # only its hash is logged
            else:
                (value,) = abi_decode([_abi_type(param)], topic)
                args[param["name"]] = _jsonify(param, value)
        values = abi_decode([_abi_type(p) for p in plain], bytes(log["data"]))
        for param, value in zip(plain, values):
            args[param["name"]] = _jsonify(param, value)
        ordered = {i["name"]: args[i["name"]] for i in item["inputs"]}
        tx_hash = log["transactionHash"]
        return ChainEvent(
            block_number=int(log["blockNumber"]),
            tx_hash=tx_hash if isinstance(tx_hash, str) else "0x" + bytes(tx_hash).hex(),
            log_index=int(log["logIndex"]),
            contract=contract,
            event=item["name"],
            args=ordered,
        )

    def topic(self, contract: str, event: str) -> bytes:
        """topic0 of ``contract.event``."""
        for (name, topic0), item in self.events.items():
            if name == contract and item["name"] == event:
                return topic0
        raise KeyError(f"{contract} has no event {event}")

    def revert(self, data: bytes) -> ChainRevert:
        hexdata = "0x" + data.hex()
        selector, body = data[:4], data[4:]
        try:
            if selector == keccak(text="Error(string)")[:4]:
                (msg,) = abi_decode(["string"], body)
                return ChainRevert("Error", {"message": msg}, hexdata)
            if selector == keccak(text="Panic(uint256)")[:4]:
                (code,) = abi_decode(["uint256"], body)
                return ChainRevert("Panic", {"code": code}, hexdata)
            item = self.errors.get(selector)
            if item is not None:
                values = abi_decode([_abi_type(i) for i in item["inputs"]], body)
                args = {i["name"]: _jsonify(i, v) for i, v in zip(item["inputs"], values)}
                return ChainRevert(item["name"], args, hexdata)
        except Exception:  # malformed data: fall through to Unknown
            pass
        return ChainRevert("Unknown", {"data": hexdata} if data else {}, hexdata)


def _revert_data(exc: BaseException) -> bytes | None:
    """Revert data carried by a web3 / eth-tester exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, dict):
        data = data.get("data")
    if isinstance(data, str) and re.fullmatch(r"0x[0-9a-fA-F]*", data):
        return bytes.fromhex(data[2:])
    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    # eth-tester: TransactionFailed("execution reverted: b'\\x02h\\xf9)…'")
    text = str(exc.args[0]) if exc.args else ""
    m = re.search(r"execution reverted: (b'.*'|b\".*\")\s*$", text, re.S)
    if m:
        try:
            value = ast.literal_eval(m.group(1))
        except (ValueError, SyntaxError):
            return None
        return value if isinstance(value, bytes) else None
    if re.search(r"execution reverted\s*$", text) or text.strip() == "execution reverted: ":
        return b""
    return None


# ------------------------------------------------------------------- Chain


class Chain:
    """A connection to one chain: accounts, blocks, dev controls, deployment."""

    def __init__(self, w3: Web3, url: str, tester: Any = None) -> None:
        self.w3 = w3
        self.url = url
        self._tester = tester
        self._lock = threading.RLock()
        self._chain_id: int | None = None
        #: Seconds to wait for a transaction to be mined.
        self.tx_timeout = 120.0
        # Caches of immutable chain facts (see Fedchain._with_details).
        self._block_times: dict[int, int] = {}
        self._tx_gas: dict[str, int] = {}
        #: The dev accounts (DEV ONLY keys), funded on eth-tester.
        self.dev_accounts: list[LocalAccount] = [Account.from_key(k) for k in DEV_PRIVATE_KEYS]

    # ------------------------------------------------------------ connect

    @classmethod
    def connect(cls, url: str = "eth-tester://", *, timeout: float = 30.0) -> "Chain":
        """Connect by URL: ``eth-tester://`` (new in-process chain) or ``http(s)://host:port``."""
        if url.startswith("eth-tester://"):
            from eth_tester import EthereumTester, PyEVMBackend

            tester = EthereumTester(PyEVMBackend())
            chain = cls(Web3(EthereumTesterProvider(tester)), url, tester)
            chain._fund_dev_accounts()
            return chain
        if url.startswith(("http://", "https://")):
            chain = cls(Web3(HTTPProvider(url, request_kwargs={"timeout": timeout})), url)
            chain.chain_id  # noqa: B018 - probe: raises ChainUnavailable
            return chain
        raise ChainUnavailable(url, "unsupported URL (use eth-tester:// or http(s)://host:port)")

    def _fund_dev_accounts(self) -> None:
        funder = self._tester.get_accounts()[0]
        for acct in self.dev_accounts:
            self.w3.eth.send_transaction({"from": funder, "to": acct.address, "value": DEV_FUNDING_WEI})

    @property
    def is_tester(self) -> bool:
        """Whether this is the in-process eth-tester backend."""
        return self._tester is not None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except _CONNECTION_ERRORS as exc:
            raise ChainUnavailable(self.url, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """Raw JSON-RPC request; returns ``result`` or raises :class:`ChainError`."""
        with self._guard():
            resp = self.w3.provider.make_request(method, params or [])
        if "error" in resp:
            raise ChainError(f"{method} failed: {resp['error']}")
        return resp.get("result")

    # -------------------------------------------------------------- state

    @property
    def chain_id(self) -> int:
        """The chain id."""
        if self._chain_id is None:
            with self._guard():
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    @property
    def block_number(self) -> int:
        """The latest block number."""
        with self._guard():
            return int(self.w3.eth.block_number)

    @property
    def block_timestamp(self) -> int:
        """Timestamp (unix seconds) of the latest block."""
        with self._guard():
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def balance(self, address: str) -> int:
        """Balance of ``address`` in wei."""
        with self._guard():
            return int(self.w3.eth.get_balance(_addr(address)))

    # ---------------------------------------------------------- dev only

    def mine(self, n: int = 1) -> int:
        """DEV: mine ``n`` empty blocks (eth-tester, anvil; ``evm_mine`` elsewhere); returns the new height."""
        if n <= 0:
            return self.block_number
        if self._tester is not None:
            self._tester.mine_blocks(n)
        else:
            try:
                self.rpc("anvil_mine", [hex(n)])
            except ChainError:
                for _ in range(n):
                    self.rpc("evm_mine", [])
        return self.block_number

    def advance_time(self, seconds: int) -> int:
        """DEV: move the chain clock ``seconds`` forward and mine a block; returns its timestamp."""
        if self._tester is not None:
            # eth-tester mines the travel block one second before the target
            target = self.block_timestamp + int(seconds) + 1
            pending = int(self._tester.get_block_by_number("pending")["timestamp"])
            self._tester.time_travel(max(target, pending + 1))
        else:
            self.rpc("evm_increaseTime", [int(seconds)])
            self.rpc("evm_mine", [])
        return self.block_timestamp

    def snapshot(self) -> Any:
        """DEV: snapshot the chain state; pass the id to :meth:`revert`."""
        if self._tester is not None:
            return self._tester.take_snapshot()
        return self.rpc("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        """DEV: return to a snapshot (on anvil a snapshot can be reverted to only once)."""
        self._block_times.clear()  # block numbers will be reused by other blocks
        self._tx_gas.clear()
        if self._tester is not None:
            self._tester.revert_to_snapshot(snapshot_id)
            return
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainError(f"evm_revert({snapshot_id}) failed")

    def fund(self, address: str, wei: int, sender: LocalAccount | None = None) -> TxResult:
        """DEV: send ``wei`` to ``address`` from ``sender`` (default dev account 0)."""
        receipt = self.transact(sender or self.dev_accounts[0], _addr(address), b"", value=wei)
        return TxResult(_hex(receipt["transactionHash"]), receipt["blockNumber"], receipt["gasUsed"])

    # ------------------------------------------------------- transactions

    def _fees(self) -> dict[str, int]:
        block = self.w3.eth.get_block("latest")
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        tip = 10**9
        return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}

    def transact(
        self,
        account: LocalAccount,
        to: str | None,
        data: bytes | str,
        *,
        value: int = 0,
        codec: "_Codec | None" = None,
    ) -> Any:
        """Simulate, sign, send and wait for one transaction; returns its receipt.

        A revert in the simulation (or of the mined transaction) raises
        :class:`ChainRevert`, decoded with ``codec`` when given.
        """
        codec = codec or _default_codec()
        data_hex = data if isinstance(data, str) else "0x" + bytes(data).hex()
        tx: dict[str, Any] = {"from": account.address, "data": data_hex, "value": value}
        if to is not None:
            tx["to"] = to
        with self._lock, self._guard():
            try:
                gas = self._simulate(tx)
            except _CONNECTION_ERRORS:
                raise
            except Exception as exc:  # revert, or node refused the transaction
                raise self._rejection(exc, codec) from None
            tx.update(self._fees())
            tx["gas"] = gas
            tx["nonce"] = self._nonce(account.address)
            tx["chainId"] = self.chain_id
            signed = account.sign_transaction(tx)
            try:
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            except _CONNECTION_ERRORS:
                raise
            except Exception as exc:
                raise self._rejection(exc, codec) from None
            receipt = self._wait_for_receipt(tx_hash)
        if receipt["status"] != 1:
            raise self._replay_failure(tx, receipt, codec)
        return receipt

    def _simulate(self, tx: dict[str, Any]) -> int:
        """Run ``tx`` without committing it; returns the gas limit to send it with.

        Simulation happens in the context of the block the transaction will land
        in, "pending" (with "latest", anvil and eth-tester's eth_call use the
        latest block's number, so a deadline check could pass in the simulation
        and fail when mined). On eth-tester a single ``eth_call`` replaces the
        estimate's binary search (about ten executions) and the limit is a fixed
        ceiling - gas used, and so every number we report, is unaffected.
        """
        if self.is_tester:
            self.w3.eth.call({**tx, "gas": _TESTER_GAS_LIMIT}, "pending")
            return _TESTER_GAS_LIMIT
        gas = self.w3.eth.estimate_gas(tx, "pending")
        return int(gas * _GAS_MARGIN) + 10_000

    def _wait_for_receipt(self, tx_hash: Any) -> Any:
        """Poll for the receipt: quickly at first (anvil mines within milliseconds), then backing off."""
        deadline = time.monotonic() + self.tx_timeout
        delay = 0.002
        while True:
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            if time.monotonic() > deadline:
                raise ChainError(f"transaction {_hex(tx_hash)} not mined within {self.tx_timeout:.0f}s")
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    def _nonce(self, address: str) -> int:
        try:
            return int(self.w3.eth.get_transaction_count(address, "pending"))
        except _CONNECTION_ERRORS:
            raise
        except Exception:
            return int(self.w3.eth.get_transaction_count(address, "latest"))

    def _rejection(self, exc: BaseException, codec: "_Codec") -> FedchainError:
        data = _revert_data(exc)
        if data is not None:
            return codec.revert(data)
        message = str(exc.args[0] if exc.args else exc)
        if isinstance(exc, Web3Exception) and hasattr(exc, "message"):
            message = str(getattr(exc, "message"))
        return ChainError(f"transaction rejected by {self.url}: {message}")

    def _replay_failure(self, tx: dict[str, Any], receipt: Any, codec: "_Codec") -> FedchainError:
        """A mined transaction failed (state changed after the simulation): find out why."""
        call = {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except _CONNECTION_ERRORS:
            raise
        except Exception as exc:
            rejection = self._rejection(exc, codec)
            if isinstance(rejection, ChainRevert):
                return rejection
        return ChainError(f"transaction {_hex(receipt['transactionHash'])} failed (out of gas or state changed)")

    # ------------------------------------------------------------- deploy

    def deploy(
        self,
        deployer: LocalAccount | str,
        founders: Sequence[FounderSpec],
        coordinator: str,
        *,
        voting_period_blocks: int = 20,
        quorum_bps: int = 5000,
        approval_bps: int = 5001,
    ) -> Deployment:
        """Deploy Consortium, Proposals, DatasetRegistry and Rounds; returns the :class:`Deployment`.

        ``quorum_bps``: minimum turnout (yes+no+abstain) in basis points of eligible
        members; ``approval_bps``: minimum yes/(yes+no) in basis points
        (5001 = strict majority).
        """
        account = _account(deployer)
        codec = _default_codec()
        founder_tuples = [(f.name, _addr(f.address), _b32(f.x25519_pub, "x25519_pub")) for f in founders]
        rules = (voting_period_blocks, quorum_bps, approval_bps)
        addresses: dict[str, str] = {}
        deploy_gas: dict[str, int] = {}
        first_block = None
        ctor_args: dict[str, list[Any]] = {
            "Consortium": [founder_tuples, _addr(coordinator), rules],
        }
        for name in CONTRACT_NAMES:
            if name == "Proposals":
                ctor_args[name] = [addresses["Consortium"]]
            elif name == "DatasetRegistry":
                ctor_args[name] = [addresses["Consortium"], addresses["Proposals"]]
            elif name == "Rounds":
                ctor_args[name] = [addresses["Consortium"], addresses["Proposals"], addresses["DatasetRegistry"]]
            art = load_artifact(name)
            ctor = next((i for i in art["abi"] if i["type"] == "constructor"), {"inputs": []})
            encoded = abi_encode([_abi_type(i) for i in ctor["inputs"]], ctor_args[name])
            receipt = self.transact(account, None, art["bytecode"] + encoded.hex(), codec=codec)
            addresses[name] = to_checksum_address(receipt["contractAddress"])
            deploy_gas[name] = int(receipt["gasUsed"])
            first_block = first_block or int(receipt["blockNumber"])
        return Deployment(
            chain_id=self.chain_id,
            addresses=addresses,
            deploy_block=int(first_block or 0),
            params={
                "voting_period_blocks": voting_period_blocks,
                "quorum_bps": quorum_bps,
                "approval_bps": approval_bps,
                "coordinator": _addr(coordinator),
                "deployer": account.address,
                "deploy_gas": deploy_gas,
                "founders": [
                    {"name": f.name, "address": _addr(f.address), "x25519_pub": "0x" + _b32(f.x25519_pub).hex()}
                    for f in founders
                ],
            },
        )

    def is_deployed(self, deployment: Deployment) -> bool:
        """Whether ``deployment`` is on this chain (same chain id, code at every address)."""
        if deployment.chain_id != self.chain_id:
            return False
        with self._guard():
            return all(
                name in deployment.addresses and bool(self.w3.eth.get_code(_addr(deployment.addresses[name])))
                for name in CONTRACT_NAMES
            )

    def attach(self, deployment: Deployment, account: LocalAccount | str | None = None) -> "Fedchain":
        """The façade over an existing deployment (checks chain id and that code exists)."""
        if deployment.chain_id != self.chain_id:
            raise DeploymentError(
                f"deployment is for chain {deployment.chain_id}, but {self.url} is chain {self.chain_id}"
            )
        missing = [n for n in CONTRACT_NAMES if n not in deployment.addresses]
        if missing:
            raise DeploymentError(f"deployment lacks {', '.join(missing)}")
        with self._guard():
            for name in CONTRACT_NAMES:
                if not self.w3.eth.get_code(_addr(deployment.addresses[name])):
                    raise DeploymentError(f"no contract code for {name} at {deployment.addresses[name]} on {self.url}")
        return Fedchain(self, deployment, _account(account) if account is not None else None)


def _hex(value: Any) -> str:
    if isinstance(value, str):
        return value if value.startswith("0x") else "0x" + value
    return "0x" + bytes(value).hex()


_CODEC: _Codec | None = None


def _default_codec() -> _Codec:
    global _CODEC
    if _CODEC is None:
        _CODEC = _Codec({name: load_artifact(name)["abi"] for name in CONTRACT_NAMES})
    return _CODEC


# ---------------------------------------------------------------- Fedchain


class Fedchain:
    """Typed access to one deployment, optionally signing as one account (see :meth:`as_`)."""

    def __init__(self, chain: Chain, deployment: Deployment, account: LocalAccount | None = None) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self._codec = _default_codec()
        self._contracts = {
            name: chain.w3.eth.contract(address=_addr(deployment.addresses[name]), abi=load_artifact(name)["abi"])
            for name in CONTRACT_NAMES
        }
        self._by_address = {_addr(a).lower(): n for n, a in deployment.addresses.items() if n in CONTRACT_NAMES}

    def as_(self, account: LocalAccount | str | bytes) -> "Fedchain":
        """The same façade signing as ``account`` (LocalAccount or private key)."""
        other = object.__new__(Fedchain)
        other.__dict__.update(self.__dict__)  # share contract objects and tables
        other.account = _account(account)
        return other

    # One client per contract (the use cases' ports): this façade serves all four for now.
    @property
    def registry(self) -> "Fedchain":
        return self

    @property
    def proposals(self) -> "Fedchain":
        return self

    @property
    def consortium(self) -> "Fedchain":
        return self

    @property
    def rounds(self) -> "Fedchain":
        return self

    @property
    def address(self) -> str:
        """The signer's address."""
        return self._signer().address

    @property
    def addresses(self) -> dict[str, str]:
        """Contract name -> address."""
        return dict(self.deployment.addresses)

    # ---------------------------------------------------------- plumbing

    def _signer(self) -> LocalAccount:
        if self.account is None:
            raise FedchainError("no signing account: use .as_(account)")
        return self.account

    def _call(self, contract: str, fn: str, *args: Any, block: int | None = None) -> Any:
        with self.chain._guard():
            fn_call = getattr(self._contracts[contract].functions, fn)(*args)
            return fn_call.call() if block is None else fn_call.call(block_identifier=int(block))

    def _send(self, contract: str, fn: str, *args: Any) -> TxResult:
        c = self._contracts[contract]
        data = c.encode_abi(fn, args=list(args))
        receipt = self.chain.transact(self._signer(), c.address, data, codec=self._codec)
        decoded = [ev for ev in (self._decode(log) for log in receipt["logs"]) if ev is not None]
        events = tuple(self._with_details(decoded, receipts={_hex(receipt["transactionHash"]): receipt}))
        return TxResult(
            tx_hash=_hex(receipt["transactionHash"]),
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=events,
        )

    def _with_details(self, events: list[ChainEvent], receipts: dict[str, Any] | None = None) -> list[ChainEvent]:
        """Fill in block timestamps and transaction gas.

        Mined blocks and receipts never change, so both are cached on the
        :class:`Chain` (two small ints per block / transaction): each is asked
        for once per connection.
        """
        times, gas_of = self.chain._block_times, self.chain._tx_gas
        for tx, receipt in (receipts or {}).items():
            gas_of.setdefault(tx, int(receipt["gasUsed"]))
        out = []
        with self.chain._guard():
            for ev in events:
                if ev.block_number not in times:
                    times[ev.block_number] = int(self.chain.w3.eth.get_block(ev.block_number)["timestamp"])
                if ev.tx_hash not in gas_of:
                    gas_of[ev.tx_hash] = int(self.chain.w3.eth.get_transaction_receipt(ev.tx_hash)["gasUsed"])
                out.append(dataclasses.replace(ev, timestamp=times[ev.block_number], gas_used=gas_of[ev.tx_hash]))
        return out

    def _decode(self, log: Any) -> ChainEvent | None:
        contract = self._by_address.get(str(log["address"]).lower())
        return self._codec.decode_log(contract, log) if contract else None

    def call(self, contract: str, function: str, *args: Any) -> Any:
        """Low-level: call any view of a contract by its Solidity name (raw web3 result)."""
        return self._call(contract, function, *args)

    def transact(self, contract: str, function: str, *args: Any) -> TxResult:
        """Low-level: send any function of a contract by its Solidity name, as the signer."""
        return self._send(contract, function, *args)

    @staticmethod
    def _with(result: TxResult, value: Any) -> TxResult:
        return TxResult(result.tx_hash, result.block_number, result.gas_used, result.events, value)

    # -------------------------------------------------------- Consortium

    def is_member(self, address: str) -> bool:
        """Whether ``address`` is an active member."""
        return bool(self._call("Consortium", "isMember", _addr(address)))

    def member(self, address: str, block: int | None = None) -> MemberInfo:
        """The member record of ``address`` (all zero / inactive if never a member), as of ``block`` if given."""
        name, key, joined, seq, active = self._call("Consortium", "member", _addr(address), block=block)
        return MemberInfo(_addr(address), name, bytes(key), int(joined), int(seq), bool(active))

    def member_key(self, address: str) -> bytes:
        """The X25519 public key of ``address`` (32 zero bytes if it never was a member)."""
        return self.member(address).x25519_pub

    def member_count(self) -> int:
        """Number of active members."""
        return int(self._call("Consortium", "memberCount"))

    def coordinator(self) -> str:
        """The coordinator's address."""
        return _addr(self._call("Consortium", "coordinator"))

    def voting_params(self) -> VotingParams:
        """Voting period, quorum and approval threshold."""
        period, quorum, approval = self._call("Consortium", "votingParams")
        return VotingParams(int(period), int(quorum), int(approval))

    def members(self, include_removed: bool = False) -> list[MemberInfo]:
        """Members in admission order, found through MemberAdmitted events."""
        seen: dict[str, None] = {}
        for ev in self.events(from_block=self.deployment.deploy_block, details=False):
            if ev.contract == "Consortium" and ev.event == "MemberAdmitted":
                seen[ev.args["account"]] = None
        infos = [self.member(a) for a in seen]
        infos.sort(key=lambda m: m.seq)
        return infos if include_removed else [m for m in infos if m.active]

    def set_x25519_key(self, x25519_pub: bytes | str) -> TxResult:
        """Replace the signer's X25519 public key."""
        return self._send("Consortium", "setX25519Key", _b32(x25519_pub, "x25519_pub"))

    def propose_motion(
        self, kind: MotionKind, target: str, name: str = "", x25519_pub: bytes | str | None = None
    ) -> TxResult:
        """Propose a membership motion; ``value`` is the motion id."""
        key = _b32(x25519_pub, "x25519_pub") if x25519_pub is not None else _ZERO32
        result = self._send("Consortium", "proposeMotion", int(kind), _addr(target), name, key)
        return self._with(result, int(result.event("MotionProposed").args["id"]))

    def propose_motion_admit(self, name: str, address: str, x25519_pub: bytes | str) -> TxResult:
        """Motion to admit ``address`` as member ``name`` with its X25519 key; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.ADMIT, address, name, x25519_pub)

    def propose_motion_remove(self, address: str) -> TxResult:
        """Motion to remove a member; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.REMOVE, address)

    def propose_motion_coordinator(self, address: str) -> TxResult:
        """Motion to make ``address`` the coordinator; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.SET_COORDINATOR, address)

    def vote_motion(self, motion_id: int, support: bool) -> TxResult:
        """Vote yes (True) or no (False) on a motion."""
        return self._send("Consortium", "voteMotion", int(motion_id), bool(support))

    def finalize_motion(self, motion_id: int) -> TxResult:
        """Finalize (and apply) a motion after its voting period; ``value`` is the MotionState."""
        result = self._send("Consortium", "finalizeMotion", int(motion_id))
        return self._with(result, MotionState(result.event("MotionFinalized").args["state"]))

    def motion(self, motion_id: int) -> MotionInfo | None:
        """Motion ``motion_id``, or None if unknown."""
        m = self._call("Consortium", "motion", int(motion_id))
        kind, state, proposer, deadline, target, _seq, eligible, yes, no, created, key, name = m
        if state == 0:
            return None
        return MotionInfo(
            id=int(motion_id), kind=MotionKind(kind), state=MotionState(state), proposer=_addr(proposer),
            target=_addr(target), name=name, x25519_pub=bytes(key), created_at=int(created),
            deadline=int(deadline), eligible=int(eligible), yes=int(yes), no=int(no),
        )

    def motion_count(self) -> int:
        """Number of motions created."""
        return int(self._call("Consortium", "motionCount"))

    # --------------------------------------------------- DatasetRegistry

    @staticmethod
    def dataset_id(name_or_id: str | bytes) -> bytes:
        """keccak256 of a dataset name (ids pass through)."""
        return dataset_id(name_or_id)

    @staticmethod
    def _policy_tuple(policy: Policy) -> tuple[Any, ...]:
        return (
            [purpose_hash(p) for p in policy.purposes],
            [int(p) for p in policy.proposal_ids],
            bool(policy.any_approved_proposal),
            [_addr(a) for a in policy.requesters],
            int(policy.expiry),
            int(policy.max_epsilon_milli),
        )

    def register_dataset(
        self,
        name: str,
        metadata_cid: str,
        metadata_sha256: bytes | str,
        schema_hash: bytes | str,
        policy: Policy,
    ) -> TxResult:
        """Register a dataset owned by the signer; ``value`` is its id (bytes32)."""
        result = self._send(
            "DatasetRegistry", "registerDataset", name, metadata_cid,
            _b32(metadata_sha256, "metadata_sha256"), _b32(schema_hash, "schema_hash"), self._policy_tuple(policy),
        )
        return self._with(result, _b32(result.event("DatasetRegistered").args["id"]))

    def set_policy(self, dataset: str | bytes, policy: Policy) -> TxResult:
        """Replace a dataset's policy (owner); ``value`` is the new policy version."""
        result = self._send("DatasetRegistry", "setPolicy", dataset_id(dataset), self._policy_tuple(policy))
        return self._with(result, int(result.event("PolicySet").args["version"]))

    def revoke_dataset(self, dataset: str | bytes) -> TxResult:
        """Revoke a dataset for good (owner)."""
        return self._send("DatasetRegistry", "revokeDataset", dataset_id(dataset))

    def dataset(self, dataset: str | bytes) -> DatasetInfo | None:
        """Dataset by name or id, with its current policy; None if unknown."""
        did = dataset_id(dataset)
        d = self._call("DatasetRegistry", "dataset", did)
        owner, version, _expiry, flags, _eps, registered, meta_sha, schema, name, cid = d
        if int(owner, 16) == 0:
            return None
        return DatasetInfo(
            id=did, name=name, owner=_addr(owner), metadata_cid=cid, metadata_sha256=bytes(meta_sha),
            schema_hash=bytes(schema), registered_at=int(registered), policy_version=int(version),
            revoked=bool(flags & 1), policy=self.policy(did),
        )

    def policy(self, dataset: str | bytes) -> Policy:
        """Current policy of a dataset (purposes as 32-byte hashes)."""
        _version, p = self._call("DatasetRegistry", "policy", dataset_id(dataset))
        purposes, proposal_ids, any_approved, requesters, expiry, eps = p
        return Policy(
            purposes=tuple(bytes(x) for x in purposes),
            proposal_ids=tuple(int(x) for x in proposal_ids),
            any_approved_proposal=bool(any_approved),
            requesters=tuple(_addr(a) for a in requesters),
            expiry=int(expiry),
            max_epsilon_milli=int(eps),
        )

    def admits(self, dataset: str | bytes, proposal_id: int) -> Admission:
        """Whether the dataset's policy admits the proposal now, and if not why."""
        ok, reason = self._call("DatasetRegistry", "admits", dataset_id(dataset), int(proposal_id))
        return Admission(bool(ok), bytes(reason).rstrip(b"\0").decode("ascii", "replace"))

    def datasets(self, include_revoked: bool = True) -> list[DatasetInfo]:
        """Every registered dataset in registration order (found through DatasetRegistered events)."""
        infos = [
            self.dataset(_b32(ev.args["id"]))
            for ev in self._filtered_events("DatasetRegistry", "DatasetRegistered")
        ]
        return [d for d in infos if d is not None and (include_revoked or not d.revoked)]

    def dataset_count(self) -> int:
        """Number of datasets registered."""
        return int(self._call("DatasetRegistry", "datasetCount"))

    # --------------------------------------------------------- Proposals

    def submit_proposal(
        self,
        plan_cid: str,
        plan_sha256: bytes | str,
        purpose: str,
        targets: Sequence[str | bytes],
        rounds: int,
        min_participants: int,
        round_duration: int,
    ) -> TxResult:
        """Submit a proposal (targets by dataset name or id); ``value`` is the proposal id."""
        submission = (
            plan_cid, _b32(plan_sha256, "plan_sha256"), purpose, [dataset_id(t) for t in targets],
            int(rounds), int(min_participants), int(round_duration),
        )
        result = self._send("Proposals", "submit", submission)
        return self._with(result, int(result.event("ProposalSubmitted").args["id"]))

    def vote(self, proposal_id: int, vote: Vote) -> TxResult:
        """Vote YES / NO / ABSTAIN on a proposal."""
        return self._send("Proposals", "vote", int(proposal_id), int(vote))

    def finalize(self, proposal_id: int) -> TxResult:
        """Finalize a proposal after its voting period; ``value`` is the ProposalState."""
        result = self._send("Proposals", "finalize", int(proposal_id))
        return self._with(result, ProposalState(result.event("ProposalFinalized").args["state"]))

    def cancel(self, proposal_id: int) -> TxResult:
        """Withdraw a proposal (proposer, before any vote)."""
        return self._send("Proposals", "cancel", int(proposal_id))

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        """Proposal ``proposal_id``, or None if unknown."""
        p = self._call("Proposals", "proposal", int(proposal_id))
        (proposer, created, state, rounds, deadline, min_p, duration, _seq, eligible,
         yes, no, abstain, p_hash, plan_sha, plan_cid, purpose, targets) = p
        if state == 0:
            return None
        return ProposalInfo(
            id=int(proposal_id), proposer=_addr(proposer), state=ProposalState(state), plan_cid=plan_cid,
            plan_sha256=bytes(plan_sha), purpose=purpose, purpose_hash=bytes(p_hash),
            targets=tuple(bytes(t) for t in targets), rounds=int(rounds), min_participants=int(min_p),
            round_duration=int(duration), created_at=int(created), deadline=int(deadline),
            eligible=int(eligible), yes=int(yes), no=int(no), abstain=int(abstain),
        )

    def proposal_count(self) -> int:
        """Number of proposals submitted."""
        return int(self._call("Proposals", "proposalCount"))

    def vote_of(self, proposal_id: int, address: str) -> Vote | None:
        """How ``address`` voted on the proposal (None if it did not)."""
        choice = int(self._call("Proposals", "voteOf", int(proposal_id), _addr(address)))
        return Vote(choice) if choice else None

    # ------------------------------------------------------------ Rounds

    def open_round(self, proposal_id: int, round: int) -> TxResult:
        """Coordinator: open the next round; ``value`` is its deadline block."""
        result = self._send("Rounds", "openRound", int(proposal_id), int(round))
        return self._with(result, int(result.event("RoundOpened").args["deadline"]))

    def commit_update(
        self,
        proposal_id: int,
        round: int,
        dataset: str | bytes,
        cid: str,
        sha256: bytes | str,
        sample_count: int,
    ) -> TxResult:
        """Member: commit a model update; ``value`` is the stored commitment hash."""
        digest = _b32(sha256, "sha256")
        result = self._send(
            "Rounds", "commitUpdate", int(proposal_id), int(round), dataset_id(dataset), cid, digest, int(sample_count)
        )
        return self._with(result, commitment_hash(dataset, cid, digest, sample_count))

    def close_round(
        self,
        proposal_id: int,
        round: int,
        aggregate_cid: str,
        aggregate_sha256: bytes | str,
        scores_cid: str,
        scores_sha256: bytes | str,
    ) -> TxResult:
        """Coordinator: close an open round with its aggregate and contribution-scores document."""
        return self._send(
            "Rounds", "closeRound", int(proposal_id), int(round), aggregate_cid,
            _b32(aggregate_sha256, "aggregate_sha256"), scores_cid, _b32(scores_sha256, "scores_sha256"),
        )

    def fail_round(self, proposal_id: int, round: int) -> TxResult:
        """Mark an open round Failed after its deadline (anyone if under-subscribed; coordinator always)."""
        return self._send("Rounds", "failRound", int(proposal_id), int(round))

    def submit_evaluation(
        self, proposal_id: int, round: int, dataset: str | bytes, metric_ppm: int, sample_count: int
    ) -> TxResult:
        """Member: report a closed round's metric on its dataset (parts per million)."""
        return self._send(
            "Rounds", "submitEvaluation", int(proposal_id), int(round), dataset_id(dataset),
            int(metric_ppm), int(sample_count),
        )

    def record_global_metric(self, proposal_id: int, round: int, metric_ppm: int) -> TxResult:
        """Coordinator: record a closed round's global metric (parts per million)."""
        return self._send("Rounds", "recordGlobalMetric", int(proposal_id), int(round), int(metric_ppm))

    def round_info(self, proposal_id: int, round: int) -> RoundInfo:
        """State of a round (phase NONE if never opened)."""
        opened, deadline, committed, phase, metric_set, metric, evaluations = self._call(
            "Rounds", "roundOf", int(proposal_id), int(round)
        )
        agg_sha, scores_sha, agg_cid, scores_cid = self._call("Rounds", "outcomeOf", int(proposal_id), int(round))
        return RoundInfo(
            proposal_id=int(proposal_id), round=int(round), phase=RoundPhase(phase), opened_at=int(opened),
            deadline=int(deadline), committed=int(committed), evaluations=int(evaluations),
            global_metric_ppm=int(metric) if metric_set else None, aggregate_cid=agg_cid,
            aggregate_sha256=bytes(agg_sha), scores_cid=scores_cid, scores_sha256=bytes(scores_sha),
        )

    def last_round(self, proposal_id: int) -> int:
        """Number of the last round opened (0 if none)."""
        return int(self._call("Rounds", "lastRound", int(proposal_id)))

    def commitment_of(self, proposal_id: int, round: int, address: str) -> bytes | None:
        """The commitment hash stored for ``address`` in the round, or None."""
        value = bytes(self._call("Rounds", "commitmentOf", int(proposal_id), int(round), _addr(address)))
        return None if value == _ZERO32 else value

    def has_evaluated(self, proposal_id: int, round: int, address: str) -> bool:
        """Whether ``address`` submitted an evaluation for the round."""
        return bool(self._call("Rounds", "hasEvaluated", int(proposal_id), int(round), _addr(address)))

    def commitments(self, proposal_id: int, round: int) -> list[UpdateCommitment]:
        """The round's update commitments in chain order (from UpdateCommitted events)."""
        return [
            UpdateCommitment(
                proposal_id=int(proposal_id), round=int(round), member=ev.args["member"],
                dataset=_b32(ev.args["datasetId"]), cid=ev.args["cid"], sha256=_b32(ev.args["updateSha256"]),
                sample_count=int(ev.args["sampleCount"]), block_number=ev.block_number, tx_hash=ev.tx_hash,
            )
            for ev in self._filtered_events("Rounds", "UpdateCommitted", _topic(proposal_id), _topic(round))
        ]

    def evaluations(self, proposal_id: int, round: int) -> list[Evaluation]:
        """The round's member evaluations in chain order (from EvaluationSubmitted events)."""
        return [
            Evaluation(
                proposal_id=int(proposal_id), round=int(round), member=ev.args["member"],
                dataset=_b32(ev.args["datasetId"]), metric_ppm=int(ev.args["metricPpm"]),
                sample_count=int(ev.args["sampleCount"]), block_number=ev.block_number, tx_hash=ev.tx_hash,
            )
            for ev in self._filtered_events("Rounds", "EvaluationSubmitted", _topic(proposal_id), _topic(round))
        ]

    # ------------------------------------------------------------ events

    def _filtered_events(self, contract: str, event: str, *topics: str, page_size: int = 2_000) -> list[ChainEvent]:
        """Events ``contract.event`` since deployment whose leading indexed arguments match ``topics``."""
        topic0 = self._codec.topic(contract, event)
        query = {"address": self._contracts[contract].address, "topics": ["0x" + topic0.hex(), *topics]}
        return list(self._paged(query, self.deployment.deploy_block, None, page_size, details=False))

    def _paged(
        self, query: dict[str, Any], from_block: int, to_block: int | None, page_size: int, *, details: bool
    ) -> Iterator[ChainEvent]:
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        end = self.chain.block_number if to_block is None else int(to_block)
        start = max(0, int(from_block))
        while start <= end:
            stop = min(end, start + page_size - 1)
            with self.chain._guard():
                logs = self.chain.w3.eth.get_logs({**query, "fromBlock": start, "toBlock": stop})
            decoded = [ev for ev in (self._decode(log) for log in logs) if ev is not None]
            decoded.sort(key=lambda e: (e.block_number, e.log_index))
            yield from (self._with_details(decoded) if details else decoded)
            start = stop + 1

    def iter_events(
        self, from_block: int = 0, to_block: int | None = None, page_size: int = 2_000, *, details: bool = True
    ) -> Iterator[ChainEvent]:
        """Events of all four contracts in (block, log index) order, fetched ``page_size`` blocks at a time.

        With ``details`` (default) each event carries its block timestamp and its
        transaction's gas, at one extra request per distinct block and transaction.
        """
        query = {"address": [c.address for c in self._contracts.values()]}
        yield from self._paged(query, from_block, to_block, page_size, details=details)

    def events(
        self, from_block: int = 0, to_block: int | None = None, page_size: int = 2_000, *, details: bool = True
    ) -> list[ChainEvent]:
        """All events in ``[from_block, to_block]`` (``to_block`` None = latest); see :meth:`iter_events`."""
        return list(self.iter_events(from_block, to_block, page_size, details=details))

    def wait_for_events(
        self,
        from_block: int,
        timeout: float = 30.0,
        poll_interval: float = 0.25,
        max_interval: float = 2.0,
    ) -> list[ChainEvent]:
        """Block until events exist at or after ``from_block``, or ``timeout`` passes (then ``[]``).

        Polls the block number (one cheap RPC) with exponential backoff from
        ``poll_interval`` to ``max_interval``, and reads logs only for new blocks.
        """
        deadline = time.monotonic() + timeout
        cursor = int(from_block)
        interval = poll_interval
        while True:
            head = self.chain.block_number
            if head >= cursor:
                found = self.events(cursor, head)
                if found:
                    return found
                cursor = head + 1
                interval = poll_interval
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            time.sleep(min(interval, remaining))
            interval = min(interval * 2, max_interval)
