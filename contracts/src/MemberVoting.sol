// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IMemberVoting} from "./IMemberVoting.sol";

/// @title MemberVoting
/// @notice The vote mechanics {Consortium} motions and {Proposals} share: a snapshot of who
/// may vote at creation, casting, and finalizing.
/// @dev A derived contract calls {_openVote} when it creates a vote, {_castVote} from its
/// vote function, {_finalizeVote} / {_cancelVote} from its finalize / cancel functions, and
/// emits its own events. It supplies the eligibility data through two hooks:
/// {_eligibilitySnapshot} (admission sequence number and active member count now) and
/// {_voterSeq} (a voter's admission sequence number, reverting if it is not an active member).
/// The rules themselves are overridable hooks in the manner of OpenZeppelin Governor's
/// `_countVote` / `_quorumReached` / `_voteSucceeded`: {_validChoice}, {_countVote},
/// {_quorumReached}, {_voteSucceeded}, {_deadline} and {_expiry} (the last block a vote may be
/// finalized in; none by default, the consortium's motions override it). A vote passes when
///   (yes + no + abstain) * 10000 >= eligible * quorumBps   and
///   yes + no > 0   and   yes * 10000 >= (yes + no) * approvalBps.
/// Each vote's {IMemberVoting.Tally} fits one storage slot, so a vote reads and writes one
/// slot of tally plus the voter's ballot. No function loops over members.
abstract contract MemberVoting is IMemberVoting {
    /// @dev Basis points in one whole (100%).
    uint256 internal constant BPS = 10_000;

    uint64 internal immutable _votingPeriod;
    uint16 private immutable _quorumBps;
    uint16 private immutable _approvalBps;

    mapping(uint256 id => Tally) internal _tallies;
    mapping(uint256 id => mapping(address voter => Choice)) private _ballots;

    /// @dev Reverts with {MemberVotingInvalidRules} unless period in 1..2^32-1 blocks, quorum <=
    /// 10000 bps and approval in 1..10000 bps.
    constructor(VotingRules memory rules) {
        if (
            rules.votingPeriod == 0 || rules.votingPeriod > type(uint32).max || rules.quorumBps > BPS
                || rules.approvalBps == 0 || rules.approvalBps > BPS
        ) {
            revert MemberVotingInvalidRules();
        }
        _votingPeriod = rules.votingPeriod;
        _quorumBps = rules.quorumBps;
        _approvalBps = rules.approvalBps;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IMemberVoting
    function votingRules() public view returns (VotingRules memory) {
        return VotingRules(_votingPeriod, _quorumBps, _approvalBps);
    }

    /// @inheritdoc IMemberVoting
    function stateOf(uint256 id) external view returns (VoteState) {
        Tally storage t = _tallies[id];
        VoteState state = t.state;
        uint64 expiry = _expiry(t);
        if (expiry != 0 && state == VoteState.Active && block.number > expiry) return VoteState.Expired;
        return state;
    }

    /// @inheritdoc IMemberVoting
    function ballotOf(uint256 id, address voter) external view returns (Choice) {
        return _ballots[id][voter];
    }

    // ------------------------------------------------------------ the steps

    /// @dev Start vote `id` now with the current eligibility snapshot; returns its deadline.
    function _openVote(uint256 id) internal returns (Tally storage t, uint64 deadline) {
        (uint32 seq, uint32 count) = _eligibilitySnapshot();
        t = _tallies[id];
        t.state = VoteState.Active;
        t.createdAt = uint64(block.number);
        t.memberSeq = seq;
        t.eligible = count;
        deadline = _deadline(t);
    }

    /// @dev Cast `voter`'s `choice` on vote `id`. Reverts with {MemberVotingUnknown} /
    /// {MemberVotingNotActive} unless the vote is Active, {MemberVotingClosed} after its
    /// deadline, {MemberVotingInvalidChoice} if {_validChoice} refuses the choice, whatever
    /// {_voterSeq} reverts with for a non-member, {MemberVotingNotEligible} if the voter was
    /// admitted after the vote was created, {MemberVotingAlreadyVoted} on a second vote.
    function _castVote(uint256 id, address voter, Choice choice) internal {
        Tally storage t = _activeTally(id);
        uint64 deadline = _deadline(t);
        if (block.number > deadline) revert MemberVotingClosed(id, deadline);
        if (!_validChoice(choice)) revert MemberVotingInvalidChoice();
        if (_voterSeq(voter) > t.memberSeq) revert MemberVotingNotEligible(voter, id);
        mapping(address => Choice) storage ballots = _ballots[id];
        if (ballots[voter] != Choice.None) revert MemberVotingAlreadyVoted(voter, id);
        ballots[voter] = choice;
        _countVote(t, choice);
    }

    /// @dev Finalize vote `id` after its deadline as Approved or Rejected. Reverts with
    /// {MemberVotingUnknown} / {MemberVotingNotActive} unless Active, {MemberVotingStillOpen}
    /// up to and including the deadline block, {MemberVotingExpired} after {_expiry}.
    function _finalizeVote(uint256 id) internal returns (Tally storage t, VoteState state) {
        t = _activeTally(id);
        uint64 deadline = _deadline(t);
        if (block.number <= deadline) revert MemberVotingStillOpen(id, deadline);
        uint64 expiry = _expiry(t);
        if (expiry != 0 && block.number > expiry) revert MemberVotingExpired(id, expiry);
        state = _quorumReached(t) && _voteSucceeded(t) ? VoteState.Approved : VoteState.Rejected;
        t.state = state;
    }

    /// @dev Mark Active vote `id` Cancelled (the caller checks who may cancel and when).
    function _cancelVote(Tally storage t) internal {
        t.state = VoteState.Cancelled;
    }

    /// @dev The Active tally of `id`; reverts with {MemberVotingUnknown} or {MemberVotingNotActive}.
    function _activeTally(uint256 id) internal view returns (Tally storage t) {
        t = _tallies[id];
        VoteState state = t.state;
        if (state == VoteState.None) revert MemberVotingUnknown(id);
        if (state != VoteState.Active) revert MemberVotingNotActive(id, state);
    }

    // ------------------------------------------------------------------ hooks

    /// @dev The current admission sequence number and active member count.
    function _eligibilitySnapshot() internal view virtual returns (uint32 memberSeq, uint32 memberCount);

    /// @dev The admission sequence number of `voter`; reverts if it is not an active member.
    function _voterSeq(address voter) internal view virtual returns (uint32);

    /// @dev Last block in which votes are accepted.
    function _deadline(Tally storage t) internal view virtual returns (uint64) {
        return t.createdAt + _votingPeriod;
    }

    /// @dev Last block in which the vote may be finalized; 0 (the default) for no limit.
    function _expiry(Tally storage) internal view virtual returns (uint64) {
        return 0;
    }

    /// @dev Whether `choice` may be cast (default: Yes, No or Abstain).
    function _validChoice(Choice choice) internal pure virtual returns (bool) {
        return choice != Choice.None;
    }

    /// @dev Add one vote to the tally.
    function _countVote(Tally storage t, Choice choice) internal virtual {
        if (choice == Choice.Yes) ++t.yes;
        else if (choice == Choice.No) ++t.no;
        else ++t.abstain;
    }

    /// @dev Turnout (yes + no + abstain) reaches quorumBps of the eligible members.
    function _quorumReached(Tally storage t) internal view virtual returns (bool) {
        return (uint256(t.yes) + t.no + t.abstain) * BPS >= uint256(t.eligible) * _quorumBps;
    }

    /// @dev At least one yes or no, and yes reaches approvalBps of yes + no.
    function _voteSucceeded(Tally storage t) internal view virtual returns (bool) {
        uint256 yes = t.yes;
        uint256 decided = yes + t.no;
        return decided > 0 && yes * BPS >= decided * _approvalBps;
    }
}
