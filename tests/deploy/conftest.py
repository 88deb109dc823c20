"""Throwaway Redis and PostgreSQL servers on loopback, one of each per test run.

A missing binary fails the tests that need it (CI installs both: `.ci/install-servers.sh`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.utils.servers import PostgresServer, RedisServer, start_postgres, start_redis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = start_postgres()
    yield server
    server.stop()
