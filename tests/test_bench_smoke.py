"""Smoke test of the benchmarks' core functions at toy sizes on SQLite (no timing asserted).

Benchmarks are never timed tests; this only keeps them runnable, and checks the one shortcut
their setup takes: ``benchlib.bulk_internalize`` must append exactly the events, and leave
exactly the rows, that ``Ledger.internalize_action`` does.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any

import pytest

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger

# the benchmarks run as scripts from bench/ and import ``benchlib`` as a top-level module
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))


def _topics(led: Ledger, after: int) -> list[str]:
    return [topic for _, topic, _, _ in led._log.read_fields(after=after, limit=100)]


def _rows(led: Ledger, user: str, txid: str) -> Any:
    tx = led.get_transaction(txid).model_dump(exclude={"position"})
    outs = [o.model_dump() for o in led.list_outputs(user, basket=None, spendable=None).items]
    action = led.get_action(user, txid).model_dump()
    return tx, outs, action


@pytest.mark.parametrize("tip_block", [True, False])
def test_bulk_internalize_matches_the_api(tmp_path: Path, tip_block: bool) -> None:
    import benchlib

    results = []
    for name in ("api", "bulk"):
        with Ledger.open(f"sqlite:///{tmp_path / name}.db") as led:
            world = World(led, salt="same")
            world.mine_empty(2)
            raw = world.external_payment([1_000, 2_000])
            txid = chainkit.txid_of(raw)
            block = world.mine([txid])
            if not tip_block:
                world.mine_empty(1)
            outputs = [InternalizeOutput(vout=0, tags=["t"]), InternalizeOutput(vout=1,
                                                                                basket="savings")]
            head = led.head_position()
            if name == "api":
                led.internalize_action("alice", beef=chainkit.make_beef("V1", raw,
                                                                        bump=block.bumps[txid]),
                                       outputs=outputs, description="receipt", labels=["l"])
            else:
                benchlib.bulk_internalize(led, block, [benchlib.Receipt(
                    user="alice", raw=raw, outputs=outputs, labels=["l"])])
            results.append((_topics(led, head), _rows(led, "alice", txid)))
            assert led.verify_projections().ok
    assert results[0] == results[1]


def test_benchmarks_run_at_toy_sizes() -> None:
    import blocks
    import query
    import rebuild
    import reorg
    import write

    assert blocks.bench_backend("sqlite", 1, 20)["events_per_s"] > 0
    assert reorg.bench_backend("sqlite", 30)["reorg_events"] == 2 * 30 + 7
    assert rebuild.bench_backend("sqlite", 1_500)["events"] >= 1_500
    size = {"outputs": 800, "users": 4, "big": 400, "samples": 4}
    assert query.bench_backend("sqlite", size, 4)["outputs"] == 800
    assert write.bench_backend("sqlite", 4, 1)["payments"] == 4


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql",
                                                            marks=pytest.mark.postgres)])
def test_the_sql_floor_replays_the_hooks_own_writes(backend: str,
                                                    request: pytest.FixtureRequest) -> None:
    """``bench/write.py``'s floor variant must write, by replaying SQL, the very rows its
    projector wrote on the capture pass (else its figure would be the floor of other work).
    On PostgreSQL the replay also keeps the hook's two phases: reads sent with the insert,
    writes sent with the COMMIT."""
    import benchlib
    import write

    if backend == "postgresql":
        request.getfixturevalue("pg_database")  # reachable, or the failure CI asks for
    with contextlib.ExitStack() as stack:
        # two databases, as the benchmark uses: the captured statements name the schema
        urls = {name: stack.enter_context(benchlib.database(backend, f"floor_{name}"))["url"]
                for name in ("capture", "replay")}
        variant = write.SqlOnlyVariant(urls["replay"], urls["capture"], 6)
        events, _ = variant.run(6)
        variant.close()
        found = {name: _table_rows(url, TABLES) for name, url in urls.items()}
    assert events == 6 * 8
    assert found["replay"] == found["capture"]
    assert len(found["replay"]["a_tx_audit"]) > events  # the funding's rows and the payments'


TABLES = {"a_outputs": "*", "a_balances": "*", "a_actions": "*",
          "a_tx_audit": "audit_id, txid, event, from_state, to_state, details_json",
          "a_transactions": "txid, state, attempts, position, state_position"}


def _table_rows(url: str, tables: dict[str, str]) -> dict[str, list[tuple[object, ...]]]:
    """Every row of ``tables`` (name: columns), sorted by the first two columns."""
    if url.startswith("sqlite:///"):
        import sqlite3
        with sqlite3.connect(url[len("sqlite:///"):]) as db:
            return {t: db.execute(f"SELECT {cols} FROM {t} ORDER BY 1, 2").fetchall()
                    for t, cols in tables.items()}
    import psycopg
    with psycopg.connect(url) as conn:
        return {t: [tuple(r) for r in conn.execute(
                    f"SELECT {cols} FROM {t} ORDER BY 1, 2").fetchall()]
                for t, cols in tables.items()}


@pytest.mark.postgres
def test_the_sql_floor_replay_stays_in_step_across_a_collision(
        request: pytest.FixtureRequest) -> None:
    """An append that collides (the optimistic first attempt of a command whose cached streams
    are gone) commits nothing, in the capture and in the replay alike: the replay must not take
    the next captured append for it, or every later one replays another append's SQL."""
    import benchlib
    import write

    from ledger import NewOutput

    request.getfixturevalue("pg_database")
    one = [NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)]

    def story(led: Ledger, wrap: Any) -> Any:
        world = World(led)
        world.mine_empty(1)
        (funding,) = world.fund("alice", [10_000])
        recorder: Any = led._app.recorder
        recorder.inline_hook = hook = wrap(recorder.inline_hook)
        led.create_action("alice", "r1", description="d", inputs=[funding], outputs=one)
        led.abort_action("alice", "r1", reason="customer cancelled")
        app: Any = led._app
        app._streams.evict(list(app._streams._items))  # attempt 0 of r2 then collides
        led.create_action("alice", "r2", description="d", inputs=[funding], outputs=one)
        led.note(funding.txid, "after the collision")
        return hook

    class Counting(write.SqlCapture):
        refused = 0

        def rolled_back(self) -> None:
            self.refused += 1
            super().rolled_back()

    with benchlib.database("postgresql", "collide_capture") as cap, \
            benchlib.database("postgresql", "collide_replay") as rep:
        with Ledger.open(cap["url"]) as led:
            capture = story(led, Counting)
        with Ledger.open(rep["url"]) as led:
            story(led, lambda _hook: write.SqlReplay(capture.appends))
        tables = {"a_actions": "*", "a_tx_audit": "audit_id, txid, event"}
        assert _table_rows(rep["url"], tables) == _table_rows(cap["url"], tables)
    assert capture.refused >= 1, "the story collided"
