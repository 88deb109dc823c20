"""A deterministic stock simulation for datasets that have none (MovieLens, the synthetic shop).

Each item has a capacity C and a restock period P (days), drawn from a seeded generator. At the start
of every period the item is restocked to C; each interaction in the period takes one unit while any
is left, so popular items run out and come back at the next restock. The log holds one row per
change: every restock at the start of a period that has events or follows one (one due after the
last interaction stamped just after it), and every sale.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from feature_repo.datasets.contract import DAY, TIMESTAMP

CAPACITY = (3, 40)  # units per restock: small enough that popular items run out
PERIOD_DAYS = (3, 21)  # days between restocks


def stock_plan(item_ids: np.ndarray, *, seed: int) -> pd.DataFrame:
    """Capacity and restock period per item, a pure function of the catalogue's ids and the seed
    (drawn in id order: a new item changes other items' draws)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(item_ids, kind="stable")
    capacity = rng.integers(*CAPACITY, size=len(item_ids), endpoint=True)
    period = rng.integers(*PERIOD_DAYS, size=len(item_ids), endpoint=True)
    plan = pd.DataFrame({"item_id": np.asarray(item_ids)[order], "capacity": capacity,
                         "period_days": period})
    return plan


def _sales_rank(interactions: pd.DataFrame, plan: pd.DataFrame, origin: pd.Timestamp) -> pd.DataFrame:
    """Each interaction's restock period and its rank among the item's sales in that period.

    The result is indexed by the interaction's position.
    """
    events = interactions[["item_id", "event_timestamp"]].reset_index(drop=True).merge(
        plan, on="item_id", how="left")
    days = (events["event_timestamp"] - origin) / pd.Timedelta(seconds=DAY)
    events["period"] = np.floor(days / events["period_days"]).astype("int64")
    events = events.sort_values(["item_id", "event_timestamp"], kind="stable")
    events["rank"] = events.groupby(["item_id", "period"]).cumcount()
    return events


def simulate_stock(interactions: pd.DataFrame, items: pd.DataFrame, *, seed: int = 7) -> pd.DataFrame:
    """The stock log (item_id, event_timestamp, quantity) implied by the interactions."""
    return simulate_sales(interactions, items, seed=seed)[1]


def simulate_sales(interactions: pd.DataFrame, items: pd.DataFrame, *,
                   seed: int = 7) -> tuple[np.ndarray, pd.DataFrame]:
    """Which interactions the stock could serve (a mask by position) and the stock log.

    Every period's first sale is served, so dropping the unserved interactions leaves the log as it is.
    """
    origin = interactions["event_timestamp"].min().floor("D")
    plan = stock_plan(items["item_id"].to_numpy(), seed=seed)
    events = _sales_rank(interactions, plan, origin)
    served = (events["rank"] < events["capacity"]).sort_index().to_numpy()
    sales = events[events["rank"] < events["capacity"]]
    sold = pd.DataFrame({"item_id": sales["item_id"], "event_timestamp": sales["event_timestamp"],
                         "quantity": sales["capacity"] - sales["rank"] - 1})
    periods = events[["item_id", "period", "capacity", "period_days"]].drop_duplicates(
        ["item_id", "period"])
    restocks = pd.concat([periods, periods.assign(period=periods["period"] + 1)]).drop_duplicates(
        ["item_id", "period"])
    restocks = pd.DataFrame({
        "item_id": restocks["item_id"],
        "event_timestamp": origin + pd.to_timedelta(restocks["period"] * restocks["period_days"],
                                                    unit="D"),
        "quantity": restocks["capacity"]})
    # A restock due after the data ends is stamped just after its last interaction: for data that
    # runs up to today it would lie in the future and outdate every quantity written until then
    end = interactions["event_timestamp"].max() + pd.Timedelta(microseconds=1)
    restocks["event_timestamp"] = restocks["event_timestamp"].clip(upper=end)
    # Items never interacted with are stocked once at the origin.
    idle = plan[~plan["item_id"].isin(periods["item_id"])]
    idle = pd.DataFrame({"item_id": idle["item_id"], "event_timestamp": origin,
                         "quantity": idle["capacity"]})
    log = pd.concat([restocks, sold, idle], ignore_index=True)
    log["event_timestamp"] = log["event_timestamp"].astype(TIMESTAMP)
    # A restock and a sale can share an instant only at a period's first second: the sale is later.
    log["order"] = np.r_[np.zeros(len(restocks)), np.ones(len(sold)), np.zeros(len(idle))]
    log = log.sort_values(["item_id", "event_timestamp", "order"], kind="stable")
    return served, log.drop(columns="order").astype({"quantity": "int64"}).reset_index(drop=True)
