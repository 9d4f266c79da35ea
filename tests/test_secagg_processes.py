"""mode = "secagg" across real processes: anvil (0.5 s blocks) + js-ipfs + 4 ``fedchain node run`` + ``fedchain
coordinator run``, sharing nothing but the chain's JSON-RPC and the daemon's RPC API.

Round 1: hospital B's process is SIGKILLed right after its masked input is marked and started again at once
(the coordinator is held meanwhile, so the new process finds round 1 still open). Its round-1 secrets died with it, so it cannot unmask: it says so, sits the rest of round 1 out, still
evaluates round 1's model (its input is in it), and takes part fully in round 2. Round 1 completes with
the three others' unmasking shares (threshold 3 of 4), round 2 with all four; the audit replay VERIFIES
both. The services' logic in one process (more dropouts, a Failed session) is ``test_secagg_services.py``.
"""

from __future__ import annotations

import signal
import time

import pytest

from fedchain.cli.localnet import LocalNetwork
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.contracts.models import SessionStage
from fedchain.coordinator.audit.replay import VERIFIED, replay_live
from fedchain.identity import dev_identity
from fedchain.ipfs.kubo import KuboStore

pytestmark = [pytest.mark.slow, pytest.mark.alone, pytest.mark.anvil, pytest.mark.ipfsd]


def wait_until(what: str, predicate, net: LocalNetwork, timeout: float = 120.0):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        for name, proc in net.procs.items():
            assert proc.poll() in (None, 0), f"{name} exited with {proc.poll()}:\n{net.log_tail(name)}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n" + "\n".join(
            f"--- {n}\n{net.log_tail(n)}" for n in net.procs)
        time.sleep(0.1)


def test_secagg_rounds_across_processes_with_a_node_killed_after_its_masked_input(tmp_path):
    t0 = time.monotonic()
    with LocalNetwork(tmp_path / "net", hospitals=4, rounds=2, block_time=0.5,
                      secagg={"max_dropouts": 1, "phase_blocks": 24}) as net:  # 12 s a phase (8 s was missed alone)
        net.start_services()
        info = net.set_up_governance()
        pid = info["proposal"]
        net.launch()
        fed = Chain.connect(net.anvil.url).attach(Deployment.load(net.root / "deployment.json"))
        victim, address = "hospital-b", info["members"][1]

        wait_until("hospital-b's masked input in round 1", lambda: fed.secure.phases(pid, 1, address) & 0b100, net)
        assert fed.secure.phases(pid, 1, address) == 0b0111  # not unmasked yet
        net.kill_role(victim)
        # Hold the coordinator (SIGSTOP) until the new process has looked at round 1, so that it finds the
        # round still open whatever its start-up time; the coordinator then resumes from the chain.
        net.procs["coordinator"].signal(signal.SIGSTOP)
        try:
            net.start_role(victim)  # a new process: its round-1 secrets are gone
            wait_until("the restarted node to see round 1", lambda: "secrets for it are gone" in net.log_tail(
                victim, 200_000), net)
        finally:
            net.procs["coordinator"].signal(signal.SIGCONT)

        codes = net.wait(timeout=240)
        assert set(codes.values()) == {0}, codes
        s1, s2 = fed.secure.session(pid, 1), fed.secure.session(pid, 2)
        assert (s1.stage, s1.masked, s1.unmasked) == (SessionStage.COMPLETED, 4, 3)
        assert (s2.stage, s2.masked, s2.unmasked) == (SessionStage.COMPLETED, 4, 4)
        for r in (1, 2):
            ri = fed.rounds.round_info(pid, r)
            assert ri.phase.name == "CLOSED" and ri.global_metric_ppm is not None, (r, ri)
        assert fed.rounds.has_evaluated(pid, 1, address)  # the restarted node still evaluated round 1
        events = fed.events()
        assert sorted(e.args["round"] for e in events if e.event == "SessionStarted") == [1, 2]
        assert sum(e.event == "UpdateCommitted" and e.args["member"].lower() == address.lower()
                   for e in events) == 2  # nothing committed twice
        log = net.log_tail(victim, 200_000)
        assert "secrets for it are gone" in log and "cannot unmask" in log, log
        assert not any("Traceback" in net.log_tail(n, 200_000) for n in net.procs)
        with KuboStore(net.ipfs.api_addr) as store:
            report = replay_live(fed, store, dev_identity(info["auditor_dev"]))
        assert [v.status for v in report.rounds] == [VERIFIED] * 2, [v.problems for v in report.rounds]
    print(f"\nsecagg across processes, 4 hospitals x 2 rounds, one node killed: {time.monotonic() - t0:.0f} s")
