"""The JSON-RPC backend: any node at an ``http(s)://`` URL (anvil, geth, Besu).

Simulation is ``eth_estimateGas`` against the pending block (with "latest", anvil
simulates with the latest block's number, so a deadline check could pass in the
simulation and fail when mined), plus a margin. The developer controls use
anvil's ``anvil_mine`` (``evm_mine`` elsewhere), ``evm_increaseTime``,
``evm_snapshot`` / ``evm_revert``; anvil prefunds its dev accounts.
"""

from __future__ import annotations

from typing import Any

from web3 import HTTPProvider, Web3

from fedchain.contracts.bindings.backend import Backend
from fedchain.contracts.errors import ChainError

#: Gas limit = estimate x margin + this.
GAS_MARGIN = 1.25
GAS_PAD = 10_000


class RpcBackend(Backend):
    """A JSON-RPC node."""

    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        self.url = url
        self.w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))

    def rpc(self, method: str, params: list[Any] | None = None) -> Any:
        """Raw JSON-RPC request; returns ``result`` or raises :class:`ChainError`."""
        resp = self.w3.provider.make_request(method, params or [])
        if "error" in resp:
            raise ChainError(f"{method} failed: {resp['error']}")
        return resp.get("result")

    def gas_limit(self, tx: dict[str, Any]) -> int:
        gas = self.w3.eth.estimate_gas(tx, "pending")
        return int(gas * GAS_MARGIN) + GAS_PAD

    def fund(self, addresses: list[str], wei: int) -> None:
        """anvil prefunds its dev accounts; other nodes fund them at genesis or not at all."""

    def mine(self, n: int) -> None:
        try:
            self.rpc("anvil_mine", [hex(n)])
        except ChainError:
            for _ in range(n):
                self.rpc("evm_mine", [])

    def advance_time(self, seconds: int) -> None:
        self.rpc("evm_increaseTime", [int(seconds)])
        self.rpc("evm_mine", [])

    def snapshot(self) -> Any:
        return self.rpc("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        """On anvil a snapshot can be reverted to only once."""
        if not self.rpc("evm_revert", [snapshot_id]):
            raise ChainError(f"evm_revert({snapshot_id}) failed")
