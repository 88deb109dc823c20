"""The request engine behind the API: recommendations, similar items and real-time writes.

Request path: online features (Feast) -> merge session events -> user tower -> filtered ANN search
(seen and excluded ids removed, oversampled for the re-ranker) -> re-rank -> top k, its last place
kept for the best item newer than the model when the popularity prior would hide such items
(`_with_new_item`). A user with no profile, history or session gets the tower's empty-history
state, which training fits to users' first events (a popularity prior by time of day), then the
re-ranker's popularity features: the cold-start answer.

The tower + ANN step is one method (`_nearest`) shared by `recommend` and `rank`, the offline
evaluation's entry point, so `twotower eval` measures the retrieval the service runs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TypeVar

import numpy as np
import pandas as pd
import torch

from index import IndexBackend, InvalidQueryError, SearchFilters
from index.events import Event, EventLog, KeyReused, effective
from index.registry import Registry
from services.engine.errors import KeyConflict, ServiceUnavailable, UnknownItem, online_call, unavailable
from services.engine.item_cache import ItemColumns
from services.engine.live import LiveVersion, Snapshot
from services.engine.writes import apply, item_frame
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
from towers.data import USER_COLUMNS, unix_seconds
from towers.evaluate import NO_ITEM
from towers.ranker import Candidates, UserState, features

log = logging.getLogger(__name__)

R = TypeVar("R")
STAGES = ("features", "tower", "ann", "rerank", "new_item")


class Engine:
    """Answers requests from the live snapshot and applies real-time writes."""

    def __init__(self, *, store, backend: IndexBackend, registry: Registry,
                 log: EventLog | None = None, reload_interval_s: float = 5.0,
                 replay_interval_s: float = 0.25, popularity_interval_s: float = 3600.0,
                 rerank_candidates: int | None = None, probe_timeout_s: float = 2.0,
                 new_item_slot: bool = True) -> None:
        """`log`: where accepted writes are logged (default: beside the registry).
        `new_item_slot`: keep a recommendation's last place for an item newer than the model."""
        torch.set_num_threads(1)  # one request = one core; concurrency comes from requests
        self.store = store  # feast.FeatureStore
        self.online = OnlineFeatures(store)
        self.backend = backend
        self.registry = registry
        self.log = log or EventLog.beside(registry.url)
        self.live = LiveVersion(online=self.online, backend=backend, registry=registry, log=self.log,
                                reload_interval_s=reload_interval_s,
                                replay_interval_s=replay_interval_s,
                                popularity_interval_s=popularity_interval_s,
                                rerank_candidates=rerank_candidates,
                                probe_timeout_s=probe_timeout_s)
        self.new_item_slot = new_item_slot
        self.on_stage: list[Callable[[str, float], None]] = []  # metrics hooks: (stage, seconds)

    # -- versions ------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the live version (if any) and poll for promotions in the background."""
        self.live.start()

    def close(self) -> None:
        """Stop polling and close the event log (the backend and registry are the caller's)."""
        self.live.close()
        self.log.close()

    def refresh(self) -> bool:
        """Switch to the registry's live version if it changed; True when a new one was loaded."""
        return self.live.refresh()

    def snapshot(self) -> Snapshot:
        return self.live.snapshot()

    def health(self, features: dict | None = None) -> Health:
        """`features`: the online features' dataset record (see `LiveVersion.health`)."""
        return self.live.health(features)

    def version(self) -> VersionInfo:
        return self.live.version()

    # -- reads ---------------------------------------------------------------------------------
    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        for hook in self.on_stage:
            hook(name, time.perf_counter() - started)

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        with self.live.reading() as s:
            return self._recommend(s, request)

    def _recommend(self, s: Snapshot, request: RecommendationRequest) -> RecommendationResponse:
        now = time.time()
        warnings: list[str] = []
        with self._stage("features"):
            filters = request.filters
            user = online_call(self.online.user, request.user_id)
            asked = [e.item_id for e in request.session] + filters.exclude_ids
            known = online_call(s.items.known, asked)
            session = [(int(e.ts.timestamp()) if e.ts else int(now), e.item_id)
                       for e in request.session if e.item_id in known]
            warnings += [f"session item_id {e.item_id}: unknown, ignored" for e in request.session
                         if e.item_id not in known]
            warnings += [f"exclude_ids item_id {i}: unknown, ignored" for i in filters.exclude_ids
                         if i not in known]
            events = sorted([*zip(user.recent_timestamps, user.recent_item_ids, strict=True),
                             *session], key=lambda e: e[0])
            columns = _user_columns(request.user_id, user, events, now)
        seen = ({*user.seen_item_ids} | {i for _, i in events}
                | {i for i in filters.exclude_ids if i in known})  # the whole history, not its last N
        depth = max(request.k, s.candidates) if s.ranker is not None else request.k
        search = _search_filters(filters, seen)
        ids, scores, vector = self._nearest(s, columns, depth, search)
        as_of = s.artifact.prior.as_of if s.artifact.prior.hides_new_items() else None
        new = None  # the position among the candidates of the best item newer than the model
        if (self.new_item_slot and request.k >= 2 and as_of is not None
                and s.items.newest_created_at > as_of):
            with self._stage("new_item"):
                ids, scores, new = self._with_new_item(s, vector, search, ids, scores, as_of,
                                                       int(now))
        with self._stage("rerank"):
            # The ranker was trained on Feast's history rows: the last history_length events.
            ranked = (self._rerank(s, ids, scores, events[-self.online.history_length:], now)
                      if s.ranker is not None and len(ids) else None)
            order = (np.arange(len(ids)) if ranked is None
                     else np.argsort(-ranked, kind="stable"))
            top, placed = order[:request.k], False
            if new is not None and as_of is not None:
                top, placed = _new_item_place(s, ids, order, new, request.k, as_of, int(now))
        items = _scored(ids[top].tolist(), scores[top].tolist(),
                        None if ranked is None else ranked[top].tolist(), new_item=placed)
        return RecommendationResponse(
            user_id=request.user_id, items=items, model_version=s.model_version,
            index_version=s.index_version, warnings=warnings,
            ranking="ranker" if s.ranker is not None else "retrieval",
            cold_start=not user.known and not session)

    def rank(self, users: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        """(U, k) item ids for Feast-shaped user rows (a `towers.evaluate.Recommend`).

        Each row is answered by `recommend`'s tower + ANN step on the live version (same ONNX
        user tower, same search), with the offline evaluation's semantics: the row's own
        point-in-time features (no online read, no session), its `exclude` ids removed, the
        stock filter off and no re-ranking, so the metric is the towers' retrieval metric.
        Rows the index cannot fill to k end in `NO_ITEM`.
        """
        with self.live.reading() as s:
            return self._rank(s, users, k, exclude)

    def _rank(self, s: Snapshot, users: pd.DataFrame, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        columns = {c: users[c].tolist() for c in USER_COLUMNS}
        columns["event_timestamp"] = unix_seconds(users["event_timestamp"]).tolist()
        ranked = np.full((len(users), k), NO_ITEM, dtype=np.int64)
        for row, seen in zip(range(len(users)), exclude, strict=True):
            user = {c: [values[row]] for c, values in columns.items()}
            ids, _, _ = self._nearest(s, user, k, _everything_but(seen))
            ranked[row, :len(ids)] = ids
        return ranked

    def retrieve(self, user_vectors: np.ndarray, k: int, exclude: list[np.ndarray]) -> np.ndarray:
        """`rank`'s ANN step for users embedded elsewhere (a `towers.evaluate.Retrieve`)."""
        ranked = np.full((len(user_vectors), k), NO_ITEM, dtype=np.int64)
        with self.live.reading() as s:
            for row, (vector, seen) in enumerate(zip(user_vectors, exclude, strict=True)):
                ids, _ = self._search(s, vector, k, _everything_but(seen))
                ranked[row, :len(ids)] = ids
        return ranked

    def similar(self, item_id: int, *, k: int, in_stock_only: bool = True) -> SimilarItemsResponse:
        """Items nearest to an item's own vector (embedded from its content by the live tower), by
        the towers alone: the popularity prior is picked for users' next items, not for likeness."""
        filters = SearchFilters(in_stock_only=in_stock_only, exclude_ids=frozenset([item_id]))
        with self.live.reading() as s:
            item = self._item(s, item_id)
            with torch.inference_mode():
                served = s.artifact.embed_items(item_frame(item_id, item))
            vector = s.artifact.prior.alone(served)[0]
            ids, scores = self._search(s, vector, k, filters)
        return SimilarItemsResponse(
            item_id=item_id, model_version=s.model_version, index_version=s.index_version,
            items=_scored(ids.tolist(), scores.tolist()))

    def _nearest(self, s: Snapshot, user: dict[str, list], k: int, filters: SearchFilters
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The tower + ANN step: one user's k nearest items (ids, scores) and vector (served user
        tower)."""
        with self._stage("tower"):
            vector = s.encoder(user)
        with self._stage("ann"):
            return (*self._search(s, vector, k, filters), vector)

    def _with_new_item(self, s: Snapshot, vector: np.ndarray, filters: SearchFilters,
                       ids: np.ndarray, scores: np.ndarray, as_of: int, now: int
                       ) -> tuple[np.ndarray, np.ndarray, int | None]:
        """The candidates with the user's best item created after the model's newest training
        event and by `now` among them (appended when the search did not return it), and its
        position (None: there is none under the request's filters). An item dated later (a
        release to come, or a typo) is not new yet.

        The popularity prior counts training events, so such an item scores by the towers alone
        and seldom reaches the top k until the next training counts it; `_new_item_place` keeps
        it a place. One place of ten shows them 15-45 x as often and costs known items
        0.003-0.004 NDCG@10 (docs/towers-notes.md, issue 18 part x).
        """
        # Exact: a graph walk through a filter on creation time (which has no links of its own)
        # found the best of 10 % of the items once in 12 (docs/benchmarks.md).
        new, new_score = self._search(s, vector, 1, filters.model_copy(
            update={"created_after": as_of + 1, "created_before": now}), exact=True)
        if not len(new):
            return ids, scores, None
        where = np.flatnonzero(ids == new[0])
        if len(where):
            return ids, scores, int(where[0])
        return np.append(ids, new), np.append(scores, new_score), len(ids)

    def _search(self, s: Snapshot, vector: np.ndarray, k: int, filters: SearchFilters, *,
                exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Ids and scores only: the item cache has the content, so the index skips the payload."""
        try:
            return self.backend.search_ids(vector, k=k, filters=filters, location=s.index_location,
                                           exact=exact)
        except InvalidQueryError:
            raise
        except Exception as exc:  # any failure of the index is the dependency's, not the client's
            raise ServiceUnavailable(f"index version {s.index_version} unavailable: {exc}") from exc

    def _rerank(self, s: Snapshot, ids: np.ndarray, scores: np.ndarray,
                events: list[tuple[int, int]], now: float) -> np.ndarray:
        """The ranker's score of each candidate (in retrieval order) for this user's history."""
        assert s.ranker is not None
        # One read of the item cache for the candidates and the history items.
        found = online_call(s.items.columns, [*ids.tolist(), *(i for _, i in events)])
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
        item = online_call(s.items.item, item_id)
        if item is None:
            raise UnknownItem(f"item_id {item_id}: not in the catalogue")
        return item

    # -- writes --------------------------------------------------------------------------------
    # Each write is logged (durably) before it is applied, under the client's idempotency key: a
    # retry of an applied write gets the first answer back; one whose first attempt failed half
    # way (or lost its answer) is applied again, which changes nothing twice: a quantity is set,
    # an item replaced, and an interaction appended once per log seq. A stock or item change is
    # applied again in log order (`_apply`): a later change of the item stays.

    def _record(self, s: Snapshot, key: str | None, kind: str, body: dict) -> Event:
        """Log a write, tagged with the dataset of the version it is written against."""
        try:
            event = self.log.record(key or uuid.uuid4().hex, kind, body, dataset=s.dataset)
        except KeyReused as exc:
            raise KeyConflict(str(exc)) from exc
        except Exception as exc:
            raise ServiceUnavailable(f"event log unavailable: {exc}") from exc
        if event.answer is None and s.dataset and event.dataset not in (None, s.dataset):
            # Unanswered and logged against the version before a change of dataset: applied here,
            # it would reach this version but neither the other workers' replays nor training.
            raise KeyConflict(f"Idempotency-Key {key!r}: its write was logged against another "
                              "dataset's model, which is no longer live; send a new key")
        return event

    def _apply(self, s: Snapshot, event: Event) -> set[int]:
        """Apply a stock or item write just logged; `apply`'s missing items. One logged before
        without an answer (a retry, or a request that reached the service late, after the inbox
        jobs logged it themselves) is applied in log order: the item's changes logged since (which
        are applied, or replayed, on their own) decide which change is its last."""
        if event.new:
            return apply(s, self.online, self.backend, [event])
        since = unavailable("event log", self.live.changes_since, s, event)
        return apply(s, self.online, self.backend, [event, *since], {e.seq for e in since})

    def _answered(self, event: Event, response: R) -> R:
        try:
            self.log.answer(event.seq, response.model_dump(mode="json"))  # type: ignore[attr-defined]
        except Exception as exc:  # applied and logged: the write stands; only a retry's answer is lost
            log.warning("event %d: could not store its answer: %s", event.seq, exc)
        return response

    def record_interaction(self, user_id: int, item_id: int, ts: datetime | None = None, *,
                           key: str | None = None) -> InteractionResponse:
        s = self.live.snapshot()
        self._item(s, item_id)
        event = self._record(s, key, "interaction", {"user_id": user_id, "item_id": item_id,
                                                  "ts": ts.isoformat() if ts else None})
        if event.answer is not None:
            return InteractionResponse.model_validate(event.answer)
        ts = datetime.fromisoformat(effective(event, "ts"))
        length = online_call(self.online.append_interaction, user_id, item_id, ts, event.seq)
        return self._answered(event, InteractionResponse(user_id=user_id, item_id=item_id, ts=ts,
                                                         history_length=length))

    def set_stock(self, item_id: int, quantity: int, *, key: str | None = None) -> StockResponse:
        with self.live.writing() as s:
            self._item(s, item_id)
            event = self._record(s, key, "stock", {"item_id": item_id, "quantity": quantity})
            if event.answer is not None:
                return StockResponse.model_validate(event.answer)
            indexed = not self._apply(s, event)
            if indexed:
                self.live.applied(event.seq)
            # else logged and online, not in this index: an upsert another process logged brings
            # it with the replay, which applies this quantity too (it is not marked applied)
        return self._answered(event, StockResponse(item_id=item_id, quantity=quantity,
                                                   indexed=indexed))

    def upsert_item(self, item_id: int, item: ItemUpsert, *, key: str | None = None) -> ItemResponse:
        """Embed the item from its content with the live item tower and make it searchable."""
        with self.live.writing() as s:
            event = self._record(s, key, "item", {"item_id": item_id, **item.model_dump(mode="json")})
            if event.answer is not None:
                return ItemResponse.model_validate(event.answer)
            self._apply(s, event)
            self.live.applied(event.seq)
        return self._answered(event, ItemResponse(item_id=item_id, model_version=s.model_version,
                                                  index_version=s.index_version))


def _new_item_place(s: Snapshot, ids: np.ndarray, order: np.ndarray, new: int, k: int,
                    as_of: int, now: int) -> tuple[np.ndarray, bool]:
    """The top k of `order`, its last place given to candidate `new` unless an item created after
    `as_of` (and by `now`) is in the first k - 1 already (then False). `new` ranks below those, so
    the order holds."""
    shown = order[:k - 1]
    created = online_call(s.items.columns, ids[shown].tolist()).created_at
    if ((created > as_of) & (created <= now)).any():
        return order[:k], False
    return np.append(shown, new), True


def _scored(ids: list[int], retrieval: list[float], ranker: list[float] | None = None, *,
            new_item: bool = False) -> list[ScoredItem]:
    """Answer items in order; each scored by the ranker when it ranked, else by retrieval.
    `new_item`: the last one holds the place kept for an item newer than the model."""
    return [ScoredItem(item_id=i, score=r if x is None else x,
                       reasons=Reasons(retrieval_score=r, ranker_score=x,
                                       new_item=new_item and n == len(ids) - 1))
            for n, (i, r, x) in enumerate(zip(ids, retrieval, ranker or [None] * len(ids),
                                              strict=True))]


def _search_filters(filters: Filters, exclude: set[int]) -> SearchFilters:
    return SearchFilters(in_stock_only=filters.in_stock_only,
                         categories=frozenset(filters.categories) if filters.categories else None,
                         min_price=filters.min_price, max_price=filters.max_price,
                         exclude_ids=frozenset(exclude))


def _everything_but(seen: np.ndarray) -> SearchFilters:
    """The evaluation's filter: the whole index, stock ignored, minus the query's seen ids."""
    return SearchFilters(in_stock_only=False, exclude_ids=frozenset(np.asarray(seen).tolist()))


def _user_columns(user_id: int, user: UserFeatures, events: list[tuple[int, int]],
                  now: float) -> dict[str, list]:
    """The one-row, Feast-shaped columns the user tower encodes (history = stored + session).

    A dict, not a DataFrame: building a one-row frame costs more than encoding it.
    """
    return {"user_id": [user_id], "event_timestamp": [int(now)], "age": [user.age],
            "profile_tokens": [user.profile_tokens], "recent_item_ids": [[i for _, i in events]],
            "recent_timestamps": [[t for t, _ in events]]}



