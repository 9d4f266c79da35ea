// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IConsortium} from "./IConsortium.sol";
import {IDatasetRegistry} from "./IDatasetRegistry.sol";
import {IProposals} from "./IProposals.sol";
import {IRounds} from "./IRounds.sol";
import {IReleases} from "./IReleases.sol";
import {ConsortiumBound} from "./ConsortiumBound.sol";
import {MemberVoting} from "./MemberVoting.sol";
import {Cid} from "./Cid.sol";

/// @title Releases
/// @notice Release votes on trained models and marks of withdrawn consent (see {IReleases}).
/// @dev A contract of its own, deployed after {Rounds}, so that the training contracts are not
/// touched: it reads the round phase, the outcome and the stored commitment hash from {IRounds}
/// and the revocation flag from {IDatasetRegistry}. Gas: a proposal stores the release record
/// and opens a vote (one tally slot); a vote writes the tally and the ballot; a mark reads two
/// round slots and one commitment, writes one flag and bumps the model's counter. Nothing loops
/// over members, rounds, commitments or models.
contract Releases is IReleases, MemberVoting, ConsortiumBound {
    /// @notice The dataset registry (revocations).
    IDatasetRegistry public immutable registry;
    /// @notice The proposals contract (kept for the deployment order; lineage goes through rounds).
    IProposals public immutable proposals;
    /// @notice The rounds contract (closed rounds, outcomes, commitments).
    IRounds public immutable rounds;
    /// @inheritdoc IReleases
    uint256 public releaseCount;

    mapping(uint256 id => Release) private _releases;
    mapping(uint256 proposalId => mapping(uint16 round => ModelStatus)) private _models;
    mapping(uint256 proposalId => mapping(uint16 round => mapping(bytes32 datasetId => bool))) private _marked;

    /// @notice Bind to the other four contracts (in deployment order), copying the consortium's voting rules.
    /// @param consortium_ The consortium.
    /// @param registry_ The dataset registry.
    /// @param proposals_ The proposals contract.
    /// @param rounds_ The rounds contract.
    constructor(IConsortium consortium_, IDatasetRegistry registry_, IProposals proposals_, IRounds rounds_)
        MemberVoting(consortium_.votingRules())
        ConsortiumBound(consortium_)
    {
        registry = registry_;
        proposals = proposals_;
        rounds = rounds_;
    }

    // ------------------------------------------------------------------ views

    /// @inheritdoc IReleases
    function release(uint256 id) external view returns (Release memory r, Tally memory tally) {
        return (_releases[id], _tallies[id]);
    }

    /// @inheritdoc IReleases
    function modelStatus(uint256 proposalId, uint16 round) external view returns (ModelStatus memory) {
        return _models[proposalId][round];
    }

    /// @inheritdoc IReleases
    function isMarked(uint256 proposalId, uint16 round, bytes32 datasetId) external view returns (bool) {
        return _marked[proposalId][round][datasetId];
    }

    // ----------------------------------------------------------------- release

    /// @inheritdoc IReleases
    function proposeRelease(uint256 proposalId, uint16 round, string calldata cardCid, bytes32 cardSha256)
        external
        onlyMember
        returns (uint256 id)
    {
        if (!Cid.isWellFormed(cardCid)) revert ReleasesInvalidCardCid();
        if (cardSha256 == bytes32(0)) revert ReleasesInvalidCardSha256();
        _requireClosed(proposalId, round);
        _requireReleasable(proposalId, round);
        id = ++releaseCount;
        Release storage r = _releases[id];
        r.proposalId = proposalId;
        r.round = round;
        r.proposer = msg.sender;
        r.aggregateSha256 = rounds.outcomeOf(proposalId, round).aggregateSha256;
        r.cardSha256 = cardSha256;
        r.cardCid = cardCid;
        (Tally storage t, uint64 deadline) = _openVote(id);
        emit ReleaseProposed(
            id, proposalId, round, msg.sender, r.aggregateSha256, cardCid, cardSha256, deadline, t.eligible
        );
    }

    /// @inheritdoc IReleases
    function voteRelease(uint256 id, Choice choice) external {
        _castVote(id, msg.sender, choice);
        emit ReleaseVoted(id, msg.sender, choice);
    }

    /// @inheritdoc IReleases
    function finalizeRelease(uint256 id) external returns (VoteState state) {
        Tally storage t;
        (t, state) = _finalizeVote(id);
        Release storage r = _releases[id];
        uint256 proposalId = r.proposalId;
        uint16 round = r.round;
        if (state == VoteState.Approved) {
            _requireReleasable(proposalId, round);
            _models[proposalId][round].releaseId = uint64(id);
        }
        emit ReleaseFinalized(id, proposalId, round, state, t.yes, t.no, t.abstain);
    }

    /// @inheritdoc IReleases
    function cancelRelease(uint256 id) external {
        Tally storage t = _activeTally(id);
        if (_releases[id].proposer != msg.sender) revert ReleasesNotProposer(id, msg.sender);
        if (t.yes != 0 || t.no != 0 || t.abstain != 0) revert ReleasesVotesAlreadyCast(id);
        _cancelVote(t);
        emit ReleaseCancelled(id);
    }

    // -------------------------------------------------------------- withdrawal

    /// @inheritdoc IReleases
    function markWithdrawn(
        uint256 proposalId,
        uint16 round,
        bytes32 datasetId,
        uint16 committedRound,
        address member,
        string calldata cid,
        bytes32 updateSha256,
        uint64 sampleCount
    ) external {
        (,bool revoked,) = registry.holding(datasetId);
        if (!revoked) revert ReleasesDatasetNotRevoked(datasetId);
        _requireClosed(proposalId, round);
        if (
            committedRound == 0 || committedRound > round
                || (committedRound != round && rounds.roundOf(proposalId, committedRound).phase != IRounds.Phase.Closed)
                || rounds.commitmentOf(proposalId, committedRound, member)
                    != rounds.commitmentHash(datasetId, cid, updateSha256, sampleCount)
        ) {
            revert ReleasesNotInLineage(proposalId, round, datasetId, committedRound);
        }
        mapping(bytes32 => bool) storage marked = _marked[proposalId][round];
        if (marked[datasetId]) revert ReleasesAlreadyMarked(proposalId, round, datasetId);
        marked[datasetId] = true;
        ++_models[proposalId][round].withdrawals;
        emit ModelWithdrawn(proposalId, round, datasetId, committedRound, member, msg.sender);
    }

    // --------------------------------------------------------------- internal

    function _requireClosed(uint256 proposalId, uint16 round) private view {
        if (rounds.roundOf(proposalId, round).phase != IRounds.Phase.Closed) {
            revert ReleasesModelNotClosed(proposalId, round);
        }
    }

    function _requireReleasable(uint256 proposalId, uint16 round) private view {
        ModelStatus storage m = _models[proposalId][round];
        if (m.withdrawals != 0) revert ReleasesModelWithdrawn(proposalId, round);
        if (m.releaseId != 0) revert ReleasesAlreadyReleased(proposalId, round, m.releaseId);
    }

    // ------------------------------------------------------------------ hooks

    function _eligibilitySnapshot() internal view override returns (uint32, uint32) {
        IConsortium.MemberSnapshot memory s = consortium.memberSnapshot();
        return (s.memberSeq, s.memberCount);
    }

    /// @dev Reverts with {ConsortiumNotAMember} unless `voter` is an active member.
    function _voterSeq(address voter) internal view override returns (uint32) {
        IConsortium.Eligibility memory e = consortium.eligibility(voter);
        if (!e.active) revert IConsortium.ConsortiumNotAMember(voter);
        return e.seq;
    }
}
