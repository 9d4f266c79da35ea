"""Identity commands: a founders file from public identities, and the auditor line for a plan.

Runs ``fedchain`` in-process. Keystores are made with the light KDF (tests only) except where
``identity create`` itself is under test.
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from fedchain.cli import main
from fedchain.cli.infra import _founders_from_options
from fedchain.identity import LIGHT_KDF_N, create_identity, dev_identity, read_public
from fedchain.plan import load_plan
from fedchain.plandoc import template

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(autouse=True)
def _wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")


def cli(*args: object) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, ANSI.sub("", out.getvalue()), ANSI.sub("", err.getvalue())


def refused(args: list, *phrases: str) -> str:
    code, out, err = cli(*args)
    assert code == 1, (code, out, err)
    assert out == "", "nothing goes to stdout (a '> founders.json' redirect must not get half a file)"
    assert "Traceback" not in err
    line = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(line) == 1, err
    for p in phrases:
        assert p in line[0], (p, line[0])
    return line[0]


@pytest.fixture()
def keys(tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("St Mary Hospital", "Northside Clinic", "Consortium Ops"):
        path = tmp_path / f"{name.split()[0].lower()}.json"
        create_identity(path, name, "pw", kdf_n=LIGHT_KDF_N)
        out[name] = path
    return out


def test_founders_from_keystores_and_show_outputs(keys, tmp_path):
    # One founder sent its 'identity show --json' output instead of its keystore.
    code, shown, _ = cli("identity", "show", keys["Northside Clinic"], "--json")
    assert code == 0
    shown_file = tmp_path / "northside-public.json"
    shown_file.write_text(shown)
    code, out, err = cli("identity", "founders", keys["St Mary Hospital"], shown_file, keys["Consortium Ops"])
    assert code == 0, err
    founders = json.loads(out)
    assert [f["name"] for f in founders] == ["St Mary Hospital", "Northside Clinic", "Consortium Ops"]
    for f, path in zip(founders, [keys["St Mary Hospital"], keys["Northside Clinic"], keys["Consortium Ops"]]):
        pub = read_public(path)
        assert f == {"name": pub["name"], "address": pub["address"], "x25519": pub["x25519"]}
    assert "3 founder(s)" in err
    # 'chain up --founders' reads exactly this file.
    path = tmp_path / "founders.json"
    path.write_text(out)
    specs = _founders_from_options(path, 0)
    assert [(s.name, s.address, "0x" + s.x25519_pub.hex()) for s in specs] == [
        (f["name"], f["address"], f["x25519"]) for f in founders]
    # A founders file can itself be an input (adding a founder to a draft).
    code, out2, _ = cli("identity", "founders", path)
    assert code == 0 and json.loads(out2) == founders


def test_founders_refuses_clashes_dev_keys_and_junk(keys, tmp_path):
    a = keys["St Mary Hospital"]
    refused(["identity", "founders", a, a], "appears twice")
    # Another address with the same X25519 key: two members could read each other's sealed updates.
    pub = read_public(keys["Northside Clinic"])
    clone = tmp_path / "clone.json"
    clone.write_text(json.dumps({**pub, "name": "Clone", "address": dev_identity(5).address}))
    refused(["identity", "founders", keys["Northside Clinic"], clone], "same X25519 key")
    # Public dev keys cannot found a real consortium.
    _code, dev, _ = cli("identity", "show", "--dev", "2", "--json")
    dev_file = tmp_path / "dev.json"
    dev_file.write_text(dev)
    refused(["identity", "founders", a, dev_file], "DEV ONLY", "--allow-dev")
    code, out, _ = cli("identity", "founders", a, dev_file, "--allow-dev")
    assert code == 0 and [f["address"] for f in json.loads(out)][1] == dev_identity(2).address
    for name, text, phrase in [
        ("notjson.json", "hello", "not JSON"),
        ("partial.json", json.dumps({"name": "X", "address": pub["address"]}), "expected a keystore"),
        ("badaddr.json", json.dumps({**pub, "address": "0x1234"}), "not an address"),
        ("badkey.json", json.dumps({**pub, "x25519": "0xabcd"}), "X25519 public key"),
        ("longname.json", json.dumps({**pub, "name": "x" * 65}), "1 to 64 bytes"),
        ("list.json", json.dumps([pub, 7]), "expected a keystore"),
    ]:
        (tmp_path / name).write_text(text)
        refused(["identity", "founders", tmp_path / name], name, phrase)
    big = tmp_path / "big.json"
    big.write_text(json.dumps([pub] * 2000))
    refused(["identity", "founders", big], "larger than")
    refused(["identity", "founders", tmp_path / "missing.json"], "cannot read")
    tampered = tmp_path / "tampered-keystore.json"
    doc = json.loads(a.read_text())
    doc["x25519_public"] = "zz"
    tampered.write_text(json.dumps(doc))
    refused(["identity", "founders", tampered], "malformed identity file")


def test_show_prints_the_auditor_line_a_plan_accepts(keys, tmp_path):
    ks = keys["Consortium Ops"]
    code, out, _ = cli("identity", "show", ks)
    assert code == 0
    line = re.search(r"^plan\s+(auditors = .*?)\s+#", out, re.M).group(1)
    key = read_public(ks)["x25519"]
    assert tomllib.loads(line) == {"auditors": [key]}
    plan = tmp_path / "plan.toml"
    plan.write_text(template("logreg").replace("auditors = []", line))
    assert load_plan(plan).auditors == (key,)
    # The --json form stays what a founders file needs (no extra keys).
    _c, js, _e = cli("identity", "show", ks, "--json")
    assert set(json.loads(js)) == {"name", "address", "x25519"}


def test_create_prints_both_uses(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDCHAIN_PASSWORD", "a password")
    path = tmp_path / "audit-office.json"
    code, out, err = cli("identity", "create", path, "--name", "Audit office")
    assert code == 0, err
    key = read_public(path)["x25519"]
    assert f'auditors = ["{key}"]' in out and "identity founders" in out
    code, _out, err = cli("identity", "create", path, "--name", "Again")
    assert code == 1 and "refusing to overwrite" in err
