"""The item cache's re-ranker columns: they follow stock writes, upserts and first reads, and the
service's candidates come from them."""

from __future__ import annotations

import numpy as np

from services.engine import Engine, ItemCache
from services.online import ItemFeatures
from towers.ranker import Categories

PRICED = ItemFeatures(title="a", categories=("x", "y"), price=2.5, created_at_s=100,
                      popularity=(1, 2, 3), stock=4)
UNPRICED = ItemFeatures(title="b", categories=(), price=None, created_at_s=200, stock=0)
LATER = ItemFeatures(title="c", categories=("z", "x"), price=9.0, created_at_s=300,
                     popularity=(0, 0, 7), stock=1)


class FakeOnline:
    """The online store's item reads: whatever `known` holds; records the ids asked for."""

    def __init__(self, known: dict[int, ItemFeatures]) -> None:
        self.known = known
        self.asked: list[list[int]] = []

    def items(self, ids):
        ids = list(ids)
        self.asked.append(ids)
        return {i: self.known[i] for i in ids if i in self.known}


def _names(cache: ItemCache, ids: list[int]) -> list[list[str]]:
    """Each id's category names, read back through the cache's codes."""
    names = {code: name for name, code in cache._vocabulary.items()}
    got = cache.columns(ids).categories
    return [[names[c] for c in got.codes[a:b]]
            for a, b in zip(got.offsets[:-1], got.offsets[1:], strict=True)]


def test_candidates_take_price_stock_age_popularity_and_categories_from_the_item_cache():
    cache = ItemCache(FakeOnline({1: PRICED, 2: UNPRICED}), prefill=[1, 2])
    ids = np.array([1, 2, 3, 1])
    candidates, history = cache.columns([*ids.tolist(), 2, 1]).split(len(ids))  # as _rerank reads
    got = Engine._candidates(ids, np.array([0.9, 0.5, 0.1, 0.0]), candidates)
    np.testing.assert_array_equal(got.price, [2.5, np.nan, np.nan, 2.5])  # missing price: NaN
    np.testing.assert_array_equal(got.stock, [4, 0, 0, 4])  # unknown item 3: the empty item
    np.testing.assert_array_equal(got.created_at, [100, 200, 0, 100])
    np.testing.assert_array_equal(got.popularity, [[1, 2, 3], [0, 0, 0], [0, 0, 0], [1, 2, 3]])
    assert isinstance(got.categories, Categories)
    assert _names(cache, [1, 2, 3, 1]) == [["x", "y"], [], [], ["x", "y"]]
    assert history.created_at.tolist() == [200, 100] and len(history.categories) == 2
    np.testing.assert_array_equal(history.categories.codes, got.categories.codes[:2])  # 2: none; 1


def test_columns_follow_set_stock_put_and_items_read_on_first_use():
    online = FakeOnline({1: PRICED, 2: UNPRICED})
    cache = ItemCache(online, prefill=[1])
    assert cache.newest_created_at == 100  # what says whether any item is newer than a model
    cache.set_stock(1, 11)
    cache.set_stock(99, 5)  # unknown: ignored
    assert cache.columns([1]).stock.tolist() == [11]
    online.asked.clear()
    first = cache.columns([2, 1])  # 2 was not prefilled: read from the store once, then kept
    assert online.asked == [[2]] and first.created_at.tolist() == [200, 100]
    assert cache.columns([2]).created_at.tolist() == [200] and online.asked == [[2]]
    assert cache.newest_created_at == 200
    cache.put(3, LATER)  # an upserted item
    assert cache.newest_created_at == 300
    cache.put(1, LATER)  # replaced content
    got = cache.columns([3, 1, 2])
    np.testing.assert_array_equal(got.price, [9.0, 9.0, np.nan])
    np.testing.assert_array_equal(got.popularity[:, 2], [7, 7, 0])
    assert _names(cache, [3, 1, 2]) == [["z", "x"], ["z", "x"], []]
    cache.set_stock(1, 0)
    assert cache.columns([1, 3]).stock.tolist() == [0, 1]  # the replaced row, not the old one


def test_known_ids_are_the_catalogues_and_items_are_read_whole_from_the_store():
    online = FakeOnline({1: PRICED, 2: UNPRICED, 3: LATER})
    cache = ItemCache(online, prefill=[1, 2])
    online.asked.clear()
    assert cache.known([2, 1, 7]) == {1, 2} and online.asked == [[7]]  # only the miss is read
    assert cache.known([3, 7]) == {3} and len(cache) == 3  # 3 is kept, as its columns
    online.known[1] = LATER  # the store holds the item's current content
    assert cache.item(1) == LATER and cache.item(8) is None


def _shop(n: int) -> dict[int, ItemFeatures]:
    return {i: ItemFeatures(title=f"t{i}", categories=tuple(f"c{j}" for j in range(i % 3)),
                            price=float(i), created_at_s=i, stock=i % 5) for i in range(1, n + 1)}


def _assert_holds(cache: ItemCache, items: dict[int, ItemFeatures]) -> None:
    ids = list(items)
    got = cache.columns(ids)
    np.testing.assert_array_equal(got.price, [items[i].price for i in ids])
    np.testing.assert_array_equal(got.stock, [items[i].stock for i in ids])
    assert _names(cache, ids) == [list(items[i].categories) for i in ids]


def test_an_item_upserted_again_keeps_its_row_while_its_number_of_categories_does():
    """A daily re-upsert of the catalogue must not grow the cache (nor copy it: docs/benchmarks.md)."""
    items = _shop(1000)
    cache = ItemCache(FakeOnline(items), prefill=list(items))
    _assert_holds(cache, items)
    rows = len(cache._columns.numbers)
    for i in range(1, 1001):  # new content, price and stock, as many categories
        items[i] = ItemFeatures(title="new", categories=tuple(f"d{j}" for j in range(i % 3)),
                                price=i + 0.5, created_at_s=i, stock=7)
        cache.put(i, items[i])
    assert len(cache._columns.numbers) == rows
    _assert_holds(cache, items)
    items[5] = ItemFeatures(title="more", categories=("a", "b", "c", "d"), price=1.0, created_at_s=5)
    cache.put(5, items[5])  # more categories than its row holds: a new row
    assert len(cache._columns.numbers) == rows + 1
    _assert_holds(cache, items)


def test_columns_a_request_holds_stay_as_they_were_while_items_are_added():
    """A request takes its rows from the columns it read (views of the cache's arrays, without a
    lock): rows added after, into spare room or arrays grown to twice the size, leave them as
    they were."""
    items = _shop(10)
    cache = ItemCache(FakeOnline(items), prefill=list(items))
    before = cache._columns
    held = (before.numbers.copy(), before.categories.codes.copy(), before.categories.offsets.copy())
    more = {i: item for i, item in _shop(5000).items() if i > 10}
    for i, item in more.items():  # one at a time, as writes come
        cache.put(i, item)
    np.testing.assert_array_equal(before.numbers, held[0])
    np.testing.assert_array_equal(before.categories.codes, held[1])
    np.testing.assert_array_equal(before.categories.offsets, held[2])
    _assert_holds(cache, {**items, **more})
    cache.set_stock(4999, 3)  # stock follows into the grown arrays
    assert cache.columns([4999]).stock.tolist() == [3]
