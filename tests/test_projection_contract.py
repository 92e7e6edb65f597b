"""Contract of every projection table, run on SQLite and on PostgreSQL (the ``led`` fixture)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger, NewOutput, ProcessingStatus, ProviderResult
from projections import queries
from projections.schema import PRIMARY_KEYS, RARE_AUDIT_EVENT, build_schema
from projections.stores import SqlStatements


def _history(world: World) -> dict[str, str]:
    """Fund two users, one payment broadcast and proven, one aborted draft, one reorg."""
    led = world.ledger
    funds = world.fund("alice", [40_000, 30_000], labels=["salary"])
    raw, _ = world.spend("alice", "rent", [funds[0]], [(25_000, world.script()), (15_000, None)],
                         labels=["rent", "monthly"])
    paid = led.sign_action("alice", "rent", raw_tx=raw).txid
    led.record_broadcast(paid, [ProviderResult(provider="arc", status="seen")])
    led.create_action("alice", "draft", description="never signed", inputs=[funds[1]],
                      outputs=[NewOutput(vout=0, satoshis=30_000, locking_script=world.script(),
                                         basket=None)])
    led.abort_action("alice", "draft", reason="changed my mind")
    world.prove([paid])
    world.reorg(1, [[], []], salt="fork")
    return {"paid": paid, "funding": funds[0].txid}


def _sql(led: Ledger, statement: str) -> list[Any]:
    with led._engine.connect() as conn:
        return list(conn.execute(text(statement)))


class TestProjectionContract:
    """What each table promises, independent of the backend."""

    def test_transactions_mirror_the_write_model(self, led: Ledger, world: World) -> None:
        ids = _history(world)
        tx = led.get_transaction(ids["paid"])
        assert tx.state == ProcessingStatus.REORGING and tx.height is None
        last = max(e.position for e in led.history(ids["paid"]))
        assert tx.position == last
        assert tx.raw_tx is not None and len(tx.raw_tx) > 60

    def test_outputs_are_per_user_rows_with_one_category(self, led: Ledger, world: World) -> None:
        ids = _history(world)
        rows = _sql(led, 'SELECT "user", txid, vout, category, spendable FROM outputs')
        by_key = {(r[0], r[1], r[2]): (r[3], bool(r[4])) for r in rows}
        assert by_key[("alice", ids["funding"], 0)] == ("spent", False)
        assert by_key[("alice", ids["funding"], 1)] == ("spendable", True), "abort released it"
        assert by_key[("alice", ids["paid"], 1)] == ("spendable", True), "change kept in reorg"
        assert ("alice", ids["paid"], 0) not in by_key, "paid-away output is not alice's"
        assert all(spendable == (cat == "spendable") for cat, spendable in by_key.values())

    def test_actions_track_status_delta_and_labels(self, led: Ledger, world: World) -> None:
        _history(world)
        rent = led.get_action("alice", "rent")
        assert (rent.status, rent.satoshis_delta) == ("unproven", 15_000 - 40_000)
        assert led.get_action("alice", "draft").status == "failed"
        assert [a.reference for a in led.list_actions("alice", labels=["monthly"]).items] == ["rent"]
        both = led.list_actions("alice", labels=["rent", "salary"], label_mode="all")
        assert both.total == 0
        assert led.list_actions("alice", labels=["rent", "salary"]).total == 2

    def test_tx_audit_has_one_row_per_event_in_position_order(self, led: Ledger,
                                                              world: World) -> None:
        _history(world)
        ids = [r[0] for r in _sql(led, "SELECT audit_id FROM tx_audit ORDER BY audit_id")]
        events = led._log.read_fields(after=0, limit=100_000)
        assert ids == [item[0] for item in events]
        kinds = {r[0] for r in _sql(led, "SELECT event FROM tx_audit")}
        assert {"processing.changed", "broadcast.result", "proof.recorded", "proof.invalidated",
                "action.created", "action.signed", "action.aborted",
                "chain.block_connected", "chain.block_disconnected"} <= kinds

    def test_headers_mark_the_active_chain(self, led: Ledger, world: World) -> None:
        _history(world)
        rows = _sql(led, "SELECT height, hash, active FROM headers ORDER BY height")
        active = {r[0]: r[1] for r in rows if r[2]}
        assert [active[b.height] for b in world.chain] == [b.hash for b in world.chain]
        assert sum(1 for r in rows if not r[2]) == 1, "the orphaned block stays, inactive"
        tip = led.chain_tip()
        assert tip is not None and tip.hash == world.chain[-1].hash

    def test_tracked_position_is_the_log_head(self, led: Ledger, world: World) -> None:
        """The newest audit row is the tracked position (ADR 0012): one per event, at its
        position, written with the event's other rows."""
        _history(world)
        assert _sql(led, "SELECT max(audit_id) FROM tx_audit")[0][0] == led.head_position()
        assert _sql(led, "SELECT count(*) FROM tx_audit")[0][0] == led.head_position()
        assert _sql(led, "SELECT count(*) FROM meta WHERE name = 'position'")[0][0] == 0

    def test_the_hot_query_is_an_index_range_scan_without_a_sort(self, led: Ledger,
                                                                 world: World) -> None:
        _history(world)
        query = queries.outputs_page(queries.outputs_where("alice", basket="default"),
                                     limit=100, offset=0)
        with led._engine.connect() as conn:
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
                assert "ix_outputs_spendable" in plan and "TEMP B-TREE" not in plan, plan
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))
                assert "ix_outputs_spendable" in plan and "Sort" not in plan, plan


    def test_audit_tail_by_event_finds_every_kind_and_rare_ones_by_index(
            self, led: Ledger, world: World) -> None:
        _history(world)
        everything = led.audit_tail(limit=1000)
        names = {e.event for e in everything}
        assert {"chain.block_disconnected", "action.aborted", "processing.changed"} <= names
        for name in names:
            assert led.audit_tail(limit=3, event=name) == \
                [e for e in everything if e.event == name][:3], name
        assert led.audit_tail(limit=3, event="no.such_event") == []
        query = select(queries._AUDIT).where(
            queries._AUDIT.c.event == "chain.block_disconnected",
            text(RARE_AUDIT_EVENT)).order_by(queries._AUDIT.c.audit_id.desc()).limit(3)
        with led._engine.connect() as conn:
            sql = str(query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            if conn.dialect.name == "sqlite":
                plan = " ".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
            else:
                conn.execute(text("SET enable_seqscan = off"))
                plan = " ".join(r[0] for r in conn.execute(text(f"EXPLAIN {sql}")))
            assert "ix_tx_audit_rare_event" in plan, plan

    @pytest.mark.parametrize(("table", "keys"), [("outputs", 3), ("actions", 1), ("actions", 300)])
    def test_prefetch_by_composite_key_looks_each_key_up(self, led: Ledger, world: World,
                                                         table: str, keys: int) -> None:
        """A catch-up page or a bulk save prefetches hundreds of rows by (user, ...) keys: each
        must be a primary-key lookup, never a scan of a table of millions of rows."""
        _history(world)
        dialect = led._db.dialect
        statements = SqlStatements(build_schema("a_"), dialect)
        sql = statements.select_keys(table, PRIMARY_KEYS[table], keys)
        width = len(PRIMARY_KEYS[table])
        params = [("alice" if i % width == 0 else 1 if (table, i % width) == ("outputs", 2)
                   else "x") for i in range(keys * width)]
        with led._db.transaction(write=False) as cur:
            if dialect == "sqlite":
                cur.execute(f"EXPLAIN QUERY PLAN {sql}", params)
                plan = " ".join(str(tuple(r)[-1]) for r in cur.fetchall())
                assert "SEARCH t USING PRIMARY KEY" in plan and "SCAN t" not in plan, plan
            else:
                cur.execute("SET LOCAL enable_seqscan = off")
                cur.execute(f"EXPLAIN {sql}", params)
                plan = " ".join(str(next(iter(r.values())) if isinstance(r, dict) else r[0])
                                for r in cur.fetchall())
                assert "Index Scan" in plan and "Seq Scan on a_" not in plan, plan


def test_a_row_write_builds_no_ephemeral_table(tmp_path: Path) -> None:
    """Every event writes an audit row, and SQLite checks each partial index's condition on
    it. A condition written as an IN list made SQLite build an ephemeral table for every
    insert (half again the insert's cost); no row write of any table may need one. (SQLite
    only: this is its program for a statement; PostgreSQL plans statements otherwise.)"""
    with Ledger.open(f"sqlite:///{tmp_path / 'ledger.db'}") as led:
        _history(World(led))
        statements = SqlStatements(build_schema("a_"), led._db.dialect)
        with led._db.transaction(write=False) as cur:
            for table, cols in statements.cols.items():
                rest = tuple(c for c in cols if c not in PRIMARY_KEYS[table])
                writes = [statements.insert(table)]
                if rest:  # (a table of keys alone is never upserted nor updated)
                    writes += [statements.upsert(table), statements.update(table, rest)]
                for sql in writes:
                    cur.execute(f"EXPLAIN {sql}", [None] * sql.count("?"))
                    opcodes = {tuple(r)[1] for r in cur.fetchall()}
                    assert opcodes & {"Insert", "IdxInsert"}, (table, opcodes)
                    assert "OpenEphemeral" not in opcodes, (table, sql)


TRICKY_TAGS = ["café", 'say "hi"', "a_b", "axb", "Tip", "tip", "100%", "back\\slash"]


def test_tag_filters_match_exactly_before_paging(led: Ledger, world: World) -> None:
    """A wallet asking for outputs tagged ``a_b`` must not get ``axb`` (a LIKE wildcard), nor
    miss ``café`` or ``say "hi"`` (escaped in JSON text), nor count ``Tip`` as ``tip``; and a page
    of one must hold the match, not come back empty because filtering happened after LIMIT."""
    raw = world.external_payment([1_000 + i for i in range(len(TRICKY_TAGS))])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    extra = {0: ["shared"], 1: ["shared"]}
    led.internalize_action("alice", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           description="tagged", outputs=[
                               InternalizeOutput(vout=i, tags=[t, *extra.get(i, [])])
                               for i, t in enumerate(TRICKY_TAGS)])
    for i, tag in enumerate(TRICKY_TAGS):
        page = led.list_outputs("alice", tags=[tag], spendable=None, limit=1)
        assert (page.total, [o.vout for o in page.items]) == (1, [i]), tag
    both = led.list_outputs("alice", tags=["café", "shared"], tag_mode="all", spendable=None)
    assert [o.vout for o in both.items] == [0] and both.total == 1
    either = led.list_outputs("alice", tags=["a_b", "tip"], tag_mode="any", spendable=None)
    assert sorted(o.vout for o in either.items) == [2, 5] and either.total == 2
    assert led.list_outputs("alice", tags=["nope"], spendable=None).total == 0


def _every_table(led: Ledger) -> dict[str, list[Any]]:
    from projections.schema import PRIMARY_KEYS
    return {t: sorted(map(tuple, _sql(led, f'SELECT * FROM "{t}"')), key=repr)
            for t in PRIMARY_KEYS}


def test_a_log_too_long_to_fold_in_memory_is_rebuilt_page_by_page(
        led: Ledger, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ledger whose log outgrows memory must still rebuild: page by page into the idle set
    (small pages here, and few rows kept between them, so rows are read back from SQL), with
    every table equal to the in-memory rebuild's, and writes going on afterwards."""
    from projections import replay
    monkeypatch.setattr(replay, "REBUILD_PAGE_EVENTS", 7)
    monkeypatch.setattr(replay, "MAX_REBUILD_KEPT_ROWS", 25)
    _history(world)
    world.fund("bob", [5_000 + i for i in range(30)])
    led.rebuild_projections()  # folded in memory
    folded = _every_table(led)
    pages = []
    events, _, position = replay.rebuild(led._db, led._log, lambda done, total: pages.append(done),
                                         max_fold_events=0)
    assert events == position == led.head_position() and len(pages) >= 5 and pages[-1] == events
    assert _every_table(led) == folded
    assert led.verify_projections().ok
    world.fund("carol", [1_000])
    assert led.balance("carol").spendable == 1_000 and led.verify_projections().ok
