"""Every benchmark runs as a script from any folder (`twotower bench NAME` runs it by path)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_a_script_puts_the_checkout_on_the_path_before_it_imports_bench(script):
    body = ast.parse(script.read_text()).body
    own = [n.lineno for n in body if isinstance(n, ast.ImportFrom) and n.level == 0
           and n.module.split(".")[0] == "bench"]  # the one package of the checkout not installed
    inserts = [n.lineno for n in body if "sys.path.insert" in ast.unparse(n)]
    assert not own or (inserts and inserts[0] < min(own)), f"{script.name}: imports {own} before the path"
