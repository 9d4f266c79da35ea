// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {MemberVoting} from "./MemberVoting.sol";

/// @title Consortium
/// @notice The member list of a fedchain hospital consortium, its coordinator and the
/// motions by which members admit or remove members and change the coordinator.
/// @dev Membership is one-member-one-vote. No function iterates over members: the member
/// count and an admission sequence number are kept as counters, and a vote snapshots both
/// when it is created ({MemberVoting}). The voting rules are fixed at deploy and read by
/// {Proposals}. The coordinator is one address, changed only by an approved SetCoordinator
/// motion; the other contracts compare callers with {coordinator}. A motion is pending while
/// it is Active and not expired; a second motion of the same kind on the same account is
/// refused while one is pending, and an approved motion not applied within one voting period
/// after its vote expires.
contract Consortium is IConsortium, MemberVoting {
    /// @notice Most founders the constructor accepts.
    uint256 public constant MAX_FOUNDERS = 128;
    /// @notice Longest member name, in bytes.
    uint256 public constant MAX_NAME_BYTES = 64;
    /// @notice Fewest blocks after its vote ends in which an approved motion may be applied (the
    /// window is the voting period, but never shorter than this).
    uint64 public constant MIN_APPLY_WINDOW = 64;

    /// @inheritdoc IConsortium
    uint32 public memberCount;
    /// @notice Number of admissions so far (the last admission's sequence number).
    uint32 public memberSeq;
    /// @inheritdoc IConsortium
    address public coordinator;
    /// @inheritdoc IConsortium
    uint256 public motionCount;

    mapping(address account => Member) private _members;
    mapping(uint256 id => Motion) private _motions;
    /// @dev (kind << 160 | target) => the last motion of that kind on that target.
    mapping(uint256 key => uint256 id) private _lastMotion;

    /// @dev Only active members; reverts with {ConsortiumNotAMember}.
    modifier onlyMember() {
        if (!_members[msg.sender].active) revert ConsortiumNotAMember(msg.sender);
        _;
    }

    /// @notice Create the consortium with its founders and first coordinator.
    /// @dev Requirements: the rules are valid ({MemberVotingInvalidRules}); 1..MAX_FOUNDERS
    /// founders ({ConsortiumInvalidFounderCount}), each with a non-zero, distinct account
    /// ({ConsortiumZeroAddress}, {ConsortiumAlreadyMember}), a name of 1..MAX_NAME_BYTES bytes
    /// ({ConsortiumInvalidName}) and a non-zero key ({ConsortiumInvalidX25519Key}); a non-zero
    /// coordinator ({ConsortiumZeroAddress}). Emits {MemberAdmitted} per founder and
    /// {CoordinatorChanged}.
    /// @param founders Founding members.
    /// @param initialCoordinator The first coordinator.
    /// @param rules Voting period (blocks), quorum and approval threshold (basis points).
    constructor(Founder[] memory founders, address initialCoordinator, VotingRules memory rules)
        MemberVoting(rules)
    {
        if (founders.length == 0 || founders.length > MAX_FOUNDERS) {
            revert ConsortiumInvalidFounderCount(founders.length, MAX_FOUNDERS);
        }
        if (initialCoordinator == address(0)) revert ConsortiumZeroAddress();
        for (uint256 i = 0; i < founders.length; ++i) {
            Founder memory f = founders[i];
            if (f.account == address(0)) revert ConsortiumZeroAddress();
            if (_members[f.account].active) revert ConsortiumAlreadyMember(f.account);
            _checkName(f.name);
            if (f.x25519 == bytes32(0)) revert ConsortiumInvalidX25519Key();
            _admit(f.account, f.name, f.x25519);
        }
        coordinator = initialCoordinator;
        emit CoordinatorChanged(address(0), initialCoordinator);
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IConsortium
    function isMember(address account) external view returns (bool) {
        return _members[account].active;
    }

    /// @inheritdoc IConsortium
    function member(address account) external view returns (Member memory) {
        return _members[account];
    }

    /// @inheritdoc IConsortium
    function eligibility(address account) external view returns (Eligibility memory) {
        Member storage m = _members[account];
        return Eligibility(m.active, m.seq);
    }

    /// @inheritdoc IConsortium
    function memberSnapshot() external view returns (MemberSnapshot memory) {
        return MemberSnapshot(memberSeq, memberCount);
    }

    /// @inheritdoc IConsortium
    function motion(uint256 id) external view returns (Motion memory m, Tally memory tally) {
        return (_motions[id], _tallies[id]);
    }

    // ------------------------------------------------------------ member acts

    /// @inheritdoc IConsortium
    function setX25519Key(bytes32 x25519) external onlyMember {
        if (x25519 == bytes32(0)) revert ConsortiumInvalidX25519Key();
        _members[msg.sender].x25519 = x25519;
        emit X25519KeyUpdated(msg.sender, x25519);
    }

    /// @inheritdoc IConsortium
    function proposeMotion(MotionKind kind, address target, string calldata name, bytes32 x25519)
        external
        onlyMember
        returns (uint256 id)
    {
        if (target == address(0)) revert ConsortiumZeroAddress();
        if (kind == MotionKind.Admit) {
            if (_members[target].active) revert ConsortiumAlreadyMember(target);
            _checkName(name);
            if (x25519 == bytes32(0)) revert ConsortiumInvalidX25519Key();
        } else if (kind == MotionKind.Remove) {
            if (!_members[target].active) revert ConsortiumNotAMember(target);
        } else if (kind == MotionKind.SetCoordinator) {
            if (target == coordinator) revert ConsortiumAlreadyCoordinator(target);
        } else {
            revert ConsortiumInvalidMotionKind();
        }
        uint256 key = (uint256(kind) << 160) | uint160(target);
        uint256 previous = _lastMotion[key];
        if (previous != 0) {
            Tally storage p = _tallies[previous];
            if (p.state == VoteState.Active && block.number <= _expiry(p)) revert ConsortiumDuplicateMotion(previous);
        }
        id = ++motionCount;
        _lastMotion[key] = id;
        (Tally storage t, uint64 deadline) = _openVote(id);
        Motion storage m = _motions[id];
        m.kind = kind;
        m.target = target;
        m.proposer = msg.sender;
        uint64 expiry = deadline + _applyWindow();
        if (kind == MotionKind.Admit) {
            m.x25519 = x25519;
            m.name = name;
            emit MotionProposed(id, msg.sender, kind, target, name, x25519, deadline, expiry, t.eligible);
        } else {
            emit MotionProposed(id, msg.sender, kind, target, "", bytes32(0), deadline, expiry, t.eligible);
        }
    }

    /// @inheritdoc IConsortium
    function voteMotion(uint256 id, bool support) external {
        _castVote(id, msg.sender, support ? Choice.Yes : Choice.No);
        emit MotionVoted(id, msg.sender, support);
    }

    /// @inheritdoc IConsortium
    function finalizeMotion(uint256 id) external returns (VoteState state) {
        Tally storage t;
        (t, state) = _finalizeVote(id);
        emit MotionFinalized(id, state, t.yes, t.no);
        if (state != VoteState.Approved) return state;
        Motion storage m = _motions[id];
        address target = m.target;
        MotionKind kind = m.kind;
        if (kind == MotionKind.Admit) {
            if (_members[target].active) revert ConsortiumAlreadyMember(target);
            _admit(target, m.name, m.x25519);
        } else if (kind == MotionKind.Remove) {
            if (!_members[target].active) revert ConsortiumNotAMember(target);
            if (memberCount == 1) revert ConsortiumLastMember();
            _members[target].active = false;
            --memberCount;
            emit MemberRemoved(target);
        } else {
            address previous = coordinator;
            if (target == previous) revert ConsortiumAlreadyCoordinator(target);
            coordinator = target;
            emit CoordinatorChanged(previous, target);
        }
    }

    // ------------------------------------------------------------------ hooks

    function _eligibilitySnapshot() internal view override returns (uint32, uint32) {
        return (memberSeq, memberCount);
    }

    /// @dev Reverts with {ConsortiumNotAMember} unless `voter` is active.
    function _voterSeq(address voter) internal view override returns (uint32) {
        Member storage m = _members[voter];
        if (!m.active) revert ConsortiumNotAMember(voter);
        return m.seq;
    }

    /// @dev An approved motion must be applied within one voting period (at least
    /// MIN_APPLY_WINDOW blocks) after its vote ends: a motion held back and finalized later (say,
    /// a SetCoordinator that passed beside a competing one) would apply a decision taken under
    /// different circumstances.
    function _expiry(Tally storage t) internal view override returns (uint64) {
        return _deadline(t) + _applyWindow();
    }

    function _applyWindow() private view returns (uint64) {
        return _votingPeriod > MIN_APPLY_WINDOW ? _votingPeriod : MIN_APPLY_WINDOW;
    }

    /// @dev Motions take Yes or No only.
    function _validChoice(Choice choice) internal pure override returns (bool) {
        return choice == Choice.Yes || choice == Choice.No;
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

    function _checkName(string memory name) private pure {
        uint256 len = bytes(name).length;
        if (len == 0 || len > MAX_NAME_BYTES) revert ConsortiumInvalidName();
    }
}
