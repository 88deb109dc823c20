"""The ASOF offline store gives exactly the frame of Feast's stock `get_historical_features`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore

from feature_repo.asof_store import AsofDuckDBOfflineStore, SqlRetrievalJob
from feature_repo.store import (
    ENTITY_COLUMNS,
    FeatureStoreConfig,
    build_store,
    materialize,
    open_store,
    training_frame,
)
from feature_repo.tables import AFTER
from tests.utils.tables import make_dataset

INSTANTS = pd.date_range("2024-03-01", periods=12, freq="17h", tz="UTC")


@pytest.fixture(scope="module")
def tied():
    """Many events at few instants: users buy several items at once, items sell to several users
    at once, and stock changes at the very instants of sales."""
    rng = np.random.default_rng(7)
    events = [(int(rng.integers(1, 9)), int(rng.integers(1, 13)), str(INSTANTS[rng.integers(0, 12)]))
              for _ in range(240)]
    stock = [(int(rng.integers(1, 13)), str(INSTANTS[rng.integers(0, 12)]), int(rng.integers(0, 9)))
             for _ in range(60)]
    return make_dataset(events, items=12, users=8, stock=stock)


@pytest.fixture(scope="module")
def both_stores(tied, tmp_path_factory):
    return [build_store(tied, FeatureStoreConfig(repo_dir=tmp_path_factory.mktemp(kind), offline_store=kind))
            for kind in ("asof", "duckdb")]


def lookups(tied) -> pd.DataFrame:
    """Every event as its own example, plus lookups just before, at and after each instant and
    before anything happened, for users and items with and without rows."""
    probes = [(u, i, t + shift) for u in (1, 4, 9) for i in (2, 12, 13) for t in INSTANTS
              for shift in (pd.Timedelta(-1, "us"), pd.Timedelta(0), pd.Timedelta(1, "us"))]
    probes.append((1, 2, pd.Timestamp("2024-01-01", tz="UTC")))
    extra = pd.DataFrame(probes, columns=ENTITY_COLUMNS).astype({"event_timestamp": "datetime64[us, UTC]"})
    return pd.concat([tied.interactions[ENTITY_COLUMNS], extra], ignore_index=True)


def plain(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.map(lambda v: list(v) if isinstance(v, np.ndarray) else v)


def test_the_asof_join_is_the_default_and_feasts_own_is_configuration(both_stores):
    entities = pd.DataFrame({"user_id": [1], "item_id": [2], "event_timestamp": INSTANTS[:1]})
    asof, stock = (store.get_historical_features(entity_df=entities, features=["item_stock:quantity"])
                   for store in both_stores)
    assert isinstance(asof, SqlRetrievalJob) and not isinstance(stock, SqlRetrievalJob)
    repo = Path(both_stores[0].repo_path)  # opened with Feast's join, whatever its yaml says
    reopened = open_store(FeatureStoreConfig(repo_dir=repo, offline_store="duckdb"))
    assert not isinstance(reopened.get_historical_features(
        entity_df=entities, features=["item_stock:quantity"]), SqlRetrievalJob)


def test_asof_frame_equals_feasts_own_with_same_instant_ties(tied, both_stores):
    entities = lookups(tied)
    asof, stock = (plain(training_frame(store, entities, chunk_rows=200)) for store in both_stores)
    assert list(asof.columns) == list(stock.columns)
    pd.testing.assert_frame_equal(asof, stock)
    # An example never sees its own event or anything at or after its instant.
    events = tied.interactions.sort_values("event_timestamp", kind="stable")
    for row in asof.head(len(events)).itertuples():
        mine = events["user_id"] == row.user_id
        earlier = events[mine & (events["event_timestamp"] < row.event_timestamp)]
        assert row.recent_item_ids == earlier["item_id"].tolist()[-50:]
        assert row.event_count == len(earlier)


@pytest.mark.parametrize("window", [(0, 11), (3, 3), (4, 9)])
def test_materialization_pulls_the_same_latest_rows_as_feasts_own(both_stores, window):
    """`materialize` loads each key's latest row in [start, end]: both bounds included, ties and
    rows stamped at a bound alike (the feature rows are stamped just after their instants)."""
    store = both_stores[0]
    start, end = INSTANTS[window[0]] + AFTER, INSTANTS[window[1]] + AFTER  # exactly rows' stamps
    for view in store.list_feature_views():
        args = (store.config, view.batch_source, [c.name for c in view.entity_columns],
                [f.name for f in view.features], view.batch_source.timestamp_field,
                view.batch_source.created_timestamp_column, start.to_pydatetime(),
                end.to_pydatetime())
        mine = AsofDuckDBOfflineStore.pull_latest_from_table_or_query(*args)
        assert isinstance(mine, SqlRetrievalJob), view.name
        ours, feasts = (plain(job.to_df()).sort_values(args[2], ignore_index=True)
                        for job in (mine, DuckDBOfflineStore.pull_latest_from_table_or_query(*args)))
        ours = ours.astype({args[4]: feasts[args[4]].dtype})
        pd.testing.assert_frame_equal(ours, feasts[ours.columns], obj=view.name)


def test_materialize_pulls_through_the_asof_store(tied, tmp_path, monkeypatch):
    pulled = []
    pull = AsofDuckDBOfflineStore.pull_latest_from_table_or_query

    def spy(*args, **kwargs):
        job = pull(*args, **kwargs)
        pulled.append(isinstance(job, SqlRetrievalJob))
        return job

    monkeypatch.setattr(AsofDuckDBOfflineStore, "pull_latest_from_table_or_query", staticmethod(spy))
    store = build_store(tied, FeatureStoreConfig(repo_dir=tmp_path))
    materialize(store, INSTANTS[-1].to_pydatetime())
    assert len(pulled) == len(store.list_feature_views()) and all(pulled)
    features = store.get_online_features(features=["user_history:event_count"],
                                         entity_rows=[{"user_id": 1}]).to_dict()
    assert features["event_count"] == [int((tied.interactions["user_id"] == 1).sum())]
