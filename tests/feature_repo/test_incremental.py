"""Feature tables and training frames extended day by day equal a full rebuild; unchanged days stay."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from feature_repo import tables
from feature_repo.datasets import Dataset, load
from feature_repo.store import (
    ENTITY_COLUMNS as ENTITIES,
)
from feature_repo.store import (
    FeatureStoreConfig,
    apply,
    drop_removed_days,
    render_repo,
    stale_since,
    training_frame,
    write_training_frame,
)
from feature_repo.tables import DAILY_TABLES, LATEST_TABLES, TABLES, table_path, write_feature_tables

SHOP = "synthetic:items=60,users=40,events=1500,seed=3"
DATED = {*DAILY_TABLES, *LATEST_TABLES}  # marked unloaded from the first day recomputed
KEYS = {"user_profile": "user_id", "user_history": "user_id", "item_content": "item_id",
        "item_stock": "item_id", "item_popularity": "item_id", "user_seen": "user_id"}


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return load(SHOP)


def last_day(dataset: Dataset) -> pd.Timestamp:
    """The last day with an event (the simulated stock log runs on past the last interaction)."""
    newest = max(dataset.interactions["event_timestamp"].max(), dataset.stock["event_timestamp"].max())
    return newest.floor("D")


def before(dataset: Dataset, end: pd.Timestamp, *, skip_from: pd.Timestamp | None = None) -> Dataset:
    """The dataset's events and stock rows before `end`, less those from `skip_from` on."""
    def keep(frame: pd.DataFrame) -> pd.DataFrame:
        at = frame["event_timestamp"]
        kept = (at < end) & ((at < skip_from) if skip_from is not None else True)
        return frame[kept].reset_index(drop=True)
    return dataclasses.replace(dataset, interactions=keep(dataset.interactions), stock=keep(dataset.stock))


def read_table(out_dir: Path, table: str) -> pd.DataFrame:
    frame = pd.read_parquet(table_path(out_dir, table))
    frame = frame.sort_values([KEYS[table], "event_timestamp"], kind="stable").reset_index(drop=True)
    return frame.map(lambda v: list(v) if hasattr(v, "__len__") and not isinstance(v, str) else v)


def day_files(out_dir: Path) -> dict[str, int]:
    """Every day file of the daily tables and its modification time."""
    return {f"{t}/{p.name}": p.stat().st_mtime_ns for t in DAILY_TABLES
            for p in table_path(out_dir, t).glob("????-??-??.parquet")}


def static_files(out_dir: Path) -> dict[str, int]:
    return {t: table_path(out_dir, t).stat().st_mtime_ns for t in TABLES if t not in DAILY_TABLES}


def assert_same_tables(left: Path, right: Path) -> None:
    for table in TABLES:
        pd.testing.assert_frame_equal(read_table(left, table), read_table(right, table), obj=table)


def event_days(dataset: Dataset) -> set:
    return {t.date() for frame in (dataset.interactions, dataset.stock)
            for t in frame["event_timestamp"].dt.floor("D")}


@pytest.mark.parametrize("gap_days", [0, 2])
def test_a_new_day_extends_the_tables_to_what_a_full_rebuild_writes(shop, tmp_path, gap_days):
    last = last_day(shop)
    # The new day may follow days without events: their popularity rows change all the same.
    old = before(shop, last - timedelta(days=gap_days))
    grown = dataclasses.replace(shop, **{name: pd.concat(
        [getattr(old, name), getattr(shop, name)[getattr(shop, name)["event_timestamp"] >= last]],
        ignore_index=True) for name in ("interactions", "stock")})
    write_feature_tables(old, tmp_path / "daily")
    kept = day_files(tmp_path / "daily")
    update = write_feature_tables(grown, tmp_path / "daily")
    after_old = max(event_days(old)) + timedelta(days=1)  # every day from there, events or not
    assert update.days == [after_old + timedelta(days=n) for n in range((last.date() - after_old).days + 1)]
    assert len(update.days) > gap_days
    assert update.kept_days == len(event_days(old))
    assert {f: t for f, t in day_files(tmp_path / "daily").items() if f in kept} == kept, \
        "no earlier day file was rewritten"
    write_feature_tables(grown, tmp_path / "rebuilt")
    assert_same_tables(tmp_path / "daily", tmp_path / "rebuilt")


def test_a_rebuild_killed_while_it_moves_the_days_in_is_completed_by_the_next_write(
        shop, tmp_path, monkeypatch):
    write_feature_tables(shop, tmp_path / "whole", history_length=20)
    write_feature_tables(shop, tmp_path / "daily", history_length=20)
    real, moves = tables.os.replace, []

    def killed_part_way(source, target):
        moves.append(target)
        if len(moves) == 20:
            raise KeyboardInterrupt("killed")
        real(source, target)

    monkeypatch.setattr(tables.os, "replace", killed_part_way)
    with pytest.raises(KeyboardInterrupt):
        write_feature_tables(shop, tmp_path / "daily", rebuild=True, history_length=20)
    monkeypatch.setattr(tables.os, "replace", real)
    assert tables.history_length(tmp_path / "daily") == 20  # what a service loading now reads
    assert write_feature_tables(shop, tmp_path / "daily", history_length=20).days  # not taken as current
    assert_same_tables(tmp_path / "daily", tmp_path / "whole")


def test_a_late_event_recomputes_from_its_day_on(shop, tmp_path):
    write_feature_tables(shop, tmp_path / "daily")
    late_day = last_day(shop) - timedelta(days=10)
    late = shop.interactions.iloc[[0]].assign(user_id=3, item_id=7,
                                               event_timestamp=late_day + timedelta(hours=12))
    grown = dataclasses.replace(shop, interactions=pd.concat([shop.interactions, late], ignore_index=True))
    update = write_feature_tables(grown, tmp_path / "daily")
    assert update.since == late_day.date() and update.days[-1] == last_day(shop).date()
    write_feature_tables(grown, tmp_path / "rebuilt")
    assert_same_tables(tmp_path / "daily", tmp_path / "rebuilt")


def test_appended_rows_fingerprint_their_own_days_alone_and_match_a_full_count(shop, tmp_path,
                                                                            monkeypatch):
    last = last_day(shop)
    old = before(shop, last)
    write_feature_tables(old, tmp_path / "daily")
    fingerprinted = []
    full = tables._day_fingerprints
    monkeypatch.setattr(tables, "_day_fingerprints",
                        lambda con, days=None: fingerprinted.append(days) or full(con, days))
    late = shop.interactions.iloc[[0]].assign(event_timestamp=last - timedelta(days=3))
    grown = dataclasses.replace(shop, interactions=pd.concat(
        [old.interactions, late, shop.interactions[shop.interactions["event_timestamp"] >= last]],
        ignore_index=True), stock=pd.concat([old.stock, shop.stock[shop.stock["event_timestamp"] >= last]],
                                            ignore_index=True))
    update = write_feature_tables(grown, tmp_path / "daily")
    assert fingerprinted == [[str((last - timedelta(days=3)).date()), str(last.date())]]
    assert update.since == (last - timedelta(days=3)).date()
    write_feature_tables(grown, tmp_path / "rebuilt")
    daily, rebuilt = (json.loads((tmp_path / d / tables.PARTITIONS_FILE).read_text())
                      for d in ("daily", "rebuilt"))
    assert daily["days"] == rebuilt["days"]
    assert_same_tables(tmp_path / "daily", tmp_path / "rebuilt")


def test_a_changed_row_among_the_earlier_ones_is_found_without_any_appended(shop, tmp_path):
    write_feature_tables(shop, tmp_path / "daily")
    changed = shop.interactions.copy()
    changed.loc[5, "item_id"] = changed.loc[6, "item_id"] if changed.loc[5, "item_id"] != changed.loc[
        6, "item_id"] else changed.loc[7, "item_id"]
    update = write_feature_tables(dataclasses.replace(shop, interactions=changed), tmp_path / "daily")
    assert update.since == changed.loc[5, "event_timestamp"].date()


def test_unchanged_events_rewrite_no_day(shop, tmp_path):
    write_feature_tables(shop, tmp_path)
    files = {**day_files(tmp_path), **static_files(tmp_path)}
    update = write_feature_tables(shop, tmp_path)
    assert update.days == [] and update.since is None and update.rows == {}
    assert {**day_files(tmp_path), **static_files(tmp_path)} == files
    older = dataclasses.replace(shop, users=shop.users.assign(age=shop.users["age"] + 1))
    assert write_feature_tables(older, tmp_path).rows == {"user_profile": len(shop.users)}
    assert read_table(tmp_path, "user_profile")["age"].tolist() == (shop.users["age"] + 1).tolist()
    assert write_feature_tables(shop, tmp_path, rebuild=True).days[0] == shop.interactions[
        "event_timestamp"].min().date()


def _tables_before_the_last_day(shop: Dataset, tmp_path: Path) -> tuple[pd.Timestamp, Path, Path, object]:
    """(the last day, the tables' folder, the training frame's folder, the store) with tables of the
    events before the last day only."""
    last = shop.interactions["event_timestamp"].max().floor("D")
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    write_feature_tables(before(shop, last), repo / "data")
    return last, repo / "data", tmp_path / "examples", apply(repo)


def test_the_new_days_training_frame_is_joined_alone_and_equals_the_full_frame(shop, tmp_path):
    last, data, folder, store = _tables_before_the_last_day(shop, tmp_path)
    # Only the events before `last` have tables.
    write_training_frame(store, shop.interactions[ENTITIES], folder)
    assert stale_since(data, folder) is None
    written = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.parquet")}
    assert f"{last.date()}.parquet" in written, "the day's rows were joined before its tables existed"
    write_feature_tables(shop, data)
    assert stale_since(data, folder) == last.date()
    rows = write_training_frame(store, shop.interactions[ENTITIES], folder, since=last.date())
    assert rows == int((shop.interactions["event_timestamp"] >= last).sum())
    assert {n: t for n, t in ((p.name, p.stat().st_mtime_ns) for p in folder.glob("*.parquet"))
            if n != f"{last.date()}.parquet"} == {n: t for n, t in written.items()
                                                  if n != f"{last.date()}.parquet"}
    daily = pd.read_parquet(folder)
    full = training_frame(store, shop.interactions[ENTITIES])
    order = ["user_id", "event_timestamp", "item_id"]
    pd.testing.assert_frame_equal(
        daily.sort_values(order, kind="stable").reset_index(drop=True).map(_plain),
        full.sort_values(order, kind="stable").reset_index(drop=True)[daily.columns].map(_plain))


def test_days_whose_events_left_the_dataset_leave_the_training_frame(shop, tmp_path):
    """A deletion or a corrected export that empties a day takes that day's training rows with
    it: the last day (no table write marks anything stale), or one before those that are."""
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    data, folder = repo / "data", tmp_path / "examples"
    write_feature_tables(shop, data)
    store = apply(repo)
    write_training_frame(store, shop.interactions[ENTITIES], folder)
    days = shop.interactions["event_timestamp"].dt.floor("D")
    last, second = days.max(), days.min() + pd.Timedelta(days=1)
    assert days.isin([second]).any()
    left = shop.interactions[days != last]
    write_feature_tables(dataclasses.replace(shop, interactions=left), data)
    assert stale_since(data, folder) is None  # every day still has its file, none is older
    assert drop_removed_days(folder, left[ENTITIES]) == [last.strftime("%Y-%m-%d")]
    left = left[days[days != last] != second]
    write_feature_tables(dataclasses.replace(shop, interactions=left), data)
    write_training_frame(store, left[ENTITIES], folder, since=stale_since(data, folder))
    frame = pd.read_parquet(folder)
    assert len(frame) == len(left)
    assert not frame["event_timestamp"].dt.floor("D").isin([last, second]).any()


def test_removed_days_are_utc_days_whatever_zone_the_entities_are_in(tmp_path):
    (tmp_path / "2024-01-02.parquet").write_bytes(b"")  # named by UTC day, as every file is
    (tmp_path / "2024-01-03.parquet").write_bytes(b"")
    at = pd.Series([pd.Timestamp("2024-01-02 02:00", tz="UTC").tz_convert("America/New_York")])
    assert drop_removed_days(tmp_path, pd.DataFrame({"event_timestamp": at})) == ["2024-01-03"]
    assert (tmp_path / "2024-01-02.parquet").exists()


def test_changed_user_profiles_make_every_days_training_frame_stale(shop, tmp_path):
    repo = render_repo(FeatureStoreConfig(repo_dir=tmp_path / "repo"))
    data, folder = repo / "data", tmp_path / "examples"
    write_feature_tables(shop, data)
    store = apply(repo)
    write_training_frame(store, shop.interactions[ENTITIES], folder)
    write_feature_tables(shop, data)  # nothing changed: nothing rewritten
    assert stale_since(data, folder) is None
    older = dataclasses.replace(shop, users=shop.users.assign(age=shop.users["age"] + 1))
    assert write_feature_tables(older, data).rows == {"user_profile": len(shop.users)}
    assert stale_since(data, folder) == shop.interactions["event_timestamp"].min().date()
    write_training_frame(store, shop.interactions[ENTITIES], folder,
                         since=stale_since(data, folder))
    frame = pd.read_parquet(folder)
    ages = shop.users.set_index("user_id")["age"] + 1
    assert (frame["age"].to_numpy() == ages.loc[frame["user_id"]].to_numpy()).all()


def test_a_new_user_leaves_the_earlier_days_training_frames_current(shop, tmp_path):
    last, data, folder, store = _tables_before_the_last_day(shop, tmp_path)
    write_training_frame(store, before(shop, last).interactions[ENTITIES], folder)
    newcomer = shop.users.iloc[[0]].assign(user_id=int(shop.users["user_id"].max()) + 1)
    event = shop.interactions.iloc[[-1]].assign(user_id=int(newcomer["user_id"].iloc[0]))
    grown = dataclasses.replace(shop, users=pd.concat([shop.users, newcomer], ignore_index=True),
                                interactions=pd.concat([shop.interactions, event], ignore_index=True))
    assert "user_profile" in write_feature_tables(grown, data).rows  # the profiles were rewritten
    assert stale_since(data, folder) == last.date()  # yet only the new day is joined again


def _plain(value):
    return list(value) if hasattr(value, "__len__") and not isinstance(value, str) else value


def test_tables_written_by_other_queries_are_rebuilt(shop, tmp_path):
    write_feature_tables(shop, tmp_path)
    partitions = tmp_path / tables.PARTITIONS_FILE
    record = json.loads(partitions.read_text())
    partitions.write_text(json.dumps({**record, "queries": "an older version"}))
    update = write_feature_tables(shop, tmp_path)
    assert update.days[0] == shop.interactions["event_timestamp"].min().date() and update.kept_days == 0
    assert set(update.rows) == set(TABLES)
    assert json.loads(partitions.read_text())["queries"] == record["queries"]


def test_rows_not_loaded_online_stay_marked_until_a_load_covers_them(shop, tmp_path):
    """The marks an incremental online load starts from: every write adds its rows' stamps per
    table, and a load that read a mark unchanged and started before it clears what it reached."""
    day = last_day(shop)
    earlier = before(shop, day)
    write_feature_tables(earlier, tmp_path)
    first = tables.unloaded(tmp_path)
    assert set(first) == set(TABLES)  # a first write: every row of every table
    assert first["item_content"].since == tables.STATIC_STAMP
    assert first["user_history"].since == earlier.interactions["event_timestamp"].min().floor("D")
    midnight = (last_day(earlier) + timedelta(days=1)).to_pydatetime()  # the last popularity stamp
    assert first["item_popularity"].through == midnight
    short = midnight - timedelta(hours=1)
    tables.mark_loaded(tmp_path, first, list(TABLES), tables.STATIC_STAMP, short)  # stopped short
    assert set(tables.unloaded(tmp_path)) == DATED
    assert {m.since for m in tables.unloaded(tmp_path).values()} == {short}
    tables.mark_loaded(tmp_path, tables.unloaded(tmp_path), list(TABLES), short, midnight)
    assert tables.unloaded(tmp_path) == {}

    write_feature_tables(shop, tmp_path)  # the new day, written after the last load
    second = tables.unloaded(tmp_path)
    assert set(second) == DATED and {m.since for m in second.values()} == {midnight}
    assert second["user_history"].through == (day + timedelta(days=1)).to_pydatetime()
    assert (second["user_seen"].since, second["user_seen"].through) == (
        second["user_history"].since, second["user_history"].through), "new events' users' rows"
    write_feature_tables(shop, tmp_path)  # nothing changed: nothing more to load
    assert tables.unloaded(tmp_path) == second
    write_feature_tables(dataclasses.replace(shop, items=shop.items.assign(price=1.0)), tmp_path)
    renewed = tables.unloaded(tmp_path)  # a static table changed: its rows from 1970 on
    assert renewed["item_content"].since == tables.STATIC_STAMP and "user_profile" not in renewed
    tables.mark_loaded(tmp_path, second, list(TABLES), midnight, midnight + timedelta(days=2))
    assert tables.unloaded(tmp_path) == {"item_content": renewed["item_content"]}, \
        "a mark written after the load read the marks stays"
    tables.mark_loaded(tmp_path, renewed, list(DATED), midnight, midnight + timedelta(days=2))
    assert set(tables.unloaded(tmp_path)) == {"item_content"}, "a load of other tables leaves it"
    tables.mark_loaded(tmp_path, renewed, ["item_content"], tables.STATIC_STAMP, midnight)
    assert tables.unloaded(tmp_path) == {}
