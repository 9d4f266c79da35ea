// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title VoteMath
/// @notice The one rule deciding every fedchain vote (proposals and membership motions).
/// @dev A vote passes when turnout reaches the quorum and the yes share of decided votes
/// reaches the approval threshold:
///   (yes + no + abstain) * 10000 >= eligible * quorumBps   and
///   yes + no > 0   and   yes * 10000 >= (yes + no) * approvalBps.
/// `eligible` is the active member count when the vote was created.
library VoteMath {
    /// @notice Basis points in one whole (100%).
    uint256 internal constant BPS = 10_000;

    /// @notice Whether a tally passes under the given quorum and approval thresholds.
    /// @param yes Yes votes.
    /// @param no No votes.
    /// @param abstain Abstentions (count toward quorum only).
    /// @param eligible Members eligible to vote.
    /// @param quorumBps Minimum turnout, in basis points of `eligible`.
    /// @param approvalBps Minimum yes share of yes+no, in basis points.
    /// @return True when the vote passes.
    function passes(
        uint256 yes,
        uint256 no,
        uint256 abstain,
        uint256 eligible,
        uint256 quorumBps,
        uint256 approvalBps
    ) internal pure returns (bool) {
        if ((yes + no + abstain) * BPS < eligible * quorumBps) return false;
        if (yes + no == 0) return false;
        return yes * BPS >= (yes + no) * approvalBps;
    }
}
