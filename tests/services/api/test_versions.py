"""Versions and dependencies: 503 until something is live, hot reload under load without keeping
replaced versions open, and the re-ranker's status (an online store outage:
`tests/deploy/test_online_outage.py`)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from index.edge import COPIES_DIR
from tests.services.conftest import Service, improving_ranker, promote_version


def test_nothing_live_is_a_503_with_the_reason_and_serving_resumes(service, client):
    health = service.before_live["health"]
    assert health.status_code == 503
    body = health.json()
    assert (body["status"], body["reason"], body["ranking"]) == ("unavailable", "no live index version",
                                                                 None)
    assert body["dependencies"]["index"] == {"status": "degraded", "reason": "no live index version"}
    assert body["dependencies"]["online_store"] == {"status": "ok", "reason": None}
    error = service.before_live["recommend"]
    assert error.status_code == 503 and error.message == "no live index version"
    assert client.health().status == "ok" and client.recommend(1).items
    assert client.health().ranking == "retrieval order: no re-ranker trained for this model version"


def test_promotion_during_a_request_stream_fails_no_request(service):
    before = service.client().version()
    answers, errors, stop = [], [], threading.Event()

    def stream() -> None:
        with service.client() as client:
            while not stop.is_set():
                try:
                    answers.append(client.recommend(1, k=20))
                except Exception as error:  # collected: the assertion below names it
                    errors.append(error)

    worker = threading.Thread(target=stream)
    worker.start()
    try:
        model_version, index_version = promote_version(service, improving_ranker(candidates=30))
        service.wait_for_index_version(index_version)
        count = len(answers)
        while len(answers) < count + 20 and worker.is_alive():
            stop.wait(0.05)
    finally:
        stop.set()
        worker.join()

    assert errors == []
    pairs = {(a.model_version, a.index_version) for a in answers}
    assert pairs == {(before.model_version, before.index_version), (model_version, index_version)}
    new = [a for a in answers if a.index_version == index_version]
    assert all(a.ranking == "ranker" for a in new)
    assert all(a.ranking == "retrieval" for a in answers if a.index_version != index_version)
    for answer in new:
        scores = [i.score for i in answer.items]  # a new item's kept place too
        assert scores == sorted(scores, reverse=True)
        assert all(i.reasons.ranker_score == i.score for i in answer.items)
    assert service.client().version().ranking == "ranker"


def _version(relative: str) -> str:
    """The version directory a path under the index root belongs to (the server serves copies)."""
    parts = relative.split("/")
    return parts[2] if parts[0] == COPIES_DIR else parts[0]


def _open_versions(service: Service) -> set[str]:
    """Index versions the server has mapped (an open Edge shard maps its files)."""
    root = f"{(service.home / 'index').resolve()}/"
    paths = [line.split(maxsplit=5)[-1] for line in Path(f"/proc/{service.pid}/maps").read_text()
             .splitlines()]
    return {_version(path[len(root):]) for path in paths if path.startswith(root)}


def _copied_versions(service: Service) -> set[str]:
    """Index versions the server holds a copy of on disk."""
    return {version.name for copies in (service.home / "index" / COPIES_DIR).iterdir()
            for version in copies.iterdir()}


def test_repeated_promotions_leave_only_the_live_shard_open(service):
    for _ in range(3):
        _, index_version = promote_version(service)
        service.wait_for_index_version(index_version)
    live = Path(service.client().version().index_location).name
    deadline = time.monotonic() + 30  # the replaced version is released on the next reload tick
    while {live} != _open_versions(service) | _copied_versions(service) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _open_versions(service) == {live}
    assert _copied_versions(service) == {live}  # a released version's copy is deleted
