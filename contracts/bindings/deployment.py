"""The deployment object: the contract clients, event reading and the per-connection index.

:class:`Fedchain` is one deployment on one :class:`~fedchain.contracts.bindings.chain.Chain`,
optionally signing as one account (:meth:`Fedchain.as_`). Contract actions hang off
one thin client per contract::

    fed.consortium   # members, coordinator, motions
    fed.registry     # datasets and policies
    fed.proposals    # proposals and votes
    fed.rounds       # rounds, commitments, evaluations
    fed.releases     # release votes on models, withdrawal marks
    fed.statistics   # the federated statistics phase before training

Events of all the contracts (:data:`~fedchain.contracts.build.CONTRACT_NAMES`) are read with web3 (``get_logs`` over their
addresses, decoded by each contract's ``events.E().process_log``).
:meth:`Fedchain.read_model` keeps one :class:`~fedchain.contracts.readmodel.ReadModel`
per connection and deployment (shared by every ``as_`` copy) and folds only the
blocks mined since it last looked, so listings do not re-scan the chain.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any, Iterator

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.contract.contract import ContractEvent, ContractFunction

from fedchain.contracts.bindings.clients import (
    ConsortiumClient, ProposalsClient, RegistryClient, ReleasesClient, RoundsClient, SecureRoundsClient,
    StatisticsClient,
)
from fedchain.contracts.bindings.codec import addr, as_account, hexstr, jsonify_args
from fedchain.contracts.build import CONTRACT_NAMES, load_artifact
from fedchain.contracts.errors import WouldSend
from fedchain.contracts.models import ChainEvent, Deployment, TxResult
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import FedchainError

#: Blocks per get_logs request.
PAGE_BLOCKS = 2_000


class _Index:
    """A read model kept up to date for one deployment on one connection."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset(-1)

    def reset(self, epoch: int) -> None:
        self.model = ReadModel()
        self.block = -1  # last block folded
        self.block_hash = ""
        self.epoch = epoch


class Fedchain:
    """One deployment on one chain connection, optionally signing as one account."""

    def __init__(self, chain: Any, deployment: Deployment, account: LocalAccount | None = None) -> None:
        self.chain = chain
        self.deployment = deployment
        self.account = account
        self.dry = False  # see dry_run()
        self.contracts: dict[str, Contract] = {
            name: chain.w3.eth.contract(
                address=addr(deployment.addresses[name]), abi=load_artifact(name)["abi"], decode_tuples=True
            )
            for name in CONTRACT_NAMES
        }
        self._by_address = {c.address.lower(): name for name, c in self.contracts.items()}
        self._by_topic: dict[tuple[str, str], ContractEvent] = {
            (name, ev.topic.lower()): ev for name, c in self.contracts.items() for ev in c.all_events()
        }
        self._index = _Index()
        self._facts: dict[str, Any] = {}  # immutable contract facts, read once
        self._clients()

    def _clients(self) -> None:
        self.consortium = ConsortiumClient(self, self.contracts["Consortium"])
        self.registry = RegistryClient(self, self.contracts["DatasetRegistry"])
        self.proposals = ProposalsClient(self, self.contracts["Proposals"])
        self.rounds = RoundsClient(self, self.contracts["Rounds"])
        self.releases = ReleasesClient(self, self.contracts["Releases"])
        self.statistics = StatisticsClient(self, self.contracts["Statistics"])
        self.secure = SecureRoundsClient(self, self.contracts["SecureRounds"])

    def as_(self, account: LocalAccount | str | bytes) -> "Fedchain":
        """The same deployment signing as ``account`` (LocalAccount or private key); shares the index."""
        other = object.__new__(Fedchain)
        other.__dict__.update(self.__dict__)
        other.account = as_account(account)
        other._clients()
        return other

    def dry_run(self) -> "Fedchain":
        """The same deployment and signer, where sending only simulates.

        Every transaction is simulated against the pending block as :meth:`send`
        would before signing; a refusal raises the contract's :class:`ChainRevert`,
        acceptance raises :class:`~fedchain.contracts.errors.WouldSend` carrying the
        function and arguments that would have been signed. Nothing is signed or sent.
        """
        other = object.__new__(Fedchain)
        other.__dict__.update(self.__dict__)
        other.dry = True
        other._clients()
        return other

    @property
    def address(self) -> str:
        """The signer's address."""
        return self.signer().address

    @property
    def addresses(self) -> dict[str, str]:
        """Contract name -> address."""
        return dict(self.deployment.addresses)

    def signer(self) -> LocalAccount:
        """The signing account (error if none: see :meth:`as_`)."""
        if self.account is None:
            raise FedchainError("no signing account: use .as_(account)")
        return self.account

    def voting_period(self) -> int:
        """The voting period of motions and proposals, in blocks (immutable; read once)."""
        if "voting_period" not in self._facts:
            rules = self.call(self.contracts["Consortium"].functions.votingRules())
            self._facts["voting_period"] = int(rules.votingPeriod)
        return self._facts["voting_period"]

    # ------------------------------------------------------- calls and sends

    def call(self, fn: ContractFunction, block: int | None = None) -> Any:
        """Run a view (``contract.functions.f(...)``), as of ``block`` if given."""
        with self.chain.guard():
            return fn.call() if block is None else fn.call(block_identifier=int(block))

    def send(self, fn: ContractFunction) -> TxResult:
        """Send ``contract.functions.f(...)`` as the signer; the result carries its decoded events."""
        if self.dry:
            gas = self.chain.simulate(self.signer(), fn)
            contract = self._by_address[str(fn.address).lower()]
            raise WouldSend(contract, fn.fn_name, jsonify_args(fn.abi["inputs"], dict(
                zip((i["name"] for i in fn.abi["inputs"]), fn.args)), contract), self.signer().address, gas)
        receipt = self.chain.send(self.signer(), fn)
        tx_hash = hexstr(receipt["transactionHash"])
        self.chain.tx_gas.setdefault(tx_hash, int(receipt["gasUsed"]))
        decoded = [ev for ev in (self.decode_log(log) for log in receipt["logs"]) if ev is not None]
        return TxResult(
            tx_hash=tx_hash,
            block_number=int(receipt["blockNumber"]),
            gas_used=int(receipt["gasUsed"]),
            events=tuple(self._with_details(decoded)),
        )

    # ---------------------------------------------------------------- events

    def decode_log(self, log: Any) -> ChainEvent | None:
        """A raw log of one of the contracts as a :class:`ChainEvent` (None if not ours)."""
        contract = self._by_address.get(str(log["address"]).lower())
        if contract is None or not log["topics"]:
            return None
        event = self._by_topic.get((contract, hexstr(log["topics"][0]).lower()))
        if event is None:
            return None
        data = event.process_log(log)
        return ChainEvent(
            block_number=int(data["blockNumber"]),
            tx_hash=hexstr(data["transactionHash"]),
            log_index=int(data["logIndex"]),
            contract=contract,
            event=data["event"],
            args=jsonify_args(event.abi["inputs"], data["args"], contract),
            block_hash=hexstr(data["blockHash"]).lower(),
        )

    def _with_details(self, events: list[ChainEvent]) -> list[ChainEvent]:
        """Fill in block timestamps and transaction gas (cached on the chain: they never change)."""
        times, gas_of = self.chain.block_times, self.chain.tx_gas
        out = []
        with self.chain.guard():
            for ev in events:
                if ev.block_number not in times:
                    times[ev.block_number] = int(self.chain.w3.eth.get_block(ev.block_number)["timestamp"])
                if ev.tx_hash not in gas_of:
                    gas_of[ev.tx_hash] = int(self.chain.w3.eth.get_transaction_receipt(ev.tx_hash)["gasUsed"])
                out.append(dataclasses.replace(ev, timestamp=times[ev.block_number], gas_used=gas_of[ev.tx_hash]))
        return out

    def iter_events(
        self, from_block: int = 0, to_block: int | None = None, page_size: int = PAGE_BLOCKS, *, details: bool = True
    ) -> Iterator[ChainEvent]:
        """Events of all the contracts (:data:`~fedchain.contracts.build.CONTRACT_NAMES`) in (block, log index) order, fetched ``page_size`` blocks at a time.

        With ``details`` (default) each event carries its block timestamp and its
        transaction's gas, at one extra request per distinct block and transaction.
        """
        if page_size <= 0:
            raise ValueError("page_size must be positive")
        end = self.chain.block_number if to_block is None else int(to_block)
        start = max(0, int(from_block))
        addresses = [c.address for c in self.contracts.values()]
        while start <= end:
            stop = min(end, start + page_size - 1)
            with self.chain.guard():
                logs = self.chain.w3.eth.get_logs({"address": addresses, "fromBlock": start, "toBlock": stop})
            decoded = [ev for ev in (self.decode_log(log) for log in logs) if ev is not None]
            decoded.sort(key=lambda e: (e.block_number, e.log_index))
            yield from (self._with_details(decoded) if details else decoded)
            start = stop + 1

    def events(
        self, from_block: int = 0, to_block: int | None = None, page_size: int = PAGE_BLOCKS, *, details: bool = True
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

    # ----------------------------------------------------------------- index

    def read_model(self) -> ReadModel:
        """The read model of this deployment, brought up to the latest block.

        Kept per connection: each call folds only the events of blocks mined since the
        previous one (two cheap requests when nothing happened; one on the embedded
        chain, whose history only :meth:`Chain.revert` rewrites). It starts over when
        the chain was reverted to a snapshot or the last folded block was replaced.
        Events in it carry no timestamps or gas (0); the audit reads those itself.
        """
        idx = self._index
        may_reorg = self.chain.backend.may_reorg
        with idx.lock:
            head = self.chain.block_number
            stale = idx.epoch != self.chain.epoch or head < idx.block
            if not stale and may_reorg and idx.block >= 0 and self.chain.block_hash(idx.block) != idx.block_hash:
                stale = True
            if stale:
                idx.reset(self.chain.epoch)
            if head > idx.block:
                start = max(idx.block + 1, self.deployment.deploy_block)
                idx.model.apply_all(self.iter_events(start, head, details=False))
                idx.block = head
                idx.block_hash = self.chain.block_hash(head) if may_reorg else ""
            return idx.model
