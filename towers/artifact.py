"""The trained-model artifact: weights, configs, vocabularies, metrics and a data fingerprint.

An artifact is a directory with `artifact.json` and `weights.pt`. Loading it needs only
`model.py`, `data.py` and `prior.py`, never the training loop: `Artifact.load(path).embed_users(frame)`.
Its vectors are the served ones: with a popularity prior (`prior.py`) they carry one more coordinate.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from feature_repo.files import atomic_path, atomic_write
from towers.data import Vocab, encode_items, encode_users
from towers.model import TowerConfig, TwoTower
from towers.prior import PopularityPrior

ARTIFACT_VERSION = 3  # bump when the saved layout or the meaning of a field changes (3: the prior)
EMBED_BATCH = 1024  # rows per forward pass when embedding
# Inputs added after artifacts of this version were first written: absent from a config means off.
ABSENT_INPUTS = {"item_popularity": False, "use_query_gap": False}
# Version 1 held torch's nn.TransformerEncoder; version 2 its own `model.Block`: weight renames.
V1_NAMES = {"blocks.layers.": "blocks.", "self_attn.in_proj_weight": "qkv.weight",
            "self_attn.in_proj_bias": "qkv.bias", "self_attn.out_proj.": "proj.",
            "linear1.": "mlp.0.", "linear2.": "mlp.3."}

log = logging.getLogger(__name__)


def fingerprint(interactions: pd.DataFrame, items: pd.DataFrame) -> str:
    """sha256 over the training events and the catalogue ids, to tie an artifact to its data."""
    digest = hashlib.sha256()
    digest.update(interactions[["user_id", "item_id"]].to_numpy(dtype=np.int64).tobytes())
    digest.update(interactions["event_timestamp"].astype("int64").to_numpy().tobytes())
    digest.update(np.sort(items["item_id"].to_numpy(dtype=np.int64)).tobytes())
    return digest.hexdigest()


def upgrade_v1(name: str) -> str:
    """A version-1 weight's name in version 2."""
    if ".encoder.blocks.layers." in name:
        for old, new in V1_NAMES.items():
            name = name.replace(old, new)
    return name


@dataclass
class Artifact:
    model: TwoTower
    metrics: dict = field(default_factory=dict)
    fingerprint: str = ""
    train_config: dict = field(default_factory=dict)
    version: int = ARTIFACT_VERSION
    prior: PopularityPrior = field(default_factory=PopularityPrior.off)  # added to the score

    @property
    def config(self) -> TowerConfig:
        return self.model.config

    @property
    def dim(self) -> int:
        """Coordinates of the served vectors: the towers' and the prior's."""
        return self.config.dim + self.prior.extra_dims

    @torch.no_grad()
    def embed_users(self, frame: pd.DataFrame) -> np.ndarray:
        """(U, dim) vectors for a Feast-shaped user frame (see `data.USER_COLUMNS`)."""
        self.model.eval()
        out = [self.model.users(encode_users(self.model.vocab, frame.iloc[i:i + EMBED_BATCH],
                                             self.config.max_len))
               for i in range(0, len(frame), EMBED_BATCH)]
        vectors = torch.cat(out).numpy() if out else np.zeros((0, self.config.dim), np.float32)
        return self.prior.users(vectors)

    @torch.no_grad()
    def embed_items(self, items: pd.DataFrame) -> np.ndarray:
        """(N, dim) vectors for an items frame; unseen items are embedded from content alone."""
        self.model.eval()
        out = [self.model.item_tower(encode_items(self.model.vocab, items.iloc[i:i + EMBED_BATCH]))
               for i in range(0, len(items), EMBED_BATCH)]
        vectors = torch.cat(out).numpy() if out else np.zeros((0, self.config.dim), np.float32)
        return self.prior.items(vectors, self.model.vocab.item_index(items["item_id"].to_numpy()))

    def save(self, path: str | Path) -> Path:
        """Write the weights, then `artifact.json` (what `load` looks for), each atomically."""
        path = Path(path)
        with atomic_path(path / "weights.pt") as tmp:
            torch.save(self.model.state_dict(), tmp)
        meta = {"version": self.version, "tower_config": self.config.model_dump(),
                "train_config": self.train_config, "vocab": self.model.vocab.to_dict(),
                "metrics": self.metrics, "fingerprint": self.fingerprint,
                "popularity_prior": self.prior.to_dict()}
        atomic_write(path / "artifact.json", json.dumps(meta, indent=1))
        log.info("saved artifact to %s", path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Artifact:
        path = Path(path)
        meta_path = path / "artifact.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not an artifact (no artifact.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("version") not in range(1, ARTIFACT_VERSION + 1):
            raise ValueError(f"{meta_path}: artifact version {meta.get('version')}, this code "
                             f"reads versions 1 to {ARTIFACT_VERSION}")
        state = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
        if meta["version"] == 1:
            state = {upgrade_v1(name): value for name, value in state.items()}
        content = {k.removeprefix("item_tower.known_"): v for k, v in state.items()
                   if k.startswith("item_tower.known_")}
        saved = meta["tower_config"]
        # Attention dropout was `dropout` until it became a setting of its own.
        config = TowerConfig(**{**ABSENT_INPUTS, "attention_dropout": saved.get("dropout", 0.0),
                                **saved})
        model = TwoTower(config, Vocab(**meta["vocab"]), content)
        model.load_state_dict(state)
        model.eval()
        prior = meta.get("popularity_prior")  # absent before the prior existed: off
        return cls(model, meta["metrics"], meta["fingerprint"], meta["train_config"],
                   prior=PopularityPrior.from_dict(prior) if prior else PopularityPrior.off())
