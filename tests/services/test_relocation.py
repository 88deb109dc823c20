"""A data directory is relocatable: a copy, served with `twotower serve --home COPY`, reads and
writes its own files, never the original's."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from tests.services.conftest import Service, active_user


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_registry_stores_locations_relative_to_the_home(service):
    with sqlite3.connect(service.home / "registry.db") as db:
        locations = [row[0] for table in ("model_versions", "index_versions")
                     for row in db.execute(f"SELECT location FROM {table}")]  # noqa: S608
    assert locations and all(location.startswith("./") for location in locations)


def test_a_copied_home_serves_and_writes_its_own_files(service, copied_service: Service):
    original = service.home
    before = {p: _digest(p) for p in (original / "feature_repo" / "data").glob("*.db")}
    with copied_service.client() as copy:
        version = copy.version()
        assert Path(version.index_location).is_relative_to(copied_service.home)
        assert Path(version.model_location).is_relative_to(copied_service.home)
        item = int(service.dataset.items["item_id"].iloc[-1])
        assert copy.set_stock(item, 7).quantity == 7  # a write: refused before, as "being loaded"
        added = copy.upsert_item(10**9, title="copied lamp", categories=["lamps"], stock=3)
        assert added.index_version == version.index_version
        assert 10**9 in [i.item_id for i in copy.similar_items(item, k=500, in_stock_only=False).items]
        assert copy.health().status == "ok"
    assert {p: _digest(p) for p in before} == before  # the original's online store and registry
    with service.client() as shared:  # its online store kept its tables (the copy's Feast apply
        assert shared.recommend(active_user(service, 9)).items  # touched none of the original's)
        assert 10**9 not in [i.item_id for i in shared.similar_items(item, k=500,
                                                                      in_stock_only=False).items]
