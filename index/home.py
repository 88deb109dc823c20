"""A home (data directory) knows its dataset: one home, one dataset, unless told to replace it.

The feature tables carry their dataset's fingerprint (`feature_repo.tables.dataset_record`) and a
model version its training data's (`config["fingerprint"]`). Writing another dataset's features
into a home whose live model was trained on the first is refused; the service reports `degraded`
while the online features and the live model disagree.
"""

from __future__ import annotations

from pathlib import Path

from feature_repo.datasets import Dataset
from feature_repo.tables import dataset_record
from index.registry import Registry

FINGERPRINT = "fingerprint"  # the model version config key holding its dataset's fingerprint


class HomeError(ValueError):
    """Another dataset's features would overwrite the ones a live model serves."""


def live_fingerprint(registry: Registry) -> tuple[int, str | None] | None:
    """(model version id, its dataset fingerprint) of the live index version; None: none live."""
    live = registry.live()
    if live is None:
        return None
    model = registry.get_model(live.model_version_id)
    return model.id, (model.config or {}).get(FINGERPRINT)


def check_home(registry: Registry, data_dir: Path, dataset: Dataset, *, replace: bool) -> None:
    """Refuse to write `dataset`'s features into `data_dir` (the feature tables' folder) when a
    live model serves another dataset's, unless `replace`."""
    if replace:
        return
    live = live_fingerprint(registry)
    if live is None:
        return
    record = dataset_record(data_dir) or {}
    current = live[1] or record.get(FINGERPRINT)
    if current is None or current == dataset.fingerprint:
        return
    name = record.get("name") if record.get(FINGERPRINT) == current else None
    home = data_dir.parents[1] if data_dir.name == "data" else data_dir
    raise HomeError(
        f"{home} serves model version {live[0]} trained on another dataset "
        f"({name or 'fingerprint ' + current}); refusing to write {dataset.name} "
        f"(fingerprint {dataset.fingerprint}) over its features. Use a new --home for "
        f"{dataset.name}, or --replace to overwrite (the service then reports 'degraded' until a "
        "model of the new dataset is promoted, and the writes it logged for the old one stay in "
        "the event log, out of the new one's training; a moved dataset folder counts as another "
        "dataset)")
