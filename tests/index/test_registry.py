"""Behaviour of the version registry: promotion, rollback, failed and killed builds, pruning."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update

from index import (
    EdgeSettings,
    IndexSpec,
    InvalidItemsError,
    ItemBatch,
    NoLiveVersionError,
    UnknownVersionError,
    VersionStateError,
    build_version,
    open_backend,
)
from index.registry import STALE_BUILD_AFTER, IndexVersion, Registry, Status
from tests.index.conftest import DIM, LiveIndex, random_items
from tests.utils.servers import start_postgres

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
]


def _build(live: LiveIndex, items: ItemBatch, *, promote: bool = False) -> IndexVersion:
    return build_version(
        items, registry=live.registry, spec=live.spec, model_version_id=live.model_version_id, promote=promote
    )


def _served_ids(live: LiveIndex) -> set[int]:
    query = np.ones(DIM) / np.sqrt(DIM)
    return {h.item_id for h in live.backend.search(query, k=10)}


def test_promote_makes_version_live_and_retires_the_previous_one(live_index: LiveIndex) -> None:
    first = live_index.registry.live()
    assert first is not None
    second = _build(live_index, random_items(300, seed=5, first_id=50_000))
    assert live_index.registry.get(second.id).status == Status.READY
    assert _served_ids(live_index) < set(range(50_000))  # still the first version

    promoted = live_index.registry.promote(second.id)

    assert promoted.status == Status.LIVE
    assert live_index.registry.get(first.id).status == Status.RETIRED
    assert live_index.backend.live_location() == second.location
    assert all(i >= 50_000 for i in _served_ids(live_index))


def test_rollback_serves_the_previous_live_version_again(live_index: LiveIndex) -> None:
    first = live_index.registry.live()
    assert first is not None
    second = _build(live_index, random_items(300, seed=5, first_id=50_000), promote=True)

    restored = live_index.registry.rollback()

    assert restored.id == first.id
    assert live_index.registry.get(second.id).status == Status.RETIRED
    assert live_index.backend.live_location() == first.location
    assert all(i < 50_000 for i in _served_ids(live_index))
    with pytest.raises(VersionStateError, match=f"index version {first.id} has no earlier"):
        live_index.registry.rollback()


def test_a_switch_killed_before_its_commit_is_pointed_back_when_the_registry_opens(
        live_index: LiveIndex) -> None:
    first = live_index.registry.live()
    assert first is not None
    second = _build(live_index, random_items(300, seed=5, first_id=50_000))
    live_index.backend.activate(second.location)  # a promotion moved the pointer, then was killed

    reopened = Registry(live_index.registry.url, data_dir=live_index.data_dir, backend=live_index.backend)

    assert reopened.live().id == first.id
    assert live_index.backend.live_location() == first.location
    assert all(i < 50_000 for i in _served_ids(live_index))
    assert not reopened.restore_live_pointer()  # agreeing now: nothing to move
    reopened.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_restoring_the_pointer_waits_for_a_switch_in_progress_and_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str) -> None:
    """A poll that finds the pointer ahead of the registry mid-promotion must not undo it."""
    server = start_postgres() if database == "postgresql" else None
    backend = open_backend(EdgeSettings(path=tmp_path / "index"))
    registry = Registry(server.create_database("switching") if server else None, data_dir=tmp_path,
                        backend=backend)
    switched, commit = threading.Event(), threading.Event()
    try:
        model = registry.register_model("towers-test", config={"dim": DIM})
        spec = IndexSpec(dim=DIM)
        build_version(random_items(300), registry=registry, spec=spec, model_version_id=model.id,
                      promote=True)
        second = build_version(random_items(300, first_id=50_000), registry=registry, spec=spec,
                               model_version_id=model.id)
        activate = backend.activate

        def activate_then_wait(location: str) -> None:
            activate(location)
            switched.set()
            commit.wait(30)

        monkeypatch.setattr(backend, "activate", activate_then_wait)
        promoting = threading.Thread(target=registry.promote, args=(second.id,))
        promoting.start()
        assert switched.wait(30)
        monkeypatch.setattr(backend, "activate", activate)
        restored: list[bool] = []
        restoring = threading.Thread(target=lambda: restored.append(registry.restore_live_pointer()))
        restoring.start()
        time.sleep(0.5)  # let it reach the lock the promotion holds
        commit.set()
        promoting.join(30)
        restoring.join(30)

        assert restored == [False]
        assert registry.live().id == second.id
        assert backend.live_location() == second.location
    finally:
        commit.set()
        registry.close()
        backend.close()
        if server:
            server.stop()


def test_promoting_a_version_that_is_not_ready_is_refused(live_index: LiveIndex) -> None:
    live = live_index.registry.live()
    building = live_index.registry.register_build(model_version_id=live_index.model_version_id, config={})
    with pytest.raises(
        VersionStateError, match=f"index version {building.id}: cannot promote, status is 'building'"
    ):
        live_index.registry.promote(building.id)
    live_index.registry.mark_failed(building.id, "test")
    with pytest.raises(VersionStateError, match="status is 'failed'"):
        live_index.registry.promote(building.id)
    assert live_index.registry.live() is not None
    assert live_index.registry.live().id == live.id  # type: ignore[union-attr]


def test_unknown_versions_are_named(live_index: LiveIndex) -> None:
    with pytest.raises(UnknownVersionError, match="index version 999"):
        live_index.registry.promote(999)
    with pytest.raises(UnknownVersionError, match="model version 777"):
        live_index.registry.register_build(model_version_id=777, config={})


def test_failed_build_is_marked_failed_and_live_keeps_serving(live_index: LiveIndex) -> None:
    live = live_index.registry.live()
    served = _served_ids(live_index)
    bad = random_items(200, seed=3, first_id=70_000)
    bad.vectors[42, 0] = np.nan

    with pytest.raises(InvalidItemsError, match=r"item_id 70042 \(row 42\)"):
        _build(live_index, bad, promote=True)

    (failed,) = live_index.registry.versions(Status.FAILED)
    assert "item_id 70042" in (failed.error or "")
    assert live_index.registry.live().id == live.id  # type: ignore[union-attr]
    assert _served_ids(live_index) == served


KILLED_BUILDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from index import EdgeSettings, IndexSpec, build_version, open_backend
    from index.registry import Registry
    from tests.index.conftest import random_items

    data_dir, model_id = Path(sys.argv[1]), int(sys.argv[2])
    backend = open_backend(EdgeSettings(path=data_dir / "index"))
    registry = Registry(data_dir=data_dir, backend=backend)
    items = random_items(60_000, dim=32, seed=4, first_id=1_000_000)
    build_version(items, registry=registry, spec=IndexSpec(dim=32), model_version_id=model_id, promote=True)
    """
)


def _wait_for_building(registry: Registry, proc: subprocess.Popen[bytes]) -> IndexVersion:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the builder ended before it could be killed"
        building = registry.versions(Status.BUILDING)
        if building and building[0].location and Path(building[0].location, "shard").exists():
            return building[0]
        time.sleep(0.05)
    raise AssertionError("the builder never started building")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_build_another_host_never_finished_is_marked_failed_after_a_day(
        tmp_path: Path, database: str) -> None:
    """A builder on a container that was recreated: no registry open of its host will ever judge
    its row, so one day after it started any registry open marks it failed (SQLite hands back
    times without their zone, PostgreSQL with it)."""
    server = start_postgres() if database == "postgresql" else None
    registry = Registry(server.create_database("stale") if server else None, data_dir=tmp_path)
    try:
        model = registry.register_model("towers-test", config={"dim": DIM})
        recent, gone = (registry.register_build(model_version_id=model.id, config={}, backend="edge")
                        for _ in range(2))
        with registry.engine.begin() as db:
            db.execute(update(IndexVersion).where(IndexVersion.id.in_([recent.id, gone.id]))
                       .values(builder_host="a-container-long-gone"))
            db.execute(update(IndexVersion).where(IndexVersion.id == gone.id).values(
                created_at=datetime.now(UTC) - STALE_BUILD_AFTER - timedelta(minutes=1)))
        assert registry.fail_stale_builds() == [gone.id]
        assert registry.get(gone.id).status == Status.FAILED
        assert "a-container-long-gone, which never finished it" in (registry.get(gone.id).error or "")
        assert registry.get(recent.id).status == Status.BUILDING
    finally:
        registry.close()


@pytest.mark.parametrize("backend_name", ["edge"])
def test_killed_build_is_marked_failed_and_live_keeps_serving(live_index: LiveIndex) -> None:
    live, served = live_index.registry.live(), _served_ids(live_index)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_BUILDER, str(live_index.data_dir), str(live_index.model_version_id)],
        env=env,
        cwd=ROOT,
    )
    try:
        killed = _wait_for_building(live_index.registry, proc)
        time.sleep(0.5)  # let it write part of the version
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    reopened = Registry(data_dir=live_index.data_dir, backend=live_index.backend)

    version = reopened.get(killed.id)
    assert version.status == Status.FAILED
    assert f"builder process {proc.pid}" in (version.error or "")
    assert reopened.live().id == live.id  # type: ignore[union-attr]
    assert _served_ids(live_index) == served
    reopened.close()


@pytest.mark.parametrize("backend_name", ["edge"])
def test_prune_keeps_live_rollback_target_and_newest_versions(live_index: LiveIndex) -> None:
    registry = live_index.registry
    old_live = registry.live()
    versions = [_build(live_index, random_items(100, seed=s, first_id=10_000 * s)) for s in range(1, 5)]
    registry.promote(versions[0].id)  # old live -> retired, the rollback target
    failed = registry.register_build(model_version_id=live_index.model_version_id, config={})
    registry.mark_failed(failed.id, "test")

    deleted = registry.prune(keep=1)

    assert sorted(deleted) == sorted([versions[1].id, versions[2].id, failed.id])
    remaining = {v.id: v.status for v in registry.versions()}
    assert remaining == {old_live.id: Status.RETIRED, versions[0].id: Status.LIVE,  # type: ignore[union-attr]
                         versions[3].id: Status.READY}
    assert not live_index.backend.exists(versions[1].location)  # type: ignore[arg-type]
    assert live_index.backend.exists(old_live.location)  # type: ignore[union-attr, arg-type]
    assert live_index.backend.exists(versions[3].location)  # type: ignore[arg-type]
    assert all(i >= 10_000 for i in _served_ids(live_index))
    assert registry.prune(keep=0) == [versions[3].id], "the rollback target outlives keep=0"
    assert registry.rollback().id == old_live.id  # type: ignore[union-attr]


def test_model_versions_keep_their_config_and_metrics(tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    model = registry.register_model("towers-v3", config={"dim": 64}, metrics={"recall@10": 0.31})
    assert registry.get_model(model.id).config == {"dim": 64}
    assert registry.get_model(model.id).metrics == {"recall@10": 0.31}
    build = registry.register_build(
        model_version_id=model.id, config={"dim": 64}, backend="edge", location="x"
    )
    ready = registry.mark_ready(build.id, item_count=5, metrics={"recall": 0.99})
    assert (ready.status, ready.item_count, ready.metrics) == (Status.READY, 5, {"recall": 0.99})
    registry.close()


def test_live_model_is_the_model_behind_the_live_index_version(live_index: LiveIndex) -> None:
    registry = live_index.registry
    assert registry.live_model().id == registry.live().model_version_id
    other = registry.register_model("towers-next", location="elsewhere")
    build = registry.register_build(model_version_id=other.id, config={}, backend="edge", location="x")
    registry.mark_ready(build.id, item_count=0)
    assert registry.live_model().id != other.id, "a ready version is not live yet"


def test_live_model_without_a_live_version_says_so(tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    with pytest.raises(NoLiveVersionError, match="no index version is live"):
        registry.live_model()
    registry.close()


def test_spec_refuses_product_quantization_of_odd_dimension() -> None:
    with pytest.raises(ValueError, match="dim=15: product quantization needs an even dimension"):
        IndexSpec(dim=15, quantization="product")


def _ready_versions(registry: Registry, n: int) -> list[int]:
    """`n` ready index versions of one model, registered without a backend."""
    model = registry.register_model("towers-test")
    ids = []
    for _ in range(n):
        build = registry.register_build(model_version_id=model.id, config={}, backend="edge", location="x")
        ids.append(registry.mark_ready(build.id, item_count=0).id)
    return ids


def _rolled_back_then_promoted(registry: Registry) -> tuple[int, int, int, int]:
    """v1, v2, v3 promoted in turn, a rollback (v3 -> v2), then v4 promoted: its ids."""
    v1, v2, v3, v4 = _ready_versions(registry, 4)
    for version_id in (v1, v2, v3):
        registry.promote(version_id)
    assert registry.rollback().id == v2
    registry.promote(v4)  # replaces v2, not v3 (the version rolled away from)
    return v1, v2, v3, v4


def test_rollbacks_walk_back_the_chain_of_live_versions_not_to_the_one_rolled_away_from(
        tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    v1, v2, _, _ = _rolled_back_then_promoted(registry)
    assert registry.rollback_target().id == v2  # type: ignore[union-attr]
    assert [registry.rollback().id, registry.rollback().id] == [v2, v1]
    with pytest.raises(VersionStateError, match=f"index version {v1} has no earlier live version left"):
        registry.rollback()
    assert registry.live().id == v1  # type: ignore[union-attr]
    registry.close()


def test_prune_keeps_the_version_the_live_one_replaced(tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    v1, v2, v3, v4 = _rolled_back_then_promoted(registry)
    assert sorted(registry.prune(keep=0)) == [v1, v3]
    assert {v.id: v.status for v in registry.versions()} == {v2: Status.RETIRED, v4: Status.LIVE}
    assert registry.rollback().id == v2
    registry.close()


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_prune_keeps_a_version_a_promotion_made_the_rollback_target_while_it_ran(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database: str) -> None:
    url = start_postgres().create_database("pruning") if database == "postgresql" else None
    registry, other = Registry(url, data_dir=tmp_path), Registry(url, data_dir=tmp_path)
    v1, v2, v3 = _ready_versions(registry, 3)
    registry.promote(v1)
    registry.promote(v2)  # live; v1 the rollback target; v3 ready
    scanned = registry.rollback_target

    def promoted_meanwhile():  # another process promotes v3 once prune has read the target
        target = scanned()
        other.promote(v3)
        return target

    monkeypatch.setattr(registry, "rollback_target", promoted_meanwhile)
    assert registry.prune(keep=0) == []  # not v2, the version v3 replaced (v1 waits for the next)
    monkeypatch.undo()
    assert registry.prune(keep=0) == [v1]
    assert registry.rollback().id == v2
    registry.close()
    other.close()


def test_prune_goes_on_past_data_it_cannot_drop_and_names_it(
        live_index: LiveIndex, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    registry = live_index.registry
    built = [build_version(live_index.items, registry=registry, spec=live_index.spec,
                           model_version_id=live_index.model_version_id).id for _ in range(2)]
    drop, refused = live_index.backend.drop, []

    def unreachable_once(location: str) -> None:
        if not refused:
            refused.append(location)
            raise ConnectionError("index unreachable")
        drop(location)

    monkeypatch.setattr(live_index.backend, "drop", unreachable_once)
    assert sorted(registry.prune(keep=0)) == sorted(built)
    assert f"index version {max(built)}: pruned, but its data at" in caplog.text
    assert {v.status for v in registry.versions()} == {Status.LIVE}


def test_a_pruned_id_is_never_handed_out_again(tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    v1, v2, v3 = _ready_versions(registry, 3)
    registry.promote(v1)
    assert sorted(registry.prune(keep=0)) == [v2, v3]
    model = registry.register_model("again")
    assert registry.register_build(model_version_id=model.id, config={}, backend="edge",
                                   location="y").id == v3 + 1
    assert model.id == 2
    registry.close()


def test_a_registry_database_from_before_autoincrement_is_rebuilt_with_its_rows(tmp_path: Path) -> None:
    registry = Registry(data_dir=tmp_path)
    v1, v2, v3 = _ready_versions(registry, 3)
    registry.promote(v1)
    with registry.engine.begin() as connection:  # the tables as they were: ids SQLite may reuse
        for table in ("model_versions", "index_versions"):
            sql = connection.exec_driver_sql(
                f"SELECT sql FROM sqlite_master WHERE name = '{table}'").scalar()
            columns = ", ".join(c.name for c in IndexVersion.metadata.tables[table].columns)
            connection.exec_driver_sql(sql.replace(f"TABLE {table}", "TABLE old")
                                       .replace(" AUTOINCREMENT", ""))
            connection.exec_driver_sql(f"INSERT INTO old ({columns}) SELECT {columns} FROM {table}")
            connection.exec_driver_sql(f"DROP TABLE {table}")
            connection.exec_driver_sql(f"ALTER TABLE old RENAME TO {table}")
        connection.exec_driver_sql("DROP INDEX IF EXISTS ix_index_versions_one_live")
        connection.exec_driver_sql(
            "CREATE UNIQUE INDEX ix_index_versions_one_live ON index_versions (status) WHERE status = 'live'")
        assert "AUTOINCREMENT" not in connection.exec_driver_sql(
            "SELECT group_concat(sql) FROM sqlite_master WHERE type = 'table'").scalar()
        # a row still names version 9, pruned before the upgrade
        connection.exec_driver_sql(f"UPDATE index_versions SET previous_live_id = 9 WHERE id = {v2}")
    registry.close()

    reopened = Registry(data_dir=tmp_path)
    assert {v.id: v.status for v in reopened.versions()} == {
        v1: Status.LIVE, v2: Status.READY, v3: Status.READY}
    model = reopened.register_model("again")
    build = reopened.register_build(model_version_id=model.id, config={}, backend="edge", location="y")
    assert build.id == 10  # past every id still named
    reopened.mark_ready(build.id, item_count=0)
    assert sorted(reopened.prune(keep=0)) == [v2, v3, 10]
    assert reopened.register_build(model_version_id=model.id, config={}, backend="edge",
                                   location="z").id == 11
    with pytest.raises(Exception, match="UNIQUE"):  # the one-live index came back with the table
        with reopened.engine.begin() as connection:
            connection.execute(update(IndexVersion).values(status=Status.LIVE))
    reopened.close()


def test_a_registry_database_from_before_previous_live_id_rolls_back_by_promotion_time(
    tmp_path: Path,
) -> None:
    registry = Registry(data_dir=tmp_path)
    v1, v2, v3 = _ready_versions(registry, 3)
    for version_id in (v1, v2, v3):
        registry.promote(version_id)
    with registry.engine.begin() as connection:  # the schema as it was before the column
        connection.exec_driver_sql("ALTER TABLE index_versions DROP COLUMN previous_live_id")
    registry.close()

    reopened = Registry(data_dir=tmp_path)

    assert reopened.rollback_target().id == v2  # type: ignore[union-attr]
    assert [reopened.rollback().id, reopened.rollback().id] == [v2, v1]
    reopened.close()
