"""The layout is the architecture: each package imports only what DEVELOPERS.md allows."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
OURS = {"hardware", "inference", "transport", "node", "provisioning", "hil", "hq"}
ALLOWED = {
    "hardware": set(),
    "inference": set(),
    "transport": set(),
    "node": {"hardware", "inference", "transport"},
    "hq": {"transport"},
    "provisioning": {"transport"},
    "hil": {"hardware", "provisioning", "transport", "hq", "inference"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported in imports_of(path) - ALLOWED[package] - {package}:
            bad.append(f"{path.relative_to(ROOT)} imports {imported}")
    assert not bad, "\n".join(bad)


def test_hil_uses_node_only_from_outside():
    # hil may start `alpr-node` as a process but never import node internals.
    for path in (ROOT / "hil").rglob("*.py"):
        assert "node" not in imports_of(path), path


def test_no_star_imports_and_no_bare_except():
    bad = []
    for package in ALLOWED:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
                    bad.append(f"{path}: star import")
                if isinstance(node, ast.ExceptHandler) and node.type is None:
                    bad.append(f"{path}:{node.lineno}: bare except")
    assert not bad, "\n".join(bad)
