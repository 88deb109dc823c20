"""Throwaway servers on loopback, for tests and benchmarks: Redis, PostgreSQL, and the service.

Each server runs from the binaries on the machine (`.ci/install-servers.sh` installs them) on a
free port with its data in a fresh temporary directory, and is removed on `stop()`. PostgreSQL
refuses to run as root, so as root it runs as the `postgres` system user (or `nobody`).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, ClassVar, TypeVar

START_TIMEOUT_S = 30.0
START_ATTEMPTS = 3  # each on a new free port
SERVICE_START_S = 120.0  # importing torch, Feast and FastAPI on a busy 2-core box
ROOT = Path(__file__).resolve().parents[2]
S = TypeVar("S")
INSTALL_HINT = "run .ci/install-servers.sh (Debian: apt-get install -y redis-server postgresql)"


class ServerError(RuntimeError):
    """A server binary is missing or a server did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path,
                  timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once `process` accepts connections on `port`; fail with its log if it exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"{process.args[0]} exited with {process.returncode}: "
                              f"{log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise ServerError(f"{process.args[0]}: no answer on port {port} after {timeout_s}s")


@dataclass
class _Server:
    process: subprocess.Popen
    root: Path
    port: int
    _log: IO[str] | None = field(repr=False, default=None)
    stop_signal: ClassVar[int] = signal.SIGTERM

    def stop(self) -> None:
        """Shut the server down and delete its data."""
        if self.process.poll() is None:
            self.process.send_signal(self.stop_signal)
            try:
                self.process.wait(timeout=START_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass
class RedisServer(_Server):
    @property
    def url(self) -> str:
        """Feast's connection string for it (`host:port`)."""
        return f"127.0.0.1:{self.port}"


@dataclass
class PostgresServer(_Server):
    user: str = "twotower"
    stop_signal: ClassVar[int] = signal.SIGINT  # fast shutdown: SIGTERM waits for open pools

    def url(self, database: str = "postgres", *, driver: str = "postgresql+psycopg") -> str:
        """A SQLAlchemy URL (`driver="postgresql"` gives a libpq URL) for `database`."""
        return f"{driver}://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create an empty database and return its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _with_retries(start: Callable[[], S]) -> S:
    """`start()`, again on a new port when it fails: a free port can be taken by another process
    (another test worker) between being picked and being bound."""
    for attempt in range(START_ATTEMPTS):
        try:
            return start()
        except ServerError:
            if attempt == START_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def start_redis(*options: str) -> RedisServer:
    """A Redis server without persistence on a free loopback port; `options` are extra flags."""
    return _with_retries(lambda: _start_redis(*options))


def _start_redis(*options: str) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerError(f"redis-server: not found on PATH; {INSTALL_HINT}")
    root, port = Path(tempfile.mkdtemp(prefix="twotower-redis-")), free_port()
    log = (root / "redis.log").open("w")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root), "--save", "",
         "--appendonly", "no", "--protected-mode", "yes", *options],
        stdout=log, stderr=subprocess.STDOUT)
    server = RedisServer(process, root, port, log)
    try:
        wait_for_port(port, process, root / "redis.log")
    except ServerError:
        server.stop()
        raise
    return server


def start_redis_cluster() -> RedisServer:
    """A one-node Redis Cluster: cluster mode on, all 16384 hash slots served by this node."""
    import redis

    server = start_redis("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-port", str(free_port()))  # default bus port (+10000) may overflow
    try:
        client = redis.Redis(port=server.port)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + START_TIMEOUT_S
        while client.cluster("info")["cluster_state"] != "ok":
            if time.monotonic() > deadline:
                raise ServerError(f"redis cluster on port {server.port}: not ok after {START_TIMEOUT_S}s")
            time.sleep(0.1)
        client.close()
    except BaseException:
        server.stop()
        raise
    return server


def postgres_bin_dir() -> Path:
    """The folder of `initdb` and `postgres`: on PATH, or the newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise ServerError(f"initdb: not on PATH nor under /usr/lib/postgresql/*/bin; {INSTALL_HINT}")
    return Path(found[-1]).parent


def _unprivileged_user() -> str | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise ServerError("postgres refuses to run as root and no 'postgres' or 'nobody' user exists")


def start_postgres() -> PostgresServer:
    """A PostgreSQL cluster (trust auth on loopback only, no fsync) on a free port."""
    return _with_retries(_start_postgres)


def _start_postgres() -> PostgresServer:
    bin_dir, user = postgres_bin_dir(), _unprivileged_user()
    root, port = Path(tempfile.mkdtemp(prefix="twotower-postgres-")), free_port()
    if user is not None:  # mkdtemp makes a 0700 folder owned by root
        shutil.chown(root, user=user)
    data = root / "data"
    initdb = subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-U", "twotower", "--auth=trust",
         "--encoding=UTF8", "--no-sync"],
        user=user, capture_output=True, text=True, cwd=root)
    if initdb.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        raise ServerError(f"initdb failed ({initdb.returncode}): {initdb.stderr[-2000:]}")
    log = (root / "postgres.log").open("w")
    if user is not None:
        shutil.chown(root / "postgres.log", user=user)
    process = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-h", "127.0.0.1",
         "-k", str(root), "-c", "fsync=off", "-c", "full_page_writes=off",
         "-c", "synchronous_commit=off"],
        user=user, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = PostgresServer(process, root, port, log)
    try:
        wait_for_port(port, process, root / "postgres.log")
        _wait_until_accepting(server)
    except ServerError:
        server.stop()
        raise
    return server


def _wait_until_accepting(server: PostgresServer) -> None:
    """The port opens before recovery ends; wait until a connection succeeds."""
    import psycopg

    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            psycopg.connect(server.url(driver="postgresql"), connect_timeout=2).close()
            return
        except psycopg.OperationalError as error:
            if time.monotonic() > deadline:
                raise ServerError(f"postgres on port {server.port}: {error}") from error
            time.sleep(0.1)


@dataclass
class ServiceProcess:
    url: str
    process: subprocess.Popen


@contextmanager
def twotower_service(home: Path, env: dict[str, str], log: Path, workers: int = 1
                     ) -> Iterator[ServiceProcess]:
    """`twotower serve --home home --workers workers` on a free loopback port, with `env` added to
    ours; stopped on exit, which deletes its copies of the index."""
    port = free_port()
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "twotower.cli", "serve", "--home", str(home),
                                    "--port", str(port), "--workers", str(workers)], cwd=ROOT,
                                   env={**os.environ, **env},
                                   stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, process, log, timeout_s=SERVICE_START_S)
        yield ServiceProcess(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        process.wait(timeout=START_TIMEOUT_S)
