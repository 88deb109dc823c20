"""The deployment settings every `TWOTOWER_*` reader shares: the data directory and the backends.

The service (`services.api.config.Settings`) and the pipelines
(`pipelines.defs.resources.PipelineSettings`) subclass `PlatformSettings`, so a variable such as
`TWOTOWER_INDEX__BACKEND=server` means the same to both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from feature_repo.store import FeatureStoreConfig
from index.config import EdgeSettings, IndexSettings, ServerSettings
from index.events import EventLog


class PlatformSettings(BaseSettings):
    """Where the data is and which index backend, version registry and online store hold it."""

    model_config = SettingsConfigDict(env_prefix="TWOTOWER_", env_nested_delimiter="__", extra="forbid")

    data_dir: Path = Path(".twotower")  # feature repository, registry and index live under it
    registry_url: str | None = None  # SQLAlchemy URL of the version registry; None = SQLite in data_dir
    index: IndexSettings | None = None  # None = Qdrant Edge shards under data_dir/index
    online_store: Literal["sqlite", "redis"] = "sqlite"  # the Feast online store of the repository
    # SQLAlchemy URL of the event log (every write the service accepted); None = the registry's
    # database when registry_url is set, else SQLite events.db in data_dir
    event_log_url: str | None = None

    def index_settings(self) -> EdgeSettings | ServerSettings:
        """The index backend's settings; without a `path` of their own they live under data_dir."""
        index = self.index or EdgeSettings()
        if "path" in index.model_fields_set:
            return index
        return index.model_copy(update={"path": self.data_dir / "index"})

    def event_log(self) -> EventLog:
        """The event log the service appends to and the pipelines read."""
        return EventLog(self.event_log_url or self.registry_url, data_dir=self.data_dir)

    def feature_store(self) -> FeatureStoreConfig:
        """The Feast repository rendered under data_dir."""
        return FeatureStoreConfig(repo_dir=self.data_dir / "feature_repo", online_store=self.online_store)
