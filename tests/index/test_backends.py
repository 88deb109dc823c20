"""Behaviour of the item index on both backends: round trip, filters, stock updates, bad input, recall."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from index import (
    EdgeSettings,
    IndexSpec,
    InvalidItemsError,
    InvalidQueryError,
    ItemBatch,
    NoLiveVersionError,
    SearchFilters,
    ServerSettings,
    UnknownItemError,
    UnknownVersionError,
    build_version,
    hnsw_ef_for,
    open_backend,
    parse_index_settings,
)
from tests.index.conftest import CATEGORIES, DIM, LiveIndex, exact_top_k, random_items

pytestmark = [
    pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning"),
    pytest.mark.filterwarnings("ignore:Payload indexes have no effect:UserWarning"),
]


def _queries(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, DIM))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def _mask(items: ItemBatch, f: SearchFilters) -> np.ndarray:
    mask = np.ones(len(items), dtype=bool)
    if f.in_stock_only:
        mask &= items.stock >= 1
    if f.categories is not None:
        mask &= np.array([bool(f.categories & set(c)) for c in items.categories])
    if f.min_price is not None:
        mask &= items.price >= f.min_price
    if f.max_price is not None:
        mask &= items.price <= f.max_price
    if f.exclude_ids:
        mask &= ~np.isin(items.ids, list(f.exclude_ids))
    return mask


def test_round_trip_returns_nearest_items_with_their_payload(live_index: LiveIndex) -> None:
    items = live_index.items
    row_of = {int(i): r for r, i in enumerate(items.ids)}
    recalls = []
    for query in _queries(20):
        hits = live_index.backend.search(query, k=10, filters=SearchFilters(in_stock_only=False))
        expected = exact_top_k(items, query, np.ones(len(items), dtype=bool))
        recalls.append(len({h.item_id for h in hits} & set(expected)) / 10)
        for hit in hits:
            row = row_of[hit.item_id]
            assert hit.stock == items.stock[row]
            assert hit.categories == list(items.categories[row])
            price = items.price[row]  # NaN: the item has no price
            assert hit.price == (None if np.isnan(price) else pytest.approx(price))
            assert hit.created_at == items.created_at[row]
            assert hit.score == pytest.approx(float(items.vectors[row] @ query), abs=1e-4)  # not centred
    assert live_index.backend.count() == len(items)
    assert np.mean(recalls) >= 0.95


def test_filters_never_return_a_violating_item(live_index: LiveIndex) -> None:
    rng = np.random.default_rng(7)
    items = live_index.items
    cases = [SearchFilters()]
    for _ in range(30):
        low = float(rng.uniform(1, 60))
        cases.append(
            SearchFilters(
                in_stock_only=bool(rng.random() < 0.8),
                categories=frozenset(
                    rng.choice(CATEGORIES, size=int(rng.integers(1, 3)), replace=False).tolist()
                ),
                min_price=low if rng.random() < 0.6 else None,
                max_price=low + float(rng.uniform(5, 40)) if rng.random() < 0.6 else None,
                exclude_ids=frozenset(int(i) for i in rng.choice(items.ids, size=50, replace=False)),
            )
        )
    for f, query in zip(cases, _queries(len(cases), seed=3), strict=True):
        mask = _mask(items, f)
        allowed = set(items.ids[mask].tolist())
        hits = live_index.backend.search(query, k=10, filters=f)
        assert {h.item_id for h in hits} <= allowed, f"violating hit for {f}"
        assert len(hits) == min(10, len(allowed))
        expected = exact_top_k(items, query, mask)
        assert len({h.item_id for h in hits} & set(expected)) >= 0.8 * len(expected)


def test_search_ids_answers_like_search_without_the_payload(live_index: LiveIndex) -> None:
    cases = [SearchFilters(), SearchFilters(categories=frozenset(CATEGORIES[:2]), max_price=50.0)]
    for f, query in zip(cases, _queries(len(cases), seed=11), strict=True):
        hits = live_index.backend.search(query, k=20, filters=f)
        ids, scores = live_index.backend.search_ids(query, k=20, filters=f)
        assert (ids.dtype, scores.dtype) == (np.int64, np.float32)
        assert ids.tolist() == [h.item_id for h in hits]
        assert np.allclose(scores, [h.score for h in hits], atol=1e-6)


@pytest.mark.parametrize("n_excluded", [30, 150])  # dropped after the search / filtered in it
def test_excluding_the_nearest_items_returns_the_next_ones(live_index: LiveIndex, n_excluded: int) -> None:
    items, query = live_index.items, _queries(1, seed=17)[0]
    in_stock = items.stock >= 1
    seen = frozenset(exact_top_k(items, query, in_stock, k=n_excluded))
    hits = live_index.backend.search(query, k=10, filters=SearchFilters(exclude_ids=seen))
    assert [h.item_id for h in hits] == exact_top_k(items, query, in_stock & ~np.isin(items.ids, list(seen)))


def test_many_excluded_items_mostly_far_away_return_the_nearest_others(live_index: LiveIndex) -> None:
    """A long history whose items are mostly far from the query: the nearest unseen ones, as an
    exact search gives them, whether the first, loose search finds enough or not."""
    items, query = live_index.items, _queries(1, seed=19)[0]
    in_stock = items.stock >= 1
    ranked = exact_top_k(items, query, in_stock, k=int(in_stock.sum()))
    for near in (5, 105):  # found by the loose search / left to the filtered walk
        seen = frozenset(ranked[:near] + ranked[-200:])
        hits = live_index.backend.search(query, k=10, filters=SearchFilters(exclude_ids=seen))
        assert [h.item_id for h in hits] == ranked[near:near + 10]


def test_out_of_stock_items_are_skipped_by_default(live_index: LiveIndex) -> None:
    out_of_stock = set(live_index.items.ids[live_index.items.stock == 0].tolist())
    for query in _queries(10, seed=5):
        hits = live_index.backend.search(query, k=20)
        assert out_of_stock.isdisjoint(h.item_id for h in hits)


def test_stock_update_is_visible_to_the_next_query(live_index: LiveIndex) -> None:
    backend, query = live_index.backend, _queries(1, seed=9)[0]
    top = backend.search(query, k=1)[0]
    backend.set_stock({top.item_id: 0})
    assert top.item_id not in {h.item_id for h in backend.search(query, k=10)}
    backend.set_stock({top.item_id: 3})
    again = backend.search(query, k=1)[0]
    assert (again.item_id, again.stock) == (top.item_id, 3)


def test_upserted_items_are_searchable_in_the_live_version(live_index: LiveIndex) -> None:
    new = random_items(3, seed=11, first_id=10_000)
    live_index.backend.upsert(new)
    hits = live_index.backend.search(new.vectors[0], k=5, filters=SearchFilters(in_stock_only=False))
    assert hits[0].item_id == 10_000
    assert live_index.backend.count() == len(live_index.items) + 3


def test_released_version_answers_again_with_its_stock_updates(live_index: LiveIndex) -> None:
    backend, query = live_index.backend, _queries(1, seed=13)[0]
    old = backend.live_location()
    assert old is not None
    top = backend.search(query, k=1, location=old)[0]
    backend.set_stock({top.item_id: 0}, location=old)
    build_version(live_index.items, registry=live_index.registry, spec=live_index.spec,
                  model_version_id=live_index.model_version_id, promote=True)
    backend.release(old)
    hits = backend.search(query, k=10, location=old)  # reopened on demand
    assert hits and top.item_id not in {h.item_id for h in hits}


def test_released_edge_shard_can_be_opened_by_another_process(
    make_live_index: Callable[..., LiveIndex],
) -> None:
    live = make_live_index("edge", random_items(300))
    old = live.backend.live_location()
    assert old is not None
    build_version(live.items, registry=live.registry, spec=live.spec,
                  model_version_id=live.model_version_id, promote=True)
    query = _queries(1)[0]
    expected = [h.item_id for h in live.backend.search(query, k=5, location=old)]
    with open_backend(EdgeSettings(path=live.data_dir / "index")) as other:
        with pytest.raises(Exception, match="WAL"):  # the first backend still holds the shard
            other.search(query, k=5, location=old)
        live.backend.release(old)
        assert [h.item_id for h in other.search(query, k=5, location=old)] == expected
        other.release(old)
    live.backend.release(str(live.backend.live_location()))  # the live version stays open
    with open_backend(EdgeSettings(path=live.data_dir / "index")) as other:
        with pytest.raises(Exception, match="WAL"):
            other.search(query, k=5)


def test_edge_backends_with_own_copies_serve_one_version_together_each_writing_its_copy(
    make_live_index: Callable[..., LiveIndex],
) -> None:
    live = make_live_index("edge", random_items(300))  # its backend holds the version's own shard
    query, root = _queries(1)[0], live.data_dir / "index"
    orphan = root / ".serving" / "999999999-gone" / "items_v1"  # a killed process's copies
    orphan.mkdir(parents=True)
    reused = root / ".serving" / f"{os.getpid()}-1-old"  # an ended process whose pid is reused
    reused.mkdir()
    expected = [h.item_id for h in live.backend.search(query, k=5)]
    with (open_backend(EdgeSettings(path=root, own_copies=True)) as first,
          open_backend(EdgeSettings(path=root, own_copies=True)) as second):
        assert not orphan.parent.exists() and not reused.exists()
        assert [h.item_id for h in first.search(query, k=5)] == expected  # no WAL lock held
        assert [h.item_id for h in second.search(query, k=5)] == expected
        first.set_stock({expected[0]: 0})
        assert expected[0] not in {h.item_id for h in first.search(query, k=5)}
        assert [h.item_id for h in second.search(query, k=5)] == expected  # the log's to carry
        copies = sorted((root / ".serving").iterdir())
        assert len(copies) == 2 and all((c / Path(str(live.backend.live_location())).name /
                                         "shard").is_dir() for c in copies)
    assert not any((root / ".serving").iterdir())  # closing drops the copies
    assert [h.item_id for h in live.backend.search(query, k=5)] == expected  # the original unchanged


def test_copying_a_new_version_does_not_hold_up_searches_of_the_served_one(
    make_live_index: Callable[..., LiveIndex], monkeypatch: pytest.MonkeyPatch,
) -> None:
    live = make_live_index("edge", random_items(300))
    query, root = _queries(1)[0], live.data_dir / "index"
    served = str(live.backend.live_location())
    new = build_version(live.items, registry=live.registry, spec=live.spec,
                        model_version_id=live.model_version_id).location
    live.backend.release(new)
    copying, searched, order = threading.Event(), threading.Event(), []
    copy = shutil.copytree

    def slow_copy(source, target, *args, **kwargs):  # a large version: the copy outlasts the search
        if not copying.is_set():  # the shard's top folder; copytree calls itself for the rest
            copying.set()
            searched.wait(timeout=30)
            order.append("copied")
        return copy(source, target, *args, **kwargs)

    with open_backend(EdgeSettings(path=root, own_copies=True)) as worker:
        worker.search(query, k=5, location=served)  # the served version is open
        monkeypatch.setattr("index.edge.shutil.copytree", slow_copy)
        counted: list[int] = []
        opening = threading.Thread(target=lambda: counted.append(worker.count(location=new)))
        opening.start()
        assert copying.wait(timeout=30)
        assert worker.search(query, k=5, location=served)  # answered while the copy runs
        order.append("searched")
        searched.set()
        opening.join()
    assert order == ["searched", "copied"] and counted == [300]  # the copy opened and counted


def test_edge_queries_skip_the_disk_lookup_yet_follow_a_promotion_made_elsewhere(
    make_live_index: Callable[..., LiveIndex],
) -> None:
    live = make_live_index("edge", random_items(300))
    backend, query = live.backend, _queries(1)[0]
    old = backend.live_location()
    assert old is not None
    expected = [h.item_id for h in backend.search(query, k=5, location=old)]
    spec_file = Path(old) / "spec.json"
    spec_file.rename(spec_file.with_suffix(".away"))  # an opened version is not stat'ed per query
    assert [h.item_id for h in backend.search(query, k=5, location=old)] == expected
    assert [h.item_id for h in backend.search(query, k=5)] == expected
    spec_file.with_suffix(".away").rename(spec_file)
    with open_backend(EdgeSettings(path=live.data_dir / "index")) as builder:  # "another process"
        new = builder.location_for(99)
        builder.create(new, live.spec)
        builder.upsert(random_items(300, seed=5, first_id=10_000), location=new)
        builder.finish(new)
        builder.release(new)
        builder.activate(new)
        builder.close()
    assert all(h.item_id >= 10_000 for h in backend.search(query, k=5))  # LIVE is read per query
    backend.release(old)
    spec_file.unlink()  # a released version is looked up on disk again
    with pytest.raises(UnknownVersionError):
        backend.search(query, k=5, location=old)


SEARCH_IN_A_FRESH_PROCESS = """
import json, os, sys, time
from pathlib import Path
import numpy as np
from index import EdgeSettings, open_backend

def pool_threads():
    names = [Path(f"/proc/self/task/{t}/comm").read_text() for t in os.listdir("/proc/self/task")]
    return sum(n.startswith("edge-search") for n in names)

threads = None if sys.argv[2] == "default" else int(sys.argv[2])
with open_backend(EdgeSettings(path=Path(sys.argv[1]), search_threads=threads)) as backend:
    ids = backend.search_ids(np.array(json.loads(sys.argv[3]), dtype=np.float32), k=5)[0].tolist()
    deadline, seen = time.monotonic() + 10, -1  # a loaded machine may name the threads late:
    while time.monotonic() < deadline:  # wait until a nonzero count holds for 0.2 s
        count = pool_threads()
        if count and count == seen:
            break
        seen = count
        time.sleep(0.2)
    print(json.dumps({"ids": ids, "threads": pool_threads()}))
"""


def test_edge_shard_searches_on_the_configured_number_of_threads(
    make_live_index: Callable[..., LiveIndex],
) -> None:
    live = make_live_index("edge", random_items(300))
    query = _queries(1)[0]
    expected = live.backend.search_ids(query, k=5)[0].tolist()
    live.backend.close()  # a shard is opened by one process at a time

    def search(threads: str) -> dict:
        out = subprocess.run([sys.executable, "-c", SEARCH_IN_A_FRESH_PROCESS, str(live.data_dir / "index"),
                              threads, json.dumps(query.tolist())], check=True, capture_output=True,
                             text=True, cwd=Path(__file__).parents[2])
        return json.loads(out.stdout)

    one = search("1")
    assert one == {"ids": expected, "threads": 1}
    assert search("default") == one  # Edge keeps the pool size in the shard for later opens
    assert search("2") == {"ids": expected, "threads": 2}


def test_search_threads_are_refused_for_the_server_backend() -> None:
    with pytest.raises(ValueError, match=r"server\.search_threads\n  Extra inputs are not permitted"):
        parse_index_settings({"backend": "server", "url": ":memory:", "search_threads": 1})


def test_stock_update_of_an_unknown_item_names_it(live_index: LiveIndex) -> None:
    with pytest.raises(UnknownItemError, match="987654"):
        live_index.backend.set_stock({987654: 1})


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        ("dimension", "dimension 17, the version expects 16"),
        ("nan", r"item_id 5 \(row 5\).*NaN"),
        ("inf", r"item_id 7 \(row 7\).*infinite"),
        ("duplicate", r"item_id 3 \(rows 3 and 9\).*duplicate"),
        ("negative", r"item_id -1 \(row 2\).*negative"),
    ],
)
def test_bad_items_are_refused_with_the_row_named(live_index: LiveIndex, breakage: str, message: str) -> None:
    items = random_items(12, seed=2, first_id=0)
    ids, vectors = items.ids.copy(), items.vectors.copy()
    if breakage == "dimension":
        vectors = np.hstack([vectors, np.zeros((12, 1), dtype=np.float32)])
    elif breakage == "nan":
        vectors[5, 3] = np.nan
    elif breakage == "inf":
        vectors[7, 0] = np.inf
    elif breakage == "duplicate":
        ids[9] = 3
    elif breakage == "negative":
        ids[2] = -1
    bad = ItemBatch(ids, vectors, items.stock, items.categories, items.price, items.created_at)
    before = live_index.backend.count()
    with pytest.raises(InvalidItemsError, match=message):
        live_index.backend.upsert(bad)
    assert live_index.backend.count() == before  # nothing partial was written


def test_bad_queries_are_refused(live_index: LiveIndex) -> None:
    with pytest.raises(InvalidQueryError, match=r"shape \(3,\), expected \(16,\)"):
        live_index.backend.search([0.1, 0.2, 0.3])
    with pytest.raises(InvalidQueryError, match="NaN"):
        live_index.backend.search([float("nan")] * DIM)


def test_unknown_version_is_named(live_index: LiveIndex) -> None:
    location = live_index.backend.location_for(999)
    with pytest.raises(UnknownVersionError, match="999"):
        live_index.backend.search(_queries(1)[0], location=location)


def test_searching_with_nothing_live_says_so(backend_name: str, tmp_path: Path) -> None:
    with open_backend(parse_index_settings({"backend": backend_name, "path": tmp_path})) as backend:
        with pytest.raises(NoLiveVersionError):
            backend.search(_queries(1)[0])


def test_versions_are_built_centred_on_their_items_mean(live_index: LiveIndex) -> None:
    centre = live_index.backend.spec().centre
    assert centre is not None
    assert np.allclose(centre, live_index.items.vectors.mean(axis=0), atol=1e-6)


def test_query_beam_grows_with_the_catalogue_between_the_measured_points() -> None:
    assert hnsw_ef_for(0) == hnsw_ef_for(10_000) == hnsw_ef_for(100_000) == 192
    assert hnsw_ef_for(1_000_000) == 512
    assert hnsw_ef_for(316_228) == 314  # halfway in log(items): sqrt(192 * 512) = 313.5
    assert hnsw_ef_for(10_000_000) == 1365  # the same slope beyond the largest measured catalogue
    beams = [hnsw_ef_for(n) for n in range(100_000, 3_000_000, 50_000)]
    assert beams == sorted(beams)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_versions_store_a_query_beam_chosen_from_their_size_unless_one_is_given(
    backend_name: str, make_live_index: Callable[..., LiveIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("index.config.MEASURED_EF", ((100, 16), (1000, 64)))
    live = make_live_index(backend_name, random_items(400))
    assert live.backend.spec().hnsw_ef == hnsw_ef_for(400) == 37
    assert live.registry.live().config["hnsw_ef"] == 37  # type: ignore[union-attr]
    given = build_version(random_items(400), registry=live.registry, spec=IndexSpec(dim=DIM, hnsw_ef=24),
                          model_version_id=live.model_version_id)
    assert live.backend.spec(given.location).hnsw_ef == given.config["hnsw_ef"] == 24


def test_edge_version_created_without_a_beam_stores_one_for_its_size_when_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("index.config.MEASURED_EF", ((100, 16), (1000, 64)))
    with open_backend(EdgeSettings(path=tmp_path)) as backend:
        location = backend.location_for(1)
        backend.create(location, IndexSpec(dim=DIM))
        backend.upsert(random_items(1000), location=location)
        backend.finish(location)
    with open_backend(EdgeSettings(path=tmp_path)) as reopened:  # read back from the version's spec.json
        assert reopened.spec(location).hnsw_ef == 64


@pytest.mark.parametrize(("fields", "message"), [
    ({"centre": [0.0] * 3}, "centre has 3 values, expected dim=16"),
    ({"centre": [0.0] * 16, "distance": "cosine"}, "only dot products"),
])
def test_invalid_centre_is_refused(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        IndexSpec(dim=16, **fields)


def test_filter_with_inverted_price_range_is_refused() -> None:
    with pytest.raises(ValueError, match="min_price=5.0 is above max_price=2.0"):
        SearchFilters(min_price=5, max_price=2)


@pytest.mark.parametrize("quantization", ["none", "binary", "product"])
def test_every_quantization_builds_and_answers(
    quantization: str, make_live_index: Callable[..., LiveIndex]
) -> None:
    spec = IndexSpec(dim=DIM, quantization=quantization)  # type: ignore[arg-type]
    live = make_live_index("edge", random_items(600), spec)
    query = _queries(1)[0]
    hits = live.backend.search(query, k=10)
    expected = exact_top_k(live.items, query, live.items.stock >= 1)
    assert {h.item_id for h in hits} <= set(live.items.ids[live.items.stock >= 1].tolist())
    # one-bit codes of 16-dim vectors are coarse; rescoring still keeps most of the true top 10
    assert len({h.item_id for h in hits} & set(expected)) >= (5 if quantization == "binary" else 7)
    assert live.backend.spec().quantization == quantization


@pytest.mark.parametrize("segments", [1, 3])
def test_edge_bulk_build_makes_one_graph_per_segment(
    segments: int, make_live_index: Callable[..., LiveIndex], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("index.edge.SEGMENT_MIN_ITEMS", 200)  # 900 items: 3 parts of 300
    live = make_live_index("edge", random_items(900), IndexSpec(dim=DIM, segments=segments))
    stats = live.backend.stats()
    assert (stats["segments"], stats["indexed_vectors"]) == (segments + 1, 900)  # + the appendable one
    for query, f in zip(_queries(10, seed=21), [SearchFilters(), SearchFilters(categories={"cat1"})] * 5,
                        strict=True):
        expected = exact_top_k(live.items, query, _mask(live.items, f))
        assert [h.item_id for h in live.backend.search(query, k=10, filters=f, exact=True)] == expected
        assert len({h.item_id for h in live.backend.search(query, k=10, filters=f)} & set(expected)) >= 8
    live.backend.upsert(random_items(600, seed=3, first_id=5_000))  # the live version is not split
    assert live.backend.stats()["segments"] == segments + 1


def _movielens_embeddings(ml100k_dir: Path, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Item and user factors of a truncated SVD of the (mean-centred) user x item rating matrix."""
    data = np.loadtxt(ml100k_dir / "u.data", dtype=np.int64)
    users, items, ratings = data[:, 0] - 1, data[:, 1] - 1, data[:, 2].astype(np.float64)
    matrix = np.zeros((users.max() + 1, items.max() + 1))
    matrix[users, items] = ratings - ratings.mean()
    u, s, vt = np.linalg.svd(matrix, full_matrices=False)
    scale = np.sqrt(s[:dim])
    return (vt[:dim].T * scale).astype(np.float32), (u[:, :dim] * scale).astype(np.float32)


def test_int8_hnsw_recall_on_movielens_embeddings(
    ml100k_dir: Path, make_live_index: Callable[..., LiveIndex]
) -> None:
    dim = 32
    item_vectors, user_vectors = _movielens_embeddings(ml100k_dir, dim)
    n = item_vectors.shape[0]
    rng = np.random.default_rng(0)
    stock = rng.integers(1, 10, n)
    stock[rng.random(n) < 0.15] = 0
    items = ItemBatch.from_columns(
        ids=np.arange(1, n + 1),  # MovieLens item ids
        vectors=item_vectors,
        stock=stock,
        categories=[["movie"]] * n,
        price=np.full(n, 9.99),
        created_at=np.zeros(n, dtype=np.int64),
    )
    spec = IndexSpec(dim=dim, quantization="int8", full_scan_threshold_kb=0)  # force the HNSW path
    live = make_live_index("edge", items, spec)
    assert live.backend.stats()["indexed_vectors"] == n  # answered by the HNSW graph
    recalls = []
    for query in user_vectors[:400]:  # 400 of the 943 users keep the test fast
        hits = live.backend.search(query, k=10)
        expected = exact_top_k(items, query, stock >= 1)
        recalls.append(len({h.item_id for h in hits} & set(expected)) / 10)
    assert np.mean(recalls) >= 0.97, f"recall@10 {np.mean(recalls):.3f}"


@pytest.mark.parametrize("quantization", ["int8", "none"])
def test_server_collection_takes_the_distribution_settings(quantization: str) -> None:
    # Local mode accepts and ignores sharding and replication (a real cluster applies them); what it
    # keeps is the vector storage: originals on disk only when quantized vectors serve the search.
    settings = ServerSettings(url=":memory:", shard_number=6, replication_factor=2,
                              write_consistency_factor=2)
    items = random_items(50)
    with open_backend(settings) as backend:
        location = backend.location_for(1)
        backend.create(location, IndexSpec(dim=DIM, quantization=quantization))  # type: ignore[arg-type]
        backend.upsert(items, location=location)
        vectors = backend.client.get_collection(location).config.params.vectors  # type: ignore[attr-defined]
        assert vectors.on_disk is (quantization != "none")
        everything = SearchFilters(in_stock_only=False)
        hits = backend.search(items.vectors[0], k=1, location=location, filters=everything)
        assert hits[0].item_id == items.ids[0]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"shard_number": 0}, "shard_number"),
        ({"replication_factor": 0}, "replication_factor"),
        ({"replication_factor": 2, "write_consistency_factor": 3},
         "write_consistency_factor=3 is above replication_factor=2"),
        ({"write_consistency_factor": 2}, "write_consistency_factor=2 is above replication_factor=1"),
    ],
)
def test_invalid_distribution_settings_name_the_field(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings(url=":memory:", **fields)


def test_distribution_settings_are_refused_for_the_edge_backend() -> None:
    with pytest.raises(ValueError, match=r"edge\.shard_number\n  Extra inputs are not permitted"):
        parse_index_settings({"backend": "edge", "shard_number": 2})


def test_settings_without_a_backend_are_edge_and_an_unknown_backend_is_named(tmp_path: Path) -> None:
    assert parse_index_settings({"path": tmp_path}) == EdgeSettings(path=tmp_path)
    with pytest.raises(ValueError, match="'cloud'.*expected tags: 'edge', 'server'"):
        parse_index_settings({"backend": "cloud"})

