"""The embedded backend: an in-process chain (eth-tester + py-evm), fresh per connection.

It mines every transaction at once, with a fixed gas ceiling (eth-tester has no
``eth_estimateGas`` for the pending block, and its estimate would run the
transaction about ten times); gas *used*, which is what every report shows, does
not depend on the limit.

No simulation before sending: :meth:`TesterBackend.send_raw` applies the
transaction to the pending block itself and, if it reverts, puts the pending
block back as it was and raises with the revert data -- nothing is mined, as
when a simulation refuses, but the EVM runs once instead of twice. The check is
the execution itself, so it cannot disagree with it.
"""

from __future__ import annotations

import ast
import re
from typing import Any

import rlp
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from fedchain.contracts.bindings.backend import Backend

#: Per-transaction gas ceiling on eth-tester.
GAS_LIMIT = 15_000_000
#: web3's default middleware left out on the in-process chain (see ``TesterBackend.__init__``).
IN_PROCESS_SKIPPED_MIDDLEWARE = ("validation", "ens_name_to_address")


class PendingRevert(Exception):
    """The EVM reverted a transaction applied to the pending block (``data``: the revert data)."""

    def __init__(self, data: bytes, error: BaseException | None = None) -> None:
        super().__init__(f"execution reverted: {error!r}")
        self.data = data


class TesterBackend(Backend):
    """``eth-tester://``: a new py-evm chain in this process."""

    #: Only this process mines here, and its only rewrite of history is Chain.revert (which bumps
    #: the chain's epoch), so readers need not re-check block hashes.
    may_reorg = False

    def __init__(self, url: str = "eth-tester://") -> None:
        self.url = url
        self.tester = EthereumTester(PyEVMBackend())
        self.w3 = Web3(EthereumTesterProvider(self.tester))
        # Per-request work that buys nothing in-process: the validation middleware asks for
        # the chain id before every call, the ENS middleware rewrites names no contract here
        # takes, and a call without "from" asks eth-tester for its accounts twice.
        for name in IN_PROCESS_SKIPPED_MIDDLEWARE:
            self.w3.middleware_onion.remove(name)
        self.w3.eth.default_account = self.tester.get_accounts()[0]

    def raw_header(self, number: int) -> tuple[bytes, bytes]:
        """py-evm's own header (eth-tester's JSON pads ``extraData``, so it cannot be rebuilt from it)."""
        header = self.tester.backend.chain.get_canonical_block_header_by_number(int(number))
        return rlp.encode(header), bytes(header.hash)

    def gas_limit(self, tx: dict[str, Any]) -> int:
        return GAS_LIMIT  # send_raw refuses a reverting transaction before it is mined

    def simulate(self, tx: dict[str, Any]) -> int:
        self.w3.eth.call({**tx, "gas": GAS_LIMIT}, "pending")  # raises the revert; nothing is mined
        return GAS_LIMIT

    def send_raw(self, raw: bytes) -> bytes:
        """Apply ``raw`` to the pending block; mine it, or restore the pending block and raise.

        A transaction the EVM reverts (or that fails for gas) raises :class:`PendingRevert`
        with the revert data; one py-evm refuses outright (nonce, balance) raises py-evm's
        own ``ValidationError``. Either way the pending block is as it was.
        """
        chain = self.tester.backend.chain
        pending = chain.header
        tx = chain.get_vm().get_transaction_builder().decode(bytes(raw))
        _block, _receipt, computation = chain.apply_transaction(tx)
        if computation.is_error:
            chain.header = pending  # the transaction never happened
            raise PendingRevert(bytes(computation.output or b""), computation.error)
        self.tester.mine_blocks(1)
        return tx.hash

    def revert_data(self, exc: BaseException) -> bytes | None:
        found = super().revert_data(exc)
        if found is not None:
            return found
        # TransactionFailed("execution reverted: b'\x02h\xf9)…'")
        text = str(exc.args[0]) if exc.args else ""
        m = re.search(r"execution reverted: (b'.*'|b\".*\")\s*$", text, re.S)
        if m:
            try:
                value = ast.literal_eval(m.group(1))
            except (ValueError, SyntaxError):
                return None
            return value if isinstance(value, bytes) else None
        if re.search(r"execution reverted:?\s*$", text):
            return b""
        return None

    def fund(self, addresses: list[str], wei: int) -> None:
        funder = self.tester.get_accounts()[0]
        for address in addresses:
            self.w3.eth.send_transaction({"from": funder, "to": address, "value": wei})

    def mine(self, n: int) -> None:
        self.tester.mine_blocks(n)

    def advance_time(self, seconds: int) -> None:
        # eth-tester mines the travel block one second before the target
        target = int(self.w3.eth.get_block("latest")["timestamp"]) + int(seconds) + 1
        pending = int(self.tester.get_block_by_number("pending")["timestamp"])
        self.tester.time_travel(max(target, pending + 1))

    def snapshot(self) -> Any:
        return self.tester.take_snapshot()

    def revert(self, snapshot_id: Any) -> None:
        self.tester.revert_to_snapshot(snapshot_id)
