// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Custom errors shared by several fedchain contracts. Contract-specific
// errors live in the contract that raises them. No contract uses revert
// strings: every rule violation has a named error the Python bindings decode.

/// @notice `account` is not an active consortium member.
/// @param account The offending address.
error NotAMember(address account);

/// @notice `account` is a member but joined after vote `id` was created, so it may not vote on it.
/// @param account The member that joined too late.
/// @param id The proposal or motion id.
error NotEligible(address account, uint256 id);

/// @notice `account` already voted on `id`.
/// @param account The voter.
/// @param id The proposal or motion id.
error AlreadyVoted(address account, uint256 id);

/// @notice Voting on `id` ended at block `deadline`.
/// @param id The proposal or motion id.
/// @param deadline Last block in which a vote was accepted.
error VotingClosed(uint256 id, uint64 deadline);

/// @notice Vote `id` cannot be finalized before block `deadline` has passed.
/// @param id The proposal or motion id.
/// @param deadline Last block of the voting period.
error VotingOpen(uint256 id, uint64 deadline);

/// @notice The vote choice is not one of the allowed values.
error InvalidChoice();

/// @notice A content identifier (CID) argument was empty.
error EmptyCid();

/// @notice A name argument was empty or longer than the contract's limit.
error InvalidName();

/// @notice An address argument was the zero address.
error ZeroAddress();

/// @notice `account` does not own dataset `datasetId`.
/// @param datasetId Dataset id.
/// @param account The caller.
error NotDatasetOwner(bytes32 datasetId, address account);

/// @notice `account` does not hold the consortium's COORDINATOR_ROLE.
/// @param account The caller.
error NotCoordinator(address account);
