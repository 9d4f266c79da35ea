// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {IMemberVoting} from "./IMemberVoting.sol";
import {IProposals} from "./IProposals.sol";
import {IRounds} from "./IRounds.sol";
import {IReleases} from "./IReleases.sol";
import {IStatistics} from "./IStatistics.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";
import {Cid} from "./Cid.sol";

/// @title Statistics
/// @notice The federated statistics phase before training (see {IStatistics}).
/// @dev Deployed last; reads {IProposals} (approval, target owner and rows, purpose),
/// {IDatasetRegistry-checkUse} and {IRounds-lastRound}. A commitment stores one hash and bumps
/// a counter, as {Rounds} does for updates; publication stores the document's CID and sha256.
contract Statistics is IStatistics, ConsortiumBound {
    /// @notice The dataset registry (policies).
    IDatasetRegistry public immutable registry;
    /// @notice The proposals contract (approval, targets).
    IProposals public immutable proposals;
    /// @notice The rounds contract (has training started?).
    IRounds public immutable rounds;

    mapping(uint256 proposalId => Phase) private _phases;
    mapping(uint256 proposalId => mapping(address member => bytes32)) private _moments;

    /// @notice Bind to the other contracts (in deployment order).
    /// @param consortium_ The consortium.
    /// @param registry_ The dataset registry.
    /// @param proposals_ The proposals contract.
    /// @param rounds_ The rounds contract.
    /// @param releases_ The releases contract (unused; the deployment order passes it).
    constructor(
        IConsortium consortium_,
        IDatasetRegistry registry_,
        IProposals proposals_,
        IRounds rounds_,
        IReleases releases_
    ) ConsortiumBound(consortium_) {
        registry = registry_;
        proposals = proposals_;
        rounds = rounds_;
        releases_; // silence: no dependency
    }

    /// @inheritdoc IStatistics
    function phaseOf(uint256 proposalId) external view returns (Phase memory) {
        return _phases[proposalId];
    }

    /// @inheritdoc IStatistics
    function momentsOf(uint256 proposalId, address member) external view returns (bytes32) {
        return _moments[proposalId][member];
    }

    /// @inheritdoc IStatistics
    function commitMoments(
        uint256 proposalId,
        bytes32 datasetId,
        string calldata cid,
        bytes32 momentsSha256,
        uint64 rowCount
    ) external onlyMember {
        Phase storage ph = _open(proposalId);
        mapping(address => bytes32) storage slot = _moments[proposalId];
        if (slot[msg.sender] != bytes32(0)) revert StatisticsAlreadyCommitted(proposalId, msg.sender);
        if (!Cid.isWellFormed(cid)) revert StatisticsInvalidCid();
        if (rowCount == 0) revert StatisticsInvalidRowCount();
        (address requester, bytes32 purposeHash, address owner, uint64 registered) =
            proposals.useTerms(proposalId, datasetId);
        if (owner == address(0)) revert StatisticsNotATarget(proposalId, datasetId);
        if (owner != msg.sender) revert StatisticsNotDatasetOwner(datasetId, msg.sender);
        if (rowCount > registered) revert StatisticsRowCountTooHigh(datasetId, rowCount, registered);
        bytes32 reason = registry.checkUse(datasetId, proposalId, purposeHash, requester);
        if (reason != bytes32(0)) revert StatisticsPolicyDenied(datasetId, reason);
        slot[msg.sender] = keccak256(abi.encode(datasetId, keccak256(bytes(cid)), momentsSha256, rowCount));
        ++ph.committed;
        emit MomentsCommitted(proposalId, msg.sender, datasetId, cid, momentsSha256, rowCount);
    }

    /// @inheritdoc IStatistics
    function publishStatistics(uint256 proposalId, string calldata cid, bytes32 statisticsSha256)
        external
        onlyCoordinator
    {
        Phase storage ph = _open(proposalId);
        if (!Cid.isWellFormed(cid)) revert StatisticsInvalidCid();
        uint32 minParticipants = proposals.roundTerms(proposalId).minParticipants;
        if (ph.committed < minParticipants) {
            revert StatisticsNotEnoughParticipants(proposalId, ph.committed, minParticipants);
        }
        ph.published = true;
        ph.statisticsSha256 = statisticsSha256;
        ph.statisticsCid = cid;
        emit StatisticsPublished(proposalId, cid, statisticsSha256, ph.committed);
    }

    /// @dev The phase of an Approved proposal whose training has not started and whose
    /// statistics are not published yet.
    function _open(uint256 proposalId) private view returns (Phase storage ph) {
        if (proposals.roundTerms(proposalId).state != IMemberVoting.VoteState.Approved) {
            revert StatisticsNotApproved(proposalId);
        }
        if (rounds.lastRound(proposalId) != 0) revert StatisticsTrainingStarted(proposalId);
        ph = _phases[proposalId];
        if (ph.published) revert StatisticsAlreadyPublished(proposalId);
    }
}
