"""Shared fixtures: the real MovieLens 100K files and other expensive parts, built once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """The real MovieLens 100K folder (read by path, never copied into the repo)."""
    path = Path(os.environ.get("TWOTOWER_ML100K", ROOT.parent / "shared" / "datasets" / "ml-100k"))
    if not (path / "u.data").is_file():
        raise FileNotFoundError(f"MovieLens 100K not found at {path}; set TWOTOWER_ML100K")
    return path
