"""Differential privacy at the hospital: accounting, clipping, plan rules, the node's budget refusal."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from opacus import PrivacyEngine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from fedchain.cli.simulation import Simulation
from fedchain.contracts.bindings import Policy
from fedchain.plan import PlanError
from fedchain.privacy import clip_and_noise, cumulative_epsilon, dp_params, round_spend, run_epsilon, secure_generator
from fedchain.sample_data import demo_plan
from fedchain.usecases import privacy as uc_privacy


def _plan(**privacy):
    return demo_plan().with_changes(privacy={"mode": "dpsgd", **privacy})


# ------------------------------------------------------------------ accounting


def test_epsilon_equals_the_library_accountant_after_real_dpsgd_training():
    """Opacus's PrivacyEngine trains the same number of steps at the same rate and noise: same ε."""
    n, batch, epochs, z = 96, 16, 2, 1.3
    plan = demo_plan().with_changes(batch_size=batch, local_epochs=epochs,
                                    privacy={"mode": "dpsgd", "noise_multiplier": z, "clipping_norm": 1.0})
    params = dp_params(plan, n)
    model = nn.Linear(3, 2)
    data = DataLoader(TensorDataset(torch.randn(n, 3), torch.randint(0, 2, (n,))), batch_size=batch)
    engine = PrivacyEngine(accountant="rdp")
    model, opt, data = engine.make_private(module=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                                           data_loader=data, noise_multiplier=z, max_grad_norm=1.0)
    steps = 0
    for _ in range(epochs):
        for x, y in data:
            opt.zero_grad()
            if len(y):
                nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            steps += 1
    assert steps == params.steps_per_round and params.sample_rate == pytest.approx(1 / math.ceil(n / batch))
    assert cumulative_epsilon(params, 1) == pytest.approx(engine.get_epsilon(1e-5), rel=1e-12)


def test_target_epsilon_is_met_over_the_whole_run_and_rounds_add_up():
    for mode in ("dpsgd", "client"):
        plan = demo_plan().with_changes(privacy={"mode": mode, "epsilon": 1.0})
        total = run_epsilon(plan, 120)
        assert 0.95 <= total <= 1.0  # calibrated to the target within Opacus's tolerance
        spends = [round_spend(plan, 120, k)[0] for k in range(1, plan.rounds + 1)]
        assert sum(spends) == math.ceil(total * 1_000_000)  # the chain's sum is the accountant's total, rounded up
        assert round_spend(plan, 120, 1)[1] == 10_000_000  # δ 1e-5 in units of 1e-12
    client = dp_params(demo_plan().with_changes(privacy={"mode": "client", "noise_multiplier": 4.0}), 120)
    assert (client.sample_rate, client.steps_per_round, client.accountant_noise) == (1.0, 1, 2.0)  # sensitivity 2C
    assert round_spend(demo_plan(), 120, 1) == (0, 0)  # not private


def test_prv_accountant_is_available():
    plan = _plan(noise_multiplier=1.0, accountant="prv")
    rdp = run_epsilon(_plan(noise_multiplier=1.0), 100)
    assert 0 < run_epsilon(plan, 100) < rdp * 1.2


def test_clip_bounds_the_update_and_noise_is_fresh():
    update = {"w": torch.full((4, 5), 3.0), "b": torch.full((5,), -4.0)}
    clipped, norm = clip_and_noise(update, 2.0, 0.0, secure_generator())
    assert norm == pytest.approx(math.sqrt(20 * 9 + 5 * 16))
    assert float(torch.sqrt(sum((t ** 2).sum() for t in clipped.values()))) == pytest.approx(2.0, rel=1e-6)
    small = {"w": torch.full((2,), 0.1)}
    assert torch.equal(clip_and_noise(small, 2.0, 0.0, secure_generator())[0]["w"], small["w"])  # inside: unchanged
    a = clip_and_noise(update, 2.0, 1.0, secure_generator())[0]["w"]
    b = clip_and_noise(update, 2.0, 1.0, secure_generator())[0]["w"]
    assert not torch.equal(a, b)  # a fresh seed every time: nobody can replay (and subtract) the noise
    assert float((a - clipped["w"]).std()) == pytest.approx(1.0, abs=0.6)


def test_plan_rules():
    with pytest.raises(PlanError, match="give exactly one of privacy.epsilon and privacy.noise_multiplier"):
        demo_plan().with_changes(privacy={"mode": "dpsgd"})
    with pytest.raises(PlanError, match="give exactly one"):
        demo_plan().with_changes(privacy={"mode": "client", "epsilon": 1.0, "noise_multiplier": 1.0})
    with pytest.raises(PlanError, match='is set but privacy.mode is "none"'):
        demo_plan().with_changes(privacy={"epsilon": 1.0})
    with pytest.raises(PlanError, match="cannot train with FedProx"):
        demo_plan().with_changes(strategy={"name": "fedprox", "mu": 0.1}, privacy={"mode": "dpsgd", "epsilon": 1.0})
    with pytest.raises(PlanError, match="privacy.delta"):
        demo_plan().with_changes(privacy={"mode": "dpsgd", "epsilon": 1.0, "delta": 0.0})


# ------------------------------------------------------------- the node and the chain


@pytest.fixture
def sim(tmp_path):
    s = Simulation.create(tmp_path, hospitals=4, seed=7, fsync=False)
    return s


def _policies(sim, budget_milli: dict[str, int]) -> dict[str, Policy]:
    return {h: dataclasses.replace(Policy.open(), max_epsilon_milli=budget_milli.get(h, 0)) for h in sim.names}


def test_dp_run_spends_the_plan_epsilon_and_the_node_refuses_beyond_the_budget(sim):
    names = sim.names
    # names[0] can take the whole run, names[1] only its first round (~0.57 of the 1.0), names[2] has no budget
    sim.register_datasets(_policies(sim, {names[0]: 1000, names[1]: 700}))
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=3, datasets=names[:3], min_participants=1,
                    privacy={"mode": "dpsgd", "epsilon": 1.0})
    pid = sim.approve(plan)
    nodes, coord = sim.nodes()[:3], sim.coordinator()
    r1 = sim.run_round(pid, 1, nodes, coord)
    assert sorted(r1.committed) == sorted(names[:3]) and r1.result.closed
    r2 = sim.run_round(pid, 2, nodes, coord)
    # names[1]: its budget of 0.7 cannot take a second round: refused before training, with the chain's words
    assert set(r2.refused) == {names[1]}
    assert "the update would exceed the dataset's privacy budget (epsilon)" in r2.refused[names[1]]
    assert "left of 0.7" in r2.refused[names[1]]
    sim.run_round(pid, 3, nodes, coord)
    fed = sim.fed()
    for i, name in enumerate(names[:3]):
        b = uc_privacy.budget(fed, name)
        rows = next(c.n_samples for c in fed.read_model().rounds[(pid, 1)].commits
                    if c.dataset_id == "0x" + fed.registry.dataset(name).id.hex())
        expected = [round_spend(plan, rows, k)[0] for k in range(1, 4)]
        if name == names[1]:
            expected = expected[:1]
        assert b.spent_micro == sum(expected) == b.events_total_micro  # chain ledger = events = accountant
        assert [e for _r, e in sorted(b.proposals[0].rounds.items())] == expected
    assert uc_privacy.budget(fed, names[0]).left_micro == 1_000_000 - uc_privacy.budget(fed, names[0]).spent_micro
    assert uc_privacy.budget(fed, names[2]).left_micro is None  # no budget


def test_a_non_private_plan_is_refused_by_a_budgeted_dataset(sim):
    names = sim.names
    sim.register_datasets(_policies(sim, {names[0]: 5000}))
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=1, datasets=names[:2], min_participants=1)
    pid = sim.approve(plan)
    r1 = sim.run_round(pid, 1, sim.nodes()[:2], sim.coordinator())
    assert list(r1.refused) == [names[0]] and "adds no differential privacy" in r1.refused[names[0]]
    assert sim.fed().registry.privacy_budget(names[0]) == (5_000_000, 0)


def test_the_node_refuses_a_delta_the_chain_would_refuse(sim):
    """δ must be below 1/rows: a plan whose δ is too large for a dataset is refused before training."""
    names = sim.names
    sim.register_datasets(_policies(sim, {}))
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=7), rounds=1, datasets=names[:2], min_participants=1,
                    privacy={"mode": "dpsgd", "epsilon": 1.0, "delta": 0.05})
    pid = sim.approve(plan)
    r1 = sim.run_round(pid, 1, sim.nodes()[:2], sim.coordinator())
    assert set(r1.refused) == set(names[:2])
    assert all("delta must be positive and below 1/rows" in why for why in r1.refused.values())
