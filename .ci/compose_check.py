"""Validate docker-compose.yml without a Docker engine: `python .ci/compose_check.py [FILE] [ENV_EXAMPLE]`.

Checks what the stack promises: every service with its ports, volumes and a health check; image
tags pinned to exact versions; the service and Dagster started only once their stores are
healthy; a three-node Qdrant cluster profile; secrets only as `${VAR}` references that
`.env.example` lists; `TWOTOWER_*` names that the service's `Settings` knows; and every env var
deploy/dagster.yaml reads set for Dagster.
`make compose-config` runs it; tests/deploy/test_compose.py imports it from its path.
"""

from __future__ import annotations

import re
import sys
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
SECRET_KEY = re.compile(r"PASSWORD|SECRET|API_KEY|TOKEN", re.IGNORECASE)
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:([^@\s]+)@")  # scheme://user:PASSWORD@host
INLINE_PASSWORD = re.compile(r"password=([^,\s]+)", re.IGNORECASE)  # Feast's redis string
DEFAULT = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):-([^}]*)\}")  # ${VAR:-default}
# An exact release: major.minor.patch (redis:7.4.5, qdrant:v1.19.0), or major.minor for PostgreSQL,
# whose releases have two parts (postgres:16.9); a suffix such as -slim may follow.
EXACT_TAG = re.compile(r"(:v?\d+\.\d+\.\d+|^postgres:\d+\.\d+)(-[A-Za-z0-9.]+)?$")
STORES = ("postgres", "redis", "qdrant")
CLUSTER = ("qdrant-node1", "qdrant-node2", "qdrant-node3")
DAGSTER = ("dagster-webserver", "dagster-daemon")


@dataclass(frozen=True)
class Need:
    """What one service must have: published container ports and volume mount points."""

    ports: tuple[int, ...] = ()
    mounts: tuple[str, ...] = ()
    needs_stores: bool = False  # starts only after PostgreSQL, Redis and Qdrant are healthy


SERVICES = {
    "qdrant": Need(ports=(6333, 6334), mounts=("/qdrant/storage",)),
    "redis": Need(ports=(6379,), mounts=("/data",)),
    "postgres": Need(ports=(5432,), mounts=("/var/lib/postgresql/data",)),
    "dagster-webserver": Need(ports=(3000,), mounts=("/data", "/opt/dagster/home/dagster.yaml"),
                              needs_stores=True),
    "dagster-daemon": Need(mounts=("/data", "/opt/dagster/home/dagster.yaml"), needs_stores=True),
    "api": Need(ports=(8000,), mounts=("/data",), needs_stores=True),
    **{node: Need(mounts=("/qdrant/storage",)) for node in CLUSTER},
}


def container_port(mapping: str | int | dict) -> int:
    """The container side of a `ports:` entry ("127.0.0.1:6379:6379", "8000", or long syntax)."""
    if isinstance(mapping, dict):
        return int(mapping["target"])
    return int(str(mapping).split(":")[-1].split("/")[0])


def _environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _mounts(service: dict) -> dict[str, str]:
    """Mount point -> source of each volume entry."""
    mounts = {}
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts[entry["target"]] = entry.get("source", "")
        else:
            source, _, rest = str(entry).partition(":")
            mounts[rest.split(":")[0]] = source
    return mounts


def check(compose: dict, env_example: str, settings_fields: set[str] | None = None,
          dagster_env: set[str] | None = None, pipeline_fields: set[str] | None = None) -> list[str]:
    """Every way `compose` falls short of the stack, as readable problems (empty when it is fine).

    Args:
        env_example: the text of `.env.example`.
        settings_fields: env names the service's Settings reads; None skips that check.
        dagster_env: env names deploy/dagster.yaml reads; None skips that check.
        pipeline_fields: env names the pipelines' PipelineSettings reads; None skips that check.
    """
    problems: list[str] = []
    services = compose.get("services") or {}
    declared_volumes = set((compose.get("volumes") or {}).keys())
    for name, need in SERVICES.items():
        service = services.get(name)
        if service is None:
            problems.append(f"services.{name}: missing")
            continue
        if not (service.get("healthcheck") or {}).get("test"):
            problems.append(f"services.{name}: no healthcheck")
        published = {container_port(p) for p in service.get("ports") or []}
        problems += [f"services.{name}: port {p} not published" for p in need.ports if p not in published]
        mounts = _mounts(service)
        for mount in need.mounts:
            if mount not in mounts:
                problems.append(f"services.{name}: no volume mounted at {mount}")
            elif not mounts[mount].startswith((".", "/")) and mounts[mount] not in declared_volumes:
                problems.append(f"services.{name}: volume {mounts[mount]!r} is not declared under volumes")
        if need.needs_stores:
            depends = service.get("depends_on") or {}
            for store in STORES:
                if (depends.get(store) or {}).get("condition") != "service_healthy":
                    problems.append(f"services.{name}: does not wait for {store} to be healthy")
    for name in DAGSTER:
        missing = sorted((dagster_env or set()) - set(_environment(services.get(name) or {})))
        problems += [f"services.{name}.environment: {var} (read by deploy/dagster.yaml) is not set"
                     for var in missing]
    problems += _check_cluster(services)
    problems += _check_images(services, env_example)
    problems += _check_secrets(services, compose, env_example)
    readers = [(("api",), settings_fields, "services.api.config.Settings"),
               (DAGSTER, pipeline_fields, "pipelines.defs.resources.PipelineSettings")]
    for names, fields, reader in readers:
        for name in names if fields is not None else ():
            problems += [f"services.{name}.environment.{key}: not a setting of {reader}"
                         for key in sorted(_environment(services.get(name) or {}))
                         if key.startswith("TWOTOWER_") and key not in fields]
    return problems


def _env_values(env_example: str) -> dict[str, str]:
    """The `NAME=value` lines of `.env.example`."""
    return {name.strip(): value.strip() for name, _, value in (
        line.partition("=") for line in map(str.strip, env_example.splitlines())
        if "=" in line and not line.startswith("#"))}


def _check_images(services: dict, env_example: str) -> list[str]:
    """Every image tag is an exact version (`${VAR:-default}` by the value `.env.example` gives,
    else its default): no `latest`, no moving `7.4` or `16` that changes under the same compose
    file."""
    problems, values = [], _env_values(env_example)
    for name, service in services.items():
        image = DEFAULT.sub(lambda m: values.get(m[1], m[2]), str(service.get("image", "")))
        if image and not EXACT_TAG.search(image):
            problems.append(f"services.{name}.image: {image!r} is not pinned to an exact version "
                            "(e.g. redis:7.4.5)")
    return problems


def _check_cluster(services: dict) -> list[str]:
    problems = []
    for name in CLUSTER:
        service = services.get(name) or {}
        if service.get("profiles") != ["cluster"]:
            problems.append(f"services.{name}: must be in the 'cluster' profile only")
        if _environment(service).get("QDRANT__CLUSTER__ENABLED", "").lower() != "true":
            problems.append(f"services.{name}: QDRANT__CLUSTER__ENABLED is not 'true'")
    joins = [" ".join(map(str, (services.get(n) or {}).get("command") or [])) for n in CLUSTER[1:]]
    if not all("--bootstrap" in command for command in joins):
        problems.append(f"services.{CLUSTER[1]}/{CLUSTER[2]}: must join {CLUSTER[0]} with --bootstrap")
    return problems


def _check_secrets(services: dict, compose: dict, env_example: str) -> list[str]:
    """Secrets appear only as ${VAR}; every ${VAR} the file uses is listed in .env.example."""
    problems = []
    for name, service in services.items():
        for key, value in _environment(service).items():
            if SECRET_KEY.search(key) and value and not value.startswith("${"):
                problems.append(f"services.{name}.environment.{key}: a literal secret; "
                                "use ${VAR} from .env")
        command = [str(c) for c in service.get("command") or []]
        for where, value in [*_environment(service).items(), *(("command", c) for c in command)]:
            inline = URL_PASSWORD.search(value) or INLINE_PASSWORD.search(value)
            if inline and not inline.group(1).startswith("${"):
                problems.append(f"services.{name}.{where}: a literal password; use ${{VAR}} from .env")
        for flag, value in zip(command, command[1:], strict=False):
            if flag == "--requirepass" and not value.startswith("${"):
                problems.append(f"services.{name}.command: a literal --requirepass; use ${{VAR}} from .env")
    listed = set(_env_values(env_example))
    used = set(REFERENCE.findall(yaml.safe_dump(compose)))
    problems += [f"${{{var}}}: used in the compose file but missing from .env.example"
                 for var in sorted(used - listed)]
    return problems


def settings_env_names(settings: type[BaseModel]) -> set[str]:
    """The env names a pydantic-settings class reads (nested models as PREFIX_FIELD__SUB)."""
    prefix = settings.model_config.get("env_prefix", "")
    nested = settings.model_config.get("env_nested_delimiter") or None
    names = set()
    for name, info in settings.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        if nested:
            names |= {f"{prefix}{name}{nested}{sub}".upper()
                      for model in _models(info.annotation) for sub in model.model_fields}
    return names


def _models(annotation: object) -> list[type[BaseModel]]:
    """The models an annotation names, through Optional, unions and Annotated (a union of
    models, such as the index settings of each backend, reads the fields of all of them)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def dagster_env_names(instance_yaml: Path = ROOT / "deploy" / "dagster.yaml") -> set[str]:
    """The `{env: NAME}` references of a Dagster instance config."""
    found: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(str(node["env"]))
            for value in node.values():
                walk(value)

    walk(yaml.safe_load(instance_yaml.read_text()))
    return found


def check_files(compose_file: Path = ROOT / "docker-compose.yml",
                env_example: Path = ROOT / ".env.example") -> list[str]:
    """`check` of the files, with the names the settings classes and deploy/dagster.yaml read."""
    from pipelines.defs.resources import SERVICE_KEY_ENV, PipelineSettings
    from services.api.config import Settings

    return check(yaml.safe_load(compose_file.read_text()), env_example.read_text(),
                 settings_env_names(Settings), dagster_env_names(),
                 settings_env_names(PipelineSettings) | {SERVICE_KEY_ENV}) + check_dockerfile()


def check_dockerfile(dockerfile: Path = ROOT / "deploy" / "Dockerfile",
                     pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The image copies in every package the project installs (`pip install .` finds no other)."""
    packages = tomllib.loads(pyproject.read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile.read_text(), re.MULTILINE))
    where = f"{dockerfile.parent.name}/{dockerfile.name}"
    return [f"{where}: package {name!r} is not copied in (COPY {name} {name})"
            for name in (p.rstrip("*") for p in packages) if name not in copied]


def main(argv: list[str] | None = None) -> None:
    args = [Path(a) for a in (sys.argv[1:] if argv is None else argv)]
    problems = check_files(*args)
    if problems:
        raise SystemExit("docker-compose.yml:\n  " + "\n  ".join(problems))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # a script in .ci/: import the settings classes from this checkout
    main()
