"""An edited trail checked against a real node: ``fedchain audit replay --trail T --chain URL``.

The run lives on anvil (a real JSON-RPC node); a dishonest coordinator silently
leaves one hospital's update out, the trail is exported, and someone deletes the
evidence from it (the ``UpdateCommitted`` line, the round's count edited to
match). Against the node every event is compared -- block and its hash,
transaction hash, log index, contract, event, arguments, time, gas -- and the
first mismatch is named. The same trail also anchors offline (anvil's headers
rebuilt from JSON-RPC hash to its block hashes). ``fedchain audit replay`` runs
through ``fedchain.cli.main``, exit codes included.
"""

from __future__ import annotations

import json

import pytest

from adversary import LyingCoordinator, make_world
from fedchain.cli import main as cli_main
from fedchain.coordinator.audit.anchor import ANCHORED, DISCREPANCY, check_offline, check_online, connect
from fedchain.coordinator.audit.trail import export_trail, read_trail

pytestmark = pytest.mark.anvil

VICTIM = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory, anvil_node) -> dict:
    d = tmp_path_factory.mktemp("trail-online")
    world = make_world(d, hospitals=3, min_participants=2, rounds=1, chain_url=anvil_node.url)
    victim = world.address(VICTIM).lower()
    world.fresh(LyingCoordinator, tamper=lambda items: [(c, o) for c, o in items if c.participant.lower() != victim])
    deadline = world.open(1).value
    world.commit_honest(1, (0, 1, 2))
    world.sim.chain.mine(deadline - world.sim.chain.block_number + 1)
    assert world.coord.close_round(world.pid, 1).closed
    export_trail(world.fed, world.sim.store, d / "trail.jsonl")
    lines = (d / "trail.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines]
    commit = next(r for r in recs if r.get("event") == "UpdateCommitted" and r["args"]["member"].lower() == victim)
    for r in recs:
        if r.get("event") == "RoundClosed":
            r["args"]["committed"] -= 1
    (d / "edited.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs if r != commit))
    return {"dir": d, "url": anvil_node.url, "store": world.sim.store, "commit": commit, "victim": victim,
            "head": world.sim.chain.block_hash(world.sim.chain.block_number), "auditor_dev": 4}


def test_the_true_trail_matches_the_node_and_its_own_headers(run):
    trail = read_trail(run["dir"] / "trail.jsonl")
    a = check_online(trail, connect(run["url"]))
    assert a.status == ANCHORED, a.detail
    assert f"match the node at {run['url']}" in a.detail
    assert check_offline(trail, run["head"]).status == ANCHORED


def test_the_edited_trail_is_named_against_the_node(run):
    a = check_online(read_trail(run["dir"] / "edited.jsonl"), connect(run["url"]))
    c = run["commit"]
    assert a.status == DISCREPANCY
    assert f"Rounds.UpdateCommitted at block {c['block']}, log {c['log_index']}" in a.detail


def test_the_cli_against_the_node(run, capsys):
    base = ["audit", "replay", "--store", str(run["store"].root), "--auditor-dev", str(run["auditor_dev"]),
            "--chain", run["url"]]
    assert cli_main(base + ["--trail", str(run["dir"] / "edited.jsonl"), "--allow-unverifiable"]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "trail DISCREPANCY" in out and "Rounds.UpdateCommitted" in out
    # The true trail is the chain's, and shows what the coordinator did.
    assert cli_main(base + ["--trail", str(run["dir"] / "trail.jsonl")]) == 1
    out = " ".join(capsys.readouterr().out.split())
    assert "trail ANCHORED" in out and f"update of {run['victim']} verifies but the scores document" in out
