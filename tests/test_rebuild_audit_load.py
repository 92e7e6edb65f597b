"""A long log's rebuild loads ``tx_audit`` in a second process (``adapters.audit_loader``).

What that must never change: the rebuilt tables (the same rows as the one-pass rebuild), the
all-or-nothing swap (a failed audit load swaps nothing in), and the idle set after the rebuilding
process dies (its audit process writes nothing more). Run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import Child, barrier
from sqlalchemy import text

from adapters import audit_loader
from adapters.world import World
from ledger import Ledger, ProviderResult, StorageError
from ledger import ProcessingStatus as S
from projections import replay
from projections.schema import PRIMARY_KEYS
from projections.tables import other_prefix, read_pointer

pytestmark = pytest.mark.skipif(not audit_loader.forking_available(),
                                reason="the audit load forks (Linux only)")


@pytest.fixture
def parallel() -> Iterator[None]:
    """Every rebuild in the test loads its audit table in a second process."""
    saved = replay.PARALLEL_AUDIT_MIN_EVENTS
    replay.PARALLEL_AUDIT_MIN_EVENTS = 0
    yield
    replay.PARALLEL_AUDIT_MIN_EVENTS = saved


def _history(world: World) -> str:
    """Every audit row kind whose txid comes from an earlier event: a signed action aborted
    before broadcast, and inputs retaken when an operator unfails their spender."""
    led = world.ledger
    funds = world.fund("alice", [40_000, 30_000], labels=["salary"])
    raw, _ = world.spend("alice", "drop", [funds[0]], [(40_000, world.script())])
    dropped = led.sign_action("alice", "drop", raw_tx=raw).txid
    led.abort_action("alice", "drop", reason="never sent")
    raw, _ = world.spend("alice", "retry", [funds[1]], [(30_000, world.script())])
    txid = led.sign_action("alice", "retry", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="double_spend")])
    led.transition(txid, S.UNFAIL, reason="operator re-review", actor="ops")
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="success")])
    world.prove([txid])
    return dropped


def _tables(led: Ledger) -> dict[str, list[Any]]:
    with led._engine.connect() as conn:
        return {t: sorted(map(tuple, conn.execute(text(f'SELECT * FROM "{t}"'))), key=repr)
                for t in PRIMARY_KEYS}


def _idle_audit_rows(led: Ledger) -> int:
    with led._db.transaction(write=False) as cur:
        live, _ = read_pointer(cur)
        cur.execute(f'SELECT COUNT(*) FROM "{other_prefix(live)}tx_audit"')
        row = cur.fetchone()
    return int(row[0])


def test_the_audit_loaded_beside_the_rebuild_is_the_one_pass_audit(
        led: Ledger, world: World) -> None:
    dropped = _history(world)
    topics = {topic for _, topic, _, _ in replay.iterate_fields(led._log)}
    assert {"ledger.action.ActionAborted", "ledger.action.InputsRetaken"} <= topics
    led.rebuild_projections()  # a short log: one pass
    one_pass = _tables(led)
    replay.PARALLEL_AUDIT_MIN_EVENTS, saved = 0, replay.PARALLEL_AUDIT_MIN_EVENTS
    try:
        report = led.rebuild_projections()
    finally:
        replay.PARALLEL_AUDIT_MIN_EVENTS = saved
    assert report.position == led.head_position()
    assert _tables(led) == one_pass
    assert "action.aborted" in [e.event for e in led.history(dropped)], \
        "the abort's audit row names the txid its action signed earlier"
    assert led.verify_projections().ok


def test_a_failed_audit_load_swaps_nothing_in(led: Ledger, world: World, parallel: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    world.fund("alice", [1_000, 2_000])
    before = _tables(led)
    with led._db.transaction(write=False) as cur:
        live, _ = read_pointer(cur)

    def broken(*args: Any, **kwargs: Any) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(audit_loader, "load_audit", broken)  # the forked child inherits it
    head = led.head_position()
    with pytest.raises(StorageError, match=r"nothing swapped.*disk full"):
        led.rebuild_projections()
    with led._db.transaction(write=False) as cur:
        assert read_pointer(cur)[0] == live
    assert _tables(led) == before and led.head_position() == head
    assert led.balance("alice").spendable == 3_000 and led.verify_projections().ok
    monkeypatch.undo()
    assert led.rebuild_projections().position == head


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                return True  # ended; its new parent has not reaped it yet
        except (ProcessLookupError, FileNotFoundError):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_a_killed_rebuild_leaves_no_audit_writer_behind(ledger_url: str, tmp_path: Path) -> None:
    """``kill -9`` of a rebuilding process whose audit load is still reading: the audit
    process, released afterwards, writes nothing into the idle set and ends; the next rebuild
    runs, and the projections verify."""
    with Ledger.open(ledger_url) as led:
        World(led).fund("alice", [1_000, 2_000, 3_000])
    release = tmp_path / "release-audit"
    child = Child("rebuild", {"url": ledger_url, "audit_release": str(release)})
    try:
        barrier([child])
        child.expect("holding")  # its fold is done; its audit load holds before writing
        loaders = _children_of(child.pid)
        assert len(loaders) == 1, loaders
        child.kill()
        release.touch()
        assert _gone(loaders[0], timeout_s=30), "the audit load outlived its rebuild"
    finally:
        child.close()
    with Ledger.open(ledger_url) as led:
        assert _idle_audit_rows(led) == 0, "the audit load wrote after its rebuild died"
        assert led.rebuild_projections().position == led.head_position()
        assert led.verify_projections().ok and led.balance("alice").spendable == 6_000


def test_a_rebuild_that_cannot_fork_makes_its_audit_rows_itself(
        led: Ledger, world: World, parallel: None, monkeypatch: pytest.MonkeyPatch) -> None:
    world.fund("alice", [1_000, 2_000])
    led.rebuild_projections()
    expected = _tables(led)

    def no_fork(self: Any, prefix: str, upto: int) -> Any:
        raise replay.AuditLoadFailed("cannot fork the audit load: [Errno 11] EAGAIN")

    monkeypatch.setattr(audit_loader.ForkedAuditLoader, "start", no_fork)
    assert led.rebuild_projections().position == led.head_position()
    assert _tables(led) == expected and led.verify_projections().ok


def test_a_fork_while_another_thread_pauses_the_collector_does_not_deadlock_the_child() -> None:
    """The audit process is forked from a host that may run other threads; one of them may be
    inside ``gc_pause`` at that moment, holding its lock, which no thread of the child frees."""
    import multiprocessing
    import threading

    from ledger import gc_pause

    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with gc_pause._lock:
            inside.set()
            leave.wait(timeout=30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert inside.wait(timeout=30)
        child = multiprocessing.get_context("fork").Process(target=_pause_once, daemon=True)
        child.start()
        child.join(timeout=10)
        hung = child.exitcode is None
        if hung:
            child.kill()
            child.join()
        assert not hung and child.exitcode == 0, "the child hung (or failed) on the pause lock"
    finally:
        leave.set()
        holder.join()


def _pause_once() -> None:
    from ledger import gc_pause
    with gc_pause.paused():
        pass


def test_the_audit_load_reads_on_while_the_rebuild_holds_sqlites_writer_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite has one writer: while the rebuild loads its own tables, the audit load must keep
    reading and decoding the log instead of standing still at its next page."""
    import sqlite3
    import threading

    from projections.db import WriterBusy

    path = tmp_path / "busy.db"
    with Ledger.open(f"sqlite:///{path}") as led:
        World(led).fund("alice", [1_000 + i for i in range(10)])
        head = led.head_position()
        with led._db.transaction(write=False) as cur:
            live, _ = read_pointer(cur)
        target = other_prefix(live)
        replay._empty_set(led._db, led._log, target, indexes=False)
        monkeypatch.setattr(replay, "AUDIT_PAGE_ROWS", 3)
        monkeypatch.setattr(replay, "MAX_PENDING_AUDIT_ROWS", 10_000)
        all_read, busy = threading.Event(), []
        unread = replay.iterate_fields

        def reading(log: Any, **kwargs: Any) -> Iterator[Any]:
            yield from unread(log, **kwargs)
            all_read.set()

        monkeypatch.setattr(replay, "iterate_fields", reading)
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(WriterBusy), led._db.transaction(write=True, wait=False):
            pass

        def release() -> None:
            all_read.wait(timeout=10)
            busy.append(all_read.is_set())
            holder.execute("ROLLBACK")

        releaser = threading.Thread(target=release)
        releaser.start()
        assert replay.load_audit(led._db, led._log, target, head) == head
        releaser.join()
        holder.close()
        assert busy == [True], "the audit load stood still while the writer lock was held"
        with led._db.transaction(write=False) as cur:
            cur.execute(f'SELECT COUNT(*) FROM "{target}tx_audit"')
            assert cur.fetchone()[0] == head
        with led._db.transaction(write=True, wait=False):  # free again: no WriterBusy
            pass
