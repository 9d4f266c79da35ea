// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {Proposals} from "./Proposals.sol";
import {DatasetRegistry} from "./DatasetRegistry.sol";
import {NotAMember, NotCoordinator, NotDatasetOwner, EmptyCid} from "./Errors.sol";

/// @title Rounds
/// @notice The training-round phase machine of approved proposals:
/// None -> Open -> Closed | Failed. The coordinator opens rounds in order; members commit
/// one model update per round (the update itself lives in the content store, referenced by
/// CID and sha256); the coordinator closes the round with the aggregate and the
/// contribution scores, or the round fails when too few members committed. After a round
/// closes, members report evaluation metrics and the coordinator records the global one.
/// @dev Gas: a commitment stores one slot (a hash binding dataset, CID, sha256 and sample
/// count) and bumps the round's counter; the CID and the rest go in the event. It costs
/// well under 100k gas and does not depend on the number of members or participants.
/// Contribution scores: the coordinator publishes a scores document (per-participant
/// contributions) in the content store and records its CID and sha256 at close, so that
/// closing is O(1) in the number of participants - no per-participant storage or loop.
contract Rounds {
    /// @notice Phase of a round.
    enum Phase {
        None,
        Open,
        Closed,
        Failed
    }

    /// @notice State of one round, packed in one storage slot.
    /// @param openedAt Block the round was opened in.
    /// @param deadline Last block in which commitments are accepted.
    /// @param committed Number of commitments.
    /// @param phase Phase.
    /// @param globalMetricSet Whether the coordinator recorded the global metric.
    /// @param globalMetricPpm The global metric in parts per million.
    /// @param evaluations Number of member evaluations.
    struct Round {
        uint64 openedAt;
        uint64 deadline;
        uint32 committed;
        Phase phase;
        bool globalMetricSet;
        uint32 globalMetricPpm;
        uint32 evaluations;
    }

    /// @notice What the coordinator recorded when closing a round.
    /// @param aggregateSha256 sha256 of the aggregated model.
    /// @param scoresSha256 sha256 of the contribution-scores document.
    /// @param aggregateCid CID of the aggregated model.
    /// @param scoresCid CID of the contribution-scores document.
    struct Outcome {
        bytes32 aggregateSha256;
        bytes32 scoresSha256;
        string aggregateCid;
        string scoresCid;
    }

    /// @notice Largest metric value (1.0 in parts per million).
    uint32 public constant MAX_METRIC_PPM = 1_000_000;

    /// @notice The consortium (coordinator role and membership).
    Consortium public immutable consortium;
    /// @notice The proposals contract.
    Proposals public immutable proposals;
    /// @notice The dataset registry (ownership and policy).
    DatasetRegistry public immutable registry;
    bytes32 private immutable _coordinatorRole;

    mapping(uint256 proposalId => uint16) private _lastRound;
    mapping(uint256 proposalId => mapping(uint16 round => Round)) private _rounds;
    mapping(uint256 proposalId => mapping(uint16 round => Outcome)) private _outcomes;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(address member => bytes32))) private _commitments;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(address member => bool))) private _evaluated;

    /// @notice The coordinator opened a round.
    /// @param proposalId Proposal id.
    /// @param round Round number (1-based).
    /// @param deadline Last block for commitments.
    event RoundOpened(uint256 indexed proposalId, uint16 indexed round, uint64 deadline);
    /// @notice A member committed a model update.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @param datasetId The dataset trained on.
    /// @param cid CID of the update.
    /// @param updateSha256 sha256 of the update.
    /// @param sampleCount Training samples used.
    event UpdateCommitted(
        uint256 indexed proposalId,
        uint16 indexed round,
        address indexed member,
        bytes32 datasetId,
        string cid,
        bytes32 updateSha256,
        uint64 sampleCount
    );
    /// @notice The coordinator closed a round with its aggregate and contribution scores.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param aggregateCid CID of the aggregated model.
    /// @param aggregateSha256 sha256 of the aggregated model.
    /// @param scoresCid CID of the contribution-scores document.
    /// @param scoresSha256 sha256 of the contribution-scores document.
    /// @param committed Number of commitments aggregated over.
    event RoundClosed(
        uint256 indexed proposalId,
        uint16 indexed round,
        string aggregateCid,
        bytes32 aggregateSha256,
        string scoresCid,
        bytes32 scoresSha256,
        uint32 committed
    );
    /// @notice A round was marked Failed.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    /// @param by Who marked it.
    event RoundFailed(uint256 indexed proposalId, uint16 indexed round, uint32 committed, address by);
    /// @notice A member reported the evaluation of a closed round's aggregate on its dataset.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @param datasetId Dataset evaluated on.
    /// @param metricPpm Metric in parts per million.
    /// @param sampleCount Evaluation samples.
    event EvaluationSubmitted(
        uint256 indexed proposalId,
        uint16 indexed round,
        address indexed member,
        bytes32 datasetId,
        uint32 metricPpm,
        uint64 sampleCount
    );
    /// @notice The coordinator recorded a closed round's global metric.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param metricPpm Metric in parts per million.
    event GlobalMetricRecorded(uint256 indexed proposalId, uint16 indexed round, uint32 metricPpm);

    /// @notice The proposal is not Approved.
    /// @param proposalId Proposal id.
    /// @param state Its state.
    error ProposalNotApproved(uint256 proposalId, Proposals.State state);
    /// @notice Rounds open in order; `expected` is the next one.
    /// @param proposalId Proposal id.
    /// @param round Round asked for.
    /// @param expected Next round number.
    error RoundOutOfOrder(uint256 proposalId, uint16 round, uint16 expected);
    /// @notice The previous round is still Open.
    /// @param proposalId Proposal id.
    /// @param round The previous round.
    error PreviousRoundOpen(uint256 proposalId, uint16 round);
    /// @notice The proposal planned fewer rounds.
    /// @param proposalId Proposal id.
    /// @param round Round asked for.
    /// @param rounds Planned rounds.
    error RoundBeyondPlan(uint256 proposalId, uint16 round, uint16 rounds);
    /// @notice The round is not Open.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param phase Its phase.
    error RoundNotOpen(uint256 proposalId, uint16 round, Phase phase);
    /// @notice The round is not Closed.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param phase Its phase.
    error RoundNotClosed(uint256 proposalId, uint16 round, Phase phase);
    /// @notice The round's commitment deadline has passed.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param deadline Last block for commitments.
    error RoundDeadlinePassed(uint256 proposalId, uint16 round, uint64 deadline);
    /// @notice The round's deadline has not passed yet.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param deadline Last block for commitments.
    error RoundDeadlineNotReached(uint256 proposalId, uint16 round, uint64 deadline);
    /// @notice `member` already committed in this round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    error AlreadyCommitted(uint256 proposalId, uint16 round, address member);
    /// @notice The dataset is not a target of the proposal.
    /// @param proposalId Proposal id.
    /// @param datasetId Dataset id.
    error NotATarget(uint256 proposalId, bytes32 datasetId);
    /// @notice The dataset's policy does not admit the proposal.
    /// @param datasetId Dataset id.
    /// @param reason One of DatasetRegistry's REASON_* constants.
    error PolicyDenied(bytes32 datasetId, bytes32 reason);
    /// @notice Sample count must be positive.
    error InvalidSampleCount();
    /// @notice Too few commitments to close the round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    /// @param required The proposal's minParticipants.
    error NotEnoughParticipants(uint256 proposalId, uint16 round, uint32 committed, uint32 required);
    /// @notice Only the coordinator may fail a round that reached its minimum participants.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    error EnoughParticipants(uint256 proposalId, uint16 round, uint32 committed);
    /// @notice `member` already evaluated this round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    error AlreadyEvaluated(uint256 proposalId, uint16 round, address member);
    /// @notice The global metric of this round was already recorded.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error GlobalMetricAlreadyRecorded(uint256 proposalId, uint16 round);
    /// @notice A metric above MAX_METRIC_PPM.
    /// @param metricPpm The value given.
    error MetricOutOfRange(uint32 metricPpm);

    /// @notice Bind to the other three contracts.
    /// @param consortium_ The consortium.
    /// @param proposals_ The proposals contract.
    /// @param registry_ The dataset registry.
    constructor(Consortium consortium_, Proposals proposals_, DatasetRegistry registry_) {
        consortium = consortium_;
        proposals = proposals_;
        registry = registry_;
        _coordinatorRole = consortium_.COORDINATOR_ROLE();
    }

    modifier onlyCoordinator() {
        if (!consortium.hasRole(_coordinatorRole, msg.sender)) revert NotCoordinator(msg.sender);
        _;
    }

    // ------------------------------------------------------------------ views

    /// @notice State of round `round` of proposal `proposalId`.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The round (all zero if never opened).
    function roundOf(uint256 proposalId, uint16 round) external view returns (Round memory) {
        return _rounds[proposalId][round];
    }

    /// @notice What the coordinator recorded when closing the round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The outcome (empty unless Closed).
    function outcomeOf(uint256 proposalId, uint16 round) external view returns (Outcome memory) {
        return _outcomes[proposalId][round];
    }

    /// @notice Number of the last round opened for the proposal (0 if none).
    /// @param proposalId Proposal id.
    /// @return The round number.
    function lastRound(uint256 proposalId) external view returns (uint16) {
        return _lastRound[proposalId];
    }

    /// @notice The stored commitment of `member` in the round (zero if none).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @return commitmentHash(datasetId, cid, sha256, sampleCount) of its update.
    function commitmentOf(uint256 proposalId, uint16 round, address member) external view returns (bytes32) {
        return _commitments[proposalId][round][member];
    }

    /// @notice Whether `member` submitted an evaluation for the round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @return True if it did.
    function hasEvaluated(uint256 proposalId, uint16 round, address member) external view returns (bool) {
        return _evaluated[proposalId][round][member];
    }

    /// @notice The hash stored for a commitment.
    /// @param datasetId Dataset id.
    /// @param cid CID of the update.
    /// @param sha256_ sha256 of the update.
    /// @param sampleCount Training samples.
    /// @return keccak256(abi.encode(datasetId, keccak256(bytes(cid)), sha256_, sampleCount)).
    function commitmentHash(bytes32 datasetId, string calldata cid, bytes32 sha256_, uint64 sampleCount)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(datasetId, keccak256(bytes(cid)), sha256_, sampleCount));
    }

    // ------------------------------------------------------------ coordinator

    /// @notice Open round `round` of approved proposal `proposalId`; it accepts commitments
    /// until block.number + roundDuration. Rounds open in order, one at a time.
    /// @param proposalId Proposal id.
    /// @param round Round number: last opened + 1, at most the planned rounds.
    function openRound(uint256 proposalId, uint16 round) external onlyCoordinator {
        (Proposals.State state,,, uint16 rounds,, uint32 duration) = proposals.terms(proposalId);
        if (state != Proposals.State.Approved) revert ProposalNotApproved(proposalId, state);
        uint16 last = _lastRound[proposalId];
        if (round != last + 1) revert RoundOutOfOrder(proposalId, round, last + 1);
        if (round > rounds) revert RoundBeyondPlan(proposalId, round, rounds);
        if (last != 0 && _rounds[proposalId][last].phase == Phase.Open) revert PreviousRoundOpen(proposalId, last);
        uint64 deadline = uint64(block.number) + duration;
        _lastRound[proposalId] = round;
        Round storage r = _rounds[proposalId][round];
        r.openedAt = uint64(block.number);
        r.deadline = deadline;
        r.phase = Phase.Open;
        emit RoundOpened(proposalId, round, deadline);
    }

    /// @notice Close an Open round with its aggregate and contribution scores; needs at least
    /// minParticipants commitments. Scores are a content-store document (see contract notes).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param aggregateCid CID of the aggregated model.
    /// @param aggregateSha256 sha256 of the aggregated model.
    /// @param scoresCid CID of the contribution-scores document.
    /// @param scoresSha256 sha256 of the contribution-scores document.
    function closeRound(
        uint256 proposalId,
        uint16 round,
        string calldata aggregateCid,
        bytes32 aggregateSha256,
        string calldata scoresCid,
        bytes32 scoresSha256
    ) external onlyCoordinator {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundNotOpen(proposalId, round, r.phase);
        if (bytes(aggregateCid).length == 0 || bytes(scoresCid).length == 0) revert EmptyCid();
        (,,,, uint32 minParticipants,) = proposals.terms(proposalId);
        if (r.committed < minParticipants) {
            revert NotEnoughParticipants(proposalId, round, r.committed, minParticipants);
        }
        r.phase = Phase.Closed;
        Outcome storage o = _outcomes[proposalId][round];
        o.aggregateSha256 = aggregateSha256;
        o.scoresSha256 = scoresSha256;
        o.aggregateCid = aggregateCid;
        o.scoresCid = scoresCid;
        emit RoundClosed(proposalId, round, aggregateCid, aggregateSha256, scoresCid, scoresSha256, r.committed);
    }

    /// @notice Mark an Open round Failed after its deadline: anyone may when it has fewer than
    /// minParticipants commitments, the coordinator may in any case.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    function failRound(uint256 proposalId, uint16 round) external {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundNotOpen(proposalId, round, r.phase);
        if (block.number <= r.deadline) revert RoundDeadlineNotReached(proposalId, round, r.deadline);
        if (!consortium.hasRole(_coordinatorRole, msg.sender)) {
            (,,,, uint32 minParticipants,) = proposals.terms(proposalId);
            if (r.committed >= minParticipants) revert EnoughParticipants(proposalId, round, r.committed);
        }
        r.phase = Phase.Failed;
        emit RoundFailed(proposalId, round, r.committed, msg.sender);
    }

    /// @notice Record the global metric of a Closed round, once.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param metricPpm Metric in parts per million (<= MAX_METRIC_PPM).
    function recordGlobalMetric(uint256 proposalId, uint16 round, uint32 metricPpm) external onlyCoordinator {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Closed) revert RoundNotClosed(proposalId, round, r.phase);
        if (r.globalMetricSet) revert GlobalMetricAlreadyRecorded(proposalId, round);
        if (metricPpm > MAX_METRIC_PPM) revert MetricOutOfRange(metricPpm);
        r.globalMetricSet = true;
        r.globalMetricPpm = metricPpm;
        emit GlobalMetricRecorded(proposalId, round, metricPpm);
    }

    // ---------------------------------------------------------------- members

    /// @notice Commit a model update trained on `datasetId` in an Open round, before its
    /// deadline, once per member per round. The dataset must be the caller's, a target of the
    /// proposal, and its policy must admit the proposal.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset trained on.
    /// @param cid CID of the update in the content store.
    /// @param sha256_ sha256 of the update.
    /// @param sampleCount Training samples used (> 0).
    function commitUpdate(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        string calldata cid,
        bytes32 sha256_,
        uint64 sampleCount
    ) external {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Open) revert RoundNotOpen(proposalId, round, r.phase);
        if (block.number > r.deadline) revert RoundDeadlinePassed(proposalId, round, r.deadline);
        mapping(address => bytes32) storage slot = _commitments[proposalId][round];
        if (slot[msg.sender] != bytes32(0)) revert AlreadyCommitted(proposalId, round, msg.sender);
        if (bytes(cid).length == 0) revert EmptyCid();
        if (sampleCount == 0) revert InvalidSampleCount();
        _checkDataUse(proposalId, datasetId);
        slot[msg.sender] = commitmentHash(datasetId, cid, sha256_, sampleCount);
        ++r.committed;
        emit UpdateCommitted(proposalId, round, msg.sender, datasetId, cid, sha256_, sampleCount);
    }

    /// @notice Report the evaluation of a Closed round's aggregate on the caller's dataset,
    /// once per member per round. The dataset must be the caller's, a target of the proposal
    /// and still admit it (evaluation is a use of the data too).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset evaluated on.
    /// @param metricPpm Metric in parts per million (<= MAX_METRIC_PPM).
    /// @param sampleCount Evaluation samples (> 0).
    function submitEvaluation(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint32 metricPpm,
        uint64 sampleCount
    ) external {
        Round storage r = _rounds[proposalId][round];
        if (r.phase != Phase.Closed) revert RoundNotClosed(proposalId, round, r.phase);
        if (_evaluated[proposalId][round][msg.sender]) revert AlreadyEvaluated(proposalId, round, msg.sender);
        if (metricPpm > MAX_METRIC_PPM) revert MetricOutOfRange(metricPpm);
        if (sampleCount == 0) revert InvalidSampleCount();
        _checkDataUse(proposalId, datasetId);
        _evaluated[proposalId][round][msg.sender] = true;
        ++r.evaluations;
        emit EvaluationSubmitted(proposalId, round, msg.sender, datasetId, metricPpm, sampleCount);
    }

    // --------------------------------------------------------------- internal

    /// @dev Caller is a member, owns `datasetId`, which is a target of the proposal and
    /// admits it. The proposal is known to be Approved (a round of it was opened).
    function _checkDataUse(uint256 proposalId, bytes32 datasetId) private view {
        if (!consortium.isMember(msg.sender)) revert NotAMember(msg.sender);
        (address proposer, bytes32 purposeHash, bool target) = proposals.useTerms(proposalId, datasetId);
        if (!target) revert NotATarget(proposalId, datasetId);
        (address owner, bytes32 reason) = registry.checkUse(datasetId, proposalId, purposeHash, proposer);
        if (owner != msg.sender) revert NotDatasetOwner(datasetId, msg.sender);
        if (reason != bytes32(0)) revert PolicyDenied(datasetId, reason);
    }
}
