"""Request and response models of the recommendation API: the one source the service and client share.

Everything a client may send is bounded here, so malformed input ends as a 422 naming the field
before any work is done. This module imports only pydantic (the client must stay light).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

MAX_K = 500  # answers longer than this are a batch job, not a request
MAX_SESSION_EVENTS = 200  # a session longer than the tower's history window adds nothing
MAX_EXCLUDE_IDS = 1_000
MAX_CATEGORIES = 50
MAX_TEXT = 500  # characters of a title or category name
MAX_QUANTITY = 10**9
MAX_ID = 2**63 - 1  # ids are int64 in Feast and Qdrant point ids

ItemId = Annotated[int, Field(ge=0, le=MAX_ID, description="Catalogue item id (int64, >= 0).")]
UserId = Annotated[int, Field(ge=0, le=MAX_ID, description="User id (int64, >= 0).")]
Category = Annotated[str, Field(min_length=1, max_length=MAX_TEXT)]
Price = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Filters(_Model):
    """What every recommended item must satisfy."""

    categories: list[Category] | None = Field(
        None, min_length=1, max_length=MAX_CATEGORIES, description="Keep items in any of these.")
    min_price: Price | None = None
    max_price: Price | None = None
    exclude_ids: list[ItemId] = Field(default_factory=list, max_length=MAX_EXCLUDE_IDS)
    in_stock_only: bool = True

    @model_validator(mode="after")
    def _check_price_range(self) -> Filters:
        if self.min_price is not None and self.max_price is not None and self.min_price > self.max_price:
            raise ValueError(f"min_price={self.min_price} is above max_price={self.max_price}")
        return self


class SessionEvent(_Model):
    """An interaction of the current session not yet in the online store."""

    item_id: ItemId
    ts: AwareDatetime | None = Field(None, description="When it happened; default: request time.")


class RecommendationRequest(_Model):
    user_id: UserId
    k: int = Field(10, ge=1, le=MAX_K)
    filters: Filters = Field(default_factory=Filters)
    session: list[SessionEvent] = Field(default_factory=list, max_length=MAX_SESSION_EVENTS)


class Reasons(_Model):
    retrieval_score: float = Field(description="Dot product of the user and item vectors.")
    ranker_score: float | None = Field(None, description="Re-ranker score; null in retrieval order.")


class ScoredItem(_Model):
    item_id: int
    score: float = Field(description="What the order follows: ranker score, else retrieval score.")
    reasons: Reasons


class Versioned(_Model):
    """Every answer names the one model version and index version that produced it."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_version: int
    index_version: int
    warnings: list[str] = Field(default_factory=list)


class RecommendationResponse(Versioned):
    user_id: int
    items: list[ScoredItem]
    ranking: Literal["ranker", "retrieval"]
    cold_start: bool = Field(description="No profile or history: a content/popularity answer.")


class SimilarItemsResponse(Versioned):
    item_id: int
    items: list[ScoredItem]


class InteractionRequest(_Model):
    user_id: UserId
    item_id: ItemId
    ts: AwareDatetime | None = Field(None, description="When it happened; default: now.")


class InteractionResponse(_Model):
    user_id: int
    item_id: int
    ts: datetime
    history_length: int = Field(description="Items in the user's online history after this one.")


class StockUpdate(_Model):
    quantity: int = Field(ge=0, le=MAX_QUANTITY)


class StockResponse(_Model):
    item_id: int
    quantity: int


class ItemUpsert(_Model):
    """A new (or changed) item's content; it is embedded by the live item tower."""

    title: str = Field(max_length=MAX_TEXT)
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    price: Price | None = None
    created_at: AwareDatetime | None = Field(None, description="Release time; default: now.")
    stock: int = Field(0, ge=0, le=MAX_QUANTITY)


class ItemResponse(Versioned):
    item_id: int


class Health(_Model):
    status: Literal["ok", "degraded", "unavailable"] = Field(
        description="'degraded': answers, but the live model and the online features come from "
                    "different datasets.")
    reason: str | None = Field(None, description="Why the service cannot answer, or answers "
                                                 "degraded.")
    ranking: str | None = Field(None, description="'ranker' or 'retrieval order: <reason>'.")


class VersionInfo(_Model):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_version: int
    index_version: int
    model_location: str
    index_location: str
    ranking: str = Field(description="'ranker' or 'retrieval order: <reason>'.")
    ranker_metrics: dict[str, float] = Field(default_factory=dict)
    loaded_at: datetime
