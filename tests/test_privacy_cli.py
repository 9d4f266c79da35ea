"""``fedchain dataset budget``: allowed, spent per proposal and round, and left - as the chain has them (anvil)."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout

import pytest

from fedchain.cli import main
from fedchain.cli.simulation import Simulation
from fedchain.config import NetworkConfig
from fedchain.contracts.bindings import Policy
from fedchain.sample_data import demo_plan
from fedchain.usecases.privacy import participation

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def cli(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue())


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory, anvil_node):
    """Two rounds of a DP-SGD plan on anvil; the first dataset has a budget of 2.0, the third none."""
    root = tmp_path_factory.mktemp("dpcli")
    sim = Simulation.create(root / "sim", hospitals=3, seed=11, chain_url=anvil_node.url, fsync=False)
    names = sim.names
    sim.register_datasets({h: dataclasses.replace(Policy.open(), max_epsilon_milli=2000 if h == names[0] else 0)
                           for h in names})
    plan = sim.plan(demo_plan(sim.data.hospitals, seed=11), rounds=2, min_participants=2,
                    privacy={"mode": "dpsgd", "epsilon": 0.8})
    pid = sim.approve(plan)
    nodes, coord = sim.nodes(), sim.coordinator()
    for r in (1, 2):
        sim.run_round(pid, r, nodes, coord)
    home = root / "home"
    home.mkdir()
    sim.deployment.save(home / "deployment.json")
    NetworkConfig(chain_url=anvil_node.url, deployment_file=str(home / "deployment.json"),
                  store=f"local:{root / 'sim' / 'store'}").save(home)
    return sim, pid, home


def test_dataset_budget_matches_the_chain(dp_run):
    sim, pid, home = dp_run
    fed = sim.fed()
    name = sim.names[0]
    code, out, err = cli("dataset", "budget", name, "--json", "--home", home)
    assert code == 0, err
    doc = json.loads(out)
    max_micro, spent = fed.registry.privacy_budget(name)
    assert doc["allowed"] == max_micro / 1e6 == 2.0
    assert doc["spent"] == spent / 1e6 and 0.7 < doc["spent"] <= 0.8
    assert doc["left"] == pytest.approx((max_micro - spent) / 1e6)
    [p] = doc["proposals"]
    events = fed.read_model().datasets["0x" + fed.registry.dataset(name).id.hex()].privacy_spends
    assert p["proposal"] == pid and p["rounds"] == {str(e.round): e.epsilon_micro / 1e6 for e in events}
    assert sum(p["rounds"].values()) == pytest.approx(doc["spent"]) and p["delta"] == 1e-5
    assert participation(fed.read_model(), pid, name, 3) == 3  # it took part in rounds 1 and 2
    code, out, _ = cli("dataset", "budget", name, "--home", home)
    assert code == 0 and "ε 2 " in out and f"ε {doc['spent']:g}" in out and "spent per proposal and round" in out
    code, out, _ = cli("dataset", "budget", sim.names[2], "--home", home)
    assert code == 0 and "no budget" in out
    code, _out, err = cli("dataset", "budget", "no-such-dataset", "--home", home)
    assert code != 0 and "no dataset named 'no-such-dataset'" in err
