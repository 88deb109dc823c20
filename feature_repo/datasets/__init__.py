"""Datasets: load any supported source into the contract's four tables, chosen by a spec string.

Specs: `movielens-100k:PATH`, `movielens-1m:PATH`, `generic:PATH`, `amazon-reviews:PATH[?kcore=N]`,
`synthetic:PRESET` or `synthetic:items=1000,users=2000,events=50000,seed=0`.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

from feature_repo.datasets import amazon, generic, movielens, synthetic
from feature_repo.datasets.contract import DataError, Dataset, collecting, fingerprint_of

__all__ = ["DataError", "Dataset", "check", "fingerprint", "identity", "load", "stamp"]

KINDS = ("movielens-100k", "movielens-1m", "generic", "amazon-reviews", "synthetic")


def identity(spec: str) -> str:
    """Where a spec's data comes from: the spec with its path resolved (`Dataset.identity`)."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        return spec
    path, _, query = arg.partition("?")
    return f"{kind}:{Path(path).resolve()}" + (f"?{query}" if query else "")


def fingerprint(spec: str) -> str:
    """The `Dataset.fingerprint` of what a spec loads, without loading it."""
    return fingerprint_of(identity(spec))


def stamp(spec: str) -> str:
    """Which version of its source a spec reads, without reading it (`Dataset.source_stamp`): the
    size and modification time of every file under its folder, or beside its file (a review file
    finds its catalogue there); a synthetic spec is its own."""
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        return spec
    path = Path(arg.partition("?")[0]).resolve()
    folder = path if path.is_dir() else path.parent
    files = sorted(folder.rglob("*") if path.is_dir() else folder.glob("*"))
    digest = hashlib.sha256(str(path).encode())
    for file in (f for f in files if f.is_file()):
        status = file.stat()
        digest.update(f"{file.relative_to(folder)}\0{status.st_size}\0{status.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def load(spec: str) -> Dataset:
    """Load the dataset a spec names, with its `identity` and its source's `stamp` (taken first, so
    a file changed while it is read gives the next load another stamp)."""
    source = {"identity": identity(spec), "source_stamp": stamp(spec)}
    kind, _, arg = spec.partition(":")
    if kind == "synthetic":
        if arg in synthetic.PRESETS:
            return replace(synthetic.generate(synthetic.PRESETS[arg]), **source)
        try:
            fields = dict(part.split("=", 1) for part in arg.split(",") if part)
        except ValueError:
            raise DataError(spec, f"expected a preset ({', '.join(synthetic.PRESETS)}) or "
                            "key=value pairs") from None
        return replace(synthetic.generate(synthetic.ShopConfig(**fields)), **source)
    path, _, query = arg.partition("?")
    options = dict(part.partition("=")[::2] for part in query.split("&") if part)
    kcore = options.pop("kcore", "0") if kind == "amazon-reviews" else "0"
    if options:
        raise DataError(spec, f"unknown option {sorted(options)[0]!r}")
    if not kcore.isdigit():
        raise DataError(spec, f"kcore={kcore!r} is not a whole number")
    if kind == "amazon-reviews":
        dataset = amazon.load(path, kcore=int(kcore))
    elif kind == "movielens-100k":
        dataset = movielens.load_100k(path)
    elif kind == "movielens-1m":
        dataset = movielens.load_1m(path)
    elif kind == "generic":
        dataset = generic.load(path)
    else:
        raise DataError(spec, f"unknown kind {kind!r}; expected {', '.join(KINDS)}")
    return replace(dataset, **source)


def check(spec: str) -> list[DataError]:
    """Every problem loading `spec` finds, instead of the first: `twotower data check`."""
    with collecting() as problems:
        try:
            load(spec)
        except DataError as error:  # a problem past which nothing more can be checked
            if error not in problems:
                problems.append(error)
    return problems
