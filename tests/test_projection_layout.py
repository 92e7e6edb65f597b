"""Upgrades: projection tables laid out by another version of the ledger are rebuilt from the log
when the ledger opens, before anything reads or writes them (the log is never changed)."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.world import World
from ledger import Ledger
from ledger.errors import ConcurrencyConflict
from projections.replay import iterate_fields
from projections.schema import LAYOUT_TABLE, LAYOUT_VERSION
from projections.tables import layout_version, read_pointer


def _answers(led: Ledger) -> dict[str, Any]:
    return {user: (led.list_outputs(user, spendable=None).model_dump(),
                   led.balance(user).model_dump(), led.list_actions(user).model_dump())
            for user in ("alice", "bob")}


def _live(led: Ledger) -> str:
    with led._db.transaction(write=False) as cur:
        return read_pointer(cur)[0]


def _output_columns(led: Ledger) -> list[str]:
    with led._db.transaction(write=False) as cur:
        cur.execute('SELECT * FROM "outputs" LIMIT 0')
        return [d[0] for d in cur.description]


def _age(led: Ledger) -> str:
    """Make the live set look like version 1 left it: no layout record, outputs with a
    ``tx_state`` column, and rows this version would not have written (here: none at all)."""
    live = _live(led)
    with led._db.transaction(write=True) as cur:
        cur.execute(f'DROP TABLE "{LAYOUT_TABLE}"')  # as before versions were kept
        cur.execute(f'ALTER TABLE "{live}outputs" ADD COLUMN "tx_state" VARCHAR(16)')
        cur.execute(f'DELETE FROM "{live}outputs"')
    return live


def test_an_old_layout_is_rebuilt_on_open_and_a_current_one_is_left_alone(ledger_url: str
                                                                           ) -> None:
    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(2)
        funds = world.fund("alice", [40_000, 30_000])
        world.fund("bob", [5_000])
        raw, _ = world.spend("alice", "rent", [funds[0]], [(25_000, world.script()),
                                                           (15_000, None)])
        led.sign_action("alice", "rent", raw_tx=raw)
        expected, head = _answers(led), led.head_position()
        old_live = _age(led)
        assert led.list_outputs("alice", spendable=None).items == [], "the aged set is stale"

    with Ledger.open(ledger_url) as led:
        assert _answers(led) == expected, "rebuilt from the log on open"
        assert led.head_position() == head, "the log is unchanged"
        assert _live(led) != old_live, "the rebuilt set was swapped in"
        assert "tx_state" not in _output_columns(led)
        with led._db.transaction(write=False) as cur:
            assert layout_version(cur, led._db.dialect, _live(led)) == LAYOUT_VERSION
        assert led.verify_projections().ok
        world.ledger = led
        world.fund("bob", [7_000])  # inline writes work on the new tables
        assert led.balance("bob").spendable == 12_000
        live = _live(led)

    with Ledger.open(ledger_url) as led:
        assert _live(led) == live, "a current layout is not rebuilt again"
        assert led.verify_projections().ok


def test_a_fresh_ledger_records_its_layout(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as led, led._db.transaction(write=False) as cur:
        live = read_pointer(cur)[0]
        assert layout_version(cur, led._db.dialect, live) == LAYOUT_VERSION


def test_one_rebuild_at_a_time_the_second_is_refused_and_changes_nothing(ledger_url: str
                                                                          ) -> None:
    """Two operators rebuild one database at once: two rebuilds filling the same idle table set
    would destroy each other's rows (or the live ones). The second is refused with a typed,
    retryable error; the first completes."""
    with Ledger.open(ledger_url) as first, Ledger.open(ledger_url) as second:
        world = World(first)
        world.mine_empty(2)
        world.fund("alice", [1_000, 2_000])
        before = _live(first)
        refused: list[str] = []

        def progress(done: int, total: int) -> None:
            if not refused:  # while the first rebuild folds the log
                with pytest.raises(ConcurrencyConflict, match="another process is rebuilding"):
                    second.rebuild_projections()
                refused.append(_live(second))

        report = first.rebuild_projections(progress=progress)
        assert refused == [before], "the refused rebuild swapped nothing"
        assert _live(first) != before and report.position == first.head_position()
        assert first.verify_projections().ok
        assert second.balance("alice").spendable == 3_000
        second.rebuild_projections()  # and once the first is done, it runs
        assert _live(second) == before and second.verify_projections().ok


def _created_order(led: Ledger) -> list[str]:
    """Txids in the order the log created their transactions."""
    return [fields["txid"] for _, topic, fields, _ in iterate_fields(led._log)
            if topic == "ledger.transaction.TransactionCreated"]


def _rowid_order(led: Ledger) -> list[str]:
    with led._db.transaction(write=False) as cur:
        cur.execute(f'SELECT "txid" FROM "{_live(led)}transactions" ORDER BY rowid')
        return [row[0] for row in cur.fetchall()]


def test_sqlite_keeps_transaction_rows_in_creation_order_inline_and_after_a_rebuild(
        tmp_path: Any) -> None:
    """Transactions confirmed by one block were mostly created together; in creation order their
    rows share pages, so the block rewrites few pages (txids are random: key order scatters them
    over the whole table)."""
    with Ledger.open(f"sqlite:///{tmp_path}/order.db") as led:
        world = World(led)
        world.mine_empty(1)
        for user in ("carol", "alice", "bob", "dave"):
            world.fund(user, [1_000, 2_000])
        created = _created_order(led)
        assert len(created) >= 4 and created != sorted(created), "txids out of key order"
        assert _rowid_order(led) == created, "inline appends rows in creation order"
        led.rebuild_projections()
        assert _rowid_order(led) == created, "the rebuild loads them in creation order too"
        assert led.verify_projections().ok
