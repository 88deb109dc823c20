"""The service's settings: `PlatformSettings` plus its own, read from `TWOTOWER_*` environment variables.

API keys have no default and never live in the repository: `TWOTOWER_READ_KEYS` and
`TWOTOWER_WRITE_KEYS` are comma-separated lists (a write key may also read). Outside development,
keys shorter than 16 characters or known placeholders are refused.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import NoDecode

from feature_repo.store import FeatureStoreConfig
from index import EdgeSettings, ServerSettings
from index.settings import PlatformSettings

PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "placeholder", "test", "dev", "key"}
MIN_KEY_LENGTH = 16  # about 96 bits from token_urlsafe(12); shorter keys are guessable

Keys = Annotated[list[SecretStr], NoDecode]


class Settings(PlatformSettings):
    """The platform's settings plus who may call and how often to look for new versions.

    The service reads the Feast repository the pipelines rendered, whose feature_store.yaml holds
    the online store's connection, so the Redis and Feast registry settings are the pipelines' only.
    """

    environment: Literal["development", "production"] = "production"
    feature_repo_dir: Path | None = None  # None = data_dir/feature_repo (rendered by `features`)
    read_keys: Keys  # may call the read endpoints
    write_keys: Keys  # may call every endpoint
    reload_interval_s: float = Field(5.0, gt=0)  # how often the registry's live version is polled
    # How often each process applies the stock and item writes other processes (workers, the
    # pipelines) logged: the longest a write answered by one worker is unseen by another.
    replay_interval_s: float = Field(0.25, gt=0)
    # How often the re-ranker's item popularity (events in the last 1, 7, 30 days) is read again
    # from the online store, which the hourly materialization moves (docs/pipelines.md).
    popularity_interval_s: float = Field(3600.0, gt=0)
    # Candidates the re-ranker orders; None = the depth it was trained and evaluated on. Fewer
    # cost less (ANN and re-rank) and can only lose items the ranker would have promoted.
    rerank_candidates: int | None = Field(None, ge=1, le=1000)
    # The last place of a recommendation goes to the user's best item newer than the model when
    # the model's popularity prior would hide such items until the next training.
    new_item_slot: bool = True
    max_body_bytes: int = Field(1_000_000, ge=1)  # a larger request body is a 413, unread
    # Each dependency (online store, index, registry) gets this long before it counts as down:
    # SQLite's lock wait, Redis's socket timeouts, the registry's connection, each health probe.
    dependency_timeout_s: float = Field(2.0, gt=0, le=60)
    # A read request's deadline in its worker thread: past it, a 503 (the thread finishes alone).
    request_timeout_s: float = Field(5.0, gt=0, le=300)
    # Set by `twotower serve --workers N`: where the workers keep their metrics, summed on /metrics;
    # prometheus_client writes there only when PROMETHEUS_MULTIPROC_DIR names it too.
    metrics_dir: Path | None = None

    @field_validator("read_keys", "write_keys", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @model_validator(mode="after")
    def _metrics_dir_is_prometheus_folder(self) -> Settings:
        folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        if self.metrics_dir is not None and Path(folder or "") != self.metrics_dir:
            raise ValueError(f"metrics_dir={self.metrics_dir}: PROMETHEUS_MULTIPROC_DIR must name "
                             f"the same folder (it is {folder!r}); `twotower serve --workers` "
                             "sets both")
        return self

    @model_validator(mode="after")
    def _check_keys(self) -> Settings:
        if not self.write_keys:
            raise ValueError("write_keys: at least one key is needed")
        if self.environment != "development":
            for name in ("read_keys", "write_keys"):
                for key in getattr(self, name):
                    secret = key.get_secret_value()
                    if len(secret) < MIN_KEY_LENGTH or secret.lower() in PLACEHOLDERS:
                        raise ValueError(f"{name}: a key is a placeholder or shorter than "
                                         f"{MIN_KEY_LENGTH} characters (allowed only with "
                                         "TWOTOWER_ENVIRONMENT=development)")
        if self.request_timeout_s <= self.dependency_timeout_s:
            raise ValueError(f"request_timeout_s={self.request_timeout_s} must exceed "
                             f"dependency_timeout_s={self.dependency_timeout_s}, so a slow "
                             "dependency's own error names it")
        return self

    def index_settings(self) -> EdgeSettings | ServerSettings:
        """Qdrant Edge serves from this process's own copy of each version, so any number of
        workers serve; by default with one search thread per query: the service's own requests
        are its concurrency, and a per-CPU pool spun ~0.5 ms of CPU per query on two cores
        (EdgeSettings.search_threads)."""
        index = super().index_settings()
        if not isinstance(index, EdgeSettings):
            return index
        threads = index.search_threads if "search_threads" in index.model_fields_set else 1
        return index.model_copy(update={"own_copies": True, "search_threads": threads})

    def feature_store(self) -> FeatureStoreConfig:
        config = super().feature_store()
        if self.feature_repo_dir is None:
            return config
        return config.model_copy(update={"repo_dir": self.feature_repo_dir})
