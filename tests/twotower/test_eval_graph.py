"""`twotower eval` with the graph models: LightGCN beside the baselines, the GraphSAGE item encoder."""

from __future__ import annotations

import json

import pytest

from twotower.cli import main

SPEC = "synthetic:items=150,users=120,events=4000,seed=4"


@pytest.mark.parametrize("protocol", ["loo", "temporal"])
def test_lightgcn_eval_tunes_on_validation_and_beats_popularity(protocol, tmp_path):
    out = {}
    for model in ("lightgcn", "popularity"):
        out[model] = tmp_path / f"{model}.json"
        main(["eval", "--data", SPEC, "--protocol", protocol, "--model", model,
              "--json", str(out[model])])
    result, popularity = (json.loads(out[m].read_text()) for m in ("lightgcn", "popularity"))
    training = result["training"]
    assert training["picked"] in {"softmax reg=0.0001", "bpr reg=0.0001"}
    assert training["epochs"] >= 1 and 0 < training["val"] <= 1
    assert ("refit_seconds" in training) == (protocol == "temporal")  # LOO keeps the tuned model
    assert result["NDCG@10"] > popularity["NDCG@10"]


def test_an_unknown_item_encoder_is_refused_naming_the_registered_ones(capsys):
    with pytest.raises(SystemExit, match=r"twotower eval: item_encoder='gat'.*'sage'"):
        main(["eval", "--data", SPEC, "--item-encoder", "gat"])
