"""mode = "he" across real processes: anvil (0.5 s blocks) + js-ipfs + ``fedchain decryptor serve`` + 3
``fedchain node run`` + ``fedchain coordinator run``, sharing nothing but the chain's JSON-RPC, the daemon's
RPC API and the decryptor's HTTP endpoint.

``fedchain decryptor keygen`` makes the key pair (secret key encrypted in the decryptor's key file), pins the
public context and prints the ``[he]`` lines the plan takes; 2 rounds close through the decryptor over HTTP,
the metric is recorded, the audit replay VERIFIES both. The coordinator's process is given no key path, no
password and no secret: its config, arguments and environment are checked. The live endpoint refuses bad
JSON, an oversized body and a second request for a closed round. The endpoint's checks one by one:
``test_he_decryptor_service.py``.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from fedchain.cli.localnet import LocalNetwork
from fedchain.contracts.bindings import Chain, Deployment
from fedchain.coordinator.audit.replay import VERIFIED, replay_live
from fedchain.identity import dev_identity
from fedchain.ipfs.kubo import KuboStore
from fedchain.usecases.he_decryptor import MAX_REQUEST_BYTES

pytestmark = [pytest.mark.slow, pytest.mark.anvil, pytest.mark.ipfsd]

PORT_PROBE = ("127.0.0.1", 0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(PORT_PROBE)
        return s.getsockname()[1]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def test_he_rounds_across_processes_with_the_decryptor_in_its_own(tmp_path):
    t0 = time.monotonic()
    with LocalNetwork(tmp_path / "net", hospitals=3, rounds=2, block_time=0.5) as net:
        net.start_services()
        root = net.root
        url = f"http://127.0.0.1:{_free_port()}"
        (root / "decryptor.pass").write_text("correct horse battery staple\n")
        (root / "decryptor.pass").chmod(0o600)
        auditor = net.hospitals + 1
        (root / "decryptor.toml").write_text(
            f"poll_seconds = 0.5\n\n[identity]\ndev = {auditor}\n\n"
            f'[network]\nchain = "{net.anvil.url}"\ndeployment = "{root / "deployment.json"}"\n'
            f'store = "{net.ipfs.api_addr}"\n\n'
            f'[decryptor]\nkey_file = "keys/decryptor-he.json"\npassword_file = "decryptor.pass"\n'
            f'listen = "{url.removeprefix("http://")}"\n')
        out = subprocess.run([sys.executable, "-m", "fedchain.cli", "decryptor", "keygen", "--config",
                              str(root / "decryptor.toml")], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        he = dict(re.findall(r'^(decryptor|context_cid|context_sha256) = "([^"]+)"$', out.stdout, re.M))
        assert set(he) == {"decryptor", "context_cid", "context_sha256"}, out.stdout
        assert he["decryptor"] == dev_identity(auditor).address
        key_file = root / "keys" / "decryptor-he.json"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"

        net.he, net.he_url = he, url
        info = net.set_up_governance()
        pid = info["proposal"]
        net.start_role("decryptor")
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/health", timeout=5) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                assert net.procs["decryptor"].poll() is None, net.log_tail("decryptor")
                assert time.monotonic() < deadline, net.log_tail("decryptor")
                time.sleep(0.3)
        assert health == {"address": he["decryptor"], "context_sha256": he["context_sha256"]}

        # the coordinator's process holds nothing secret: no key path, no password in its config, args, env
        coord_cfg = (root / "coordinator.toml").read_text()
        assert f'decryptor_url = "{url}"' in coord_cfg
        net.launch()
        coord = net.procs["coordinator"]
        for text in (coord_cfg, " ".join(coord.process.args), json.dumps(coord._envvars)):
            assert "key_file" not in text and "decryptor-he" not in text and "decryptor.pass" not in text
            assert "correct horse" not in text and "password" not in text

        codes = net.wait(timeout=180, names=[n for n in net.procs if n != "decryptor"])
        assert set(codes.values()) == {0}, codes
        fed = Chain.connect(net.anvil.url).attach(Deployment.load(root / "deployment.json"))
        for r in (1, 2):
            ri = fed.rounds.round_info(pid, r)
            assert ri.phase.name == "CLOSED" and ri.global_metric_ppm is not None, (r, ri)
            assert ri.committed == 3
        assert "closed round 2 of proposal" in net.log_tail("coordinator", 200_000)
        assert "decrypted the aggregate of round 2" in net.log_tail("decryptor", 200_000)

        # the live endpoint: bad JSON, an oversized body, a request for a round that is closed now
        assert _post(url + "/decrypt", b"{nope")[0] == 400
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.putrequest("POST", "/decrypt")  # announces an oversized body: refused before it is read
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(MAX_REQUEST_BYTES + 1))
        conn.endheaders()
        assert conn.getresponse().status == 413
        conn.close()
        plan = (root / "plan.json").read_text()
        stale = {"chain_id": fed.deployment.chain_id, "rounds": fed.addresses["Rounds"], "proposal": pid,
                 "round": 1, "plan": plan, "inputs": [["0x" + "11" * 20, "x", "bafy", "0x" + "00" * 32, 1]],
                 "aggregate_cid": "bafy", "aggregate_sha256": "0x" + "00" * 32}
        status, doc = _post(url + "/decrypt", json.dumps(stale).encode())
        assert status == 409, doc
        assert net.procs["decryptor"].poll() is None

        secret = json.loads(key_file.read_text())["ciphertext"][:64]
        for name in net.procs:
            log = net.log_tail(name, 2_000_000)
            assert "Traceback" not in log, log
            assert secret not in log
        with KuboStore(net.ipfs.api_addr) as store:
            report = replay_live(fed, store, dev_identity(info["auditor_dev"]))
        assert [v.status for v in report.rounds] == [VERIFIED] * 2, [v.problems for v in report.rounds]
    print(f"\nhe across processes, 3 hospitals x 2 rounds, decryptor over HTTP: {time.monotonic() - t0:.0f} s")
