"""A local multi-process fedchain network: anvil + js-ipfs + N hospital processes + a coordinator.

Used by ``scripts/local_network`` and the integration test. Governance set-up
(deploy, datasets, proposal, votes) is the in-process :class:`Simulation`'s, on
anvil and the IPFS daemon instead of the embedded chain and store; then
every hospital node and the coordinator run as **separate OS processes**
(``fedchain node run`` / ``fedchain coordinator run``) that talk to each other
only through the chain (anvil, JSON-RPC) and the IPFS daemon (js-ipfs, Kubo
RPC). All keys are public dev keys (hospital i = dev account i, the coordinator
n, the auditor n + 1): DEV ONLY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from fedchain.cli.simulation import Simulation
from fedchain.contracts.anvil import Anvil
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.errors import FedchainError
from fedchain.ipfs.daemon import JsIpfsDaemon
from fedchain.ipfs.kubo import KuboStore
from fedchain.network import NetworkConfig
from fedchain.sample_data import demo_plan



@dataclass
class LocalNetwork:
    """Owns the processes; use as a context manager so everything stops."""

    root: Path
    hospitals: int = 3
    rounds: int = 3
    block_time: float = 1.0
    seed: int = 7
    anvil: object = None
    ipfs: object = None
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    proposal_id: int = 0

    def __enter__(self) -> "LocalNetwork":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- infrastructure ---------------------------------------------------------------

    def start_services(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.anvil = Anvil(block_time=self.block_time).start()
        self.ipfs = JsIpfsDaemon(repo=self.root / "ipfs-repo", log_file=self.root / "ipfs.log").start()

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.ipfs is not None:
            self.ipfs.stop()
        if self.anvil is not None:
            self.anvil.stop()

    # -- governance -------------------------------------------------------------------------

    def set_up_governance(self, *, propose: bool = True, auditors: Sequence[str] = ()) -> dict:
        """Deploy, register one dataset per hospital, write the plan and the role configs; then propose,
        vote and finalize (unless ``propose`` is False: then members take it from ``plan.json``).

        ``auditors`` (X25519 keys, 0x-hex) are named in the plan beside the consortium's auditor.
        ``network.json`` in the root lets ``--home ROOT`` commands (e.g. ``fedchain console``) reach it.
        """
        store = KuboStore(self.ipfs.api_addr)
        sim = Simulation.create(self.root, hospitals=self.hospitals, seed=self.seed, chain_url=self.anvil.url,
                                store=store, approval_bps=5001, voting_period_blocks=30)
        sim.deployment.save(self.root / "deployment.json")
        NetworkConfig(chain_url=self.anvil.url, deployment_file=str(self.root / "deployment.json"),
                      store=self.ipfs.api_addr).save(self.root)
        sim.register_datasets(description="local network")
        plan = sim.plan(demo_plan(sim.data.hospitals, seed=self.seed), rounds=self.rounds,
                        min_participants=self.hospitals, round_deadline_blocks=120)
        if auditors:
            plan = plan.with_changes(auditors=list(plan.auditors) + list(auditors))
        (self.root / "plan.json").write_bytes(plan.to_canonical_bytes())
        self._write_configs(sim.data, sim.deployment)
        info = {"members": [m.address for m in sim.members], "auditor_dev": self.hospitals + 1,
                "plan": self.root / "plan.json", "simulation": sim}
        if propose:
            self.proposal_id = pid = sim.approve(plan)  # DEV: mines past the 30-block vote instead of waiting 30 s
            info.update(proposal=pid, plan_cid=sim.fed().proposals.proposal(pid).plan_cid)
        store.close()
        return info

    def _write_configs(self, data, deployment) -> None:
        net = (f'[network]\nchain = "{self.anvil.url}"\ndeployment = "{self.root / "deployment.json"}"\n'
               f'store = "{self.ipfs.api_addr}"\n')
        for i, h in enumerate(data.hospitals):
            (self.root / f"{h.name}.toml").write_text(
                f"poll_seconds = 0.5\n\n[identity]\ndev = {i}\n\n{net}\n"
                f'[dataset]\nname = "{h.name}"\ncsv = "{h.csv_path}"\nschema = "{h.schema_path}"\n'
            )
        (self.root / "coordinator.toml").write_text(
            f"poll_seconds = 0.5\n\n[identity]\ndev = {self.hospitals}\n\n{net}\n"
            "[coordinator]\neval_grace_blocks = 30\n"
        )

    # -- role processes -----------------------------------------------------------------------

    def launch(self) -> None:
        """Start every hospital node and the coordinator as separate processes."""
        exe = [sys.executable, "-m", "fedchain.cli"]
        env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="160")
        for cfg in sorted(self.root.glob("hospital-*.toml")):
            log = open(self.root / f"{cfg.stem}.log", "wb")
            self.procs[cfg.stem] = subprocess.Popen(
                exe + ["node", "run", "--config", str(cfg), "--proposal", str(self.proposal_id)],
                stdout=log, stderr=subprocess.STDOUT, env=env)
        log = open(self.root / "coordinator.log", "wb")
        self.procs["coordinator"] = subprocess.Popen(
            exe + ["coordinator", "run", "--config", str(self.root / "coordinator.toml"), "--proposal", str(self.proposal_id)],
            stdout=log, stderr=subprocess.STDOUT, env=env)

    def wait(self, timeout: float = 600.0) -> dict[str, int]:
        """Wait for every role process to exit; raise with their logs' tails if one fails or hangs."""
        deadline = time.monotonic() + timeout
        codes: dict[str, int] = {}
        while len(codes) < len(self.procs):
            for name, p in self.procs.items():
                if name not in codes and p.poll() is not None:
                    codes[name] = p.returncode
                    if p.returncode != 0:
                        raise FedchainError(f"{name} exited with {p.returncode}:\n{self.log_tail(name)}")
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}\n{self.log_tail(n)}" for n in self.procs if n not in codes)
                raise FedchainError(f"network did not finish within {timeout:.0f} s:\n{tails}")
            time.sleep(0.5)
        return codes

    def log_tail(self, name: str, n: int = 3000) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace")[-n:] if path.exists() else "(no log)"

    def summary(self) -> dict:
        chain = Chain.connect(self.anvil.url)
        fed = chain.attach(Deployment.load(self.root / "deployment.json"))
        rounds = []
        for r in range(1, self.rounds + 1):
            info = fed.rounds.round_info(self.proposal_id, r)
            rounds.append({"round": r, "phase": info.phase.name, "committed": info.committed,
                           "evaluations": info.evaluations, "global_metric_ppm": info.global_metric_ppm,
                           "aggregate_cid": info.aggregate_cid})
        out = {"proposal": self.proposal_id, "rounds": rounds}
        (self.root / "summary.json").write_text(json.dumps(out, indent=2) + "\n")
        return out
