"""User feature views: the static profile, the point-in-time recent history, and every item seen
(what the service leaves out)."""

from datetime import timedelta

from feast import FeatureView, Field
from feast.types import Array, Int64, String

# `feast apply` imports each definitions file as a top-level module of the repository folder;
# the package's own code imports it as part of `feature_repo`.
if __package__:
    from .entities import WHEN_ABSENT, file_source, user
else:
    from entities import WHEN_ABSENT, file_source, user

user_profile_source = file_source(
    "user_profile",
    "One row per user, stamped 1970-01-01: a profile has no history.")

user_profile_fv = FeatureView(
    name="user_profile", entities=[user], ttl=timedelta(0), source=user_profile_source,
    schema=[
        Field(name="age", dtype=Int64, description="Age in years; null when unknown."),
        Field(name="profile_tokens", dtype=Array(String),
              description="Categorical attributes as 'name=value' tokens, e.g. 'gender=F'."),
    ],
    description="What the user told us about themselves.")

user_history_source = file_source(
    "user_history",
    "A snapshot after each instant with events, stamped 1 microsecond after it, so a "
                "lookup at t sees exactly the events strictly before t.", daily=True)

user_history_fv = FeatureView(
    name="user_history", entities=[user], ttl=timedelta(0), source=user_history_source,
    schema=[
        Field(name="recent_item_ids", dtype=Array(Int64), tags={WHEN_ABSENT: "[]"},
              description="The last N items the user interacted with, oldest first."),
        Field(name="recent_timestamps", dtype=Array(Int64), tags={WHEN_ABSENT: "[]"},
              description="Unix seconds of those interactions, aligned with recent_item_ids."),
        Field(name="event_count", dtype=Int64, tags={WHEN_ABSENT: "0"},
              description="All interactions so far."),
    ],
    description="The user's recent interactions as known strictly before the lookup time; no row "
                "before it means no interactions yet (empty history, zero count).")

user_seen_source = file_source(
    "user_seen",
    "One row per user with events, stamped 1 microsecond after their last event: a lookup before "
    "it finds none.")

user_seen_fv = FeatureView(
    name="user_seen", entities=[user], ttl=timedelta(0), source=user_seen_source,
    schema=[
        Field(name="seen_item_ids", dtype=Array(Int64), tags={WHEN_ABSENT: "[]"},
              description="Every item the user interacted with, ascending."),
    ],
    description="What the service leaves out of a user's recommendations: the whole history, not "
                "only its last N items. Served only: training reads user_history.")
