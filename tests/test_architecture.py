"""House rules, checked on the source: one-way data flow and no import cycles.

* ``node`` and ``coordinator`` never import each other;
* only the bindings in ``contracts`` import web3 / eth_tester;
* the shared core (``fedchain``, except its CLI wiring layer ``fedchain.cli``)
  and ``ipfs`` import no role package;
* no import cycle between modules, counting imports inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("fedchain", "contracts", "node", "coordinator", "ipfs")


def module_name(path: Path) -> str:
    rel = path.relative_to(REPO).with_suffix("")
    parts = list(rel.parts)
    if parts[0] != "fedchain":
        parts.insert(0, "fedchain")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            out[module_name(path)] = path
    return out


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


MODULES = modules()
IMPORTS = {name: imports_of(path, name) for name, path in MODULES.items()}


def top(mod: str) -> str:
    parts = mod.split(".")
    if parts[0] == "fedchain" and len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return parts[0]


def test_the_scan_sees_the_project():
    assert "fedchain.node.runner" in MODULES and "fedchain.coordinator.runner" in MODULES
    assert "fedchain.contracts.bindings" in MODULES
    assert "fedchain.plan" in IMPORTS["fedchain.node.runner"]


@pytest.mark.parametrize("a,b", [("node", "coordinator"), ("coordinator", "node")])
def test_roles_never_import_each_other(a, b):
    bad = sorted(m for m, imps in IMPORTS.items() if top(m) == a and any(top(i) == b for i in imps))
    assert not bad, f"{a} modules importing {b}: {bad}"


def test_only_the_bindings_touch_web3():
    bad = sorted(
        m for m, imps in IMPORTS.items()
        if any(top(i) in ("web3", "eth_tester") for i in imps) and top(m) != "contracts"
    )
    assert not bad, f"modules outside contracts/ importing web3 or eth_tester: {bad}"


def test_core_and_store_import_no_role():
    roles = {"node", "coordinator"}
    bad = sorted(
        m for m, imps in IMPORTS.items()
        if (top(m) == "ipfs" or (top(m) == "fedchain" and not m.startswith("fedchain.cli")))
        and any(top(i) in roles for i in imps)
    )
    assert not bad, f"core or store modules importing a role package: {bad}"


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
