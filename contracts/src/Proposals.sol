// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {
    NotAMember, NotEligible, AlreadyVoted, VotingClosed, VotingOpen, InvalidChoice, EmptyCid
} from "./Errors.sol";
import {VoteMath} from "./VoteMath.sol";

/// @title Proposals
/// @notice Federated-learning proposals: a member submits a training plan (stored off chain,
/// referenced by CID and sha256), members vote one-member-one-vote, and anyone finalizes it
/// after the voting period as Approved or Rejected. Approved proposals may then be trained
/// in {Rounds} on the target datasets whose {DatasetRegistry} policy admits them.
/// @dev Why not OpenZeppelin Governor: Governor weighs votes by token balance at a
/// checkpoint (IVotes) and, when a proposal passes, executes arbitrary calldata on target
/// contracts, usually behind a timelock. A fedchain proposal is a data record (plan, purpose,
/// datasets, round schedule) that executes nothing; voting is one member, one vote, with
/// eligibility fixed by admission order rather than a token snapshot. Using Governor would
/// mean minting a non-transferable vote token per member, delegating it, and encoding
/// "approve this plan" as a dummy call - more code, more gas per vote and a larger attack
/// surface for no feature we use. We keep Governor's useful ideas (voting period in blocks,
/// quorum, snapshot of who may vote, anyone may finalize) in ~200 lines, and use
/// OpenZeppelin AccessControl where it fits (the coordinator role in {Consortium}).
/// Voting parameters are read once from {Consortium} at deploy (they are immutable there).
/// Target datasets are not required to exist at submission: a plan may precede
/// registration; {Rounds} checks the dataset and its policy at every commitment.
contract Proposals {
    /// @notice Most target datasets a proposal may name.
    uint256 public constant MAX_TARGETS = 32;
    /// @notice Most training rounds a proposal may plan.
    uint16 public constant MAX_ROUNDS = 10_000;

    /// @notice Proposal life cycle: Active (voting) until finalized or cancelled.
    enum State {
        None,
        Active,
        Approved,
        Rejected,
        Cancelled
    }

    /// @notice A vote choice.
    enum Choice {
        None,
        Yes,
        No,
        Abstain
    }

    /// @notice What a member submits.
    /// @param planCid CID of the training plan document.
    /// @param planSha256 sha256 of the plan document.
    /// @param purpose Purpose of use, a short string matched against dataset policies by hash.
    /// @param targets Dataset ids (keccak256 of dataset names) to train on; 1..MAX_TARGETS, distinct.
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

    /// @notice A stored proposal.
    /// @param proposer The submitting member.
    /// @param createdAt Block of submission.
    /// @param state Life-cycle state.
    /// @param rounds Planned rounds.
    /// @param deadline Last block in which votes are accepted.
    /// @param minParticipants Fewest commitments for a round to close.
    /// @param roundDuration Blocks a round stays open.
    /// @param memberSeq Admission sequence number at creation (eligibility cut-off).
    /// @param eligible Active member count at creation (quorum base).
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param abstain Abstentions.
    /// @param purposeHash keccak256 of the purpose string.
    /// @param planSha256 sha256 of the plan document.
    /// @param planCid CID of the plan document.
    /// @param purpose The purpose string.
    /// @param targets Target dataset ids.
    struct Proposal {
        address proposer;
        uint64 createdAt;
        State state;
        uint16 rounds;
        uint64 deadline;
        uint32 minParticipants;
        uint32 roundDuration;
        uint32 memberSeq;
        uint32 eligible;
        uint32 yes;
        uint32 no;
        uint32 abstain;
        bytes32 purposeHash;
        bytes32 planSha256;
        string planCid;
        string purpose;
        bytes32[] targets;
    }

    /// @notice The consortium whose members submit and vote.
    Consortium public immutable consortium;
    /// @notice Voting period in blocks (copied from the consortium).
    uint64 public immutable votingPeriod;
    /// @notice Quorum in basis points of eligible members (copied from the consortium).
    uint16 public immutable quorumBps;
    /// @notice Approval threshold in basis points of yes+no (copied from the consortium).
    uint16 public immutable approvalBps;
    /// @notice Number of proposals; ids run from 1 to proposalCount.
    uint256 public proposalCount;

    mapping(uint256 id => Proposal) private _proposals;
    mapping(uint256 id => mapping(bytes32 datasetId => bool)) private _isTarget;
    mapping(uint256 id => mapping(address voter => Choice)) private _votes;

    /// @notice A proposal was submitted.
    /// @param id Proposal id.
    /// @param proposer The member.
    /// @param planCid CID of the plan.
    /// @param planSha256 sha256 of the plan.
    /// @param purpose Purpose string.
    /// @param purposeHash keccak256 of the purpose.
    /// @param targets Target dataset ids.
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
    event ProposalFinalized(uint256 indexed id, State state, uint32 yes, uint32 no, uint32 abstain);
    /// @notice The proposer withdrew a proposal before any vote.
    /// @param id Proposal id.
    event ProposalCancelled(uint256 indexed id);

    /// @notice No proposal with this id exists.
    /// @param id The id.
    error UnknownProposal(uint256 id);
    /// @notice The proposal is not Active.
    /// @param id Proposal id.
    /// @param state Its state.
    error ProposalNotActive(uint256 id, State state);
    /// @notice Only the proposer may cancel.
    /// @param id Proposal id.
    /// @param account The caller.
    error NotProposer(uint256 id, address account);
    /// @notice A proposal cannot be cancelled once a vote was cast.
    /// @param id Proposal id.
    error VotesAlreadyCast(uint256 id);
    /// @notice The target list is empty or longer than MAX_TARGETS.
    /// @param given Number of targets.
    /// @param max MAX_TARGETS.
    error InvalidTargetCount(uint256 given, uint256 max);
    /// @notice A target dataset id is listed twice (or is zero).
    /// @param datasetId The id.
    error InvalidTarget(bytes32 datasetId);
    /// @notice rounds is 0 or above MAX_ROUNDS.
    /// @param rounds The value given.
    error InvalidRounds(uint16 rounds);
    /// @notice minParticipants is 0.
    error InvalidMinParticipants();
    /// @notice roundDuration is 0.
    error InvalidRoundDuration();

    /// @notice Bind to a consortium and copy its voting parameters.
    /// @param consortium_ The consortium.
    constructor(Consortium consortium_) {
        consortium = consortium_;
        (votingPeriod, quorumBps, approvalBps) = consortium_.votingParams();
    }

    // ------------------------------------------------------------------ views

    /// @notice The proposal `id` (all zero if unknown).
    /// @param id Proposal id.
    /// @return The proposal.
    function proposal(uint256 id) external view returns (Proposal memory) {
        return _proposals[id];
    }

    /// @notice Life-cycle state of proposal `id`.
    /// @param id Proposal id.
    /// @return The state (None if unknown).
    function stateOf(uint256 id) external view returns (State) {
        return _proposals[id].state;
    }

    /// @notice Whether `datasetId` is a target of proposal `id`.
    /// @param id Proposal id.
    /// @param datasetId Dataset id.
    /// @return True if listed.
    function isTarget(uint256 id, bytes32 datasetId) external view returns (bool) {
        return _isTarget[id][datasetId];
    }

    /// @notice How `voter` voted on proposal `id`.
    /// @param id Proposal id.
    /// @param voter The member.
    /// @return The choice (None if not voted).
    function voteOf(uint256 id, address voter) external view returns (Choice) {
        return _votes[id][voter];
    }

    /// @notice The fields {Rounds} and {DatasetRegistry} need, read in few storage slots.
    /// @param id Proposal id.
    /// @return state Life-cycle state.
    /// @return proposer The proposer (the "requester" of dataset policies).
    /// @return purposeHash keccak256 of the purpose.
    /// @return rounds Planned rounds.
    /// @return minParticipants Fewest commitments per round.
    /// @return roundDuration Round length in blocks.
    function terms(uint256 id)
        external
        view
        returns (
            State state,
            address proposer,
            bytes32 purposeHash,
            uint16 rounds,
            uint32 minParticipants,
            uint32 roundDuration
        )
    {
        Proposal storage p = _proposals[id];
        return (p.state, p.proposer, p.purposeHash, p.rounds, p.minParticipants, p.roundDuration);
    }

    /// @notice Requester, purpose and target membership in one call (used per commitment).
    /// @param id Proposal id.
    /// @param datasetId Dataset id.
    /// @return proposer The proposer.
    /// @return purposeHash keccak256 of the purpose.
    /// @return target Whether `datasetId` is a target.
    function useTerms(uint256 id, bytes32 datasetId)
        external
        view
        returns (address proposer, bytes32 purposeHash, bool target)
    {
        Proposal storage p = _proposals[id];
        return (p.proposer, p.purposeHash, _isTarget[id][datasetId]);
    }

    // ------------------------------------------------------------------- acts

    /// @notice Submit a proposal; voting runs for `votingPeriod` blocks from now.
    /// @param s The submission.
    /// @return id The new proposal id.
    function submit(Submission calldata s) external returns (uint256 id) {
        (bool active,) = consortium.eligibility(msg.sender);
        if (!active) revert NotAMember(msg.sender);
        if (bytes(s.planCid).length == 0) revert EmptyCid();
        uint256 n = s.targets.length;
        if (n == 0 || n > MAX_TARGETS) revert InvalidTargetCount(n, MAX_TARGETS);
        if (s.rounds == 0 || s.rounds > MAX_ROUNDS) revert InvalidRounds(s.rounds);
        if (s.minParticipants == 0) revert InvalidMinParticipants();
        if (s.roundDuration == 0) revert InvalidRoundDuration();
        id = ++proposalCount;
        for (uint256 i = 0; i < n; ++i) {
            bytes32 t = s.targets[i];
            if (t == bytes32(0) || _isTarget[id][t]) revert InvalidTarget(t);
            _isTarget[id][t] = true;
        }
        Proposal storage p = _proposals[id];
        p.proposer = msg.sender;
        p.createdAt = uint64(block.number);
        p.state = State.Active;
        p.rounds = s.rounds;
        p.deadline = uint64(block.number) + votingPeriod;
        p.minParticipants = s.minParticipants;
        p.roundDuration = s.roundDuration;
        p.memberSeq = consortium.memberSeq();
        p.eligible = consortium.memberCount();
        p.purposeHash = keccak256(bytes(s.purpose));
        p.planSha256 = s.planSha256;
        p.planCid = s.planCid;
        p.purpose = s.purpose;
        p.targets = s.targets;
        _emitSubmitted(id, p);
    }

    /// @notice Vote on proposal `id` (members admitted before it was created, once, until the deadline).
    /// @param id Proposal id.
    /// @param choice Yes, No or Abstain.
    function vote(uint256 id, Choice choice) external {
        Proposal storage p = _active(id);
        if (block.number > p.deadline) revert VotingClosed(id, p.deadline);
        if (choice == Choice.None) revert InvalidChoice();
        (bool active, uint32 seq) = consortium.eligibility(msg.sender);
        if (!active) revert NotAMember(msg.sender);
        if (seq > p.memberSeq) revert NotEligible(msg.sender, id);
        if (_votes[id][msg.sender] != Choice.None) revert AlreadyVoted(msg.sender, id);
        _votes[id][msg.sender] = choice;
        if (choice == Choice.Yes) ++p.yes;
        else if (choice == Choice.No) ++p.no;
        else ++p.abstain;
        emit Voted(id, msg.sender, choice);
    }

    /// @notice Finalize proposal `id` after its voting period: Approved or Rejected. Callable by anyone.
    /// @param id Proposal id.
    /// @return state The resulting state.
    function finalize(uint256 id) external returns (State state) {
        Proposal storage p = _active(id);
        if (block.number <= p.deadline) revert VotingOpen(id, p.deadline);
        bool passed = VoteMath.passes(p.yes, p.no, p.abstain, p.eligible, quorumBps, approvalBps);
        state = passed ? State.Approved : State.Rejected;
        p.state = state;
        emit ProposalFinalized(id, state, p.yes, p.no, p.abstain);
    }

    /// @notice Withdraw proposal `id`; only its proposer, only while Active and before any vote.
    /// @param id Proposal id.
    function cancel(uint256 id) external {
        Proposal storage p = _active(id);
        if (p.proposer != msg.sender) revert NotProposer(id, msg.sender);
        if (p.yes != 0 || p.no != 0 || p.abstain != 0) revert VotesAlreadyCast(id);
        p.state = State.Cancelled;
        emit ProposalCancelled(id);
    }

    // --------------------------------------------------------------- internal

    function _active(uint256 id) private view returns (Proposal storage p) {
        p = _proposals[id];
        if (p.state == State.None) revert UnknownProposal(id);
        if (p.state != State.Active) revert ProposalNotActive(id, p.state);
    }

    function _emitSubmitted(uint256 id, Proposal storage p) private {
        emit ProposalSubmitted(
            id,
            p.proposer,
            p.planCid,
            p.planSha256,
            p.purpose,
            p.purposeHash,
            p.targets,
            p.rounds,
            p.minParticipants,
            p.roundDuration,
            p.deadline,
            p.eligible
        );
    }
}
