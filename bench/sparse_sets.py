"""Benchmark data: a small catalogue cut reproducibly from MovieLens-100K, as a `generic:` folder.

    twotower bench sparse_sets --out=/tmp/ml100k-300x150                # dense: every event kept
    twotower bench sparse_sets --out=/tmp/ml100k-300x150-sparse --keep=0.15
    twotower eval --data generic:/tmp/ml100k-300x150-sparse --model two-tower

The `users` most active users x the `items` most rated items, optionally a seeded share `keep` of
those events (small shops' catalogues are that sparse), then the `core`-core: users and items with
fewer than `core` events are dropped until none is left. Items, users and the stock log stay
MovieLens' own rows for what remains. Prints one line: events, users, items, density.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from bench._args import parse  # noqa: E402 (after the path insert)

# out: the folder written (outside the repository: MovieLens must not be copied into it).
DEFAULTS = {"data": "movielens-100k:../shared/datasets/ml-100k", "out": "/tmp/ml100k-300x150",
            "users": 300, "items": 150, "keep": 1.0, "core": 5, "seed": 0}


def main() -> None:
    from feature_repo.datasets import load

    config = parse(sys.argv[1:], DEFAULTS)
    ds = load(config["data"])
    events = ds.interactions
    users = events["user_id"].value_counts(sort=True).index[:config["users"]]
    items = events["item_id"].value_counts(sort=True).index[:config["items"]]
    events = events[events["user_id"].isin(users) & events["item_id"].isin(items)]
    rng = np.random.default_rng(config["seed"])
    events = events[rng.random(len(events)) < config["keep"]]
    while True:  # the core: drop sparse users and items until every one has `core` events
        user_n = events.groupby("user_id")["item_id"].transform("size")
        item_n = events.groupby("item_id")["user_id"].transform("size")
        kept = (user_n >= config["core"]) & (item_n >= config["core"])
        if kept.all():
            break
        events = events[kept]
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    events.to_parquet(out / "interactions.parquet", index=False)
    items = ds.items[ds.items["item_id"].isin(events["item_id"])]
    items.assign(categories=items["categories"].map("|".join)).to_parquet(  # the loader's form
        out / "items.parquet", index=False)
    ds.users[ds.users["user_id"].isin(events["user_id"])].to_parquet(out / "users.parquet",
                                                                     index=False)
    ds.stock[ds.stock["item_id"].isin(events["item_id"])].to_parquet(out / "stock.parquet",
                                                                     index=False)
    n_users, n_items = events["user_id"].nunique(), events["item_id"].nunique()
    print(json.dumps({**config, "events": len(events), "n_users": n_users,
                      "n_items": n_items, "density": round(len(events) / (n_users * n_items), 4)}))


if __name__ == "__main__":
    main()
