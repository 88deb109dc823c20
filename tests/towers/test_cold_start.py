"""Cold-start report parts: held-out items, one query per interaction, point-in-time popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from towers.cold_start import cold_items, cold_queries, popularity_before


def _events(rows: list[tuple[int, int, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "event_timestamp": pd.to_datetime([r[2] for r in rows], unit="s",
                                                           utc=True).astype("datetime64[us, UTC]")})


def test_cold_items_are_a_seeded_tenth_of_the_interacted_items():
    events = _events([(1, i, i) for i in range(100, 150)])
    cold = cold_items(events)
    assert len(cold) == 5 and set(cold) <= set(range(100, 150))
    assert cold.tolist() == cold_items(events).tolist()
    assert cold.tolist() != cold_items(events, seed=1).tolist()


def test_each_cold_interaction_is_a_query_excluding_the_users_earlier_cold_items():
    events = _events([(1, 7, 30), (1, 5, 10), (1, 2, 20), (2, 7, 5), (1, 9, 40), (1, 5, 50)])
    queries = cold_queries(events, np.array([5, 7, 9]))
    assert queries.frame["user_id"].tolist() == [1, 1, 1, 2]  # user 1's second 5 is no query
    assert [t.tolist() for t in queries.targets] == [[5], [7], [9], [7]]
    assert [e.tolist() for e in queries.exclude] == [[], [5], [5, 7], []]


def test_popularity_counts_only_interactions_strictly_before_the_query():
    events = _events([(1, 5, 10), (2, 5, 20), (3, 7, 15), (4, 7, 16), (5, 7, 30), (6, 9, 50)])
    recommend = popularity_before(events, np.array([5, 7, 9]))
    frame = _events([(9, 0, 12), (9, 0, 20), (9, 0, 40)])
    ranked = recommend(frame, 3, [np.array([])] * 3)
    # at 12 only item 5 has an event; at 20 item 7 has two and 5's same-second event does not
    # count yet; at 40 item 7 leads 3 to 2
    assert ranked.tolist() == [[5, 7, 9], [7, 5, 9], [7, 5, 9]]


def test_report_ranks_through_the_retrieval_served_for_the_held_out_items_only(tmp_path):
    from feature_repo.datasets import load
    from towers.cold_start import report
    from towers.evaluate import dense_retrieval
    from towers.model import TowerConfig
    from towers.train import TrainConfig

    dataset = load("synthetic:items=150,users=80,events=2000,seed=3")
    served = []

    def serve(artifact, items):
        served.append(items["item_id"].tolist())
        ids = items["item_id"].to_numpy()
        retrieve = dense_retrieval(ids, artifact.embed_items(items))
        return lambda vectors, k, exclude: retrieve(vectors, k, exclude)[:, ::-1]  # worst first

    result = report(dataset, tmp_path, tower=TowerConfig(dim=16), serve=serve,
                    train=TrainConfig(epochs=1, batch_size=64))
    assert served == [cold_items(dataset.interactions).tolist()]
    dense = report(dataset, tmp_path / "dense", tower=TowerConfig(dim=16),
                   train=TrainConfig(epochs=1, batch_size=64))
    assert result["two-tower"]["ndcg@10"] != dense["two-tower"]["ndcg@10"]  # its ranking, used
