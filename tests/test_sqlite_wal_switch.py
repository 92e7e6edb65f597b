"""Processes opening a fresh SQLite file at the same moment must all succeed.

Found as a flaky failure of ``test_processes_opening_one_database_at_once_all_succeed`` on a
loaded machine (2 runs in 25 with two CPU hogs beside it): a child died at start-up with
"database is locked" from ``PRAGMA journal_mode=WAL``. SQLite answers so at once, without
waiting, where waiting could deadlock. The switch is now tried again, with pauses, for as long
as the connection's lock timeout. A fake connection makes each outcome certain here."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from adapters.persistence import LedgerSQLiteConnectionPool


class FakeConnection:
    """Answers ``PRAGMA journal_mode`` statements from a script: an exception to raise, or the
    mode to report."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.statements: list[str] = []

    def execute(self, statement: str) -> FakeConnection:
        self.statements.append(statement)
        step = self.script.pop(0)
        if isinstance(step, Exception):
            raise step
        self._row = (step,)
        return self

    def fetchone(self) -> tuple[str]:
        return self._row


def _pool(tmp_path: Path) -> LedgerSQLiteConnectionPool:
    return LedgerSQLiteConnectionPool(db_name=str(tmp_path / "ledger.db"), lock_timeout=5)


def _locked() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("database is locked")


def test_a_switch_that_loses_the_race_tries_again_and_gets_through(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    conn = FakeConnection(["delete", _locked(), _locked(), "delete", "wal"])
    pool._to_wal(conn, timeout_s=5)  # type: ignore[arg-type]
    assert conn.statements.count("PRAGMA journal_mode=WAL;") == 2
    assert conn.script == [] and pool.journal_mode_was_changed_to_wal


def test_a_database_already_in_wal_mode_is_left_alone(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    conn = FakeConnection(["wal"])
    pool._to_wal(conn, timeout_s=5)  # type: ignore[arg-type]
    assert conn.statements == ["PRAGMA journal_mode;"]
    assert not pool.journal_mode_was_changed_to_wal


def test_another_error_is_not_retried(tmp_path: Path) -> None:
    conn = FakeConnection([sqlite3.OperationalError("disk I/O error"), "wal"])
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _pool(tmp_path)._to_wal(conn, timeout_s=5)  # type: ignore[arg-type]
    assert len(conn.statements) == 1


def test_a_lock_that_outlasts_the_timeout_is_reported(tmp_path: Path) -> None:
    conn = FakeConnection([_locked()] * 100)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _pool(tmp_path)._to_wal(conn, timeout_s=0.05)  # type: ignore[arg-type]
    assert 2 <= len(conn.statements) < 100


def test_a_real_file_is_put_in_wal_mode(tmp_path: Path) -> None:
    pool = _pool(tmp_path)
    conn = sqlite3.connect(tmp_path / "ledger.db", isolation_level=None)
    try:
        pool._to_wal(conn, timeout_s=5)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()
