"""Why something is refused: stable codes and their one wording.

Every refusal a member can meet — a node declining a proposal, the CLI's
checks before it sends a transaction, the console greying out a button — is a
:class:`Refused` carrying a **code** (stable, for programs and documents) and its
phrase. Where the code is a rule the contracts enforce, the phrase is the
contracts' own (the NatSpec of the custom error or policy reason, through
:mod:`fedchain.contracts.errors`), so the chain and fedchain never word the same
rule twice. Codes that only the node can check (its local schema) are worded here.
"""

from __future__ import annotations

from fedchain.contracts.errors import ERROR_PHRASES, POLICY_REASONS
from fedchain.errors import FedchainError

#: Codes checked only off chain, and their phrases.
LOCAL_REASONS: dict[str, str] = {
    "SCHEMA_MISMATCH": "the local schema does not hash to the schema registered on chain",
    "COORDINATOR_KEY_UNKNOWN": "the coordinator's encryption key is not registered on chain",
}

#: Admission codes that are contract errors: code -> the contract's custom-error name.
_CONTRACT_ERRORS: dict[str, str] = {
    "UNKNOWN_PROPOSAL": "MemberVotingUnknown",
    "NOT_A_TARGET": "RoundsNotATarget",
    "NOT_OWNER": "RoundsNotDatasetOwner",
    "DATASET_EXISTS": "DatasetRegistryAlreadyRegistered",
    "UNKNOWN_TARGET": "ProposalsUnknownTarget",
    "ROUND_NOT_OPEN": "RoundsNotOpen",
    "DEADLINE_PASSED": "RoundsDeadlinePassed",
    "ALREADY_COMMITTED": "RoundsAlreadyCommitted",
    "TOO_MANY_SAMPLES": "RoundsSampleCountTooHigh",
    "PRIVACY_BUDGET_EXCEEDED": "RoundsPrivacyBudgetExceeded",
    "INVALID_DELTA": "RoundsInvalidDelta",
}


def phrase(code: str) -> str:
    """The one wording of a refusal code (a policy reason, a contract rule or a local check)."""
    if code in POLICY_REASONS:
        return POLICY_REASONS[code]
    if code in _CONTRACT_ERRORS:
        return ERROR_PHRASES[_CONTRACT_ERRORS[code]]
    if code in LOCAL_REASONS:
        return LOCAL_REASONS[code]
    return code.lower().replace("_", " ")


def sentence(code: str, context: str = "") -> str:
    """A refusal as one line, worded as the chain words it (a policy reason reads as the contract's
    ``PolicyDenied`` does: "the dataset's policy does not admit the proposal: purpose not allowed")."""
    text = phrase(code)
    if code in POLICY_REASONS and code != "PROPOSAL_NOT_APPROVED":
        text = f"{ERROR_PHRASES['RoundsPolicyDenied']}: {text}"
    return f"{text} ({context})" if context else text


class Refused(FedchainError):
    """A use case refused an action; ``code`` is stable, the message is the phrase plus context."""

    def __init__(self, code: str, context: str = "") -> None:
        self.code = code
        self.reason = phrase(code)
        self.context = context
        super().__init__(sentence(code, context))
