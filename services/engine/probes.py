"""Dependency probes for `/v1/health`: each check runs in a thread of its own with a timeout, so a
hung dependency reads as `degraded` instead of hanging the probe, and never piles up threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

from services.schemas import Dependency

OK = Dependency(status="ok")


class Probe:
    """One dependency's check; a check still running from an earlier probe is waited on again,
    not started twice."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._running: Future | None = None

    def start(self, check: Callable[[], object]) -> Future:
        with self._lock:
            if self._running is None or self._running.done():
                self._running = Future()
                threading.Thread(target=self._run, args=(check, self._running), daemon=True,
                                 name=f"probe-{self.name}").start()
            return self._running

    @staticmethod
    def _run(check: Callable[[], object], future: Future) -> None:
        try:
            check()
            future.set_result(None)
        except BaseException as exc:  # the probe reports any failure; nothing is raised
            future.set_exception(exc)


def probe_all(probes: Mapping[str, tuple[Probe, Callable[[], object]]], timeout_s: float
              ) -> dict[str, Dependency]:
    """Every (probe, check) at once; each `ok`, or `degraded` with the error or the timeout."""
    running = {name: probe.start(check) for name, (probe, check) in probes.items()}
    deadline, found = time.monotonic() + timeout_s, {}
    for name, future in running.items():  # they run together, against one deadline
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
            found[name] = OK
        except FutureTimeout:
            found[name] = Dependency(status="degraded", reason=f"no answer within {timeout_s:g}s")
        except Exception as exc:
            found[name] = Dependency(status="degraded", reason=f"{type(exc).__name__}: {exc}")
    return found
