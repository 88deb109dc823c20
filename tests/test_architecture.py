"""Imports run one way: feature_repo -> towers -> index -> {pipelines, services} -> twotower."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_repo", "towers", "index", "pipelines", "services", "twotower")
MAY_IMPORT = {
    "feature_repo": set(),
    "towers": {"feature_repo"},
    "index": {"feature_repo", "towers"},
    "pipelines": {"feature_repo", "towers", "index"},
    "services": {"feature_repo", "towers", "index"},
    "twotower": {"feature_repo", "towers", "index", "pipelines", "services"},
}


def project_imports(path: Path) -> set[str]:
    """The project packages a module imports, at any depth (lazy imports in functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found |= {n.split(".")[0] for n in names} & set(PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {f"{path.relative_to(ROOT)} imports {other}"
             for path in (ROOT / package).rglob("*.py")
             for other in project_imports(path) - MAY_IMPORT[package] - {package}}
    assert not wrong, sorted(wrong)
