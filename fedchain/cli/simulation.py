"""A consortium in one process: dev identities, the demo data, real transactions.

:class:`Simulation` sets up what ``fedchain demo``, the local network, the
benchmarks and the tests all need: hospitals holding non-IID slices of the demo
data (one dev identity each), a coordinator run by a member ("consortium ops"),
an auditor who is not a member, the contracts deployed on a real chain (the
embedded one by default, or any JSON-RPC URL), every hospital's dataset
registered with its access policy through the use cases, and a plan proposed,
voted and finalized. It then drives rounds with the real node and coordinator
objects. It wires both roles together, so it lives with the CLI (the only layer
that may import ``node`` and ``coordinator`` side by side).

Identities (DEV ONLY, public keys): hospital ``i`` is dev account ``i``, the
coordinator is dev account ``n``, the auditor ``n + 1``; accounts beyond anvil's
ten are derived from the same mnemonic and funded before use.

Large consortia: the contract takes at most ``MAX_FOUNDERS`` founding members, so
hospitals beyond the first ``MAX_FOUNDERS - 1`` (the coordinator is a founder too)
are admitted afterwards the way any member is: an admission motion, voted by
enough members to pass the consortium's quorum and approval threshold, finalized
after its voting period (motions are batched so each batch fits in one period).
Plans get a round deadline long enough for every hospital's commitment (one block
each on a chain that mines per transaction), even in a round opened while the
previous one's evaluations are still being submitted.

Scale: 100 hospitals x 5 rounds of the demo model run on a 2-core machine
(``fedchain simulate --hospitals 100``); everything is one process, so the chain,
the store and training share it.
"""

from __future__ import annotations

import gc
import math
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import torch

from fedchain.cli.attacks import Attack, AttackingNode
from fedchain.contracts.bindings import Chain, Deployment, Fedchain, FounderSpec, Policy, Vote
from fedchain.coordinator.runner import Coordinator, RoundResult
from fedchain.content import pin_document
from fedchain.errors import FedchainError
from fedchain.he import DecryptorKey
from fedchain.he_round import Decryptor, HEInput
from fedchain.identity import Identity, dev_identity, require_chain_allows
from fedchain.ipfs.local import LocalStore
from fedchain.ipfs.store import ContentStore
from fedchain.node.dataset import TabularData, load_dataset
from fedchain.node.runner import HospitalNode, RoundOutcome, SharedAggregates, TrainingJob
from fedchain.plan import TrainingPlan
from fedchain.sample_data import DemoData, make_demo_data
from fedchain.schema import DatasetSchema, load_schema
from fedchain.validation import model_size
from fedchain.usecases import datasets, members as motions, proposals

#: Extra blocks in the voting period beyond one per voter (a chain that mines a
#: block per transaction would otherwise end the vote before the last voter).
VOTING_MARGIN_BLOCKS = 3
#: DEV: what an identity beyond the chain's prefunded accounts is given for gas (100 ETH).
FUNDING_WEI = 100 * 10**18
#: ``Consortium.MAX_FOUNDERS``: founding members the contract accepts (a test keeps them equal).
MAX_FOUNDERS = 128


def he_commitments(fed: Fedchain, proposal_id: int, round_: int) -> list[HEInput]:
    """A round's commitments as the chain recorded them (what a decryptor checks inputs against)."""
    names: dict[bytes, str] = {}
    out = []
    for c in fed.rounds.commitments(proposal_id, round_):
        if c.dataset not in names:
            info = fed.registry.dataset(c.dataset)
            names[c.dataset] = info.name if info is not None else "0x" + c.dataset.hex()
        out.append(HEInput(c.member, names[c.dataset], c.cid, "0x" + bytes(c.sha256).hex(), c.sample_count))
    return out


@contextmanager
def settled_heap() -> Iterator[None]:
    """While a command runs its rounds: the objects set-up left are frozen (``gc.freeze``), then thawed.

    Set-up leaves ~500,000 objects the collector tracks (torch, py-evm, web3, the contracts'
    ABIs); every full collection walked all of them, ~150-190 ms, in whichever round happened
    to trigger it (one round in seven of a 4-hospital simulation: 545 ms against 355 ms).
    Frozen, they are skipped; what the rounds allocate is collected as before, and on the way
    out (even on an error) everything is thawed, so a process that goes on (a test session)
    keeps nothing it would otherwise free. Used by the commands that run a simulation to its end
    (``fedchain demo``, ``fedchain simulate``, the benchmark's job); nested use only thaws at
    the outermost exit.
    """
    global _settling
    if _settling:
        yield
        return
    gc.collect()
    gc.freeze()
    _settling = True
    try:
        yield
    finally:
        _settling = False
        gc.unfreeze()


_settling = False


@dataclass
class SimRound:
    """One round as the simulation drove it."""

    round: int
    result: RoundResult
    refused: dict[str, str] = field(default_factory=dict)  # dataset -> why it sat out
    committed: list[str] = field(default_factory=list)  # datasets that committed
    gas: int = 0
    validation_metric: float | None = None


#: Updates at least this large are checked by the coordinator as they are committed (see :meth:`Simulation.run_round`).
EARLY_CHECK_BYTES = 1 << 20

#: Hospitals a simulation trains at once (each on one torch thread; see :meth:`Simulation.run_round`).
TRAINERS = 2


def _train_and_seal(node: HospitalNode, job: TrainingJob, keys: list[bytes] | None):
    """Train, then (given the keys) seal and pin: what a simulated node does off the chain's thread."""
    result = job.train()
    return result, (node.seal(job, result, keys) if keys is not None else None)


@dataclass
class _Training:
    """A round opened and its hospitals' training under way, committed in node order by :meth:`finish`."""

    proposal_id: int
    round: int
    gas: int
    trainer: ThreadPoolExecutor
    pending: deque = field(default_factory=deque)  # (node, job, future of _train_and_seal), in node order
    refused: dict[str, str] = field(default_factory=dict)
    committed: list[str] = field(default_factory=list)
    threads: int = 1  # torch's thread count before the round was started ahead

    def commit_next(self, early) -> None:
        """Commit the first waiting update (then let the coordinator check it early, if ``early``)."""
        node, job, training = self.pending.popleft()
        result, sealed = training.result()
        outcome = node.commit(job, result, sealed=sealed)
        self.gas += outcome.gas_used
        self.committed.append(node.dataset_name)
        if early is not None:  # the coordinator starts checking it while the next hospital trains
            early(self.proposal_id, self.round)

    def finish(self, early, *, keep_open: bool = False) -> None:
        """Commit every waiting update; unless ``keep_open``, the workers are done."""
        try:
            while self.pending:
                self.commit_next(early)
        except BaseException:
            self.abandon()
            raise
        if not keep_open:
            self.trainer.shutdown()

    def abandon(self) -> None:
        """Wait for the workers and drop what they made: nothing more is committed."""
        self.pending.clear()
        self.trainer.shutdown(wait=True, cancel_futures=True)


@dataclass
class Simulation:
    root: Path
    chain: Chain
    store: ContentStore
    data: DemoData
    members: list[Identity]
    ops: Identity
    auditor: Identity
    deployment: Deployment
    schemas: dict[str, DatasetSchema] = field(default_factory=dict)
    datasets: dict[str, TabularData] = field(default_factory=dict)
    gas: dict[str, int] = field(default_factory=dict)
    _fed: Fedchain | None = field(default=None, repr=False)
    decryptor: Decryptor | None = field(default=None, repr=False)  # mode = "he" (see he_plan)
    _started: "_Training | None" = field(default=None, repr=False)  # run_round(start_next=True)

    # -- set-up -------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: Path,
        *,
        hospitals: int,
        seed: int,
        chain_url: str = "eth-tester://",
        store: ContentStore | None = None,
        quorum_bps: int = 5000,
        approval_bps: int = 6000,
        voting_period_blocks: int | None = None,
        fsync: bool = True,
    ) -> "Simulation":
        """Deploy a consortium of ``hospitals`` members plus its coordinator on ``chain_url``."""
        if hospitals < 1:
            raise FedchainError("a simulation needs at least one hospital")
        chain = Chain.connect(chain_url)
        ops = dev_identity(hospitals, name="consortium-ops")
        require_chain_allows(ops, chain.chain_id)  # DEV ONLY keys act on dev chains only
        root.mkdir(parents=True, exist_ok=True)
        data = make_demo_data(root / "data", n_hospitals=hospitals, seed=seed)
        members = [dev_identity(i, name=h.name) for i, h in enumerate(data.hospitals)]
        auditor = dev_identity(hospitals + 1, name="auditor")
        funded = {a.address for a in chain.dev_accounts}
        for ident in members + [ops]:
            if ident.address not in funded:  # DEV: accounts beyond the ten the chain prefunds
                chain.fund(ident.address, FUNDING_WEI)
        voters = len(members) + 1
        founders = members[: MAX_FOUNDERS - 1] + [ops]
        deployment = chain.deploy(
            chain.dev_accounts[0],
            founders=[FounderSpec(m.name, m.address, m.x25519_public) for m in founders],
            coordinator=ops.address,
            voting_period_blocks=voting_period_blocks or voters + VOTING_MARGIN_BLOCKS,
            quorum_bps=quorum_bps,
            approval_bps=approval_bps,
        )
        if store is None:
            store = LocalStore(root / "store", fsync=fsync)
        sim = cls(root=root, chain=chain, store=store, data=data, members=members, ops=ops, auditor=auditor,
                  deployment=deployment)
        sim.admit(members[MAX_FOUNDERS - 1 :], voters=founders)
        for h in data.hospitals:
            sim.schemas[h.name] = load_schema(h.schema_path)
            sim.datasets[h.name] = load_dataset(h.csv_path, sim.schemas[h.name])
        return sim

    def admit(self, newcomers: list[Identity], *, voters: list[Identity]) -> None:
        """Admit ``newcomers`` as members by motion: proposed and voted YES by ``voters`` (members).

        Each motion gets the YES votes its quorum and approval threshold need;
        motions go in batches whose votes fit in one voting period, then the
        chain is mined past their deadlines and they are finalized.
        """
        if not newcomers:
            return
        rules = self.fed().consortium.voting_params()
        pending = list(newcomers)
        while pending:
            eligible = self.fed().consortium.member_count()
            need = max(1, math.ceil(eligible * rules.quorum_bps / 10_000))
            if need > len(voters):
                raise FedchainError(f"{len(voters)} voters cannot reach a quorum of {need} members")
            size = max(1, rules.voting_period_blocks // need)  # every vote of the batch lands before its deadline
            batch, pending = pending[:size], pending[size:]
            ids = [motions.propose_admit(self.fed(voters[0]), m.name, m.address, m.x25519_public).value
                   for m in batch]
            for motion_id in ids:
                for v in voters[:need]:
                    self.gas.setdefault("vote motion", motions.vote(self.fed(v), motion_id, True).gas_used)
            last = self.fed().consortium.motion(ids[-1]).deadline
            self.chain.mine(max(0, last - self.chain.block_number + 1))
            for motion_id in ids:
                motions.finalize(self.fed(voters[0]), motion_id)
        missing = [m.name for m in newcomers if not self.fed().consortium.is_member(m.address)]
        if missing:
            raise FedchainError(f"admission motions did not pass for {', '.join(missing)}")

    @property
    def names(self) -> list[str]:
        return [h.name for h in self.data.hospitals]

    def fed(self, who: Identity | None = None) -> Fedchain:
        """The deployment, signing as ``who`` (read-only without)."""
        if self._fed is None:
            self._fed = self.chain.attach(self.deployment)
        return self._fed.as_(who.account) if who is not None else self._fed

    def register_datasets(self, policies: Mapping[str, Policy] | None = None, description: str = "demo") -> None:
        """Every hospital registers its dataset (default policy: any approved proposal, purpose 'diagnosis')."""
        for m, h in zip(self.members, self.data.hospitals):
            policy = (policies or {}).get(h.name, Policy.open(purposes=("diagnosis",)))
            done = datasets.register(
                self.fed(m), self.store, name=h.name, schema=self.schemas[h.name],
                n_rows=self.datasets[h.name].n_rows, description=f"{h.name}: breast-cancer slice ({description})",
                policy=policy,
            )
            self.gas[f"register {h.name}"] = done.tx.gas_used

    @property
    def round_blocks(self) -> int:
        """Blocks a round must stay open for every hospital to commit (one block per transaction), after
        the previous round's evaluations and metric, which a round started ahead
        (:meth:`run_round` ``start_next``) opens before."""
        return 2 * len(self.members) + 1 + 2 * VOTING_MARGIN_BLOCKS

    def plan(self, base: TrainingPlan, **changes: Any) -> TrainingPlan:
        """``base`` with this consortium's auditor named, a round deadline long enough for every
        hospital (:attr:`round_blocks`, unless ``changes`` sets one) and ``changes`` applied."""
        changes.setdefault("round_deadline_blocks", max(base.round_deadline_blocks, self.round_blocks))
        return base.with_changes(auditors=["0x" + self.auditor.x25519_public.hex()], **changes)

    def approve(
        self,
        plan: TrainingPlan,
        *,
        proposer: int = 0,
        votes: Mapping[str, Vote | str] | None = None,
        finalize_vote: bool = True,
    ) -> int:
        """Propose ``plan``, let every member vote (YES unless ``votes`` says otherwise), finalize."""
        proposed = proposals.propose(self.fed(self.members[proposer]), self.store, plan)
        self.gas["submit proposal"] = proposed.tx.gas_used
        for ident in self.members + [self.ops]:
            tx = proposals.vote(self.fed(ident), proposed.id, (votes or {}).get(ident.name, Vote.YES))
            self.gas.setdefault("vote", tx.gas_used)
        if finalize_vote:
            self.end_vote(proposed.id)
            self.gas["finalize"] = proposals.finalize(self.fed(self.ops), proposed.id).gas_used
        return proposed.id

    def end_vote(self, proposal_id: int) -> None:
        """DEV: mine past the proposal's voting deadline."""
        deadline = self.fed().proposals.proposal(proposal_id).deadline
        self.chain.mine(max(0, deadline - self.chain.block_number + 1))

    # -- rounds -------------------------------------------------------------------------------

    def nodes(self, attacks: Mapping[str, Attack] | None = None) -> list[HospitalNode]:
        """One node per hospital; a hospital named in ``attacks`` runs an :class:`~fedchain.cli.attacks.AttackingNode`
        (demo, tests and benchmarks only)."""
        unknown = sorted(set(attacks or {}) - set(self.names))
        if unknown:
            raise FedchainError(f"no such hospital to attack from: {', '.join(unknown)}")
        out: list[HospitalNode] = []
        # one process runs every hospital: the first node to fetch and check a round's aggregate hands it to the
        # others (an operator's simulation is not a trust boundary; real nodes, one per process, share nothing)
        shared = SharedAggregates()
        for m, h in zip(self.members, self.data.hospitals):
            args = (self.fed(m), self.store, m, h.name, self.schemas[h.name], self.datasets[h.name])
            attack = (attacks or {}).get(h.name)
            node = (AttackingNode(*args, attack=attack, shared=shared) if attack is not None
                    else HospitalNode(*args, shared=shared))
            out.append(node)
        return out

    def coordinator(self, decryptor=None) -> Coordinator:
        """The coordinator; under ``mode = "he"`` it reaches ``decryptor`` (default: the one
        :meth:`he_plan` made) for each round's aggregate."""
        return Coordinator(self.fed(self.ops), self.store, self.ops, decryptor=decryptor or self.decryptor)

    def he_plan(self, base: TrainingPlan, *, decryptor: Identity | None = None, key: DecryptorKey | None = None,
                remote: tuple[str, bytes, Callable] | None = None, **changes: Any) -> TrainingPlan:
        """:meth:`plan` under ``mode = "he"``: ``decryptor`` (default the auditor) generates a CKKS key
        pair (or uses ``key``), its public context is pinned and named in the plan, and
        :attr:`decryptor` holds the secret key in this process. ``remote = (address, public context
        bytes, decrypt)`` instead names a decryptor that runs elsewhere: this process never sees its key."""
        if remote is not None:
            address, public, self.decryptor = remote
        else:
            who = decryptor or self.auditor
            key = key or DecryptorKey.generate()
            address, public = who.address, key.public_context().encode()
            self.decryptor = Decryptor(key, who.account, self.store, self.he_commitments)
        pinned = pin_document(self.store, public)
        return self.plan(base, mode="he", he={"decryptor": address, "context_cid": pinned.cid,
                                             "context_sha256": "0x" + pinned.sha256}, **changes)

    def he_commitments(self, proposal_id: int, round_: int) -> list[HEInput]:
        return he_commitments(self.fed(), proposal_id, round_)

    def secagg_plan(self, base: TrainingPlan, *, max_dropouts: int = 0, **changes: Any) -> TrainingPlan:
        """:meth:`plan` under ``mode = "secagg"``, with phases long enough for every hospital's
        transactions (two in the masked-input phase) and a round deadline after all four."""
        p = 2 * len(self.members) + 4
        changes.setdefault("round_deadline_blocks", 4 * p + self.round_blocks + 2)
        return self.plan(base, mode="secagg", secagg={"max_dropouts": max_dropouts, "phase_blocks": p}, **changes)

    def _mine_to(self, block: int) -> None:
        """DEV: mine so that the next transaction lands in ``block`` or later."""
        self.chain.mine(max(0, block - 1 - self.chain.block_number))

    def run_secagg_round(self, proposal_id: int, round_: int, nodes: list[HospitalNode], coordinator: Coordinator,
                         *, vanish: Mapping[str, int] | None = None, progress=None) -> SimRound:
        """A ``mode = "secagg"`` round through the four SecureRounds phases, mining to each window.

        ``vanish``: dataset -> the last phase (0..3) its node completes before it disappears
        (-1: never shows up; 2: gone after its masked input). A round whose session fails is
        failed on chain after the round's deadline, and nothing is published."""
        vanish = dict(vanish or {})
        say = progress or (lambda _m: None)
        gas = coordinator.open_round(proposal_id, round_).gas_used
        session_tx = coordinator.secagg_start(proposal_id, round_)
        gas += session_tx.gas_used
        refused, jobs = {}, {}
        for n in nodes:
            job = n.prepare(proposal_id, round_)
            if isinstance(job, RoundOutcome):
                refused[n.dataset_name] = job.reason
            elif vanish.get(n.dataset_name, 3) >= 0:
                jobs[n.dataset_name] = (n, job)
        session = self.fed().secure.session(proposal_id, round_)
        steps = [("advertising keys", lambda n, j: n.secagg_advertise(proposal_id, round_)),
                 ("sharing keys", lambda n, j: n.secagg_share(proposal_id, round_)),
                 ("training and masking", lambda n, j: n.secagg_mask(j, j.train())),
                 ("unmasking", lambda n, j: n.secagg_unmask(proposal_id, round_))]
        committed = []
        for phase, (what, step) in enumerate(steps):
            self._mine_to(session.window(phase)[0])
            for name, (n, job) in jobs.items():
                if vanish.get(name, 3) < phase:
                    continue
                say(f"round {round_}: {name} {what}")
                done = step(n, job)
                gas += done.gas_used
                if phase == 2:
                    committed.append(name)
        say(f"round {round_}: unmasking the sum")
        if self.fed().rounds.awaited_commitments(proposal_id, round_):
            # The chain lets a round close early only once every target that could commit did: DEV, mine to
            # the deadline.
            self._mine_to(self.fed().rounds.round_info(proposal_id, round_).deadline + 1)
        result = coordinator.close_round(proposal_id, round_)
        if not result.closed and "not decided" in result.reason:
            self._mine_to(session.window(3)[1] + 1)
            result = coordinator.close_round(proposal_id, round_)
        out = SimRound(round_, result, refused, committed)
        if not result.closed:
            info = self.fed().rounds.round_info(proposal_id, round_)
            self._mine_to(info.deadline + 1)
            coordinator.fail_round(proposal_id, round_)
            return out
        gas += result.gas_used
        for name in committed:
            n = jobs[name][0]
            if vanish.get(name, 3) >= 3:
                n.evaluate_and_submit(proposal_id, round_)
        out.validation_metric = coordinator.record_metric(proposal_id, round_)
        out.gas = gas
        return out

    def run_statistics(self, proposal_id: int, nodes: list[HospitalNode], coordinator: Coordinator) -> list:
        """The statistics phase of a plan that declares one: every node commits its sealed moments (or refuses),
        then the coordinator publishes the pooled statistics. Returns the nodes' outcomes."""
        outcomes = [n.commit_moments(proposal_id) for n in nodes]
        coordinator.publish_statistics(proposal_id)
        return outcomes

    def run_round(self, proposal_id: int, round_: int, nodes: list[HospitalNode], coordinator: Coordinator,
                  *, progress=None, start_next: bool = False) -> SimRound:
        """Open, let every node train and commit (or refuse), close, evaluate, record the metric.

        Every party of the round shares this machine's cores: one hospital trains on a worker
        thread while this thread seals, pins, commits and checks, so torch runs one thread per
        operation during the round (as Flower's simulation gives each client one CPU). On a
        2-core machine torch's default two threads made the 4.3M-parameter round ~5% slower
        (three interleaved pairs: 2.24 s against 2.13 s). The thread count is restored afterwards.

        ``start_next``: once this round is closed, open the next one and start its training
        before this round's evaluations are submitted, as separate hospitals would (the chain
        only needs a round closed before the next opens; a round's evaluations may come in
        while the next one trains). The next call must then be ``run_round`` for that round
        (another is refused), which takes the training over; torch stays at one thread until it has. Only for
        callers that change nothing between rounds (``fedchain demo``, ``fedchain simulate``,
        the benchmark): a policy changed between the two calls would not be seen by the
        next round's nodes, which were admitted before it. Ignored for the last round of the
        plan, for ``secagg`` plans, and when a node offers only ``train_and_commit``. This is
        scheduling, not a rule anyone relies on: the chain opens a round only after the previous
        one closed, an evaluation counts for the round it names, and replay checks each recorded
        metric against the evaluations sent before it.
        """
        started = self._started
        if started is not None and (started.proposal_id, started.round) != (proposal_id, round_):
            raise FedchainError(f"round {started.round} of proposal {started.proposal_id} was already started "
                                f"(run_round(start_next=True)); run it before round {round_} of proposal "
                                f"{proposal_id}")
        self._started = None
        before = started.threads if started is not None else torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return self._run_round(proposal_id, round_, nodes, coordinator, progress=progress, started=started,
                                   start_next=start_next, threads=before)
        except BaseException:
            if self._started is not None:  # nothing will take the next round's training over
                self._started.abandon()
                self._started = None
            raise
        finally:
            if self._started is None:
                torch.set_num_threads(before)
            else:
                self._started.threads = before

    def _run_round(self, proposal_id: int, round_: int, nodes: list[HospitalNode], coordinator: Coordinator,
                   *, threads: int, progress=None, started: "_Training | None" = None,
                   start_next: bool = False) -> SimRound:
        """:meth:`run_round`, at whatever thread count torch has (the close at ``threads``).

        Nodes commit in their order, but their work overlaps the chain: while one node commits on
        this thread, the next ones train, seal and pin on :data:`TRAINERS` worker threads (none
        of which asks the chain anything; training is deterministic on any thread), and the coordinator checks
        each committed update of at least :data:`EARLY_CHECK_BYTES` on its own thread
        (:meth:`Coordinator.check_early`). A node object that
        offers only ``train_and_commit`` (an adversary in tests or demos) runs it in its turn. A
        ``secagg`` plan's round goes through :meth:`run_secagg_round`.
        """
        plan = coordinator.plan(proposal_id)
        if plan.mode == "secagg":
            return self.run_secagg_round(proposal_id, round_, nodes, coordinator, progress=progress)
        # a stand-in coordinator in a test may not offer early checks; for small models they only compete with
        # the chain's (pure Python) work on this thread for the interpreter (h16: ~8% slower with them)
        early = getattr(coordinator, "check_early", None) if model_size(plan.model) >= EARLY_CHECK_BYTES else None
        training = started or self._start_training(proposal_id, round_, nodes, coordinator, progress, now=True,
                                                   early=early)
        training.finish(early)
        refused, committed = training.refused, training.committed
        targets = len(self.fed().read_model().proposals[proposal_id].targets)
        if len(committed) < targets and self.fed().rounds.awaited_commitments(proposal_id, round_):
            # The chain lets a round close early only once every target that could commit did
            # (a dataset whose policy refuses the proposal is not waited for): DEV, mine to the deadline.
            info = self.fed().rounds.round_info(proposal_id, round_)
            self.chain.mine(max(0, info.deadline - self.chain.block_number + 1))
        if progress is not None:
            progress(f"round {round_}: aggregating")
        result = self._close(coordinator, proposal_id, round_, threads)
        out = SimRound(round_, result, refused, committed)
        if not result.closed:
            return out
        gas = training.gas + result.gas_used
        evaluators = [n for n in nodes if n.dataset_name in committed]
        if all(hasattr(n, "evaluation") for n in evaluators):
            if start_next and round_ < plan.rounds and all(hasattr(n, "prepare") for n in nodes):
                self._started = self._start_training(proposal_id, round_ + 1, nodes, coordinator, progress,
                                                     now=False)
            # the forward passes on the workers, the submissions in node order on this thread
            with ThreadPoolExecutor(max_workers=TRAINERS, thread_name_prefix="sim-eval") as pool:
                jobs = [(n, pool.submit(n.evaluation(proposal_id, round_))) for n in evaluators]
                for n, job in jobs:
                    n.submit_evaluation(proposal_id, round_, *job.result())
        else:  # a node offering only evaluate_and_submit (an adversary in tests): each in turn
            for n in evaluators:
                n.evaluate_and_submit(proposal_id, round_)
        out.validation_metric = coordinator.record_metric(proposal_id, round_)
        out.gas = gas
        return out

    @staticmethod
    def _close(coordinator: Coordinator, proposal_id: int, round_: int, threads: int) -> RoundResult:
        """Close the round; nothing trains meanwhile, so the coordinator's vector work gets torch's
        ``threads`` (the count before the round) instead of the one thread per party."""
        during = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return coordinator.close_round(proposal_id, round_)
        finally:
            torch.set_num_threads(during)

    def _start_training(self, proposal_id: int, round_: int, nodes: list[HospitalNode], coordinator: Coordinator,
                        progress, *, now: bool, early=None) -> "_Training":
        """Open the round and set every node that the chain admits training on the workers, in node order.

        ``now`` (the round is run, not started ahead): updates are committed (then handed to
        ``early``) as soon as more than :data:`TRAINERS` wait, so the workers stay busy, and a
        node offering only ``train_and_commit`` runs it in its turn, after the ones before it
        committed. Started ahead, nothing is committed here.
        """
        gas = coordinator.open_round(proposal_id, round_).gas_used
        training = _Training(proposal_id, round_, gas,
                             ThreadPoolExecutor(max_workers=TRAINERS, thread_name_prefix="sim-train"))
        try:
            for n in nodes:
                if progress is not None:
                    progress(f"round {round_}: {n.dataset_name} training")
                if not hasattr(n, "prepare"):  # a node that only offers train_and_commit (an adversary): in turn
                    training.finish(early, keep_open=True)
                    outcome = n.train_and_commit(proposal_id, round_)
                    if outcome.committed:
                        training.gas += outcome.gas_used
                        training.committed.append(n.dataset_name)
                    else:
                        training.refused[n.dataset_name] = outcome.reason
                    continue
                job = n.prepare(proposal_id, round_)
                if isinstance(job, RoundOutcome):
                    training.refused[n.dataset_name] = job.reason
                    continue
                # a worker trains, then seals and pins (store and crypto, no chain: their keys are read here)
                keys = n.recipients(job.plan) if job.plan.mode != "he" else None
                training.pending.append((n, job, training.trainer.submit(_train_and_seal, n, job, keys)))
                while now and len(training.pending) > TRAINERS:  # commit in node order, keeping the workers busy
                    training.commit_next(early)
        except BaseException:
            training.abandon()
            raise
        return training
