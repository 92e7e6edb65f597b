"""Sealed configuration: the host process's environment cannot move or reshape the ledger's log.

``eventsourcing`` merges ``os.environ`` into an application's settings. A wallet embedding the
ledger may well run with ``PERSISTENCE_MODULE``, ``POSTGRES_DBNAME`` or ``COMPRESSOR_TOPIC`` set
for its *own* event-sourced services. The incidents these tests prevent: the ledger silently
writing to an in-memory store (every payment gone at exit), into another service's database or
schema, or in a compressed/encrypted format that a process without the same variables (the
operator's CLI, the catch-up projector) cannot read.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from procs import Child, Writer, barrier, check_acknowledged, log_head, raw_events

from adapters.world import World
from ledger import Ledger, NewOutput

USER = "alice"


@dataclass(frozen=True)
class Decoy:
    """Where a host's settings point instead of the ledger's URL."""

    sqlite_path: Path
    pg_base: str | None = None
    pg_schema: str | None = None

    def pg(self) -> dict[str, str]:
        assert self.pg_base and self.pg_schema
        _, _, rest = self.pg_base.partition("://")
        user_host, _, dbname = rest.partition("/")
        user, _, hostport = user_host.rpartition("@")
        host, _, port = hostport.partition(":")
        return {"POSTGRES_DBNAME": dbname, "POSTGRES_HOST": host, "POSTGRES_PORT": port or "5432",
                "POSTGRES_USER": user or "postgres", "POSTGRES_SCHEMA": self.pg_schema}


Hostile = Callable[[Decoy], dict[str, str]]

GROUPS: dict[str, Hostile] = {
    "in-memory-store": lambda d: {"PERSISTENCE_MODULE": "eventsourcing.popo"},
    "other-sqlite-file": lambda d: {"PERSISTENCE_MODULE": "eventsourcing.sqlite",
                                    "SQLITE_DBNAME": str(d.sqlite_path)},
    "other-postgres-schema": lambda d: {"PERSISTENCE_MODULE": "eventsourcing.postgres",
                                        "CREATE_TABLE": "y", **d.pg()},
    "snapshotting-off": lambda d: {"IS_SNAPSHOTTING_ENABLED": "n"},
    "compressed": lambda d: {"COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"},
    "encrypted": lambda d: {"CIPHER_TOPIC": "procs:XorCipher", "CIPHER_KEY": "x"},
    "other-recorder": lambda d: {
        "APPLICATION_RECORDER_TOPIC": "eventsourcing.popo:POPOApplicationRecorder"},
    "db-functions-and-no-tables": lambda d: {"POSTGRES_ENABLE_DB_FUNCTIONS": "y",
                                             "CREATE_TABLE": "n"},
    "app-prefixed-names": lambda d: {  # Environment.get tries WALLETLEDGER_<NAME> first
        "WALLETLEDGER_PERSISTENCE_MODULE": "eventsourcing.popo",
        "WALLETLEDGER_SQLITE_DBNAME": str(d.sqlite_path),
        "WALLETLEDGER_COMPRESSOR_TOPIC": "eventsourcing.compressor:ZlibCompressor"},
}
NEEDS_PG = {"other-postgres-schema"}


def _decoy(request: pytest.FixtureRequest, tmp_path: Path, *, pg: bool) -> Decoy:
    sqlite_path = tmp_path / "elsewhere" / "elsewhere.db"
    sqlite_path.parent.mkdir()
    if not pg:
        return Decoy(sqlite_path)
    base: str = request.getfixturevalue("pg_database")
    schema = f"decoy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
    return Decoy(sqlite_path, base, schema)


def _assert_decoy_untouched(decoy: Decoy) -> None:
    assert not decoy.sqlite_path.exists(), "the host's SQLITE_DBNAME received the ledger"
    if decoy.pg_base:
        with psycopg.connect(decoy.pg_base, autocommit=True) as conn:
            tables = conn.execute("SELECT table_name FROM information_schema.tables "
                                  "WHERE table_schema = %s", (decoy.pg_schema,)).fetchall()
        assert tables == [], f"the host's POSTGRES_SCHEMA received {tables}"


def _assert_stored_as_ledger_json(url: str, head: int) -> None:
    """The URL's database holds every event, under stable topics, as plain JSON."""
    events = raw_events(url)
    assert events, "no event reached the URL's database"
    assert events[-1][0] == head == log_head(url)
    for position, topic, state in events:
        assert topic.startswith("ledger."), (position, topic)
        assert isinstance(json.loads(state), dict), f"event {position} is not plain JSON"


def _snapshots(url: str) -> int:
    if url.startswith("sqlite:///"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):])
        try:
            return int(conn.execute("SELECT count(*) FROM stored_snapshots").fetchone()[0])
        finally:
            conn.close()
    base, _, query = url.partition("?schema=")
    with psycopg.connect(base, autocommit=True) as pg:
        row = pg.execute(f'SELECT count(*) FROM "{query}".walletledger_snapshots').fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_the_host_environment_cannot_redirect_or_reshape_the_log(
        ledger_url: str, group: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        request: pytest.FixtureRequest) -> None:
    decoy = _decoy(request, tmp_path, pg=group in NEEDS_PG)
    hostile = GROUPS[group](decoy)
    for name, value in hostile.items():
        monkeypatch.setenv(name, value)

    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(100 if group == "snapshotting-off" else 2)
        (op,) = world.fund(USER, [7_000])
        led.create_action(USER, "pay", description="sealed", inputs=[op],
                          outputs=[NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)])
        head, balance = led.head_position(), led.balance(USER)
    with Ledger.open(ledger_url) as led:  # same hostile process, reopened: same log
        assert led.head_position() == head

    _assert_stored_as_ledger_json(ledger_url, head)
    _assert_decoy_untouched(decoy)
    if group == "snapshotting-off":
        assert _snapshots(ledger_url) >= 1, "the chain's snapshot interval was switched off"

    for name in hostile:
        monkeypatch.delenv(name)
    with Ledger.open(ledger_url) as led:  # a process without the variables reads it all
        assert led.head_position() == head
        assert led.balance(USER) == balance
        assert led.get_action(USER, "pay").description == "sealed"
        assert led.verify_projections().ok


def _all_at_once(decoy: Decoy) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name in sorted(GROUPS):
        if name not in NEEDS_PG:
            merged.update(GROUPS[name](decoy))
    merged["PERSISTENCE_MODULE"] = "eventsourcing.popo"
    return merged


def _funded(url: str, n: int) -> list[str]:
    with Ledger.open(url) as led:
        world = World(led)
        world.mine_empty(2)
        return [str(o) for o in world.fund(USER, [3_000 + i for i in range(n)])]


@pytest.mark.slow
def test_a_process_with_a_hostile_environment_writes_what_a_clean_one_reads(
        ledger_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The realistic shape: a wallet service with every one of those variables set runs the
    commands; the operator's shell (no such variables) opens the same URL and sees them all."""
    decoy = _decoy(request, tmp_path, pg=False)
    writer = Writer("hostile", USER, _funded(ledger_url, 6))
    writer.child = Child("writer", {"url": ledger_url, "user": USER, "name": writer.name,
                                    "outpoints": writer.outpoints}, env=_all_at_once(decoy))
    try:
        barrier([writer.child])
        writer.child.expect("ack")
        while writer.child.recv() is not None:
            pass
        writer.child.wait()
    finally:
        writer.child.close()
    assert writer.child.count("done") == 1 and writer.acks() == 6 * 4
    with Ledger.open(ledger_url) as led:
        assert check_acknowledged(led, [writer])["ack"] == 24
        _assert_stored_as_ledger_json(ledger_url, led.head_position())
        assert led.verify_projections().ok
    _assert_decoy_untouched(decoy)


class NotUtc(Exception):
    """An event timestamp carries the host's configured offset instead of UTC."""


@pytest.mark.slow
def test_event_timestamps_are_utc_whatever_the_host_timezone_setting(ledger_url: str) -> None:
    """An operator's incident query ``ORDER BY created_at`` over ``tx_audit`` must not interleave
    rows written by processes in different configured zones."""
    writer = Writer("tz", USER, _funded(ledger_url, 1))
    writer.child = Child("writer", {"url": ledger_url, "user": USER, "name": writer.name,
                                    "outpoints": writer.outpoints},
                         env={"TZINFO_TOPIC": "datetime:timezone.min"})
    try:
        barrier([writer.child])
        while writer.child.recv() is not None:
            pass
        writer.child.wait()
    finally:
        writer.child.close()
    txids = {m["txid"] for m in writer.messages if "txid" in m}
    assert txids
    assert writer.child.count("done") == 1
    with Ledger.open(ledger_url) as led:
        check_acknowledged(led, [writer])
        shifted = [e for txid in txids for e in led.history(txid) if e.at.utcoffset() != timedelta(0)]
    stamps = [json.loads(state)["timestamp"]["_data_"] for _, _, state in raw_events(ledger_url)]
    stored = [s for s in stamps if not s.endswith("+00:00")]
    if shifted or stored:
        raise NotUtc(f"{len(shifted)} audit rows and {len(stored)} stored events are not UTC, "
                     f"e.g. {stored[:1]}")
