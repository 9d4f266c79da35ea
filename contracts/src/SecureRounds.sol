// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {IProposals} from "./IProposals.sol";
import {IRounds} from "./IRounds.sol";
import {ISecureRounds} from "./ISecureRounds.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";
import {Cid} from "./Cid.sol";

/// @title SecureRounds
/// @notice The secure-aggregation phases of training rounds (see {ISecureRounds}).
/// @dev Deployed after {Rounds}; reads the round's phase and deadline and each member's commitment
/// from it, and the proposal's targets and owners from {Proposals}. One slot per session and one
/// byte per member and round; messages are events. No loop.
contract SecureRounds is ISecureRounds, ConsortiumBound {
    /// @notice The proposals contract (targets, owners, participant bounds).
    IProposals public immutable proposals;
    /// @notice The rounds contract (phase, deadline, commitments).
    IRounds public immutable rounds;

    mapping(uint256 proposalId => mapping(uint16 round => Session)) private _sessions;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(address member => uint8))) private _phases;

    /// @notice Bind to the contracts deployed before it.
    /// @param consortium_ The consortium.
    /// @param proposals_ The proposals contract.
    /// @param rounds_ The rounds contract.
    constructor(IConsortium consortium_, IDatasetRegistry, IProposals proposals_, IRounds rounds_)
        ConsortiumBound(consortium_)
    {
        proposals = proposals_;
        rounds = rounds_;
    }

    /// @inheritdoc ISecureRounds
    function sessionOf(uint256 proposalId, uint16 round) external view returns (Session memory) {
        return _sessions[proposalId][round];
    }

    /// @inheritdoc ISecureRounds
    function phasesOf(uint256 proposalId, uint16 round, address member) external view returns (uint8) {
        return _phases[proposalId][round][member];
    }

    /// @inheritdoc ISecureRounds
    function start(uint256 proposalId, uint16 round, uint16 threshold, uint32 phaseBlocks) external onlyCoordinator {
        IRounds.Round memory r = rounds.roundOf(proposalId, round);
        if (r.phase != IRounds.Phase.Open) revert SecureRoundsRoundNotOpen(proposalId, round);
        Session storage s = _sessions[proposalId][round];
        if (s.stage != Stage.None) revert SecureRoundsAlreadyStarted(proposalId, round);
        IProposals.RoundTerms memory terms = proposals.roundTerms(proposalId);
        if (threshold < 2 || threshold < terms.minParticipants || threshold > terms.targetCount) {
            revert SecureRoundsBadThreshold(threshold);
        }
        uint64 lastMasked = uint64(block.number) + 3 * uint64(phaseBlocks);
        if (phaseBlocks == 0 || lastMasked > r.deadline) revert SecureRoundsPhasesBeyondDeadline(lastMasked, r.deadline);
        s.start = uint64(block.number);
        s.phaseBlocks = phaseBlocks;
        s.threshold = threshold;
        s.stage = Stage.Running;
        s.seed = blockhash(block.number - 1);
        emit SessionStarted(proposalId, round, threshold, phaseBlocks, s.seed);
    }

    /// @inheritdoc ISecureRounds
    function advertiseKeys(uint256 proposalId, uint16 round, bytes32 datasetId, string calldata cid,
        bytes32 messageSha256) external onlyMember {
        (,, address owner,) = proposals.useTerms(proposalId, datasetId);
        if (owner != msg.sender) revert SecureRoundsNotATarget(msg.sender);
        Session storage s = _enter(proposalId, round, 0);
        ++s.advertised;
        _message(proposalId, round, 0, cid, messageSha256);
    }

    /// @inheritdoc ISecureRounds
    function shareKeys(uint256 proposalId, uint16 round, string calldata cid, bytes32 messageSha256)
        external
        onlyMember
    {
        Session storage s = _enter(proposalId, round, 1);
        ++s.shared;
        _message(proposalId, round, 1, cid, messageSha256);
    }

    /// @inheritdoc ISecureRounds
    function markMasked(uint256 proposalId, uint16 round, bytes32 datasetId, string calldata cid,
        bytes32 messageSha256, uint64 sampleCount) external onlyMember {
        bytes32 expected = rounds.commitmentHash(datasetId, cid, messageSha256, sampleCount);
        if (rounds.commitmentOf(proposalId, round, msg.sender) != expected) revert SecureRoundsNotCommitted(msg.sender);
        Session storage s = _enter(proposalId, round, 2);
        ++s.masked;
        emit MaskedInputMarked(proposalId, round, msg.sender);
    }

    /// @inheritdoc ISecureRounds
    function unmask(uint256 proposalId, uint16 round, string calldata cid, bytes32 messageSha256)
        external
        onlyMember
    {
        Session storage s = _enter(proposalId, round, 3);
        ++s.unmasked;
        _message(proposalId, round, 3, cid, messageSha256);
    }

    /// @inheritdoc ISecureRounds
    function conclude(uint256 proposalId, uint16 round) external returns (Stage stage) {
        Session storage s = _sessions[proposalId][round];
        if (s.stage != Stage.Running) revert SecureRoundsNotRunning(proposalId, round, s.stage);
        uint256 p = s.phaseBlocks;
        uint256 ended = block.number <= s.start ? 0 : (block.number - s.start - 1) / p; // phases whose window ended
        uint16 t = s.threshold;
        if ((ended >= 1 && s.advertised < t) || (ended >= 2 && s.shared < t) || (ended >= 3 && s.masked < t)
            || (ended >= 4 && s.unmasked < t)) {
            stage = Stage.Failed;
        } else if (ended >= 4 || (ended == 3 && s.unmasked == s.masked)) {
            stage = Stage.Completed;
        } else {
            revert SecureRoundsTooEarly(proposalId, round);
        }
        s.stage = stage;
        emit SessionConcluded(proposalId, round, stage, msg.sender);
    }

    /// @dev The session must be running, the block within phase `phase`'s window, and the caller must have
    /// taken part in every earlier phase and not yet in this one; records its participation.
    function _enter(uint256 proposalId, uint16 round, uint8 phase) private returns (Session storage s) {
        s = _sessions[proposalId][round];
        if (s.stage != Stage.Running) revert SecureRoundsNotRunning(proposalId, round, s.stage);
        uint64 first = s.start + uint64(phase) * s.phaseBlocks + 1;
        uint64 last = first + s.phaseBlocks - 1;
        if (block.number < first || block.number > last) revert SecureRoundsOutsidePhase(phase, first, last);
        uint8 bits = _phases[proposalId][round][msg.sender];
        uint8 before = uint8((1 << phase) - 1);
        if (bits != before) revert SecureRoundsNotEligible(msg.sender, phase);
        _phases[proposalId][round][msg.sender] = bits | uint8(1 << phase);
    }

    function _message(uint256 proposalId, uint16 round, uint8 phase, string calldata cid, bytes32 sha) private {
        if (!Cid.isWellFormed(cid)) revert SecureRoundsInvalidCid();
        emit PhaseMessage(proposalId, round, msg.sender, phase, cid, sha);
    }
}
