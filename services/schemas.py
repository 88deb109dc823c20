"""Request and response models of the recommendation API: the one source the service and client share.

Everything a client may send is bounded here, so malformed input ends as a 422 naming the field
before any work is done. This module imports only pydantic (the client must stay light).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)

MAX_K = 500  # answers longer than this are a batch job, not a request
MAX_SESSION_EVENTS = 200  # a session longer than the tower's history window adds nothing
MAX_EXCLUDE_IDS = 1_000
MAX_CATEGORIES = 50
MAX_TEXT = 500  # characters of a title or category name
MAX_QUANTITY = 10**9
MAX_ID = 2**63 - 1  # ids are int64 in Feast and Qdrant point ids
MAX_PRICE = 1e12  # a float64 feature and a Qdrant range bound: no real price is near it
# Times become pandas timestamps (nanoseconds in int64: 1677-09-21..2262-04-11) and Unix seconds:
# years 1678..2261 as written stay inside whatever the offset. The document says it as a pattern
# (days up to 28: every string it admits is a real date), the validator as the year.
MIN_YEAR, MAX_YEAR = 1678, 2261
TIME_PATTERN = (r"^(167[89]|16[89]\d|1[7-9]\d\d|2[01]\d\d|22[0-5]\d|226[01])"
                r"-(0[1-9]|1[0-2])-(0[1-9]|1\d|2[0-8])T([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,6})?"
                r"(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$")


def _in_time_range(value: datetime) -> datetime:
    if not MIN_YEAR <= value.year <= MAX_YEAR:
        raise ValueError(f"the year must be from {MIN_YEAR} to {MAX_YEAR}")
    return value


# An event is logged and trained on: it happened (a client's clock may run a little ahead of the
# service's) and in the years the data contract admits (feature_repo.datasets.contract.EARLIEST).
# One stamped far ahead would make every item's recent popularity expire in the feature tables.
MAX_CLOCK_SKEW = timedelta(minutes=5)
FIRST_EVENT_YEAR = 1990


def _happened(value: datetime) -> datetime:
    if value.year < FIRST_EVENT_YEAR:
        raise ValueError(f"an event before {FIRST_EVENT_YEAR} is outside the data contract")
    if value > datetime.now(UTC) + MAX_CLOCK_SKEW:
        raise ValueError(f"in the future (more than {MAX_CLOCK_SKEW.seconds // 60} minutes "
                         "after the service's clock): an event is stamped when it happened")
    return value


def _utf8(value: str) -> str:
    """Text is stored as UTF-8 (Feast protobufs, Qdrant payloads): lone surrogates cannot be."""
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise ValueError("must be valid Unicode text (no lone surrogates)") from exc
    return value


def _not_bool(value: object) -> object:
    """JSON true and false are no numbers (lax validation would read them as 1 and 0)."""
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    return value


# Bounds before the validator, so that they stay `minimum` and `maximum` in the OpenAPI document
ItemId = Annotated[int, Field(ge=0, le=MAX_ID, description="Catalogue item id (int64, >= 0)."),
                   BeforeValidator(_not_bool)]
UserId = Annotated[int, Field(ge=0, le=MAX_ID, description="User id (int64, >= 0)."),
                   BeforeValidator(_not_bool)]
Quantity = Annotated[int, Field(ge=0, le=MAX_QUANTITY), BeforeValidator(_not_bool)]
Text = Annotated[str, AfterValidator(_utf8)]
Category = Annotated[Text, Field(min_length=1, max_length=MAX_TEXT)]
Price = Annotated[float, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False), BeforeValidator(_not_bool)]
Time = Annotated[AwareDatetime, AfterValidator(_in_time_range),
                 WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIME_PATTERN}),
                 Field(description=f"With a time zone; years {MIN_YEAR} to {MAX_YEAR}.")]
EventTime = Annotated[Time, AfterValidator(_happened),
                      Field(description=f"With a time zone; from {FIRST_EVENT_YEAR} up to now.")]


class _Request(BaseModel):
    """What a client sends: an unknown field is a 422 naming it, never silently dropped."""

    model_config = ConfigDict(extra="forbid")


class _Answer(BaseModel):
    """What the service answers: a field a newer service adds is ignored, so an application's
    older client keeps working while the service is upgraded under it."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class Filters(_Request):
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


class SessionEvent(_Request):
    """An interaction of the current session not yet in the online store."""

    item_id: ItemId
    ts: EventTime | None = Field(None, description="When it happened; default: request time.")


class RecommendationRequest(_Request):
    user_id: UserId
    k: Annotated[int, Field(ge=1, le=MAX_K), BeforeValidator(_not_bool)] = 10
    filters: Filters = Field(default_factory=Filters)
    session: list[SessionEvent] = Field(default_factory=list, max_length=MAX_SESSION_EVENTS)


class Reasons(_Answer):
    retrieval_score: float = Field(description="Dot product of the user and item vectors.")
    ranker_score: float | None = Field(None, description="Re-ranker score; null in retrieval order.")
    new_item: bool = Field(False, description="In the last place kept for an item newer than the "
                                              "model, which its popularity prior cannot rank yet.")


class ScoredItem(_Answer):
    item_id: int
    score: float = Field(description="What the order follows: ranker score, else retrieval score.")
    reasons: Reasons


class Versioned(_Answer):
    """Every answer names the one model version and index version that produced it."""

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


class InteractionRequest(_Request):
    user_id: UserId
    item_id: ItemId
    ts: EventTime | None = Field(None, description="When it happened; default: now.")


class InteractionResponse(_Answer):
    user_id: int
    item_id: int
    ts: datetime
    history_length: int = Field(description="Items in the user's online history after this one.")


class StockUpdate(_Request):
    quantity: Quantity


class StockResponse(_Answer):
    item_id: int
    quantity: int
    indexed: bool = Field(True, description=(
        "Whether the live index version holds the item. False: the quantity is logged and in the "
        "online store, and reaches the index with the item (another worker's upsert, replayed "
        "shortly, or the next version built from the catalogue)."))


class ItemUpsert(_Request):
    """A new (or changed) item's content; it is embedded by the live item tower."""

    title: Text = Field(max_length=MAX_TEXT)
    categories: list[Category] = Field(default_factory=list, max_length=MAX_CATEGORIES)
    price: Price | None = None
    created_at: Time | None = Field(
        None, description="Release time; left out: unchanged (now for a new item).")
    stock: Quantity | None = Field(None,
                              description="Units in stock; left out: unchanged (0 for a new item).")


class ItemResponse(Versioned):
    item_id: int


class Dependency(_Answer):
    """One thing the service depends on (online store, index, registry) as a probe found it."""

    status: Literal["ok", "degraded"]
    reason: str | None = Field(None, description="What is wrong, when it is degraded.")


class Health(_Answer):
    """`unavailable` (503): requests cannot be answered; `degraded` (200): they are, but a
    dependency they do not wait on is not ok (the registry: no new versions; the features: of
    another dataset than the live model)."""

    status: Literal["ok", "degraded", "unavailable"]
    reason: str | None = Field(None, description="Why the service is not ok, when it is not.")
    ranking: str | None = Field(None, description="'ranker' or 'retrieval order: <reason>'.")
    dependencies: dict[str, Dependency] = Field(
        default_factory=dict, description="Each dependency by name: online_store, index, registry.")


class FieldError(_Answer):
    field: str = Field(description="Where: e.g. 'body.filters.min_price' or 'query.k'.")
    message: str


class ErrorResponse(_Answer):
    """The body of every error status."""

    detail: str = Field(description="What went wrong, in words (every bad field of a 422).")
    errors: list[FieldError] = Field(default_factory=list, description="A 422's fields, one each.")


class VersionInfo(_Answer):
    model_version: int
    index_version: int
    model_location: str
    index_location: str
    ranking: str = Field(description="'ranker' or 'retrieval order: <reason>'.")
    ranker_metrics: dict[str, float] = Field(default_factory=dict)
    loaded_at: datetime
    dataset: str | None = Field(None, description="Fingerprint of the dataset the model was trained "
                                "on; writes are logged against it.")
