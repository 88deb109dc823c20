"""Whether a process that left files behind (a version build, an index copy) still runs: its pid,
told apart from a later process given the same pid by its start time (Linux /proc)."""

from __future__ import annotations

import os
from pathlib import Path


def process_start(pid: int) -> str | None:
    """The process start time in clock ticks since boot (Linux), to tell a reused pid apart."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None) -> bool:
    """True while process `pid`, started at `start` (None: whenever), runs; a zombie is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True  # no /proc (macOS): trust kill(0)
    if state == "Z":
        return False  # killed but not yet reaped by its parent
    return start is None or process_start(pid) == start
