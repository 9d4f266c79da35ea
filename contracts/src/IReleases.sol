// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IMemberVoting} from "./IMemberVoting.sol";

/// @title IReleases
/// @notice Which trained models the consortium accepts, and which a hospital's withdrawal of
/// consent has tainted.
/// A model is the aggregate of a closed round (proposal, round) of {IRounds}. Release: a member
/// proposes releasing a model under its model card (a document in the content store, named by
/// CID and sha256, that says what went into the model); the members vote with the same rules
/// as on proposals ({IMemberVoting}); once Approved the model is released, and only a released
/// model is served as such. The release records the aggregate's sha256 as {IRounds} recorded it
/// at close, so it names exactly one model.
/// Withdrawal: the lineage of round r of a proposal is the set of updates committed in its
/// closed rounds 1..r. When a dataset's owner revokes it ({IDatasetRegistry-revokeDataset}),
/// anyone may mark each model whose lineage holds an update of that dataset, one model per call
/// and O(1) gas: the caller names the commitment (round, member, CID, sha256, samples) and the
/// contract re-hashes it against the one {IRounds} stored. A marked model cannot be released.
interface IReleases is IMemberVoting {
    /// @notice One release proposal.
    /// @param proposalId The training proposal the model came from.
    /// @param round The closed round whose aggregate is the model.
    /// @param proposer The member who proposed the release.
    /// @param aggregateSha256 The model's sha256, copied from {IRounds-outcomeOf} at proposal.
    /// @param cardSha256 sha256 of the model card document.
    /// @param cardCid CID of the model card document.
    struct Release {
        uint256 proposalId;
        uint16 round;
        address proposer;
        bytes32 aggregateSha256;
        bytes32 cardSha256;
        string cardCid;
    }

    /// @notice Release and withdrawal state of one model, in one storage slot.
    /// @param releaseId The Approved release of the model (0 if not released).
    /// @param withdrawals Datasets of its lineage marked as withdrawn (0 if none).
    struct ModelStatus {
        uint64 releaseId;
        uint32 withdrawals;
    }

    /// @notice A member proposed releasing a model.
    /// @param id Release id.
    /// @param proposalId Proposal the model came from.
    /// @param round Round whose aggregate is the model.
    /// @param proposer The member.
    /// @param aggregateSha256 The model's sha256 (as recorded at close).
    /// @param cardCid CID of the model card.
    /// @param cardSha256 sha256 of the model card.
    /// @param deadline Last block in which votes are accepted.
    /// @param eligible Members who may vote.
    event ReleaseProposed(
        uint256 indexed id,
        uint256 indexed proposalId,
        uint16 indexed round,
        address proposer,
        bytes32 aggregateSha256,
        string cardCid,
        bytes32 cardSha256,
        uint64 deadline,
        uint32 eligible
    );
    /// @notice A member voted on a release.
    /// @param id Release id.
    /// @param voter The member.
    /// @param choice Yes, No or Abstain.
    event ReleaseVoted(uint256 indexed id, address indexed voter, Choice choice);
    /// @notice A release vote was finalized; Approved means the model is released.
    /// @param id Release id.
    /// @param proposalId Proposal the model came from.
    /// @param round Round whose aggregate is the model.
    /// @param state Approved or Rejected.
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param abstain Abstentions.
    event ReleaseFinalized(
        uint256 indexed id, uint256 indexed proposalId, uint16 indexed round, VoteState state, uint32 yes, uint32 no,
        uint32 abstain
    );
    /// @notice The proposer withdrew a release proposal before any vote.
    /// @param id Release id.
    event ReleaseCancelled(uint256 indexed id);
    /// @notice A model was marked: a dataset in its lineage was revoked by its owner.
    /// @param proposalId Proposal the model came from.
    /// @param round Round whose aggregate is the model.
    /// @param datasetId The revoked dataset.
    /// @param committedRound The round (<= round) in which the dataset's update was committed.
    /// @param member The member that committed it.
    /// @param by Who marked the model.
    event ModelWithdrawn(
        uint256 indexed proposalId,
        uint16 indexed round,
        bytes32 indexed datasetId,
        uint16 committedRound,
        address member,
        address by
    );

    /// @notice the round is not closed, so it has no model
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error ReleasesModelNotClosed(uint256 proposalId, uint16 round);
    /// @notice the model card's CID is not a well-formed CID
    error ReleasesInvalidCardCid();
    /// @notice the model card's sha256 is zero
    error ReleasesInvalidCardSha256();
    /// @notice a dataset in the model's lineage was withdrawn: the model cannot be released
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error ReleasesModelWithdrawn(uint256 proposalId, uint16 round);
    /// @notice the model is already released
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param releaseId The release that released it.
    error ReleasesAlreadyReleased(uint256 proposalId, uint16 round, uint256 releaseId);
    /// @notice only the proposer of the release may cancel it
    /// @param id Release id.
    /// @param account The caller.
    error ReleasesNotProposer(uint256 id, address account);
    /// @notice votes were already cast; the release can no longer be cancelled
    /// @param id Release id.
    error ReleasesVotesAlreadyCast(uint256 id);
    /// @notice the dataset is not revoked: its owner has not withdrawn consent
    /// @param datasetId The dataset.
    error ReleasesDatasetNotRevoked(bytes32 datasetId);
    /// @notice the named commitment is not in the model's lineage (not stored, later round, or a round that did not close)
    /// @param proposalId Proposal id.
    /// @param round The model's round.
    /// @param datasetId The dataset.
    /// @param committedRound The round named for the commitment.
    error ReleasesNotInLineage(uint256 proposalId, uint16 round, bytes32 datasetId, uint16 committedRound);
    /// @notice the model is already marked for this dataset
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId The dataset.
    error ReleasesAlreadyMarked(uint256 proposalId, uint16 round, bytes32 datasetId);

    /// @notice Number of release proposals; ids run from 1 to releaseCount.
    /// @return The count.
    function releaseCount() external view returns (uint256);

    /// @notice Release proposal `id` and its tally (all zero if unknown).
    /// @param id Release id.
    /// @return r The release.
    /// @return tally Its tally.
    function release(uint256 id) external view returns (Release memory r, Tally memory tally);

    /// @notice Release and withdrawal state of the model of round `round` of `proposalId`.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The status (all zero: neither released nor marked).
    function modelStatus(uint256 proposalId, uint16 round) external view returns (ModelStatus memory);

    /// @notice Whether the model of (`proposalId`, `round`) is marked for `datasetId`.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset id.
    /// @return True if marked.
    function isMarked(uint256 proposalId, uint16 round, bytes32 datasetId) external view returns (bool);

    /// @notice Propose releasing the model of round `round` of `proposalId` under a model card.
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the card CID is
    /// well formed ({ReleasesInvalidCardCid}) and its sha256 not zero ({ReleasesInvalidCardSha256});
    /// the round is Closed ({ReleasesModelNotClosed}); the model is not marked
    /// ({ReleasesModelWithdrawn}) nor released ({ReleasesAlreadyReleased}). Several proposals for
    /// one model may run at once (one member cannot block a model by proposing it with a bad
    /// card); the first Approved releases it. Emits {ReleaseProposed}.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param cardCid CID of the model card.
    /// @param cardSha256 sha256 of the model card.
    /// @return id The release id.
    function proposeRelease(uint256 proposalId, uint16 round, string calldata cardCid, bytes32 cardSha256)
        external
        returns (uint256 id);

    /// @notice Vote on release `id` (the rules of {IMemberVoting}).
    /// @dev Requirements as {IProposals-vote}. Emits {ReleaseVoted}.
    /// @param id Release id.
    /// @param choice Yes, No or Abstain.
    function voteRelease(uint256 id, Choice choice) external;

    /// @notice Finalize release `id` after its voting period; Approved releases the model. Anyone.
    /// @dev Requirements: the release exists ({MemberVotingUnknown}) and is Active
    /// ({MemberVotingNotActive}); its deadline has passed ({MemberVotingStillOpen}); if the vote
    /// passed, the model is not marked ({ReleasesModelWithdrawn}) nor already released by another
    /// release ({ReleasesAlreadyReleased}). Emits {ReleaseFinalized}.
    /// @param id Release id.
    /// @return state Approved or Rejected.
    function finalizeRelease(uint256 id) external returns (VoteState state);

    /// @notice Withdraw release proposal `id`: its proposer only, before any vote.
    /// @dev Requirements: Active ({MemberVotingUnknown}, {MemberVotingNotActive}); the caller
    /// proposed it ({ReleasesNotProposer}); no vote yet ({ReleasesVotesAlreadyCast}).
    /// Emits {ReleaseCancelled}.
    /// @param id Release id.
    function cancelRelease(uint256 id) external;

    /// @notice Mark the model of round `round` of `proposalId` as withdrawn for `datasetId`. Anyone.
    /// @dev O(1): one commitment of the dataset in a closed round `committedRound` <= `round`,
    /// named by its member, CID, sha256 and sample count, is re-hashed and compared with the one
    /// {IRounds-commitmentOf} stored. Requirements: the dataset is revoked
    /// ({ReleasesDatasetNotRevoked}); round `round` is Closed ({ReleasesModelNotClosed}); the
    /// commitment is in its lineage ({ReleasesNotInLineage}); the model is not already marked for
    /// the dataset ({ReleasesAlreadyMarked}). Emits {ModelWithdrawn}.
    /// @param proposalId Proposal id.
    /// @param round The model's round.
    /// @param datasetId The revoked dataset.
    /// @param committedRound Round of the commitment (1..round).
    /// @param member The member that committed.
    /// @param cid The update's CID as committed.
    /// @param updateSha256 The update's sha256 as committed.
    /// @param sampleCount The sample count as committed.
    function markWithdrawn(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint16 committedRound,
        address member,
        string calldata cid,
        bytes32 updateSha256,
        uint64 sampleCount
    ) external;
}
