"""The inline projection reuses the rows of its last committed batch only while nobody else has
written the projection since (ADR 0005, "kept rows"). Two ledgers on one database, as two
processes would be: one of them changes a row the other keeps, through aggregates the other
never touches, so only the projection's position tells the other that its rows went stale.

On PostgreSQL a batch whose rows are all kept checks the position in the same round trip as
its writes; a stale check refuses the append and the command decides again from fresh reads.
The spy below tells the two outcomes apart: with the position check removed, the first test
fails on it (the rows of that scenario then happen to stay right, so the rebuild comparison
alone would not notice).
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import new_pg_schema

from adapters.world import World
from ledger import Ledger, ProviderResult
from projections import inline
from projections.inline import InlineProjection, StaleDecision
from projections.replay import iterate_fields


@pytest.fixture
def deferred(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Outcomes of the batches checked with their writes: "ok" or "stale"."""
    outcomes: list[str] = []
    original = InlineProjection._project_deferred

    def spy(self: InlineProjection, *args: Any, **kwargs: Any) -> None:
        try:
            original(self, *args, **kwargs)
        except StaleDecision:
            outcomes.append("stale")
            raise
        outcomes.append("ok")

    monkeypatch.setattr(InlineProjection, "_project_deferred", spy)
    return outcomes


def _outputs(led: Ledger, user: str) -> list[Any]:
    return [o.model_dump() for o in led.list_outputs(user, spendable=None).items]


def test_kept_rows_another_writer_changed_are_read_again(ledger_url: str,
                                                         deferred: list[str]) -> None:
    with Ledger.open(ledger_url) as a, Ledger.open(ledger_url) as b:
        world = World(a)
        world.mine_empty(2)
        (funding,) = world.fund("alice", [10_000])  # at the tip: unconfirmed
        raw, _ = world.spend("alice", "pay", [funding], [(6_000, world.script()), (3_800, None)])
        paid = a.sign_action("alice", "pay", raw_tx=raw).txid
        assert a.get_transaction(paid).state != "failed"
        # b aborts a's payment: the funding output is released (spendable again), in a write
        # a's kept rows know nothing of
        b.abort_action("alice", "pay", reason="customer cancelled")
        assert [o.spendable for o in a.list_outputs("alice").items] == [True]
        # a reorgs the funding's block: the output row is classified again (what a reorg
        # preserves depends on whether it was spendable), from the kept row -- reserved, stale --
        # unless a sees that the projection moved
        world.reorg(1, [[], []], salt="fork")
        assert a.get_transaction(funding.txid).state == "reorging"
        assert a.verify_projections().ok
        seen = _outputs(a, "alice")
        a.rebuild_projections()
        assert seen == _outputs(a, "alice"), "the inline rows are what a rebuild makes"
    if ledger_url.startswith("postgresql"):
        assert "stale" in deferred, "the batch on kept rows was checked with its writes"
        assert "ok" in deferred, "and batches nobody raced committed that way"
    else:
        assert deferred == [], "SQLite reads the pointer before projecting (no round trips)"


@pytest.mark.postgres
def test_a_failed_burst_on_kept_rows_writes_nothing_and_the_retry_succeeds(
        pg_database: str, deferred: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst that fails (here: a driver error) is treated as stale too: the append is refused
    whole, and the command's retry reads afresh and commits once. (PostgreSQL only: SQLite
    checks before it writes, having no round trip to save.)"""
    with Ledger.open(new_pg_schema(pg_database)) as led:
        world = World(led)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [1_000])
        events = len(list(iterate_fields(led._log)))
        failures = iter([True])
        flush = inline.SqlRowStore.flush

        def failing_once(self: Any, first: Any = ()) -> Any:
            if first and next(failures, False):
                import psycopg
                raise psycopg.errors.UniqueViolation("a row another writer created")
            return flush(self, first)

        monkeypatch.setattr(inline.SqlRowStore, "flush", failing_once)
        deferred.clear()
        led.note(funding.txid, "checked by an operator")
        assert deferred == ["stale"], "refused on its first attempt; the retry read afresh"
        assert len(list(iterate_fields(led._log))) == events + 1, "the refused append left no event"
        assert [e.event for e in led.history(funding.txid)].count("history.note") == 1
        assert led.verify_projections().ok


def test_a_kept_row_that_contradicts_the_batch_is_read_again(ledger_url: str,
                                                             deferred: list[str]) -> None:
    """The stream cache forgot a transaction whose row the projection still keeps; another
    writer moved it on. The command reads the transaction afresh and decides from there, and
    its event then moves from a state the kept row does not hold."""
    with Ledger.open(ledger_url) as a, Ledger.open(ledger_url) as b:
        world = World(a)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        raw, _ = world.spend("alice", "pay", [funding], [(6_000, world.script()), (3_800, None)])
        paid = a.sign_action("alice", "pay", raw_tx=raw).txid
        b.transition(paid, "sending", reason="broadcast")
        app: Any = a._app
        app._streams.evict(list(app._streams._items))  # as if evicted by 20,000 newer streams
        deferred.clear()
        view = a.record_broadcast(paid, [ProviderResult(provider="arc", status="success")])
        assert view.state == "sent" and a.get_transaction(paid).state == "sent"
        assert a.verify_projections().ok
    if ledger_url.startswith("postgresql"):
        assert deferred[0] == "stale", "the first attempt projected on the contradicting row"


def test_a_switch_to_catch_up_mode_between_two_saves_is_seen_by_the_next(
        ledger_url: str, deferred: list[str]) -> None:
    """Another process switches the projection to catch-up mode: this writer's next save, on
    rows it keeps, projects nothing, and the catch-up run projects it exactly once."""
    with Ledger.open(ledger_url) as a:
        world = World(a)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        a.note(funding.txid, "first look")
        with Ledger.open(ledger_url, projections="catchup") as b:
            deferred.clear()
            a.note(funding.txid, "second look")  # appended; the projection is not a's to write

            def notes() -> int:
                return sum(e.event == "history.note" for e in b.history(funding.txid))

            assert notes() == 1, "not projected inline after the switch"
            assert b.run_projections() == 1
            assert notes() == 2 and b.run_projections() == 0, "projected exactly once"
            assert b.verify_projections().ok
    if ledger_url.startswith("postgresql"):
        assert deferred == ["stale"], "the kept-row save saw the switch with its writes"


@pytest.mark.postgres
def test_writers_that_take_turns_are_not_refused_save_after_save(
        pg_database: str, deferred: list[str]) -> None:
    """Checking with the writes pays off only while a process writes alone: a refused save runs
    the whole command again. Two ledgers taking turns must therefore read first (one round trip
    more each) instead of being refused every time; one writing alone checks with its writes."""
    url = new_pg_schema(pg_database)
    with Ledger.open(url) as a, Ledger.open(url) as b:
        world = World(a)
        world.mine_empty(1)
        (ours,) = world.fund("alice", [1_000])
        (theirs,) = world.fund("bob", [2_000])
        deferred.clear()
        for turn in range(10):
            a.note(ours.txid, f"turn {turn}")
            b.note(theirs.txid, f"turn {turn}")
        assert deferred.count("stale") <= 2, deferred
        deferred.clear()
        for turn in range(5):
            a.note(ours.txid, f"alone {turn}")
        assert deferred.count("ok") >= 3, deferred
        assert a.verify_projections().ok
