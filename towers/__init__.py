"""Two-tower retrieval model: towers, batches, training loop, artifact and offline evaluation.

Read in order: `model.py` (config, `UserTower`, `ItemTower`, scoring), `data.py` (frames, vocabularies,
batches and negatives), `train.py` (the loop), `artifact.py` (save, load, embed), `evaluate.py`
(splits, metrics, harness) and `baselines.py` (Popularity, EASE).
"""
