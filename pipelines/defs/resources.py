"""The external systems the assets use, as `ConfigurableResource`s built once from `TWOTOWER_*` settings.

Every path defaults under one data directory (`TWOTOWER_DATA_DIR`, default `.twotower`):

    feature_repo/   the rendered Feast repository, its parquet tables and online store
    registry.db     model and index versions (unless TWOTOWER_REGISTRY_URL names a database)
    index/          Qdrant Edge shards, one directory per index version
    models/         one directory per model version: the towers, and the re-ranker in ranker/
    embeddings/     item embeddings per model version (parquet)
    inbox/          files the sensors watch: stock/ (stock log rows) and items/ (new items)
    raw/            the last run's raw tables (a pickle per table, tables.json), which the next
                    run extends with the log's new writes
    events.db       the event log: every write the service accepted (unless TWOTOWER_EVENT_LOG_URL
                    or TWOTOWER_REGISTRY_URL names a database)
"""

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic_settings import SettingsConfigDict

from feature_repo.datasets import Dataset, fingerprint, load
from feature_repo.files import atomic_path, atomic_write
from feature_repo.store import FeatureStoreConfig, open_store
from index import IndexBackend, open_backend, parse_index_settings
from index.events import SEQ, EventLog, log_position
from index.model_store import ModelStore
from index.registry import Registry
from index.settings import PlatformSettings
from services.client import NotFoundError, RecommenderClient
from services.schemas import ItemUpsert

RAW_TABLES = ("interactions", "items", "users", "stock")
RAW_MANIFEST = "tables.json"  # in <data dir>/raw: the pickle of each raw table, and the dataset's names
RAW_FORMAT = 1  # of the stored raw tables: bump it when a loader or the contract changes what they hold
SERVICE_KEY_ENV = "TWOTOWER_SERVICE_KEY"  # the sensors' write key: a secret, read as a Dagster EnvVar


class PipelineSettings(PlatformSettings):
    """The platform's settings plus what the pipelines alone need: the dataset, how to render the
    Feast repository (its online store's connection and registry), and the running service."""

    model_config = SettingsConfigDict(extra="ignore")

    data: str = "synthetic:shop-small"  # the dataset spec the pipeline builds from (docs/data.md)
    redis_url: str = "localhost:6379"  # Feast's host:port[,password=...] when online_store=redis
    redis_type: Literal["redis", "redis_cluster"] = "redis"  # redis_cluster: redis_url lists the nodes
    feast_registry_url: str | None = None  # SQLAlchemy URL of Feast's SQL registry; None = a file
    service_url: str | None = None  # when set, sensors write through the running service

    def feature_store(self) -> FeatureStoreConfig:
        """The repository as the `features` asset renders it."""
        rendering = {"redis_url": self.redis_url, "redis_type": self.redis_type,
                     "registry_url": self.feast_registry_url}
        return super().feature_store().model_copy(update=rendering)


class DatasetResource(dg.ConfigurableResource):
    """The raw tables: a dataset spec such as `movielens-100k:PATH` or `synthetic:shop-small`."""

    spec: str

    def load(self) -> Dataset:
        return load(self.spec)

    @property
    def fingerprint(self) -> str:
        """The loaded dataset's fingerprint, which the pipeline's own log writes are tagged with."""
        return fingerprint(self.spec)


class RawTablesStore(dg.ConfigurableIOManager):
    """`raw_tables`' value in the data directory, which the next run extends (`stored`) instead of
    loading the dataset again: one pickle per table, named by what fixes its rows (the source, the
    row count, the newest log seq), so a run writes only the tables that changed; `tables.json`
    names the current four (with the source and log position they hold) and is replaced last."""

    data_dir: str

    @property
    def folder(self) -> Path:
        return Path(self.data_dir) / "raw"

    def manifest(self) -> dict | None:
        """What the stored tables hold, without reading them (None: nothing stored in this format)."""
        path = self.folder / RAW_MANIFEST
        try:
            meta = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None
        return meta if meta and meta.get("format") == RAW_FORMAT else None

    def stored(self) -> Dataset | None:
        """The raw tables the last run stored (None: none, or unreadable: the next run reloads)."""
        meta = self.manifest()
        if meta is None:
            return None
        try:
            tables = {}
            for table, name in meta["files"].items():
                with open(self.folder / name, "rb") as stored:
                    tables[table] = pickle.load(stored)
        except Exception as error:  # a torn or foreign pickle is a cache miss, not a failed run
            logging.getLogger(__name__).warning("raw tables in %s unreadable (%s): loading the "
                                                "dataset again", self.folder, error)
            return None
        return Dataset(meta["name"], **tables, identity=meta["identity"],
                       source_stamp=meta["source_stamp"])

    def clear(self) -> None:
        """Forget the stored tables: the next output is written whole."""
        (self.folder / RAW_MANIFEST).unlink(missing_ok=True)
        self._sweep(keep=set())

    def handle_output(self, context: dg.OutputContext | None, obj: Dataset) -> None:
        files = {}
        for table in RAW_TABLES:
            frame = getattr(obj, table)
            # Every row's log seq, not only the newest: a late-committed upsert replaces an item
            # row and leaves the count and the newest seq as they were.
            seqs = hashlib.sha256(frame[SEQ].to_numpy("float64").tobytes()).hexdigest() \
                if SEQ in frame else None
            token = f"{obj.identity}|{obj.source_stamp}|{table}|{len(frame)}|{seqs}"
            files[table] = f"{table}-{hashlib.sha256(token.encode()).hexdigest()[:16]}.pkl"
            if not (self.folder / files[table]).is_file():  # same source, rows and log: same table
                with atomic_path(self.folder / files[table]) as tmp, open(tmp, "wb") as out:
                    pickle.dump(frame, out, protocol=pickle.HIGHEST_PROTOCOL)
        atomic_write(self.folder / RAW_MANIFEST, json.dumps(
            {"format": RAW_FORMAT, "name": obj.name, "identity": obj.identity,
             "source_stamp": obj.source_stamp, "log_position": log_position(obj),
             "last_event": obj.last_event.isoformat(), "files": files}) + "\n")
        self._sweep(keep=set(files.values()))

    def load_input(self, context: dg.InputContext | None) -> Dataset:
        data = self.stored()
        if data is None:
            raise FileNotFoundError(f"no readable raw tables in {self.folder}: materialize raw_tables")
        return data

    def _sweep(self, *, keep: set[str]) -> None:
        """Remove table files not in `keep`, and temporary files a killed write left behind."""
        for stale in [*self.folder.glob("*.pkl"), *self.folder.glob(".*.tmp")]:
            if stale.name not in keep:
                stale.unlink(missing_ok=True)


class EventLogResource(dg.ConfigurableResource):
    """The service's event log, which the pipeline reads on top of the dataset.

    The inbox jobs log into it when the service cannot take their writes. While the log itself
    cannot be written (its database down or locked), such a job's step is retried
    (`step_retries` times, waiting `step_retry_wait_s`, doubled each time up to
    `step_retry_wait_max_s`: about half an hour of waits, `sensors.retried_while_unavailable`).
    """

    data_dir: str
    url: str | None = None  # SQLAlchemy URL; None = events.db in the data directory
    step_retries: int = 8  # of an inbox job's step
    step_retry_wait_s: float = 30.0  # before the first; doubled for each next one...
    step_retry_wait_max_s: float = 300.0  # ...up to this: a log back up waits this long at most

    @contextmanager
    def open(self) -> Iterator[EventLog]:
        log = EventLog(self.url, data_dir=self.data_dir)
        try:
            yield log
        finally:
            log.close()


class FeatureStoreResource(dg.ConfigurableResource):
    """The Feast repository rendered under the data directory (DuckDB offline, SQLite/Redis online)."""

    data_dir: str
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "localhost:6379"
    redis_type: Literal["redis", "redis_cluster"] = "redis"
    registry_url: str | None = None  # a SQL Feast registry; None = a file in the repository

    @property
    def config(self) -> FeatureStoreConfig:
        return FeatureStoreConfig(repo_dir=Path(self.data_dir) / "feature_repo",
                                  online_store=self.online_store, redis_url=self.redis_url,
                                  redis_type=self.redis_type, registry_url=self.registry_url)

    def open(self):  # -> feast.FeatureStore of the applied repository
        return open_store(self.config)


class IndexResource(dg.ConfigurableResource):
    """The vector index backend: Qdrant Edge shards under a path, or a Qdrant server by URL."""

    settings: dict[str, Any]  # `EdgeSettings` or `ServerSettings` fields (docs/index.md) but the API key
    api_key: str | None = None  # server only

    def open(self) -> IndexBackend:
        key = {} if self.api_key is None else {"api_key": self.api_key}
        return open_backend(parse_index_settings({**self.settings, **key}))


class RegistryResource(dg.ConfigurableResource):
    """The version registry over the index backend, and the model store under the data directory."""

    data_dir: str
    url: str | None = None
    index: IndexResource

    @property
    def model_store(self) -> ModelStore:
        """Model versions' directories and item embeddings under the data directory."""
        return ModelStore(Path(self.data_dir))

    @contextmanager
    def open(self) -> Iterator[Registry]:
        """The registry with its backend open; both are closed on exit (an Edge shard is locked)."""
        backend = self.index.open()
        registry = Registry(self.url, data_dir=self.data_dir, backend=backend)
        try:
            yield registry
        finally:
            backend.close()
            registry.close()


class ServiceResource(dg.ConfigurableResource):
    """The running recommendation service, if any: writes go through it, so its workers serve them at once.

    The writes go through the service's Python client with a write key. It retries what a moment
    mends (a 503 while a version loads or a dependency restarts, a refused connection while the
    service restarts) for about a minute, under the same key; a host that never answers fails
    after a few minutes (2 s per connection attempt). The inbox jobs then log the writes left
    into the event log themselves, which the service replays (`sensors.Writer`). Any other error
    fails the op (and so the run), except a stock write's 404 for an item the catalogue lacks.
    Each write's `Idempotency-Key` is derived from the run's key, so a retried write or a
    re-executed run records nothing twice in the service's event log.
    """

    url: str | None = None
    api_key: str | None = None  # a write-scope key
    timeout_s: float = 30.0  # an item upsert embeds the item and writes the index and online store
    connect_timeout_s: float = 2.0
    max_retries: int = 60  # of each write: 503s come with `Retry-After: 1`

    def serves(self, fingerprint: str) -> bool:
        """Whether the live model is of the dataset `fingerprint` names (or of an unrecorded one):
        writes for another dataset must not reach it, nor be logged against it."""
        with self._client() as client:
            return client.version().dataset in (None, fingerprint)

    def send(self, kind: Literal["stock", "item"], writes: Iterable[tuple[str, dict[str, Any]]]
             ) -> Iterator[bool]:
        """Each (key, body) write in order, yielding after each whether the service took it; a
        body is the event log's: `item_id` and `quantity` (stock), or `item_id` and an
        `ItemUpsert` (item, validated before it is sent). False: stock of an item the catalogue
        does not hold (404, not logged). Any other error stops the writes."""
        with self._client() as client:
            for key, body in writes:
                item_id = body["item_id"]
                if kind == "stock":
                    try:
                        client.set_stock(item_id, int(body["quantity"]), idempotency_key=key)
                    except NotFoundError:
                        yield False
                        continue
                else:
                    item = ItemUpsert.model_validate({k: v for k, v in body.items() if k != "item_id"})
                    client.upsert_item(item_id, **item.model_dump(), idempotency_key=key)
                yield True

    def _client(self) -> RecommenderClient:
        if not self.url:
            raise ValueError("ServiceResource.url: not set (TWOTOWER_SERVICE_URL)")
        if not self.api_key:  # not the client's own TWOTOWER_API_KEY: the sensors' key is theirs
            raise ValueError(f"ServiceResource.api_key: not set ({SERVICE_KEY_ENV}, a write key "
                             f"of the service at {self.url})")
        return RecommenderClient(self.url, api_key=self.api_key, timeout_s=self.timeout_s,
                                 connect_timeout_s=self.connect_timeout_s, max_retries=self.max_retries)


class InboxResource(dg.ConfigurableResource):
    """Folders the freshness sensors watch for new stock rows and new items (parquet or CSV)."""

    data_dir: str

    @property
    def stock_dir(self) -> Path:
        return Path(self.data_dir) / "inbox" / "stock"

    @property
    def items_dir(self) -> Path:
        return Path(self.data_dir) / "inbox" / "items"

    @property
    def stock_pushed(self) -> Path:
        """Each item's newest stock row time pushed so far (`sensors.pushed_rows`)."""
        return Path(self.data_dir) / "inbox" / "stock-pushed.parquet"

    @property
    def items_pushed(self) -> Path:
        """Each item's newest items file (by mtime) pushed so far (`sensors.pushed_rows`)."""
        return Path(self.data_dir) / "inbox" / "items-pushed.parquet"


def build_resources(settings: PipelineSettings) -> dict[str, dg.ConfigurableResource]:
    """One resource per external system, all under `settings.data_dir`."""
    data_dir = str(settings.data_dir)
    fields = settings.index_settings().model_dump(mode="json", exclude={"api_key"}, exclude_none=True)
    index = IndexResource(settings=fields, api_key=_secret("TWOTOWER_INDEX__API_KEY"))
    feast = settings.feature_store()
    return {
        "dataset": DatasetResource(spec=settings.data),
        "raw_tables_store": RawTablesStore(data_dir=data_dir),
        "event_log": EventLogResource(data_dir=data_dir,
                                      url=settings.event_log_url or settings.registry_url),
        "feature_store": FeatureStoreResource(data_dir=data_dir, online_store=feast.online_store,
                                              redis_url=feast.redis_url, redis_type=feast.redis_type,
                                              registry_url=feast.registry_url),
        "registry": RegistryResource(data_dir=data_dir, url=settings.registry_url, index=index),
        "service": ServiceResource(url=settings.service_url, api_key=_secret(SERVICE_KEY_ENV)),
        "inbox": InboxResource(data_dir=data_dir),
    }


def _secret(name: str) -> dg.EnvVar | None:
    """Secrets stay environment variables in the UI (never shown); absent ones are None."""
    return dg.EnvVar(name) if os.environ.get(name) else None


@dg.definitions
def resources() -> dg.Definitions:
    # Steps run one after another in the run's process: a Qdrant Edge shard admits one process.
    return dg.Definitions(resources=build_resources(PipelineSettings()), executor=dg.in_process_executor)
