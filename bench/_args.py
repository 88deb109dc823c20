"""`--key=value` overrides of a benchmark's DEFAULTS, validated by a model typed by the defaults."""

from __future__ import annotations

from towers.config import model_of, parse_cli


def parse(argv: list[str], defaults: dict) -> dict:
    """DEFAULTS with the args applied; a bad value or unknown key exits naming it."""
    [config] = parse_cli(argv, model_of("BenchArgs", defaults)())
    return config.model_dump()
