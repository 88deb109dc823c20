"""`--key=value` overrides of a benchmark's DEFAULTS, each converted to its default's type."""

from __future__ import annotations

BOOLEANS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _convert(value: str, default: object) -> object:
    if isinstance(default, bool):  # bool("0") would be True
        return BOOLEANS[value.lower()]
    return type(default)(value)


def parse(argv: list[str], defaults: dict) -> dict:
    config = dict(defaults)
    for arg in argv:
        key, sep, value = arg.removeprefix("--").partition("=")
        key = key.replace("-", "_")
        if not arg.startswith("--") or not sep or key not in defaults:
            raise SystemExit(f"unknown argument {arg!r}; choose from {sorted(defaults)}")
        try:
            config[key] = _convert(value, defaults[key])
        except (KeyError, ValueError) as exc:
            raise SystemExit(f"--{key}={value!r}: expected {type(defaults[key]).__name__}") from exc
    return config
