"""What nodes, the coordinator and the replay read from the chain and the store under ``mode = "secagg"``.

The phase messages are named on chain by ``SecureRounds`` events (keys, shares, unmasking) and by
the members' ``Rounds`` commitments (masked inputs, marked in ``SecureRounds``); here they are
gathered per phase as ``{participant id: bytes}``, each fetched bounded and checked against the
sha256 its sender's transaction recorded (see :mod:`fedchain.secagg_round`).
"""

from __future__ import annotations

from fedchain.content import ContentError, fetch_document
from fedchain.errors import ContentUnavailable, SizeLimitExceeded
from fedchain.plan import TrainingPlan
from fedchain.secagg import SecAggConfig, SecAggError
from fedchain.secagg_round import RoundFacts, SecAggRoundError, message_bound, round_config
from fedchain.validation import model_layout

__all__ = ["facts", "config", "phase_messages", "MESSAGE_FAULTS"]

#: What a member's phase message can cause when it is read: not in the store, not what its sender's
#: transaction hashed, too large, not decodable or not for this round. Each stops the round (the chain
#: names who posted the message), never the process; an unreachable store (``StoreUnavailable``) is not
#: among them (that is an outage, waited for by the transports).
MESSAGE_FAULTS = (SecAggRoundError, SecAggError, ContentUnavailable, ContentError, SizeLimitExceeded)


def facts(gov, proposal_id: int, round_: int) -> RoundFacts:
    """The public facts of a round's session (it must have started)."""
    session = gov.secure.session(proposal_id, round_)
    if session.stage.name == "NONE":
        raise SecAggRoundError(f"no secure-aggregation session was started for round {round_} of proposal {proposal_id}")
    p = gov.proposals.proposal(proposal_id)
    rows = 0
    for d in p.targets:
        info = gov.registry.dataset(d)
        rows += info.row_count if info is not None else 0
    return RoundFacts(gov.deployment.chain_id, gov.deployment.addresses["SecureRounds"], proposal_id, round_,
                      session.seed, tuple(o.lower() for o in p.target_owners), rows)


def config(gov, plan: TrainingPlan, proposal_id: int, round_: int) -> tuple[RoundFacts, SecAggConfig]:
    f = facts(gov, proposal_id, round_)
    return f, round_config(f, plan, model_layout(plan.model))


def phase_messages(gov, store, f: RoundFacts, cfg: SecAggConfig, phase: int) -> dict[int, bytes]:
    """Phase ``phase``'s messages as the chain names them, ``{id: bytes}`` (hash-checked, bounded)."""
    rec = gov.secure.record(f.proposal, f.round)
    if rec is None:
        return {}
    ids = f.ids
    if phase == 2:
        commits = {c.member.lower(): c for c in gov.rounds.commitments(f.proposal, f.round)}
        named = {m: (commits[m].cid, commits[m].sha256) for m in rec.masked if m in commits}
    else:
        named = rec.messages[phase]
    out = {}
    for member, (cid, sha) in named.items():
        if member not in ids:
            raise SecAggRoundError(f"{member} sent a phase-{phase} message but is not a participant")
        out[ids[member]] = fetch_document(store, cid, sha, max_size=message_bound(cfg, phase))
    return out
