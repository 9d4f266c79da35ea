"""Attack-and-defence experiments: a consortium in one process with some hospitals malicious.

:func:`run_experiment` builds a :class:`~fedchain.cli.simulation.Simulation` of
``hospitals`` members (every policy open, so all of them train), makes the last
``attackers`` of them :class:`~fedchain.cli.attacks.AttackingNode`\\ s, runs the
demo plan with a named aggregation rule, measures the global-test accuracy of
every round's aggregate, collects what the rule did (from the result the
coordinator published in the scores document) and replays the whole run as the
auditor. ``fedchain demo --attackers``, ``scripts/bench_robust`` and the tests
use it.

Rules (``RULES``), for ``n`` participating hospitals; ``f = max(1, (n - 3) // 2)``
is the most malicious updates Krum's guarantee (``n >= 2f + 3``) allows:

* ``fedavg`` -- the plain sample-weighted mean (no defence);
* ``median`` -- coordinate-wise median; ``trimmed_mean`` -- drops a third of the
  values at each end of every coordinate (``beta = 0.34``);
* ``krum`` (byzantine ``f``) and ``multikrum`` (byzantine ``f``, keeps ``n - 2``);
* ``normbound`` -- FedAvg with every update clipped to ``NORM_BOUND`` from the
  global model; ``foolsgold`` -- FedAvg with FoolsGold's re-weighting.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from fedchain.cli.attacks import ATTACKS, Attack
from fedchain.cli.simulation import Simulation
from fedchain.content import pin_document
from fedchain.contracts.bindings import Policy
from fedchain.coordinator.audit.replay import replay_live
from fedchain.errors import ConfigError, FedchainError
from fedchain.node.train import evaluate
from fedchain.sample_data import demo_plan
from fedchain.serialize import bytes_to_state_dict
from fedchain.tabular import load_dataset

#: Clip radius of the ``normbound`` rule: about twice an honest update's distance on the demo plan (measured).
NORM_BOUND = 2.0
RULES = ("fedavg", "median", "trimmed_mean", "krum", "multikrum", "normbound", "foolsgold")


def rule_plan_tables(rule: str, participants: int) -> dict[str, Any]:
    """The plan tables (``strategy``, ``robust``) of a named rule for ``participants`` hospitals."""
    f = max(1, (participants - 3) // 2)
    strategies: dict[str, dict[str, Any]] = {
        "fedavg": {"name": "fedavg"}, "normbound": {"name": "fedavg"}, "foolsgold": {"name": "fedavg"},
        "median": {"name": "median"},
        "trimmed_mean": {"name": "trimmed_mean", "beta": 0.34},
        "krum": {"name": "krum", "byzantine": f},
        "multikrum": {"name": "multikrum", "byzantine": f, "keep": max(1, participants - 2)},
    }
    if rule not in strategies:
        raise ConfigError(f"unknown rule {rule!r} (choose one of: {', '.join(RULES)})")
    robust = {"norm_bound": NORM_BOUND} if rule == "normbound" else {"foolsgold": True} if rule == "foolsgold" else {}
    return {"strategy": strategies[rule], "robust": robust}


@dataclass
class ExperimentRound:
    round: int
    test_accuracy: float
    decisions: list[dict]  # as recorded in the scores document
    scores: dict[str, float]  # member address -> contribution share
    values: dict[str, float]
    aggregate_seconds: float


@dataclass
class Experiment:
    rule: str
    attack: str
    attackers: list[str]  # hospital names
    rounds: list[ExperimentRound] = field(default_factory=list)
    replay: list[str] = field(default_factory=list)  # verdict per round
    names: dict[str, str] = field(default_factory=dict)  # member address -> hospital name
    seconds: float = 0.0
    sim: Simulation | None = field(default=None, repr=False)  # the consortium, for a caller that looks further

    @property
    def final_accuracy(self) -> float:
        return self.rounds[-1].test_accuracy

    @property
    def verified(self) -> bool:
        return bool(self.replay) and all(s == "VERIFIED" for s in self.replay)

    def excluded(self, r: ExperimentRound) -> list[str]:
        """Hospital names the rule excluded (or clipped, re-weighted) in a round, with the action."""
        return [f"{self.names.get(d['participant'], d['participant'][:10])} {d['action']}"
                for d in r.decisions if d["action"] != "trimmed"]


def public_validation(sim: Simulation) -> dict[str, Any]:
    """Pin the simulation's global-test CSV and its schema as the plan's public validation set.

    The demo's stand-in for a published reference set the consortium approves: no
    hospital's rows. (Scores never change the model, so measuring the model's test
    accuracy on the same rows leaks nothing into training.)
    """
    csv = Path(sim.data.test.csv_path).read_bytes()
    schema = Path(sim.data.test.schema_path).read_bytes()
    csv_cid, csv_sha = pin_document(sim.store, csv)
    schema_cid, schema_sha = pin_document(sim.store, schema)
    return {"csv_cid": csv_cid, "csv_sha256": _hex(csv_sha), "size": len(csv), "schema_cid": schema_cid,
            "schema_sha256": _hex(schema_sha)}


def _hex(sha: str) -> str:
    return sha if sha.startswith("0x") else "0x" + sha


def pick_attackers(names: list[str], rows: dict[str, int], k: int, largest: bool = False) -> list[str]:
    """The ``k`` malicious hospitals among ``names``: the last ``k`` (the demo split's smallest), or
    with ``largest`` the ``k`` with the most rows (ties by name), the most weight in a weighted mean."""
    if not k:
        return []
    if largest:
        return sorted(sorted(names, key=lambda n: (-rows[n], n))[:k], key=names.index)
    return names[-k:]


def run_experiment(root: Path, *, hospitals: int = 6, attackers: int = 0, attack: str = "sign-flip",
                   rule: str = "fedavg", rounds: int = 5, seed: int = 7, strength: float | None = None,
                   contribution: dict[str, Any] | None = None, chain_url: str = "eth-tester://",
                   replay: bool = True, progress: Callable[[str], None] | None = None,
                   largest: bool = False) -> Experiment:
    """Run one experiment (see the module docstring); ``root`` holds its data and store. The
    attackers are the last ``attackers`` hospitals of the demo split (its smallest), or with
    ``largest`` its first (the hospitals with the most rows, so the most weight in FedAvg)."""
    if attack not in ATTACKS:
        raise ConfigError(f"unknown attack {attack!r} (choose one of: {', '.join(ATTACKS)})")
    if not 0 <= attackers < hospitals:
        raise ConfigError(f"attackers must be from 0 to {hospitals - 1} of {hospitals} hospitals, not {attackers}")
    t0 = time.perf_counter()
    sim = Simulation.create(root, hospitals=hospitals, seed=seed, fsync=False, chain_url=chain_url)
    sim.register_datasets({n: Policy.open() for n in sim.names})
    base = demo_plan(sim.data.hospitals, seed=seed)
    tables = rule_plan_tables(rule, hospitals)
    changes: dict[str, Any] = {"rounds": rounds, **tables}
    if contribution is not None:
        if contribution.get("method", "similarity") != "similarity" and "validation" not in contribution:
            contribution = {**contribution, "validation": public_validation(sim)}
        changes["contribution"] = contribution
    plan = sim.plan(base, **changes)
    pid = sim.approve(plan)
    bad = pick_attackers(sim.names, {h.name: h.n_rows for h in sim.data.hospitals}, attackers, largest)
    nodes = sim.nodes({n: Attack(attack, strength) for n in bad})
    coord = sim.coordinator()
    test = load_dataset(sim.data.test.csv_path, sim.data.test.schema_path)
    out = Experiment(rule, attack if attackers else "none", bad,
                     names={m.address.lower(): n for m, n in zip(sim.members, sim.names)})
    for r in range(1, rounds + 1):
        if progress is not None:
            progress(f"{rule}, {attackers} x {attack}: round {r}/{rounds}")
        done = sim.run_round(pid, r, nodes, coord)
        if not done.result.closed:
            raise FedchainError(f"round {r} could not close: {done.result.reason}")
        model = bytes_to_state_dict(sim.store.get(done.result.aggregate_cid))
        out.rounds.append(ExperimentRound(
            r, evaluate(model, plan, test)["accuracy"], [d.to_dict() for d in done.result.decisions],
            dict(done.result.scores), dict(done.result.values), done.result.aggregate_seconds))
    if replay:
        report = replay_live(sim.fed(), sim.store, sim.auditor)
        out.replay = [v.status for v in report.rounds]
    out.seconds = time.perf_counter() - t0
    out.sim = sim
    return out
