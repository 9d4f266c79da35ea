"""A coordinator killed at each of its steps and started again; then one run for every proposal left.

anvil (1 s blocks) + js-ipfs + 3 ``fedchain node run`` processes + ``fedchain
coordinator run``, all real processes. The coordinator is SIGKILLed (a crash:
nothing finished, nothing said) and started again

1. right after it opened round 1;
2. in round 2 after two of three updates are committed (hospital C is held
   with SIGSTOP until the new coordinator runs);
3. right after it closed round 3, before the metric (C is held again, so its
   evaluation — which the coordinator waits for — is not in yet);
4. after it recorded the last metric: a plain ``coordinator run`` then finds
   nothing to do and exits 0 (it used to fail: "the global metric of this
   round is already recorded").

Every round completes exactly once (one open, one close, one metric), every
hospital's update is in every round, and the audit replay verifies them all.
Then two new proposals are approved, and ``coordinator run`` and the nodes are
started *without* ``--proposal``: they drive exactly the two new ones (the
finished one gets no new event) and exit 0 when none is left.
"""

from __future__ import annotations

import signal
import time

import pytest

from fedchain.cli.localnet import LocalNetwork
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.coordinator.audit.replay import replay_live
from fedchain.identity import dev_identity
from fedchain.ipfs.kubo import KuboStore

pytestmark = [pytest.mark.slow, pytest.mark.anvil, pytest.mark.ipfsd]

HOSPITALS = ("hospital-a", "hospital-b", "hospital-c")


def wait_until(what: str, predicate, net: LocalNetwork, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for name, proc in net.procs.items():
            code = proc.poll()
            assert code is None or code == 0, f"{name} exited with {code}:\n{net.log_tail(name)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {n}\n{net.log_tail(n)}" for n in net.procs)
        time.sleep(0.05)


def test_a_coordinator_killed_at_each_step_completes_every_round_once(tmp_path):
    t0 = time.monotonic()
    with LocalNetwork(tmp_path / "net", hospitals=3, rounds=3) as net:
        net.start_services()
        info = net.set_up_governance()
        pid = info["proposal"]
        net.launch()
        fed = Chain.connect(net.anvil.url).attach(Deployment.load(net.root / "deployment.json"))
        c_address = info["members"][2].lower()

        def rnd(r):
            return fed.read_model().round(pid, r)

        def crash_and_restart(where: str) -> None:
            net.kill_role("coordinator")
            kills.append((where, fed.rounds.round_info(pid, fed.rounds.last_round(pid))))
            net.start_role("coordinator")

        kills: list = []
        # 1. after open
        wait_until("round 1 to open", lambda: rnd(1), net)
        crash_and_restart("after open")
        assert kills[-1][1].round == 1 and kills[-1][1].phase.name == "OPEN"

        # 2. after some commits: C is held, A and B commit, the coordinator dies waiting for C
        wait_until("round 2 to open", lambda: rnd(2), net)
        net.procs["hospital-c"].signal(signal.SIGSTOP)
        wait_until("two commitments in round 2", lambda: len(rnd(2).commits) >= 2, net)
        crash_and_restart("after two commits")
        net.procs["hospital-c"].signal(signal.SIGCONT)
        assert kills[-1][1].round == 2 and kills[-1][1].phase.name == "OPEN" and kills[-1][1].committed == 2

        # 3. after close, before the metric: C commits round 3, then is held so its evaluation is missing
        wait_until("C's commitment in round 3",
                   lambda: rnd(3) and any(c.member == c_address for c in rnd(3).commits), net)
        net.procs["hospital-c"].signal(signal.SIGSTOP)
        wait_until("round 3 to close", lambda: rnd(3).closed, net)
        crash_and_restart("after close")
        net.procs["hospital-c"].signal(signal.SIGCONT)
        assert kills[-1][1].phase.name == "CLOSED" and kills[-1][1].global_metric_ppm is None

        # 4. after the last metric: a plain restart has nothing to do and exits 0
        wait_until("round 3's metric", lambda: rnd(3).global_metric_ppm is not None, net)
        crash_and_restart("after metric")
        height = fed.chain.block_number
        assert net.wait(timeout=300) == {**{h: 0 for h in HOSPITALS}, "coordinator": 0}
        assert "done: proposal(s) 1 finished" in net.log_tail("coordinator")

        members = {a.lower() for a in info["members"]}
        events = fed.events()
        for r in (1, 2, 3):
            of_round = [e for e in events if e.args.get("proposalId") == pid and e.args.get("round") == r]
            for name in ("RoundOpened", "RoundClosed", "GlobalMetricRecorded"):
                assert sum(e.event == name for e in of_round) == 1, (name, r)
            assert {e.args["member"].lower() for e in of_round if e.event == "UpdateCommitted"} == members
        assert not [e for e in events if e.block_number > height and e.event != "EvaluationSubmitted"]
        with KuboStore(net.ipfs.api_addr) as store:
            report = replay_live(fed, store, dev_identity(info["auditor_dev"]))
        assert report.ok and [v.status for v in report.rounds] == ["VERIFIED"] * 3, report
        log = (net.root / "coordinator.log").read_text()
        assert "Traceback" not in log and "already recorded" not in log
        t_kills = time.monotonic() - t0

        # Finished and new proposals: a run without --proposal drives exactly the new ones.
        new = [net.propose(rounds=1, seed=s) for s in (8, 9)]
        before = len(fed.events())
        net.launch(proposal=False)
        assert net.wait(timeout=300) == {**{h: 0 for h in HOSPITALS}, "coordinator": 0}
        after = fed.events()[before:]
        for p in new:
            assert fed.rounds.round_info(p, 1).phase.name == "CLOSED"
            assert fed.rounds.round_info(p, 1).global_metric_ppm is not None
        assert not [e for e in after if e.args.get("proposalId") == pid]
        assert "done: no proposal left to drive" in net.log_tail("coordinator")
    print(f"\ncoordinator killed at 4 steps, 3 rounds: {t_kills:.0f} s; "
          f"2 new proposals without --proposal: {time.monotonic() - t0 - t_kills:.0f} s")
