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
    assert status == ("retrieval order: the re-ranker does not improve NDCG@10 beyond the held-out "
                      "window's noise (0.1200 vs 0.1000 over 400 users; the gain's lower bound is "
                      "-0.0123)")
    ranker.improves = True
    ranker.save(tmp_path / "another" / "ranker")  # another model version's
    assert load_ranker(str(tmp_path / "another"))[1] == "ranker"
    assert load_ranker(str(tmp_path / "missing"))[1] == \
        "retrieval order: no re-ranker trained for this model version"


def test_a_ranker_judged_before_the_noise_gate_is_not_served_until_retrained(tmp_path):
    """A ranker saved by an earlier version said `improves` when its mean gain was above 0 at all."""
    ranker = improving_ranker(candidates=10)
    del ranker.metrics["ndcg10_gain_low"]
    ranker.save(tmp_path / "ranker")
    loaded, status = load_ranker(str(tmp_path))
    assert loaded is None and "judged before its gain had to clear" in status and "retrain" in status
