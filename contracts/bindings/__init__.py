"""The typed bindings of fedchain's contracts - the only code that talks to web3.

Modules:

* :mod:`~fedchain.contracts.bindings.chain` - :class:`Chain`, a connection: accounts,
  blocks, dev controls, sending (simulate, sign locally, send raw, wait), deployment;
* :mod:`~fedchain.contracts.bindings.backend` - the backend interface and the choice by
  URL; :mod:`~fedchain.contracts.bindings.tester` (``eth-tester://``, in process) and
  :mod:`~fedchain.contracts.bindings.rpc` (``http(s)://``: anvil, geth, Besu);
* :mod:`~fedchain.contracts.bindings.deployment` - :class:`Fedchain`, one deployment:
  the clients, events, the per-connection read model;
* :mod:`~fedchain.contracts.bindings.clients` - one thin client per contract;
* :mod:`~fedchain.contracts.bindings.codec` - ids and hashes, JSON-friendly values,
  custom-error decoding;
* :mod:`~fedchain.contracts.bindings.proofs` - raw block headers and receipts off a node,
  and offline decoding of raw logs (what anchors an exported audit trail).

Typical use::

    chain = Chain.connect("eth-tester://")
    alice, bob, coord = chain.dev_accounts[:3]
    dep = chain.deploy(alice, founders=[FounderSpec("A", alice.address, key_a), ...],
                       coordinator=coord.address)
    fed = chain.attach(dep).as_(alice)
    pid = fed.proposals.submit_proposal(...).value
    fed.registry.datasets(), fed.consortium.members(), fed.rounds.commitments(pid, 1)
"""

import os

# Keccak-256 for web3, eth-account and py-evm: eth-hash takes the first backend it finds,
# PyCryptodome's, which costs ~6.5 us a hash against ~0.9 us for pysha3's C one (safe-pysha3,
# a dependency); an in-process round hashes thousands of times (trie nodes, addresses). Chosen
# at eth-hash's first hash, so set before anything here can hash; an explicit setting wins.
os.environ.setdefault("ETH_HASH_BACKEND", "pysha3")

from fedchain.contracts.bindings.chain import DEV_FUNDING_WEI, Chain  # noqa: E402
from fedchain.contracts.bindings.codec import commitment_hash, dataset_id, purpose_hash
from fedchain.contracts.bindings.deployment import Fedchain
from fedchain.contracts.errors import (
    ERROR_PHRASES,
    POLICY_REASONS,
    ChainError,
    ChainRevert,
    ChainUnavailable,
    TransactionConflict,
    WouldSend,
    policy_reason,
)
from fedchain.contracts.models import (
    Admission,
    ChainEvent,
    DatasetInfo,
    Deployment,
    DeploymentError,
    Evaluation,
    FounderSpec,
    MemberInfo,
    ModelStatus,
    MotionInfo,
    MotionKind,
    MotionState,
    Policy,
    ProposalInfo,
    ProposalState,
    ReleaseInfo,
    RoundInfo,
    RoundPhase,
    TxResult,
    UpdateCommitment,
    Vote,
    VoteState,
    VotingParams,
)
# DEV ONLY: anvil's ten public dev keys, defined once with the identities.
from fedchain.identity import DEV_MNEMONIC, DEV_PRIVATE_KEYS

__all__ = [
    "Admission", "Chain", "ChainError", "ChainEvent", "ChainRevert", "ChainUnavailable",
    "DEV_FUNDING_WEI", "DEV_MNEMONIC", "DEV_PRIVATE_KEYS", "DatasetInfo", "Deployment", "DeploymentError",
    "ERROR_PHRASES", "Evaluation", "Fedchain", "FounderSpec", "MemberInfo", "ModelStatus", "MotionInfo", "MotionKind",
    "MotionState", "POLICY_REASONS", "Policy", "ProposalInfo", "ProposalState", "ReleaseInfo", "RoundInfo", "RoundPhase",
    "TransactionConflict", "TxResult", "UpdateCommitment", "Vote", "VoteState", "VotingParams", "commitment_hash",
    "dataset_id", "WouldSend", "policy_reason", "purpose_hash",
]
