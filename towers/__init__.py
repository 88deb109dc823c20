"""Two-tower retrieval model: towers, batches, training loop, artifact and offline evaluation.

Read in order: `model.py` (config, `UserTower`, `ItemTower`, scoring), `encoders/` (the towers'
pluggable encoders: the registry, GraphSAGE over `graph.py`'s point-in-time interaction graph),
`data.py` (vocabularies, batches and negatives from Feast frames), `features.py` (the Feast
lookups that feed them), `train.py` (the loop), `artifact.py` (save, load, embed), `evaluate.py`
(splits, metrics, harness), `baselines.py` (Popularity, EASE), `lightgcn.py` (the LightGCN
anchor), `cold_start.py` (the held-out-items report) and `ranker/` (the LambdaMART re-ranker:
features, model, training).
"""
