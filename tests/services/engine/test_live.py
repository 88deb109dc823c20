"""The live version's re-ranker status: used only when it beats retrieval order, else why not."""

from __future__ import annotations

from services.engine import load_ranker
from tests.services.conftest import improving_ranker


def test_ranker_that_does_not_improve_leaves_retrieval_order_and_says_why(tmp_path):
    ranker = improving_ranker(candidates=10)
    ranker.improves = False
    ranker.metrics["ndcg10_gain_low"] = -0.0123
    ranker.save(tmp_path / "ranker")
    loaded, status = load_ranker(str(tmp_path))
    assert loaded is None
    assert status == ("retrieval order: the re-ranker does not improve NDCG@10 on the held-out "
                      "window (0.12 vs 0.1; the gain's lower bound is -0.0123)")
    assert load_ranker(str(tmp_path / "missing"))[1] == \
        "retrieval order: no re-ranker trained for this model version"
