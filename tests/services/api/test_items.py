"""`/v1/items`: stock updates reach the next answer, new items from content, similar items."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from index.catalogue import latest_stock
from services.client import NotFoundError
from tests.services.conftest import active_user


def test_zero_stock_removes_the_item_from_the_next_answer(service, client):
    user = active_user(service, 10)
    top = client.recommend(user, k=5).items[0].item_id
    try:
        assert client.set_stock(top, 0).quantity == 0
        assert top not in [i.item_id for i in client.recommend(user, k=5).items]
        assert top in [i.item_id for i in client.recommend(
            user, k=5, filters={"in_stock_only": False}).items], "hidden, not deleted"
    finally:
        client.set_stock(top, max(latest_stock(service.dataset.stock).get(top, 1), 1))


def test_new_item_is_embedded_from_content_and_retrievable(service, client):
    added = client.upsert_item(50_000, title="brand new lamp", categories=["lamps-new"],
                               price=12.5, created_at=datetime.now(UTC), stock=3)
    assert added.item_id == 50_000
    answer = client.recommend(active_user(service, 11), k=5, filters={"categories": ["lamps-new"]})
    assert [i.item_id for i in answer.items] == [50_000]
    similar = client.similar_items(50_000, k=5)
    assert len(similar.items) == 5 and 50_000 not in [i.item_id for i in similar.items]


def test_similar_items_exclude_the_item_and_are_ordered(client):
    answer = client.similar_items(5, k=8)
    scores = [i.score for i in answer.items]
    assert len(scores) == 8 and 5 not in [i.item_id for i in answer.items]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("call", [
    lambda c: c.similar_items(999_999),
    lambda c: c.set_stock(999_999, 1),
    lambda c: c.record_interaction(1, 999_999),
])
def test_unknown_item_is_a_404_naming_it(client, call):
    with pytest.raises(NotFoundError, match="item_id 999999"):
        call(client)
