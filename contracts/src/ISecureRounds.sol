// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ISecureRounds
/// @notice The secure-aggregation phases of a training round (Bonawitz et al., CCS 2017), each with a
/// deadline the contract enforces: advertise keys, share keys, masked input, unmasking. A session runs
/// inside an open {IRounds} round: the coordinator starts it with the Shamir threshold and the blocks
/// per phase; phase k accepts messages in blocks (start + k * phaseBlocks, start + (k + 1) * phaseBlocks].
/// A member's message lives in the content store (CID and sha256 in the event); its masked input is its
/// {IRounds} commitment, marked here within the masked-input phase. The session is Completed when every
/// phase gathered at least `threshold` members, else Failed; anyone may conclude it once that is decided.
/// Who takes part in each phase (U1..U4) is exactly what these events record: every party unmasks with
/// the same sets. The threshold and phase length are the plan's (off chain): the audit replay checks them.
interface ISecureRounds {
    /// @notice Stage of a session.
    enum Stage {
        None,
        Running,
        Completed,
        Failed
    }

    /// @notice One session, packed in two slots.
    /// @param start Block the session started in.
    /// @param phaseBlocks Blocks per phase.
    /// @param threshold Members each phase needs (the Shamir threshold).
    /// @param advertised Members that advertised keys (U1).
    /// @param shared Members that shared keys (U2).
    /// @param masked Members whose masked input was marked (U3).
    /// @param unmasked Members that sent their unmasking shares (U4).
    /// @param stage Stage.
    /// @param seed The public round seed (hash of the block before the start).
    struct Session {
        uint64 start;
        uint32 phaseBlocks;
        uint16 threshold;
        uint16 advertised;
        uint16 shared;
        uint16 masked;
        uint16 unmasked;
        Stage stage;
        bytes32 seed;
    }

    /// @notice The coordinator started a session.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param threshold Members each phase needs.
    /// @param phaseBlocks Blocks per phase.
    /// @param seed Public round seed.
    event SessionStarted(
        uint256 indexed proposalId, uint16 indexed round, uint16 threshold, uint32 phaseBlocks, bytes32 seed
    );
    /// @notice A member sent a phase message (phase 0: keys, 1: shares, 3: unmasking).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @param phase The phase.
    /// @param cid CID of the message.
    /// @param messageSha256 sha256 of the message.
    event PhaseMessage(
        uint256 indexed proposalId,
        uint16 indexed round,
        address indexed member,
        uint8 phase,
        string cid,
        bytes32 messageSha256
    );
    /// @notice A member's committed update was marked as its masked input (phase 2).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    event MaskedInputMarked(uint256 indexed proposalId, uint16 indexed round, address indexed member);
    /// @notice A session was concluded.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param stage Completed or Failed.
    /// @param by Who concluded it.
    event SessionConcluded(uint256 indexed proposalId, uint16 indexed round, Stage stage, address by);

    /// @notice the round is not open in Rounds
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error SecureRoundsRoundNotOpen(uint256 proposalId, uint16 round);
    /// @notice a session was already started for this round
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error SecureRoundsAlreadyStarted(uint256 proposalId, uint16 round);
    /// @notice the threshold must lie between the proposal's minimum participants (and 2) and its targets
    /// @param threshold Threshold asked for.
    error SecureRoundsBadThreshold(uint16 threshold);
    /// @notice the phases must fit before the round's deadline
    /// @param lastMaskedBlock Last block of the masked-input phase.
    /// @param deadline The round's deadline.
    error SecureRoundsPhasesBeyondDeadline(uint64 lastMaskedBlock, uint64 deadline);
    /// @notice the session is not running
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param stage Its stage.
    error SecureRoundsNotRunning(uint256 proposalId, uint16 round, Stage stage);
    /// @notice this phase does not accept messages in this block
    /// @param phase The phase.
    /// @param first First block of its window.
    /// @param last Last block of its window.
    error SecureRoundsOutsidePhase(uint8 phase, uint64 first, uint64 last);
    /// @notice the member did not take part in the previous phase, or already sent this one
    /// @param member The member.
    /// @param phase The phase.
    error SecureRoundsNotEligible(address member, uint8 phase);
    /// @notice the member owns no target dataset of the proposal
    /// @param member The member.
    error SecureRoundsNotATarget(address member);
    /// @notice the masked input is not the member's commitment in Rounds
    /// @param member The member.
    error SecureRoundsNotCommitted(address member);
    /// @notice the session cannot be concluded yet
    /// @param proposalId Proposal id.
    /// @param round Round number.
    error SecureRoundsTooEarly(uint256 proposalId, uint16 round);
    /// @notice a message needs a well-formed CID
    error SecureRoundsInvalidCid();

    /// @notice A session.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return The session.
    function sessionOf(uint256 proposalId, uint16 round) external view returns (Session memory);

    /// @notice Which phases a member took part in (bit k: phase k).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param member The member.
    /// @return Bit set of phases.
    function phasesOf(uint256 proposalId, uint16 round, address member) external view returns (uint8);

    /// @notice Coordinator: start the session of an open round.
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param threshold Shamir threshold (members each phase needs).
    /// @param phaseBlocks Blocks per phase.
    function start(uint256 proposalId, uint16 round, uint16 threshold, uint32 phaseBlocks) external;

    /// @notice Member owning `datasetId` (a target): advertise fresh keys (phase 0).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId The member's target dataset.
    /// @param cid CID of the AdvertiseKeys message.
    /// @param messageSha256 Its sha256.
    function advertiseKeys(uint256 proposalId, uint16 round, bytes32 datasetId, string calldata cid,
        bytes32 messageSha256) external;

    /// @notice Member in U1: publish the encrypted Shamir shares (phase 1).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param cid CID of the ShareKeys message.
    /// @param messageSha256 Its sha256.
    function shareKeys(uint256 proposalId, uint16 round, string calldata cid, bytes32 messageSha256) external;

    /// @notice Member in U2: mark its {IRounds} commitment as its masked input (phase 2).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param datasetId Dataset of the commitment.
    /// @param cid CID of the committed masked input.
    /// @param messageSha256 Its sha256.
    /// @param sampleCount Sample count of the commitment.
    function markMasked(uint256 proposalId, uint16 round, bytes32 datasetId, string calldata cid,
        bytes32 messageSha256, uint64 sampleCount) external;

    /// @notice Member in U3: publish its unmasking shares (phase 3).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @param cid CID of the UnmaskResponse message.
    /// @param messageSha256 Its sha256.
    function unmask(uint256 proposalId, uint16 round, string calldata cid, bytes32 messageSha256) external;

    /// @notice Anyone: conclude a session once decided: Failed as soon as an ended phase has fewer than
    /// `threshold` members; Completed after the unmasking phase (or once every U3 member unmasked).
    /// @param proposalId Proposal id.
    /// @param round Round number.
    /// @return stage The stage it ends in.
    function conclude(uint256 proposalId, uint16 round) external returns (Stage stage);
}
