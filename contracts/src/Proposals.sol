// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {IProposals} from "./IProposals.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";
import {MemberVoting} from "./MemberVoting.sol";

/// @title Proposals
/// @notice Training proposals of a fedchain consortium, voted on by its members (see {IProposals}).
/// @dev Why not OpenZeppelin Governor: Governor weighs votes by token balance at a
/// checkpoint (IVotes) and, when a proposal passes, executes arbitrary calldata on target
/// contracts, usually behind a timelock. A fedchain proposal is a data record (plan, purpose,
/// datasets, round schedule) that executes nothing; voting is one member, one vote, with
/// eligibility fixed by admission order rather than a token snapshot. We keep Governor's
/// structure - a voting base with overridable counting and quorum hooks ({MemberVoting}),
/// shared with the consortium's motions - and its ideas (voting period in blocks, quorum,
/// snapshot of who may vote, anyone may finalize). The voting rules are copied from the
/// consortium at deploy (they are immutable there). Target datasets must be registered (and
/// not revoked) at submission, and their owners are recorded with the proposal: a name
/// proposed before registration could otherwise be registered by whoever came first, and the
/// members would have voted on data they never saw. {Rounds} checks the recorded owner, the
/// row count and the policy at every commitment.
contract Proposals is IProposals, MemberVoting, ConsortiumBound {
    /// @notice Most target datasets a proposal may name.
    uint256 public constant MAX_TARGETS = 128;
    /// @notice Most training rounds a proposal may plan.
    uint16 public constant MAX_ROUNDS = 10_000;

    /// @notice The dataset registry (targets must be registered there).
    IDatasetRegistry public immutable registry;
    /// @inheritdoc IProposals
    uint256 public proposalCount;

    /// @dev A target as recorded at submission (one slot).
    struct Target {
        address owner;
        uint64 rowCount;
    }

    mapping(uint256 id => Proposal) private _proposals;
    mapping(uint256 id => mapping(bytes32 datasetId => Target)) private _targets;

    /// @notice Bind to a consortium (copying its voting rules) and the dataset registry.
    /// @param consortium_ The consortium.
    /// @param registry_ The dataset registry.
    constructor(IConsortium consortium_, IDatasetRegistry registry_)
        MemberVoting(consortium_.votingRules())
        ConsortiumBound(consortium_)
    {
        registry = registry_;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IProposals
    function proposal(uint256 id) external view returns (Proposal memory p, Tally memory tally) {
        return (_proposals[id], _tallies[id]);
    }

    /// @inheritdoc IProposals
    function roundTerms(uint256 id) external view returns (RoundTerms memory) {
        Proposal storage p = _proposals[id];
        return RoundTerms(_tallies[id].state, p.rounds, p.minParticipants, p.roundDuration, p.targetCount);
    }

    /// @inheritdoc IProposals
    function targetsOf(uint256 id)
        external
        view
        returns (address requester, bytes32 purposeHash, bytes32[] memory targets, address[] memory owners)
    {
        Proposal storage p = _proposals[id];
        targets = p.targets;
        uint256 nTargets = targets.length; // at most MAX_TARGETS, checked at submission
        owners = new address[](nTargets);
        mapping(bytes32 => Target) storage recorded = _targets[id];
        for (uint256 i = 0; i < nTargets; ++i) {
            owners[i] = recorded[targets[i]].owner;
        }
        return (p.proposer, p.purposeHash, targets, owners);
    }

    /// @inheritdoc IProposals
    function useTerms(uint256 id, bytes32 datasetId)
        external
        view
        returns (address requester, bytes32 purposeHash, address owner, uint64 rowCount)
    {
        Proposal storage p = _proposals[id];
        Target storage t = _targets[id][datasetId];
        return (p.proposer, p.purposeHash, t.owner, t.rowCount);
    }

    // ------------------------------------------------------------------- acts

    /// @inheritdoc IProposals
    function submit(Submission calldata s) external onlyMember returns (uint256 id) {
        if (bytes(s.planCid).length == 0) revert ProposalsEmptyCid();
        uint256 n = s.targets.length;
        if (n == 0 || n > MAX_TARGETS) revert ProposalsInvalidTargetCount(n, MAX_TARGETS);
        if (s.rounds == 0 || s.rounds > MAX_ROUNDS) revert ProposalsInvalidRounds(s.rounds);
        if (s.minParticipants == 0) revert ProposalsInvalidMinParticipants();
        if (s.roundDuration == 0) revert ProposalsInvalidRoundDuration();
        id = ++proposalCount;
        mapping(bytes32 => Target) storage targets = _targets[id];
        address[] memory owners = new address[](n);
        for (uint256 i = 0; i < n; ++i) {
            bytes32 t = s.targets[i];
            if (targets[t].owner != address(0)) revert ProposalsInvalidTarget(t);
            (address owner, bool revoked, uint64 rowCount) = registry.holding(t);
            if (owner == address(0) || revoked) revert ProposalsUnknownTarget(t);
            targets[t] = Target(owner, rowCount);
            owners[i] = owner;
        }
        (Tally storage tally, uint64 deadline) = _openVote(id);
        Proposal storage p = _proposals[id];
        p.proposer = msg.sender;
        p.rounds = s.rounds;
        p.minParticipants = s.minParticipants;
        p.roundDuration = s.roundDuration;
        p.targetCount = uint16(n);
        p.purposeHash = keccak256(bytes(s.purpose));
        p.planSha256 = s.planSha256;
        p.planCid = s.planCid;
        p.purpose = s.purpose;
        p.targets = s.targets;
        _emitSubmitted(id, p, owners, deadline, tally.eligible);
    }

    /// @inheritdoc IProposals
    function vote(uint256 id, Choice choice) external {
        _castVote(id, msg.sender, choice);
        emit Voted(id, msg.sender, choice);
    }

    /// @inheritdoc IProposals
    function finalize(uint256 id) external returns (VoteState state) {
        Tally storage t;
        (t, state) = _finalizeVote(id);
        emit ProposalFinalized(id, state, t.yes, t.no, t.abstain);
    }

    /// @inheritdoc IProposals
    function cancel(uint256 id) external {
        Tally storage t = _activeTally(id);
        if (_proposals[id].proposer != msg.sender) revert ProposalsNotProposer(id, msg.sender);
        if (t.yes != 0 || t.no != 0 || t.abstain != 0) revert ProposalsVotesAlreadyCast(id);
        _cancelVote(t);
        emit ProposalCancelled(id);
    }

    function _emitSubmitted(uint256 id, Proposal storage p, address[] memory owners, uint64 deadline, uint32 eligible)
        private
    {
        emit ProposalSubmitted(
            id,
            p.proposer,
            p.planCid,
            p.planSha256,
            p.purpose,
            p.purposeHash,
            p.targets,
            owners,
            p.rounds,
            p.minParticipants,
            p.roundDuration,
            deadline,
            eligible
        );
    }

    // ------------------------------------------------------------------ hooks

    function _eligibilitySnapshot() internal view override returns (uint32, uint32) {
        IConsortium.MemberSnapshot memory s = consortium.memberSnapshot();
        return (s.memberSeq, s.memberCount);
    }

    /// @dev Reverts with {ConsortiumNotAMember} unless `voter` is an active member.
    function _voterSeq(address voter) internal view override returns (uint32) {
        IConsortium.Eligibility memory e = consortium.eligibility(voter);
        if (!e.active) revert IConsortium.ConsortiumNotAMember(voter);
        return e.seq;
    }
}
