"""The Feast store: render a repository, write its tables, apply, materialize, and read features.

`training_frame` is the one path from entity rows to training rows: every feature comes through
`FeatureStore.get_historical_features`, so the towers see exactly what a point-in-time join gives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field
from tqdm import tqdm

from feature_repo.datasets import Dataset
from feature_repo.tables import HISTORY_LENGTH, write_feature_tables

log = logging.getLogger(__name__)

DEFINITIONS = Path(__file__).resolve().parent  # the in-tree Feast repository
TRAINING_SERVICE = "two_tower_v1"
ONLINE_SERVICE = "user_online_v1"
ENTITY_COLUMNS = ["user_id", "item_id", "event_timestamp"]
CHUNK_ROWS = 25_000  # entity rows per as-of join: Feast's join fans out over each user's rows


class FeatureStoreConfig(BaseModel):
    """Where the Feast repository lives and which online store and registry it uses."""

    model_config = ConfigDict(extra="forbid")

    repo_dir: Path = DEFINITIONS  # a copy elsewhere keeps the source tree clean
    online_store: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "localhost:6379"  # Feast's connection string: host:port[,password=...]
    registry_url: str | None = None  # a SQLAlchemy URL selects Feast's SQL registry
    history_length: int = Field(HISTORY_LENGTH, ge=1, le=1000)


def render_repo(config: FeatureStoreConfig) -> Path:
    """Copy the definitions to config.repo_dir (unless it is the source) and write its yaml."""
    repo = config.repo_dir.resolve()
    repo.mkdir(parents=True, exist_ok=True)
    if repo != DEFINITIONS:
        for name in ["entities.py", "user_features.py", "item_features.py", "feature_services.py",
                     ".feastignore"]:
            shutil.copyfile(DEFINITIONS / name, repo / name)
    settings = yaml.safe_load((DEFINITIONS / "feature_store.yaml").read_text())
    if config.online_store == "redis":
        settings["online_store"] = {"type": "redis", "connection_string": config.redis_url}
    if config.registry_url:
        settings["registry"] = {"registry_type": "sql", "path": config.registry_url,
                                "cache_ttl_seconds": 60, "sqlalchemy_config_kwargs":
                                {"pool_pre_ping": True}}
    if repo != DEFINITIONS or config.online_store != "sqlite" or config.registry_url:
        _atomic_write(repo / "feature_store.yaml", yaml.safe_dump(settings, sort_keys=False))
    return repo


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _inside(repo: Path) -> Iterator[None]:
    """Feast imports definitions as top-level modules from the repository's folder: isolate that."""
    cwd, names = os.getcwd(), ("entities", "user_features", "item_features", "feature_services")
    sys.path.insert(0, str(repo))
    try:
        yield
    finally:
        os.chdir(cwd)
        sys.path.remove(str(repo))
        for name in names:
            sys.modules.pop(name, None)


def apply(repo: Path):  # -> feast.FeatureStore (feast is imported lazily: it takes seconds)
    """Run `feast apply` on the repository, in-process, and return its FeatureStore."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config
    from feast.repo_operations import apply_total

    repo = repo.resolve()
    with _inside(repo):
        apply_total(load_repo_config(repo, repo / "feature_store.yaml"), repo,
                    skip_source_validation=False)
    return FeatureStore(repo_path=str(repo))


def build_store(dataset: Dataset, config: FeatureStoreConfig):  # -> feast.FeatureStore
    """Render the repository, write its feature tables, and apply it."""
    repo = render_repo(config)
    write_feature_tables(dataset, repo / "data", history_length=config.history_length)
    return apply(repo)


def open_store(config: FeatureStoreConfig):  # -> feast.FeatureStore
    """The FeatureStore of a repository that was already built."""
    from feast import FeatureStore

    return FeatureStore(repo_path=str(config.repo_dir.resolve()))


def materialize(store, start: datetime, end: datetime) -> None:
    """Load feature values stamped in [start, end] into the online store (`feast materialize`)."""
    store.materialize(start_date=start, end_date=end)


def training_frame(store, entities: pd.DataFrame, *, feature_service: str = TRAINING_SERVICE,
                   chunk_rows: int = CHUNK_ROWS) -> pd.DataFrame:
    """Features for each (user_id, item_id, event_timestamp) row, as known strictly before it.

    Rows come back in the entity frame's order with its other columns kept. Feast joins chunks of
    chunk_rows entity rows, each a range of users, which bounds the memory its as-of join needs.
    """
    missing = [c for c in ENTITY_COLUMNS if c not in entities.columns]
    if missing:
        raise ValueError(f"entity frame: missing column {missing[0]!r}")
    timestamps = entities["event_timestamp"]
    if not isinstance(timestamps.dtype, pd.DatetimeTZDtype):
        raise ValueError("entity frame: column 'event_timestamp' must be tz-aware (UTC)")
    frame = entities.assign(event_timestamp=timestamps.astype("datetime64[us, UTC]"),
                            _row=range(len(entities)))
    frame = frame.sort_values(["user_id", "event_timestamp"], kind="stable")  # chunks: user ranges
    features = store.get_feature_service(feature_service)
    chunks = [frame.iloc[start:start + chunk_rows] for start in range(0, len(frame), chunk_rows)]
    parts = [store.get_historical_features(entity_df=chunk, features=features).to_df()
             for chunk in tqdm(chunks, desc="training frame", unit="chunk",
                               disable=len(chunks) < 2 or not sys.stderr.isatty())]
    result = pd.concat(parts, ignore_index=True).sort_values("_row")
    result = result.drop(columns="_row").reset_index(drop=True)
    result["event_timestamp"] = result["event_timestamp"].astype("datetime64[us, UTC]")
    return _fill_absent(result)


def _fill_absent(frame: pd.DataFrame) -> pd.DataFrame:
    """No row before t means no history and no sales yet: empty lists and zero counts, not nulls."""
    for column in ("recent_item_ids", "recent_timestamps"):
        if column in frame:
            frame[column] = [list(v) if v is not None else [] for v in frame[column]]
    for column in ("event_count", "count_1d", "count_7d", "count_30d"):
        if column in frame:
            frame[column] = pd.to_numeric(frame[column]).fillna(0).astype("int64")
    return frame


def online_user_features(store, user_ids: list[int]) -> pd.DataFrame:
    """The latest profile and history of each user from the online store."""
    return _fill_absent(store.get_online_features(
        features=store.get_feature_service(ONLINE_SERVICE),
        entity_rows=[{"user_id": int(u)} for u in user_ids]).to_df())
