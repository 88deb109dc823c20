"""docker-compose.yml holds the stack it promises (checked without a Docker engine)."""

from __future__ import annotations

import importlib.util
import json
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from index.settings import PlatformSettings
from pipelines.defs.resources import SERVICE_KEY_ENV, PipelineSettings, build_resources
from services.api.config import Settings


def _compose_check():
    """`.ci/compose_check.py`, the script `make compose-config` runs, as a module (`.ci` is no package)."""
    spec = importlib.util.spec_from_file_location(
        "compose_check", Path(__file__).resolve().parents[2] / ".ci" / "compose_check.py")
    assert spec is not None and spec.loader is not None
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


compose_check = _compose_check()
ROOT = compose_check.ROOT
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
ENV_EXAMPLE = (ROOT / ".env.example").read_text()


def test_compose_file_passes_the_check_make_compose_config_runs():
    assert compose_check.check_files() == []


def test_compose_config_script_fails_on_a_broken_file_and_names_the_problem(tmp_path):
    compose = _copy()
    del compose["services"]["redis"]["healthcheck"]
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(compose))
    script = [sys.executable, str(ROOT / ".ci" / "compose_check.py")]
    # Run from elsewhere: the script imports the settings classes from its own checkout.
    run = subprocess.run([*script, str(broken), str(ROOT / ".env.example")], capture_output=True,
                         text=True, cwd=tmp_path)
    assert run.returncode == 1 and "services.redis: no healthcheck" in run.stderr
    assert "Traceback" not in run.stderr
    compose_check.main([])  # the checked-in files, by default: no problem, no exit


def test_every_service_of_the_stack_is_there():
    assert {"qdrant", "redis", "postgres", "dagster-webserver", "dagster-daemon", "api"} <= set(
        COMPOSE["services"])


def _copy() -> dict:
    """A copy whose YAML aliases (one dict shared by several services) are separate dicts."""
    return json.loads(json.dumps(COMPOSE))


def _broken(edit) -> list[str]:
    compose = _copy()
    edit(compose["services"])
    return compose_check.check(compose, ENV_EXAMPLE)


def test_missing_healthcheck_is_reported():
    assert _broken(lambda s: s["redis"].pop("healthcheck")) == ["services.redis: no healthcheck"]


def test_unpublished_port_is_reported():
    assert "services.api: port 8000 not published" in _broken(lambda s: s["api"].update(ports=[]))


def test_service_started_before_its_stores_are_healthy_is_reported():
    problems = _broken(lambda s: s["api"]["depends_on"].update(postgres={"condition": "service_started"}))
    assert problems == ["services.api: does not wait for postgres to be healthy"]


def test_literal_secrets_are_reported():
    def leak(services):
        services["postgres"]["environment"]["POSTGRES_PASSWORD"] = "hunter2"
        services["api"]["environment"]["TWOTOWER_REGISTRY_URL"] = "postgresql://twotower:hunter2@postgres/db"
    problems = _broken(leak)
    assert ("services.postgres.environment.POSTGRES_PASSWORD: a literal secret; use ${VAR} from .env"
            in problems)
    assert any(p.startswith("services.api.TWOTOWER_REGISTRY_URL: a literal password") for p in problems)


def test_reference_missing_from_env_example_is_reported():
    compose = _copy()
    compose["services"]["api"]["environment"]["EXTRA"] = "${NEW_SECRET}"
    assert compose_check.check(compose, ENV_EXAMPLE) == [
        "${NEW_SECRET}: used in the compose file but missing from .env.example"]
    assert compose_check.check(compose, ENV_EXAMPLE + "\nNEW_SECRET = s3cret\n") == []  # spaces allowed


def test_cluster_nodes_must_join_the_first_node():
    problems = _broken(lambda s: s["qdrant-node3"].update(command=["./qdrant"]))
    assert problems == ["services.qdrant-node2/qdrant-node3: must join qdrant-node1 with --bootstrap"]


def test_unknown_service_setting_is_reported():
    problems = compose_check.check(COMPOSE, ENV_EXAMPLE, settings_fields=set())
    assert ("services.api.environment.TWOTOWER_DATA_DIR: not a setting of services.api.config.Settings"
            in problems)


def test_unknown_pipeline_setting_is_reported():
    compose = _copy()
    compose["services"]["dagster-daemon"]["environment"]["TWOTOWER_FEAST_REGISTRY"] = "postgresql://x"
    problems = compose_check.check(compose, ENV_EXAMPLE, pipeline_fields=compose_check.settings_env_names(
        PipelineSettings) | {SERVICE_KEY_ENV})
    assert problems == ["services.dagster-daemon.environment.TWOTOWER_FEAST_REGISTRY: not a setting of "
                        "pipelines.defs.resources.PipelineSettings"]


def test_dagster_env_var_the_instance_yaml_reads_must_be_set():
    assert "DAGSTER_PG_PASSWORD" in compose_check.dagster_env_names()
    compose = _copy()
    del compose["services"]["dagster-daemon"]["environment"]["DAGSTER_PG_PASSWORD"]
    assert compose_check.check(compose, ENV_EXAMPLE, dagster_env=compose_check.dagster_env_names()) == [
        "services.dagster-daemon.environment: DAGSTER_PG_PASSWORD (read by deploy/dagster.yaml) is not set"]


@pytest.mark.parametrize(("mapping", "port"), [("127.0.0.1:6379:6379", 6379), ("8000", 8000),
                                              ("${PORT:-8000}:8000", 8000), ({"target": 3000}, 3000)])
def test_container_port_reads_every_ports_syntax(mapping, port):
    assert compose_check.container_port(mapping) == port


def _resolved_environment(service: str, values: dict[str, str]) -> dict[str, str]:
    """The service's environment as compose resolves ${VAR}, ${VAR:-default} and ${VAR:?error}."""
    def resolve(match: re.Match) -> str:
        name, op, default = match.group(1), match.group(2), match.group(3)
        if name in values:
            return values[name]
        if op == ":-":
            return default
        raise KeyError(f"{name}: {default}")

    env = _copy()["services"][service]["environment"]
    return {k: re.sub(r"\$\{(\w+)(?:(:[-?])([^}]*))?\}", resolve, str(v)) for k, v in env.items()}


@pytest.fixture
def env_file_values() -> dict[str, str]:
    """.env.example with every CHANGE-ME replaced by a distinct 24-character secret."""
    values = {}
    for line in ENV_EXAMPLE.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            values[name] = secrets.token_urlsafe(18) if value == "CHANGE-ME" else value
    return values


def test_api_environment_builds_the_services_settings(monkeypatch, env_file_values):
    for name, value in _resolved_environment("api", env_file_values).items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.environment == "production" and settings.online_store == "redis"
    assert settings.index_settings().backend == "server"
    assert settings.index_settings().url == "http://qdrant:6333"
    assert settings.index_settings().shard_number == 1  # one node: Qdrant's own default
    assert settings.registry_url.startswith("postgresql+psycopg://twotower:")
    assert [k.get_secret_value() for k in settings.write_keys] == [
        env_file_values["PIPELINE_WRITE_KEY"], env_file_values["TWOTOWER_WRITE_KEYS"]]


def test_dagster_environment_builds_the_pipelines_settings(monkeypatch, env_file_values):
    environment = _resolved_environment("dagster-daemon", env_file_values)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = PipelineSettings()
    assert settings.index is not None and settings.index.backend == "server"
    assert (settings.online_store, settings.service_url) == ("redis", "http://api:8000")
    assert settings.registry_url == environment["TWOTOWER_REGISTRY_URL"]
    feast = build_resources(settings)["feature_store"].config
    assert feast.registry_url == environment["TWOTOWER_FEAST_REGISTRY_URL"]
    assert feast.registry_url.endswith("@postgres:5432/feast") and feast.online_store == "redis"


def test_shared_names_mean_the_same_to_the_service_and_the_pipelines(monkeypatch, env_file_values):
    for name, value in _resolved_environment("dagster-daemon", env_file_values).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TWOTOWER_READ_KEYS", secrets.token_urlsafe(18))
    monkeypatch.setenv("TWOTOWER_WRITE_KEYS", secrets.token_urlsafe(18))
    service, pipelines = Settings(), PipelineSettings()
    for name in PlatformSettings.model_fields:
        assert getattr(service, name) == getattr(pipelines, name), name
    assert service.index_settings() == pipelines.index_settings()
    repo = Path("/data/feature_repo")
    assert service.feature_store().repo_dir == pipelines.feature_store().repo_dir == repo


def test_service_takes_no_redis_url_it_reads_the_rendered_repository():
    key = secrets.token_urlsafe(18)
    with pytest.raises(ValidationError, match=r"redis_url\n  Extra inputs are not permitted"):
        Settings(read_keys=[key], write_keys=[key], redis_url="redis:6379")


def test_cluster_values_from_env_reach_the_index_settings(monkeypatch, env_file_values):
    env_file_values.update(TWOTOWER_INDEX_URL="http://qdrant-node1:6333", TWOTOWER_INDEX_SHARD_NUMBER="6",
                           TWOTOWER_INDEX_REPLICATION_FACTOR="2", TWOTOWER_INDEX_WRITE_CONSISTENCY_FACTOR="2")
    for name, value in _resolved_environment("dagster-daemon", env_file_values).items():
        monkeypatch.setenv(name, value)
    index = PipelineSettings().index
    assert index is not None and index.url == "http://qdrant-node1:6333"
    assert (index.shard_number, index.replication_factor, index.write_consistency_factor) == (6, 2, 2)
    monkeypatch.setenv("TWOTOWER_INDEX__WRITE_CONSISTENCY_FACTOR", "3")
    with pytest.raises(ValidationError, match="write_consistency_factor=3 is above replication_factor=2"):
        PipelineSettings()


@pytest.mark.parametrize(("image", "env", "pinned"), [
    ("redis:7.4", "", False), ("redis:latest", "", False), ("postgres:16", "", False),
    ("twotower", "", False), ("twotower:${TWOTOWER_IMAGE_TAG:-latest}", "", False),
    ("redis:7.4.5", "", True), ("postgres:16.9", "", True), ("qdrant/qdrant:v1.19.0", "", True),
    ("twotower:${TWOTOWER_IMAGE_TAG:-0.1.0}", "", True),
    # what `cp .env.example .env` sets wins over the default
    ("twotower:${TWOTOWER_IMAGE_TAG:-0.1.0}", "TWOTOWER_IMAGE_TAG=latest", False),
    ("twotower:${TWOTOWER_IMAGE_TAG:-latest}", "TWOTOWER_IMAGE_TAG=0.1.0", True)])
def test_image_tags_must_be_exact_versions(image, env, pinned):
    compose = _copy()
    compose["services"]["redis"]["image"] = image
    env_example = "\n".join(line for line in ENV_EXAMPLE.splitlines()
                             if not line.startswith("TWOTOWER_IMAGE_TAG=")) + f"\n{env}\n"
    problems = [p for p in compose_check.check(compose, env_example) if p.startswith("services.redis.")]
    assert (problems == []) == pinned
    resolved = image.replace("${TWOTOWER_IMAGE_TAG:-latest}", env.partition("=")[2] or "latest") \
        .replace("${TWOTOWER_IMAGE_TAG:-0.1.0}", env.partition("=")[2] or "0.1.0")
    if not pinned:
        assert problems == [f"services.redis.image: {resolved!r} is not pinned to an exact version "
                            "(e.g. redis:7.4.5)"]


def test_the_image_copies_in_every_package_the_project_installs(tmp_path):
    assert compose_check.check_dockerfile() == []
    dockerfile = tmp_path / "deploy" / "Dockerfile"
    dockerfile.parent.mkdir()
    dockerfile.write_text((ROOT / "deploy" / "Dockerfile").read_text().replace("COPY index index\n", ""))
    assert compose_check.check_dockerfile(dockerfile) == [
        "deploy/Dockerfile: package 'index' is not copied in (COPY index index)"]


def test_the_bootstrap_service_materializes_and_turns_schedules_and_sensors_on():
    bootstrap = COMPOSE["services"]["bootstrap"]
    assert bootstrap["profiles"] == ["bootstrap"], "runs only when asked, on the first start"
    command = " ".join(bootstrap["command"])
    for step in ("dagster asset materialize --select '*'", "dagster schedule start --start-all",
                 "dagster sensor start --start-all"):
        assert step in command
    assert bootstrap["environment"] == COMPOSE["services"]["dagster-daemon"]["environment"]
