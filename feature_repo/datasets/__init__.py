"""Datasets: load any supported source into the contract's four tables, chosen by a spec string.

Specs: `movielens-100k:PATH`, `movielens-1m:PATH`, `generic:PATH`, `synthetic:PRESET` or
`synthetic:items=1000,users=2000,events=50000,seed=0`.
"""

from __future__ import annotations

from feature_repo.datasets import generic, movielens, synthetic
from feature_repo.datasets.contract import DataError, Dataset

__all__ = ["DataError", "Dataset", "load"]


def load(spec: str) -> Dataset:
    """Load the dataset a spec names."""
    kind, _, arg = spec.partition(":")
    if kind == "movielens-100k":
        return movielens.load_100k(arg)
    if kind == "movielens-1m":
        return movielens.load_1m(arg)
    if kind == "generic":
        return generic.load(arg)
    if kind == "synthetic":
        if arg in synthetic.PRESETS:
            return synthetic.generate(synthetic.PRESETS[arg])
        try:
            fields = dict(part.split("=", 1) for part in arg.split(",") if part)
        except ValueError:
            raise ValueError(f"dataset spec {spec!r}: expected a preset "
                             f"({', '.join(synthetic.PRESETS)}) or key=value pairs") from None
        return synthetic.generate(synthetic.ShopConfig(**fields))
    raise ValueError(f"dataset spec {spec!r}: unknown kind {kind!r}; expected movielens-100k, "
                     "movielens-1m, generic or synthetic")
