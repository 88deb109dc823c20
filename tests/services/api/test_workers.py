"""`twotower serve --workers 2`: each worker process serves its own copy of the live index version,
a write one worker answers reaches the answers of every worker (through the event log), and any
worker's /metrics counts every worker's requests."""

from __future__ import annotations

import re
import secrets
import shutil
import time
from pathlib import Path

import httpx

from index.catalogue import latest_stock
from index.edge import COPIES_DIR
from services.client import RecommenderClient
from tests.services.api.test_event_log import _in_stock_neighbours
from tests.services.conftest import Service
from tests.utils.polling import eventually
from tests.utils.servers import twotower_service


def _workers(pid: int) -> set[int]:
    """uvicorn's worker processes (its other child is multiprocessing's resource tracker)."""
    children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    return {c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}


ROUTE = re.escape('route="/v1/items/{item_id}/similar"')
SIMILAR = re.compile(rf'twotower_requests_total\{{method="GET",{ROUTE},status="200"\}} (\S+)')
TIMED = re.compile(rf'twotower_request_seconds_count\{{{ROUTE}\}} (\S+)')


def _counted(url: str) -> tuple[list[float], list[float]]:
    """One worker's /metrics, on a fresh connection: requests and timings of the similar route."""
    text = httpx.get(f"{url}/metrics", headers={"Connection": "close"}).text
    return [float(n) for n in SIMILAR.findall(text)], [float(n) for n in TIMED.findall(text)]


def test_two_workers_serve_their_own_copies_and_each_others_writes(service: Service, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(service.home, home, ignore=shutil.ignore_patterns("*.log", COPIES_DIR))
    key = secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": key, "TWOTOWER_WRITE_KEYS": key}
    copies = home / "index" / COPIES_DIR
    stock = latest_stock(service.dataset.stock)
    probe, item = [i for i, q in stock.items() if q > 0][:2]
    with twotower_service(home, env, home / "serve.log", workers=2) as server:
        copy = Service(server.url, home, service.dataset, service.artifact, read_key=key,
                       write_key=key, pid=server.process.pid)
        copy.wait_for_index_version(service.client().version().index_version)
        workers = _workers(server.process.pid)
        deadline = time.monotonic() + 60  # each worker copies the shard as it loads the version
        while len(list(copies.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        log = home / "serve.log"
        assert len(workers) == 2, log.read_text()
        assert {int(c.name.split("-")[0]) for c in copies.iterdir()} == workers, log.read_text()
        # the service's own records reach the log: each worker names the version it serves
        serving = f"serving index version {copy.client().version().index_version} "
        assert eventually(lambda: log.read_text().count(serving) == 2), log.read_text()
        with copy.client() as client:
            assert item in _in_stock_neighbours(client, probe)
            client.set_stock(item, 0)
        time.sleep(1.0)  # each worker replays the log every 0.25 s
        for _ in range(20):  # a connection each: the workers take turns accepting them
            with RecommenderClient(server.url, api_key=key) as client:
                assert item not in _in_stock_neighbours(client, probe)
        for _ in range(4):  # whichever worker answers counts both workers' 21 requests
            # (a request is counted just after its answer is sent: the last one may lag a little)
            assert eventually(lambda: _counted(server.url) == ([21.0], [21.0]), timeout_s=10)
    assert not any(copies.iterdir())  # a worker that stops deletes its copy
