"""Integration: 3 hospital processes + a coordinator process + anvil + js-ipfs, 3 rounds.

The role processes are separate OS processes (``python -m fedchain.cli node
run`` / ``coordinator run``) that share nothing but the chain's JSON-RPC and
the IPFS daemon's RPC API. The test then reads the on-chain history and
replays it as an auditor would.
"""

from __future__ import annotations

import os

import pytest

from fedchain.contracts.bindings import Chain, Deployment
from fedchain.coordinator.audit.replay import replay_live
from fedchain.cli.localnet import LocalNetwork
from fedchain.identity import dev_identity
from fedchain.ipfs.kubo import KuboStore

pytestmark = [pytest.mark.slow, pytest.mark.anvil, pytest.mark.ipfsd]


def test_three_hospital_processes_and_a_coordinator_run_three_rounds(tmp_path):
    with LocalNetwork(tmp_path / "net", hospitals=3, rounds=3) as net:
        net.start_services()
        info = net.set_up_governance()
        net.launch()
        codes = net.wait(timeout=600)
        assert codes == {"hospital-a": 0, "hospital-b": 0, "hospital-c": 0, "coordinator": 0}
        pids = [p.pid for p in net.procs.values()]

        chain = Chain.connect(net.anvil.url)
        fed = chain.attach(Deployment.load(tmp_path / "net" / "deployment.json"))
        pid = info["proposal"]
        members = {a.lower() for a in info["members"]}
        events = fed.events()
        for r in (1, 2, 3):
            ri = fed.rounds.round_info(pid, r)
            assert ri.phase.name == "CLOSED", (r, ri)
            committers = {e.args["member"].lower() for e in events
                          if e.event == "UpdateCommitted" and e.args["round"] == r}
            assert committers == members
            assert ri.evaluations == 3 and ri.global_metric_ppm is not None and ri.global_metric_ppm > 850_000
        # Rounds happened in order, each opened only after the previous one closed.
        order = [(e.event, e.args.get("round")) for e in events if e.event in ("RoundOpened", "RoundClosed")]
        assert order == [("RoundOpened", 1), ("RoundClosed", 1), ("RoundOpened", 2), ("RoundClosed", 2),
                         ("RoundOpened", 3), ("RoundClosed", 3)]
        # Every update crossed process boundaries through the daemon: the auditor re-derives all rounds.
        with KuboStore(net.ipfs.api_addr) as store:
            report = replay_live(fed, store, dev_identity(info["auditor_dev"]))
        assert report.ok and [v.status for v in report.rounds] == ["VERIFIED"] * 3
    for p in pids + [net.anvil.pid, net.ipfs.pid]:
        if p is not None:
            with pytest.raises(ProcessLookupError):
                os.kill(p, 0)
