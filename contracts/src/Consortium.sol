// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {
    NotAMember, NotEligible, AlreadyVoted, VotingClosed, VotingOpen, InvalidName, ZeroAddress
} from "./Errors.sol";
import {VoteMath} from "./VoteMath.sol";

/// @title Consortium
/// @notice The member list of a fedchain hospital consortium, its coordinator role and the
/// motions by which members admit or remove members and change the coordinator.
/// @dev Membership is one-member-one-vote. No function iterates over members: the member
/// count and an admission sequence number are kept as counters, and a motion snapshots both
/// when it is created. A member is eligible to vote on a motion (or a proposal in
/// {Proposals}) when it is active and its admission sequence number is not greater than the
/// snapshot, i.e. it joined before the vote was created. The voting period, quorum and
/// approval threshold are fixed at deploy and shared with {Proposals}.
/// The coordinator is an OpenZeppelin AccessControl role (`COORDINATOR_ROLE`) held by exactly
/// one account at a time; nobody holds the admin role, so the role only moves through a
/// SetCoordinator motion.
contract Consortium is AccessControl {
    /// @notice Role of the account that opens and closes training rounds.
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");
    /// @notice Most founders the constructor accepts.
    uint256 public constant MAX_FOUNDERS = 64;
    /// @notice Longest member name, in bytes.
    uint256 public constant MAX_NAME_BYTES = 64;

    /// @notice What a membership motion does when approved.
    enum MotionKind {
        None,
        Admit,
        Remove,
        SetCoordinator
    }

    /// @notice Life cycle of a motion: Active until finalized as Approved or Rejected.
    enum MotionState {
        None,
        Active,
        Approved,
        Rejected
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
    struct Founder {
        string name;
        address account;
        bytes32 x25519;
    }

    /// @notice Voting rules shared by motions and proposals, fixed at deploy.
    /// @param votingPeriod Blocks during which votes are accepted.
    /// @param quorumBps Minimum turnout in basis points of eligible members.
    /// @param approvalBps Minimum yes share of yes+no in basis points.
    struct VotingRules {
        uint64 votingPeriod;
        uint16 quorumBps;
        uint16 approvalBps;
    }

    /// @notice A membership motion.
    /// @param kind What the motion does.
    /// @param state Its life-cycle state.
    /// @param proposer The member that proposed it.
    /// @param deadline Last block in which votes are accepted.
    /// @param target The account admitted, removed or made coordinator.
    /// @param memberSeq Admission sequence number at creation (eligibility cut-off).
    /// @param eligible Active member count at creation (quorum base).
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param createdAt Block of creation.
    /// @param x25519 Key of the member to admit (Admit only).
    /// @param name Name of the member to admit (Admit only).
    struct Motion {
        MotionKind kind;
        MotionState state;
        address proposer;
        uint64 deadline;
        address target;
        uint32 memberSeq;
        uint32 eligible;
        uint32 yes;
        uint32 no;
        uint64 createdAt;
        bytes32 x25519;
        string name;
    }

    /// @notice Voting period of motions and proposals, in blocks.
    uint64 public immutable votingPeriod;
    /// @notice Quorum of motions and proposals, in basis points of eligible members.
    uint16 public immutable quorumBps;
    /// @notice Approval threshold of motions and proposals, in basis points of yes+no.
    uint16 public immutable approvalBps;

    /// @notice Number of active members.
    uint32 public memberCount;
    /// @notice Number of admissions so far (the last admission's sequence number).
    uint32 public memberSeq;
    /// @notice The account currently holding COORDINATOR_ROLE.
    address public coordinator;
    /// @notice Number of motions created; motion ids run from 1 to motionCount.
    uint256 public motionCount;

    mapping(address account => Member) private _members;
    mapping(uint256 id => Motion) private _motions;
    mapping(uint256 id => mapping(address voter => uint8 vote)) private _motionVotes;

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
    /// @param eligible Member count it was created with (quorum base).
    event MotionProposed(
        uint256 indexed id,
        address indexed proposer,
        MotionKind kind,
        address indexed target,
        string name,
        bytes32 x25519,
        uint64 deadline,
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
    event MotionFinalized(uint256 indexed id, MotionState state, uint32 yes, uint32 no);

    /// @notice The founder list is empty or longer than MAX_FOUNDERS.
    /// @param given Number of founders passed.
    /// @param max MAX_FOUNDERS.
    error InvalidFounderCount(uint256 given, uint256 max);
    /// @notice Voting period is zero, quorum above 10000 bps, or approval not in 1..10000 bps.
    error InvalidVotingParameters();
    /// @notice An X25519 public key argument was zero.
    error InvalidX25519Key();
    /// @notice `account` is already an active member.
    /// @param account The account.
    error AlreadyMember(address account);
    /// @notice `account` is already the coordinator.
    /// @param account The account.
    error AlreadyCoordinator(address account);
    /// @notice The last member cannot be removed.
    error LastMember();
    /// @notice The motion kind is not Admit, Remove or SetCoordinator.
    error InvalidMotionKind();
    /// @notice No motion with this id exists.
    /// @param id The id.
    error UnknownMotion(uint256 id);
    /// @notice The motion is not Active (already finalized).
    /// @param id Motion id.
    /// @param state Its state.
    error MotionNotActive(uint256 id, MotionState state);
    /// @notice Roles are only changed by motions; grantRole, revokeRole and renounceRole are disabled.
    error RoleManagedByMotions();

    /// @notice Create the consortium with its founders and first coordinator.
    /// @param founders Founding members (1..MAX_FOUNDERS, distinct accounts).
    /// @param initialCoordinator Account given COORDINATOR_ROLE.
    /// @param rules Voting period (blocks, > 0), quorum (0..10000 bps) and approval (1..10000 bps).
    constructor(Founder[] memory founders, address initialCoordinator, VotingRules memory rules) {
        if (founders.length == 0 || founders.length > MAX_FOUNDERS) {
            revert InvalidFounderCount(founders.length, MAX_FOUNDERS);
        }
        if (
            rules.votingPeriod == 0 || rules.quorumBps > VoteMath.BPS || rules.approvalBps == 0
                || rules.approvalBps > VoteMath.BPS
        ) {
            revert InvalidVotingParameters();
        }
        if (initialCoordinator == address(0)) revert ZeroAddress();
        votingPeriod = rules.votingPeriod;
        quorumBps = rules.quorumBps;
        approvalBps = rules.approvalBps;
        for (uint256 i = 0; i < founders.length; ++i) {
            Founder memory f = founders[i];
            if (f.account == address(0)) revert ZeroAddress();
            if (_members[f.account].active) revert AlreadyMember(f.account);
            _checkName(f.name);
            if (f.x25519 == bytes32(0)) revert InvalidX25519Key();
            _admit(f.account, f.name, f.x25519);
        }
        coordinator = initialCoordinator;
        _grantRole(COORDINATOR_ROLE, initialCoordinator);
        emit CoordinatorChanged(address(0), initialCoordinator);
    }

    // ------------------------------------------------------------------ views

    /// @notice Whether `account` is an active member.
    /// @param account The account.
    /// @return True if active.
    function isMember(address account) external view returns (bool) {
        return _members[account].active;
    }

    /// @notice The member record of `account` (all zero if it never was a member).
    /// @param account The account.
    /// @return The record.
    function member(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @notice Voting eligibility data of `account`, used by {Proposals}.
    /// @param account The account.
    /// @return active Whether it is an active member.
    /// @return seq Its admission sequence number (compare with a vote's snapshot).
    function eligibility(address account) external view returns (bool active, uint32 seq) {
        Member storage m = _members[account];
        return (m.active, m.seq);
    }

    /// @notice The motion `id`.
    /// @param id Motion id.
    /// @return The motion (all zero if unknown).
    function motion(uint256 id) external view returns (Motion memory) {
        return _motions[id];
    }

    /// @notice How `voter` voted on motion `id`.
    /// @param id Motion id.
    /// @param voter The member.
    /// @return 0 = not voted, 1 = yes, 2 = no.
    function motionVoteOf(uint256 id, address voter) external view returns (uint8) {
        return _motionVotes[id][voter];
    }

    /// @notice The shared voting parameters.
    /// @return period Voting period in blocks.
    /// @return quorum Quorum in basis points.
    /// @return approval Approval threshold in basis points.
    function votingParams() external view returns (uint64 period, uint16 quorum, uint16 approval) {
        return (votingPeriod, quorumBps, approvalBps);
    }

    // ------------------------------------------------------------ member acts

    /// @notice Replace the caller's X25519 public key.
    /// @param x25519 The new key (non-zero).
    function setX25519Key(bytes32 x25519) external {
        Member storage m = _members[msg.sender];
        if (!m.active) revert NotAMember(msg.sender);
        if (x25519 == bytes32(0)) revert InvalidX25519Key();
        m.x25519 = x25519;
        emit X25519KeyUpdated(msg.sender, x25519);
    }

    /// @notice Propose a membership motion; voting runs for `votingPeriod` blocks.
    /// @param kind Admit, Remove or SetCoordinator.
    /// @param target Account to admit, remove or make coordinator.
    /// @param name Name of the new member (Admit; ignored otherwise).
    /// @param x25519 X25519 key of the new member (Admit; ignored otherwise).
    /// @return id The new motion's id.
    function proposeMotion(MotionKind kind, address target, string calldata name, bytes32 x25519)
        external
        returns (uint256 id)
    {
        if (!_members[msg.sender].active) revert NotAMember(msg.sender);
        if (target == address(0)) revert ZeroAddress();
        if (kind == MotionKind.Admit) {
            if (_members[target].active) revert AlreadyMember(target);
            _checkName(name);
            if (x25519 == bytes32(0)) revert InvalidX25519Key();
        } else if (kind == MotionKind.Remove) {
            if (!_members[target].active) revert NotAMember(target);
        } else if (kind == MotionKind.SetCoordinator) {
            if (target == coordinator) revert AlreadyCoordinator(target);
        } else {
            revert InvalidMotionKind();
        }
        id = ++motionCount;
        uint64 deadline = uint64(block.number) + votingPeriod;
        Motion storage m = _motions[id];
        m.kind = kind;
        m.state = MotionState.Active;
        m.proposer = msg.sender;
        m.deadline = deadline;
        m.target = target;
        m.memberSeq = memberSeq;
        m.eligible = memberCount;
        m.createdAt = uint64(block.number);
        if (kind == MotionKind.Admit) {
            m.x25519 = x25519;
            m.name = name;
        }
        _emitProposed(id, m);
    }

    /// @notice Vote yes or no on motion `id` (members admitted before it was created, once).
    /// @param id Motion id.
    /// @param support True for yes.
    function voteMotion(uint256 id, bool support) external {
        Motion storage m = _activeMotion(id);
        if (block.number > m.deadline) revert VotingClosed(id, m.deadline);
        Member storage voter = _members[msg.sender];
        if (!voter.active) revert NotAMember(msg.sender);
        if (voter.seq > m.memberSeq) revert NotEligible(msg.sender, id);
        if (_motionVotes[id][msg.sender] != 0) revert AlreadyVoted(msg.sender, id);
        _motionVotes[id][msg.sender] = support ? 1 : 2;
        if (support) ++m.yes;
        else ++m.no;
        emit MotionVoted(id, msg.sender, support);
    }

    /// @notice Finalize motion `id` after its voting period and, if approved, apply it.
    /// @dev Callable by anyone. Reverts (leaving the motion Active) if an approved motion can
    /// no longer be applied, e.g. its Admit target became a member through another motion.
    /// @param id Motion id.
    /// @return state Approved or Rejected.
    function finalizeMotion(uint256 id) external returns (MotionState state) {
        Motion storage m = _activeMotion(id);
        if (block.number <= m.deadline) revert VotingOpen(id, m.deadline);
        bool passed = VoteMath.passes(m.yes, m.no, 0, m.eligible, quorumBps, approvalBps);
        state = passed ? MotionState.Approved : MotionState.Rejected;
        m.state = state;
        emit MotionFinalized(id, state, m.yes, m.no);
        if (!passed) return state;
        address target = m.target;
        if (m.kind == MotionKind.Admit) {
            if (_members[target].active) revert AlreadyMember(target);
            _admit(target, m.name, m.x25519);
        } else if (m.kind == MotionKind.Remove) {
            if (!_members[target].active) revert NotAMember(target);
            if (memberCount == 1) revert LastMember();
            _members[target].active = false;
            --memberCount;
            emit MemberRemoved(target);
        } else {
            address previous = coordinator;
            if (target == previous) revert AlreadyCoordinator(target);
            _revokeRole(COORDINATOR_ROLE, previous);
            _grantRole(COORDINATOR_ROLE, target);
            coordinator = target;
            emit CoordinatorChanged(previous, target);
        }
    }

    // ---------------------------------------------- AccessControl lock-down

    /// @notice Disabled: roles change only through SetCoordinator motions.
    function grantRole(bytes32, address) public pure override {
        revert RoleManagedByMotions();
    }

    /// @notice Disabled: roles change only through SetCoordinator motions.
    function revokeRole(bytes32, address) public pure override {
        revert RoleManagedByMotions();
    }

    /// @notice Disabled: roles change only through SetCoordinator motions.
    function renounceRole(bytes32, address) public pure override {
        revert RoleManagedByMotions();
    }

    // --------------------------------------------------------------- internal

    function _admit(address account, string memory name, bytes32 x25519) private {
        uint32 seq = ++memberSeq;
        ++memberCount;
        Member storage m = _members[account];
        m.name = name;
        m.x25519 = x25519;
        m.joinedAt = uint64(block.number);
        m.seq = seq;
        m.active = true;
        emit MemberAdmitted(account, name, x25519, seq);
    }

    function _emitProposed(uint256 id, Motion storage m) private {
        emit MotionProposed(id, m.proposer, m.kind, m.target, m.name, m.x25519, m.deadline, m.eligible);
    }

    function _activeMotion(uint256 id) private view returns (Motion storage m) {
        m = _motions[id];
        if (m.state == MotionState.None) revert UnknownMotion(id);
        if (m.state != MotionState.Active) revert MotionNotActive(id, m.state);
    }

    function _checkName(string memory name) private pure {
        uint256 len = bytes(name).length;
        if (len == 0 || len > MAX_NAME_BYTES) revert InvalidName();
    }
}
