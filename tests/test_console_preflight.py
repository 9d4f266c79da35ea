"""The dry run behind the console's buttons: the contracts answer, nothing is sent (both backends)."""

from __future__ import annotations

import pytest

from fixtures_chain import VOTING_PERIOD
from fedchain.contracts.bindings import ProposalState, Vote, WouldSend
from fedchain.usecases import preflight, proposals


def test_an_accepted_vote_names_what_would_be_signed_and_sends_nothing(system):
    system.register(system.A, "ds-a")  # a proposal can name registered datasets only
    pid = system.propose(system.A, ["ds-a"])
    head = system.chain.block_number
    answer = preflight.ask(system.B, lambda g: proposals.vote(g, pid, "yes"))
    assert answer.ok and bool(answer)
    assert (answer.contract, answer.function) == ("Proposals", "vote")
    assert answer.args == {"id": pid, "choice": Vote.YES}
    assert answer.signer == system.b.address and answer.gas > 0
    assert system.chain.block_number == head, "a dry run mined a block"
    assert system.B.proposals.vote_of(pid, system.b.address) is None


def test_a_refusal_is_the_contracts_named_error(system):
    system.register(system.A, "ds-a")  # a proposal can name registered datasets only
    pid = system.propose(system.A, ["ds-a"])
    system.B.proposals.vote(pid, Vote.YES)
    again = preflight.ask(system.B, lambda g: proposals.vote(g, pid, "no"))
    assert not again and again.error == "MemberVotingAlreadyVoted" and again.reason == "already voted"
    outsider = preflight.ask(system.O, lambda g: proposals.vote(g, pid, "yes"))
    assert outsider.error == "ConsortiumNotAMember"
    early = preflight.ask(system.A, lambda g: proposals.finalize(g, pid))
    assert early.error == "MemberVotingStillOpen"
    system.chain.mine(VOTING_PERIOD + 1)
    late = preflight.ask(system.C, lambda g: proposals.vote(g, pid, "yes"))
    assert late.error == "MemberVotingClosed" and late.reason == "the voting period is over"
    ok = preflight.ask(system.C, lambda g: proposals.finalize(g, pid))
    assert ok.function == "finalize"
    assert system.A.proposals.proposal(pid).state == ProposalState.ACTIVE  # still: nothing was sent


def test_a_use_case_refusal_is_reported_too(system):
    answer = preflight.ask(system.A, lambda g: proposals.require(g, 99) and proposals.vote(g, 99, "yes"))
    assert not answer and answer.error == "UNKNOWN_PROPOSAL"


def test_a_dry_run_deployment_never_sends(system):
    system.register(system.A, "ds-a")  # a proposal can name registered datasets only
    pid = system.propose(system.A, ["ds-a"])
    with pytest.raises(WouldSend):
        system.B.dry_run().proposals.vote(pid, Vote.YES)
    assert system.B.proposals.vote_of(pid, system.b.address) is None
    system.B.proposals.vote(pid, Vote.YES)  # the deployment it came from still sends
    assert system.B.proposals.vote_of(pid, system.b.address) == Vote.YES
