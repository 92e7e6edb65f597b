"""Processes opening a fresh PostgreSQL schema at the same moment must all succeed.

Found as a flaky failure of ``test_processes_opening_one_database_at_once_all_succeed``: a child
died with ``duplicate key value violates unique constraint "pg_type_typname_nsp_index"``. The
incident: two wallet workers (or a worker and the CLI) deployed against a new schema start
together and one of them crashes at start-up.

The race is made certain here instead of left to the scheduler: an uncommitted ``CREATE TABLE``
of the same name holds both children inside their snapshot-table DDL (PostgreSQL makes them wait
on its catalog row); when it rolls back, both insert the catalog row at once.
"""

from __future__ import annotations

import psycopg
import pytest
from conftest import new_pg_schema
from procs import Child, ChildFailed, barrier, dismiss, poll_until

from ledger import Ledger


class DdlRace(Exception):
    """A process failed to open because another one created the same table at the same time."""


def _waiting_on_locks(base: str, tags: list[str]) -> bool:
    with psycopg.connect(base, autocommit=True) as conn:
        row = conn.execute("SELECT count(DISTINCT application_name) FROM pg_stat_activity "
                           "WHERE application_name = ANY(%s) AND wait_event_type = 'Lock'",
                           (tags,)).fetchone()
    return row is not None and row[0] == len(tags)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_processes_creating_the_snapshot_table_at_once_both_open(pg_database: str) -> None:
    url = new_pg_schema(pg_database)
    schema = url.split("schema=", 1)[1]
    children = [Child("open", {"url": url}) for _ in range(2)]
    try:
        with psycopg.connect(pg_database) as blocker:
            blocker.execute(f'CREATE TABLE "{schema}"."walletledger_snapshots" ("x" integer)')
            barrier(children)
            poll_until(lambda: _waiting_on_locks(pg_database, [c.tag for c in children]),
                       "both openers to wait inside their snapshot-table DDL")
            blocker.rollback()
        try:
            results = [c.expect("result") for c in children]
        except ChildFailed as err:
            if "duplicate key value" in str(err):
                raise DdlRace(str(err).splitlines()[0]) from err
            raise
        assert [r["mode"] for r in results] == ["inline", "inline"]
        dismiss(children)
    finally:
        for c in children:
            c.close()
    with Ledger.open(url) as led:
        assert led.verify_projections().ok
