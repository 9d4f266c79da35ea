"""One thin client per contract, hanging off the deployment object (``fed.registry`` …).

Each client turns Python values into the contract's arguments (names -> dataset
ids, hex -> bytes32, :class:`Policy` -> its struct), sends through the deployment
(so every transaction is simulated, signed locally and decoded the same way) and
turns results into the plain records of :mod:`fedchain.contracts.models`. Listings
(members, datasets, a round's commitments and evaluations) are read from the
per-connection read model, not by scanning the chain again.
"""

from __future__ import annotations

from typing import Any, Sequence

from web3.contract import Contract

from fedchain.contracts.bindings.codec import ZERO32, addr, b32, commitment_hash, dataset_id, purpose_hash
from fedchain.contracts.errors import reason_code
from fedchain.contracts.models import (
    SessionInfo,
    SessionStage,
    Admission,
    DatasetInfo,
    Evaluation,
    MemberInfo,
    MotionInfo,
    MotionKind,
    ModelStatus,
    MotionState,
    Policy,
    ProposalInfo,
    ProposalState,
    ReleaseInfo,
    RoundInfo,
    RoundPhase,
    TxResult,
    UpdateCommitment,
    Vote,
    VotingParams,
)
from fedchain.contracts.readmodel import DatasetRecord


#: ``Consortium.MIN_APPLY_WINDOW``: an approved motion may be applied for max(voting period, this) blocks.
MIN_APPLY_WINDOW = 64


def _bytes(hex_text: str) -> bytes:
    return bytes.fromhex(hex_text[2:])


def _with(result: TxResult, value: Any) -> TxResult:
    return TxResult(result.tx_hash, result.block_number, result.gas_used, result.events, value)


class _Client:
    """Shared plumbing: the deployment and one web3 contract."""

    def __init__(self, fed: Any, contract: Contract) -> None:  # fed: the deployment (a Fedchain)
        self.fed = fed
        self.contract = contract

    @property
    def address(self) -> str:
        """The contract's address."""
        return self.contract.address

    def call(self, function: str, *args: Any, block: int | None = None) -> Any:
        """Low-level: call any view of this contract by its Solidity name (web3's decoded result)."""
        return self.fed.call(self.contract.functions[function](*args), block)

    def transact(self, function: str, *args: Any) -> TxResult:
        """Low-level: send any function of this contract by its Solidity name, as the signer."""
        return self.fed.send(self.contract.functions[function](*args))


class ConsortiumClient(_Client):
    """``Consortium``: members, the coordinator, membership motions, the voting rules."""

    def is_member(self, address: str) -> bool:
        """Whether ``address`` is an active member."""
        return bool(self.call("isMember", addr(address)))

    def member(self, address: str, block: int | None = None) -> MemberInfo:
        """The member record of ``address`` (all zero / inactive if never a member), as of ``block`` if given."""
        m = self.call("member", addr(address), block=block)
        return MemberInfo(addr(address), m.name, bytes(m.x25519), int(m.joinedAt), int(m.seq), bool(m.active))

    def member_key(self, address: str) -> bytes:
        """The X25519 public key of ``address`` (32 zero bytes if it never was a member)."""
        return self.member(address).x25519_pub

    def member_count(self) -> int:
        """Number of active members."""
        return int(self.call("memberCount"))

    def coordinator(self) -> str:
        """The coordinator's address."""
        return addr(self.call("coordinator"))

    def voting_params(self) -> VotingParams:
        """Voting period, quorum and approval threshold."""
        r = self.call("votingRules")
        return VotingParams(int(r.votingPeriod), int(r.quorumBps), int(r.approvalBps))

    def members(self, include_removed: bool = False) -> list[MemberInfo]:
        """Members in admission order, from the read model (no chain scan)."""
        infos = [
            MemberInfo(addr(m.address), m.name, _bytes(m.key), m.joined_block, m.seq, m.active)
            for m in self.fed.read_model().members.values()
        ]
        infos.sort(key=lambda m: m.seq)
        return infos if include_removed else [m for m in infos if m.active]

    def set_x25519_key(self, x25519_pub: bytes | str) -> TxResult:
        """Replace the signer's X25519 public key."""
        return self.transact("setX25519Key", b32(x25519_pub, "x25519_pub"))

    def propose_motion(
        self, kind: MotionKind, target: str, name: str = "", x25519_pub: bytes | str | None = None
    ) -> TxResult:
        """Propose a membership motion; ``value`` is the motion id."""
        key = b32(x25519_pub, "x25519_pub") if x25519_pub is not None else ZERO32
        result = self.transact("proposeMotion", int(kind), addr(target), name, key)
        return _with(result, int(result.event("MotionProposed").args["id"]))

    def propose_motion_admit(self, name: str, address: str, x25519_pub: bytes | str) -> TxResult:
        """Motion to admit ``address`` as member ``name`` with its X25519 key; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.ADMIT, address, name, x25519_pub)

    def propose_motion_remove(self, address: str) -> TxResult:
        """Motion to remove a member; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.REMOVE, address)

    def propose_motion_coordinator(self, address: str) -> TxResult:
        """Motion to make ``address`` the coordinator; ``value`` is the motion id."""
        return self.propose_motion(MotionKind.SET_COORDINATOR, address)

    def vote_motion(self, motion_id: int, support: bool) -> TxResult:
        """Vote yes (True) or no (False) on a motion."""
        return self.transact("voteMotion", int(motion_id), bool(support))

    def finalize_motion(self, motion_id: int) -> TxResult:
        """Finalize (and apply) a motion after its voting period; ``value`` is the MotionState."""
        result = self.transact("finalizeMotion", int(motion_id))
        return _with(result, MotionState(result.event("MotionFinalized").args["state"]))

    def motion(self, motion_id: int) -> MotionInfo | None:
        """Motion ``motion_id``, or None if unknown (``state`` EXPIRED once it can no longer be applied)."""
        m, t = self.call("motion", int(motion_id))
        if t.state == 0:
            return None
        period = self.fed.voting_period()
        window = max(period, MIN_APPLY_WINDOW)
        return MotionInfo(
            id=int(motion_id), kind=MotionKind(m.kind), state=MotionState(self.call("stateOf", int(motion_id))),
            proposer=addr(m.proposer), target=addr(m.target), name=m.name, x25519_pub=bytes(m.x25519),
            created_at=int(t.createdAt), deadline=int(t.createdAt) + period, eligible=int(t.eligible),
            yes=int(t.yes), no=int(t.no), expiry=int(t.createdAt) + period + window,
        )

    def motion_count(self) -> int:
        """Number of motions created."""
        return int(self.call("motionCount"))

    def vote_of(self, motion_id: int, address: str) -> bool | None:
        """How ``address`` voted on the motion: True (yes), False (no) or None (did not)."""
        choice = int(self.call("ballotOf", int(motion_id), addr(address)))
        return None if choice == 0 else choice == int(Vote.YES)


def _policy_struct(policy: Policy) -> tuple[Any, ...]:
    return (
        [purpose_hash(p) for p in policy.purposes],
        [int(p) for p in policy.proposal_ids],
        bool(policy.any_approved_proposal),
        [addr(a) for a in policy.requesters],
        int(policy.expiry),
        int(policy.max_epsilon_milli),
    )


class RegistryClient(_Client):
    """``DatasetRegistry``: datasets, their policies, admission checks."""

    dataset_id = staticmethod(dataset_id)

    def register_dataset(
        self,
        name: str,
        metadata_cid: str,
        metadata_sha256: bytes | str,
        schema_hash: bytes | str,
        policy: Policy,
        row_count: int,
    ) -> TxResult:
        """Register a dataset of ``row_count`` rows owned by the signer; ``value`` is its id (bytes32)."""
        result = self.transact(
            "registerDataset", name, metadata_cid, b32(metadata_sha256, "metadata_sha256"),
            b32(schema_hash, "schema_hash"), int(row_count), _policy_struct(policy),
        )
        return _with(result, b32(result.event("DatasetRegistered").args["id"]))

    def set_policy(self, dataset: str | bytes, policy: Policy) -> TxResult:
        """Replace a dataset's policy (owner); ``value`` is the new policy version."""
        result = self.transact("setPolicy", dataset_id(dataset), _policy_struct(policy))
        return _with(result, int(result.event("PolicySet").args["version"]))

    def revoke_dataset(self, dataset: str | bytes) -> TxResult:
        """Revoke a dataset for good (owner)."""
        return self.transact("revokeDataset", dataset_id(dataset))

    def dataset(self, dataset: str | bytes) -> DatasetInfo | None:
        """Dataset by name or id, with its current policy; None if unknown."""
        did = dataset_id(dataset)
        d = self.call("dataset", did)
        if int(d.owner, 16) == 0:
            return None
        return DatasetInfo(
            id=did, name=d.name, owner=addr(d.owner), metadata_cid=d.metadataCid,
            metadata_sha256=bytes(d.metadataSha256), schema_hash=bytes(d.schemaHash),
            registered_at=int(d.registeredAt), policy_version=int(d.policyVersion), revoked=bool(d.flags & 1),
            policy=self.policy(did), row_count=int(d.rowCount), epsilon_spent_micro=int(d.epsilonSpentMicro),
        )

    def privacy_budget(self, dataset: str | bytes) -> tuple[int, int]:
        """(budget, spent) of a dataset's differential-privacy ε, both in millionths (budget 0 = none)."""
        max_micro, spent_micro = self.call("privacyBudget", dataset_id(dataset))
        return int(max_micro), int(spent_micro)

    def policy(self, dataset: str | bytes) -> Policy:
        """Current policy of a dataset (purposes as 32-byte hashes)."""
        _version, p = self.call("policy", dataset_id(dataset))
        return Policy(
            purposes=tuple(bytes(x) for x in p.purposes),
            proposal_ids=tuple(int(x) for x in p.proposalIds),
            any_approved_proposal=bool(p.anyApprovedProposal),
            requesters=tuple(addr(a) for a in p.requesters),
            expiry=int(p.expiry),
            max_epsilon_milli=int(p.maxEpsilonMilli),
        )

    def admits(self, dataset: str | bytes, proposal_id: int) -> Admission:
        """Whether the dataset's policy admits the proposal now, and if not why (a reason code).

        The check ``Rounds`` runs on every commitment, read at one block: the proposal is
        Approved (else ``PROPOSAL_NOT_APPROVED``) and ``DatasetRegistry.checkUse`` gives no
        reason for its requester and purpose (those, fixed when the proposal was submitted,
        are read once per connection, as is the approval once seen: it is final).
        """
        did, pid = dataset_id(dataset), int(proposal_id)
        block = self.fed.chain.block_number
        proposals = self.fed.proposals
        # Approved is final (only an Active vote changes state): once seen, not asked again on this connection
        approved = ("approved", self.fed.chain.epoch, pid)
        if approved not in self.fed._facts:
            if int(proposals.call("stateOf", pid, block=block)) != int(ProposalState.APPROVED):
                return Admission(False, "PROPOSAL_NOT_APPROVED")
            self.fed._facts[approved] = True
        # what the proposal recorded at submission (its requester and purpose, the target's owner and rows)
        # never changes: read once per connection (until the chain is reverted), as target_owners is
        key = ("use_terms", self.fed.chain.epoch, pid, did)
        if key not in self.fed._facts:
            self.fed._facts[key] = tuple(proposals.call("useTerms", pid, did, block=block))
        requester, purpose, _owner, _rows = self.fed._facts[key]
        code = reason_code(bytes(self.call("checkUse", did, pid, purpose, requester, block=block)))
        return Admission(not code, code)

    def datasets(self, include_revoked: bool = True) -> list[DatasetInfo]:
        """Every registered dataset in registration order, from the read model (no chain scan)."""
        infos = [_dataset_info(d) for d in self.fed.read_model().datasets.values()]
        return [d for d in infos if include_revoked or not d.revoked]

    def dataset_count(self) -> int:
        """Number of datasets registered."""
        return int(self.call("datasetCount"))


def _dataset_info(d: DatasetRecord) -> DatasetInfo:
    pol = d.policies[-1] if d.policies else None
    policy = Policy() if pol is None else Policy(
        purposes=tuple(_bytes(x) for x in pol.purposes), proposal_ids=tuple(pol.proposal_ids),
        any_approved_proposal=pol.any_approved, requesters=tuple(addr(a) for a in pol.requesters),
        expiry=pol.expiry, max_epsilon_milli=pol.max_epsilon_milli,
    )
    return DatasetInfo(
        id=_bytes(d.id), name=d.name, owner=addr(d.owner), metadata_cid=d.metadata_cid,
        metadata_sha256=_bytes(d.metadata_sha256), schema_hash=_bytes(d.schema_hash), registered_at=d.block,
        policy_version=pol.version if pol else 0, revoked=d.revoked_block is not None, policy=policy,
        row_count=d.row_count, epsilon_spent_micro=d.epsilon_spent_micro,
    )


class ProposalsClient(_Client):
    """``Proposals``: training proposals and their votes."""

    def submit_proposal(
        self,
        plan_cid: str,
        plan_sha256: bytes | str,
        purpose: str,
        targets: Sequence[str | bytes],
        rounds: int,
        min_participants: int,
        round_duration: int,
    ) -> TxResult:
        """Submit a proposal (targets by dataset name or id, each registered); ``value`` is the proposal id."""
        submission = (
            plan_cid, b32(plan_sha256, "plan_sha256"), purpose, [dataset_id(t) for t in targets],
            int(rounds), int(min_participants), int(round_duration),
        )
        result = self.transact("submit", submission)
        return _with(result, int(result.event("ProposalSubmitted").args["id"]))

    def vote(self, proposal_id: int, vote: Vote) -> TxResult:
        """Vote YES / NO / ABSTAIN on a proposal."""
        return self.transact("vote", int(proposal_id), int(vote))

    def finalize(self, proposal_id: int) -> TxResult:
        """Finalize a proposal after its voting period; ``value`` is the ProposalState."""
        result = self.transact("finalize", int(proposal_id))
        return _with(result, ProposalState(result.event("ProposalFinalized").args["state"]))

    def cancel(self, proposal_id: int) -> TxResult:
        """Withdraw a proposal (proposer, before any vote)."""
        return self.transact("cancel", int(proposal_id))

    def proposal(self, proposal_id: int) -> ProposalInfo | None:
        """Proposal ``proposal_id``, or None if unknown."""
        p, t = self.call("proposal", int(proposal_id))
        if t.state == 0:
            return None
        return ProposalInfo(
            id=int(proposal_id), proposer=addr(p.proposer), state=ProposalState(t.state), plan_cid=p.planCid,
            plan_sha256=bytes(p.planSha256), purpose=p.purpose, purpose_hash=bytes(p.purposeHash),
            targets=tuple(bytes(x) for x in p.targets), rounds=int(p.rounds), min_participants=int(p.minParticipants),
            round_duration=int(p.roundDuration), created_at=int(t.createdAt),
            deadline=int(t.createdAt) + self.fed.voting_period(), eligible=int(t.eligible), yes=int(t.yes),
            no=int(t.no), abstain=int(t.abstain),
            target_owners=self._target_owners(int(proposal_id)),
        )

    def _target_owners(self, proposal_id: int) -> tuple[str, ...]:
        # Recorded at submission and never changed: read once from the ProposalSubmitted event
        # (through the read model), then kept for this connection (until the chain is reverted).
        key = ("target_owners", self.fed.chain.epoch, proposal_id)
        if key not in self.fed._facts:
            rec = self.fed.read_model().proposals.get(proposal_id)
            if rec is None:
                return ()
            self.fed._facts[key] = tuple(addr(o) for o in rec.target_owners)
        return self.fed._facts[key]

    def proposal_count(self) -> int:
        """Number of proposals submitted."""
        return int(self.call("proposalCount"))

    def vote_of(self, proposal_id: int, address: str) -> Vote | None:
        """How ``address`` voted on the proposal (None if it did not)."""
        choice = int(self.call("ballotOf", int(proposal_id), addr(address)))
        return Vote(choice) if choice else None


class RoundsClient(_Client):
    """``Rounds``: the round phase machine, commitments, evaluations, outcomes."""

    def open_round(self, proposal_id: int, round: int) -> TxResult:
        """Coordinator: open the next round; ``value`` is its deadline block."""
        result = self.transact("openRound", int(proposal_id), int(round))
        return _with(result, int(result.event("RoundOpened").args["deadline"]))

    def commit_update(
        self,
        proposal_id: int,
        round: int,
        dataset: str | bytes,
        cid: str,
        sha256: bytes | str,
        sample_count: int,
        epsilon_micro: int = 0,
        delta_pico: int = 0,
    ) -> TxResult:
        """Member: commit a model update; ``value`` is the stored commitment hash.

        ``epsilon_micro`` / ``delta_pico``: the differential-privacy ε this update spends on the
        dataset (millionths; the chain adds it to the dataset's spend) and its δ (units of
        1e-12); 0 / 0 = the update is not private (admitted only by a dataset without a budget).
        """
        digest = b32(sha256, "sha256")
        result = self.transact(
            "commitUpdate", int(proposal_id), int(round), dataset_id(dataset), cid, digest, int(sample_count),
            int(epsilon_micro), int(delta_pico),
        )
        return _with(result, commitment_hash(dataset, cid, digest, sample_count))

    def close_round(
        self,
        proposal_id: int,
        round: int,
        aggregate_cid: str,
        aggregate_sha256: bytes | str,
        scores_cid: str,
        scores_sha256: bytes | str,
    ) -> TxResult:
        """Coordinator: close an open round with its aggregate and contribution-scores document."""
        return self.transact(
            "closeRound", int(proposal_id), int(round), aggregate_cid,
            b32(aggregate_sha256, "aggregate_sha256"), scores_cid, b32(scores_sha256, "scores_sha256"),
        )

    def fail_round(self, proposal_id: int, round: int) -> TxResult:
        """Mark an open round Failed after its deadline (anyone if under-subscribed; coordinator always)."""
        return self.transact("failRound", int(proposal_id), int(round))

    def submit_evaluation(
        self, proposal_id: int, round: int, dataset: str | bytes, metric_ppm: int, sample_count: int
    ) -> TxResult:
        """Member: report a closed round's metric on its dataset (parts per million)."""
        return self.transact(
            "submitEvaluation", int(proposal_id), int(round), dataset_id(dataset), int(metric_ppm), int(sample_count)
        )

    def record_global_metric(self, proposal_id: int, round: int, metric_ppm: int) -> TxResult:
        """Coordinator: record a closed round's global metric (parts per million)."""
        return self.transact("recordGlobalMetric", int(proposal_id), int(round), int(metric_ppm))

    def round_info(self, proposal_id: int, round: int) -> RoundInfo:
        """State of a round (phase NONE if never opened)."""
        r = self.call("roundOf", int(proposal_id), int(round))
        o = self.call("outcomeOf", int(proposal_id), int(round))
        return RoundInfo(
            proposal_id=int(proposal_id), round=int(round), phase=RoundPhase(r.phase), opened_at=int(r.openedAt),
            deadline=int(r.deadline), committed=int(r.committed), evaluations=int(r.evaluations),
            global_metric_ppm=int(r.globalMetricPpm) if r.globalMetricSet else None, aggregate_cid=o.aggregateCid,
            aggregate_sha256=bytes(o.aggregateSha256), scores_cid=o.scoresCid, scores_sha256=bytes(o.scoresSha256),
        )

    def awaited_commitments(self, proposal_id: int, round: int) -> int:
        """Targets the round still waits for (owner a member, not committed, policy admits now).

        Before its deadline a round may close only when this is 0 (``RoundsEarlyClose``).
        """
        return int(self.call("awaitedCommitments", int(proposal_id), int(round)))

    def last_round(self, proposal_id: int) -> int:
        """Number of the last round opened (0 if none)."""
        return int(self.call("lastRound", int(proposal_id)))

    def commitment_of(self, proposal_id: int, round: int, address: str) -> bytes | None:
        """The commitment hash stored for ``address`` in the round, or None."""
        value = bytes(self.call("commitmentOf", int(proposal_id), int(round), addr(address)))
        return None if value == ZERO32 else value

    def has_evaluated(self, proposal_id: int, round: int, address: str) -> bool:
        """Whether ``address`` submitted an evaluation for the round."""
        return bool(self.call("hasEvaluated", int(proposal_id), int(round), addr(address)))

    def commitments(self, proposal_id: int, round: int) -> list[UpdateCommitment]:
        """The round's update commitments in chain order, from the read model."""
        r = self.fed.read_model().round(proposal_id, round)
        return [
            UpdateCommitment(
                proposal_id=int(proposal_id), round=int(round), member=addr(c.member), dataset=_bytes(c.dataset_id),
                cid=c.cid, sha256=_bytes(c.sha256), sample_count=c.n_samples, block_number=c.block, tx_hash=c.tx,
            )
            for c in (r.commits if r else [])
        ]

    def evaluations(self, proposal_id: int, round: int) -> list[Evaluation]:
        """The round's member evaluations in chain order, from the read model."""
        r = self.fed.read_model().round(proposal_id, round)
        return [
            Evaluation(
                proposal_id=int(proposal_id), round=int(round), member=addr(e.member), dataset=_bytes(e.dataset_id),
                metric_ppm=e.metric_ppm, sample_count=e.n_samples, block_number=e.block, tx_hash=e.tx,
            )
            for e in (r.evaluations if r else [])
        ]


class ReleasesClient(_Client):
    """``Releases``: release votes on trained models, and marks of withdrawn consent."""

    def propose_release(self, proposal_id: int, round: int, card_cid: str, card_sha256: bytes | str) -> TxResult:
        """Member: propose releasing a closed round's model under a model card; ``value`` is the release id."""
        result = self.transact("proposeRelease", int(proposal_id), int(round), card_cid,
                               b32(card_sha256, "card_sha256"))
        return _with(result, int(result.event("ReleaseProposed").args["id"]))

    def vote(self, release_id: int, vote: Vote) -> TxResult:
        """Vote YES / NO / ABSTAIN on a release."""
        return self.transact("voteRelease", int(release_id), int(vote))

    def finalize(self, release_id: int) -> TxResult:
        """Finalize a release after its voting period (anyone); ``value`` is the ProposalState."""
        result = self.transact("finalizeRelease", int(release_id))
        return _with(result, ProposalState(result.event("ReleaseFinalized").args["state"]))

    def cancel(self, release_id: int) -> TxResult:
        """Withdraw a release proposal (its proposer, before any vote)."""
        return self.transact("cancelRelease", int(release_id))

    def mark_withdrawn(self, proposal_id: int, round: int, commitment: UpdateCommitment) -> TxResult:
        """Mark the model of (``proposal_id``, ``round``) for ``commitment``'s (revoked) dataset (anyone).

        ``commitment`` is an update of that dataset committed in a closed round up to ``round``
        (as :meth:`RoundsClient.commitments` lists them); the contract re-hashes it.
        """
        c = commitment
        return self.transact("markWithdrawn", int(proposal_id), int(round), b32(c.dataset, "dataset"), int(c.round),
                             addr(c.member), c.cid, b32(c.sha256, "sha256"), int(c.sample_count))

    def release(self, release_id: int) -> ReleaseInfo | None:
        """Release ``release_id``, or None if unknown."""
        r, t = self.call("release", int(release_id))
        if t.state == 0:
            return None
        return ReleaseInfo(
            id=int(release_id), proposal_id=int(r.proposalId), round=int(r.round), proposer=addr(r.proposer),
            state=ProposalState(t.state), aggregate_sha256=bytes(r.aggregateSha256), card_cid=r.cardCid,
            card_sha256=bytes(r.cardSha256), created_at=int(t.createdAt),
            deadline=int(t.createdAt) + self.fed.voting_period(), eligible=int(t.eligible), yes=int(t.yes),
            no=int(t.no), abstain=int(t.abstain),
        )

    def release_count(self) -> int:
        """Number of release proposals."""
        return int(self.call("releaseCount"))

    def model_status(self, proposal_id: int, round: int) -> ModelStatus:
        """Whether the model of (``proposal_id``, ``round``) is released (and by which release) and marked."""
        m = self.call("modelStatus", int(proposal_id), int(round))
        return ModelStatus(int(m.releaseId), int(m.withdrawals))

    def is_marked(self, proposal_id: int, round: int, dataset: str | bytes) -> bool:
        """Whether the model is marked for ``dataset``."""
        return bool(self.call("isMarked", int(proposal_id), int(round), dataset_id(dataset)))

    def vote_of(self, release_id: int, address: str) -> Vote | None:
        """How ``address`` voted on the release (None if it did not)."""
        choice = int(self.call("ballotOf", int(release_id), addr(address)))
        return Vote(choice) if choice else None


class StatisticsClient(_Client):
    """``Statistics``: the federated statistics phase (sealed moments, then the pooled statistics)."""

    def commit_moments(self, proposal_id: int, dataset: str | bytes, cid: str, sha256: bytes | str,
                       row_count: int) -> TxResult:
        """Member: commit the sealed moments of a target dataset (before round 1 opens)."""
        return self.transact("commitMoments", int(proposal_id), dataset_id(dataset), cid, b32(sha256, "sha256"),
                             int(row_count))

    def publish_statistics(self, proposal_id: int, cid: str, sha256: bytes | str) -> TxResult:
        """Coordinator: publish the pooled statistics document."""
        return self.transact("publishStatistics", int(proposal_id), cid, b32(sha256, "sha256"))

    def phase_of(self, proposal_id: int) -> dict:
        """``{"committed", "published", "cid", "sha256"}`` of a proposal's statistics phase."""
        ph = self.call("phaseOf", int(proposal_id))
        return {"committed": int(ph.committed), "published": bool(ph.published), "cid": ph.statisticsCid,
                "sha256": bytes(ph.statisticsSha256)}

    def moments_of(self, proposal_id: int, address: str) -> bytes | None:
        """The moments commitment hash of ``address``, or None."""
        value = bytes(self.call("momentsOf", int(proposal_id), addr(address)))
        return None if value == ZERO32 else value


class SecureRoundsClient(_Client):
    """``SecureRounds``: the secure-aggregation phases of a round, with their deadlines."""

    def start(self, proposal_id: int, round: int, threshold: int, phase_blocks: int) -> TxResult:
        """Coordinator: start the session of an open round."""
        return self.transact("start", int(proposal_id), int(round), int(threshold), int(phase_blocks))

    def advertise_keys(self, proposal_id: int, round: int, dataset: str | bytes, cid: str, sha256: bytes | str) -> TxResult:
        """Member owning ``dataset`` (a target): phase 0."""
        return self.transact("advertiseKeys", int(proposal_id), int(round), dataset_id(dataset), cid,
                             b32(sha256, "sha256"))

    def share_keys(self, proposal_id: int, round: int, cid: str, sha256: bytes | str) -> TxResult:
        """Member in U1: phase 1."""
        return self.transact("shareKeys", int(proposal_id), int(round), cid, b32(sha256, "sha256"))

    def mark_masked(self, proposal_id: int, round: int, dataset: str | bytes, cid: str, sha256: bytes | str,
                    sample_count: int) -> TxResult:
        """Member in U2: mark its Rounds commitment as its masked input (phase 2)."""
        return self.transact("markMasked", int(proposal_id), int(round), dataset_id(dataset), cid,
                             b32(sha256, "sha256"), int(sample_count))

    def unmask(self, proposal_id: int, round: int, cid: str, sha256: bytes | str) -> TxResult:
        """Member in U3: phase 3."""
        return self.transact("unmask", int(proposal_id), int(round), cid, b32(sha256, "sha256"))

    def conclude(self, proposal_id: int, round: int) -> TxResult:
        """Anyone: conclude a decided session; ``value`` is its final stage."""
        result = self.transact("conclude", int(proposal_id), int(round))
        return _with(result, SessionStage(int(result.event("SessionConcluded").args["stage"])))

    def session(self, proposal_id: int, round: int) -> SessionInfo:
        """The session's state (stage NONE if never started)."""
        s = self.call("sessionOf", int(proposal_id), int(round))
        return SessionInfo(int(proposal_id), int(round), int(s.start), int(s.phaseBlocks), int(s.threshold),
                           int(s.advertised), int(s.shared), int(s.masked), int(s.unmasked), SessionStage(s.stage),
                           bytes(s.seed))

    def phases(self, proposal_id: int, round: int, member: str) -> int:
        """The phases ``member`` took part in, one bit each (bit 0 keys, 1 shares, 2 masked input, 3 unmasking)."""
        return int(self.call("phasesOf", int(proposal_id), int(round), addr(member)))

    def record(self, proposal_id: int, round: int):
        """The session's messages as the events recorded them (``SecureSessionRecord`` or None)."""
        return self.fed.read_model().secure.get((int(proposal_id), int(round)))
