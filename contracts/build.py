"""Compile the Solidity sources into committed, reproducible JSON artifacts.

Compilation goes through py-solc-x (``solcx.compile_standard``) with an explicit
``solc_binary``: a native ``solc`` 0.8.28 on PATH if there is one, else the
solc-js shim in ``contracts/solc/solc`` (needs ``npm install``). Both compilers
produce the same bytecode for the same standard-JSON input, and the input is
built to be machine independent: project sources are named
``contracts/src/X.sol``, OpenZeppelin is remapped to ``node_modules/@openzeppelin/``
relative to the repository (``--base-path``), and the metadata hash is not
appended to the bytecode (``bytecodeHash: none``).

Artifacts (``contracts/artifacts/<Name>.json``) hold the ABI, creation and
runtime bytecode and the compiler settings, written with sorted keys, indent 2
and a trailing newline, so a recompile is byte-identical. Nodes never compile:
:func:`load_artifact` reads only the committed JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any

import solcx.wrapper
from solcx.exceptions import SolcError

from fedchain.errors import FedchainError

CONTRACTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = CONTRACTS_DIR.parent
SRC_DIR = CONTRACTS_DIR / "src"
ARTIFACTS_DIR = CONTRACTS_DIR / "artifacts"
SHIM = CONTRACTS_DIR / "solc" / "solc"

SOLC_VERSION = "0.8.28"
EVM_VERSION = "cancun"
OPTIMIZER_RUNS = 200
#: Deployable contracts, in deployment order.
CONTRACT_NAMES = ("Consortium", "DatasetRegistry", "Proposals", "Rounds", "Releases", "Statistics", "SecureRounds")

SETTINGS: dict[str, Any] = {
    "evmVersion": EVM_VERSION,
    "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
    "metadata": {"bytecodeHash": "none"},
    "remappings": ["@openzeppelin/=node_modules/@openzeppelin/"],
}
OUTPUT_SELECTION = {"*": {"*": ["abi", "userdoc", "evm.bytecode.object", "evm.deployedBytecode.object"]}}


class BuildError(FedchainError):
    """Compilation could not run or failed."""


def _node_modules() -> Path:
    return Path(os.environ.get("FEDCHAIN_NODE_MODULES", REPO_ROOT / "node_modules"))


def _solc_version_of(binary: str | Path) -> str | None:
    try:
        out = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in out.splitlines():
        if line.startswith("Version:"):
            return line.split()[1].split("+")[0]
    return None


def find_solc() -> Path:
    """The compiler to use: native ``solc`` 0.8.28 on PATH, else the solc-js shim."""
    native = shutil.which("solc")
    if native and Path(native).resolve() != SHIM.resolve() and _solc_version_of(native) == SOLC_VERSION:
        return Path(native)
    if not (_node_modules() / "solc" / "package.json").exists():
        raise BuildError(
            f"no solc {SOLC_VERSION}: none on PATH and {_node_modules() / 'solc'} is missing "
            "(run `npm install` in the repository root)"
        )
    return SHIM


def standard_input() -> dict[str, Any]:
    """The standard-JSON compiler input (project sources inline, imports via remapping)."""
    sources = {}
    for path in sorted(SRC_DIR.glob("*.sol")):
        rel = path.relative_to(REPO_ROOT).as_posix()
        sources[rel] = {"content": path.read_text(encoding="utf-8")}
    if not sources:
        raise BuildError(f"no Solidity sources in {SRC_DIR}")
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {**SETTINGS, "outputSelection": OUTPUT_SELECTION},
    }


def compile_sources(solc_binary: str | Path | None = None) -> dict[str, Any]:
    """Run the compiler and return its standard-JSON output."""
    import solcx  # only the build needs py-solc-x

    binary = Path(solc_binary) if solc_binary else find_solc()
    # "0.8.28+commit.7893614a": the same for native solc and solc-js (the
    # platform suffix differs and is left out so artifacts do not depend on it).
    try:
        version = str(solcx.wrapper.get_solc_version(binary, with_commit_hash=True))
    except (OSError, subprocess.SubprocessError, SolcError) as exc:
        raise BuildError(f"cannot run {binary}: {exc}") from None
    if not version.startswith(SOLC_VERSION + "+"):
        raise BuildError(f"{binary} is solc {version}, need {SOLC_VERSION}")
    try:
        output = solcx.compile_standard(
            standard_input(),
            base_path=str(REPO_ROOT),
            allow_paths=[str(REPO_ROOT), str(_node_modules())],
            solc_binary=binary,
        )
    except SolcError as exc:
        errors = getattr(exc, "error_dict", None) or []
        detail = "\n".join(e.get("formattedMessage", "") for e in errors if e.get("severity") == "error")
        raise BuildError(f"compilation failed:\n{detail or exc}") from None
    except OSError as exc:
        raise BuildError(f"cannot run {binary}: {exc}") from None
    output["_fedchain_solc_version"] = version
    return output


def artifacts_from_output(output: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Artifact documents for every contract defined in ``contracts/src`` that has bytecode."""
    src_prefix = SRC_DIR.relative_to(REPO_ROOT).as_posix() + "/"
    version = output["_fedchain_solc_version"]
    result: dict[str, dict[str, Any]] = {}
    for source_name, contracts in sorted(output.get("contracts", {}).items()):
        if not source_name.startswith(src_prefix):
            continue
        for name, data in sorted(contracts.items()):
            bytecode = data["evm"]["bytecode"]["object"]
            if not bytecode or not data["abi"]:
                continue  # interfaces; libraries of internal functions only
            result[name] = {
                "contractName": name,
                "sourceName": source_name,
                "abi": data["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + data["evm"]["deployedBytecode"]["object"],
                "compiler": {"version": version, "settings": SETTINGS},
                "userdoc": data.get("userdoc", {}),
            }
    return result


def dumps(doc: Any) -> str:
    """The canonical artifact text: sorted keys, indent 2, trailing newline."""
    return json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def build(out_dir: str | Path = ARTIFACTS_DIR, solc_binary: str | Path | None = None) -> dict[str, Path]:
    """Compile and write one artifact per contract into ``out_dir``; return name -> path.

    Stale ``*.json`` files of contracts that no longer exist are removed.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts_from_output(compile_sources(solc_binary))
    missing = [n for n in CONTRACT_NAMES if n not in artifacts]
    if missing:
        raise BuildError(f"compiler output lacks {', '.join(missing)}")
    written: dict[str, Path] = {}
    for name, doc in artifacts.items():
        path = out / f"{name}.json"
        text = dumps(doc)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
        written[name] = path
    for stale in out.glob("*.json"):
        if stale.stem not in artifacts:
            stale.unlink()
    load_artifact.cache_clear()
    return written


@lru_cache(maxsize=None)
def load_artifact(name: str, artifacts_dir: str | Path = ARTIFACTS_DIR) -> dict[str, Any]:
    """Read the committed artifact of contract ``name`` (no compiler involved)."""
    path = Path(artifacts_dir) / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BuildError(f"missing contract artifact {path} (run `fedchain contracts build`)") from None


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: ``python -m fedchain.contracts.build [--out DIR] [--solc PATH]``."""
    parser = argparse.ArgumentParser(description="Compile fedchain's Solidity contracts.")
    parser.add_argument("--out", default=str(ARTIFACTS_DIR), help="artifact directory")
    parser.add_argument("--solc", default=None, help="solc binary (default: native 0.8.28 or the shim)")
    args = parser.parse_args(argv)
    try:
        paths = build(args.out, args.solc)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
