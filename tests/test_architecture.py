"""House rules, checked on the source and on the installed layout.

* one namespace: the role folders install as ``fedchain.*`` and nothing else is
  importable at top level;
* the layering of ``[tool.importlinter]`` in pyproject.toml holds (``lint-imports``
  on the package as it is installed): cli > console > (node | coordinator) > usecases >
  (contracts | ipfs) > core; only the chain bindings import web3 / eth_tester;
* the contract's core list names every core module (a new module cannot slip past it);
* imports sit at module top unless a comment says why; no import cycle.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PACKAGE_DIRS: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]
LINT = PYPROJECT["tool"]["importlinter"]
LINT_EXE = Path(sys.executable).with_name("lint-imports")


def module_name(path: Path) -> str:
    """Dotted module name of a source file, as installed (contracts/x.py -> fedchain.contracts.x)."""
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "fedchain":
        parts.insert(0, "fedchain")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for folder in sorted(set(PACKAGE_DIRS.values())):
        for path in sorted((REPO / folder).rglob("*.py")):
            out[module_name(path)] = path
    return out


MODULES = modules()


def imports_of(path: Path, name: str) -> set[str]:
    """Every module named by an import statement anywhere in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            found.update(f"{mod}.{a.name}" for a in node.names)
    return found


IMPORTS = {name: imports_of(path, name) for name, path in MODULES.items()}


# -- one namespace ------------------------------------------------------------------------------


def test_the_scan_sees_the_project():
    assert {"fedchain.node.runner", "fedchain.coordinator.runner", "fedchain.contracts.bindings",
            "fedchain.usecases.datasets", "fedchain.ipfs.local"} <= set(MODULES)
    assert "fedchain.plan" in IMPORTS["fedchain.node.runner"]


@pytest.mark.parametrize("generic", ["node", "contracts", "coordinator", "ipfs"])
def test_generic_top_level_names_are_not_importable(tmp_path, generic):
    # From a neutral folder (the installed venv) and from the repository root (where the
    # folders sit on sys.path): neither may yield a top-level package of that name.
    for cwd in (tmp_path, REPO):
        proc = subprocess.run([sys.executable, "-c", f"import {generic}"], cwd=cwd, capture_output=True, text=True)
        assert proc.returncode != 0, (cwd, generic)
        assert "ModuleNotFoundError" in proc.stderr or f"imported as 'fedchain.{generic}'" in proc.stderr
    ok = subprocess.run([sys.executable, "-c", f"import fedchain.{generic}"], cwd=tmp_path, capture_output=True)
    assert ok.returncode == 0


# -- layering (import-linter) ----------------------------------------------------------------------


def installed_layout(root: Path) -> Path:
    """A copy of the sources laid out as setuptools installs them (package-dir mapping).

    import-linter finds a package's modules by walking its folder; in the repository
    the role folders sit beside ``fedchain/``, so the check runs on this copy."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda kv: kv[0].count(".")):
        shutil.copytree(REPO / folder, root / package.replace(".", "/"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__", "artifacts", "src", "solc", "docs", "*.md"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_EXE), "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> Path:
    return installed_layout(tmp_path_factory.mktemp("installed"))


def test_lint_imports_keeps_every_contract(layout):
    proc = lint_imports(layout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 kept, 0 broken" in proc.stdout


@pytest.mark.parametrize("module,bad_import,contract", [
    ("node/runner.py", "import fedchain.coordinator.runner", "cli > console > (node | coordinator)"),
    ("coordinator/runner.py", "import fedchain.console", "cli > console > (node | coordinator)"),
    ("plan.py", "import fedchain.usecases", "the core imports no layer above it"),
    ("usecases/admission.py", "import web3", "only the chain bindings import web3"),
])
def test_lint_imports_catches_a_violation(tmp_path, module, bad_import, contract):
    root = installed_layout(tmp_path / "installed")
    target = root / "fedchain" / module
    target.write_text(target.read_text() + f"\n{bad_import}  # a deliberate violation\n")
    proc = lint_imports(root)
    assert proc.returncode != 0 and f"{contract}" in proc.stdout and "BROKEN" in proc.stdout, proc.stdout


def test_the_core_list_names_every_core_module():
    above = {"fedchain.cli", "fedchain.console", "fedchain.node", "fedchain.coordinator", "fedchain.usecases", "fedchain.contracts",
             "fedchain.ipfs"}
    tops = {".".join(m.split(".")[:2]) for m in MODULES if m != "fedchain"}
    core = next(c for c in LINT["contracts"] if c["id"] == "core")
    assert set(core["source_modules"]) == tops - above, "add the new core module to [tool.importlinter]"
    web3 = next(c for c in LINT["contracts"] if c["id"] == "web3")
    assert set(core["source_modules"]) <= set(web3["source_modules"])


# -- imports at module top, no cycles -------------------------------------------------------------------


def test_imports_sit_at_module_top_unless_a_comment_says_why():
    hidden = []
    for name, path in MODULES.items():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    here, above = lines[sub.lineno - 1], lines[sub.lineno - 2]
                    if "#" not in here and not above.strip().startswith("#"):
                        hidden.append(f"{path.relative_to(REPO)}:{sub.lineno}: {here.strip()}")
    assert not hidden, "imports inside functions without a comment saying why:\n" + "\n".join(hidden)


def test_no_import_cycles():
    # Edges are the modules an import statement names (a package's __init__
    # re-exporting its own submodules is not a cycle unless one imports it back).
    graph = {m: {i for i in imps if i in MODULES and i != m} for m, imps in IMPORTS.items()}
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(m: str) -> None:
        colour[m] = GREY
        stack.append(m)
        for n in sorted(graph[m]):
            if colour[n] == GREY:
                cycles.append(stack[stack.index(n):] + [n])
            elif colour[n] == WHITE:
                visit(n)
        stack.pop()
        colour[m] = BLACK

    for m in sorted(graph):
        if colour[m] == WHITE:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)
