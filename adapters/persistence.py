"""Persistence configuration: database URLs -> sealed ``eventsourcing`` settings, and the
recorders that run the inline projection inside the event store's own append transaction.

This is one of the two modules that know ``eventsourcing``'s persistence layer (the other is
``ledger.application``). Supported URLs: ``sqlite:///path``, ``memory://`` (a private temporary
SQLite file, deleted on close) and ``postgresql://user[:password]@host[:port]/dbname``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import sqlite3
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, unquote, urlsplit
from uuid import UUID

import psycopg
from eventsourcing.persistence import InterfaceError, RecordConflictError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteFactory,
)
from psycopg.rows import tuple_row
from sqlalchemy.engine import URL

from ledger.errors import ConcurrencyConflict, StorageError
from projections.db import lock_contended
from projections.inline import StaleDecision

MAX_URL_CHARS = 2_000
DRIVER_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg.Error)
"""Errors the database drivers raise past ``eventsourcing``'s own wrapping (e.g. opening a file
that is not a SQLite database)."""
_PG_CREATE_TABLE_LOCK = 727_274_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class InlineHook(Protocol):
    """Projects a just-inserted batch of events using the append transaction's cursor; told
    afterwards whether that transaction committed. ``ahead`` sends the batch's reads before the
    insert's answer is in (PostgreSQL: in its round trip); its result goes to the call."""

    def ahead(self, cursor: Any, events: Sequence[Any] | None,
              stored: Sequence[StoredEvent]) -> Any: ...
    def __call__(self, cursor: Any, ids: Sequence[int], events: Sequence[Any] | None,
                 stored: Sequence[StoredEvent], ahead: Any = None) -> None: ...
    def committed(self) -> None: ...
    def rolled_back(self) -> None: ...


def _reporting_commit(hook: InlineHook | None, insert: Callable[[], Sequence[int] | None]
                      ) -> Sequence[int] | None:
    """Run an append; tell the hook whether its transaction committed."""
    try:
        ids = insert()
    except BaseException:
        if hook is not None:
            hook.rolled_back()
        raise
    if hook is not None:
        hook.committed()
    return ids


MAX_IDS_PER_SELECT = 500


def _run_hook(hook: InlineHook, cursor: Any, ids: Sequence[int], events: Sequence[Any] | None,
              stored: Sequence[StoredEvent], ahead: Any = None) -> None:
    """Run the inline projection; a stale decision rolls the append back as a conflict."""
    try:
        hook(cursor, ids, events, stored, ahead)
    except StaleDecision as err:
        raise RecordConflictError(str(err)) from err


SQLITE_STATEMENT_CACHE = 256
"""Prepared statements kept per SQLite connection."""
SQLITE_PAGE_CACHE_KIB = 65_536
"""Page cache per writing connection (SQLite's default is 2 MiB): an append touches pages of a
dozen b-trees (events, projections, indexes) that otherwise fall out of the cache as the
database grows."""

WAL_SWITCH_MAX_ATTEMPTS = 50
"""Tries at putting a fresh SQLite file in WAL mode while other processes race for it."""
WAL_SWITCH_PAUSE_S = 0.005
WAL_SWITCH_PAUSE_MAX_S = 0.2
"""Pause after a lost try: doubling from the first figure, capped at the second."""


class LedgerSQLiteConnectionPool(SQLiteConnectionPool):
    """``eventsourcing``'s SQLite pool, with a statement cache that holds more than one
    statement: the library opens connections with ``cached_statements=True``, which sqlite3
    reads as 1, so every statement but the last one was parsed and planned again on each use
    (about 20-30 us each; an inline save runs a dozen); a larger page cache; and a switch to
    WAL mode that processes opening a fresh file at once all get through (:meth:`_to_wal`).
    Otherwise the same connection set-up."""

    def _create_connection(self) -> SQLiteConnection:
        try:
            c = sqlite3.connect(database=self.db_name, uri=True, check_same_thread=False,
                                isolation_level=None, cached_statements=SQLITE_STATEMENT_CACHE,
                                timeout=self.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT)
        except (sqlite3.Error, TypeError) as e:
            raise InterfaceError(e) from e
        if not self.is_sqlite_memory_mode and not self.is_journal_mode_wal:
            try:
                self._to_wal(c, self.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT)
            except sqlite3.Error as e:
                c.close()
                raise InterfaceError(e) from e
            self.is_journal_mode_wal = True
        c.execute(f"PRAGMA cache_size = -{SQLITE_PAGE_CACHE_KIB}")
        c.row_factory = sqlite3.Row
        return SQLiteConnection(sqlite_conn=c, max_age=self.max_age)

    def _to_wal(self, c: sqlite3.Connection, timeout_s: float) -> None:
        """Put the database in WAL mode. On a fresh file, processes opening it at once race
        for that switch, and SQLite answers "database is locked" at once, without waiting,
        when waiting could deadlock (each holds a shared lock and wants the exclusive one):
        the loser lets go and tries again, up to ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for attempt in range(WAL_SWITCH_MAX_ATTEMPTS):
            try:
                mode = c.execute("PRAGMA journal_mode;").fetchone()[0].lower()
                if mode != "wal":
                    c.execute("PRAGMA journal_mode=WAL;")
                    self.journal_mode_was_changed_to_wal = True
                return
            except sqlite3.OperationalError as e:
                if not lock_contended(e) or attempt + 1 == WAL_SWITCH_MAX_ATTEMPTS \
                        or time.monotonic() >= deadline:
                    raise
            time.sleep(min(WAL_SWITCH_PAUSE_MAX_S, WAL_SWITCH_PAUSE_S * 2 ** attempt))


class LedgerSQLiteFactory(SQLiteFactory):
    """The SQLite persistence module, with :class:`LedgerSQLiteConnectionPool`."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        pool = self.datastore.pool  # no connection is opened before first use
        self.datastore.pool = LedgerSQLiteConnectionPool(db_name=pool.db_name,
                                                         lock_timeout=pool.lock_timeout)


class InlineSQLiteRecorder(SQLiteApplicationRecorder):
    """SQLite recorder whose append transaction also writes the inline projection."""

    inline_hook: InlineHook | None = None

    def select_events_many(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every stored event of many streams, ordered by stream then version."""
        out: list[StoredEvent] = []
        for start in range(0, len(originator_ids), MAX_IDS_PER_SELECT):
            chunk = [i.hex for i in originator_ids[start:start + MAX_IDS_PER_SELECT]]
            marks = ",".join("?" * len(chunk))
            with self.datastore.transaction(commit=False) as c:
                c.execute(f"SELECT originator_id, originator_version, topic, state FROM "
                          f"{self.events_table_name} WHERE originator_id IN ({marks}) "
                          "ORDER BY originator_id, originator_version", chunk)
                out += [StoredEvent(originator_id=UUID(r[0]), originator_version=r[1],
                                    topic=r[2], state=r[3]) for r in c.fetchall()]
        return out

    def select_event_rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` stored events after notification id ``after``, in order, as the
        rows :class:`adapters.event_decoding.BulkDecoder` decodes (what ``select_notifications``
        reads, without a ``Notification`` object and a ``UUID`` made per event)."""
        with self.datastore.transaction(commit=False) as c:
            c.sqlite_cursor.row_factory = None
            c.execute(f"SELECT rowid, originator_id, originator_version, topic, state FROM "
                      f"{self.events_table_name} WHERE rowid > ? ORDER BY rowid LIMIT ?",
                      (after, limit))
            return list(c.fetchall())

    def stream_position(self, originator_id: UUID) -> int:
        """The log position (notification id) of a stream's newest event; 0 if it has none."""
        with self.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT rowid FROM {self.events_table_name} WHERE originator_id = ? "
                      "ORDER BY originator_version DESC LIMIT 1", (originator_id.hex,))
            row = c.fetchone()
        return 0 if row is None else int(row[0])

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        return _reporting_commit(self.inline_hook,
                                 lambda: super(InlineSQLiteRecorder, self).insert_events(
                                     stored_events, **kwargs))

    def _insert_events(self, c: Any, stored_events: Sequence[StoredEvent],
                       **kwargs: Any) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if self.inline_hook is not None and ids:
            _run_hook(self.inline_hook, c, ids, kwargs.get("ledger_events"), stored_events)
        return ids


class InlinePostgresRecorder(PostgresApplicationRecorder):
    """PostgreSQL recorder whose append transaction also writes the inline projection.

    ``insert_events`` is re-stated so that a failure in the projection propagates through the
    transaction block and rolls the events back too (the base class swallows exceptions inside
    the block and re-raises them after the commit).
    """

    inline_hook: InlineHook | None = None

    def select_events_many(self, originator_ids: Sequence[UUID]) -> list[StoredEvent]:
        """Every stored event of many streams, ordered by stream then version."""
        out: list[StoredEvent] = []
        table = f'"{self.datastore.schema}"."{self.events_table_name}"'
        for start in range(0, len(originator_ids), MAX_IDS_PER_SELECT):
            chunk = list(originator_ids[start:start + MAX_IDS_PER_SELECT])
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(f"SELECT originator_id, originator_version, topic, state FROM {table} "
                             "WHERE originator_id = ANY(%s) "
                             "ORDER BY originator_id, originator_version", (chunk,))
                out += [StoredEvent(originator_id=r["originator_id"],
                                    originator_version=r["originator_version"],
                                    topic=r["topic"], state=bytes(r["state"]))
                        for r in curs.fetchall()]
        return out

    def select_event_rows(self, after: int, limit: int) -> list[tuple[Any, ...]]:
        """Up to ``limit`` stored events after notification id ``after``, in order, as the
        rows :class:`adapters.event_decoding.BulkDecoder` decodes."""
        table = f'"{self.datastore.schema}"."{self.events_table_name}"'
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(f"SELECT notification_id, originator_id, originator_version, topic, "
                         f"state FROM {table} WHERE notification_id > %s "
                         "ORDER BY notification_id LIMIT %s", (after, limit), prepare=True)
            return list(curs.fetchall())

    def stream_position(self, originator_id: UUID) -> int:
        """The log position (notification id) of a stream's newest event; 0 if it has none."""
        table = f'"{self.datastore.schema}"."{self.events_table_name}"'
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(f"SELECT notification_id FROM {table} WHERE originator_id = %s "
                         "ORDER BY originator_version DESC LIMIT 1", (originator_id,))
            row = curs.fetchone()
        return 0 if row is None else int(row["notification_id"])

    def insert_events(self, stored_events: Sequence[StoredEvent],
                      **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return []
        return _reporting_commit(self.inline_hook, lambda: self._append(stored_events, kwargs))

    def _append(self, stored_events: Sequence[StoredEvent],
                kwargs: dict[str, Any]) -> Sequence[int]:
        """One transaction in two round trips, with or without the inline projection: BEGIN,
        the writers' lock, NOTIFY, the insert and the projection's reads; then the projection's
        writes and COMMIT. A failure anywhere rolls the whole transaction back."""
        hook, events = self.inline_hook, kwargs.get("ledger_events")
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            try:
                with conn.pipeline() as pipeline:
                    curs.execute("BEGIN")
                    self._insert_stored_events(curs, stored_events, **kwargs)
                    ahead = None if hook is None else hook.ahead(curs, events, stored_events)
                    pipeline.sync()
                    ids: Sequence[int] = [row["notification_id"] for row in curs.fetchall()]
                    assert len(ids) == len(stored_events), (len(ids), len(stored_events))
                    if hook is not None:
                        _run_hook(hook, curs, ids, events, stored_events, ahead)
                    curs.execute("COMMIT")
            except BaseException:
                _roll_back(conn)
                raise
        return ids


def _roll_back(conn: psycopg.Connection[Any]) -> None:
    """End a failed append's transaction (a connection in a broken state is left to the pool,
    which discards it)."""
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        with contextlib.suppress(psycopg.Error):
            conn.rollback()


def first_line(err: BaseException) -> str:
    """A driver error as one line a person can read (its first line, at most 300 chars)."""
    text = str(err).strip()
    return " ".join(text.splitlines()[0].split())[:300] if text else type(err).__name__


@contextmanager
def setup_lock(config: StorageConfig) -> Iterator[None]:
    """Serialise the event store's DDL across processes (PostgreSQL; SQLite locks the file).

    Every open runs ``CREATE OR REPLACE FUNCTION``, ``CREATE TYPE`` and ``CREATE TABLE IF NOT
    EXISTS`` for the events and the snapshots; two processes opening one database at once made
    PostgreSQL fail one of them ("tuple concurrently updated", or a duplicate key in
    ``pg_type``). The lock is held by a session of its own and ends with it. Connecting first
    also turns a missing database or role into a :class:`StorageError` that names it.
    """
    if config.kind != "postgresql":
        yield
        return
    conn = _pg_session(config)
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (_PG_CREATE_TABLE_LOCK,))
        yield
    finally:
        conn.close()


REBUILD_LOCK_WAIT_S = 1_800.0
"""How long an open waits for another process's rebuild of the same database to finish."""
_REBUILD_LOCK_POLL_S = 0.05
_PG_REBUILD_LOCK_CLASS = 727_274


@contextmanager
def rebuild_lock(config: StorageConfig, *, wait: bool) -> Iterator[None]:
    """One projection rebuild per database at a time, across processes; the lock ends with its
    holder, even one killed with ``kill -9``. ``wait``: block until the holder is done (at most
    :data:`REBUILD_LOCK_WAIT_S`); otherwise raise :class:`ConcurrencyConflict` at once.

    SQLite: an advisory ``flock`` on ``DBFILE.rebuild-lock`` beside the database (never on the
    database file itself: SQLite's own POSIX locks would be lost when that descriptor closed).
    PostgreSQL: a session advisory lock keyed on the schema.
    """
    if config.kind == "memory":  # private to one Ledger
        yield
        return
    deadline = time.monotonic() + (REBUILD_LOCK_WAIT_S if wait else 0.0)
    if config.kind == "sqlite":
        with open(config.env["SQLITE_DBNAME"] + ".rebuild-lock", "a+b") as file:
            while True:
                try:
                    fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    _wait_or_refuse(deadline, config)
            yield
        return
    conn = _pg_session(config)
    try:
        key = zlib.crc32(str(config.extra.get("schema", "public")).encode()) & 0x7FFF_FFFF
        while True:
            got = conn.execute("SELECT pg_try_advisory_lock(%s, %s)",
                               (_PG_REBUILD_LOCK_CLASS, key)).fetchone()
            if got is not None and got[0]:
                break
            _wait_or_refuse(deadline, config)
        yield
    finally:
        conn.close()


def _wait_or_refuse(deadline: float, config: StorageConfig) -> None:
    if time.monotonic() >= deadline:
        raise ConcurrencyConflict(
            f"another process is rebuilding the projections of {config.display}; "
            "run this again when it has finished")
    time.sleep(_REBUILD_LOCK_POLL_S)


def _pg_session(config: StorageConfig) -> psycopg.Connection[Any]:
    """An autocommit session of its own (for session-scoped advisory locks)."""
    env = config.env
    try:
        return psycopg.connect(
            dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"],
            port=int(env["POSTGRES_PORT"]), user=env["POSTGRES_USER"],
            password=env["POSTGRES_PASSWORD"] or None,
            connect_timeout=int(env["POSTGRES_CONNECT_TIMEOUT"]), autocommit=True)
    except psycopg.Error as err:
        raise StorageError(f"cannot open {config.display}: {first_line(err)}") from None


@dataclass
class StorageConfig:
    """A parsed database URL: the ``eventsourcing`` settings and the SQLAlchemy URL for reads."""

    kind: str
    env: dict[str, str]
    sqlalchemy_url: str
    display: str
    cleanup_dir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return "postgresql" if self.kind == "postgresql" else "sqlite"

    def cleanup(self) -> None:
        """Remove a ``memory://`` ledger's private files."""
        if self.cleanup_dir:
            shutil.rmtree(self.cleanup_dir, ignore_errors=True)
            self.cleanup_dir = None


_BASE_ENV = {
    "CREATE_TABLE": "y",
    "SQLITE_LOCK_TIMEOUT": "30",
}


def parse_url(url: str) -> StorageConfig:
    """Validate a database URL; :class:`StorageError` says what a good one looks like."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_CHARS:
        raise StorageError("a database URL is required, e.g. sqlite:///wallet.db")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme == "sqlite":
        return _sqlite(url)
    if scheme == "memory":
        return _memory()
    if scheme in ("postgresql", "postgres", "postgresql+psycopg"):
        return _postgres(url)
    raise StorageError(
        f"unsupported database URL {url[:80]!r}: use sqlite:///PATH, memory:// or "
        "postgresql://USER@HOST:PORT/DBNAME")


def _sqlite_env(path: str) -> dict[str, str]:
    return {**_BASE_ENV, "PERSISTENCE_MODULE": "adapters.persistence:LedgerSQLiteFactory",
            "SQLITE_DBNAME": path,
            "APPLICATION_RECORDER_TOPIC": "adapters.persistence:InlineSQLiteRecorder"}


def _sqlite(url: str) -> StorageConfig:
    path = unquote(url[len("sqlite:///"):]) if url.lower().startswith("sqlite:///") else ""
    if not path or "?" in path or "\x00" in path:
        raise StorageError(f"a SQLite URL names a file: sqlite:///PATH, got {url[:80]!r}")
    try:
        os.fsencode(path)
    except UnicodeError:
        raise StorageError(f"the SQLite file name is not valid text: {url[:80]!r}") from None
    file = Path(path)
    try:
        if file.is_dir():
            raise StorageError(f"{path} is a directory; name a database file inside it")
        if not file.parent.exists():
            raise StorageError(f"directory {file.parent} does not exist; create it first")
    except OSError as err:  # e.g. a file name too long for the file system
        raise StorageError(f"cannot use {path[:80]!r}: {err.strerror or err}") from None
    # The path is decoded once; the SQLAlchemy URL quotes it again, so that SQLAlchemy's own
    # decoding gives the same file the event store opens (``%25`` named two files before).
    reads_url = URL.create("sqlite", database=str(file)).render_as_string()
    return StorageConfig("sqlite", _sqlite_env(str(file)), reads_url, f"sqlite:///{file}")


def _memory() -> StorageConfig:
    tmp = tempfile.mkdtemp(prefix="wallet-ledger-")
    path = str(Path(tmp) / "ledger.db")
    return StorageConfig("memory", _sqlite_env(path), f"sqlite:///{path}", "memory://",
                         cleanup_dir=tmp)


def _postgres(url: str) -> StorageConfig:
    try:
        parts = urlsplit(url)
        port = parts.port or 5432
    except ValueError as err:
        raise StorageError(f"malformed PostgreSQL URL: {err}") from None
    dbname = parts.path.lstrip("/")
    if not parts.hostname or not dbname or "/" in dbname:
        raise StorageError(
            f"a PostgreSQL URL is postgresql://USER@HOST:PORT/DBNAME, got {url[:80]!r}")
    user = unquote(parts.username or "postgres")
    password = unquote(parts.password or "")
    query = parse_qs(parts.query)
    schema = query.get("schema", [""])[0]
    if schema and not _IDENTIFIER.match(schema):
        raise StorageError(f"schema must be a plain SQL identifier, got {schema[:70]!r}")
    env = {**_BASE_ENV, "PERSISTENCE_MODULE": "eventsourcing.postgres",
           "POSTGRES_DBNAME": dbname, "POSTGRES_HOST": parts.hostname,
           "POSTGRES_PORT": str(port), "POSTGRES_USER": user, "POSTGRES_PASSWORD": password,
           "POSTGRES_CONNECT_TIMEOUT": "5", "POSTGRES_POOL_SIZE": "4",
           "POSTGRES_LOCK_TIMEOUT": "30",
           "APPLICATION_RECORDER_TOPIC": "adapters.persistence:InlinePostgresRecorder"}
    if schema:
        env["POSTGRES_SCHEMA"] = schema
    auth = user + (f":{parts.password}" if parts.password else "")
    sa_url = f"postgresql+psycopg://{auth}@{parts.hostname}:{port}/{dbname}"
    if schema:
        sa_url += f"?options=-csearch_path%3D{schema}"
    return StorageConfig("postgresql", env, sa_url,
                         f"postgresql://{user}@{parts.hostname}:{port}/{dbname}",
                         extra={"schema": schema or "public"})
