// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IMemberVoting
/// @notice One-member-one-vote ballots as {Consortium} (membership motions) and {Proposals}
/// (training proposals) run them: who may vote is fixed when a vote is created, members cast
/// one vote each until the deadline, and anyone finalizes it afterwards.
/// @dev The errors below are raised by the shared base {MemberVoting} for both kinds of vote;
/// the vote id they carry is a motion id in {Consortium} and a proposal id in {Proposals}.
interface IMemberVoting {
    /// @notice Life cycle of a vote: Active until finalized (Approved or Rejected) or Cancelled.
    /// Expired is never stored: {stateOf} reports an Active vote whose finalization window
    /// has closed (motions only, see {IConsortium}) as Expired, and it can no
    /// longer be finalized.
    enum VoteState {
        None,
        Active,
        Approved,
        Rejected,
        Cancelled,
        Expired
    }

    /// @notice A vote choice (motions accept Yes and No only).
    enum Choice {
        None,
        Yes,
        No,
        Abstain
    }

    /// @notice Voting rules, fixed at deploy.
    /// @param votingPeriod Blocks after creation during which votes are accepted (1..2^32-1).
    /// @param quorumBps Minimum turnout (yes + no + abstain) in basis points of eligible members.
    /// @param approvalBps Minimum yes share of yes + no in basis points (1..10000).
    struct VotingRules {
        uint64 votingPeriod;
        uint16 quorumBps;
        uint16 approvalBps;
    }

    /// @notice Everything about one vote that the voting rules read, in one storage slot.
    /// @param state Life-cycle state.
    /// @param createdAt Block of creation; votes are accepted up to createdAt + votingPeriod.
    /// @param memberSeq Admission sequence number at creation: members admitted later may not vote.
    /// @param eligible Active member count at creation (the quorum base).
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param abstain Abstentions (count toward the quorum only).
    struct Tally {
        VoteState state;
        uint64 createdAt;
        uint32 memberSeq;
        uint32 eligible;
        uint32 yes;
        uint32 no;
        uint32 abstain;
    }

    /// @notice no such proposal or motion
    /// @param id The vote id asked for.
    error MemberVotingUnknown(uint256 id);
    /// @notice the vote is already finalized or cancelled
    /// @param id The vote id.
    /// @param state Its state.
    error MemberVotingNotActive(uint256 id, VoteState state);
    /// @notice the voting period is over
    /// @param id The vote id.
    /// @param deadline Last block in which a vote was accepted.
    error MemberVotingClosed(uint256 id, uint64 deadline);
    /// @notice the voting period is still running
    /// @param id The vote id.
    /// @param deadline Last block of the voting period.
    error MemberVotingStillOpen(uint256 id, uint64 deadline);
    /// @notice member joined after the vote was created and may not vote on it
    /// @param account The member that joined too late.
    /// @param id The vote id.
    error MemberVotingNotEligible(address account, uint256 id);
    /// @notice already voted
    /// @param account The voter.
    /// @param id The vote id.
    error MemberVotingAlreadyVoted(address account, uint256 id);
    /// @notice the vote was not finalized in time and can no longer be applied
    /// @param id The vote id.
    /// @param expiry Last block in which it could have been finalized.
    error MemberVotingExpired(uint256 id, uint64 expiry);
    /// @notice invalid vote choice
    error MemberVotingInvalidChoice();
    /// @notice invalid voting parameters (period 1..2^32-1 blocks, quorum <= 10000 bps, approval 1..10000 bps)
    error MemberVotingInvalidRules();

    /// @notice The voting rules (fixed at deploy).
    /// @return The period in blocks, quorum and approval threshold in basis points.
    function votingRules() external view returns (VotingRules memory);

    /// @notice Life-cycle state of vote `id` (None if unknown; Expired for an Active vote past
    /// its finalization window).
    /// @param id The vote id.
    /// @return The state.
    function stateOf(uint256 id) external view returns (VoteState);

    /// @notice How `voter` voted on vote `id` (None if it did not).
    /// @param id The vote id.
    /// @param voter The member.
    /// @return The choice.
    function ballotOf(uint256 id, address voter) external view returns (Choice);
}
