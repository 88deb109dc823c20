"""Item feature views: content, stock and trailing popularity."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Float64, Int64, String

# `feast apply` imports each definitions file as a top-level module of the repository folder;
# the package's own code imports it as part of `feature_repo`.
if __package__:
    from .entities import WHEN_ABSENT, file_source, item
else:
    from entities import WHEN_ABSENT, file_source, item

item_content_source = file_source(
    "item_content",
    "One row per item, stamped 1970-01-01: content attributes have no history.")

item_content_fv = FeatureView(
    name="item_content", entities=[item], ttl=timedelta(0), source=item_content_source,
    schema=[
        Field(name="title", dtype=String, description="Display title."),
        Field(name="categories", dtype=Array(String), description="Categories or genres."),
        Field(name="price", dtype=Float64, description="Price in the shop's currency."),
        Field(name="created_at_s", dtype=Int64, description="Release time, Unix seconds."),
    ],
    description="What the item is: the item tower's content input, so new items embed.")

item_stock_source = file_source(
    "item_stock",
    "The stock log, each change stamped 1 microsecond after it happened.", daily=True)

item_stock_fv = FeatureView(
    name="item_stock", entities=[item], ttl=timedelta(0), source=item_stock_source,
    schema=[Field(name="quantity", dtype=Int64, description="Units in stock.")],
    description="Stock as known strictly before the lookup time.")

item_popularity_source = file_source(
    "item_popularity",
    "Daily rows stamped at midnight UTC, counting interactions on earlier days.", daily=True)

item_popularity_fv = FeatureView(
    name="item_popularity", entities=[item], ttl=timedelta(0), source=item_popularity_source,
    schema=[
        Field(name="count_1d", dtype=Int64, tags={WHEN_ABSENT: "0"},
              description="Interactions on the previous day."),
        Field(name="count_7d", dtype=Int64, tags={WHEN_ABSENT: "0"},
              description="Interactions in the previous 7 days."),
        Field(name="count_30d", dtype=Int64, tags={WHEN_ABSENT: "0"},
              description="Interactions in the previous 30 days."),
    ],
    description="Trailing popularity, complete days before the lookup time only; no row yet means "
                "no interactions yet (zero counts).")
