"""The request engine behind the API: one live snapshot, the recommendation path, and the writes.

A `Snapshot` holds everything one live version needs (towers, re-ranker, index location, item
cache); `Recommender` swaps it atomically when the registry's live version changes (a background
thread polls every `reload_interval_s` and loads the new one off the request path). Each request
takes one snapshot reference, so an answer never mixes versions.

Request path: online features (Feast) -> merge session events -> user tower -> filtered ANN search
(seen and excluded ids removed, oversampled for the re-ranker) -> re-rank -> top k. A user with no
profile, history or session gets the tower's empty-history state, which training fits to users'
first events (a popularity prior by time of day), then the re-ranker's popularity features:
the cold-start answer.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from index import IndexBackend, InvalidQueryError, SearchFilters, UnknownItemError
from index.freshness import add_items, push_stock
from index.model_store import ranker_dir
from index.registry import IndexVersion, Registry
from services.encoder import UserEncoder
from services.online import ItemFeatures, OnlineFeatures, UserFeatures
from services.schemas import (
    Filters,
    Health,
    InteractionResponse,
    ItemResponse,
    ItemUpsert,
    Reasons,
    RecommendationRequest,
    RecommendationResponse,
    ScoredItem,
    SimilarItemsResponse,
    StockResponse,
    VersionInfo,
)
from towers.artifact import Artifact
from towers.ranker import Candidates, Categories, Ranker, UserState, features

log = logging.getLogger(__name__)

STAGES = ("features", "tower", "ann", "rerank")
DEFAULT_CANDIDATES = 100  # re-ranked per request when the ranker does not say how many it saw


class ServiceUnavailable(RuntimeError):
    """A dependency (live version, index, online store) cannot answer; the message says which."""


class UnknownItem(LookupError):
    """An item id the live catalogue does not hold."""


@dataclass(frozen=True)
class ItemColumns:
    """The re-ranker's inputs of items, one row each. The numbers share one row-major array, so a
    request gathers its rows in one read (one cache line per item, not one per column)."""

    numbers: np.ndarray  # (n, 6) float64: price (NaN if missing), stock, created_at, popularity x3
    categories: Categories

    @property
    def price(self) -> np.ndarray:
        return self.numbers[:, 0]

    @property
    def stock(self) -> np.ndarray:
        return self.numbers[:, 1]

    @property
    def created_at(self) -> np.ndarray:
        """Unix seconds."""
        return self.numbers[:, 2]

    @property
    def popularity(self) -> np.ndarray:
        """(n, 3) event counts in the last 1/7/30 days."""
        return self.numbers[:, 3:]

    @classmethod
    def of(cls, items: list[ItemFeatures], vocabulary: dict[str, int]) -> ItemColumns:
        """The rows of `items` (new category names are added to `vocabulary`)."""
        numbers = np.array([(f.price, f.stock, f.created_at_s, *f.popularity) for f in items],
                           dtype=np.float64).reshape(len(items), 6)  # None -> NaN
        return cls(numbers, Categories.encode([f.categories for f in items], vocabulary))

    def take(self, rows: np.ndarray) -> ItemColumns:
        return ItemColumns(self.numbers[rows], self.categories.take(rows))

    def split(self, n: int) -> tuple[ItemColumns, ItemColumns]:
        """The first n rows, and the others."""
        first, rest = self.categories.split(n)
        return ItemColumns(self.numbers[:n], first), ItemColumns(self.numbers[n:], rest)

    def concat(self, more: ItemColumns) -> ItemColumns:
        return ItemColumns(np.concatenate((self.numbers, more.numbers)),
                           self.categories.concat(more.categories))


class ItemCache:
    """Content, popularity and stock of items, read from the online store once per snapshot.

    Filled with the whole catalogue at load (off the request path); items added later are read
    on first use. Stock then follows the service's own writes (`set_stock`, `upsert_item`): while
    the service owns the live shard, every stock change goes through it (index.freshness).
    The index thus returns ids and scores only: reading its payload doubled the search's cost.

    Besides each item's `ItemFeatures`, it keeps the re-ranker's inputs as `ItemColumns` (row 0:
    the empty item, for unknown ids), so a request gathers its candidates with a few array reads.
    Requests read without a lock; writes hold one, add rows by publishing longer columns before
    the ids that point into them, and change stock in place.
    """

    def __init__(self, online: OnlineFeatures, prefill: list[int]) -> None:
        self._online = online
        self._lock = threading.Lock()
        self._items: dict[int, ItemFeatures] = {}
        self._row: dict[int, int] = {}  # item id -> row of self._columns
        self._vocabulary: dict[str, int] = {}  # category name -> code
        self._columns = ItemColumns.of([_NO_ITEM], self._vocabulary)
        self._add(online.items(prefill))

    def rows(self, ids: list[int]) -> list[ItemFeatures | None]:
        """Each id's features (None: unknown); misses are read from the online store and kept."""
        get = self._items.get
        found = [get(i) for i in ids]
        if any(f is None for f in found):
            self._add(self._online.items([i for i, f in zip(ids, found, strict=True)
                                          if f is None]))
            found = [get(i) for i in ids]
        return found

    def columns(self, ids: list[int]) -> ItemColumns:
        """The ids' re-ranker inputs, in order (unknown ids: the empty item); misses as `rows`."""
        get = self._row.get
        found = [get(i) for i in ids]
        if None in found:
            self.rows(ids)
            found = [get(i, 0) for i in ids]
        # Read after the rows: the columns then hold every row the ids point to.
        return self._columns.take(np.array(found, dtype=np.int64))

    def put(self, item_id: int, item: ItemFeatures) -> None:
        self._add({item_id: item})

    def set_stock(self, item_id: int, quantity: int) -> None:
        with self._lock:
            item = self._items.get(item_id)
            if item is not None:
                self._items[item_id] = dataclasses.replace(item, stock=quantity)
                self._columns.stock[self._row[item_id]] = quantity

    def _add(self, items: dict[int, ItemFeatures]) -> None:
        """New rows for `items` (an id already known points to its new row)."""
        if not items:
            return
        with self._lock:
            first = len(self._columns.numbers)
            self._columns = self._columns.concat(ItemColumns.of(list(items.values()),
                                                                self._vocabulary))
            self._row.update(zip(items, range(first, first + len(items)), strict=True))
            self._items.update(items)


@dataclass(frozen=True)
class Snapshot:
    """One live version: what every request of that version reads."""

    index_version: int
    model_version: int
    index_location: str
    model_location: str
    artifact: Artifact
    encoder: UserEncoder
    ranker: Ranker | None
    ranking: str  # "ranker" or "retrieval order: <reason>"
    candidates: int  # retrieved per request for the ranker
    items: ItemCache
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def load_ranker(model_location: str) -> tuple[Ranker | None, str]:
    """The version's re-ranker if it helps, with the status the service reports."""
    path = ranker_dir(model_location)
    if not path.is_dir():
        return None, "retrieval order: no re-ranker trained for this model version"
    ranker = Ranker.load(path)
    if not ranker.improves:
        m = ranker.metrics
        return None, (f"retrieval order: the re-ranker does not improve NDCG@10 on the held-out "
                      f"window ({m.get('ndcg10_reranked')} vs {m.get('ndcg10_retrieval')})")
    return ranker, "ranker"


class Recommender:
    """Answers requests from the live snapshot and applies real-time writes."""

    def __init__(self, *, store, backend: IndexBackend, registry: Registry,
                 reload_interval_s: float = 5.0, rerank_candidates: int | None = None) -> None:
        torch.set_num_threads(1)  # one request = one core; concurrency comes from requests
        self.store = store
        self.online = OnlineFeatures(store)
        self.backend = backend
        self.registry = registry
        self.reload_interval_s = reload_interval_s
        self.rerank_candidates = rerank_candidates  # None: as many as the ranker was trained on
        self.on_stage: list[Callable[[str, float], None]] = []  # metrics hooks: (stage, seconds)
        self._snapshot: Snapshot | None = None
        self._retired: str | None = None  # index location the last switch replaced, released next tick
        self._problem = "no live index version yet"
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    # -- versions ------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the live version (if any) and poll for promotions in the background."""
        self.refresh()
        self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
        self._poller.start()

    def close(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join()

    def _poll(self) -> None:
        while not self._stop.wait(self.reload_interval_s):
            self.refresh()

    def refresh(self) -> bool:
        """Switch to the registry's live version if it changed; True when a new one was loaded.

        First releases the version the previous switch replaced: one tick later, no request
        still reads it (requests take milliseconds).
        """
        self._release_retired()
        try:
            live = self.registry.live()
        except Exception as exc:  # the registry database is a dependency like any other
            log.warning("registry unreachable: %s", exc)
            return False
        current = self._snapshot
        if live is None:
            if current is None:
                self._problem = "no live index version"
            return False
        if current is not None and current.index_version == live.id:
            return False
        try:
            snapshot = self._load(live)
        except Exception as exc:  # keep serving the old version; the next poll retries
            log.exception("could not load index version %d", live.id)
            self._problem = f"index version {live.id} could not be loaded: {exc}"
            return False
        self._snapshot = snapshot  # one reference swap: requests hold the old or the new one
        if current is not None and current.index_location != snapshot.index_location:
            self._retired = current.index_location
        # The snapshot's ~10^5-10^6 long-lived objects (item cache, model) would otherwise be
        # traversed by every full garbage collection, a multi-millisecond pause on the hot path.
        gc.freeze()
        log.info("serving index version %d (model version %d, %s)", snapshot.index_version,
                 snapshot.model_version, snapshot.ranking)
        return True

    def _release_retired(self) -> None:
        """Close the replaced index version's shard and collect its snapshot's memory."""
        retired, self._retired = self._retired, None
        if retired is None:
            return
        try:
            self.backend.release(retired)
        except Exception as exc:  # a cleanup: serving the live version goes on regardless
            log.warning("could not release index version at %s: %s", retired, exc)
        # gc.freeze() exempted the old snapshot from collection; one full pass per switch frees it.
        gc.unfreeze()
        gc.collect()
        gc.freeze()

    def _load(self, live: IndexVersion) -> Snapshot:
        model = self.registry.get_model(live.model_version_id)
        if not model.location:
            raise ServiceUnavailable(f"model version {model.id} has no location")
        if not live.location or not self.backend.exists(live.location):
            raise ServiceUnavailable(f"index version {live.id}: no data at {live.location}")
        artifact = Artifact.load(model.location)
        ranker, ranking = load_ranker(model.location)
        candidates = self.rerank_candidates or int(
            (ranker.config if ranker else {}).get("candidates", DEFAULT_CANDIDATES))
        self.backend.count(location=live.location)  # opens the shard now, not on a request
        return Snapshot(index_version=live.id, model_version=model.id,
                        index_location=live.location, model_location=model.location,
                        artifact=artifact, encoder=UserEncoder(artifact), ranker=ranker,
                        ranking=ranking, candidates=candidates,
                        items=ItemCache(self.online, self.online.catalogue_ids()))

    def snapshot(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise ServiceUnavailable(self._problem)
        return snapshot

    def health(self) -> Health:
        """Ok when a version is loaded and its index answers."""
        snapshot = self._snapshot
        if snapshot is None:
            return Health(status="unavailable", reason=self._problem)
        try:
            self.backend.count(location=snapshot.index_location)
        except Exception as exc:  # the probe's whole point: any failure is "unavailable"
            return Health(status="unavailable", ranking=snapshot.ranking,
                          reason=f"index version {snapshot.index_version} unavailable: {exc}")
        return Health(status="ok", ranking=snapshot.ranking)

    def version(self) -> VersionInfo:
        s = self.snapshot()
        metrics = {k: float(v) for k, v in (s.ranker.metrics if s.ranker else {}).items()
                   if isinstance(v, int | float)}
        return VersionInfo(model_version=s.model_version, index_version=s.index_version,
                           model_location=s.model_location, index_location=s.index_location,
                           ranking=s.ranking, ranker_metrics=metrics, loaded_at=s.loaded_at)

    # -- reads ---------------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        for hook in self.on_stage:
            hook(name, time.perf_counter() - started)

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        s = self.snapshot()
        now = time.time()
        warnings: list[str] = []
        with self._stage("features"):
            filters = request.filters
            user = _online(self.online.user, request.user_id)
            asked = [e.item_id for e in request.session] + filters.exclude_ids
            known = {i for i, f in zip(asked, _online(s.items.rows, asked), strict=True)
                     if f is not None}
            session = [(int(e.ts.timestamp()) if e.ts else int(now), e.item_id)
                       for e in request.session if e.item_id in known]
            warnings += [f"session item_id {e.item_id}: unknown, ignored" for e in request.session
                         if e.item_id not in known]
            warnings += [f"exclude_ids item_id {i}: unknown, ignored" for i in filters.exclude_ids
                         if i not in known]
            events = sorted([*zip(user.recent_timestamps, user.recent_item_ids, strict=True),
                             *session], key=lambda e: e[0])
            columns = _user_columns(request.user_id, user, events, now)
        with self._stage("tower"):
            vector = s.encoder(columns)
        seen = {i for _, i in events} | {i for i in filters.exclude_ids if i in known}
        depth = max(request.k, s.candidates) if s.ranker is not None else request.k
        with self._stage("ann"):
            ids, scores = self._search(s, vector, depth, _search_filters(filters, seen))
        with self._stage("rerank"):
            ranked = (self._rerank(s, ids, scores, events, now)
                      if s.ranker is not None and len(ids) else None)
            top = (np.arange(len(ids)) if ranked is None
                   else np.argsort(-ranked, kind="stable"))[:request.k]
        items = _scored(ids[top].tolist(), scores[top].tolist(),
                        None if ranked is None else ranked[top].tolist())
        return RecommendationResponse(
            user_id=request.user_id, items=items, model_version=s.model_version,
            index_version=s.index_version, warnings=warnings,
            ranking="ranker" if s.ranker is not None else "retrieval",
            cold_start=not user.known and not session)

    def similar(self, item_id: int, *, k: int, in_stock_only: bool = True) -> SimilarItemsResponse:
        """Items nearest to an item's own vector (embedded from its content by the live tower)."""
        s = self.snapshot()
        item = self._item(s, item_id)
        with torch.inference_mode():
            vector = s.artifact.embed_items(_item_frame(item_id, item))[0]
        filters = SearchFilters(in_stock_only=in_stock_only, exclude_ids=frozenset([item_id]))
        ids, scores = self._search(s, vector, k, filters)
        return SimilarItemsResponse(
            item_id=item_id, model_version=s.model_version, index_version=s.index_version,
            items=_scored(ids.tolist(), scores.tolist()))

    def _search(self, s: Snapshot, vector: np.ndarray, k: int, filters: SearchFilters
                ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores only: the item cache has the content, so the index skips the payload."""
        try:
            return self.backend.search_ids(vector, k=k, filters=filters, location=s.index_location)
        except InvalidQueryError:
            raise
        except Exception as exc:  # any failure of the index is the dependency's, not the client's
            raise ServiceUnavailable(f"index version {s.index_version} unavailable: {exc}") from exc

    def _rerank(self, s: Snapshot, ids: np.ndarray, scores: np.ndarray,
                events: list[tuple[int, int]], now: float) -> np.ndarray:
        """The ranker's score of each candidate (in retrieval order) for this user's history."""
        assert s.ranker is not None
        # One read of the item cache for the candidates and the history items.
        found = _online(s.items.columns, [*ids.tolist(), *(i for _, i in events)])
        candidates, history = found.split(len(ids))
        user = UserState(history.categories, np.array([t for t, _ in events], dtype=np.int64),
                         int(now) + 1)  # session events stamped with the request second count
        return s.ranker.score(features(self._candidates(ids, scores, candidates), user))

    @staticmethod
    def _candidates(ids: np.ndarray, scores: np.ndarray, c: ItemColumns) -> Candidates:
        """The candidates' features from their item cache columns (a missing price is NaN, as in
        training)."""
        return Candidates(item_ids=ids, scores=scores, price=c.price, stock=c.stock,
                          created_at=c.created_at, categories=c.categories,
                          popularity=c.popularity)

    @staticmethod
    def _item(s: Snapshot, item_id: int) -> ItemFeatures:
        (item,) = _online(s.items.rows, [item_id])
        if item is None:
            raise UnknownItem(f"item_id {item_id}: not in the catalogue")
        return item

    # -- writes --------------------------------------------------------------------------------
    def _writable(self) -> Snapshot:
        """The snapshot, if it is still the live version (writes must not cross a switch)."""
        s = self.snapshot()
        if self.backend.live_location() != s.index_location:
            raise ServiceUnavailable("a new index version is being loaded; retry shortly")
        return s

    def record_interaction(self, user_id: int, item_id: int, ts: datetime | None = None
                           ) -> InteractionResponse:
        s = self.snapshot()
        self._item(s, item_id)
        ts = ts or datetime.now(UTC)
        length = _online(self.online.append_interaction, user_id, item_id, ts)
        return InteractionResponse(user_id=user_id, item_id=item_id, ts=ts, history_length=length)

    def set_stock(self, item_id: int, quantity: int) -> StockResponse:
        s = self._writable()
        try:
            push_stock(self.store, self.backend, {item_id: quantity}, at=datetime.now(UTC))
        except UnknownItemError as exc:
            raise UnknownItem(f"item_id {item_id}: not in the live index") from exc
        s.items.set_stock(item_id, quantity)
        return StockResponse(item_id=item_id, quantity=quantity)

    def upsert_item(self, item_id: int, item: ItemUpsert) -> ItemResponse:
        """Embed the item from its content with the live item tower and make it searchable."""
        s = self._writable()
        created = item.created_at or datetime.now(UTC)
        features_ = ItemFeatures(title=item.title, categories=tuple(item.categories),
                                 price=item.price, created_at_s=int(created.timestamp()),
                                 stock=item.stock)
        add_items(self.store, s.artifact, self.backend, _item_frame(item_id, features_),
                  {item_id: item.stock}, at=datetime.now(UTC))
        _online(self.online.write_item, item_id, features_)
        s.items.put(item_id, features_)
        return ItemResponse(item_id=item_id, model_version=s.model_version,
                            index_version=s.index_version)


_NO_ITEM = ItemFeatures(title="", categories=(), price=None, created_at_s=0)
R = TypeVar("R")


def _online(call: Callable[..., R], *args: object) -> R:
    """Run an online-store read or write; its failure (Redis down, file gone) is a 503."""
    try:
        return call(*args)
    except Exception as exc:
        raise ServiceUnavailable(f"online store unavailable: {exc}") from exc


def _scored(ids: list[int], retrieval: list[float], ranker: list[float] | None = None
            ) -> list[ScoredItem]:
    """Answer items in order; each scored by the ranker when it ranked, else by retrieval."""
    return [ScoredItem(item_id=i, score=r if x is None else x,
                       reasons=Reasons(retrieval_score=r, ranker_score=x))
            for i, r, x in zip(ids, retrieval, ranker or [None] * len(ids), strict=True)]


def _search_filters(filters: Filters, exclude: set[int]) -> SearchFilters:
    return SearchFilters(in_stock_only=filters.in_stock_only,
                         categories=frozenset(filters.categories) if filters.categories else None,
                         min_price=filters.min_price, max_price=filters.max_price,
                         exclude_ids=frozenset(exclude))


def _user_columns(user_id: int, user: UserFeatures, events: list[tuple[int, int]],
                  now: float) -> dict[str, list]:
    """The one-row, Feast-shaped columns the user tower encodes (history = stored + session).

    A dict, not a DataFrame: building a one-row frame costs more than encoding it.
    """
    return {"user_id": [user_id], "event_timestamp": [int(now)], "age": [user.age],
            "profile_tokens": [user.profile_tokens], "recent_item_ids": [[i for _, i in events]],
            "recent_timestamps": [[t for t, _ in events]]}


def _item_frame(item_id: int, item: ItemFeatures) -> pd.DataFrame:
    """The one-row items frame (the catalogue's columns) the item tower and the index read."""
    return pd.DataFrame({"item_id": [item_id], "title": [item.title],
                         "categories": [list(item.categories)],
                         "price": [np.nan if item.price is None else item.price],
                         "created_at": [pd.Timestamp(item.created_at_s, unit="s", tz="UTC")]})
