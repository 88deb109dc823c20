"""`--key=value` overrides of a benchmark's DEFAULTS, each converted to its default's type."""

from __future__ import annotations


def parse(argv: list[str], defaults: dict) -> dict:
    config = dict(defaults)
    for arg in argv:
        key, _, value = arg.removeprefix("--").partition("=")
        if key not in config:
            raise SystemExit(f"unknown option --{key}; choose from {sorted(config)}")
        config[key] = type(defaults[key])(value)
    return config
