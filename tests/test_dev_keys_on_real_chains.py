"""DEV ONLY identities (public private keys) never sign on a chain that is not a local dev chain.

Abuse: an operator (or a copied tutorial) runs a role or a governance command with ``--dev N`` or
``dev = N`` against the consortium's real chain. Anyone can recompute those keys, so whatever they
signed there could be signed by anyone. Every place an identity meets a chain refuses: the CLI's
acting commands, ``node run``, ``coordinator run`` and the console. The "real" chain here is an
anvil started with a chain id that is not a dev chain's (424242).
"""

from __future__ import annotations

import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.contracts.anvil import Anvil
from fedchain.contracts.bindings import Chain, FounderSpec
from fedchain.identity import DevKeyOnRealChain, LIGHT_KDF_N, create_identity, dev_identity
from fedchain.network import NetworkConfig
from fedchain.sample_data import make_demo_data

REAL_CHAIN_ID = 424242


def run(*args: object) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue() + err.getvalue()


@pytest.fixture(scope="module")
def real_chain(tmp_path_factory):
    home = tmp_path_factory.mktemp("real").resolve()
    with Anvil(chain_id=REAL_CHAIN_ID) as anvil:
        chain = Chain.connect(anvil.url)
        assert chain.chain_id == REAL_CHAIN_ID
        founder = dev_identity(0)
        dep = chain.deploy(chain.dev_accounts[0], founders=[FounderSpec("a", founder.address, founder.x25519_public)],
                           coordinator=dev_identity(9).address)
        dep.save(home / "deployment.json")
        NetworkConfig(chain_url=anvil.url, deployment_file=str(home / "deployment.json"),
                      store=f"local:{home / 'store'}").save(home)
        yield home, anvil


def test_governance_commands_refuse_dev_keys_on_a_real_chain(real_chain, tmp_path):
    home, _ = real_chain
    demo = make_demo_data(tmp_path / "data", n_hospitals=2)
    h = demo.hospitals[0]
    code, text = run("dataset", "register", "st-mary", "--dev", 0, "--csv", h.csv_path, "--schema", h.schema_path,
                     "--description", "x", "--home", home)
    assert code != 0
    assert "DEV ONLY" in text and f"not on chain {REAL_CHAIN_ID}" in text, text
    store = home / "store"
    assert not store.exists() or not any(p.is_file() for p in store.rglob("*")), "a refused command pinned something"
    # a read needs no identity and still works on that chain
    code, text = run("member", "list", "--home", home)
    assert code == 0, text


@pytest.mark.parametrize("role", ["node", "coordinator"])
def test_role_processes_refuse_dev_keys_on_a_real_chain(real_chain, tmp_path, role):
    home, anvil = real_chain
    demo = make_demo_data(tmp_path / "data", n_hospitals=2)
    h = demo.hospitals[0]
    shutil.copy(home / "deployment.json", tmp_path / "d.json")
    dataset = (f'[dataset]\nname = "st-mary"\ncsv = "{h.csv_path}"\nschema = "{h.schema_path}"\n'
               if role == "node" else "")
    cfg = tmp_path / f"{role}.toml"
    cfg.write_text(f'[identity]\ndev = 1\n[network]\nchain = "{anvil.url}"\ndeployment = "d.json"\n'
                   f'store = "local:{tmp_path / "store"}"\n{dataset}')
    code, text = run(role, "run", "--config", cfg)
    assert code != 0
    assert "DEV ONLY" in text and f"not on chain {REAL_CHAIN_ID}" in text, text


def test_console_refuses_a_dev_identity_on_a_real_chain(real_chain, tmp_path):
    from fedchain.console.state import ConsoleState
    from fedchain.contracts.models import Deployment

    home, anvil = real_chain
    dep = Deployment.load(home / "deployment.json")
    with pytest.raises(DevKeyOnRealChain):
        ConsoleState.open(anvil.url, dep, f"local:{tmp_path / 'store'}", dev_identity(2))
    real = create_identity(tmp_path / "real.json", "real", "pw", kdf_n=LIGHT_KDF_N)
    ConsoleState.open(anvil.url, dep, f"local:{tmp_path / 'store'}", real)  # an ordinary identity is fine
