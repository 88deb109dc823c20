"""The live version: what one registry version needs to answer (`Snapshot`), and its lifecycle.

`LiveVersion` loads the registry's live version, swaps it in atomically when a promotion changes
it (a background thread polls every `reload_interval_s` and loads the new one off the request
path), and releases the replaced version's shard at the first poll no request reads it. Each
request takes one snapshot (`reading`), so an answer never mixes versions.

The event log keeps versions current: a version switched to (promotion or rollback) first gets the
logged stock and item changes newer than its build, the last of them under the write lock, so
what was set stays set; every `replay_interval_s` the changes other processes (the service's
other workers, the pipelines) logged are applied.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from index import IndexBackend
from index.events import LOG_GAPS, LOG_POSITION, Event, EventLog, of_dataset
from index.home import FINGERPRINT
from index.model_store import ranker_dir
from index.registry import IndexVersion, Registry, as_utc
from services.encoder import UserEncoder
from services.engine.errors import ServiceUnavailable
from services.engine.item_cache import ItemCache
from services.engine.probes import Probe, probe_all
from services.engine.writes import apply
from services.online import OnlineFeatures
from services.schemas import Dependency, Health, VersionInfo
from towers.artifact import Artifact
from towers.ranker import Ranker

log = logging.getLogger(__name__)

# How long the replay waits for a missing log seq: a PostgreSQL insert commits within it, or
# failed (its seq is spent) and never will.
LATE_COMMIT_S = 5.0
DEFAULT_CANDIDATES = 100  # re-ranked per request when the ranker does not say how many it saw
CHANGES = ("stock", "item")
SERVING = ("online_store", "index")  # what every request waits on; the registry only for reloads
PROBE_USER = 0  # any id: the online store's probe is one real read of a user's rows


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
    dataset: str | None = None  # fingerprint of the model's training data (None: not recorded)
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def _seconds_since(moment: datetime) -> float:
    """Seconds from `moment` (a registry time; SQLite keeps no zone: UTC) to now, at least 0."""
    return max((datetime.now(UTC) - as_utc(moment)).total_seconds(), 0.0)


def load_ranker(model_location: str) -> tuple[Ranker | None, str]:
    """The version's re-ranker if it helps, with the status the service reports."""
    path = ranker_dir(model_location)
    if not path.is_dir():
        return None, "retrieval order: no re-ranker trained for this model version"
    ranker = Ranker.load(path)
    m = ranker.metrics
    if "ndcg10_gain_low" not in m:  # judged by its mean gain alone, before the noise gate
        return None, ("retrieval order: the re-ranker was judged before its gain had to clear the "
                      "held-out window's noise; retrain it")
    if not ranker.improves:
        return None, (f"retrieval order: the re-ranker does not improve NDCG@10 beyond the held-out "
                      f"window's noise ({m['ndcg10_reranked']:.4f} vs {m['ndcg10_retrieval']:.4f} "
                      f"over {m.get('holdout_users')} users; the gain's lower bound is "
                      f"{m['ndcg10_gain_low']:+.4f})")
    return ranker, "ranker"


class LiveVersion:
    """The registry's live version as a `Snapshot`: loaded, polled, switched and released."""

    def __init__(self, *, online: OnlineFeatures, backend: IndexBackend, registry: Registry,
                 log: EventLog, reload_interval_s: float, rerank_candidates: int | None,
                 replay_interval_s: float = 0.25, popularity_interval_s: float = 3600.0,
                 probe_timeout_s: float = 2.0) -> None:
        self.online = online
        self.backend = backend
        self.registry = registry
        self.log = log
        self.write_lock = threading.Lock()  # stock and item writes, replays and the switch
        self._applied = 0  # log seq up to which the live snapshot has every stock and item change
        self._own: set[int] = set()  # seqs this process applied since, skipped by the next replay
        self._done: set[int] = set()  # seqs above `_applied` already seen (applied if changes)
        self._missing: dict[int, float] = {}  # seqs not seen yet above it: since when (monotonic)
        self.reload_interval_s = reload_interval_s
        self.replay_interval_s = replay_interval_s
        self.popularity_interval_s = popularity_interval_s
        self.rerank_candidates = rerank_candidates  # None: as many as the ranker was trained on
        self._snapshot: Snapshot | None = None
        self._retired: list[Snapshot] = []  # replaced, released once no request reads them
        self._readers: dict[int, int] = {}  # id(snapshot) -> requests reading it now
        self._readers_lock = threading.Lock()
        self._problem = "no live index version yet"
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._popularity: threading.Thread | None = None
        self.probe_timeout_s = probe_timeout_s
        self._probes = {name: Probe(name) for name in ("online_store", "index", "registry")}

    def start(self) -> None:
        """Load the live version (if any) and poll for promotions in the background."""
        self.refresh()
        self._poller = threading.Thread(target=self._poll, name="version-poller", daemon=True)
        self._poller.start()
        # Its own thread: at a million items a refresh reads for about half a minute, which
        # would hold up the replays.
        self._popularity = threading.Thread(target=self._refresh_popularity, daemon=True,
                                            name="popularity-refresh")
        self._popularity.start()

    def close(self, wait_s: float = 5.0) -> None:
        """Stop polling; wait up to `wait_s` for requests still reading a version (threads past
        their deadline included), since the caller closes the backend next."""
        self._stop.set()
        for thread in (self._poller, self._popularity):
            if thread is not None:
                thread.join()
        deadline = time.monotonic() + wait_s
        while self._readers and time.monotonic() < deadline:
            time.sleep(0.01)
        if self._readers:
            log.warning("closing with %d requests still reading an index version",
                        sum(self._readers.values()))

    def _refresh_popularity(self) -> None:
        """The live item cache's popularity read again every `popularity_interval_s` (a version
        loaded meanwhile read its own)."""
        while not self._stop.wait(self.popularity_interval_s):
            if (snapshot := self._snapshot) is None:
                continue
            try:
                snapshot.items.refresh_popularity(self._stop)
            except Exception as exc:  # the next interval tries again
                log.warning("could not read item popularity of index version %d: %s",
                            snapshot.index_version, exc)

    def _poll(self) -> None:
        """`refresh` every `reload_interval_s`; between, the log's new changes every `replay_interval_s`."""
        reload_at = time.monotonic() + self.reload_interval_s
        while not self._stop.wait(min(self.replay_interval_s, self.reload_interval_s)):
            if time.monotonic() >= reload_at:
                reload_at = time.monotonic() + self.reload_interval_s
                self.refresh()
            elif (snapshot := self._snapshot) is not None:
                self._catch_up_live(snapshot)

    def refresh(self) -> bool:
        """Switch to the registry's live version if it changed; True when a new one was loaded.

        First releases the versions switches replaced that no request reads any more (a request
        past its deadline still reads its version until its thread ends: released at a later
        poll, not reopened by it).
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
            self._restore_pointer(current)
            self._catch_up_live(current)
            return False
        try:
            snapshot = self._load(live)
            # What the build read of the log: every seq up to its position but its gaps, seqs not
            # committed then (or spent), which are replayed from here on if they land.
            position = int(live.metrics.get(LOG_POSITION, 0))
            gaps = live.metrics.get(LOG_GAPS, [])
            start = min(gaps, default=position + 1) - 1
            held = set(range(start + 1, position + 1)).difference(gaps)
            done = held | self._catch_up(snapshot, start, held)
            with self.write_lock:  # the changes logged meanwhile, then the swap
                done |= self._catch_up(snapshot, max(done, default=start))
                # The polls go on from the first seq the build lacks: a seq below the last one
                # read may still commit, and is applied when it does (`_catch_up_live`). A gap
                # not read yet was missing when the build read the log, before the version was
                # registered: its wait counts from then.
                now = time.monotonic()
                found = now - _seconds_since(live.created_at)
                self._applied, self._done = start, done
                self._missing = {seq: found for seq in gaps if seq not in done}
                self._advance(now)
                self._own.clear()
                self._snapshot = snapshot  # one reference swap: requests hold the old or new one
        except Exception as exc:  # keep serving the old version; the next poll retries
            log.exception("could not load index version %d", live.id)
            self._problem = f"index version {live.id} could not be loaded: {exc}"
            return False
        if current is not None and current.index_location != snapshot.index_location:
            self._retired.append(current)
        # The snapshot's ~10^5-10^6 long-lived objects (item cache, model) would otherwise be
        # traversed by every full garbage collection, a multi-millisecond pause on the hot path.
        gc.freeze()
        log.info("serving index version %d (model version %d, %s)", snapshot.index_version,
                 snapshot.model_version, snapshot.ranking)
        return True

    def _restore_pointer(self, s: Snapshot) -> None:
        """Point the backend back at the live version `s` if a switch died before its commit
        (writes answer 503 while the two disagree)."""
        try:
            if self.backend.live_location() != s.index_location:
                self.registry.restore_live_pointer()
        except Exception as exc:  # the next poll tries again
            log.warning("could not point the index backend at the live version: %s", exc)

    def _catch_up(self, s: Snapshot, after: int, skip: set[int] | None = None) -> set[int]:
        """Replay the stock and item changes logged after `after` against `s`'s dataset into `s`, but
        those in `skip` (applied already: they still decide which of an item's changes is its last);
        the seqs read."""
        events = self.log.read(after=after, kinds=CHANGES)
        ours, skip = of_dataset(events, s.dataset), skip or set()
        fresh = sum(e.seq not in skip for e in ours)
        if fresh:
            # a dependency's failure raises (the next poll tries again); a bad change is passed over
            apply(s, self.online, self.backend, ours, skip, pass_over=True)
            log.info("index version %d: replayed %d logged stock and item changes",
                     s.index_version, fresh)
        return {e.seq for e in events}

    def _catch_up_live(self, s: Snapshot) -> None:
        """The changes other processes logged since the last poll, into the live version.

        On PostgreSQL a lower seq can commit after a higher one (or never: a failed insert spends
        its seq), so the replay reads on from the first seq it has not seen, for up to
        `LATE_COMMIT_S`: a late change is applied when it lands, and per item the last change in
        log order wins (`writes.apply`), as it would have had it come in order.
        """
        try:
            with self.write_lock:
                logged = self.log.seqs(after=self._applied)  # first: the read below has them all
                read = self._catch_up(s, self._applied, self._done | self._own)
                self._done |= {*logged, *read, *self._own}
                self._own.clear()
                self._advance(time.monotonic())
        except Exception as exc:  # the next poll tries again
            log.warning("could not replay the event log into index version %d: %s",
                        s.index_version, exc)

    def _advance(self, now: float) -> None:
        """Move `_applied` over the seen seqs, stopping at one missing for less than LATE_COMMIT_S
        (every missing seq's wait starts when it is first found missing, all at once)."""
        top = max(self._done, default=self._applied)
        for seq in range(self._applied + 1, top):
            if seq not in self._done:
                self._missing.setdefault(seq, now)
        spent = 0
        while self._applied < top:
            seq = self._applied + 1
            if seq in self._done:
                self._done.discard(seq)
                self._missing.pop(seq, None)  # it came late
            elif now - self._missing[seq] < LATE_COMMIT_S:
                break
            else:
                spent += 1
                del self._missing[seq]
            self._applied = seq
        if spent:  # a failed insert (a retried key) spends its seq; a later commit there is missed
            log.info("event log: %d seqs not committed within %gs passed over", spent, LATE_COMMIT_S)

    @contextmanager
    def writing(self) -> Iterator[Snapshot]:
        """The live snapshot for a stock or item write, under the write lock (no switch or replay
        runs meanwhile); a 503 while a new version is being loaded."""
        with self.write_lock:
            s = self.snapshot()
            if self.backend.live_location() != s.index_location:
                raise ServiceUnavailable("a new index version is being loaded; retry shortly")
            yield s

    def applied(self, seq: int) -> None:
        """A stock or item event this process applied itself (call under `writing`)."""
        self._own.add(seq)

    def changes_since(self, s: Snapshot, event: Event) -> list[Event]:
        """The stock and item changes of `event`'s item logged after it against `s`'s dataset."""
        return of_dataset(self.log.read(after=event.seq, kinds=CHANGES, item_id=event.body["item_id"]),
                          s.dataset)

    @contextmanager
    def reading(self) -> Iterator[Snapshot]:
        """The live snapshot for one read request: its index version is not released while the
        request reads it."""
        with self._readers_lock:
            s = self.snapshot()
            self._readers[id(s)] = self._readers.get(id(s), 0) + 1
        try:
            yield s
        finally:
            with self._readers_lock:
                self._readers[id(s)] -= 1
                if not self._readers[id(s)]:
                    del self._readers[id(s)]

    def _release_retired(self) -> None:
        """Close the shards of replaced versions no request reads, and collect their memory."""
        with self._readers_lock:  # no request takes a replaced snapshot any more
            read = [s for s in self._retired if id(s) in self._readers]
            # a location served again (a rollback) or still read through another snapshot is kept
            served = self._snapshot
            kept = {s.index_location for s in read} | ({served.index_location} if served else set())
            idle = {s.index_location for s in self._retired} - kept
            dropped, self._retired = len(self._retired) - len(read), read
        if self._retired:
            log.debug("index versions %s: still read by a request, released later",
                      [s.index_version for s in self._retired])
        if not dropped:
            return
        for location in idle:
            try:
                self.backend.release(location)  # the live one (after a rollback) is kept
            except Exception as exc:  # a cleanup: serving the live version goes on regardless
                log.warning("could not release index version at %s: %s", location, exc)
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
        self.online.read_history_length()
        return Snapshot(index_version=live.id, model_version=model.id,
                        index_location=live.location, model_location=model.location,
                        artifact=artifact, encoder=UserEncoder(artifact), ranker=ranker,
                        ranking=ranking, candidates=candidates,
                        items=ItemCache(self.online, self.online.catalogue_ids()),
                        dataset=(model.config or {}).get(FINGERPRINT))

    def snapshot(self) -> Snapshot:
        snapshot = self._snapshot
        if snapshot is None:
            raise ServiceUnavailable(self._problem)
        return snapshot

    def health(self, features: dict | None = None) -> Health:
        """Each dependency probed (with a timeout): `unavailable` when requests cannot be answered
        (no version loaded, online store or index degraded), `degraded` when only the registry is,
        or when `features` (the online features' dataset record: name, fingerprint) is of another
        dataset than the live model."""
        snapshot = self._snapshot
        checks = {"online_store": lambda: self.online.user(PROBE_USER),
                  "registry": self.registry.live}
        if snapshot is not None:
            checks["index"] = self._count_served
        dependencies = probe_all({name: (self._probes[name], check) for name, check in checks.items()},
                                 self.probe_timeout_s)
        if snapshot is None:
            dependencies["index"] = Dependency(status="degraded", reason=self._problem)
        elif features and snapshot.dataset and features.get(FINGERPRINT) != snapshot.dataset:
            dependencies["features"] = Dependency(status="degraded", reason=(
                f"model version {snapshot.model_version} was trained on another dataset than the "
                f"online features ({features.get('name')}); run the pipeline on this dataset to "
                "promote a model of it"))
        bad = {name: d.reason for name, d in sorted(dependencies.items()) if d.status != "ok"}
        reason = "; ".join(f"{name}: {why}" for name, why in bad.items()) or None
        status = ("unavailable" if snapshot is None or bad.keys() & set(SERVING)
                  else "degraded" if bad else "ok")
        return Health(status=status, reason=self._problem if snapshot is None else reason,
                      ranking=snapshot.ranking if snapshot else None, dependencies=dependencies)

    def _count_served(self) -> int:
        """The index probe: the points of the version served, read as a request reads it (a
        probe past its timeout must not reopen a version released meanwhile)."""
        with self.reading() as s:
            return self.backend.count(location=s.index_location)

    def version(self) -> VersionInfo:
        s = self.snapshot()
        metrics = {k: float(v) for k, v in (s.ranker.metrics if s.ranker else {}).items()
                   if isinstance(v, int | float)}
        return VersionInfo(model_version=s.model_version, index_version=s.index_version,
                           model_location=s.model_location, index_location=s.index_location,
                           ranking=s.ranking, ranker_metrics=metrics, loaded_at=s.loaded_at,
                           dataset=s.dataset)
