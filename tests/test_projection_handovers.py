"""Hand-overs of the projection between writers: a switch to inline mode, and a rebuild that
empties the table set it swapped out. Each once let a writer in at the wrong moment.

- A switch to inline committed the mode first and caught up afterwards, in another transaction.
  An inline writer in between projected its batch on a projection that was behind the log and
  recorded its own position: the events before it were never projected (verify failed, and an
  action's rows were missing).
- A rebuild dropped and re-created the old set's tables without holding the writers off. A
  writer still betting on that set held one of its tables while waiting for another the drop
  held: PostgreSQL broke the deadlock by failing the writer's command.
- A switch to inline that does not wait for a catch-up page under way projects that page's
  events too: one of the two fails on the audit row the other wrote (here: the switch).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from conftest import new_pg_schema
from procs import Child, Writer, barrier, check_acknowledged, check_one_holder, wait_for

from adapters.world import World
from ledger import Ledger, NewOutput
from projections import replay

WAIT_S = 20.0


def _notes(led: Ledger, txid: str) -> int:
    return sum(e.event == "history.note" for e in led.history(txid))


def test_a_write_while_switching_to_inline_is_projected_exactly_once(
        ledger_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with Ledger.open(ledger_url) as writer:
        world = World(writer)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        with Ledger.open(ledger_url, projections="catchup"):
            pass  # an operator's process switched to catch-up mode, and exited
        writer.create_action("alice", "pay", description="rent", inputs=[funding], outputs=[
            NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)])
        writer.note(funding.txid, "written in catch-up mode")
        real = replay.catch_up
        raced: list[bool] = []

        def catch_up_with_a_write_first(*args: Any, **kwargs: Any) -> int:
            if not raced:  # the writer saves once more, while another process switches back
                writer.note(funding.txid, "written during the switch")
                raced.append(True)
            return real(*args, **kwargs)

        monkeypatch.setattr(replay, "catch_up", catch_up_with_a_write_first)
        with Ledger.open(ledger_url, projections="inline") as switcher:
            monkeypatch.setattr(replay, "catch_up", real)
            assert raced, "the write came in while the switch was under way"
            report = switcher.verify_projections()
            assert report.ok, report.differences[:3]
            assert report.position == switcher.head_position()
            assert _notes(switcher, funding.txid) == 2
            assert "pay" in [a.reference for a in switcher.list_actions("alice").items]
            assert switcher.run_projections() == 0, "nothing left for a catch-up run"
        writer.note(funding.txid, "written inline after the switch")
        assert _notes(writer, funding.txid) == 3 and writer.verify_projections().ok


def _waiting_backends(conn: psycopg.Connection[Any], other_than: int) -> int:
    row = conn.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> %s",
                       (other_than,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.postgres
def test_emptying_a_swapped_out_set_waits_for_a_writer_still_reading_it(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer's append in the middle of reading the old set when the rebuild empties it: the
    rebuild waits for the writer's commit, and the writer reads every table it bet on."""
    url = new_pg_schema(pg_database)
    schema = url.split("?schema=")[1]
    with Ledger.open(url) as led:
        World(led).fund("alice", [1_000, 2_000])
        real = replay._empty_set
        outcome: dict[str, str] = {}

        def empty_with_a_writer_inside(db: Any, log: Any, prefix: str, *, indexes: bool) -> None:
            if prefix != "a_":  # the rebuild's target at its start: nobody reads it
                return real(db, log, prefix, indexes=indexes)
            # a writer that still bets on a_ (the set swapped out) is inside its append: the
            # writers' lock taken, one table of a_ read, the next ones still to read
            writer = psycopg.connect(pg_database, autocommit=True)
            writer.execute("BEGIN")
            writer.execute(f'LOCK TABLE "{schema}"."walletledger_events" IN EXCLUSIVE MODE')
            writer.execute(f'SELECT 1 FROM "{schema}"."a_outputs" LIMIT 1')
            pid = writer.info.backend_pid

            def read_the_rest() -> None:
                with psycopg.connect(pg_database, autocommit=True) as watch:
                    deadline = time.monotonic() + WAIT_S
                    while not _waiting_backends(watch, pid) and time.monotonic() < deadline:
                        time.sleep(0.01)  # until the rebuild's backend waits for a lock
                try:
                    for table in ("a_transactions", "a_actions", "a_tx_audit", "a_meta"):
                        writer.execute(f'SELECT 1 FROM "{schema}"."{table}" LIMIT 1')
                    writer.execute("COMMIT")
                    outcome["writer"] = "committed"
                except psycopg.Error as err:
                    outcome["writer"] = f"{type(err).__name__}: {err}"
                finally:
                    writer.close()

            thread = threading.Thread(target=read_the_rest)
            thread.start()
            try:
                real(db, log, prefix, indexes=indexes)
            finally:
                thread.join(WAIT_S)
            return None

        monkeypatch.setattr(replay, "_empty_set", empty_with_a_writer_inside)
        led.rebuild_projections()
        assert outcome == {"writer": "committed"}
        assert led.verify_projections().ok


HANDOVER_ROUNDS = 12


@pytest.mark.slow
def test_writers_in_three_processes_survive_mode_switches_and_rebuilds(ledger_url: str) -> None:
    """Two wallet processes contend for the same outpoints while an operator's process switches
    the projection to catch-up mode and back and rebuilds it, over and over: every command a
    writer acknowledged is there, no outpoint has two live holders, and the projection equals
    a rebuild at the log's head. (Before the switch held writers off, a writer crashed here in
    two runs of three: it projected an event of an action the lagging projection lacked.)"""
    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(2)
        amounts = [3_000 + 13 * i for i in range(30)]
        ops = [str(o) for o in world.fund("alice", amounts)]
    writers = [Writer("h1", "alice", ops), Writer("h2", "alice", ops[::-1])]
    children = [w.start(ledger_url) for w in writers]
    operator = Child("handover", {"url": ledger_url, "rounds": HANDOVER_ROUNDS})
    try:
        barrier([*children, operator])
        wait_for([*children, operator],
                 lambda: all(c.count("done") for c in [*children, operator]),
                 "the writers and the operator to finish")
        assert operator.count("round") == HANDOVER_ROUNDS
        with Ledger.open(ledger_url) as led:
            assert led.projection_mode == "inline"
            check_acknowledged(led, writers)
            check_one_holder(led, writers, dict(zip(ops, amounts, strict=True)))
            report = led.verify_projections()
            assert report.ok, report.differences[:3]
            assert report.position == led.head_position()
    finally:
        for c in [*children, operator]:
            c.close()


@pytest.mark.postgres
def test_a_switch_to_inline_waits_for_a_catch_up_page_under_way(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catch-up process is inside a page (rows written, not committed) when the switch to
    inline reaches its last step: the switch waits for that page, then projects only what the
    page left, so the page commits and no event is projected twice."""
    url = new_pg_schema(pg_database)
    with Ledger.open(url) as led:
        world = World(led)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [1_000])
    with Ledger.open(url, projections="catchup") as writer, \
            Ledger.open(url, projections="catchup") as projector:
        real_catch_up, real_page = replay.catch_up, replay._apply_page
        inside, release, outcome = threading.Event(), threading.Event(), {}

        def page(cur: Any, statements: Any, log: Any, n_events: int) -> int:
            n = real_page(cur, statements, log, n_events)
            if threading.current_thread().name == "catch-up page" and n:
                inside.set()
                release.wait(WAIT_S)
            return n

        def the_page() -> None:
            try:
                outcome["page"] = real_catch_up(projector._db, projector._log, max_pages=1)
            except Exception as err:
                outcome["page"] = f"{type(err).__name__}: {err}"

        def catch_up_then_a_page_starts(*args: Any, **kwargs: Any) -> int:
            done = real_catch_up(*args, **kwargs)  # the switch's first part: nothing pending
            for n in range(3):
                writer.note(funding.txid, f"appended in catch-up mode {n}")
            threading.Thread(target=the_page, name="catch-up page").start()
            assert inside.wait(WAIT_S), "the catch-up page started"
            threading.Thread(target=release_once_the_switch_waits).start()
            return done

        def release_once_the_switch_waits() -> None:
            with psycopg.connect(pg_database, autocommit=True) as watch:
                deadline = time.monotonic() + WAIT_S
                while not _waiting_backends(watch, -1) and time.monotonic() < deadline:
                    time.sleep(0.01)
            release.set()

        monkeypatch.setattr(replay, "_apply_page", page)
        monkeypatch.setattr(replay, "catch_up", catch_up_then_a_page_starts)
        with Ledger.open(url, projections="inline") as switcher:
            monkeypatch.setattr(replay, "catch_up", real_catch_up)
            assert outcome == {"page": 3}, "the page committed whole"
            report = switcher.verify_projections()
            assert report.ok, report.differences[:3]
            assert report.position == switcher.head_position()
            assert _notes(switcher, funding.txid) == 3
