"""Compile pipeline: reproducible artifacts, the solc-js shim, source hygiene."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedchain.contracts import build

needs_solcjs = pytest.mark.skipif(
    not (build.REPO_ROOT / "node_modules" / "solc" / "package.json").exists(),
    reason="node_modules/solc missing (npm install)",
)


@needs_solcjs
def test_artifacts_match_a_fresh_compile(tmp_path):
    written = build.build(out_dir=tmp_path, solc_binary=build.SHIM)
    assert set(written) == set(build.CONTRACT_NAMES)
    committed = sorted(p.name for p in build.ARTIFACTS_DIR.glob("*.json"))
    assert sorted(p.name for p in tmp_path.glob("*.json")) == committed
    for name in committed:
        fresh = (tmp_path / name).read_bytes()
        assert fresh == (build.ARTIFACTS_DIR / name).read_bytes(), f"{name} is stale: run `fedchain contracts build`"


def test_artifact_format():
    for name in build.CONTRACT_NAMES:
        path = build.ARTIFACTS_DIR / f"{name}.json"
        text = path.read_text()
        doc = json.loads(text)
        assert text == json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"
        assert doc == build.load_artifact(name)
        assert doc["contractName"] == name and doc["sourceName"] == f"contracts/src/{name}.sol"
        assert re.fullmatch(r"0x(?:[0-9a-f]{2})+", doc["bytecode"]) and len(doc["deployedBytecode"]) > 1000
        assert doc["compiler"]["version"] == "0.8.28+commit.7893614a"
        settings = doc["compiler"]["settings"]
        assert settings["evmVersion"] == "cancun"
        assert settings["optimizer"] == {"enabled": True, "runs": 200}
        assert settings["metadata"] == {"bytecodeHash": "none"}
        # no metadata hash: the runtime ends with the CBOR {"solc": 0.8.28} only
        assert doc["deployedBytecode"].endswith("a164736f6c634300081c000a")


def test_load_artifact_missing(tmp_path):
    with pytest.raises(build.BuildError, match="missing contract artifact"):
        build.load_artifact("Nope", tmp_path)


# ------------------------------------------------------------------- shim


@needs_solcjs
def test_shim_version_is_parsed_by_py_solc_x():
    out = subprocess.run([str(build.SHIM), "--version"], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    assert lines[0] == "solc, the solidity compiler commandline interface"
    assert re.fullmatch(r"Version: 0\.8\.28\+commit\.7893614a\.\S+", lines[1])
    import solcx.wrapper
    from packaging.version import Version

    assert solcx.wrapper.get_solc_version(build.SHIM) == Version("0.8.28")


def test_shim_help_lists_modes():
    out = subprocess.run([str(build.SHIM), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--standard-json" in out
    combined = next(line for line in out.splitlines() if line.startswith("  --combined-json"))
    assert set(combined.split(" ")[-1].split(",")) >= {"abi", "bin", "bin-runtime"}


def test_shim_rejects_unknown_option():
    proc = subprocess.run([str(build.SHIM), "--frobnicate"], capture_output=True, text=True)
    assert proc.returncode != 0 and "unrecognised option" in proc.stderr


@needs_solcjs
def test_shim_output_over_64k_is_complete():
    request = build.standard_input()
    request["settings"]["outputSelection"] = {"*": {"*": ["abi", "evm.bytecode", "evm.deployedBytecode"], "": ["ast"]}}
    request["settings"]["optimizer"] = {"enabled": False}  # faster; the output is still > 1 MB
    proc = subprocess.run(
        [str(build.SHIM), "--standard-json", "--base-path", str(build.REPO_ROOT)],
        input=json.dumps(request).encode(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        check=True,
    )
    assert len(proc.stdout) > 4 * 65536
    doc = json.loads(proc.stdout)  # truncated output would not parse
    assert not [e for e in doc.get("errors", []) if e["severity"] == "error"]
    assert "Rounds" in doc["contracts"]["contracts/src/Rounds.sol"]
    assert proc.stdout.lstrip().startswith(b"{")  # no notice before the JSON


@needs_solcjs
def test_shim_resolves_openzeppelin_imports_via_py_solc_x(tmp_path):
    import solcx

    source = (
        "// SPDX-License-Identifier: MIT\npragma solidity 0.8.28;\n"
        'import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";\n'
        "contract Probe is AccessControl { function ping() external pure returns (uint256) { return 7; } }\n"
    )
    out = solcx.compile_source(source, output_values=["abi", "bin"], solc_binary=build.SHIM)
    probe = out["<stdin>:Probe"]
    assert any(item.get("name") == "ping" for item in probe["abi"]) and probe["bin"]
    assert any(key.endswith("AccessControl.sol:AccessControl") for key in out)


@needs_solcjs
def test_find_solc_prefers_native_0_8_28_only(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert build.find_solc() == build.SHIM
    fake = tmp_path / "solc"
    fake.write_text("#!/bin/sh\necho 'solc, the solidity compiler commandline interface'\necho 'Version: 0.8.27+commit.40a35a09.Linux.g++'\n")
    fake.chmod(0o755)
    assert build.find_solc() == build.SHIM
    fake.write_text(fake.read_text().replace("0.8.27", "0.8.28"))
    assert build.find_solc() == fake


# -------------------------------------------------------------- hygiene


SOURCES = sorted(build.SRC_DIR.glob("*.sol"))


def test_no_revert_strings():
    for path in SOURCES:
        text = path.read_text()
        assert "require(" not in text, f"{path.name}: use custom errors, not require"
        assert not re.search(r"revert\s*\(\s*\"", text), f"{path.name}: revert string"


def test_natspec_on_every_public_item():
    missing = []
    for path in SOURCES:
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            head = re.match(r"(function|event|error|contract|library|struct|enum|constructor)\b", stripped)
            is_public_var = re.match(r"[\w\[\]. ]+\b(public)\b", stripped) and not stripped.startswith(
                ("function", "//", "*")
            )
            if not head and not is_public_var:
                continue
            if head and head.group(1) == "function":
                signature = " ".join(lines[i : i + 12])
                signature = signature[: signature.find("{") if "{" in signature else len(signature)]
                if not re.search(r"\b(external|public)\b", signature):
                    continue
            j = i - 1
            while j >= 0 and not lines[j].strip():
                j -= 1
            if j < 0 or not lines[j].strip().startswith("///"):
                missing.append(f"{path.name}:{i + 1}: {stripped[:60]}")
    assert not missing, "missing NatSpec:\n" + "\n".join(missing)


def test_no_loops_over_members_or_participants():
    """Every loop runs over a bounded, caller-supplied array (founders, targets, policy lists).

    ``nTargets``: a proposal's targets, bounded by ``MAX_TARGETS`` when it was submitted
    (``Rounds.awaitedCommitments``).
    """
    allowed = {"founders.length", "n", "nPurposes", "nProposals", "nRequesters", "nTargets"}
    for path in SOURCES:
        for m in re.finditer(r"for\s*\(\s*uint256 i = 0; i < ([\w.]+);", path.read_text()):
            assert m.group(1) in allowed, f"{path.name}: loop bound {m.group(1)}"
        assert len(re.findall(r"\bfor\s*\(", path.read_text())) == len(
            re.findall(r"for\s*\(\s*uint256 i = 0; i < ([\w.]+);", path.read_text())
        )
        assert not re.search(r"\b(while\s*\(|do\s*\{)", path.read_text())


def test_build_main_reports_errors(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(build.REPO_ROOT))
    proc = subprocess.run(
        [sys.executable, str(Path(build.__file__)), "--out", str(tmp_path / "x"), "--solc", "/nonexistent/solc"],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 1 and proc.stderr.startswith("error: cannot run /nonexistent/solc")
