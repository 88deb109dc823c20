"""The `twotower` command is installed and documents its subcommands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from services.cli import main


def test_twotower_help_lists_commands():
    done = subprocess.run([str(Path(sys.executable).parent / "twotower"), "--help"],
                          capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("features", "demo", "bench"):
        assert command in done.stdout


def test_unknown_benchmark_is_named(capsys):
    with pytest.raises(SystemExit, match="no benchmark 'nope'"):
        main(["bench", "nope"])
