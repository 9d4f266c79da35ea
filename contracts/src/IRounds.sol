// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IMemberVoting} from "./IMemberVoting.sol";

/// @title IRounds
/// @notice The training-round phase machine of approved proposals:
/// None -> Open -> Closed | Failed. The coordinator opens rounds in order; members commit
/// one model update per round (the update itself lives in the content store, referenced by
/// CID and sha256); the coordinator closes the round with the aggregate and the
/// contribution scores, or the round fails when too few members committed. After a round
/// closes, members report evaluation metrics and the coordinator records the global one.
/// The coordinator's discretion is bounded where the chain can bound it: it may close a round
/// before its deadline only once every target dataset has committed, and fail a round only
/// after its deadline; whether the updates it left out were really invalid, and whether every
/// aggregated update's dataset still admitted the proposal at close, is for the audit replay
/// (the chain cannot read the updates, and re-checking each policy at close would loop over
/// participants).
/// Differential privacy: each commitment states the ε (and δ) it spends on its dataset, and the
/// contract adds it to the dataset's cumulative spend in {IDatasetRegistry} (the ε ledger),
/// refusing a commitment that would exceed the dataset's budget. A node's accountant composes
/// its rounds (RDP/PRV composition is tighter than adding per-round ε), so a round's ε is the
/// increase of the accountant's total for the proposal through this round over the total through
/// the previous one; across proposals the spends add up. ε = 0 states no guarantee (a
/// non-private update): it is admitted only by a dataset without a budget.
/// The chain cannot check that the stated ε is what the training spent; the audit replay
/// recomputes it from the plan with the same accountant, and the coordinator leaves out an
/// update whose ε differs from the plan's.
interface IRounds {
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
    /// @notice A commitment spent differential privacy on its dataset (the ε ledger).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId The dataset.
    /// @param epsilonMicro Epsilon this commitment spent (millionths).
    /// @param deltaPico Delta (units of 1e-12).
    /// @param datasetSpentMicro The dataset's total spend afterwards (millionths).
    event PrivacySpent(
        uint256 indexed proposalId,
        uint16 indexed round,
        bytes32 indexed datasetId,
        uint64 epsilonMicro,
        uint64 deltaPico,
        uint64 datasetSpentMicro
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

    /// @notice the proposal is not approved
    /// @param proposalId Proposal id.
    /// @param state Its state.
    error RoundsProposalNotApproved(uint256 proposalId, IMemberVoting.VoteState state);
    /// @notice rounds must be opened in order
    /// @param proposalId Proposal id.
    /// @param round Round asked for.
    /// @param expected Next round number.
    error RoundsOutOfOrder(uint256 proposalId, uint16 round, uint16 expected);
    /// @notice the previous round is still open
    /// @param proposalId Proposal id.
    /// @param round The previous round.
    error RoundsPreviousRoundOpen(uint256 proposalId, uint16 round);
    /// @notice the proposal planned fewer rounds
    /// @param proposalId Proposal id.
    /// @param round Round asked for.
    /// @param rounds Planned rounds.
    error RoundsBeyondPlan(uint256 proposalId, uint16 round, uint16 rounds);
    /// @notice the round is not open
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param phase Its phase.
    error RoundsNotOpen(uint256 proposalId, uint16 round, Phase phase);
    /// @notice the round is not closed
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param phase Its phase.
    error RoundsNotClosed(uint256 proposalId, uint16 round, Phase phase);
    /// @notice the round's deadline has passed
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param deadline Last block for commitments.
    error RoundsDeadlinePassed(uint256 proposalId, uint16 round, uint64 deadline);
    /// @notice the round's deadline has not passed yet
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param deadline Last block for commitments.
    error RoundsDeadlineNotReached(uint256 proposalId, uint16 round, uint64 deadline);
    /// @notice already committed an update in this round
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    error RoundsAlreadyCommitted(uint256 proposalId, uint16 round, address member);
    /// @notice the dataset is not a target of the proposal
    /// @param proposalId Proposal id.
    /// @param datasetId Dataset id.
    error RoundsNotATarget(uint256 proposalId, bytes32 datasetId);
    /// @notice the dataset's policy does not admit the proposal
    /// @param datasetId Dataset id.
    /// @param reason One of DatasetRegistry's REASON_* constants.
    error RoundsPolicyDenied(bytes32 datasetId, bytes32 reason);
    /// @notice sample count must be positive
    error RoundsInvalidSampleCount();
    /// @notice the sample count exceeds the rows registered for the dataset
    /// @param datasetId Dataset id.
    /// @param sampleCount The count claimed.
    /// @param rowCount The dataset's registered rows.
    error RoundsSampleCountTooHigh(bytes32 datasetId, uint64 sampleCount, uint64 rowCount);
    /// @notice the round may close before its deadline only when every target dataset has committed
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    /// @param targets The proposal's number of target datasets.
    error RoundsEarlyClose(uint256 proposalId, uint16 round, uint32 committed, uint16 targets);
    /// @notice not enough participants committed
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    /// @param required The proposal's minParticipants.
    error RoundsNotEnoughParticipants(uint256 proposalId, uint16 round, uint32 committed, uint32 required);
    /// @notice the round reached its participants; only the coordinator may fail it
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param committed Commitments received.
    error RoundsEnoughParticipants(uint256 proposalId, uint16 round, uint32 committed);
    /// @notice already submitted an evaluation for this round
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    error RoundsAlreadyEvaluated(uint256 proposalId, uint16 round, address member);
    /// @notice the global metric of this round is already recorded
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error RoundsGlobalMetricAlreadyRecorded(uint256 proposalId, uint16 round);
    /// @notice metric out of range (0..1000000 ppm)
    /// @param metricPpm The value given.
    error RoundsMetricOutOfRange(uint32 metricPpm);

    /// @notice not the owner of the dataset
    /// @param datasetId Dataset id.
    /// @param account The caller.
    error RoundsNotDatasetOwner(bytes32 datasetId, address account);
    /// @notice a content identifier (CID) is empty
    error RoundsEmptyCid();
    /// @notice the CID is not a well-formed CIDv0 or base32 CIDv1
    error RoundsInvalidCid();
    /// @notice the update would exceed the dataset's privacy budget (epsilon)
    /// @param datasetId Dataset id.
    /// @param chargeMicro Epsilon the update would add (millionths; 2^64-1 = not private).
    /// @param spentMicro Epsilon already spent on the dataset (millionths).
    /// @param maxMicro The dataset's budget (millionths).
    error RoundsPrivacyBudgetExceeded(bytes32 datasetId, uint64 chargeMicro, uint64 spentMicro, uint64 maxMicro);
    /// @notice delta must be positive and below 1/rows of the dataset for a private update, and zero for a non-private one
    /// @param datasetId Dataset id.
    /// @param deltaPico The delta stated (units of 1e-12).
    /// @param rowCount The dataset's registered rows.
    error RoundsInvalidDelta(bytes32 datasetId, uint64 deltaPico, uint64 rowCount);
    /// @notice the dataset registry names another Rounds contract
    /// @param named The registry's rounds().
    error RoundsRegistryMismatch(address named);

    /// @notice State of round `round` of proposal `proposalId`.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The round (all zero if never opened).
    function roundOf(uint256 proposalId, uint16 round) external view returns (Round memory);

    /// @notice What the coordinator recorded when closing the round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The outcome (empty unless Closed).
    function outcomeOf(uint256 proposalId, uint16 round) external view returns (Outcome memory);

    /// @notice Number of the last round opened for the proposal (0 if none).
    /// @param proposalId Proposal id.
    /// @return The round number.
    function lastRound(uint256 proposalId) external view returns (uint16);

    /// @notice The stored commitment of `member` in the round (zero if none).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @return commitmentHash(datasetId, cid, sha256, sampleCount) of its update.
    function commitmentOf(uint256 proposalId, uint16 round, address member) external view returns (bytes32);

    /// @notice Whether `member` submitted an evaluation for the round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @return True if it did.
    function hasEvaluated(uint256 proposalId, uint16 round, address member) external view returns (bool);

    /// @notice How many target datasets the round still waits for: those whose recorded owner
    /// is a member, has not committed in this round, and whose policy admits the proposal now
    /// ({IDatasetRegistry-checkUse}). Before its deadline a round may close only when this is
    /// zero; a target that could not commit anyway (its policy refuses the proposal, its owner
    /// left the consortium or already committed for another of its datasets) is not waited for.
    /// @dev Loops over the proposal's targets (at most {Proposals-MAX_TARGETS}), calling
    /// checkUse for each one not yet committed.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return awaited The number of such targets.
    function awaitedCommitments(uint256 proposalId, uint16 round) external view returns (uint32 awaited);

    /// @notice The hash stored for a commitment.
    /// @param datasetId Dataset id.
    /// @param cid CID of the update.
    /// @param sha256_ sha256 of the update.
    /// @param sampleCount Training samples.
    /// @return keccak256(abi.encode(datasetId, keccak256(bytes(cid)), sha256_, sampleCount)).
    function commitmentHash(bytes32 datasetId, string calldata cid, bytes32 sha256_, uint64 sampleCount)
        external
        pure
        returns (bytes32);

    /// @notice Open round `round` of approved proposal `proposalId`; it accepts commitments
    /// until block.number + roundDuration. Rounds open in order, one at a time.
    /// @dev Requirements: the caller is the coordinator ({ConsortiumNotCoordinator}); the
    /// proposal is Approved ({RoundsProposalNotApproved}); `round` is the last opened + 1
    /// ({RoundsOutOfOrder}) and at most the planned rounds ({RoundsBeyondPlan}); the previous
    /// round is not Open ({RoundsPreviousRoundOpen}). Emits {RoundOpened}.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    function openRound(uint256 proposalId, uint16 round) external;

    /// @notice Close an Open round with its aggregate and contribution scores (both documents
    /// in the content store, so closing is O(1) in participants).
    /// @dev Requirements: the caller is the coordinator ({ConsortiumNotCoordinator}); the round
    /// is Open ({RoundsNotOpen}); neither CID is empty ({RoundsEmptyCid}); at least
    /// minParticipants committed ({RoundsNotEnoughParticipants}); before the deadline has
    /// passed, every target dataset that could still commit did ({awaitedCommitments} is zero,
    /// else {RoundsEarlyClose}) - the coordinator cannot shut out a member that still has time,
    /// and a round need not wait out its deadline for a dataset whose policy refuses the
    /// proposal. Emits {RoundClosed}.
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
    ) external;

    /// @notice Mark an Open round Failed after its deadline: anyone may when it has fewer than
    /// minParticipants commitments; with minParticipants or more only the coordinator may (it
    /// found too few valid updates - a claim the chain cannot check, so {RoundFailed} records
    /// the commitment count and the audit replay re-verifies every committed update of such a
    /// round). Nobody may fail a round before its deadline.
    /// @dev Requirements: the round is Open ({RoundsNotOpen}); its deadline has passed
    /// ({RoundsDeadlineNotReached}); a caller other than the coordinator finds fewer than
    /// minParticipants commitments ({RoundsEnoughParticipants}). Emits {RoundFailed}.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    function failRound(uint256 proposalId, uint16 round) external;

    /// @notice Record the global metric of a Closed round, once.
    /// @dev Requirements: the caller is the coordinator ({ConsortiumNotCoordinator}); the round
    /// is Closed ({RoundsNotClosed}); no global metric yet ({RoundsGlobalMetricAlreadyRecorded});
    /// metricPpm <= MAX_METRIC_PPM ({RoundsMetricOutOfRange}). Emits {GlobalMetricRecorded}.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param metricPpm Metric in parts per million.
    function recordGlobalMetric(uint256 proposalId, uint16 round, uint32 metricPpm) external;

    /// @notice Commit a model update trained on `datasetId` in an Open round, once per member
    /// per round.
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the round is
    /// Open ({RoundsNotOpen}) and not past its deadline ({RoundsDeadlinePassed}); the caller has
    /// not committed in it ({RoundsAlreadyCommitted}); the CID is a well-formed CIDv0 or base32
    /// CIDv1 ({RoundsInvalidCid}); sampleCount > 0 ({RoundsInvalidSampleCount}); the dataset is
    /// a target of the proposal ({RoundsNotATarget}) recorded as the caller's
    /// ({RoundsNotDatasetOwner}), sampleCount is at most its registered rows
    /// ({RoundsSampleCountTooHigh}; FedAvg weighs updates by it) and its policy admits the
    /// proposal ({RoundsPolicyDenied}); privacy: δ is 0 when ε is 0 and otherwise positive and
    /// below 1/rows ({RoundsInvalidDelta}); ε fits what is left of the dataset's budget, and a
    /// non-private update (ε = 0) is admitted only without a budget ({RoundsPrivacyBudgetExceeded}).
    /// Emits {UpdateCommitted}, and {PrivacySpent} for a private update.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset trained on.
    /// @param cid CID of the update in the content store.
    /// @param sha256_ sha256 of the update.
    /// @param sampleCount Training samples used.
    /// @param epsilonMicro Epsilon this update spends on the dataset, in millionths (0 = not
    /// differentially private).
    /// @param deltaPico Delta in units of 1e-12 (0 when not private).
    function commitUpdate(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        string calldata cid,
        bytes32 sha256_,
        uint64 sampleCount,
        uint64 epsilonMicro,
        uint64 deltaPico
    ) external;

    /// @notice Report the evaluation of a Closed round's aggregate on the caller's dataset,
    /// once per member per round (evaluation is a use of the data too).
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the round is
    /// Closed ({RoundsNotClosed}); the caller has not evaluated it ({RoundsAlreadyEvaluated});
    /// metricPpm <= MAX_METRIC_PPM ({RoundsMetricOutOfRange}); sampleCount > 0
    /// ({RoundsInvalidSampleCount}); the dataset is a target ({RoundsNotATarget}), the caller's
    /// ({RoundsNotDatasetOwner}), sampleCount is at most its registered rows
    /// ({RoundsSampleCountTooHigh}; the global metric is weighted by it) and it still admits the
    /// proposal ({RoundsPolicyDenied}). Emits {EvaluationSubmitted}.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset evaluated on.
    /// @param metricPpm Metric in parts per million.
    /// @param sampleCount Evaluation samples.
    function submitEvaluation(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint32 metricPpm,
        uint64 sampleCount
    ) external;
}
