// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Consortium} from "./Consortium.sol";
import {Proposals} from "./Proposals.sol";
import {NotAMember, NotDatasetOwner, EmptyCid, InvalidName} from "./Errors.sol";

/// @title DatasetRegistry
/// @notice Members register the datasets they hold (metadata lives in a content-addressed
/// document referenced by CID and sha256) together with a data-use policy saying which
/// proposals may train on them. {Rounds} enforces the policy on every update commitment.
/// @dev Dataset id = keccak256(bytes(name)); the name is stored and emitted too.
/// Policy versions: each setPolicy bumps `policyVersion`, and the allow-lists are mappings
/// keyed by (dataset, version, entry), so entries of older versions are simply never read
/// again - no loop clears them. Every policy change emits {PolicySet} with the whole policy.
/// Expiry is a unix timestamp (seconds, compared with block.timestamp) because data-use
/// agreements are dated, not numbered in blocks; 0 means no expiry. An empty purpose list
/// admits any purpose; an empty requester list admits any requester (proposer); proposals
/// are admitted when listed in `proposalIds` or, with `anyApprovedProposal`, all of them.
/// A proposal must always be Approved to be admitted. `maxEpsilonMilli` (differential
/// privacy budget in thousandths of epsilon, 0 = unspecified) is stored for off-chain use.
contract DatasetRegistry {
    /// @notice Most entries in each policy list.
    uint256 public constant MAX_POLICY_ENTRIES = 32;
    /// @notice Longest dataset name, in bytes.
    uint256 public constant MAX_NAME_BYTES = 128;

    /// @notice Reason: no dataset with this id.
    bytes32 public constant REASON_UNKNOWN_DATASET = "UNKNOWN_DATASET";
    /// @notice Reason: the owner revoked the dataset.
    bytes32 public constant REASON_REVOKED = "REVOKED";
    /// @notice Reason: the policy expired.
    bytes32 public constant REASON_EXPIRED = "EXPIRED";
    /// @notice Reason: the proposal's purpose is not in the policy.
    bytes32 public constant REASON_PURPOSE = "PURPOSE_NOT_ALLOWED";
    /// @notice Reason: the proposal is not in the policy.
    bytes32 public constant REASON_PROPOSAL = "PROPOSAL_NOT_ALLOWED";
    /// @notice Reason: the proposer is not in the policy's requester list.
    bytes32 public constant REASON_REQUESTER = "REQUESTER_NOT_ALLOWED";
    /// @notice Reason: the proposal is not Approved.
    bytes32 public constant REASON_NOT_APPROVED = "PROPOSAL_NOT_APPROVED";

    uint8 private constant FLAG_REVOKED = 1;
    uint8 private constant FLAG_ANY_PURPOSE = 2;
    uint8 private constant FLAG_ANY_PROPOSAL = 4;
    uint8 private constant FLAG_ANY_REQUESTER = 8;

    /// @notice A data-use policy.
    /// @param purposes keccak256 of allowed purpose strings (empty = any purpose).
    /// @param proposalIds Allowed proposal ids.
    /// @param anyApprovedProposal Admit every approved proposal (proposalIds then unused).
    /// @param requesters Allowed proposers (empty = any member).
    /// @param expiry Unix time after which nothing is admitted (0 = never).
    /// @param maxEpsilonMilli Privacy budget in thousandths of epsilon (stored only).
    struct Policy {
        bytes32[] purposes;
        uint256[] proposalIds;
        bool anyApprovedProposal;
        address[] requesters;
        uint64 expiry;
        uint64 maxEpsilonMilli;
    }

    /// @notice A registered dataset.
    /// @param owner The registering member.
    /// @param policyVersion Current policy version (1 after registration).
    /// @param expiry Current policy expiry (unix time, 0 = never).
    /// @param flags Bit 0 revoked, bit 1 any purpose, bit 2 any approved proposal, bit 3 any requester.
    /// @param maxEpsilonMilli Current privacy budget (thousandths of epsilon).
    /// @param registeredAt Block of registration.
    /// @param metadataSha256 sha256 of the metadata document.
    /// @param schemaHash Hash of the data schema.
    /// @param name Human-readable name (id = keccak256 of it).
    /// @param metadataCid CID of the metadata document.
    struct Dataset {
        address owner;
        uint32 policyVersion;
        uint40 expiry;
        uint8 flags;
        uint64 maxEpsilonMilli;
        uint64 registeredAt;
        bytes32 metadataSha256;
        bytes32 schemaHash;
        string name;
        string metadataCid;
    }

    /// @notice The consortium whose members may register datasets.
    Consortium public immutable consortium;
    /// @notice The proposals contract, read by {admits}.
    Proposals public immutable proposals;
    /// @notice Number of datasets registered.
    uint256 public datasetCount;

    mapping(bytes32 id => Dataset) private _datasets;
    mapping(bytes32 id => mapping(uint32 version => Policy)) private _policies;
    mapping(bytes32 id => mapping(uint32 version => mapping(bytes32 purposeHash => bool))) private _purposeOk;
    mapping(bytes32 id => mapping(uint32 version => mapping(uint256 proposalId => bool))) private _proposalOk;
    mapping(bytes32 id => mapping(uint32 version => mapping(address requester => bool))) private _requesterOk;

    /// @notice A dataset was registered (its first policy follows in {PolicySet}).
    /// @param id Dataset id.
    /// @param owner The registering member.
    /// @param name Dataset name.
    /// @param metadataCid CID of the metadata document.
    /// @param metadataSha256 sha256 of the metadata document.
    /// @param schemaHash Schema hash.
    event DatasetRegistered(
        bytes32 indexed id,
        address indexed owner,
        string name,
        string metadataCid,
        bytes32 metadataSha256,
        bytes32 schemaHash
    );
    /// @notice A dataset's policy was set (at registration or by its owner).
    /// @param id Dataset id.
    /// @param version The new policy version.
    /// @param policy The whole policy.
    event PolicySet(bytes32 indexed id, uint32 version, Policy policy);
    /// @notice The owner revoked a dataset; it admits nothing from now on.
    /// @param id Dataset id.
    event DatasetRevoked(bytes32 indexed id);

    /// @notice A dataset with this id (name) is already registered.
    /// @param id Dataset id.
    error DatasetExists(bytes32 id);
    /// @notice No dataset with this id.
    /// @param id Dataset id.
    error UnknownDataset(bytes32 id);
    /// @notice The dataset was revoked.
    /// @param id Dataset id.
    error DatasetIsRevoked(bytes32 id);
    /// @notice A policy list is longer than MAX_POLICY_ENTRIES.
    /// @param given Its length.
    /// @param max MAX_POLICY_ENTRIES.
    error TooManyPolicyEntries(uint256 given, uint256 max);
    /// @notice Expiry is not in the future (or does not fit 40 bits).
    /// @param expiry The value given.
    error InvalidExpiry(uint64 expiry);

    /// @notice Bind to the consortium and the proposals contract.
    /// @param consortium_ The consortium.
    /// @param proposals_ The proposals contract.
    constructor(Consortium consortium_, Proposals proposals_) {
        consortium = consortium_;
        proposals = proposals_;
    }

    // ------------------------------------------------------------------ views

    /// @notice The dataset `id` (all zero if unknown).
    /// @param id Dataset id.
    /// @return The dataset record.
    function dataset(bytes32 id) external view returns (Dataset memory) {
        return _datasets[id];
    }

    /// @notice The current policy of dataset `id`.
    /// @param id Dataset id.
    /// @return version Its version (0 if unknown).
    /// @return current The policy.
    function policy(bytes32 id) external view returns (uint32 version, Policy memory current) {
        version = _datasets[id].policyVersion;
        current = _policies[id][version];
    }

    /// @notice Whether dataset `id` admits proposal `proposalId` now, and why not.
    /// @dev The same check {Rounds} enforces on commitments and evaluations.
    /// @param id Dataset id.
    /// @param proposalId Proposal id.
    /// @return ok True if admitted.
    /// @return reason Zero if admitted, else one of the REASON_* constants.
    function admits(bytes32 id, uint256 proposalId) external view returns (bool ok, bytes32 reason) {
        (Proposals.State state, address proposer, bytes32 purposeHash,,,) = proposals.terms(proposalId);
        if (state != Proposals.State.Approved) return (false, REASON_NOT_APPROVED);
        (, reason) = _check(id, proposalId, purposeHash, proposer);
        ok = reason == bytes32(0);
    }

    /// @notice Policy check for an approved proposal whose requester and purpose the caller
    /// already knows (used by {Rounds} to save a call).
    /// @param id Dataset id.
    /// @param proposalId Proposal id (must be Approved; not re-checked here).
    /// @param purposeHash keccak256 of the proposal's purpose.
    /// @param requester The proposal's proposer.
    /// @return owner The dataset owner (zero if unknown).
    /// @return reason Zero if admitted, else one of the REASON_* constants.
    function checkUse(bytes32 id, uint256 proposalId, bytes32 purposeHash, address requester)
        external
        view
        returns (address owner, bytes32 reason)
    {
        return _check(id, proposalId, purposeHash, requester);
    }

    // ------------------------------------------------------------------- acts

    /// @notice Register a dataset under `name` with its first policy (version 1).
    /// @param name Human-readable name, unique in the registry (1..MAX_NAME_BYTES bytes).
    /// @param metadataCid CID of the metadata document (schema, row count, description).
    /// @param metadataSha256 sha256 of the metadata document.
    /// @param schemaHash Hash of the data schema.
    /// @param p The policy.
    /// @return id keccak256(bytes(name)).
    function registerDataset(
        string calldata name,
        string calldata metadataCid,
        bytes32 metadataSha256,
        bytes32 schemaHash,
        Policy calldata p
    ) external returns (bytes32 id) {
        if (!consortium.isMember(msg.sender)) revert NotAMember(msg.sender);
        uint256 len = bytes(name).length;
        if (len == 0 || len > MAX_NAME_BYTES) revert InvalidName();
        if (bytes(metadataCid).length == 0) revert EmptyCid();
        id = keccak256(bytes(name));
        Dataset storage d = _datasets[id];
        if (d.owner != address(0)) revert DatasetExists(id);
        d.owner = msg.sender;
        d.registeredAt = uint64(block.number);
        d.metadataSha256 = metadataSha256;
        d.schemaHash = schemaHash;
        d.name = name;
        d.metadataCid = metadataCid;
        ++datasetCount;
        emit DatasetRegistered(id, msg.sender, name, metadataCid, metadataSha256, schemaHash);
        _setPolicy(id, d, p);
    }

    /// @notice Replace the policy of dataset `id` (owner only, not after revocation).
    /// @param id Dataset id.
    /// @param p The new policy.
    function setPolicy(bytes32 id, Policy calldata p) external {
        Dataset storage d = _owned(id);
        _setPolicy(id, d, p);
    }

    /// @notice Revoke dataset `id` for good (owner only); it admits no proposal afterwards.
    /// @param id Dataset id.
    function revokeDataset(bytes32 id) external {
        Dataset storage d = _owned(id);
        d.flags |= FLAG_REVOKED;
        emit DatasetRevoked(id);
    }

    // --------------------------------------------------------------- internal

    function _owned(bytes32 id) private view returns (Dataset storage d) {
        d = _datasets[id];
        if (d.owner == address(0)) revert UnknownDataset(id);
        if (d.owner != msg.sender) revert NotDatasetOwner(id, msg.sender);
        if (d.flags & FLAG_REVOKED != 0) revert DatasetIsRevoked(id);
    }

    function _setPolicy(bytes32 id, Dataset storage d, Policy calldata p) private {
        uint256 nPurposes = p.purposes.length;
        uint256 nProposals = p.proposalIds.length;
        uint256 nRequesters = p.requesters.length;
        if (nPurposes > MAX_POLICY_ENTRIES) revert TooManyPolicyEntries(nPurposes, MAX_POLICY_ENTRIES);
        if (nProposals > MAX_POLICY_ENTRIES) revert TooManyPolicyEntries(nProposals, MAX_POLICY_ENTRIES);
        if (nRequesters > MAX_POLICY_ENTRIES) revert TooManyPolicyEntries(nRequesters, MAX_POLICY_ENTRIES);
        if (p.expiry != 0 && (p.expiry <= block.timestamp || p.expiry > type(uint40).max)) {
            revert InvalidExpiry(p.expiry);
        }
        uint32 version = d.policyVersion + 1;
        for (uint256 i = 0; i < nPurposes; ++i) _purposeOk[id][version][p.purposes[i]] = true;
        for (uint256 i = 0; i < nProposals; ++i) _proposalOk[id][version][p.proposalIds[i]] = true;
        for (uint256 i = 0; i < nRequesters; ++i) _requesterOk[id][version][p.requesters[i]] = true;
        uint8 flags = d.flags & FLAG_REVOKED;
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

    function _check(bytes32 id, uint256 proposalId, bytes32 purposeHash, address requester)
        private
        view
        returns (address owner, bytes32 reason)
    {
        Dataset storage d = _datasets[id];
        owner = d.owner;
        if (owner == address(0)) return (owner, REASON_UNKNOWN_DATASET);
        uint8 flags = d.flags;
        uint32 version = d.policyVersion;
        if (flags & FLAG_REVOKED != 0) return (owner, REASON_REVOKED);
        if (d.expiry != 0 && block.timestamp >= d.expiry) return (owner, REASON_EXPIRED);
        if (flags & FLAG_ANY_PURPOSE == 0 && !_purposeOk[id][version][purposeHash]) {
            return (owner, REASON_PURPOSE);
        }
        if (flags & FLAG_ANY_PROPOSAL == 0 && !_proposalOk[id][version][proposalId]) {
            return (owner, REASON_PROPOSAL);
        }
        if (flags & FLAG_ANY_REQUESTER == 0 && !_requesterOk[id][version][requester]) {
            return (owner, REASON_REQUESTER);
        }
        return (owner, bytes32(0));
    }
}
