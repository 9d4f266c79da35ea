// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IStatistics
/// @notice The federated statistics phase of a proposal whose plan asks for it
/// (`preprocessing.standardize = "federated"`): before round 1 opens, each target dataset's
/// owner commits its feature moments (row count, per-feature sum and sum of squares), sealed
/// for the coordinator and the plan's auditors and kept in the content store; the coordinator
/// then publishes the pooled mean/std as a public statistics document (CID + sha256), which
/// every node applies in training and evaluation, and which replay re-derives from the moments.
/// @dev A phase of its own, beside {IRounds} rather than a round 0 in it, so that the training
/// contracts are untouched. The chain cannot read the moments; what it enforces is who may
/// commit (the target's recorded owner, its policy admitting the proposal, at most its
/// registered rows), once, only while no training round has opened, and that the coordinator
/// publishes once, with at least minParticipants moments. That round 1 opens only after the
/// publication is checked by the nodes (they cannot train without it) and by replay.
interface IStatistics {
    /// @notice The phase of one proposal, in one slot plus the document.
    /// @param committed Moments committed.
    /// @param published Whether the coordinator published the pooled statistics.
    /// @param statisticsSha256 sha256 of the statistics document.
    /// @param statisticsCid CID of the statistics document.
    struct Phase {
        uint32 committed;
        bool published;
        bytes32 statisticsSha256;
        string statisticsCid;
    }

    /// @notice A member committed its dataset's sealed feature moments.
    /// @param proposalId Proposal id.
    /// @param member The member.
    /// @param datasetId The dataset.
    /// @param cid CID of the sealed moments document.
    /// @param momentsSha256 sha256 of the sealed blob.
    /// @param rowCount Rows the moments were computed over.
    event MomentsCommitted(
        uint256 indexed proposalId, address indexed member, bytes32 datasetId, string cid, bytes32 momentsSha256,
        uint64 rowCount
    );
    /// @notice The coordinator published the pooled statistics.
    /// @param proposalId Proposal id.
    /// @param cid CID of the statistics document.
    /// @param statisticsSha256 Its sha256.
    /// @param committed Moments committed when it was published.
    event StatisticsPublished(uint256 indexed proposalId, string cid, bytes32 statisticsSha256, uint32 committed);

    /// @notice the proposal is not approved
    /// @param proposalId Proposal id.
    error StatisticsNotApproved(uint256 proposalId);
    /// @notice training has started: the statistics phase is over
    /// @param proposalId Proposal id.
    error StatisticsTrainingStarted(uint256 proposalId);
    /// @notice the statistics are already published
    /// @param proposalId Proposal id.
    error StatisticsAlreadyPublished(uint256 proposalId);
    /// @notice this member already committed its moments
    /// @param proposalId Proposal id.
    /// @param member The member.
    error StatisticsAlreadyCommitted(uint256 proposalId, address member);
    /// @notice the CID is not a well-formed CID
    error StatisticsInvalidCid();
    /// @notice the row count must be at least 1
    error StatisticsInvalidRowCount();
    /// @notice the dataset is not a target of the proposal
    /// @param proposalId Proposal id.
    /// @param datasetId The dataset.
    error StatisticsNotATarget(uint256 proposalId, bytes32 datasetId);
    /// @notice only the dataset's recorded owner may commit for it
    /// @param datasetId The dataset.
    /// @param account The caller.
    error StatisticsNotDatasetOwner(bytes32 datasetId, address account);
    /// @notice more rows claimed than the dataset registered
    /// @param datasetId The dataset.
    /// @param rowCount Rows claimed.
    /// @param registered Rows registered.
    error StatisticsRowCountTooHigh(bytes32 datasetId, uint64 rowCount, uint64 registered);
    /// @notice the dataset's policy does not admit the proposal
    /// @param datasetId The dataset.
    /// @param reason The registry's reason code.
    error StatisticsPolicyDenied(bytes32 datasetId, bytes32 reason);
    /// @notice too few moments committed to publish statistics
    /// @param proposalId Proposal id.
    /// @param committed Moments committed.
    /// @param minParticipants The proposal's minimum.
    error StatisticsNotEnoughParticipants(uint256 proposalId, uint32 committed, uint32 minParticipants);

    /// @notice The statistics phase of `proposalId`.
    /// @param proposalId Proposal id.
    /// @return The phase (all zero if nothing happened).
    function phaseOf(uint256 proposalId) external view returns (Phase memory);

    /// @notice The moments commitment hash of `member` (zero if none):
    /// keccak256(abi.encode(datasetId, keccak256(cid), sha256, rowCount)).
    /// @param proposalId Proposal id.
    /// @param member The member.
    /// @return The hash.
    function momentsOf(uint256 proposalId, address member) external view returns (bytes32);

    /// @notice Commit the sealed moments of a target dataset, before training starts.
    /// @dev Requirements: active member ({ConsortiumNotAMember}); proposal Approved
    /// ({StatisticsNotApproved}); no round opened ({StatisticsTrainingStarted}); not published
    /// ({StatisticsAlreadyPublished}); once per member ({StatisticsAlreadyCommitted}); CID well
    /// formed ({StatisticsInvalidCid}); rowCount >= 1 ({StatisticsInvalidRowCount}); the dataset
    /// a target ({StatisticsNotATarget}) recorded as the caller's ({StatisticsNotDatasetOwner})
    /// with at least rowCount rows ({StatisticsRowCountTooHigh}) whose policy admits the
    /// proposal ({StatisticsPolicyDenied}). Emits {MomentsCommitted}.
    /// @param proposalId Proposal id.
    /// @param datasetId The dataset.
    /// @param cid CID of the sealed moments.
    /// @param momentsSha256 sha256 of the sealed blob.
    /// @param rowCount Rows the moments cover.
    function commitMoments(uint256 proposalId, bytes32 datasetId, string calldata cid, bytes32 momentsSha256,
        uint64 rowCount) external;

    /// @notice Coordinator: publish the pooled statistics document.
    /// @dev Requirements: the coordinator ({ConsortiumNotCoordinator}); proposal Approved
    /// ({StatisticsNotApproved}); no round opened ({StatisticsTrainingStarted}); once
    /// ({StatisticsAlreadyPublished}); CID well formed ({StatisticsInvalidCid}); at least
    /// minParticipants moments ({StatisticsNotEnoughParticipants}). Emits {StatisticsPublished}.
    /// @param proposalId Proposal id.
    /// @param cid CID of the statistics document.
    /// @param statisticsSha256 Its sha256.
    function publishStatistics(uint256 proposalId, string calldata cid, bytes32 statisticsSha256) external;
}
