"""Imports run one way: feature_repo -> towers -> index -> {pipelines, services} -> twotower.

The one arrow between the two siblings: the pipelines' sensors write through the running service
as any application does, by its client (which needs the service's schemas alone, never its engine
or API).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("feature_repo", "towers", "index", "pipelines", "services", "twotower")
CLIENT = {"services.client", "services.schemas"}  # the service's client, and what it imports
MAY_IMPORT = {
    "feature_repo": set(),
    "towers": {"feature_repo"},
    "index": {"feature_repo", "towers"},
    "pipelines": {"feature_repo", "towers", "index", *CLIENT},
    "services": {"feature_repo", "towers", "index"},
    "twotower": {"feature_repo", "towers", "index", "pipelines", "services"},
}


def project_imports(path: Path) -> set[str]:
    """The project modules a module imports, at any depth (lazy imports in functions count)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def _within(module: str, allowed: set[str]) -> bool:
    return any(module == a or module.startswith(f"{a}.") for a in allowed)


@pytest.mark.parametrize("package", PACKAGES)
def test_a_package_imports_only_the_layers_below_it(package):
    wrong = {f"{path.relative_to(ROOT)} imports {module}"
             for path in (ROOT / package).rglob("*.py")
             for module in project_imports(path)
             if not _within(module, MAY_IMPORT[package] | {package})}
    assert not wrong, sorted(wrong)


def test_the_client_needs_nothing_of_the_service_but_its_schemas():
    services = ROOT / "services"
    wrong = {f"{path.relative_to(ROOT)} imports {module}"
             for path in [*(services / "client").rglob("*.py"), services / "schemas.py",
                          services / "__init__.py"]
             for module in project_imports(path) if not _within(module, CLIENT)}
    assert not wrong, sorted(wrong)
