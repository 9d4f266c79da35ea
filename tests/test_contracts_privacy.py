"""The ε ledger: Rounds charges each private commitment to its dataset's budget - both backends.

Every rule of the ledger has a test that its violation reverts (with the named error), on
eth-tester and on anvil (the ``system`` fixture is parametrized over both).
"""

from __future__ import annotations

import dataclasses

from fedchain.contracts.bindings import Policy, dataset_id
from fedchain.contracts.build import load_artifact
from fixtures_chain import ROWS, cid, reverts, sha

DELTA = 10_000_000  # 1e-5 in units of 1e-12


def _budgeted(s, eps_milli: int = 1000, rounds: int = 3, targets=("ds-a",)) -> int:
    """ds-a (A, budget ``eps_milli``) and ds-b (B, no budget); an approved proposal on ``targets``; round 1 open."""
    s.register(s.A, "ds-a", dataclasses.replace(Policy.open(), max_epsilon_milli=eps_milli))
    s.register(s.B, "ds-b")
    pid = s.approved_proposal(list(targets), rounds=rounds)
    s.K.rounds.open_round(pid, 1)
    return pid


def _commit(s, member, pid, rnd, ds, eps, delta=DELTA, tag="u"):
    return member.rounds.commit_update(pid, rnd, ds, cid(f"{tag}{ds}{rnd}"), sha(f"{tag}{ds}{rnd}"), 100, eps, delta)


def _next_round(s, pid, rnd):
    s.mine_past(s.fc.rounds.round_info(pid, rnd).deadline)  # so a round closes with the commitments it has
    s.K.rounds.close_round(pid, rnd, "bafy-agg", sha("agg"), "bafy-scores", sha("scores"))
    s.K.rounds.open_round(pid, rnd + 1)


def test_cumulative_spend_is_charged_and_capped(system):
    s = system
    pid = _budgeted(s, eps_milli=1000, targets=("ds-a", "ds-b"))
    first = _commit(s, s.A, pid, 1, "ds-a", 400_000)
    assert first.event("PrivacySpent").args == {
        "proposalId": pid, "round": 1, "datasetId": "0x" + dataset_id("ds-a").hex(), "epsilonMicro": 400_000,
        "deltaPico": DELTA, "datasetSpentMicro": 400_000,
    }
    s.commit(s.B, pid, 1, "ds-b")  # ds-b has no budget: a non-private update is admitted
    assert s.fc.registry.privacy_budget("ds-a") == (1_000_000, 400_000)
    _next_round(s, pid, 1)
    second = _commit(s, s.A, pid, 2, "ds-a", 300_000)
    assert second.event("PrivacySpent").args["datasetSpentMicro"] == 700_000
    assert s.fc.registry.dataset("ds-a").epsilon_spent_micro == 700_000
    _next_round(s, pid, 2)
    # round 3 would reach 1.2 > 1.0: reverts, and nothing changes
    with reverts("RoundsPrivacyBudgetExceeded", chargeMicro=500_000, spentMicro=700_000, maxMicro=1_000_000) as box:
        _commit(s, s.A, pid, 3, "ds-a", 500_000)
    assert box[0].phrase == "the update would exceed the dataset's privacy budget (epsilon)"
    assert s.fc.registry.privacy_budget("ds-a") == (1_000_000, 700_000)
    assert s.fc.rounds.commitment_of(pid, 3, s.a.address) is None
    # exactly at the budget is fine
    assert _commit(s, s.A, pid, 3, "ds-a", 300_000).event("PrivacySpent").args["datasetSpentMicro"] == 1_000_000
    model = s.fc.read_model()
    d = model.datasets["0x" + dataset_id("ds-a").hex()]
    assert d.epsilon_spent_micro == 1_000_000
    assert [(x.round, x.epsilon_micro, x.member) for x in d.privacy_spends] == [
        (1, 400_000, s.a.address.lower()), (2, 300_000, s.a.address.lower()), (3, 300_000, s.a.address.lower())]
    assert model.rounds[(pid, 2)].commits[0].privacy.epsilon_micro == 300_000


def test_spend_adds_up_across_proposals(system):
    s = system
    pid = _budgeted(s, eps_milli=1000)
    _commit(s, s.A, pid, 1, "ds-a", 600_000)
    other = s.approved_proposal(["ds-a"], rounds=1)
    s.K.rounds.open_round(other, 1)
    with reverts("RoundsPrivacyBudgetExceeded", chargeMicro=500_000, spentMicro=600_000):
        _commit(s, s.A, other, 1, "ds-a", 500_000)
    _commit(s, s.A, other, 1, "ds-a", 400_000)
    assert s.fc.registry.privacy_budget("ds-a")[1] == 1_000_000


def test_non_private_update_exceeds_any_budget(system):
    s = system
    pid = _budgeted(s)
    with reverts("RoundsPrivacyBudgetExceeded", chargeMicro=2**64 - 1, spentMicro=0, maxMicro=1_000_000):
        s.commit(s.A, pid, 1, "ds-a")


def test_delta_rules(system):
    s = system
    pid = _budgeted(s, targets=("ds-a", "ds-b"))
    with reverts("RoundsInvalidDelta", deltaPico=0, rowCount=ROWS):
        _commit(s, s.A, pid, 1, "ds-a", 300_000, delta=0)
    with reverts("RoundsInvalidDelta", deltaPico=10**12 // ROWS):  # δ must be below 1/rows
        _commit(s, s.A, pid, 1, "ds-a", 300_000, delta=10**12 // ROWS)
    with reverts("RoundsInvalidDelta", deltaPico=5):  # a non-private update states no δ
        _commit(s, s.B, pid, 1, "ds-b", 0, delta=5)
    _commit(s, s.A, pid, 1, "ds-a", 300_000, delta=10**12 // ROWS - 1)


def test_policy_update_cannot_lower_budget_below_spent(system):
    s = system
    pid = _budgeted(s, eps_milli=1000)
    _commit(s, s.A, pid, 1, "ds-a", 600_000)
    policy = s.fc.registry.policy("ds-a")
    with reverts("DatasetRegistryBudgetBelowSpent", maxEpsilonMilli=599, spentMicro=600_000) as box:
        s.A.registry.set_policy("ds-a", dataclasses.replace(policy, max_epsilon_milli=599))
    assert box[0].phrase.startswith("the privacy budget cannot be set below")
    s.A.registry.set_policy("ds-a", dataclasses.replace(policy, max_epsilon_milli=600))  # equal is fine
    assert s.fc.registry.privacy_budget("ds-a") == (600_000, 600_000)


def test_only_rounds_spends_a_budget(system):
    s = system
    s.register(s.A, "ds-a", dataclasses.replace(Policy.open(), max_epsilon_milli=1000))
    assert s.fc.registry.call("rounds") == s.deployment.addresses["Rounds"]
    with reverts("DatasetRegistryNotRounds", account=s.a.address):
        s.A.registry.transact("spendPrivacy", dataset_id("ds-a"), 1)


def test_rounds_refuses_a_registry_that_names_another_rounds(system):
    """The registry's forward reference is checked: a Rounds the registry does not name cannot be deployed."""
    s = system
    art = load_artifact("Rounds")
    factory = s.chain.w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    a = s.deployment.addresses
    with reverts("RoundsRegistryMismatch", named=a["Rounds"]):
        s.chain.send(s.a, factory.constructor(a["Consortium"], a["DatasetRegistry"], a["Proposals"]))


def test_the_budget_from_the_events_is_the_registrys(system):
    """The node's check before training reads the budget from the events (no contract call): it must be
    what ``privacyBudget`` answers at every step - registration, spends, a raised budget, no budget, a
    budget beyond what the registry can hold (capped as the contract caps it), an unknown dataset."""
    from fedchain.usecases.privacy import budget_from_events

    s = system

    def same(name: str) -> tuple[int, int]:
        got = budget_from_events(s.fc.read_model(), name)
        assert got == s.fc.registry.privacy_budget(name), name
        return got

    pid = _budgeted(s, eps_milli=1000, targets=("ds-a", "ds-b"))
    assert same("ds-a") == (1_000_000, 0) and same("ds-b") == (0, 0) and same("nowhere") == (0, 0)
    _commit(s, s.A, pid, 1, "ds-a", 400_000)
    assert same("ds-a") == (1_000_000, 400_000)
    s.A.registry.set_policy("ds-a", dataclasses.replace(s.fc.registry.policy("ds-a"), max_epsilon_milli=2**64 - 1))
    assert same("ds-a") == (2**64 - 2, 400_000)  # capped below the non-private charge
    s.A.registry.set_policy("ds-a", dataclasses.replace(s.fc.registry.policy("ds-a"), max_epsilon_milli=0))
    assert same("ds-a") == (0, 400_000)  # no budget any more; the ledger keeps what was spent
