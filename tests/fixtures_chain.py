"""Chain fixtures (anvil process, eth-tester and anvil backends).

* ``anvil_node`` (session): one anvil started for the session and stopped at
  its end (skips the anvil tests if the binary is missing).
* ``chain_backend`` (session, parametrized "eth-tester" / "anvil"): a connected
  chain with the contracts deployed once, plus a snapshot of that state.
* ``system`` (function): a :class:`System` on that backend; the chain is
  reverted to the post-deploy snapshot after each test, so every test sees a
  fresh deployment without paying for one.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Sequence

import pytest

from fedchain.contracts.anvil import Anvil, AnvilError, find_anvil
from fedchain.contracts.bindings import Chain, ChainRevert, Deployment, Fedchain, FounderSpec, Policy, Vote
from fedchain.ipfs.unixfs import compute_cid

__all__ = [
    "BACKENDS", "ROWS", "System", "anvil_node", "chain_backend", "cid", "system", "sha", "make_founders", "reverts",
]

BACKENDS = ("eth-tester", "anvil")
VOTING_PERIOD = 5
QUORUM_BPS = 5000
APPROVAL_BPS = 5001
FOUNDER_NAMES = ("Alpha Hospital", "Beta Clinic", "Gamma Institute")
#: Rows a test dataset registers by default.
ROWS = 1000


def sha(text: str | bytes) -> bytes:
    """sha256 digest of a string or bytes (test data helper)."""
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).digest()


def cid(text: str | bytes) -> str:
    """A well-formed CIDv0 of a string or bytes (what the content store would name it)."""
    return compute_cid(text.encode() if isinstance(text, str) else text)


def make_founders(accounts: Sequence[Any], names: Sequence[str] = FOUNDER_NAMES) -> list[FounderSpec]:
    """FounderSpecs for ``accounts`` with deterministic X25519 keys."""
    return [FounderSpec(n, a.address, sha(f"x25519:{n}")) for n, a in zip(names, accounts)]


@contextmanager
def reverts(error: str, **expected_args: Any):
    """Expect a :class:`ChainRevert` with custom error ``error`` and (a subset of) these args.

    Yields a one-element list that holds the exception afterwards.
    """
    box: list[ChainRevert] = []
    with pytest.raises(ChainRevert) as info:
        yield box
    exc = info.value
    box.append(exc)
    assert exc.error == error, f"expected {error}, got {exc.error} {exc.args_dict}"
    for key, value in expected_args.items():
        assert exc.args_dict.get(key) == value, f"{error}.{key}: expected {value!r}, got {exc.args_dict.get(key)!r}"


@dataclass
class System:
    """A deployed fedchain on one backend, with named accounts and scenario helpers.

    ``a``, ``b``, ``c``: founding members; ``coord``: coordinator; ``outsiders``:
    funded non-members. ``A``, ``B``, ``C``, ``K`` (coordinator), ``O`` (first
    outsider): façades signing as them.
    """

    backend: str
    chain: Chain
    deployment: Deployment
    fc: Fedchain
    accounts: list[Any]
    _counter: list[int] = field(default_factory=lambda: [0])

    @property
    def a(self) -> Any:
        return self.accounts[0]

    @property
    def b(self) -> Any:
        return self.accounts[1]

    @property
    def c(self) -> Any:
        return self.accounts[2]

    @property
    def coord(self) -> Any:
        return self.accounts[3]

    @property
    def outsiders(self) -> list[Any]:
        return self.accounts[4:]

    @property
    def A(self) -> Fedchain:  # noqa: N802 - short names keep the tests readable
        return self.fc.as_(self.a)

    @property
    def B(self) -> Fedchain:  # noqa: N802
        return self.fc.as_(self.b)

    @property
    def C(self) -> Fedchain:  # noqa: N802
        return self.fc.as_(self.c)

    @property
    def K(self) -> Fedchain:  # noqa: N802
        return self.fc.as_(self.coord)

    @property
    def O(self) -> Fedchain:  # noqa: N802,E743
        return self.fc.as_(self.outsiders[0])

    def as_(self, account: Any) -> Fedchain:
        return self.fc.as_(account)

    # ------------------------------------------------------------ helpers

    def register(self, owner: Fedchain, name: str, policy: Policy | None = None, rows: int = ROWS) -> bytes:
        """Register dataset ``name`` of ``rows`` rows owned by ``owner`` (default policy: any approved proposal)."""
        return owner.registry.register_dataset(
            name, f"bafy-meta-{name}", sha(f"meta:{name}"), sha("schema:v1"), policy or Policy.open(), row_count=rows
        ).value

    def propose(
        self,
        proposer: Fedchain,
        targets: Sequence[str | bytes],
        *,
        purpose: str = "research",
        rounds: int = 2,
        min_participants: int = 1,
        round_duration: int = 10,
    ) -> int:
        """Submit a proposal; returns its id."""
        self._counter[0] += 1
        plan = f"plan-{self._counter[0]}"
        return proposer.proposals.submit_proposal(
            f"bafy-{plan}", sha(plan), purpose, list(targets), rounds, min_participants, round_duration
        ).value

    def mine_past(self, deadline: int) -> None:
        """Mine so that the next transaction lands in block ``deadline + 1``."""
        n = deadline - self.chain.block_number
        if n > 0:
            self.chain.mine(n)

    def approve(self, pid: int) -> None:
        """All three founders vote yes, the period passes, the proposal is finalized."""
        for member in (self.A, self.B, self.C):
            member.proposals.vote(pid, Vote.YES)
        self.chain.mine(VOTING_PERIOD)
        self.fc.as_(self.a).proposals.finalize(pid)

    def approved_proposal(self, targets: Sequence[str | bytes], **kw: Any) -> int:
        """A proposal by founder A on ``targets``, approved."""
        pid = self.propose(self.A, targets, **kw)
        self.approve(pid)
        return pid

    def training_setup(self, **kw: Any) -> int:
        """Datasets "ds-a"/"ds-b" of A/B (open policies), an approved proposal on both, round 1 open."""
        self.register(self.A, "ds-a")
        self.register(self.B, "ds-b")
        pid = self.approved_proposal(["ds-a", "ds-b"], **kw)
        self.K.rounds.open_round(pid, 1)
        return pid

    def commit(self, member: Fedchain, pid: int, rnd: int, dataset: str, tag: str = "u", samples: int = 100) -> Any:
        """Commit a dummy update (a well-formed CID of nothing in particular)."""
        return member.rounds.commit_update(
            pid, rnd, dataset, cid(f"{tag}-{dataset}-{rnd}"), sha(f"{tag}{dataset}{rnd}"), samples
        )


@pytest.fixture(scope="session")
def anvil_node():
    """One anvil process for the whole session (stopped, with nothing left behind, at the end)."""
    try:
        find_anvil()
    except AnvilError as exc:
        pytest.skip(str(exc))
    node = Anvil().start()
    try:
        yield node
    finally:
        node.stop()


@dataclass
class _Backend:
    name: str
    chain: Chain
    deployment: Deployment
    snapshot: Any


@pytest.fixture(
    scope="session", params=[pytest.param(b, marks=pytest.mark.anvil) if b == "anvil" else b for b in BACKENDS]
)
def chain_backend(request) -> _Backend:
    """A chain with the contracts deployed once per session, per backend."""
    if request.param == "anvil":
        chain = Chain.connect(request.getfixturevalue("anvil_node").url)
    else:
        chain = Chain.connect("eth-tester://")
    accounts = chain.dev_accounts
    deployment = chain.deploy(
        accounts[0],
        make_founders(accounts[:3]),
        accounts[3].address,
        voting_period_blocks=VOTING_PERIOD,
        quorum_bps=QUORUM_BPS,
        approval_bps=APPROVAL_BPS,
    )
    return _Backend(request.param, chain, deployment, chain.snapshot())


@pytest.fixture
def system(chain_backend: _Backend):
    """A freshly deployed system (state reverted to the post-deploy snapshot after the test)."""
    chain = chain_backend.chain
    yield System(
        backend=chain_backend.name,
        chain=chain,
        deployment=chain_backend.deployment,
        fc=chain.attach(chain_backend.deployment),
        accounts=list(chain.dev_accounts),
    )
    chain.revert(chain_backend.snapshot)
    chain_backend.snapshot = chain.snapshot()
