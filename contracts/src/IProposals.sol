// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IMemberVoting} from "./IMemberVoting.sol";

/// @title IProposals
/// @notice Federated-learning proposals: a member submits a training plan (stored off chain,
/// referenced by CID and sha256), members vote one-member-one-vote ({IMemberVoting}), and
/// anyone finalizes it after the voting period as Approved or Rejected. Approved proposals may
/// be trained in {IRounds} on the target datasets whose {IDatasetRegistry} policy admits them.
/// Targets are bound at submission: each must be a registered, unrevoked dataset, and the
/// proposal records its owner, so members vote on whose data is used and only that owner
/// may commit for it (a dataset name cannot be squatted after the vote).
interface IProposals is IMemberVoting {
    /// @notice What a member submits.
    /// @param planCid CID of the training plan document.
    /// @param planSha256 sha256 of the plan document.
    /// @param purpose Purpose of use, a short string matched against dataset policies by hash.
    /// @param targets Dataset ids (keccak256 of dataset names) to train on; 1..MAX_TARGETS, distinct,
    /// each registered and not revoked.
    /// @param rounds Number of training rounds (1..MAX_ROUNDS).
    /// @param minParticipants Fewest commitments for a round to close (>= 1).
    /// @param roundDuration Blocks a round stays open for commitments (>= 1).
    struct Submission {
        string planCid;
        bytes32 planSha256;
        string purpose;
        bytes32[] targets;
        uint16 rounds;
        uint32 minParticipants;
        uint32 roundDuration;
    }

    /// @notice A stored proposal (its tally is {IMemberVoting.Tally}; the owner recorded for a
    /// target is {useTerms}'s, and all of them are in {ProposalSubmitted}).
    /// @param proposer The submitting member (the "requester" of dataset policies).
    /// @param rounds Planned rounds.
    /// @param minParticipants Fewest commitments for a round to close.
    /// @param roundDuration Blocks a round stays open.
    /// @param targetCount Number of target datasets.
    /// @param purposeHash keccak256 of the purpose string.
    /// @param planSha256 sha256 of the plan document.
    /// @param planCid CID of the plan document.
    /// @param purpose The purpose string.
    /// @param targets Target dataset ids.
    struct Proposal {
        address proposer;
        uint16 rounds;
        uint32 minParticipants;
        uint32 roundDuration;
        uint16 targetCount;
        bytes32 purposeHash;
        bytes32 planSha256;
        string planCid;
        string purpose;
        bytes32[] targets;
    }

    /// @notice What {IRounds} needs to open, close and fail rounds.
    /// @param state The proposal's state.
    /// @param rounds Planned rounds.
    /// @param minParticipants Fewest commitments per round.
    /// @param roundDuration Round length in blocks.
    /// @param targetCount Number of target datasets (a round may close before its deadline only
    /// once this many have committed).
    struct RoundTerms {
        VoteState state;
        uint16 rounds;
        uint32 minParticipants;
        uint32 roundDuration;
        uint16 targetCount;
    }

    /// @notice A proposal was submitted.
    /// @param id Proposal id.
    /// @param proposer The member.
    /// @param planCid CID of the plan.
    /// @param planSha256 sha256 of the plan.
    /// @param purpose Purpose string.
    /// @param purposeHash keccak256 of the purpose.
    /// @param targets Target dataset ids.
    /// @param owners Their owners at submission, in the same order.
    /// @param rounds Planned rounds.
    /// @param minParticipants Fewest commitments per round.
    /// @param roundDuration Round length in blocks.
    /// @param deadline Last voting block.
    /// @param eligible Eligible member count (quorum base).
    event ProposalSubmitted(
        uint256 indexed id,
        address indexed proposer,
        string planCid,
        bytes32 planSha256,
        string purpose,
        bytes32 indexed purposeHash,
        bytes32[] targets,
        address[] owners,
        uint16 rounds,
        uint32 minParticipants,
        uint32 roundDuration,
        uint64 deadline,
        uint32 eligible
    );
    /// @notice A member voted.
    /// @param id Proposal id.
    /// @param voter The member.
    /// @param choice Yes, No or Abstain.
    event Voted(uint256 indexed id, address indexed voter, Choice choice);
    /// @notice A proposal was finalized.
    /// @param id Proposal id.
    /// @param state Approved or Rejected.
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param abstain Abstentions.
    event ProposalFinalized(uint256 indexed id, VoteState state, uint32 yes, uint32 no, uint32 abstain);
    /// @notice The proposer withdrew a proposal before any vote.
    /// @param id Proposal id.
    event ProposalCancelled(uint256 indexed id);

    /// @notice only the proposer may do this
    /// @param id Proposal id.
    /// @param account The caller.
    error ProposalsNotProposer(uint256 id, address account);
    /// @notice votes were already cast; the proposal can no longer be cancelled
    /// @param id Proposal id.
    error ProposalsVotesAlreadyCast(uint256 id);
    /// @notice invalid number of target datasets
    /// @param given Number of targets.
    /// @param max MAX_TARGETS.
    error ProposalsInvalidTargetCount(uint256 given, uint256 max);
    /// @notice duplicate target dataset
    /// @param datasetId The id.
    error ProposalsInvalidTarget(bytes32 datasetId);
    /// @notice the target dataset is not registered, or is revoked
    /// @param datasetId The id.
    error ProposalsUnknownTarget(bytes32 datasetId);
    /// @notice invalid number of rounds
    /// @param rounds The value given.
    error ProposalsInvalidRounds(uint16 rounds);
    /// @notice minimum participants must be at least 1
    error ProposalsInvalidMinParticipants();
    /// @notice round duration must be at least 1 block
    error ProposalsInvalidRoundDuration();
    /// @notice a content identifier (CID) is empty
    error ProposalsEmptyCid();

    /// @notice Number of proposals; ids run from 1 to proposalCount.
    /// @return The count.
    function proposalCount() external view returns (uint256);

    /// @notice Proposal `id` and its tally (all zero if unknown).
    /// @param id Proposal id.
    /// @return p The proposal.
    /// @return tally Its tally (state, creation block, snapshot, counts).
    function proposal(uint256 id) external view returns (Proposal memory p, Tally memory tally);

    /// @notice State, planned rounds, minimum participants and round length of proposal `id`.
    /// @param id Proposal id.
    /// @return The terms (all zero if unknown).
    function roundTerms(uint256 id) external view returns (RoundTerms memory);


    /// @notice Requester, purpose hash, and every target with the owner recorded for it at
    /// submission, in one call ({IRounds-awaitedCommitments} reads them for an early close).
    /// @param id Proposal id.
    /// @return requester The proposer (zero if unknown).
    /// @return purposeHash keccak256 of the purpose.
    /// @return targets Target dataset ids, in submission order (empty if unknown).
    /// @return owners The owner recorded for each target.
    function targetsOf(uint256 id)
        external
        view
        returns (address requester, bytes32 purposeHash, bytes32[] memory targets, address[] memory owners);

    /// @notice Requester, purpose hash, and the owner and row count of target `datasetId` as
    /// recorded at submission, in one call.
    /// @dev Named values rather than a struct: {IRounds} reads them on every commitment and
    /// evaluation, and decoding into a memory struct would cost the caller about 280 gas more.
    /// @param id Proposal id.
    /// @param datasetId Dataset id.
    /// @return requester The proposer (zero if unknown).
    /// @return purposeHash keccak256 of the purpose.
    /// @return owner The owner of `datasetId` recorded at submission (zero if not a target).
    /// @return rowCount Its registered rows (the most samples a commitment on it may claim).
    function useTerms(uint256 id, bytes32 datasetId)
        external
        view
        returns (address requester, bytes32 purposeHash, address owner, uint64 rowCount);

    /// @notice Submit a proposal; voting runs for `votingPeriod` blocks from now.
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the plan CID
    /// is not empty ({ProposalsEmptyCid}); 1..MAX_TARGETS targets ({ProposalsInvalidTargetCount}),
    /// none repeated ({ProposalsInvalidTarget}), each a registered dataset that is not revoked
    /// ({ProposalsUnknownTarget}) - its owner and row count are recorded; rounds in 1..MAX_ROUNDS
    /// ({ProposalsInvalidRounds}); minParticipants >= 1 ({ProposalsInvalidMinParticipants});
    /// roundDuration >= 1 ({ProposalsInvalidRoundDuration}). Emits {ProposalSubmitted}.
    /// @param s The submission.
    /// @return id The new proposal id.
    function submit(Submission calldata s) external returns (uint256 id);

    /// @notice Vote on proposal `id` (members admitted before it was created, once, until the deadline).
    /// @dev Requirements: the proposal exists ({MemberVotingUnknown}) and is Active
    /// ({MemberVotingNotActive}); its deadline has not passed ({MemberVotingClosed}); the choice
    /// is Yes, No or Abstain ({MemberVotingInvalidChoice}); the caller is an active member
    /// ({ConsortiumNotAMember}) admitted before the proposal was submitted
    /// ({MemberVotingNotEligible}) and has not voted on it ({MemberVotingAlreadyVoted}).
    /// Emits {Voted}.
    /// @param id Proposal id.
    /// @param choice Yes, No or Abstain.
    function vote(uint256 id, Choice choice) external;

    /// @notice Finalize proposal `id` after its voting period: Approved or Rejected. Callable by anyone.
    /// @dev Requirements: the proposal exists ({MemberVotingUnknown}) and is Active
    /// ({MemberVotingNotActive}); its deadline has passed ({MemberVotingStillOpen}).
    /// Emits {ProposalFinalized}.
    /// @param id Proposal id.
    /// @return state The resulting state.
    function finalize(uint256 id) external returns (VoteState state);

    /// @notice Withdraw proposal `id`; only its proposer, only while Active and before any vote.
    /// @dev Requirements: the proposal exists ({MemberVotingUnknown}) and is Active
    /// ({MemberVotingNotActive}); the caller is its proposer ({ProposalsNotProposer}); nobody
    /// voted yet ({ProposalsVotesAlreadyCast}). Emits {ProposalCancelled}.
    /// @param id Proposal id.
    function cancel(uint256 id) external;
}
