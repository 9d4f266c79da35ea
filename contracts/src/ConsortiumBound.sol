// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";

/// @title ConsortiumBound
/// @notice Base of the contracts that serve one {IConsortium}: its address and the two access
/// rules they share, {onlyMember} and {onlyCoordinator}.
abstract contract ConsortiumBound {
    /// @notice The consortium whose members and coordinator this contract serves.
    IConsortium public immutable consortium;

    /// @param consortium_ The consortium.
    constructor(IConsortium consortium_) {
        consortium = consortium_;
    }

    /// @dev Only active members of the consortium; reverts with {IConsortium.ConsortiumNotAMember}.
    modifier onlyMember() {
        if (!consortium.isMember(msg.sender)) revert IConsortium.ConsortiumNotAMember(msg.sender);
        _;
    }

    /// @dev Only the consortium's coordinator; reverts with {IConsortium.ConsortiumNotCoordinator}.
    modifier onlyCoordinator() {
        if (!_isCoordinator(msg.sender)) revert IConsortium.ConsortiumNotCoordinator(msg.sender);
        _;
    }

    /// @dev Whether `account` is the consortium's coordinator now.
    function _isCoordinator(address account) internal view returns (bool) {
        return consortium.coordinator() == account;
    }
}
