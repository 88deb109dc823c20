"""deploy/dagster.yaml: a Dagster instance whose runs and events live in a real PostgreSQL.

The instance is built from the file itself, its connection settings from the env vars compose sets.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg
import pytest
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from pipelines.defs.sensors import INBOX_TAG, new_items_job, stock_update_job

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@pytest.fixture(scope="module")
def dagster_database(postgres_server) -> str:
    return postgres_server.create_database("dagster")


@pytest.fixture
def dagster_env(monkeypatch, postgres_server, dagster_database, tmp_path) -> Path:
    """The variables deploy/dagster.yaml reads, pointing at the throwaway PostgreSQL; returns the data dir."""
    for name, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres_server.port),
                        "DAGSTER_PG_USER": postgres_server.user, "DAGSTER_PG_PASSWORD": "",
                        "DAGSTER_PG_DB": "dagster", "DAGSTER_ARTIFACTS_DIR": str(tmp_path / "storage"),
                        "DAGSTER_LOGS_DIR": str(tmp_path / "logs")}.items():
        monkeypatch.setenv(name, value)
    return tmp_path


@dg.asset
def answer() -> int:
    return 42


def test_a_run_on_the_yaml_instance_is_stored_in_postgres(dagster_env, postgres_server):
    with dg.DagsterInstance.from_config(str(DEPLOY)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        result = dg.materialize([answer], instance=instance)
        assert result.success and result.output_for_node("answer") == 42

    with dg.DagsterInstance.from_config(str(DEPLOY)) as reader:  # a second process's view
        runs = reader.get_runs()
        assert [(r.run_id, r.status) for r in runs] == [(result.run_id, dg.DagsterRunStatus.SUCCESS)]
        assert reader.get_latest_materialization_event(dg.AssetKey("answer")).run_id == result.run_id
    with psycopg.connect(postgres_server.url("dagster", driver="postgresql")) as connection:
        stored = connection.execute("SELECT run_id, status FROM runs").fetchall()
    assert stored == [(result.run_id, "SUCCESS")]
    assert (dagster_env / "storage" / "storage" / "answer").is_file(), "step output on the shared volume"


def test_the_inbox_jobs_go_one_run_at_a_time(dagster_env):
    """A run waiting out an outage of the event log (its step retries) holds one slot, not both."""
    (key, value), = INBOX_TAG.items()
    assert stock_update_job.run_tags[key] == value and new_items_job.run_tags[key] == value
    with dg.DagsterInstance.from_config(str(DEPLOY)) as instance:
        queue = instance.get_concurrency_config().run_queue_config
    assert queue.max_concurrent_runs == 2
    assert queue.tag_concurrency_limits == [{"key": key, "limit": 1}]


def test_unset_dagster_env_var_is_named(dagster_env, monkeypatch):
    monkeypatch.delenv("DAGSTER_PG_HOST")
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_PG_HOST"):
        dg.DagsterInstance.from_config(str(DEPLOY))
