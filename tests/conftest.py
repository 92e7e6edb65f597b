"""Backends for the test suite: every ``led`` test runs on a SQLite file and on PostgreSQL.

PostgreSQL tests get a private schema in a per-run database that is dropped afterwards. With
``LEDGER_REQUIRE_POSTGRES=1`` (CI) an unreachable server fails the run instead of skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from adapters.world import World
from ledger import Ledger

PG_URL = os.environ.get("LEDGER_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("LEDGER_REQUIRE_POSTGRES") == "1"


def _pg_reachable() -> str | None:
    try:
        with psycopg.connect(PG_URL, connect_timeout=3):
            return None
    except psycopg.Error as err:
        return str(err).strip().splitlines()[0]


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for this test run; yields its base URL (without schema)."""
    problem = _pg_reachable()
    if problem:
        if REQUIRE_PG:
            pytest.fail(f"PostgreSQL required (LEDGER_REQUIRE_POSTGRES=1) but unreachable: {problem}")
        pytest.skip(f"PostgreSQL unreachable: {problem}")
    name = f"wl_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    yield base
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def new_pg_schema(base_url: str) -> str:
    """A private schema in the run's database; returns a ledger URL that uses it."""
    schema = f"s_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{base_url}?schema={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for an empty ledger on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    base: str = request.getfixturevalue("pg_database")
    return new_pg_schema(base)


@pytest.fixture
def led(ledger_url: str) -> Iterator[Ledger]:
    with Ledger.open(ledger_url) as ledger:
        yield ledger


@pytest.fixture
def world(led: Ledger) -> World:
    """A ledger with five empty blocks applied."""
    w = World(led)
    w.mine_empty(5)
    return w
