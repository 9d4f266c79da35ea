// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IMemberVoting} from "./IMemberVoting.sol";

/// @title IConsortium
/// @notice The member list of a fedchain consortium, its coordinator, and the membership
/// motions by which members admit or remove members and change the coordinator.
/// @dev Membership and the coordinator are the consortium's rules, so their errors
/// ({ConsortiumNotAMember}, {ConsortiumNotCoordinator}) are declared here and raised by every
/// contract that enforces them.
interface IConsortium is IMemberVoting {
    /// @notice What a membership motion does when approved.
    enum MotionKind {
        None,
        Admit,
        Remove,
        SetCoordinator
    }

    /// @notice A member record.
    /// @param name Human-readable name of the member (e.g. the hospital).
    /// @param x25519 The member's X25519 public key, used to encrypt to it off chain.
    /// @param joinedAt Block in which the member was admitted.
    /// @param seq Admission sequence number (1 for the first founder; never reused).
    /// @param active False once removed.
    struct Member {
        string name;
        bytes32 x25519;
        uint64 joinedAt;
        uint32 seq;
        bool active;
    }

    /// @notice A founding member passed to the constructor.
    /// @param name Its name (1..MAX_NAME_BYTES bytes).
    /// @param account Its address.
    /// @param x25519 Its X25519 public key (non-zero).
    struct Founder {
        string name;
        address account;
        bytes32 x25519;
    }

    /// @notice A voter's eligibility: whether it is active and when it was admitted.
    /// @param active Whether the account is an active member.
    /// @param seq Its admission sequence number (compare with a vote's snapshot).
    struct Eligibility {
        bool active;
        uint32 seq;
    }

    /// @notice What a vote snapshots at creation.
    /// @param memberSeq Admission sequence number of the last admission.
    /// @param memberCount Number of active members.
    struct MemberSnapshot {
        uint32 memberSeq;
        uint32 memberCount;
    }

    /// @notice A membership motion (its tally is {IMemberVoting.Tally}).
    /// @param kind What the motion does.
    /// @param target The account admitted, removed or made coordinator.
    /// @param proposer The member that proposed it.
    /// @param x25519 Key of the member to admit (Admit only).
    /// @param name Name of the member to admit (Admit only).
    struct Motion {
        MotionKind kind;
        address target;
        address proposer;
        bytes32 x25519;
        string name;
    }

    /// @notice `account` became a member (at deploy as a founder, or by an Admit motion).
    /// @param account The new member.
    /// @param name Its name.
    /// @param x25519 Its X25519 public key.
    /// @param seq Its admission sequence number.
    event MemberAdmitted(address indexed account, string name, bytes32 x25519, uint32 seq);
    /// @notice `account` was removed by a Remove motion.
    /// @param account The former member.
    event MemberRemoved(address indexed account);
    /// @notice A member replaced its X25519 public key.
    /// @param account The member.
    /// @param x25519 The new key.
    event X25519KeyUpdated(address indexed account, bytes32 x25519);
    /// @notice The coordinator changed (at deploy `previous` is the zero address).
    /// @param previous The former coordinator.
    /// @param current The new coordinator.
    event CoordinatorChanged(address indexed previous, address indexed current);
    /// @notice A motion was proposed.
    /// @param id Motion id.
    /// @param proposer The proposing member.
    /// @param kind What it does.
    /// @param target The account it concerns.
    /// @param name Name to admit under (Admit only).
    /// @param x25519 Key to admit with (Admit only).
    /// @param deadline Last voting block.
    /// @param expiry Last block in which it may be finalized (and so applied).
    /// @param eligible Member count it was created with (quorum base).
    event MotionProposed(
        uint256 indexed id,
        address indexed proposer,
        MotionKind kind,
        address indexed target,
        string name,
        bytes32 x25519,
        uint64 deadline,
        uint64 expiry,
        uint32 eligible
    );
    /// @notice A member voted on a motion.
    /// @param id Motion id.
    /// @param voter The member.
    /// @param support True for yes.
    event MotionVoted(uint256 indexed id, address indexed voter, bool support);
    /// @notice A motion was finalized (its effect, if approved, is emitted as its own event).
    /// @param id Motion id.
    /// @param state Approved or Rejected.
    /// @param yes Yes votes.
    /// @param no No votes.
    event MotionFinalized(uint256 indexed id, VoteState state, uint32 yes, uint32 no);

    /// @notice not a member
    /// @param account The offending address.
    error ConsortiumNotAMember(address account);
    /// @notice only the coordinator may do this
    /// @param account The caller.
    error ConsortiumNotCoordinator(address account);
    /// @notice invalid number of founding members
    /// @param given Number of founders passed.
    /// @param max MAX_FOUNDERS.
    error ConsortiumInvalidFounderCount(uint256 given, uint256 max);
    /// @notice the X25519 public key is empty
    error ConsortiumInvalidX25519Key();
    /// @notice name is empty or too long
    error ConsortiumInvalidName();
    /// @notice the zero address is not allowed
    error ConsortiumZeroAddress();
    /// @notice already a member
    /// @param account The account.
    error ConsortiumAlreadyMember(address account);
    /// @notice already the coordinator
    /// @param account The account.
    error ConsortiumAlreadyCoordinator(address account);
    /// @notice the last member cannot be removed
    error ConsortiumLastMember();
    /// @notice invalid motion kind
    error ConsortiumInvalidMotionKind();
    /// @notice a motion of this kind on this account is already pending
    /// @param pending The pending motion's id.
    error ConsortiumDuplicateMotion(uint256 pending);

    /// @notice Whether `account` is an active member.
    /// @param account The account.
    /// @return True if active.
    function isMember(address account) external view returns (bool);

    /// @notice The member record of `account` (all zero if it never was a member).
    /// @param account The account.
    /// @return The record.
    function member(address account) external view returns (Member memory);

    /// @notice Whether `account` is active and its admission sequence number (for votes in {Proposals}).
    /// @param account The account.
    /// @return The eligibility data.
    function eligibility(address account) external view returns (Eligibility memory);

    /// @notice The admission sequence number and active member count now (a vote's snapshot).
    /// @return The snapshot.
    function memberSnapshot() external view returns (MemberSnapshot memory);

    /// @notice Number of active members.
    /// @return The count.
    function memberCount() external view returns (uint32);

    /// @notice The account that opens and closes training rounds in {Rounds}.
    /// @return The coordinator.
    function coordinator() external view returns (address);

    /// @notice Number of motions created; motion ids run from 1 to motionCount.
    /// @return The count.
    function motionCount() external view returns (uint256);

    /// @notice Motion `id` and its tally (all zero if unknown).
    /// @param id Motion id.
    /// @return m The motion.
    /// @return tally Its tally (state, creation block, snapshot, counts).
    function motion(uint256 id) external view returns (Motion memory m, Tally memory tally);

    /// @notice Replace the caller's X25519 public key.
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the key is
    /// non-zero ({ConsortiumInvalidX25519Key}). Emits {X25519KeyUpdated}.
    /// @param x25519 The new key.
    function setX25519Key(bytes32 x25519) external;

    /// @notice Propose a membership motion; voting runs for `votingPeriod` blocks, and an
    /// approved motion must be finalized (applied) within `votingPeriod` blocks after that (at
    /// least MIN_APPLY_WINDOW).
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); `target` is
    /// not zero ({ConsortiumZeroAddress}). Admit: `target` is not a member
    /// ({ConsortiumAlreadyMember}), `name` is 1..MAX_NAME_BYTES bytes ({ConsortiumInvalidName}),
    /// `x25519` is non-zero ({ConsortiumInvalidX25519Key}). Remove: `target` is a member
    /// ({ConsortiumNotAMember}). SetCoordinator: `target` is not the coordinator
    /// ({ConsortiumAlreadyCoordinator}). Any other kind: {ConsortiumInvalidMotionKind}. No
    /// motion of the same kind on the same target is pending, i.e. Active and not expired
    /// ({ConsortiumDuplicateMotion}). Emits {MotionProposed}.
    /// @param kind Admit, Remove or SetCoordinator.
    /// @param target Account to admit, remove or make coordinator.
    /// @param name Name of the new member (Admit; ignored otherwise).
    /// @param x25519 X25519 key of the new member (Admit; ignored otherwise).
    /// @return id The new motion's id.
    function proposeMotion(MotionKind kind, address target, string calldata name, bytes32 x25519)
        external
        returns (uint256 id);

    /// @notice Vote yes or no on motion `id` (members admitted before it was created, once).
    /// @dev Requirements: the motion exists ({MemberVotingUnknown}) and is Active
    /// ({MemberVotingNotActive}); its deadline has not passed ({MemberVotingClosed}); the caller
    /// is an active member ({ConsortiumNotAMember}) admitted before the motion was created
    /// ({MemberVotingNotEligible}) and has not voted on it ({MemberVotingAlreadyVoted}).
    /// Emits {MotionVoted}.
    /// @param id Motion id.
    /// @param support True for yes.
    function voteMotion(uint256 id, bool support) external;

    /// @notice Finalize motion `id` after its voting period and, if approved, apply it; at the
    /// latest `votingPeriod` blocks (at least MIN_APPLY_WINDOW) after the voting deadline (the
    /// motion's expiry), so an approved motion cannot be held back and applied when
    /// circumstances have changed.
    /// @dev Callable by anyone. Requirements: the motion exists ({MemberVotingUnknown}) and is
    /// Active ({MemberVotingNotActive}); its deadline has passed ({MemberVotingStillOpen}) and
    /// its expiry has not ({MemberVotingExpired}; {stateOf} then reports it Expired). An
    /// approved motion that can no longer be applied reverts, leaving it Active until it
    /// expires: Admit of a member ({ConsortiumAlreadyMember}), Remove of a non-member
    /// ({ConsortiumNotAMember}) or of the last member ({ConsortiumLastMember}), SetCoordinator
    /// of the coordinator ({ConsortiumAlreadyCoordinator}). Emits {MotionFinalized} and, when
    /// approved, {MemberAdmitted}, {MemberRemoved} or {CoordinatorChanged}.
    /// @param id Motion id.
    /// @return state Approved or Rejected.
    function finalizeMotion(uint256 id) external returns (VoteState state);
}
