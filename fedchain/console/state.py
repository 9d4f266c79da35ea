"""What one console holds: the connection, the acting member, the store, names and caches.

The console reads through the read model (``fed.read_model()``) and the use
cases; it signs with the member's identity, which stays in this process (the
browser never sees a key). Chain access is serialised by one lock: the
embedded chain is not thread-safe, and a page should see one block, not two.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from fedchain.content import MAX_DOCUMENT_SIZE, fetch_document
from fedchain.contracts.bindings import Chain, Deployment, Fedchain, purpose_hash
from fedchain.contracts.readmodel import ReadModel
from fedchain.errors import FedchainError
from fedchain.identity import Identity, require_chain_allows
from fedchain.ipfs import open_store
from fedchain.plan import TrainingPlan
from fedchain.usecases import proposals as uc_proposals

#: Purposes the CLI remembers in HOME (the same file ``fedchain dataset`` writes).
PURPOSES_FILE = "purposes.json"
#: Purposes worth naming even when no proposal spelled them out (policies hold only hashes).
COMMON_PURPOSES = ("research", "diagnosis", "prognosis", "treatment", "screening", "triage", "prediction",
                   "public-health", "epidemiology", "quality-improvement", "education", "commercial")
#: Metadata documents are small; never fetch more than this for one.
MAX_METADATA_BYTES = 1 << 20


def short(address: str) -> str:
    return f"{address[:6]}…{address[-4:]}" if len(address) > 14 else address


def date_words(ts: int) -> str:
    when = dt.datetime.fromtimestamp(ts, dt.timezone.utc)
    if when.hour == when.minute == when.second == 0:
        return when.date().isoformat()
    return when.strftime("%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True)
class Role:
    """Who the console acts for and what it may offer."""

    address: str | None
    name: str
    member: bool
    coordinator: bool
    can_act: bool
    #: Why the console is read-only ("" when it may act).
    read_only_because: str

    @property
    def label(self) -> str:
        if self.can_act:
            return "member" + (" (coordinator)" if self.coordinator else "")
        return "read-only"


class Names:
    """Readable names from the read model: members by address, datasets by id, purposes by hash."""

    def __init__(self, model: ReadModel, known_purposes: list[str]) -> None:
        self.members = {a: m.name for a, m in model.members.items()}
        self.datasets = {d.id: d.name for d in model.datasets.values()}
        self.coordinator = (model.coordinator or "").lower()
        words = list(COMMON_PURPOSES) + known_purposes + [p.purpose for p in model.proposals.values()]
        self.purposes = {"0x" + purpose_hash(w).hex(): w for w in words if isinstance(w, str) and w}

    def who(self, address: str) -> str:
        a = address.lower()
        name = self.members.get(a) or ("coordinator" if a == self.coordinator else "")
        return f"{name} ({short(address)})" if name else short(address)

    def name_of(self, address: str) -> str:
        return self.members.get(address.lower(), short(address))

    def dataset(self, dataset_id: str) -> str:
        return self.datasets.get(dataset_id.lower(), short(dataset_id))

    def purpose(self, h: str) -> str:
        return self.purposes.get(h.lower(), f"(purpose {short(h)})")


class _Cache:
    """A small LRU of immutable documents (content addressed: never stale)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = make()
        with self.lock:
            self.items[key] = value
            while len(self.items) > self.size:
                self.items.popitem(last=False)
        return value


class ConsoleState:
    """One console: chain connection, deployment, the acting identity, the store and caches."""

    def __init__(self, chain: Chain, deployment: Deployment, store_url: str, identity: Identity | None, *,
                 home: Path | None = None, read_only: bool = False) -> None:
        self.chain = chain
        self.deployment = deployment
        if identity is not None:
            require_chain_allows(identity, chain.chain_id)  # DEV ONLY keys sign on dev chains only
        self.fed: Fedchain = chain.attach(deployment)
        self.store_url = store_url
        self.identity = identity
        self.home = home
        self.read_only = read_only
        self.lock = threading.RLock()
        self._docs = _Cache()

    @classmethod
    def open(cls, chain_url: str, deployment: Deployment, store_url: str, identity: Identity | None,
             **kw: Any) -> "ConsoleState":
        return cls(Chain.connect(chain_url), deployment, store_url, identity, **kw)

    # -- chain ----------------------------------------------------------------------------

    def model(self) -> ReadModel:
        """The read model, brought up to the latest block."""
        return self.snapshot()[0]

    def snapshot(self) -> tuple[ReadModel, int]:
        """The read model brought up to the latest block, and the last block it had folded then.

        The model is one object shared by every request and synced in place by the next
        read, so its ``last_block`` can move on while a page is being built; a page is
        stamped with the block returned here, read under the same lock as the sync.
        """
        with self.lock:
            model = self.fed.read_model()
            return model, model.last_block

    def head(self) -> tuple[int, int]:
        """(block number, its timestamp)."""
        with self.lock:
            return self.chain.block_number, self.chain.block_timestamp

    def me(self) -> Fedchain | None:
        """The deployment signing as the console's identity (None without one)."""
        return self.fed.as_(self.identity.account) if self.identity is not None else None

    def role(self, model: ReadModel) -> Role:
        if self.identity is None:
            return Role(None, "nobody", False, False, False,
                        "no identity: the console was started without --identity or --dev")
        address = self.identity.address
        rec = model.members.get(address.lower())
        member = rec is not None and rec.active
        coord = (model.coordinator or "").lower() == address.lower()
        name = rec.name if rec is not None else self.identity.name
        if not member:
            why = f"{name} ({short(address)}) is not a member of this consortium"
        elif self.read_only:
            why = "started with --read-only"
        else:
            why = ""
        return Role(address, name, member, coord, not why, why)

    def names(self, model: ReadModel) -> Names:
        return Names(model, self.known_purposes())

    def known_purposes(self) -> list[str]:
        if self.home is None:
            return []
        try:
            data = json.loads((self.home / PURPOSES_FILE).read_text())
            return [p for p in data if isinstance(p, str)][:1000]
        except (OSError, ValueError, TypeError):
            return []

    def remember_purposes(self, purposes: list[str]) -> None:
        """Keep purposes typed into the policy editor, so their hashes read as words later (as the CLI does)."""
        if self.home is None or not purposes:
            return
        known = self.known_purposes()
        merged = known + [p for p in dict.fromkeys(purposes) if p not in known]
        if merged != known:
            try:
                (self.home / PURPOSES_FILE).write_text(json.dumps(merged, indent=2) + "\n")
            except OSError:
                pass

    # -- content ----------------------------------------------------------------------------

    @contextmanager
    def store(self) -> Iterator[Any]:
        s = open_store(self.store_url)
        try:
            yield s
        finally:
            close = getattr(s, "close", None)
            if close is not None:
                close()

    def plan(self, proposal_id: int) -> TrainingPlan:
        """The proposal's plan, fetched and checked against its on-chain hash (cached by hash)."""
        with self.lock:
            info = uc_proposals.require(self.fed, proposal_id)

        def fetch() -> TrainingPlan:
            with self.store() as s:
                return uc_proposals.fetch_plan(s, info)

        return self._docs.get(("plan", info.plan_cid, info.plan_sha256), fetch)

    def document(self, cid: str, sha256: str, max_size: int = MAX_DOCUMENT_SIZE) -> dict:
        """A JSON document by CID, checked against the sha256 recorded on chain (cached)."""

        def fetch() -> dict:
            with self.store() as s:
                data = json.loads(fetch_document(s, cid, sha256, max_size=max_size))
            if not isinstance(data, dict):
                raise FedchainError(f"document {cid} is not a JSON object")
            return data

        return self._docs.get(("doc", cid, sha256.lower()), fetch)

    def try_document(self, cid: str, sha256: str, max_size: int = MAX_DOCUMENT_SIZE) -> tuple[dict | None, str]:
        """``(document, "")`` or ``(None, why not)``."""
        if not cid:
            return None, "no document"
        try:
            return self.document(cid, sha256, max_size), ""
        except (FedchainError, ValueError, OSError) as exc:
            return None, str(exc)
