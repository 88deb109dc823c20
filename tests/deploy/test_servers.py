"""The throwaway servers the deployment tests run on: they say what is missing and clean up."""

from __future__ import annotations

import socket

import pytest
import redis
import sqlalchemy as sa

from tests.utils.servers import ServerError, start_redis


def test_missing_redis_binary_names_the_command_that_installs_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ServerError, match="redis-server: not found.*apt-get install -y redis-server"):
        start_redis()


def test_stopped_server_frees_its_port_and_deletes_its_data():
    server = start_redis()
    assert redis.Redis(port=server.port).set("k", "v")
    server.stop()
    assert not server.root.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0


def test_postgres_server_creates_databases_it_can_connect_to(postgres_server):
    engine = sa.create_engine(postgres_server.create_database("scratch"))
    with engine.connect() as connection:
        assert connection.execute(sa.text("SELECT current_database()")).scalar() == "scratch"
    engine.dispose()
