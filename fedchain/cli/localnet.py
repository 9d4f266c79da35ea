"""A local multi-process fedchain network: anvil + js-ipfs + N hospital processes + a coordinator.

Used by ``scripts/local_network`` and the integration test. Governance set-up
(deploy, datasets, proposal, votes) is done here through the bindings; then
every hospital node and the coordinator run as **separate OS processes**
(``fedchain node run`` / ``fedchain coordinator run``) that talk to each other
only through the chain (anvil, JSON-RPC) and the IPFS daemon (js-ipfs, Kubo
RPC). All keys are anvil's public dev keys: DEV ONLY.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fedchain.errors import FedchainError

COORDINATOR_DEV = 8
AUDITOR_DEV = 9


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
        from fedchain.contracts.anvil import Anvil
        from fedchain.ipfs.daemon import JsIpfsDaemon

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

    def set_up_governance(self) -> dict:
        """Deploy, register one dataset per hospital, propose, vote, finalize; write role configs."""
        from fedchain.contracts.bindings import Chain, FounderSpec, Policy, Vote
        from fedchain.content import pin_document
        from fedchain.identity import dev_identity
        from fedchain.sample_data import demo_plan, make_demo_data
        from fedchain.ipfs.kubo import KuboStore
        from fedchain.node.dataset import load_schema, metadata_document, schema_hash

        data = make_demo_data(self.root / "data", n_hospitals=self.hospitals, seed=self.seed)
        members = [dev_identity(i, name=h.name) for i, h in enumerate(data.hospitals)]
        coord = dev_identity(COORDINATOR_DEV, name="consortium-ops")
        auditor = dev_identity(AUDITOR_DEV, name="auditor")
        chain = Chain.connect(self.anvil.url)
        deployment = chain.deploy(
            chain.dev_accounts[0],
            founders=[FounderSpec(m.name, m.address, m.x25519_public) for m in members + [coord]],
            coordinator=coord.address, voting_period_blocks=30, quorum_bps=5000, approval_bps=5001,
        )
        deployment.save(self.root / "deployment.json")
        fed = chain.attach(deployment)
        store = KuboStore(self.ipfs.api_addr)
        for m, h in zip(members, data.hospitals):
            schema = load_schema(h.schema_path)
            meta = metadata_document(schema, h.n_rows, f"{h.name} (local network)")
            cid, sha = pin_document(store, meta)
            fed.as_(m.account).registry.register_dataset(h.name, cid, sha, schema_hash(schema), Policy.open(purposes=("diagnosis",)))
        plan = demo_plan(data.hospitals, seed=self.seed).with_changes(
            rounds=self.rounds, min_participants=self.hospitals,
            round_deadline_blocks=120, auditors=["0x" + auditor.x25519_public.hex()],
        )
        (self.root / "plan.json").write_bytes(plan.to_canonical_bytes())
        plan_cid, plan_sha = pin_document(store, plan.to_canonical_bytes())
        tx = fed.as_(members[0].account).proposals.submit_proposal(
            plan_cid=plan_cid, plan_sha256=plan_sha, purpose=plan.purpose, targets=list(plan.datasets),
            rounds=plan.rounds, min_participants=plan.min_participants, round_duration=plan.round_deadline_blocks,
        )
        self.proposal_id = pid = tx.value
        for m in members + [coord]:
            fed.as_(m.account).proposals.vote(pid, Vote.YES)
        chain.mine(31)  # DEV: end the voting period without waiting 30 s
        fed.as_(coord.account).proposals.finalize(pid)
        store.close()
        self._write_configs(data, deployment)
        return {"proposal": pid, "plan_cid": plan_cid, "members": [m.address for m in members]}

    def _write_configs(self, data, deployment) -> None:
        net = (f'[network]\nchain = "{self.anvil.url}"\ndeployment = "{self.root / "deployment.json"}"\n'
               f'store = "{self.ipfs.api_addr}"\n')
        for i, h in enumerate(data.hospitals):
            (self.root / f"{h.name}.toml").write_text(
                f"poll_seconds = 0.5\n\n[identity]\ndev = {i}\n\n{net}\n"
                f'[dataset]\nname = "{h.name}"\ncsv = "{h.csv_path}"\nschema = "{h.schema_path}"\n'
            )
        (self.root / "coordinator.toml").write_text(
            f"poll_seconds = 0.5\n\n[identity]\ndev = {COORDINATOR_DEV}\n\n{net}\n"
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
        from fedchain.contracts.bindings import Chain, Deployment

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
