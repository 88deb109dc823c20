"""`POST /v1/recommendations` through the real client: filters, history, sessions, cold start."""

from __future__ import annotations

from index.catalogue import latest_stock
from tests.services.conftest import active_user


def _ids(answer) -> list[int]:
    return [item.item_id for item in answer.items]


def test_recommendations_respect_every_filter(service, client):
    user = active_user(service, 0)
    items = service.dataset.items.set_index("item_id")
    stock = latest_stock(service.dataset.stock)
    wanted = items["categories"].explode().value_counts().index[:3].tolist()
    filters = {"categories": wanted, "min_price": float(items["price"].quantile(0.1)),
               "max_price": float(items["price"].quantile(0.9))}
    first = _ids(client.recommend(user, k=20, filters=filters))
    answer = client.recommend(user, k=20, filters={**filters, "exclude_ids": first[:3]})

    seen = set(service.dataset.interactions.query("user_id == @user")["item_id"].tail(50))
    assert len(answer.items) >= 5
    for item_id in _ids(answer):
        row = items.loc[item_id]
        assert set(row["categories"]) & set(wanted), f"item {item_id}: outside the categories"
        assert filters["min_price"] <= row["price"] <= filters["max_price"], f"item {item_id}: price"
        assert stock.get(item_id, 0) > 0, f"item {item_id}: out of stock"
        assert item_id not in first[:3], f"item {item_id}: explicitly excluded"
        assert item_id not in seen, f"item {item_id}: already seen"
    assert answer.warnings == []


def test_recorded_interaction_changes_the_next_answer(service, client):
    user = active_user(service, 2)
    before = client.recommend(user, k=10)
    clicked = before.items[0].item_id

    recorded = client.record_interaction(user, clicked)

    after = client.recommend(user, k=10)
    assert recorded.history_length >= 1
    assert clicked not in _ids(after), "a recorded item counts as seen"
    assert [i.reasons.retrieval_score for i in after.items] != \
        [i.reasons.retrieval_score for i in before.items]


def test_session_events_shape_the_answer_and_unknown_ids_are_reported(service, client):
    user = active_user(service, 3)
    before = client.recommend(user, k=10)
    browsed = before.items[1].item_id
    answer = client.recommend(user, k=10, session=[browsed, {"item_id": 987_654}],
                              filters={"exclude_ids": [876_543]})
    assert browsed not in _ids(answer)
    assert answer.warnings == ["session item_id 987654: unknown, ignored",
                               "exclude_ids item_id 876543: unknown, ignored"]


def test_unknown_user_gets_a_cold_start_answer(client):
    answer = client.recommend(10**12, k=7)
    assert answer.cold_start and len(answer.items) == 7
    assert not client.recommend(10**12, k=3, session=[1]).cold_start, "a session is a start"


def test_every_answer_names_its_versions_and_scores(client):
    answer = client.recommend(1, k=5)
    version = client.version()
    assert (answer.model_version, answer.index_version) == \
        (version.model_version, version.index_version)
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    assert all(item.reasons.retrieval_score is not None for item in answer.items)
