"""The engine's evaluation entry points answer through the request path's own tower + ANN step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from feature_repo.store import FeatureStoreConfig, build_store, materialize, online_user_features
from feature_repo.tables import HISTORY_LENGTH
from index.model_store import publish
from services.engine import Engine
from services.schemas import ItemUpsert, RecommendationRequest
from tests.services.conftest import Service, active_user, improving_ranker
from towers.evaluate import NO_ITEM
from towers.ranker import FEATURES, Ranker


@pytest.fixture(scope="module")
def engine(service: Service, tmp_path_factory) -> Iterator[Engine]:
    """An in-process engine over its own copy of the service's shop (the server owns its shard)."""
    with _engine(service, tmp_path_factory.mktemp("engine")) as engine:
        yield engine


@contextmanager
def _engine(service: Service, home: Path, ranker: Ranker | None = None) -> Iterator[Engine]:
    dataset = service.dataset
    store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo"))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    registry = publish(service.artifact, dataset, home)
    if ranker is not None:
        ranker.save(Path(registry.live_model().location) / "ranker")
    engine = Engine(store=store, backend=registry.backend, registry=registry)
    assert engine.refresh()
    yield engine
    engine.close()
    registry.backend.close()
    registry.close()


def test_rank_of_a_users_feast_row_equals_recommend_without_stock_filter(service, engine):
    for rank in (30, 31, 32):
        user = active_user(service, rank)
        row = online_user_features(engine.store, [user])
        row["event_timestamp"] = pd.Timestamp.now(tz="UTC")  # as recommend stamps its query
        ranked = engine.rank(row, 10, [np.asarray(row["recent_item_ids"][0])])
        answer = engine.recommend(RecommendationRequest(user_id=user, k=10,
                                                        filters={"in_stock_only": False}))
        assert answer.ranking == "retrieval"
        assert ranked.tolist() == [[i.item_id for i in answer.items]]


def test_recommend_leaves_out_the_whole_history_not_only_its_recent_items(service, engine):
    """The online history holds the last HISTORY_LENGTH events; what a user has seen before them
    is left out too, as the offline evaluation leaves it out."""
    events, now = service.dataset.interactions, pd.Timestamp.now(tz="UTC")
    offered_old = []
    for rank in (0, 1, 2):
        user = active_user(service, rank)
        seen = set(events.loc[events["user_id"] == user, "item_id"])
        row = online_user_features(engine.store, [user]).assign(event_timestamp=now)
        recent = np.asarray(row["recent_item_ids"][0])
        assert len(recent) == HISTORY_LENGTH and seen - set(recent), "a history beyond the window"
        answer = engine.recommend(RecommendationRequest(user_id=user, k=10,
                                                        filters={"in_stock_only": False}))
        assert len(answer.items) == 10 and not {i.item_id for i in answer.items} & seen
        offered_old += set(engine.rank(row, 10, [recent])[0]) & (seen - set(recent))
    assert offered_old, "left out the recent items alone, an older one would have been offered"


def test_rank_excludes_each_rows_ids_keeps_out_of_stock_items_and_fills_missing(service, engine):
    rows = online_user_features(engine.store, [active_user(service, 33)] * 2)
    rows["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    catalogue, nothing = len(service.dataset.items), [np.array([], dtype=np.int64)]
    top = int(engine.rank(rows.iloc[:1], 1, nothing)[0, 0])
    engine.set_stock(top, 0)
    try:
        first = engine.rank(rows.iloc[:1], catalogue + 5, nothing)[0]
    finally:
        engine.set_stock(top, 1)
    assert first[0] == top, "out of stock, still ranked: the evaluation ignores stock"
    assert set(first[:catalogue]) == set(service.dataset.items["item_id"])
    assert (first[catalogue:] == NO_ITEM).all()
    ranked = engine.rank(rows, 10, [nothing[0], first[:3]])
    assert ranked[0].tolist() == first[:10].tolist()
    assert ranked[1].tolist() == first[3:13].tolist()


def test_retrieve_answers_vectors_as_rank_answers_their_rows(service, engine):
    rows = online_user_features(engine.store, [active_user(service, r) for r in (34, 35)])
    rows["event_timestamp"] = pd.Timestamp.now(tz="UTC")
    exclude = [np.asarray(h) for h in rows["recent_item_ids"]]
    vectors = np.stack([engine.snapshot().encoder(rows.iloc[i:i + 1]) for i in range(len(rows))])
    np.testing.assert_array_equal(engine.retrieve(vectors, 10, exclude),
                                  engine.rank(rows, 10, exclude))


def test_similar_items_are_scored_by_the_towers_alone_the_prior_not_counted(service, engine):
    artifact, items = service.artifact, service.dataset.items
    assert artifact.prior.weight > 0, "the shop's model is served with a popularity prior"
    vectors = artifact.embed_items(items)  # (N, D + 1): the towers' vectors and the prior
    item = int(items["item_id"].iloc[0])
    query = artifact.prior.alone(vectors[:1])[0]  # the prior's coordinate 0: cosine alone
    expected = dict(zip(items["item_id"].tolist(), (vectors @ query).tolist(), strict=True))
    answer = engine.similar(item, k=5, in_stock_only=False)
    assert len(answer.items) == 5 and item not in [hit.item_id for hit in answer.items]
    assert [hit.item_id for hit in answer.items] == sorted(
        (i for i in expected if i != item), key=expected.__getitem__, reverse=True)[:5]
    for hit in answer.items:
        assert hit.score == pytest.approx(expected[hit.item_id], abs=1e-4)


def test_the_last_place_goes_to_the_users_best_item_newer_than_the_model(service, tmp_path):
    """The prior counts training events: an item created later would rank below known items of
    the same cosine, so one place is kept for the best of them."""
    with _engine(service, tmp_path) as engine:
        assert engine.snapshot().artifact.prior.hides_new_items()
        user = active_user(service, 36)
        before = engine.recommend(RecommendationRequest(user_id=user, k=10))
        assert len(before.items) == 10 and not any(i.reasons.new_item for i in before.items)
        for item_id, category in ((70_001, "new-a"), (70_002, "new-b")):  # created now: after the data
            engine.upsert_item(item_id, ItemUpsert(title=f"new {category}", categories=[category],
                                                   price=9.0, stock=2))
        after = engine.recommend(RecommendationRequest(user_id=user, k=10))
        assert [i.item_id for i in after.items[:9]] == [i.item_id for i in before.items[:9]]
        last = after.items[9]
        assert last.reasons.new_item and not any(i.reasons.new_item for i in after.items[:9])
        alone = {i: engine.recommend(RecommendationRequest(
            user_id=user, k=10, filters={"categories": [c]})).items for i, c in
            ((70_001, "new-a"), (70_002, "new-b"))}
        assert all(len(hits) == 1 and not hits[0].reasons.new_item for hits in alone.values()), \
            "a new item shown on its merits takes no extra place"
        best = max(alone, key=lambda i: alone[i][0].score)
        assert last.item_id == best and last.score == pytest.approx(alone[best][0].score, abs=1e-4)
        engine.new_item_slot = False
        off = engine.recommend(RecommendationRequest(user_id=user, k=10))
        assert not any(i.reasons.new_item for i in off.items)


def test_an_item_dated_after_now_is_not_new_yet(service, tmp_path):
    """A release to come (or a typo'd year) would hold the new-item place for every user until
    its date."""
    with _engine(service, tmp_path) as engine:
        user = active_user(service, 37)
        before = engine.recommend(RecommendationRequest(user_id=user, k=10))
        engine.upsert_item(70_003, ItemUpsert(title="to come", categories=["soon"], price=9.0,
                                              stock=2, created_at=datetime(2261, 1, 1, tzinfo=UTC)))
        after = engine.recommend(RecommendationRequest(user_id=user, k=10))
        assert [i.item_id for i in after.items] == [i.item_id for i in before.items]
        assert not any(i.reasons.new_item for i in after.items)


def test_the_ranker_counts_the_history_window_it_was_trained_on(service, tmp_path):
    """Feast's history rows, the ranker's training input, hold the last history_length events: a
    session on top of a full stored history does not lengthen what the ranker counts."""
    with _engine(service, tmp_path, improving_ranker(candidates=20)) as engine:
        ranker = engine.snapshot().ranker
        assert ranker is not None
        scored = []
        score = ranker.score
        ranker.score = lambda x: scored.append(x) or score(x)  # the real ranker, observed
        user = active_user(service, 0)
        assert len(engine.online.user(user).recent_item_ids) == engine.online.history_length
        new = [i for i in service.dataset.items["item_id"].tolist()
               if i not in set(engine.online.user(user).recent_item_ids)][:3]
        engine.recommend(RecommendationRequest(user_id=user, k=5,
                                               session=[{"item_id": i} for i in new]))
        lengths = scored[0][:, FEATURES.index("history_length")]
        assert (lengths == engine.online.history_length).all()
