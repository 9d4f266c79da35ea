"""Reading block headers and receipts off a node, and decoding raw logs without one.

The pure side (hashing, RLP, the receipts trie, the bloom) is
:mod:`fedchain.contracts.proofs`; this module adds what needs web3:

* :func:`raw_header` -- a block's header as the RLP its hash is computed over
  (each backend knows how: see :meth:`Backend.raw_header`); checked against the
  node's block hash before it is returned;
* :func:`raw_receipts` -- a block's receipts in their consensus encoding, in
  transaction order; checked against the header's receipts root;
* :class:`LogDecoder` -- the contracts' events decoded from raw logs with
  their ABIs, offline (a provider-less ``Web3``), into the same JSON-friendly
  arguments :meth:`Fedchain.decode_log` gives.
"""

from __future__ import annotations

from typing import Any, Mapping

from web3 import Web3

from fedchain.contracts.bindings.codec import addr, hexstr, jsonify_args
from fedchain.contracts.build import load_artifact
from fedchain.contracts.errors import ChainError
from fedchain.contracts.proofs import Header, RawLog, Receipt, encode_receipt, receipts_root

__all__ = ["LogDecoder", "raw_header", "raw_receipts"]


def raw_header(chain: Any, number: int) -> Header:
    """Block ``number``'s header, parsed; :class:`ChainError` if its RLP does not hash to the node's block hash."""
    with chain.guard():
        raw, want = chain.backend.raw_header(int(number))
    header = Header.decode(raw)
    if header.hash != want:
        raise ChainError(f"block {number}: the header this node gives does not hash to its block hash "
                         "(a header format fedchain does not know)")
    return header


def raw_receipts(chain: Any, header: Header) -> list[bytes]:
    """The receipts of the block ``header`` describes, encoded; checked against its receipts root."""
    out = []
    with chain.guard():
        block = chain.w3.eth.get_block(header.number)
        for tx in block["transactions"]:
            r = chain.w3.eth.get_transaction_receipt(tx)
            kind = r.get("type", 0)
            logs = tuple(RawLog(bytes.fromhex(str(log["address"])[2:]), tuple(bytes(t) for t in log["topics"]),
                                bytes(log["data"])) for log in r["logs"])
            out.append(encode_receipt(Receipt(int(kind, 16) if isinstance(kind, str) else int(kind or 0),
                                              int(r["status"]), int(r["cumulativeGasUsed"]), logs)))
    if receipts_root(out) != header.receipts_root:
        raise ChainError(f"block {header.number}: the receipts this node gives do not match the header's receipts root")
    return out


class LogDecoder:
    """Decode raw logs of a deployment's contracts, offline, as ``(contract, event, args)``."""

    def __init__(self, addresses: Mapping[str, str]) -> None:
        w3 = Web3()  # no provider: ABI decoding only
        self._by_address: dict[bytes, tuple[str, Any]] = {}
        self._events: dict[tuple[str, bytes], Any] = {}
        for name, address in addresses.items():
            contract = w3.eth.contract(address=addr(address), abi=load_artifact(name)["abi"], decode_tuples=True)
            self._by_address[bytes.fromhex(address[2:].lower())] = (name, contract)
            for ev in contract.all_events():
                self._events[(name, bytes.fromhex(ev.topic[2:] if ev.topic.startswith("0x") else ev.topic))] = ev

    @property
    def addresses(self) -> list[bytes]:
        """The contracts' 20-byte addresses."""
        return list(self._by_address)

    def contract_of(self, address: bytes) -> str | None:
        found = self._by_address.get(bytes(address))
        return found[0] if found else None

    def decode(self, log: RawLog) -> tuple[str, str, dict[str, Any]] | None:
        """``(contract, event, args)`` of a log of one of the contracts; None for another address.

        Raises :class:`ChainError` for a log of a contract that is not one of its events.
        """
        found = self._by_address.get(log.address)
        if found is None:
            return None
        name, contract = found
        ev = self._events.get((name, log.topics[0])) if log.topics else None
        if ev is None:
            raise ChainError(f"a log of {name} is not one of its events")
        try:
            data = ev.process_log({
                "address": contract.address, "topics": [hexstr(t) for t in log.topics], "data": hexstr(log.data),
                "blockNumber": 0, "transactionHash": "0x" + "00" * 32, "transactionIndex": 0,
                "blockHash": "0x" + "00" * 32, "logIndex": 0,
            })
        except Exception as exc:  # web3 raises several decoding errors; one named error here
            raise ChainError(f"a log of {name} does not decode as {ev.event_name} ({type(exc).__name__})") from None
        return name, data["event"], jsonify_args(ev.abi["inputs"], data["args"], name)
