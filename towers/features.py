"""The towers' one source of user features: Feast point-in-time lookups over a dataset's store.

Training rows (`examples`) and evaluation queries (`with_features`) both come from
`feature_repo.store.training_frame`, i.e. Feast's `get_historical_features`, over a store built
from the dataset with `history_length` equal to the model's `max_len` (what serving fetches).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from feature_repo.datasets import Dataset
from feature_repo.store import (
    ENTITY_COLUMNS,
    ONLINE_SERVICE,
    FeatureStoreConfig,
    build_store,
    example_entities,
    training_frame,
)
from towers.evaluate import Queries, Split


def feature_store(dataset: Dataset, max_len: int, home: str | Path):  # -> feast.FeatureStore
    """A Feast store of the dataset under `home`, its histories `max_len` events long."""
    config = FeatureStoreConfig(repo_dir=Path(home) / "feature_repo", history_length=max_len)
    return build_store(dataset, config)


def examples(store, events: pd.DataFrame) -> pd.DataFrame:
    """The training frame of `events`: each row's features strictly before its time, in order, with
    the events' `weight` (a rating, say: the liked head's label) where they have one."""
    return training_frame(store, example_entities(events))


def query_features(store, queries: Queries) -> Queries:
    """The queries with their Feast user features (profile and history at the lookup time).

    When the protocol shows a query fewer events than the lookup instant holds (`visible`: LOO's
    same-second ties in file order), the lookup's newest events beyond that count are dropped.
    """
    frame = training_frame(store, queries.frame[ENTITY_COLUMNS], feature_service=ONLINE_SERVICE)
    if queries.visible is not None:
        hidden = frame["event_count"].to_numpy() - queries.visible
        if (hidden < 0).any():
            row = int(np.flatnonzero(hidden < 0)[0])
            raise ValueError(f"query {row} (user {frame['user_id'].iloc[row]}): the store holds "
                             "fewer events than the split shows; was it built from other data?")
        keep = [len(h) - n for h, n in zip(frame["recent_item_ids"], hidden, strict=True)]
        for column in ("recent_item_ids", "recent_timestamps"):
            frame[column] = [h[:max(k, 0)] for h, k in zip(frame[column], keep, strict=True)]
        frame["event_count"] = queries.visible
    return dataclasses.replace(queries, frame=frame)


def with_features(split: Split, store) -> Split:
    """The split with Feast user features on its validation and test queries."""
    return dataclasses.replace(split, validation=query_features(store, split.validation),
                               test=query_features(store, split.test))
