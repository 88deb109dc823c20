"""The version registry: model and index versions in SQL, and which index version is live.

SQLite under the data dir by default, PostgreSQL by URL. Locations under the data dir (the home)
are stored relative to it and returned absolute under the home the registry was opened with, so a
copied or moved home serves and writes its own files. An index version moves through

    building -> ready -> live -> retired        (or building -> failed)

Promotion and rollback are one transaction each: the old live row is retired, the new one made
live and the backend's live pointer (Edge LIVE file, server alias) switched before the commit, so
a failure anywhere leaves the previous live version serving; a process killed between the two
leaves the pointer ahead of the registry, and `restore_live_pointer` (on open, and from the
service's poll) points it back. Promotion records the version it
replaced and rollback returns to it; the restored version keeps its own, so successive rollbacks
walk back the chain of live versions. A partial unique index guarantees at most one live row. A
builder that is killed cannot mark itself failed, so every build records its pid, host and process
start time, and `fail_stale_builds` (run on open and before each build) marks `building` rows
whose process is gone as `failed`, and another host's rows once they are a day old.
"""

from __future__ import annotations

import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import (
    JSON,
    DateTime,
    ForeignKey,
    Index,
    String,
    Text,
    create_engine,
    select,
    text,
    update,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from index.errors import NoLiveVersionError, UnknownVersionError, VersionStateError
from index.migrations import add_column, autoincrement_ids
from index.processes import process_alive, process_start

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path(".twotower")
SQLITE_BUSY_TIMEOUT_S = 30  # a builder and the service may write at the same moment
STALE_BUILD_AFTER = timedelta(days=1)  # another host's build still `building` after it: gone
HOME = "./"  # a stored location that starts so is a path relative to the registry's home


class Status(StrEnum):
    BUILDING = "building"
    READY = "ready"
    LIVE = "live"
    RETIRED = "retired"
    FAILED = "failed"


def _now() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A registry time as UTC (SQLite hands it back without its zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class ModelVersion(Base):
    """A trained tower pair whose item embeddings feed index versions."""

    __tablename__ = "model_versions"
    __table_args__ = {"sqlite_autoincrement": True}  # a pruned id is never handed out again

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    location: Mapped[str | None] = mapped_column(Text)  # e.g. the checkpoint path


class IndexVersion(Base):
    """One build of the item index from one model version's embeddings."""

    __tablename__ = "index_versions"
    __table_args__ = (
        Index(
            "ix_index_versions_one_live",
            "status",
            unique=True,
            sqlite_where=text("status = 'live'"),
            postgresql_where=text("status = 'live'"),
        ),
        # A pruned id is never handed out again: a location (a collection name, a shard folder)
        # and a served version number then always mean one build
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now, onupdate=_now)
    status: Mapped[str] = mapped_column(String(16), default=Status.BUILDING)
    backend: Mapped[str] = mapped_column(String(16))
    location: Mapped[str | None] = mapped_column(Text)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    item_count: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)
    builder_pid: Mapped[int | None]
    builder_host: Mapped[str | None] = mapped_column(String(255))
    builder_start: Mapped[str | None] = mapped_column(String(32))  # guards against pid reuse
    promoted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The version live when this one was promoted. No foreign key: prune may delete that row.
    previous_live_id: Mapped[int | None]


R = TypeVar("R", ModelVersion, IndexVersion, None)


class VersionBackend(Protocol):
    """What the registry needs from an index backend (`IndexBackend` satisfies it)."""

    kind: str

    def location_for(self, version_id: int) -> str: ...
    def activate(self, location: str) -> None: ...
    def live_location(self) -> str | None: ...
    def drop(self, location: str) -> None: ...


class Registry:
    """Registers builds and moves index versions between statuses, one transaction per call."""

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: Path | str = DEFAULT_DATA_DIR,
        backend: VersionBackend | None = None,
        timeout_s: float = SQLITE_BUSY_TIMEOUT_S,
    ) -> None:
        """`timeout_s`: how long a call waits for SQLite's lock or a PostgreSQL connection."""
        self.home = Path(data_dir).resolve()
        if url is None:
            Path(data_dir).mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{Path(data_dir).resolve() / 'registry.db'}"
        self.url = url
        connect_args: dict[str, Any] = (
            {"timeout": timeout_s} if url.startswith("sqlite")
            else {"connect_timeout": max(1, round(timeout_s))} if url.startswith("postgresql") else {})
        self.engine = create_engine(url, connect_args=connect_args)
        Base.metadata.create_all(self.engine)
        add_column(self.engine, "index_versions", "previous_live_id", "INTEGER")
        autoincrement_ids(self.engine, Base.metadata, {  # and the highest id anything still names
            "model_versions": "SELECT max(model_version_id) FROM index_versions",
            "index_versions": "SELECT max(previous_live_id) FROM index_versions"})
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.backend = backend
        self.timeout_s = timeout_s
        self.fail_stale_builds()
        try:
            self.restore_live_pointer()
        except Exception as exc:  # the backend or the live data may be away: not this open's concern
            log.warning("could not check the index backend's live pointer: %s", exc)

    def close(self) -> None:
        self.engine.dispose()

    # -- model versions ------------------------------------------------------------------------
    def register_model(
        self,
        name: str,
        *,
        config: dict[str, Any] | None = None,
        metrics: dict[str, Any] | None = None,
        location: str | None = None,
    ) -> ModelVersion:
        with self._sessions.begin() as session:
            model = ModelVersion(name=name, config=config or {}, metrics=metrics or {},
                                 location=self._stored(location))
            session.add(model)
        return self._out(model)

    def get_model(self, model_version_id: int) -> ModelVersion:
        with self._sessions() as session:
            model = session.get(ModelVersion, model_version_id)
        if model is None:
            raise UnknownVersionError(f"model version {model_version_id}: not registered")
        return self._out(model)

    def models(self) -> list[ModelVersion]:
        with self._sessions() as session:
            models = list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))
        return [self._out(model) for model in models]

    def delete_model(self, model_version_id: int) -> None:
        """Remove a model version's row; refused while an index version was built from it."""
        with self._sessions.begin() as session:
            used = session.scalar(select(IndexVersion.id).where(
                IndexVersion.model_version_id == model_version_id).limit(1))
            if used is not None:
                raise VersionStateError(f"model version {model_version_id}: index version {used} "
                                        "was built from it")
            model = session.get(ModelVersion, model_version_id)
            if model is not None:
                session.delete(model)

    # -- index versions: build ------------------------------------------------------------------
    def register_build(
        self,
        *,
        model_version_id: int,
        config: dict[str, Any],
        backend: str | None = None,
        location: str | None = None,
    ) -> IndexVersion:
        """Record a new build in status `building`, owned by this process."""
        backend = backend or (self.backend.kind if self.backend else None)
        if backend is None:
            raise ValueError("backend: pass it or give the registry a backend")
        pid = os.getpid()
        with self._sessions.begin() as session:
            if session.get(ModelVersion, model_version_id) is None:
                raise UnknownVersionError(f"model version {model_version_id}: not registered")
            version = IndexVersion(
                model_version_id=model_version_id,
                backend=backend,
                config=config,
                status=Status.BUILDING,
                builder_pid=pid,
                builder_host=socket.gethostname(),
                builder_start=process_start(pid),
            )
            session.add(version)
            session.flush()
            if location is None and self.backend is not None:
                location = self.backend.location_for(version.id)
            version.location = self._stored(location)
        log.info("registered index version %d (model version %d)", version.id, model_version_id)
        return self._out(version)

    def mark_ready(
        self, version_id: int, *, item_count: int, metrics: dict[str, Any] | None = None
    ) -> IndexVersion:
        with self._sessions.begin() as session:
            version = self._get(session, version_id)
            self._require(version, Status.BUILDING, "mark ready")
            version.status, version.item_count = Status.READY, item_count
            version.metrics = {**version.metrics, **(metrics or {})}
        return self._out(version)

    def mark_failed(self, version_id: int, error: str) -> IndexVersion:
        with self._sessions.begin() as session:
            version = self._get(session, version_id)
            self._require(version, Status.BUILDING, "mark failed")
            version.status, version.error = Status.FAILED, error[:4000]
        log.warning("index version %d failed: %s", version_id, error)
        return self._out(version)

    def fail_stale_builds(self) -> list[int]:
        """Mark `building` versions whose builder process (on this host) is gone as failed, and
        those of other hosts started over `STALE_BUILD_AFTER` ago (a host may be gone for good,
        e.g. a recreated container: no registry open of its own will judge them)."""
        host, stale = socket.gethostname(), []
        started_before = _now() - STALE_BUILD_AFTER
        with self._sessions.begin() as session:
            rows = session.scalars(select(IndexVersion).where(IndexVersion.status == Status.BUILDING))
            for version in list(rows):
                if version.builder_host != host or version.builder_pid is None:
                    created = version.created_at
                    if as_utc(created) > started_before:
                        continue  # another host's builder: its own registry open judges it first
                    error = (f"building since {created:%Y-%m-%d %H:%M} on "
                             f"{version.builder_host}, which never finished it")
                elif process_alive(version.builder_pid, version.builder_start):
                    continue
                else:
                    error = f"builder process {version.builder_pid} on {host} exited mid-build"
                marked = session.execute(  # only while still building: its builder may finish now
                    update(IndexVersion)
                    .where(IndexVersion.id == version.id, IndexVersion.status == Status.BUILDING)
                    .values(status=Status.FAILED, error=error))
                if marked.rowcount:
                    stale.append(version.id)
        for version_id in stale:
            log.warning("index version %d: builder is gone, marked failed", version_id)
        return stale

    def restore_live_pointer(self) -> bool:
        """Point the backend at the live version again when a promotion or rollback died between
        moving the pointer and committing; True when it was moved. A switch still in progress is
        waited for (its lock is taken first), never undone."""
        if self.backend is None:
            return False
        with self._sessions.begin() as session:
            if session.bind.dialect.name == "postgresql":  # a hung switch fails this, not the caller
                session.execute(text(f"SET LOCAL lock_timeout = {max(1, round(self.timeout_s * 1000))}"))
            # The lock a switch holds until it commits (SQLite: the database's write lock, taken by
            # any UPDATE; PostgreSQL: the live row's), so the read sees the switch's outcome. On
            # PostgreSQL the read locks the row it finds: a switch that began meanwhile is waited
            # for, and once it commits the row is no longer live, so nothing is moved.
            session.execute(update(IndexVersion).where(IndexVersion.status == Status.LIVE)
                            .values(updated_at=IndexVersion.updated_at))
            live = self._live(session)
            if live is None or live.location is None or live.backend != self.backend.kind:
                return False
            location, pointed = self._here(live.location), self.backend.live_location()
            if pointed == location:
                return False
            self.backend.activate(location)
        log.warning("index version %d is live, but the backend pointed at %s (a switch that died "
                    "before its commit): pointed back", live.id, pointed)
        return True

    # -- index versions: serve -------------------------------------------------------------------
    def get(self, version_id: int) -> IndexVersion:
        with self._sessions() as session:
            version = self._get(session, version_id)
        return self._out(version)

    def live(self) -> IndexVersion | None:
        with self._sessions() as session:
            live = session.scalar(select(IndexVersion).where(IndexVersion.status == Status.LIVE))
        return self._out(live)

    def live_model(self) -> ModelVersion:
        """The model version whose embeddings the live index version holds."""
        live = self.live()
        if live is None:
            raise NoLiveVersionError("no index version is live: build and promote one first")
        return self.get_model(live.model_version_id)

    def versions(self, status: Status | None = None) -> list[IndexVersion]:
        query = select(IndexVersion).order_by(IndexVersion.id)
        if status is not None:
            query = query.where(IndexVersion.status == status)
        with self._sessions() as session:
            versions = list(session.scalars(query))
        return [self._out(version) for version in versions]

    def promote(self, version_id: int) -> IndexVersion:
        """Make a `ready` version live and retire the previous live one, atomically."""
        with self._sessions() as session:  # no commit on any error: the session rolls back
            version = self._get(session, version_id, lock=True)
            self._require(version, Status.READY, "promote")
            previous = self._live(session)
            if previous is not None:
                previous.status = Status.RETIRED
                session.flush()  # the one-live index must see the old row leave first
            version.status, version.promoted_at = Status.LIVE, _now()
            version.previous_live_id = previous.id if previous is not None else None
            session.flush()
            self._commit_switch(version, previous, session)
        log.info("index version %d is live (was %s)", version_id, previous.id if previous else None)
        return self._out(version)

    def rollback(self) -> IndexVersion:
        """Make the previously live version live again; returns it."""
        with self._sessions() as session:
            current = self._live(session)
            if current is None:
                raise NoLiveVersionError("rollback: no index version is live")
            previous = self._rollback_target(session, current)
            if previous is None:
                raise VersionStateError(
                    f"rollback: index version {current.id} has no earlier live version left"
                )
            current.status = Status.RETIRED
            session.flush()
            # promoted_at and previous_live_id kept, so a second rollback walks further back
            previous.status = Status.LIVE
            session.flush()
            self._commit_switch(previous, current, session)
        log.info("rolled back index version %d -> %d", current.id, previous.id)
        return self._out(previous)

    def rollback_target(self) -> IndexVersion | None:
        """The version `rollback` would make live, if any."""
        with self._sessions() as session:
            current = session.scalar(select(IndexVersion).where(IndexVersion.status == Status.LIVE))
            target = self._rollback_target(session, current) if current is not None else None
        return self._out(target)

    def prune(self, keep: int) -> list[int]:
        """Delete (data and row) every version except live, building, the rollback target and the
        `keep` newest others."""
        if keep < 0:
            raise ValueError(f"keep={keep}: must be >= 0")
        target = self.rollback_target()
        with self._sessions() as session:
            rows = session.scalars(
                select(IndexVersion)
                .where(IndexVersion.status.not_in([Status.LIVE, Status.BUILDING]))
                .order_by(IndexVersion.id.desc())
            )
            kept = 0
            doomed: list[IndexVersion] = []
            for version in rows:
                if target is not None and version.id == target.id:
                    continue
                if version.status in (Status.READY, Status.RETIRED) and kept < keep:
                    kept += 1
                else:
                    doomed.append(version)
        deleted = []
        for version in doomed:
            # Checked again as the row goes, under the lock a switch holds until it commits (as in
            # `restore_live_pointer`): a promotion or rollback since the scan may have made it live
            # or the rollback target. A row a promotion has locked is left for the next prune. The
            # row goes first, so no promotion or rollback finds it without its data.
            with self._sessions.begin() as session:
                session.execute(update(IndexVersion).where(IndexVersion.status == Status.LIVE)
                                .values(updated_at=IndexVersion.updated_at))
                row = session.scalar(select(IndexVersion).where(IndexVersion.id == version.id)
                                     .with_for_update(skip_locked=True))
                current = session.scalar(select(IndexVersion).where(IndexVersion.status == Status.LIVE))
                now_target = self._rollback_target(session, current) if current is not None else None
                if row is None or row.status in (Status.LIVE, Status.BUILDING) or (
                        now_target is not None and now_target.id == row.id):
                    continue
                session.delete(row)
            deleted.append(version.id)
            if self.backend is not None and version.location and version.backend == self.backend.kind:
                try:
                    self.backend.drop(self._here(version.location))
                except Exception:  # the row is gone: say where its data stays, and go on
                    log.exception("index version %d: pruned, but its data at %s could not be "
                                  "dropped; delete it by hand", version.id, version.location)
        log.info("pruned index versions %s", deleted)
        return deleted

    # -- helpers ------------------------------------------------------------------------------------
    def _stored(self, location: str | None) -> str | None:
        """A location as stored: a path under the home as `./` + its path relative to the home;
        other paths and names (a server's collections) as given."""
        if location is None or not Path(location).is_absolute():
            return location
        path = Path(location).resolve()
        if not path.is_relative_to(self.home):
            return location
        return f"{HOME}{path.relative_to(self.home).as_posix()}"

    def _here(self, location: str) -> str:
        """A stored location as the caller uses it: `./` paths under this registry's home."""
        return str(self.home / location.removeprefix(HOME)) if location.startswith(HOME) else location

    def _out(self, row: R) -> R:
        """A row leaving the registry (detached from its session): its location made absolute."""
        if row is not None and row.location is not None:
            row.location = self._here(row.location)
        return row

    def _commit_switch(self, new: IndexVersion, old: IndexVersion | None, session: Session) -> None:
        """Move the backend's live pointer inside the open transaction; undo it if commit fails."""
        if self.backend is None or new.location is None:
            session.commit()
            return
        if new.backend != self.backend.kind:
            raise VersionStateError(
                f"index version {new.id}: built on {new.backend}, registry backend is {self.backend.kind}"
            )
        self.backend.activate(self._here(new.location))
        try:
            session.commit()
        except Exception:
            if old is not None and old.location is not None:
                self.backend.activate(self._here(old.location))
            raise

    @staticmethod
    def _get(session: Session, version_id: int, *, lock: bool = False) -> IndexVersion:
        query = select(IndexVersion).where(IndexVersion.id == version_id)
        version = session.scalar(query.with_for_update() if lock else query)
        if version is None:
            raise UnknownVersionError(f"index version {version_id}: not registered")
        return version

    @staticmethod
    def _rollback_target(session: Session, current: IndexVersion) -> IndexVersion | None:
        """The version `current` replaced, if still retired; for a row promoted before
        `previous_live_id` existed, the retired version promoted most recently before it."""
        query = select(IndexVersion).where(
            IndexVersion.status == Status.RETIRED,
            IndexVersion.promoted_at.is_not(None),
            IndexVersion.promoted_at < current.promoted_at,  # not a pruned id SQLite reused
        )
        if current.previous_live_id is not None:
            return session.scalar(query.where(IndexVersion.id == current.previous_live_id))
        return session.scalar(query.order_by(IndexVersion.promoted_at.desc()).limit(1))

    @staticmethod
    def _live(session: Session) -> IndexVersion | None:
        query = select(IndexVersion).where(IndexVersion.status == Status.LIVE).with_for_update()
        return session.scalar(query)

    @staticmethod
    def _require(version: IndexVersion, status: Status, action: str) -> None:
        if version.status != status:
            raise VersionStateError(
                f"index version {version.id}: cannot {action}, "
                f"status is '{version.status}' (needs '{status.value}')"
            )
