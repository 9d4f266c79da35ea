// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";

/// @title DatasetRegistry
/// @notice The datasets of a fedchain consortium and their data-use policies (see {IDatasetRegistry}).
/// @dev Dataset id = keccak256(bytes(name)); the name is stored and emitted too.
/// Policy versions: each setPolicy bumps `policyVersion`, and the allow-lists are mappings
/// keyed by (dataset, version, entry), so entries of older versions are simply never read
/// again - no loop clears them. Every policy change emits {PolicySet} with the whole policy.
/// Expiry is a unix timestamp (seconds, compared with block.timestamp) because data-use
/// agreements are dated, not numbered in blocks; 0 means no expiry. An empty purpose list
/// admits any purpose; an empty requester list admits any requester (proposer); proposals
/// are admitted when listed in `proposalIds` or, with `anyApprovedProposal`, all of them.
/// A proposal must always be Approved to be admitted ({Rounds} knows it is when it calls
/// {checkUse}; otherwise the reason is REASON_PROPOSAL_NOT_APPROVED). `maxEpsilonMilli` (differential privacy budget in thousandths of epsilon,
/// 0 = no budget) is enforced with the ε ledger: the cumulative spend `epsilonSpentMicro`
/// (millionths) shares a storage slot with the budget and the row count; only {rounds} may add to
/// it ({spendPrivacy}, one slot read and written), and {setPolicy} refuses a budget below it.
/// The Rounds address is given to the constructor before Rounds exists (the deployer's next
/// CREATE address) and Rounds' constructor checks it, so nothing is wired after deployment. The row count is fixed at registration;
/// {Proposals} copies it (with the owner) into the proposal at submission, so the commitment
/// path reads it from the slot it reads anyway. The registry depends on the consortium only
/// (it is deployed before {Proposals}, which reads it). The REASON_* constants are the
/// policy's refusal codes; each one's notice is its wording.
contract DatasetRegistry is IDatasetRegistry, ConsortiumBound {
    /// @notice Most entries in each policy list.
    uint256 public constant MAX_POLICY_ENTRIES = 32;
    /// @notice Longest dataset name, in bytes.
    uint256 public constant MAX_NAME_BYTES = 128;

    /// @notice unknown dataset
    bytes32 public constant REASON_UNKNOWN_DATASET = "UNKNOWN_DATASET";
    /// @notice dataset revoked
    bytes32 public constant REASON_REVOKED = "REVOKED";
    /// @notice policy expired
    bytes32 public constant REASON_EXPIRED = "EXPIRED";
    /// @notice purpose not allowed
    bytes32 public constant REASON_PURPOSE_NOT_ALLOWED = "PURPOSE_NOT_ALLOWED";
    /// @notice proposal not allowed
    bytes32 public constant REASON_PROPOSAL_NOT_ALLOWED = "PROPOSAL_NOT_ALLOWED";
    /// @notice requester not allowed
    bytes32 public constant REASON_REQUESTER_NOT_ALLOWED = "REQUESTER_NOT_ALLOWED";
    /// @notice proposal not approved
    /// @dev Not returned by {checkUse} (its caller knows the proposal is Approved): the reason
    /// a policy check gives first, before the policy is read, when the proposal is not
    /// Approved (the bindings' `admits`).
    bytes32 public constant REASON_PROPOSAL_NOT_APPROVED = "PROPOSAL_NOT_APPROVED";

    /// @notice The charge of an update without a differential-privacy guarantee.
    uint64 public constant NOT_PRIVATE = type(uint64).max;
    uint8 private constant FLAG_REVOKED = 1;
    uint8 private constant FLAG_ANY_PURPOSE = 2;
    uint8 private constant FLAG_ANY_PROPOSAL = 4;
    uint8 private constant FLAG_ANY_REQUESTER = 8;

    /// @inheritdoc IDatasetRegistry
    uint256 public datasetCount;
    /// @inheritdoc IDatasetRegistry
    address public immutable rounds;

    mapping(bytes32 id => Dataset) private _datasets;
    mapping(bytes32 id => mapping(uint32 version => Policy)) private _policies;
    mapping(bytes32 id => mapping(uint32 version => mapping(bytes32 purposeHash => bool))) private _purposeOk;
    mapping(bytes32 id => mapping(uint32 version => mapping(uint256 proposalId => bool))) private _proposalOk;
    mapping(bytes32 id => mapping(uint32 version => mapping(address requester => bool))) private _requesterOk;

    /// @notice Bind to the consortium and to the Rounds contract deployed after it.
    /// @param consortium_ The consortium.
    /// @param rounds_ The address Rounds will have (its constructor checks it).
    constructor(IConsortium consortium_, address rounds_) ConsortiumBound(consortium_) {
        rounds = rounds_;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IDatasetRegistry
    function dataset(bytes32 id) external view returns (Dataset memory) {
        return _datasets[id];
    }

    /// @inheritdoc IDatasetRegistry
    function policy(bytes32 id) external view returns (uint32 version, Policy memory current) {
        version = _datasets[id].policyVersion;
        current = _policies[id][version];
    }

    /// @inheritdoc IDatasetRegistry
    function privacyBudget(bytes32 id) external view returns (uint64 maxMicro, uint64 spentMicro) {
        Dataset storage d = _datasets[id];
        return (_maxMicro(d.maxEpsilonMilli), d.epsilonSpentMicro);
    }

    /// @inheritdoc IDatasetRegistry
    function holding(bytes32 id) external view returns (address owner, bool revoked, uint64 rowCount) {
        Dataset storage d = _datasets[id];
        return (d.owner, d.flags & FLAG_REVOKED != 0, d.rowCount);
    }

    /// @inheritdoc IDatasetRegistry
    function checkUse(bytes32 id, uint256 proposalId, bytes32 purposeHash, address requester)
        external
        view
        returns (bytes32)
    {
        Dataset storage d = _datasets[id];
        if (d.owner == address(0)) return REASON_UNKNOWN_DATASET;
        uint8 flags = d.flags;
        uint32 version = d.policyVersion;
        if (flags & FLAG_REVOKED != 0) return REASON_REVOKED;
        if (d.expiry != 0 && block.timestamp >= d.expiry) return REASON_EXPIRED;
        if (flags & FLAG_ANY_PURPOSE == 0 && !_purposeOk[id][version][purposeHash]) return REASON_PURPOSE_NOT_ALLOWED;
        if (flags & FLAG_ANY_PROPOSAL == 0 && !_proposalOk[id][version][proposalId]) return REASON_PROPOSAL_NOT_ALLOWED;
        if (flags & FLAG_ANY_REQUESTER == 0 && !_requesterOk[id][version][requester]) {
            return REASON_REQUESTER_NOT_ALLOWED;
        }
        return bytes32(0);
    }

    // ------------------------------------------------------------------- acts

    /// @inheritdoc IDatasetRegistry
    function registerDataset(
        string calldata name,
        string calldata metadataCid,
        bytes32 metadataSha256,
        bytes32 schemaHash,
        uint64 rowCount,
        Policy calldata p
    ) external onlyMember returns (bytes32 id) {
        uint256 len = bytes(name).length;
        if (len == 0 || len > MAX_NAME_BYTES) revert DatasetRegistryInvalidName();
        if (bytes(metadataCid).length == 0) revert DatasetRegistryEmptyCid();
        if (rowCount == 0) revert DatasetRegistryInvalidRowCount();
        id = keccak256(bytes(name));
        Dataset storage d = _datasets[id];
        if (d.owner != address(0)) revert DatasetRegistryAlreadyRegistered(id);
        d.owner = msg.sender;
        d.registeredAt = uint64(block.number);
        d.rowCount = rowCount;
        d.metadataSha256 = metadataSha256;
        d.schemaHash = schemaHash;
        d.name = name;
        d.metadataCid = metadataCid;
        ++datasetCount;
        emit DatasetRegistered(id, msg.sender, name, metadataCid, metadataSha256, schemaHash, rowCount);
        _setPolicy(id, d, 0, p);
    }

    /// @inheritdoc IDatasetRegistry
    function setPolicy(bytes32 id, Policy calldata p) external {
        Dataset storage d = _owned(id);
        _setPolicy(id, d, d.policyVersion, p);
    }

    /// @inheritdoc IDatasetRegistry
    function spendPrivacy(bytes32 id, uint64 chargeMicro)
        external
        returns (bool ok, uint64 spentMicro, uint64 maxMicro)
    {
        if (msg.sender != rounds) revert DatasetRegistryNotRounds(msg.sender);
        Dataset storage d = _datasets[id];
        spentMicro = d.epsilonSpentMicro;
        maxMicro = _maxMicro(d.maxEpsilonMilli);
        if (chargeMicro == NOT_PRIVATE) return (maxMicro == 0, spentMicro, maxMicro);
        uint256 after_ = uint256(spentMicro) + chargeMicro;
        if (after_ >= NOT_PRIVATE || (maxMicro != 0 && after_ > maxMicro)) return (false, spentMicro, maxMicro);
        spentMicro = uint64(after_);
        d.epsilonSpentMicro = spentMicro;
        ok = true;
    }

    /// @inheritdoc IDatasetRegistry
    function revokeDataset(bytes32 id) external {
        Dataset storage d = _owned(id);
        d.flags |= FLAG_REVOKED;
        emit DatasetRevoked(id);
    }

    // --------------------------------------------------------------- internal

    /// @dev A budget in millionths of epsilon (saturating below NOT_PRIVATE; 0 stays 0 = none).
    function _maxMicro(uint64 milli) private pure returns (uint64) {
        uint256 micro = uint256(milli) * 1000;
        return micro >= NOT_PRIVATE ? NOT_PRIVATE - 1 : uint64(micro);
    }

    /// @dev The caller's unrevoked dataset `id` (its owner is read once).
    function _owned(bytes32 id) private view returns (Dataset storage d) {
        d = _datasets[id];
        address owner = d.owner;
        if (owner == address(0)) revert DatasetRegistryUnknownDataset(id);
        if (owner != msg.sender) revert DatasetRegistryNotOwner(id, msg.sender);
        if (d.flags & FLAG_REVOKED != 0) revert DatasetRegistryRevoked(id);
    }

    /// @dev Policy version `current` + 1 of dataset `d`, which is not revoked (a new registration,
    /// or checked by {_owned}) - so its flags are the new policy's alone.
    function _setPolicy(bytes32 id, Dataset storage d, uint32 current, Policy calldata p) private {
        uint256 nPurposes = p.purposes.length;
        uint256 nProposals = p.proposalIds.length;
        uint256 nRequesters = p.requesters.length;
        if (nPurposes > MAX_POLICY_ENTRIES) revert DatasetRegistryTooManyPolicyEntries(nPurposes, MAX_POLICY_ENTRIES);
        if (nProposals > MAX_POLICY_ENTRIES) revert DatasetRegistryTooManyPolicyEntries(nProposals, MAX_POLICY_ENTRIES);
        if (nRequesters > MAX_POLICY_ENTRIES) revert DatasetRegistryTooManyPolicyEntries(nRequesters, MAX_POLICY_ENTRIES);
        if (p.expiry != 0 && (p.expiry <= block.timestamp || p.expiry > type(uint40).max)) {
            revert DatasetRegistryInvalidExpiry(p.expiry);
        }
        uint64 spent = d.epsilonSpentMicro;
        if (p.maxEpsilonMilli != 0 && uint256(p.maxEpsilonMilli) * 1000 < spent) {
            revert DatasetRegistryBudgetBelowSpent(id, p.maxEpsilonMilli, spent);
        }
        uint32 version = current + 1;
        for (uint256 i = 0; i < nPurposes; ++i) _purposeOk[id][version][p.purposes[i]] = true;
        for (uint256 i = 0; i < nProposals; ++i) _proposalOk[id][version][p.proposalIds[i]] = true;
        for (uint256 i = 0; i < nRequesters; ++i) _requesterOk[id][version][p.requesters[i]] = true;
        uint8 flags;
        if (nPurposes == 0) flags |= FLAG_ANY_PURPOSE;
        if (p.anyApprovedProposal) flags |= FLAG_ANY_PROPOSAL;
        if (nRequesters == 0) flags |= FLAG_ANY_REQUESTER;
        d.policyVersion = version;
        d.expiry = uint40(p.expiry);
        d.flags = flags;
        d.maxEpsilonMilli = p.maxEpsilonMilli;
        _policies[id][version] = p;
        emit PolicySet(id, version, p);
    }
}
