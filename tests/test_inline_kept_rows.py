"""The inline projection reuses the rows of its last committed batch only while nobody else has
written the projection since (ADR 0005, "kept rows"). Two ledgers on one database, as two
processes would be: one of them changes a row the other keeps, through aggregates the other
never touches, so only the projection's position tells the other that its rows went stale.

Every batch reads the pointer and position after the writers' lock and before it projects
(PostgreSQL: in the insert's round trip); when they show another writer, it reads its rows
afresh. The spy below counts those fresh reads: with the position check removed, the first test
fails on it (the rows of that scenario then happen to stay right, so the rebuild comparison
alone would not notice).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from conftest import new_pg_schema

from adapters.world import World
from ledger import Ledger, ProviderResult
from ledger.errors import StorageError
from projections import inline
from projections.inline import InlineProjection
from projections.replay import iterate_fields


@pytest.fixture
def afresh(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per batch whose rows were read afresh, kept rows notwithstanding."""
    batches: list[int] = []
    original = InlineProjection._read_afresh

    def spy(self: InlineProjection, cursor: Any, prefix: str, plan: Any) -> Any:
        batches.append(len(plan.keys))
        return original(self, cursor, prefix, plan)

    monkeypatch.setattr(InlineProjection, "_read_afresh", spy)
    return batches


def _outputs(led: Ledger, user: str) -> list[Any]:
    return [o.model_dump() for o in led.list_outputs(user, spendable=None).items]


def test_kept_rows_another_writer_changed_are_read_again(ledger_url: str,
                                                         afresh: list[int]) -> None:
    with Ledger.open(ledger_url) as a, Ledger.open(ledger_url) as b:
        world = World(a)
        world.mine_empty(2)
        (funding,) = world.fund("alice", [10_000])  # at the tip: unconfirmed
        raw, _ = world.spend("alice", "pay", [funding], [(6_000, world.script()), (3_800, None)])
        paid = a.sign_action("alice", "pay", raw_tx=raw).txid
        assert a.get_transaction(paid).state != "failed"
        assert afresh == [], "a writing alone projects on the rows it keeps"
        # b aborts a's payment: the funding output is released (spendable again), in a write
        # a's kept rows know nothing of
        b.abort_action("alice", "pay", reason="customer cancelled")
        assert [o.spendable for o in a.list_outputs("alice").items] == [True]
        # a reorgs the funding's block: the output row is classified again (what a reorg
        # preserves depends on whether it was spendable), from the kept row -- reserved, stale --
        # unless a sees that the projection moved
        world.reorg(1, [[], []], salt="fork")
        assert len(afresh) == 1, "the first save after b's read its rows afresh"
        assert a.get_transaction(funding.txid).state == "reorging"
        assert a.verify_projections().ok
        seen = _outputs(a, "alice")
        a.rebuild_projections()
        assert seen == _outputs(a, "alice"), "the inline rows are what a rebuild makes"


def _event_count(led: Ledger) -> int:
    return len(list(iterate_fields(led._log)))


def _funded(led: Ledger) -> tuple[Any, int]:
    """A funding output on a one-block chain, and the log's length then."""
    world = World(led)
    world.mine_empty(1)
    (funding,) = world.fund("alice", [1_000])
    return funding, _event_count(led)


Fail = Callable[[Any, Callable[..., None], bool], None]


def _fail_next_flush(monkeypatch: pytest.MonkeyPatch, fail: Fail) -> None:
    """The next flush runs ``fail(store, flush, sync)`` instead; the later ones are as before."""
    failures, flush = iter([True]), inline.SqlRowStore.flush

    def once(self: Any, *, sync: bool = True) -> None:
        if next(failures, False):
            fail(self, flush, sync)
        else:
            flush(self, sync=sync)

    monkeypatch.setattr(inline.SqlRowStore, "flush", once)


@pytest.mark.postgres
def test_a_write_refused_at_commit_leaves_no_event_and_the_next_command_succeeds(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The projection's writes travel with the COMMIT (one round trip): an error the server
    reports there rolls the events back too, and the connection serves the next command."""
    with Ledger.open(new_pg_schema(pg_database)) as led:
        funding, events = _funded(led)

        def refused_by_the_server(store: Any, flush: Callable[..., None], sync: bool) -> None:
            flush(store, sync=sync)
            store._cur.execute("SELECT 1 / 0")  # answered only with the COMMIT's sync

        _fail_next_flush(monkeypatch, refused_by_the_server)
        with pytest.raises(StorageError):
            led.note(funding.txid, "checked by an operator")
        assert _event_count(led) == events, "the refused append left no event"
        led.note(funding.txid, "checked again")
        assert _event_count(led) == events + 1
        assert [e.event for e in led.history(funding.txid)].count("history.note") == 1
        assert led.verify_projections().ok


@pytest.mark.postgres
def test_a_conflict_raised_while_projecting_is_retried_from_fresh_reads(
        pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unique violation is a write conflict: the append is rolled back whole and the
    command decides again, and commits once."""
    with Ledger.open(new_pg_schema(pg_database)) as led:
        funding, events = _funded(led)

        def a_conflict(store: Any, flush: Callable[..., None], sync: bool) -> None:
            import psycopg
            raise psycopg.errors.UniqueViolation("a row another writer created")

        _fail_next_flush(monkeypatch, a_conflict)
        led.note(funding.txid, "checked by an operator")
        assert _event_count(led) == events + 1, "one event: the retry's"
        assert [e.event for e in led.history(funding.txid)].count("history.note") == 1
        assert led.verify_projections().ok


def test_a_kept_row_that_contradicts_the_batch_is_read_again(ledger_url: str,
                                                             afresh: list[int]) -> None:
    """The stream cache forgot a transaction whose row the projection still keeps; another
    writer moved it on. The command reads the transaction afresh and decides from there, and
    its batch reads the row afresh too: the position shows the other writer."""
    with Ledger.open(ledger_url) as a, Ledger.open(ledger_url) as b:
        world = World(a)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        raw, _ = world.spend("alice", "pay", [funding], [(6_000, world.script()), (3_800, None)])
        paid = a.sign_action("alice", "pay", raw_tx=raw).txid
        b.transition(paid, "sending", reason="broadcast")
        app: Any = a._app
        app._streams.evict(list(app._streams._items))  # as if evicted by 20,000 newer streams
        afresh.clear()
        view = a.record_broadcast(paid, [ProviderResult(provider="arc", status="success")])
        assert view.state == "sent" and a.get_transaction(paid).state == "sent"
        assert afresh, "the kept row was not trusted"
        assert a.verify_projections().ok


def test_a_switch_to_catch_up_mode_between_two_saves_is_seen_by_the_next(
        ledger_url: str, afresh: list[int]) -> None:
    """Another process switches the projection to catch-up mode: this writer's next save, on
    rows it keeps, projects nothing, and the catch-up run projects it exactly once."""
    with Ledger.open(ledger_url) as a:
        world = World(a)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        a.note(funding.txid, "first look")
        with Ledger.open(ledger_url, projections="catchup") as b:
            afresh.clear()
            a.note(funding.txid, "second look")  # appended; the projection is not a's to write

            def notes() -> int:
                return sum(e.event == "history.note" for e in b.history(funding.txid))

            assert notes() == 1, "not projected inline after the switch"
            assert afresh == [], "the pointer said so before any row was read"
            assert b.run_projections() == 1
            assert notes() == 2 and b.run_projections() == 0, "projected exactly once"
            assert b.verify_projections().ok


def test_writers_that_take_turns_read_afresh_and_are_never_refused(
        ledger_url: str, afresh: list[int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ledgers taking turns each see the other's write before projecting, so each reads
    its rows afresh instead of having a save refused and its command run again; one writing
    alone trusts the rows it keeps."""
    refused: list[str] = []
    original = inline.StaleDecision.__init__

    def spy(self: Exception, *args: Any) -> None:
        refused.append(str(args))
        original(self, *args)

    monkeypatch.setattr(inline.StaleDecision, "__init__", spy)
    with Ledger.open(ledger_url) as a, Ledger.open(ledger_url) as b:
        world = World(a)
        world.mine_empty(1)
        (ours,) = world.fund("alice", [1_000])
        (theirs,) = world.fund("bob", [2_000])
        b.note(theirs.txid, "b's first")
        afresh.clear()
        for turn in range(10):
            a.note(ours.txid, f"turn {turn}")
            b.note(theirs.txid, f"turn {turn}")
        assert len(afresh) == 20, afresh
        afresh.clear()
        for turn in range(5):
            a.note(ours.txid, f"alone {turn}")
        assert len(afresh) == 1, "after b's last turn, a reads once, then keeps"
        assert refused == []
        assert a.verify_projections().ok
