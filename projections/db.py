"""Raw transactions on the ledger's database, for projection maintenance (DDL, catch-up pages,
rebuild loads, swaps, snapshots for verify). Reads for queries go through SQLAlchemy Core."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

from sqlalchemy import Engine, create_engine

Dialect = Literal["sqlite", "postgresql"]
SQLITE_BUSY_TIMEOUT_S = 30


def make_engine(url: str, *, reads: bool = False) -> Engine:
    """A SQLAlchemy engine for ``url`` with settings the ledger relies on. ``reads``: for
    queries, each statement on its own (autocommit), so a query costs no BEGIN and no
    ROLLBACK round trip on PostgreSQL; every query is one statement, atomic on its own."""
    options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if reads else {}
    if url.startswith("sqlite"):
        return create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}, **options)
    return create_engine(url, pool_size=4, max_overflow=4, pool_pre_ping=True, **options)


class WriterBusy(Exception):
    """Another connection holds SQLite's write lock, and the transaction was asked not to wait."""


class Database:
    """Explicit transactions over DB-API cursors of the ledger's database.

    ``write=True`` takes the write lock at the start (SQLite ``BEGIN IMMEDIATE``), so a
    maintenance transaction never fails half-way on a lock upgrade; with ``wait=False`` a
    SQLite write lock held elsewhere raises :class:`WriterBusy` at once instead of waiting up to
    ``SQLITE_BUSY_TIMEOUT_S`` (PostgreSQL has no such lock). ``snapshot=True`` gives a
    consistent read of many tables (PostgreSQL ``REPEATABLE READ``; SQLite read transactions are
    snapshots under WAL).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect: Dialect = "postgresql" if engine.dialect.name == "postgresql" else "sqlite"

    @contextmanager
    def transaction(self, *, write: bool, snapshot: bool = False,
                    wait: bool = True) -> Iterator[Any]:
        raw = self.engine.raw_connection()
        dbapi: Any = raw.driver_connection
        try:
            if self.dialect == "sqlite":
                dbapi.isolation_level = None
                cur = dbapi.cursor()
                if write and not wait:
                    _begin_now(cur)
                else:
                    cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            else:
                cur = dbapi.cursor()
                if snapshot:
                    cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            try:
                yield cur
            except BaseException:
                dbapi.rollback() if self.dialect == "postgresql" else cur.execute("ROLLBACK")
                raise
            if self.dialect == "sqlite":
                cur.execute("COMMIT" if write else "ROLLBACK")
            else:
                dbapi.commit() if write else dbapi.rollback()
        finally:
            raw.close()

    def dispose(self) -> None:
        self.engine.dispose()


def lock_contended(err: sqlite3.Error) -> bool:
    """SQLite refused because another connection holds a lock ("database is locked", or
    busy): worth another try, unlike any other error."""
    text = str(err)
    return "locked" in text or "busy" in text


def _begin_now(cur: Any) -> None:
    """``BEGIN IMMEDIATE`` without waiting for another connection's write lock."""
    cur.execute("PRAGMA busy_timeout = 0")
    try:
        cur.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as err:
        if lock_contended(err):
            raise WriterBusy(str(err)) from err
        raise
    finally:
        cur.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_S * 1000}")
