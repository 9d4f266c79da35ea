// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IMemberVoting} from "./IMemberVoting.sol";
import {IProposals} from "./IProposals.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {IRounds} from "./IRounds.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";
import {Cid} from "./Cid.sol";

/// @title Rounds
/// @notice The training rounds of approved proposals (see {IRounds}).
/// @dev Gas: a commitment stores one slot (a hash binding dataset, CID, sha256 and sample
/// count) and bumps the round's counter; the CID and the rest go in the event. It costs
/// under 100k gas (a private one with the ε ledger's charge included) and does not depend on
/// the number of members or participants.
/// Contribution scores: the coordinator publishes a scores document (per-participant
/// contributions) in the content store and records its CID and sha256 at close, so that
/// closing is O(1) in the number of participants - no per-participant storage or loop.
/// What a commitment is checked against: the target's owner and registered row count as
/// {Proposals} recorded them at submission, the dataset's policy
/// ({IDatasetRegistry-checkUse}), and the CID's syntax ({Cid}).
/// The ε ledger: every commitment makes one call to {IDatasetRegistry-spendPrivacy}, which
/// reads and (for a private update) writes one slot - O(1), like the rest.
contract Rounds is IRounds, ConsortiumBound {
    /// @notice Largest metric value (1.0 in parts per million).
    uint32 public constant MAX_METRIC_PPM = 1_000_000;
    /// @notice Delta 1.0 in its fixed-point unit (1e-12).
    uint64 public constant DELTA_ONE = 1e12;
    /// @notice The charge of a non-private update ({IDatasetRegistry-spendPrivacy}'s NOT_PRIVATE).
    uint64 public constant NOT_PRIVATE_CHARGE = type(uint64).max;

    /// @notice The dataset registry (policies and row counts).
    IDatasetRegistry public immutable registry;
    /// @notice The proposals contract (terms and target owners).
    IProposals public immutable proposals;

    mapping(uint256 proposalId => uint16) private _lastRound;
    mapping(uint256 proposalId => mapping(uint16 round => Round)) private _rounds;
    mapping(uint256 proposalId => mapping(uint16 round => Outcome)) private _outcomes;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(address member => bytes32))) private _commitments;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(address member => bool))) private _evaluated;

    /// @notice Bind to the other three contracts (in deployment order).
    /// @param consortium_ The consortium.
    /// @param registry_ The dataset registry.
    /// @param proposals_ The proposals contract.
    constructor(IConsortium consortium_, IDatasetRegistry registry_, IProposals proposals_)
        ConsortiumBound(consortium_)
    {
        address named = registry_.rounds();
        if (named != address(this)) revert RoundsRegistryMismatch(named);
        registry = registry_;
        proposals = proposals_;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IRounds
    function roundOf(uint256 proposalId, uint16 round) external view returns (Round memory) {
        return _rounds[proposalId][round];
    }

    /// @inheritdoc IRounds
    function outcomeOf(uint256 proposalId, uint16 round) external view returns (Outcome memory) {
        return _outcomes[proposalId][round];
    }

    /// @inheritdoc IRounds
    function lastRound(uint256 proposalId) external view returns (uint16) {
        return _lastRound[proposalId];
    }

    /// @inheritdoc IRounds
    function commitmentOf(uint256 proposalId, uint16 round, address member) external view returns (bytes32) {
        return _commitments[proposalId][round][member];
    }

    /// @inheritdoc IRounds
    function hasEvaluated(uint256 proposalId, uint16 round, address member) external view returns (bool) {
        return _evaluated[proposalId][round][member];
    }

    /// @inheritdoc IRounds
    function awaitedCommitments(uint256 proposalId, uint16 round) public view returns (uint32 awaited) {
        (address requester, bytes32 purposeHash, bytes32[] memory targets, address[] memory owners) =
            proposals.targetsOf(proposalId);
        mapping(address => bytes32) storage slot = _commitments[proposalId][round];
        uint256 nTargets = targets.length; // at most MAX_TARGETS, checked at submission
        for (uint256 i = 0; i < nTargets; ++i) {
            if (slot[owners[i]] != bytes32(0) || !consortium.isMember(owners[i])) continue;
            if (registry.checkUse(targets[i], proposalId, purposeHash, requester) == bytes32(0)) ++awaited;
        }
    }

    /// @inheritdoc IRounds
    function commitmentHash(bytes32 datasetId, string calldata cid, bytes32 sha256_, uint64 sampleCount)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(datasetId, keccak256(bytes(cid)), sha256_, sampleCount));
    }

    // ------------------------------------------------------------ coordinator

    /// @inheritdoc IRounds
    function openRound(uint256 proposalId, uint16 round) external onlyCoordinator {
        IProposals.RoundTerms memory terms = proposals.roundTerms(proposalId);
        if (terms.state != IMemberVoting.VoteState.Approved) revert RoundsProposalNotApproved(proposalId, terms.state);
        uint16 last = _lastRound[proposalId];
        if (round != last + 1) revert RoundsOutOfOrder(proposalId, round, last + 1);
        if (round > terms.rounds) revert RoundsBeyondPlan(proposalId, round, terms.rounds);
        if (last != 0 && _rounds[proposalId][last].phase == Phase.Open) revert RoundsPreviousRoundOpen(proposalId, last);
        uint64 deadline = uint64(block.number) + terms.roundDuration;
        _lastRound[proposalId] = round;
        Round storage r = _rounds[proposalId][round];
        r.openedAt = uint64(block.number);
        r.deadline = deadline;
        r.phase = Phase.Open;
        emit RoundOpened(proposalId, round, deadline);
    }

    /// @inheritdoc IRounds
    function closeRound(
        uint256 proposalId,
        uint16 round,
        string calldata aggregateCid,
        bytes32 aggregateSha256,
        string calldata scoresCid,
        bytes32 scoresSha256
    ) external onlyCoordinator {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundsNotOpen(proposalId, round, r.phase);
        if (bytes(aggregateCid).length == 0 || bytes(scoresCid).length == 0) revert RoundsEmptyCid();
        IProposals.RoundTerms memory terms = proposals.roundTerms(proposalId);
        uint32 committed = r.committed;
        if (committed < terms.minParticipants) {
            revert RoundsNotEnoughParticipants(proposalId, round, committed, terms.minParticipants);
        }
        bool early = block.number <= r.deadline && committed < terms.targetCount;
        if (early && awaitedCommitments(proposalId, round) != 0) {
            revert RoundsEarlyClose(proposalId, round, committed, terms.targetCount);
        }
        r.phase = Phase.Closed;
        Outcome storage o = _outcomes[proposalId][round];
        o.aggregateSha256 = aggregateSha256;
        o.scoresSha256 = scoresSha256;
        o.aggregateCid = aggregateCid;
        o.scoresCid = scoresCid;
        emit RoundClosed(proposalId, round, aggregateCid, aggregateSha256, scoresCid, scoresSha256, committed);
    }

    /// @inheritdoc IRounds
    function failRound(uint256 proposalId, uint16 round) external {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundsNotOpen(proposalId, round, r.phase);
        if (block.number <= r.deadline) revert RoundsDeadlineNotReached(proposalId, round, r.deadline);
        if (!_isCoordinator(msg.sender)) {
            uint32 minParticipants = proposals.roundTerms(proposalId).minParticipants;
            if (r.committed >= minParticipants) revert RoundsEnoughParticipants(proposalId, round, r.committed);
        }
        r.phase = Phase.Failed;
        emit RoundFailed(proposalId, round, r.committed, msg.sender);
    }

    /// @inheritdoc IRounds
    function recordGlobalMetric(uint256 proposalId, uint16 round, uint32 metricPpm) external onlyCoordinator {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Closed) revert RoundsNotClosed(proposalId, round, r.phase);
        if (r.globalMetricSet) revert RoundsGlobalMetricAlreadyRecorded(proposalId, round);
        if (metricPpm > MAX_METRIC_PPM) revert RoundsMetricOutOfRange(metricPpm);
        r.globalMetricSet = true;
        r.globalMetricPpm = metricPpm;
        emit GlobalMetricRecorded(proposalId, round, metricPpm);
    }

    // ---------------------------------------------------------------- members

    /// @inheritdoc IRounds
    function commitUpdate(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        string calldata cid,
        bytes32 sha256_,
        uint64 sampleCount,
        uint64 epsilonMicro,
        uint64 deltaPico
    ) external onlyMember {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundsNotOpen(proposalId, round, r.phase);
        if (block.number > r.deadline) revert RoundsDeadlinePassed(proposalId, round, r.deadline);
        mapping(address => bytes32) storage slot = _commitments[proposalId][round];
        if (slot[msg.sender] != bytes32(0)) revert RoundsAlreadyCommitted(proposalId, round, msg.sender);
        if (!Cid.isWellFormed(cid)) revert RoundsInvalidCid();
        if (sampleCount == 0) revert RoundsInvalidSampleCount();
        uint64 rowCount = _checkDataUse(proposalId, datasetId, sampleCount);
        slot[msg.sender] = commitmentHash(datasetId, cid, sha256_, sampleCount);
        ++r.committed;
        emit UpdateCommitted(proposalId, round, msg.sender, datasetId, cid, sha256_, sampleCount);
        // after the commitment's event, so {PrivacySpent} follows it in the log (a revert undoes both)
        _spendPrivacy(proposalId, round, datasetId, rowCount, epsilonMicro, deltaPico);
    }

    /// @inheritdoc IRounds
    function submitEvaluation(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint32 metricPpm,
        uint64 sampleCount
    ) external onlyMember {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Closed) revert RoundsNotClosed(proposalId, round, r.phase);
        mapping(address => bool) storage evaluated = _evaluated[proposalId][round];
        if (evaluated[msg.sender]) revert RoundsAlreadyEvaluated(proposalId, round, msg.sender);
        if (metricPpm > MAX_METRIC_PPM) revert RoundsMetricOutOfRange(metricPpm);
        if (sampleCount == 0) revert RoundsInvalidSampleCount();
        _checkDataUse(proposalId, datasetId, sampleCount);
        evaluated[msg.sender] = true;
        ++r.evaluations;
        emit EvaluationSubmitted(proposalId, round, msg.sender, datasetId, metricPpm, sampleCount);
    }

    // --------------------------------------------------------------- internal

    /// @dev Check the privacy a commitment states and charge it to the dataset's budget (see
    /// {commitUpdate}); emits {PrivacySpent} for a private update.
    function _spendPrivacy(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint64 rowCount,
        uint64 epsilonMicro,
        uint64 deltaPico
    ) private {
        if (epsilonMicro == 0) {
            if (deltaPico != 0) revert RoundsInvalidDelta(datasetId, deltaPico, rowCount);
            (bool fits, uint64 spent, uint64 max) = registry.spendPrivacy(datasetId, NOT_PRIVATE_CHARGE);
            if (!fits) revert RoundsPrivacyBudgetExceeded(datasetId, NOT_PRIVATE_CHARGE, spent, max);
            return;
        }
        if (deltaPico == 0 || uint256(deltaPico) * rowCount >= DELTA_ONE) {
            revert RoundsInvalidDelta(datasetId, deltaPico, rowCount);
        }
        (bool ok, uint64 spentMicro, uint64 maxMicro) = registry.spendPrivacy(datasetId, epsilonMicro);
        if (!ok) revert RoundsPrivacyBudgetExceeded(datasetId, epsilonMicro, spentMicro, maxMicro);
        emit PrivacySpent(proposalId, round, datasetId, epsilonMicro, deltaPico, spentMicro);
    }

    /// @dev `datasetId` is a target of the proposal recorded as the caller's, admits the
    /// proposal, and has at least `sampleCount` registered rows, which it returns. The proposal
    /// is known to be Approved (a round of it was opened).
    function _checkDataUse(uint256 proposalId, bytes32 datasetId, uint64 sampleCount)
        private
        view
        returns (uint64)
    {
        (address requester, bytes32 purposeHash, address owner, uint64 rowCount) =
            proposals.useTerms(proposalId, datasetId);
        if (owner == address(0)) revert RoundsNotATarget(proposalId, datasetId);
        if (owner != msg.sender) revert RoundsNotDatasetOwner(datasetId, msg.sender);
        if (sampleCount > rowCount) revert RoundsSampleCountTooHigh(datasetId, sampleCount, rowCount);
        bytes32 reason = registry.checkUse(datasetId, proposalId, purposeHash, requester);
        if (reason != bytes32(0)) revert RoundsPolicyDenied(datasetId, reason);
        return rowCount;
    }
}
