"""The JSON-RPC backend: any node at an ``http(s)://`` URL (anvil, geth, Besu).

Simulation is ``eth_estimateGas`` against the pending block (with "latest", anvil
simulates with the latest block's number, so a deadline check could pass in the
simulation and fail when mined), plus a margin. The developer controls use
anvil's ``anvil_mine`` (``evm_mine`` elsewhere), ``evm_increaseTime``,
``evm_snapshot`` / ``evm_revert``; anvil prefunds its dev accounts.

Every request goes through :class:`RetryingHTTPProvider`, the one place that
retries chain requests: a request the node does not answer (connection refused
or reset, a timeout) is sent again as the connection's
:class:`~fedchain.retry.RetryPolicy` says, each wait logged; an *answer* — a
revert, an error object — is never retried. All methods are retried, sending a
signed transaction included: the same raw bytes have the same hash, so a second
copy is at worst "already known" (see ``Chain.send``). web3's own
``ExceptionRetryConfiguration`` (a few quick retries of read methods only) is
switched off in its favour.
"""

from __future__ import annotations

from typing import Any

import requests
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from fedchain.contracts.bindings.backend import Backend
from fedchain.contracts.errors import ChainError
from fedchain.retry import RetryPolicy

#: Gas limit = estimate x margin + this.
GAS_MARGIN = 1.25
GAS_PAD = 10_000

#: What "the node did not answer" looks like at the HTTP layer (retried; anything else is an answer).
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ConnectionError,
)


class RetryingHTTPProvider(HTTPProvider):
    """web3's HTTP provider with every request retried under one :class:`RetryPolicy`."""

    def __init__(self, url: str, *, retry: RetryPolicy, timeout: float) -> None:
        super().__init__(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self.retry = retry

    def _make_request(self, method: RPCEndpoint, request_data: bytes) -> bytes:
        send = super()._make_request
        return self.retry.call(lambda: send(method, request_data), transient=TRANSPORT_ERRORS,
                               what=f"chain node at {self.endpoint_uri} ({method})")


class RpcBackend(Backend):
    """A JSON-RPC node; ``retry`` says how long to ride out an unreachable node (default: brief)."""

    def __init__(self, url: str, *, timeout: float = 30.0, retry: RetryPolicy | None = None) -> None:
        self.url = url
        self.retry = retry if retry is not None else RetryPolicy.brief()
        self.w3 = Web3(RetryingHTTPProvider(url, retry=self.retry, timeout=timeout))

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
