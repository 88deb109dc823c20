"""The service's settings: one pydantic-settings class, read from `TWOTOWER_*` environment variables.

API keys have no default and never live in the repository: `TWOTOWER_READ_KEYS` and
`TWOTOWER_WRITE_KEYS` are comma-separated lists (a write key may also read). Outside development,
keys shorter than 16 characters or known placeholders are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from feature_repo.store import FeatureStoreConfig
from index import IndexSettings

PLACEHOLDERS = {"changeme", "change-me", "secret", "password", "placeholder", "test", "dev", "key"}
MIN_KEY_LENGTH = 16  # about 96 bits from token_urlsafe(12); shorter keys are guessable

Keys = Annotated[list[SecretStr], NoDecode]


class Settings(BaseSettings):
    """Where the data is, which backends to use, who may call, how often to look for new versions."""

    model_config = SettingsConfigDict(env_prefix="TWOTOWER_", env_nested_delimiter="__",
                                      extra="forbid")

    environment: Literal["development", "production"] = "production"
    data_dir: Path = Path(".twotower")  # feature repository, registry and index live under it
    registry_url: str | None = None  # SQLAlchemy URL of the version registry; None = SQLite in data_dir
    index: IndexSettings | None = None  # None = Qdrant Edge shards under data_dir/index
    feature_repo_dir: Path | None = None  # None = data_dir/feature_repo (rendered by `features`)
    online_store: Literal["sqlite", "redis"] = "sqlite"  # must match the rendered repository
    redis_url: str = "localhost:6379"  # Feast's host:port[,password=...] when online_store=redis
    read_keys: Keys  # may call the read endpoints
    write_keys: Keys  # may call every endpoint
    reload_interval_s: float = Field(5.0, gt=0)  # how often the registry's live version is polled
    # Candidates the re-ranker orders; None = the depth it was trained and evaluated on. Fewer
    # cost less (ANN and re-rank) and can only lose items the ranker would have promoted.
    rerank_candidates: int | None = Field(None, ge=1, le=1000)

    @field_validator("read_keys", "write_keys", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

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
        return self

    def index_settings(self) -> IndexSettings:
        # One search thread per query: the service's own requests are its concurrency, and a
        # per-CPU pool spun ~0.5 ms of CPU per query on two cores (IndexSettings.search_threads).
        return self.index or IndexSettings(path=self.data_dir / "index", search_threads=1)

    def feature_store(self) -> FeatureStoreConfig:
        return FeatureStoreConfig(repo_dir=self.feature_repo_dir or self.data_dir / "feature_repo",
                                  online_store=self.online_store, redis_url=self.redis_url)
