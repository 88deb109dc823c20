"""The real service for the tests: a tiny trained shop, Feast, Qdrant Edge, and `twotower serve`.

Built once per run. The server starts before any version is live (so the tests can see the 503
and the recovery), then version 1 (towers only) is promoted. Tests share the server: each uses
its own users and items, and restores the stock it changes.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import httpx
import lightgbm as lgb
import numpy as np
import pytest

from feature_repo.datasets import Dataset, load
from feature_repo.store import FeatureStoreConfig, build_store, materialize
from feature_repo.tables import HISTORY_LENGTH
from index import EdgeSettings, IndexSpec, build_version, open_backend
from index.catalogue import item_batch, latest_stock
from index.edge import COPIES_DIR
from index.home import FINGERPRINT
from index.model_store import save_model
from index.registry import Registry
from pipelines.defs.resources import DatasetResource, EventLogResource, InboxResource, ServiceResource
from pipelines.defs.sensors import new_items_job, stock_update_job
from services.client import RecommenderClient, ServiceUnavailableError
from tests.utils.servers import twotower_service
from towers.artifact import Artifact
from towers.features import examples
from towers.model import TowerConfig
from towers.ranker import FEATURES, Ranker
from towers.train import TrainConfig, fit

SHOP = "synthetic:items=200,users=60,events=3000,seed=7"
LAMP = 60_001  # the item the inbox's items run upserts before the first version is live


@dataclass
class Service:
    url: str
    home: Path
    dataset: Dataset
    artifact: Artifact
    read_key: str
    write_key: str
    before_live: dict = field(default_factory=dict)  # answers seen while nothing was live
    pid: int = 0  # the server process

    @property
    def online_db(self) -> Path:
        """The SQLite online store the server reads."""
        return self.home / "feature_repo" / "data" / "online_store.db"

    def client(self, key: str | None = None, **options) -> RecommenderClient:
        return RecommenderClient(self.url, api_key=key or self.write_key, **options)

    def wait_for_index_version(self, index_version: int, timeout_s: float = 60, *,
                               status: str = "ok") -> None:
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                if client.health().status == status and client.version().index_version == index_version:
                    return
                time.sleep(0.1)
        raise TimeoutError(f"the service never switched to index version {index_version}")


def promote_version(service: Service, ranker: Ranker | None = None, *,
                    config: dict | None = None) -> tuple[int, int]:
    """Register the towers (and a ranker) as a new model version with `config` (by default
    recording the service's dataset, as the pipeline does), build its index, make it live.

    The builder closes its shard before promoting: the serving process must be able to open it.
    """
    home, dataset, artifact = service.home, service.dataset, service.artifact
    registry = Registry(data_dir=home, backend=open_backend(EdgeSettings(path=home / "index")))
    model = save_model(registry, artifact, home / "models",
                       config={FINGERPRINT: dataset.fingerprint, **(config or {})})
    if ranker is not None:
        ranker.save(Path(model.location) / "ranker")
    vectors = artifact.embed_items(dataset.items)
    version = build_version(item_batch(dataset.items, vectors, latest_stock(dataset.stock)),
                            registry=registry, spec=IndexSpec(dim=vectors.shape[1]),
                            model_version_id=model.id)
    registry.backend.close()
    registry.promote(version.id)
    registry.close()
    return model.id, version.id


def improving_ranker(candidates: int) -> Ranker:
    """A small real LambdaMART model, recorded as having beaten retrieval on its holdout."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40 * 20, len(FEATURES))).astype(np.float32)
    train = lgb.Dataset(x, (x[:, 3] > 0.5).astype(np.float32), group=np.full(40, 20))
    booster = lgb.train({"objective": "lambdarank", "min_data_in_leaf": 5, "num_threads": 1,
                         "verbosity": -1}, train, num_boost_round=10)
    return Ranker(booster, metrics={"ndcg10_retrieval": 0.10, "ndcg10_reranked": 0.12,
                                    "ndcg10_gain_low": 0.005, "holdout_users": 400},
                  improves=True, config={"candidates": candidates})


@pytest.fixture(scope="session")
def service(tmp_path_factory) -> Iterator[Service]:
    home = tmp_path_factory.mktemp("service")
    dataset = load(SHOP)
    store = build_store(dataset, FeatureStoreConfig(repo_dir=home / "feature_repo"))
    materialize(store, dataset.interactions["event_timestamp"].max().to_pydatetime())
    artifact = fit(examples(store, dataset.interactions), dataset.items,
                   tower=TowerConfig(dim=32, max_len=HISTORY_LENGTH),
                   # served with a popularity prior: every vector carries its coordinate
                   train=TrainConfig(epochs=1, max_minutes=0.1, popularity_prior=0.1))
    read_key, write_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": read_key, "TWOTOWER_WRITE_KEYS": write_key,
           "TWOTOWER_RELOAD_INTERVAL_S": "0.2"}
    with twotower_service(home, env, home / "serve.log") as server:
        svc = Service(server.url, home, dataset, artifact, read_key=read_key, write_key=write_key,
                      pid=server.process.pid)
        svc.before_live["health"] = httpx.get(f"{svc.url}/v1/health")
        with svc.client(max_retries=1) as client:
            try:
                client.recommend(1)
            except ServiceUnavailableError as error:
                svc.before_live["recommend"] = error
        # A sensor's stock write sent now (a 503 until a version is live), its quantity as it is;
        # and an items run and a stock run whose client gives up at once: their writes go into
        # the service's event log, for the version to replay when it goes live
        item, quantity = sorted(latest_stock(dataset.stock).items())[-1]
        sensor = ServiceResource(url=svc.url, api_key=write_key)
        inbox = InboxResource(data_dir=str(home / "pipeline"))
        inbox.items_dir.mkdir(parents=True)
        (inbox.items_dir / "lamp.csv").write_text(f"item_id,title,stock\n{LAMP},Inbox Lamp,3\n")
        resources = {"dataset": DatasetResource(spec=SHOP), "inbox": inbox,
                     "event_log": EventLogResource(data_dir=str(home)),
                     "service": ServiceResource(url=svc.url, api_key=write_key, max_retries=0)}
        runs = {}
        for name, job, op, config in [
                ("items", new_items_job, "upsert_new_items", {"files": [str(inbox.items_dir / "lamp.csv")]}),
                ("stock", stock_update_job, "push_stock_quantities", {"quantities": {str(LAMP): 4}})]:
            instance = dg.DagsterInstance.ephemeral()
            runs[name] = job.execute_in_process(
                instance=instance, raise_on_error=False, tags={"dagster/run_key": f"before-live-{name}"},
                resources=resources, run_config={"ops": {op: {"config": config}}}), instance
        with ThreadPoolExecutor(1) as pool:
            sent = pool.submit(lambda: list(sensor.send(
                "stock", [(f"before-live:stock:{item}", {"item_id": int(item), "quantity": int(quantity)})])))
            _, index_version = promote_version(svc)
            svc.wait_for_index_version(index_version)
            svc.before_live["sensor_write"] = (int(item), sent.exception() or sent.result())
        svc.before_live["sensor_runs"] = runs
        yield svc


def step_events(instance: dg.DagsterInstance, run_id: str, kind: str) -> list[dg.DagsterEvent]:
    """The run's Dagster events of one type (e.g. "STEP_UP_FOR_RETRY")."""
    return [e.dagster_event for e in instance.all_logs(run_id)
            if e.dagster_event is not None and e.dagster_event.event_type_value == kind]


@pytest.fixture(scope="session")
def client(service: Service) -> Iterator[RecommenderClient]:
    with service.client() as c:
        yield c


def active_user(service: Service, rank: int) -> int:
    """The rank-th most active user: each test takes its own, since the server's state is shared."""
    return int(service.dataset.interactions["user_id"].value_counts().index[rank])


@pytest.fixture(scope="module")
def copied_service(service: Service, tmp_path_factory) -> Iterator[Service]:
    """A second server on a copy of the first one's home (its own keys): the relocation test's
    subject, and where the fuzz may write anything without touching the shared server's state."""
    home = tmp_path_factory.mktemp("copy") / "home"
    # A running server's own shard copies come and go under it, and belong to it alone.
    shutil.copytree(service.home, home, ignore=shutil.ignore_patterns("*.log", COPIES_DIR))
    read_key, write_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    env = {"TWOTOWER_READ_KEYS": read_key, "TWOTOWER_WRITE_KEYS": write_key}
    with twotower_service(home, env, home / "serve.log") as server:
        copy = Service(server.url, home, service.dataset, service.artifact, read_key=read_key,
                       write_key=write_key, pid=server.process.pid)
        copy.wait_for_index_version(service.client().version().index_version)
        yield copy
