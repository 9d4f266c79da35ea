// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title IDatasetRegistry
/// @notice Members register the datasets they hold (metadata lives in a content-addressed
/// document referenced by CID and sha256; the row count is on chain too, fixed at
/// registration) together with a data-use policy saying which proposals may train on them.
/// {IProposals} accepts only registered datasets as targets and records their owners;
/// {IRounds} enforces the policy and the row count on every update commitment, and charges
/// the differential-privacy ε of each commitment to the dataset's budget (the ε ledger: the
/// cumulative spend is kept here, beside the budget, so a policy update can check it).
interface IDatasetRegistry {
    /// @notice A data-use policy.
    /// @param purposes keccak256 of allowed purpose strings (empty = any purpose).
    /// @param proposalIds Allowed proposal ids.
    /// @param anyApprovedProposal Admit every approved proposal (proposalIds then unused).
    /// @param requesters Allowed proposers (empty = any member).
    /// @param expiry Unix time after which nothing is admitted (0 = never).
    /// @param maxEpsilonMilli Privacy budget in thousandths of epsilon (0 = no budget); {IRounds}
    /// refuses a commitment that would take the dataset's cumulative spend above it, and no
    /// policy update may set it below what is already spent.
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
    /// @param rowCount Rows the owner registered: no commitment or evaluation on the dataset may
    /// claim more samples (fixed at registration, so members see it when they vote).
    /// @param epsilonSpentMicro Privacy ε spent on the dataset so far, in millionths (the ledger;
    /// written only by {IRounds} through {spendPrivacy}).
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
        uint64 rowCount;
        uint64 epsilonSpentMicro;
        bytes32 metadataSha256;
        bytes32 schemaHash;
        string name;
        string metadataCid;
    }

    /// @notice A dataset was registered (its first policy follows in {PolicySet}).
    /// @param id Dataset id.
    /// @param owner The registering member.
    /// @param name Dataset name.
    /// @param metadataCid CID of the metadata document.
    /// @param metadataSha256 sha256 of the metadata document.
    /// @param schemaHash Schema hash.
    /// @param rowCount Registered rows.
    event DatasetRegistered(
        bytes32 indexed id,
        address indexed owner,
        string name,
        string metadataCid,
        bytes32 metadataSha256,
        bytes32 schemaHash,
        uint64 rowCount
    );
    /// @notice A dataset's policy was set (at registration or by its owner).
    /// @param id Dataset id.
    /// @param version The new policy version.
    /// @param policy The whole policy.
    event PolicySet(bytes32 indexed id, uint32 version, Policy policy);
    /// @notice The owner revoked a dataset; it admits nothing from now on.
    /// @param id Dataset id.
    event DatasetRevoked(bytes32 indexed id);

    /// @notice a dataset with this name is already registered
    /// @param id Dataset id.
    error DatasetRegistryAlreadyRegistered(bytes32 id);
    /// @notice no such dataset
    /// @param id Dataset id.
    error DatasetRegistryUnknownDataset(bytes32 id);
    /// @notice not the owner of the dataset
    /// @param datasetId Dataset id.
    /// @param account The caller.
    error DatasetRegistryNotOwner(bytes32 datasetId, address account);
    /// @notice the dataset is revoked
    /// @param id Dataset id.
    error DatasetRegistryRevoked(bytes32 id);
    /// @notice too many entries in a policy list
    /// @param given Its length.
    /// @param max MAX_POLICY_ENTRIES.
    error DatasetRegistryTooManyPolicyEntries(uint256 given, uint256 max);
    /// @notice the expiry must be in the future
    /// @param expiry The value given.
    error DatasetRegistryInvalidExpiry(uint64 expiry);
    /// @notice name is empty or too long
    error DatasetRegistryInvalidName();
    /// @notice a content identifier (CID) is empty
    error DatasetRegistryEmptyCid();
    /// @notice the row count must be positive
    error DatasetRegistryInvalidRowCount();
    /// @notice the privacy budget cannot be set below the epsilon already spent on the dataset
    /// @param id Dataset id.
    /// @param maxEpsilonMilli The budget requested, in thousandths of epsilon.
    /// @param spentMicro Epsilon spent so far (millionths).
    error DatasetRegistryBudgetBelowSpent(bytes32 id, uint64 maxEpsilonMilli, uint64 spentMicro);
    /// @notice only the Rounds contract may spend a privacy budget
    /// @param account The caller.
    error DatasetRegistryNotRounds(address account);

    /// @notice Number of datasets registered.
    /// @return The count.
    function datasetCount() external view returns (uint256);

    /// @notice The dataset `id` (all zero if unknown).
    /// @param id Dataset id.
    /// @return The dataset record.
    function dataset(bytes32 id) external view returns (Dataset memory);

    /// @notice The current policy of dataset `id`.
    /// @param id Dataset id.
    /// @return version Its version (0 if unknown).
    /// @return current The policy.
    function policy(bytes32 id) external view returns (uint32 version, Policy memory current);

    /// @notice The {IRounds} contract, the only one that may spend privacy budgets (fixed at
    /// deployment; {IRounds}' constructor checks it names itself).
    /// @return Its address.
    function rounds() external view returns (address);

    /// @notice The privacy budget of dataset `id` and what is spent of it.
    /// @param id Dataset id.
    /// @return maxMicro The budget in millionths of epsilon (0 = no budget).
    /// @return spentMicro Epsilon spent so far, in millionths.
    function privacyBudget(bytes32 id) external view returns (uint64 maxMicro, uint64 spentMicro);

    /// @notice Charge `chargeMicro` millionths of epsilon to dataset `id`'s budget, if it fits.
    /// NOT_PRIVATE (type(uint64).max) is the charge of an update without a differential-privacy
    /// guarantee: it fits only a dataset without a budget, and is not added to the spend.
    /// @dev Requirements: the caller is {rounds} ({DatasetRegistryNotRounds}). Does not revert
    /// when the charge does not fit: it returns ok = false and changes nothing, and {IRounds}
    /// reverts with its own error. O(1): one storage slot read and written.
    /// @param id Dataset id.
    /// @param chargeMicro Epsilon to add, in millionths.
    /// @return ok Whether it fit (and was added).
    /// @return spentMicro The spend after the charge (before it, if it did not fit).
    /// @return maxMicro The budget (0 = none).
    function spendPrivacy(bytes32 id, uint64 chargeMicro)
        external
        returns (bool ok, uint64 spentMicro, uint64 maxMicro);

    /// @notice Owner, revocation and row count of dataset `id` (read by {IProposals} to bind a
    /// proposal's targets to registered datasets, their owners and their sizes).
    /// @param id Dataset id.
    /// @return owner The owner (zero if unknown).
    /// @return revoked Whether it is revoked.
    /// @return rowCount Its registered rows.
    function holding(bytes32 id) external view returns (address owner, bool revoked, uint64 rowCount);

    /// @notice The policy verdict for an approved proposal whose requester and purpose the caller
    /// already knows ({IRounds} on every commitment and evaluation; it has the owner and row
    /// count from {IProposals-useTerms}). Whether a dataset admits a proposal now is: the
    /// proposal is Approved ({IMemberVoting-stateOf}, else REASON_PROPOSAL_NOT_APPROVED) and
    /// this returns no reason for its requester and purpose.
    /// @param id Dataset id.
    /// @param proposalId Proposal id (must be Approved; not re-checked here).
    /// @param purposeHash keccak256 of the proposal's purpose.
    /// @param requester The proposal's proposer.
    /// @return reason Zero if admitted, else one of DatasetRegistry's REASON_* constants.
    function checkUse(bytes32 id, uint256 proposalId, bytes32 purposeHash, address requester)
        external
        view
        returns (bytes32 reason);

    /// @notice Register a dataset under `name` with its row count and first policy (version 1).
    /// @dev Requirements: the caller is an active member ({ConsortiumNotAMember}); the name is
    /// 1..MAX_NAME_BYTES bytes ({DatasetRegistryInvalidName}); the metadata CID is not empty
    /// ({DatasetRegistryEmptyCid}); the row count is positive ({DatasetRegistryInvalidRowCount});
    /// no dataset of that name exists ({DatasetRegistryAlreadyRegistered}); the policy is valid
    /// (see {setPolicy}). Emits {DatasetRegistered} and {PolicySet}.
    /// @param name Human-readable name, unique in the registry.
    /// @param metadataCid CID of the metadata document (schema, row count, description).
    /// @param metadataSha256 sha256 of the metadata document.
    /// @param schemaHash Hash of the data schema.
    /// @param rowCount Rows in the dataset (the most samples a commitment on it may claim).
    /// @param p The policy.
    /// @return id keccak256(bytes(name)).
    function registerDataset(
        string calldata name,
        string calldata metadataCid,
        bytes32 metadataSha256,
        bytes32 schemaHash,
        uint64 rowCount,
        Policy calldata p
    ) external returns (bytes32 id);

    /// @notice Replace the policy of dataset `id` (a new version).
    /// @dev Requirements: the dataset exists ({DatasetRegistryUnknownDataset}), the caller owns
    /// it ({DatasetRegistryNotOwner}) and it is not revoked ({DatasetRegistryRevoked}); each
    /// policy list has at most MAX_POLICY_ENTRIES entries ({DatasetRegistryTooManyPolicyEntries});
    /// a non-zero expiry is in the future and fits 40 bits ({DatasetRegistryInvalidExpiry}); a
    /// non-zero privacy budget is at least the epsilon already spent
    /// ({DatasetRegistryBudgetBelowSpent}; 0 removes the budget). Emits {PolicySet}.
    /// @param id Dataset id.
    /// @param p The new policy.
    function setPolicy(bytes32 id, Policy calldata p) external;

    /// @notice Revoke dataset `id` for good; it admits no proposal afterwards.
    /// @dev Requirements: the dataset exists ({DatasetRegistryUnknownDataset}), the caller owns
    /// it ({DatasetRegistryNotOwner}) and it is not revoked yet ({DatasetRegistryRevoked}).
    /// Emits {DatasetRevoked}.
    /// @param id Dataset id.
    function revokeDataset(bytes32 id) external;
}
