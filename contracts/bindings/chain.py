"""A connection to one chain: accounts, blocks, dev controls, sending transactions, deployment.

Transactions are always signed locally with an ``eth_account`` LocalAccount and sent
raw, so dev keys and keystores behave the same everywhere. Before sending, each
transaction is simulated against the pending block (see the backends); a revert
becomes :class:`~fedchain.contracts.errors.ChainRevert` with the custom error's name
and decoded arguments, identically on every backend. Unreachable nodes raise
:class:`~fedchain.contracts.errors.ChainUnavailable` once the connection's
:class:`~fedchain.retry.RetryPolicy` gives up (the JSON-RPC provider retries
every request; see :mod:`~fedchain.contracts.bindings.rpc`).

A sent transaction survives the node going away: its signed bytes are kept
until its receipt arrives, and if the node comes back without it (a restarted
anvil keeps mined blocks, not its pending pool) the same bytes are sent again
- same nonce, same hash, so it can be mined at most once. Another transaction
of the same account taking that nonce (a second process with the same key)
raises :class:`~fedchain.contracts.errors.TransactionConflict`: the caller
re-reads the chain and finds the work done, or not.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import requests
from eth_account import Account
from eth_account.signers.local import LocalAccount
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.exceptions import ProviderConnectionError, TransactionNotFound

from fedchain.contracts.bindings.backend import Backend
from fedchain.contracts.bindings.codec import addr, as_account, b32, create_address, decode_revert, hexstr
from fedchain.contracts.bindings.deployment import Fedchain
from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.contracts.errors import ChainError, ChainRevert, ChainUnavailable, TransactionConflict
from fedchain.contracts.models import Deployment, DeploymentError, FounderSpec, TxResult
from fedchain import lifecycle
from fedchain.errors import FedchainError
# DEV ONLY: anvil's ten public dev keys, defined once with the identities.
from fedchain.identity import DEV_PRIVATE_KEYS
from fedchain.retry import RetryPolicy

#: Balance given to each dev account where the node does not prefund them (eth-tester).
DEV_FUNDING_WEI = 10_000 * 10**18
#: How often a pending transaction's receipt is asked for: first (anvil mines within
#: milliseconds), then doubling up to the second value.
RECEIPT_POLL_SECONDS = 0.01
RECEIPT_POLL_MAX_SECONDS = 0.25
#: How often a transaction still without a receipt is looked for in the node's pool.
PRESENCE_CHECK_SECONDS = 2.0
#: What the node answers when it already has a transaction, or its nonce is used.
_KNOWN = ("already known", "known transaction", "already imported", "nonce too low", "replacement transaction",
          "nonce has already been used", "underpriced")

log = logging.getLogger("fedchain.chain")

CONNECTION_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
    ConnectionError,
)


def open_backend(url: str, *, timeout: float = 30.0, retry: RetryPolicy | None = None) -> Backend:
    """The backend for ``url``: ``eth-tester://`` (a new in-process chain) or ``http(s)://host:port``.

    ``retry`` (JSON-RPC only; default :meth:`RetryPolicy.brief`) says how long to ride out an
    unreachable node."""
    if url.startswith("eth-tester://"):
        # py-evm is loaded only when an embedded chain is asked for.
        from fedchain.contracts.bindings.tester import TesterBackend

        return TesterBackend(url)
    if url.startswith(("http://", "https://")):
        from fedchain.contracts.bindings.rpc import RpcBackend  # symmetric with the lazy import above

        return RpcBackend(url, timeout=timeout, retry=retry)
    raise ChainUnavailable(url, "unsupported URL (use eth-tester:// or http(s)://host:port)")


class Chain:
    """A connection to one chain (see the module docstring). Open one with :meth:`connect`."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.w3 = backend.w3
        self.url = backend.url
        self._lock = threading.RLock()
        self._chain_id: int | None = None
        #: Seconds to wait for a transaction to be mined.
        self.tx_timeout = 120.0
        #: Bumped by :meth:`revert`: block numbers before it may now name other blocks.
        self.epoch = 0
        # Immutable chain facts, asked for once per connection (see Fedchain.iter_events).
        self.block_times: dict[int, int] = {}
        self.tx_gas: dict[str, int] = {}
        #: The dev accounts (DEV ONLY keys), funded where the node does not prefund them.
        self.dev_accounts: list[LocalAccount] = [Account.from_key(k) for k in DEV_PRIVATE_KEYS]

    @classmethod
    def connect(cls, url: str = "eth-tester://", *, timeout: float = 30.0, retry: RetryPolicy | None = None) -> "Chain":
        """Connect by URL: ``eth-tester://`` (new in-process chain) or ``http(s)://host:port``.

        ``timeout``: seconds to wait for one answer; ``retry``: how long to keep retrying a
        node that does not answer (default: a couple of seconds; role processes pass their
        configured policy, minutes).
        """
        chain = cls(open_backend(url, timeout=timeout, retry=retry))
        chain.chain_id  # noqa: B018 - probe: raises ChainUnavailable
        with chain.guard():
            chain.backend.fund([a.address for a in chain.dev_accounts], DEV_FUNDING_WEI)
        return chain

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a lost connection into :class:`ChainUnavailable`."""
        try:
            yield
        except CONNECTION_ERRORS as exc:
            raise ChainUnavailable(self.url, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

    # -------------------------------------------------------------- state

    @property
    def chain_id(self) -> int:
        """The chain id."""
        if self._chain_id is None:
            with self.guard():
                self._chain_id = int(self.w3.eth.chain_id)
        return self._chain_id

    @property
    def block_number(self) -> int:
        """The latest block number."""
        with self.guard():
            return int(self.w3.eth.block_number)

    @property
    def block_timestamp(self) -> int:
        """Timestamp (unix seconds) of the latest block."""
        with self.guard():
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def block_hash(self, number: int) -> str:
        """Hash of block ``number``."""
        with self.guard():
            return hexstr(self.w3.eth.get_block(int(number))["hash"])

    def balance(self, address: str) -> int:
        """Balance of ``address`` in wei."""
        with self.guard():
            return int(self.w3.eth.get_balance(addr(address)))

    # ---------------------------------------------------------- dev only

    def mine(self, n: int = 1) -> int:
        """DEV: mine ``n`` empty blocks; returns the new height."""
        if n > 0:
            with self.guard():
                self.backend.mine(int(n))
        return self.block_number

    def advance_time(self, seconds: int) -> int:
        """DEV: move the chain clock ``seconds`` forward and mine a block; returns its timestamp."""
        with self.guard():
            self.backend.advance_time(int(seconds))
        return self.block_timestamp

    def snapshot(self) -> Any:
        """DEV: snapshot the chain state; pass the id to :meth:`revert`."""
        with self.guard():
            return self.backend.snapshot()

    def revert(self, snapshot_id: Any) -> None:
        """DEV: return to a snapshot (on anvil a snapshot can be reverted to only once)."""
        self.block_times.clear()  # block numbers will be reused by other blocks
        self.tx_gas.clear()
        self.epoch += 1
        with self.guard():
            self.backend.revert(snapshot_id)

    def fund(self, address: str, wei: int, sender: LocalAccount | None = None) -> TxResult:
        """DEV: send ``wei`` to ``address`` from ``sender`` (default dev account 0)."""
        receipt = self.send(sender or self.dev_accounts[0], {"to": addr(address), "value": int(wei), "data": "0x"})
        return TxResult(hexstr(receipt["transactionHash"]), receipt["blockNumber"], receipt["gasUsed"])

    # ------------------------------------------------------- transactions

    def _fees(self) -> dict[str, int]:
        block = self.w3.eth.get_block("latest")
        base = block.get("baseFeePerGas")
        if base is None:
            return {"gasPrice": int(self.w3.eth.gas_price)}
        tip = 10**9
        return {"maxFeePerGas": 2 * int(base) + tip, "maxPriorityFeePerGas": tip}

    def send(
        self,
        account: LocalAccount,
        action: ContractFunction | ContractConstructor | dict[str, Any],
        *,
        value: int = 0,
    ) -> Any:
        """Simulate, sign, send and wait for one transaction; returns its receipt.

        ``action`` is a web3 contract function with its arguments
        (``contract.functions.f(...)``), a constructor (``contract.constructor(...)``),
        or a plain transaction dict (``to``, ``value``, ``data``). A revert in the
        simulation (or of the mined transaction) raises :class:`ChainRevert`.
        """
        with self._lock, self.guard():
            tx, call = self._transaction(account, action, value)
            tx["gas"] = self._simulate(call)
            signed = account.sign_transaction(tx)
            self._broadcast(signed.raw_transaction, signed.hash)
            receipt = self._await_receipt(signed.raw_transaction, signed.hash)
            if receipt["status"] != 1:
                raise self._replay_failure(call, receipt)
        return receipt

    def simulate(
        self,
        account: LocalAccount,
        action: ContractFunction | ContractConstructor | dict[str, Any],
        *,
        value: int = 0,
    ) -> int:
        """Simulate ``action`` as :meth:`send` does before signing, and send nothing.

        Returns the gas limit the transaction would be sent with; a revert raises
        :class:`ChainRevert` exactly as :meth:`send` would (the contract's own
        custom error, asked of the pending block).
        """
        with self._lock, self.guard():
            _tx, call = self._transaction(account, action, value)
            try:
                return self.backend.simulate(call)
            except CONNECTION_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - a revert, or the node refused the transaction
                raise self._rejection(exc) from None

    def _transaction(self, account: LocalAccount, action: Any, value: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """The unsigned transaction (no gas limit yet) and the call that simulates it."""
        nonce = self._nonce(account.address)
        params: dict[str, Any] = {"from": account.address, "nonce": nonce, "chainId": self.chain_id, **self._fees()}
        if isinstance(action, dict):
            tx = {**params, **action}
            tx.setdefault("value", value)
        else:
            # a placeholder gas limit keeps build_transaction from estimating on its own
            tx = action.build_transaction({**params, "value": value, "gas": 1})
        return tx, {k: tx[k] for k in ("from", "to", "data", "value") if k in tx}

    def _simulate(self, call: dict[str, Any]) -> int:
        try:
            return self.backend.gas_limit(call)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - a revert, or the node refused the transaction
            raise self._rejection(exc) from None

    def _has_transaction(self, tx_hash: bytes) -> bool:
        try:
            self.w3.eth.get_transaction(tx_hash)
        except TransactionNotFound:
            return False
        return True

    def _broadcast(self, raw: bytes, tx_hash: bytes) -> None:
        """Send signed bytes; a node that already has this very transaction is fine."""
        try:
            self.backend.send_raw(raw)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            message = str(getattr(exc, "message", None) or exc).lower()
            if any(k in message for k in _KNOWN):
                if self._has_transaction(tx_hash):
                    return  # ours, sent before the connection broke: pending or mined
                raise TransactionConflict(
                    f"transaction {hexstr(tx_hash)} was not taken: another transaction of the same account "
                    f"used its nonce ({message[:120]})"
                ) from None
            raise self._rejection(exc) from None

    def _await_receipt(self, raw: bytes, tx_hash: bytes) -> Any:
        """The receipt of a sent transaction, sending it again if the node lost it (see the module docstring)."""
        since = checked = time.monotonic()  # since: when the node last took the transaction
        poll = RECEIPT_POLL_SECONDS
        while True:
            asked = time.monotonic()
            try:
                return self.w3.eth.get_transaction_receipt(tx_hash)
            except TransactionNotFound:
                pass
            now = time.monotonic()
            rode_out = now - asked > PRESENCE_CHECK_SECONDS  # the request waited out an unreachable node
            if rode_out or now - checked >= PRESENCE_CHECK_SECONDS:
                checked = now
                if not self._has_transaction(tx_hash):
                    try:
                        return self.w3.eth.get_transaction_receipt(tx_hash)  # mined in between
                    except TransactionNotFound:
                        pass
                    log.warning("transaction %s is no longer known to %s (node restarted?); sending it again",
                                hexstr(tx_hash), self.url)
                    self._broadcast(raw, tx_hash)
                    since = time.monotonic()
                elif rode_out:
                    since = now  # an outage does not count against the timeout
            if now - since > self.tx_timeout:
                raise ChainError(f"transaction {hexstr(tx_hash)} not mined within {self.tx_timeout:.0f}s")
            lifecycle.sleep(poll)
            poll = min(poll * 2, RECEIPT_POLL_MAX_SECONDS)

    def _nonce(self, address: str) -> int:
        try:
            return int(self.w3.eth.get_transaction_count(address, "pending"))
        except CONNECTION_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - nodes without a pending block
            return int(self.w3.eth.get_transaction_count(address, "latest"))

    def _rejection(self, exc: BaseException) -> FedchainError:
        data = self.backend.revert_data(exc)
        if data is not None:
            return decode_revert(data)
        message = str(getattr(exc, "message", None) or (exc.args[0] if exc.args else exc))
        return ChainError(f"transaction rejected by {self.url}: {message}")

    def _replay_failure(self, call: dict[str, Any], receipt: Any) -> FedchainError:
        """A mined transaction failed (state changed after the simulation): find out why."""
        try:
            self.w3.eth.call(call, receipt["blockNumber"] - 1)
        except CONNECTION_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001
            rejection = self._rejection(exc)
            if isinstance(rejection, ChainRevert):
                return rejection
        return ChainError(f"transaction {hexstr(receipt['transactionHash'])} failed (out of gas or state changed)")

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
        """Deploy every contract of ``CONTRACT_NAMES``, in that order; returns the :class:`Deployment`.

        ``quorum_bps``: minimum turnout (yes+no+abstain) in basis points of eligible
        members; ``approval_bps``: minimum yes/(yes+no) in basis points
        (5001 = strict majority).
        """
        account = as_account(deployer)
        founder_tuples = [(f.name, addr(f.address), b32(f.x25519_pub, "x25519_pub")) for f in founders]
        addresses: dict[str, str] = {}
        deploy_gas: dict[str, int] = {}
        first_block = None
        for name in CONTRACT_NAMES:
            if name == "Consortium":
                args: list[Any] = [founder_tuples, addr(coordinator), (voting_period_blocks, quorum_bps, approval_bps)]
            art = load_artifact(name)
            if name != "Consortium":
                # every other constructor takes contracts of this deployment: each parameter names
                # one by its type (``IRounds``) or, for a plain address, by its name (``rounds_``); one
                # not deployed yet gets the address it will have (its own constructor checks it)
                ctor = next((e for e in art["abi"] if e.get("type") == "constructor"), {"inputs": []})
                args = []
                for param in ctor["inputs"]:
                    target = _constructor_target(param)
                    if target in addresses:
                        args.append(addresses[target])
                    else:
                        later = CONTRACT_NAMES.index(target) - CONTRACT_NAMES.index(name)
                        args.append(create_address(account.address, self._nonce(account.address) + later))
            factory = self.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
            receipt = self.send(account, factory.constructor(*args))
            addresses[name] = addr(receipt["contractAddress"])
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
                "coordinator": addr(coordinator),
                "deployer": account.address,
                "deploy_gas": deploy_gas,
                "founders": [
                    {"name": f.name, "address": addr(f.address), "x25519_pub": "0x" + b32(f.x25519_pub).hex()}
                    for f in founders
                ],
            },
        )

    def is_deployed(self, deployment: Deployment) -> bool:
        """Whether ``deployment`` is on this chain (same chain id, code at every address)."""
        if deployment.chain_id != self.chain_id:
            return False
        with self.guard():
            return all(
                name in deployment.addresses and bool(self.w3.eth.get_code(addr(deployment.addresses[name])))
                for name in CONTRACT_NAMES
            )

    def attach(self, deployment: Deployment, account: LocalAccount | str | None = None) -> Fedchain:
        """The deployment object (:class:`Fedchain`); checks the chain id and that code exists."""
        if deployment.chain_id != self.chain_id:
            raise DeploymentError(
                f"deployment is for chain {deployment.chain_id}, but {self.url} is chain {self.chain_id}"
            )
        missing = [n for n in CONTRACT_NAMES if n not in deployment.addresses]
        if missing:
            raise DeploymentError(f"deployment lacks {', '.join(missing)}")
        with self.guard():
            for name in CONTRACT_NAMES:
                if not self.w3.eth.get_code(addr(deployment.addresses[name])):
                    raise DeploymentError(f"no contract code for {name} at {deployment.addresses[name]} on {self.url}")
        return Fedchain(self, deployment, as_account(account) if account is not None else None)


def _constructor_target(param: dict) -> str:
    """The contract of this deployment a constructor parameter takes (``contract IRounds`` or ``rounds_``)."""
    kind = param.get("internalType", "")
    if kind.startswith("contract I") and kind[len("contract I"):] in CONTRACT_NAMES:
        return kind[len("contract I"):]
    names = {n.lower(): n for n in CONTRACT_NAMES} | {"registry": "DatasetRegistry"}
    key = param.get("name", "").strip("_").lower()
    if key not in names:
        raise ValueError(f"constructor parameter {param!r} names no contract of {CONTRACT_NAMES}")
    return names[key]
