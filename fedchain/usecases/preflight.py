"""Would the contracts accept this action now? Asked of the contracts themselves; nothing is sent.

A console must not offer a button the contract would refuse, and must show
exactly what would be signed when it would not. Repeating the contracts' rules
here (deadlines, eligibility, ownership, quorum state, rules added later) would
drift from them, so :func:`ask` runs the very use case on a dry-run deployment
(``gov.dry_run()``): the bindings build the same transaction, simulate it as the
signer against the pending block, and stop before signing. The answer is the
contract's own — its custom error and NatSpec phrase on refusal, the function
and arguments that would be signed on acceptance.

A use case that pins content before sending (``proposals.propose``) undoes its
own pin when the dry run stops it, as it does for any refusal. A dry run stops
at a use case's first transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fedchain.contracts.errors import ChainRevert, WouldSend
from fedchain.errors import FedchainError
from fedchain.usecases.ports import Governance
from fedchain.usecases.refusals import Refused


@dataclass(frozen=True)
class Preflight:
    """The contracts' answer: ``ok`` with what would be signed, or the refusal (``error``, ``reason``)."""

    ok: bool
    contract: str = ""
    function: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    signer: str = ""
    gas: int = 0
    #: The contract's custom error name ("MemberVotingClosed") or a use case's refusal code.
    error: str = ""
    #: Its one phrase ("the voting period is over").
    reason: str = ""
    #: The whole refusal as one line (phrase and arguments).
    message: str = ""

    def __bool__(self) -> bool:
        return self.ok


def ask(gov: Governance, action: Callable[[Governance], Any]) -> Preflight:
    """Run ``action(g)`` on ``g = gov.dry_run()`` and report whether its transaction would be accepted.

    ``action`` is a use case call such as ``lambda g: proposals.vote(g, 3, "yes")``.
    A refusal by a use case's own check (:class:`Refused`) is reported like a
    contract's; any other error propagates.
    """
    try:
        action(gov.dry_run())
    except WouldSend as would:
        return Preflight(True, would.contract, would.function, would.arguments, would.signer, would.gas)
    except ChainRevert as exc:
        return Preflight(False, error=exc.error, reason=exc.phrase, message=str(exc))
    except Refused as exc:
        return Preflight(False, error=exc.code, reason=exc.reason, message=str(exc))
    raise FedchainError("the action ended without a transaction to ask the contracts about")
