"""Configs as pydantic models, set from `--key=value` arguments, TOML presets or dicts.

One parser for every entry point (`towers.train`, `towers.evaluate`, the bench scripts, the
Dagster training asset): each key goes to the one config that has that field and the model
validates the value, so `--use_user_id=ture` is an error naming the key and the value, not False,
and an unknown key is an error listing the valid ones. `--preset=FILE` (where a config has a
`preset` field) reads a TOML file of the same keys; the other arguments override it.
"""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

C = TypeVar("C", bound=BaseModel)
Count = Annotated[int, Field(ge=1)]  # sizes, counts, steps
Share = Annotated[float, Field(ge=0, lt=1)]  # dropout rates: 1 would drop everything
Fraction = Annotated[float, Field(ge=0, le=1)]  # a share that may be all


class ConfigError(ValueError):
    """A key no config has, or a value its config refuses."""


class Config(BaseModel):
    """Base of every config: unknown fields are errors and assignments are validated too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def model_of(name: str, defaults: Mapping[str, Any]) -> type[Config]:
    """A config class with one field per key, typed by its default (a bench script's DEFAULTS).

    A key may reuse the name of one of BaseModel's deprecated methods (`--json=FILE`): the field
    is what the script reads, so pydantic's shadowing warning is not shown."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Field name .* shadows an attribute", category=UserWarning)
        return create_model(name, __base__=Config, **{k: (type(v), v) for k, v in defaults.items()})


def split_args(argv: Sequence[str]) -> dict[str, str]:
    """`--key=value` arguments as {key: value}; dashes in keys read as underscores."""
    values = {}
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        if not arg.startswith("--") or not sep or not key:
            raise ConfigError(f"{arg!r}: expected --key=value")
        values[key.replace("-", "_")] = value
    return values


def override(configs: Sequence[C], values: Mapping[str, Any]) -> list[C]:
    """New, validated copies of `configs` with `values` set, each key on the config that has it."""
    owner = {name: i for i in reversed(range(len(configs)))
             for name in type(configs[i]).model_fields}
    for key in values:
        if key not in owner:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(sorted(owner))}")
    result = []
    for i, config in enumerate(configs):
        mine = {k: v for k, v in values.items() if owner[k] == i}
        try:
            result.append(type(config).model_validate({**config.model_dump(), **mine}))
        except ValidationError as exc:
            raise ConfigError(_describe(type(config).__name__, exc)) from None
    return result


def load_preset(path: str | Path) -> dict[str, Any]:
    """A TOML preset: config keys and their values (towers/configs/)."""
    return tomllib.loads(Path(path).read_text())


def parse(argv: Sequence[str], *configs: C) -> list[C]:
    """`configs` with a `--preset=FILE` and then the other `--key=value` args applied."""
    args = split_args(argv)
    return override(configs, {**(load_preset(args["preset"]) if args.get("preset") else {}),
                              **args})


def parse_cli(argv: Sequence[str], *configs: C) -> list[C]:
    """`parse` for a command line: a refused argument exits with its message, no traceback."""
    try:
        return parse(argv, *configs)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None


def _describe(name: str, exc: ValidationError) -> str:
    """One line per refused value: the key, the value and why (or the model's own message)."""
    lines = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            lines.append(f"{error['loc'][0]}={error['input']!r}: {message}")
        else:  # a check across fields: its message names them
            lines.append(f"{name}: {message}")
    return "; ".join(lines)
