"""What the bindings need from a chain backend, and the choice of backend by URL.

A :class:`Backend` owns a ``Web3`` connected to one chain and the few things that
differ between an embedded chain and a JSON-RPC node: how a transaction is
simulated before it is sent (and so how its gas limit is chosen), how revert data
is found in the backend's exceptions, and the developer controls (mine blocks,
move the clock, snapshot and revert, fund the dev accounts). Everything else -
calls, transactions, receipts, logs - goes through ``Web3`` alike on every backend.

Backends (chosen by URL in ``Chain.connect``): :class:`~fedchain.contracts.bindings.tester.TesterBackend`
(``eth-tester://``, an in-process py-evm chain) and
:class:`~fedchain.contracts.bindings.rpc.RpcBackend` (``http(s)://``: anvil, geth, Besu).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any

from web3 import Web3

from fedchain.contracts.proofs import encode_header


class Backend(ABC):
    """One connection to one chain (see the module docstring)."""

    #: The URL it was opened with.
    url: str
    #: The web3 instance everything else uses.
    w3: Web3
    #: Whether a block already seen can be replaced without :meth:`Chain.revert` (a node that
    #: reorganizes, or an anvil reverted by someone else): readers then re-check block hashes.
    may_reorg: bool = True

    @abstractmethod
    def gas_limit(self, tx: dict[str, Any]) -> int:
        """Simulate ``tx`` against the pending block and return the gas limit to send it with.

        Raises the backend's own exception when the simulation reverts (see :meth:`revert_data`).
        A backend whose :meth:`send_raw` refuses a reverting transaction before it is mined
        may skip the simulation.
        """

    def simulate(self, tx: dict[str, Any]) -> int:
        """Simulate ``tx`` against the pending block — always, also where :meth:`gas_limit` may skip
        it — and return the gas limit; raises the backend's own exception when it reverts (a dry
        run, such as the console's, must see the revert without sending anything)."""
        return self.gas_limit(tx)

    def send_raw(self, raw: bytes) -> Any:
        """Send a signed transaction; returns its hash. Raises the backend's exception if it is refused."""
        return self.w3.eth.send_raw_transaction(raw)

    def revert_data(self, exc: BaseException) -> bytes | None:
        """Revert data carried by an exception of this backend, if any (``b""`` for a bare revert)."""
        data = getattr(exc, "data", None)
        if isinstance(data, dict):
            data = data.get("data")
        if isinstance(data, str) and re.fullmatch(r"0x[0-9a-fA-F]*", data):
            return bytes.fromhex(data[2:])
        if isinstance(data, (bytes, bytearray)):
            return bytes(data)
        return None

    def raw_header(self, number: int) -> tuple[bytes, bytes]:
        """Block ``number``'s header as the RLP its hash is computed over (rebuilt from the JSON-RPC
        block), and the block hash the node reports for it."""
        block = self.w3.eth.get_block(int(number))
        return encode_header(dict(block)), bytes(block["hash"])

    @abstractmethod
    def fund(self, addresses: list[str], wei: int) -> None:
        """DEV: make sure each address can pay for gas (a no-op where the node prefunds them)."""

    @abstractmethod
    def mine(self, n: int) -> None:
        """DEV: mine ``n`` empty blocks."""

    @abstractmethod
    def advance_time(self, seconds: int) -> None:
        """DEV: move the chain clock ``seconds`` forward and mine a block stamped with it."""

    @abstractmethod
    def snapshot(self) -> Any:
        """DEV: snapshot the chain state; returns an id for :meth:`revert`."""

    @abstractmethod
    def revert(self, snapshot_id: Any) -> None:
        """DEV: return to a snapshot."""

