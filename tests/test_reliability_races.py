"""Reservations under real concurrency, and the three ways a reservation ends early.

The race runs three OS processes (separate interpreters, separate connection pools) released
together by a pipe barrier, each trying to reserve the same 40 outpoints in its own shuffled
order -- twice: first on never-reserved outpoints (the lock stream's version-1 collision), then,
after every reservation was aborted, on released ones (the version-N+1 collision).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import new_pg_schema
from procs import Child, barrier, dismiss

from adapters import chainkit
from adapters.world import World
from ledger import (
    ConcurrencyConflict,
    Ledger,
    NewOutput,
    Outpoint,
    OutputAlreadyReserved,
    OutputNotSpendable,
    PreconditionFailed,
    ProcessingStatus,
    ProviderResult,
)

USER = "alice"
N_OUTPOINTS = 40
N_PROCS = 3
AMOUNTS = [1_000 + 7 * i for i in range(N_OUTPOINTS)]


def _one_sat() -> list[NewOutput]:
    return [NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def race_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'race.db'}"
    return new_pg_schema(request.getfixturevalue("pg_database"))


@pytest.fixture
def funded(race_url: str) -> Iterator[tuple[Ledger, list[Outpoint]]]:
    with Ledger.open(race_url) as led:
        world = World(led)
        world.mine_empty(3)
        ops = world.fund(USER, AMOUNTS[:20]) + world.fund(USER, AMOUNTS[20:])
        assert led.balance(USER).spendable == sum(AMOUNTS)
        yield led, ops


def _amount(ops: list[Outpoint]) -> dict[str, int]:
    return {str(op): AMOUNTS[i] for i, op in enumerate(ops)}


def _race_actions(led: Ledger) -> list[str]:
    return [a.reference for a in led.list_actions(USER, limit=1000).items
            if a.reference.startswith("r")]


def _check_round(led: Ledger, ops: list[Outpoint], results: list[dict[str, object]]) -> dict[str, str]:
    """Every outpoint won exactly once; the ledger agrees with the winners."""
    wins: Counter[str] = Counter()
    winner: dict[str, str] = {}
    for res in results:
        won = res["won"]
        assert isinstance(won, dict)
        wins.update(won.keys())
        winner.update(won)
        # a process that lost an outpoint lost it to someone else: it never also won it
        assert not set(won) & set(res["lost"])  # type: ignore[arg-type]
    assert set(wins) == {str(op) for op in ops}, "the union of the winners is every outpoint"
    assert all(n == 1 for n in wins.values()), f"reserved twice: {[o for o, n in wins.items() if n > 1]}"
    for res in results:  # each process saw every outpoint exactly once: won or lost
        assert len(res["won"]) + len(res["lost"]) == N_OUTPOINTS  # type: ignore[arg-type]
    assert led.balance(USER).reserved == sum(AMOUNTS)
    assert led.balance(USER).spendable == 0
    assert led.list_outputs(USER, spendable=True).total == 0
    return winner


@pytest.mark.slow
def test_three_processes_reserve_each_outpoint_exactly_once(
        funded: tuple[Ledger, list[Outpoint]], race_url: str) -> None:
    led, ops = funded
    children = [Child("race", {"url": race_url, "proc": p, "user": USER, "seed": 1000 + p,
                               "orders": ["shuffled", "same"],
                               "outpoints": [str(o) for o in ops]}) for p in range(N_PROCS)]
    try:
        # round 1: nobody ever reserved these outpoints
        head0 = led.head_position()
        barrier(children)
        results = [c.expect("result") for c in children]
        winner = _check_round(led, ops, results)

        reserved = led.audit_tail(limit=1000, event="action.inputs_reserved")
        assert len(reserved) == N_OUTPOINTS, "one InputsReserved per winning action, no more"
        by_event = {e.details["inputs"][0]["outpoint"]: e.reference for e in reserved}
        assert by_event == winner, "the log names the same winner the process saw"
        locks = [e for op in {o.txid for o in ops} for e in led.history(op)
                 if e.event == "reservation.reserved" and e.position > head0]
        assert len(locks) == N_OUTPOINTS
        assert len(_race_actions(led)) == N_OUTPOINTS, "a refused create_action wrote nothing"
        report = led.verify_projections()
        assert report.ok, report.differences[:3]
        assert report.position == led.head_position()

        # release everything, then race again on released lock streams
        for ref in winner.values():
            led.abort_action(USER, ref, reason="round over")
        assert led.balance(USER).spendable == sum(AMOUNTS)
        assert led.balance(USER).reserved == 0
        for c in children:
            c.send("go")
        results = [c.expect("result") for c in children]
        winner2 = _check_round(led, ops, results)
        assert sum(r["collisions"] for r in results) >= 1, \
            "same-order round: the processes should have collided on some lock stream"  # type: ignore[misc]
        assert not set(winner.values()) & set(winner2.values())
        assert len(led.audit_tail(limit=1000, event="action.inputs_reserved")) == 2 * N_OUTPOINTS
        assert len(_race_actions(led)) == 2 * N_OUTPOINTS
        report = led.verify_projections()
        assert report.ok, report.differences[:3]

        dismiss(children, ready=None)

        # after the race the ledger still works: an abort frees an outpoint for a new action
        op, ref = next(iter(winner2.items()))
        led.abort_action(USER, ref, reason="changed my mind")
        assert led.balance(USER).spendable == _amount(ops)[op]
        led.create_action(USER, "after-race", description="retake", inputs=[op],
                          outputs=_one_sat())
        assert led.balance(USER).spendable == 0
        assert led.verify_projections().ok
    finally:
        for c in children:
            c.close()


@pytest.mark.slow
def test_processes_opening_one_database_at_once_all_succeed(race_url: str) -> None:
    """Regression: concurrent ``Ledger.open`` on PostgreSQL failed with "tuple concurrently
    updated" (the event store's DDL ran unserialised in every process)."""
    children = [Child("open", {"url": race_url}) for _ in range(4)]
    try:
        for _round in range(3):  # a fresh database first, then an initialised one
            barrier(children)
            results = [c.expect("result") for c in children]
            assert all(r["mode"] == "inline" for r in results)
        dismiss(children)
    finally:
        for c in children:
            c.close()
    with Ledger.open(race_url) as led:
        World(led).mine_empty(2)
        assert led.verify_projections().ok


@pytest.mark.slow
def test_a_rebuild_in_another_process_holds_off_a_second_one(race_url: str) -> None:
    """Two rebuilds would fill the same idle table set and destroy each other's rows. While a
    rebuild runs in another process, this one is refused (typed, retryable) and changes
    nothing; the first then swaps in a complete set; and once it is done, a rebuild runs."""
    with Ledger.open(race_url) as led:
        world = World(led)
        world.mine_empty(2)
        world.fund(USER, AMOUNTS[:5])
        child = Child("rebuild", {"url": race_url})
        try:
            barrier([child])
            child.expect("holding")
            with pytest.raises(ConcurrencyConflict, match="another process is rebuilding"):
                led.rebuild_projections()
            child.send("go")
            assert child.expect("result")["position"] == led.head_position()
            assert child.wait() == 0
        finally:
            child.close()
        assert led.verify_projections().ok
        assert led.balance(USER).spendable == sum(AMOUNTS[:5])
        assert led.rebuild_projections().position == led.head_position()


# --- the three ways a reservation ends early (single process, both backends) --------------------

def _spendable(led: Ledger, op: Outpoint) -> bool:
    return led.explain_output(USER, op).spendable


def _signed(led: Ledger, ref: str, op: Outpoint) -> str:
    led.create_action(USER, ref, description="spend", inputs=[op], outputs=_one_sat())
    raw = chainkit.make_tx([(op.txid, op.vout)], [(1, b"\x51")])
    tx = led.sign_action(USER, ref, raw_tx=raw)
    assert tx.state == ProcessingStatus.QUEUED
    return tx.txid


def test_abort_releases_the_input_for_a_new_action(led: Ledger, world: World) -> None:
    op, other = world.fund(USER, [5_000, 3_000])
    led.create_action(USER, "a1", description="draft", inputs=[op], outputs=_one_sat())
    assert not _spendable(led, op)
    assert led.balance(USER).reserved == 5_000
    with pytest.raises(OutputAlreadyReserved):
        led.create_action(USER, "a2", description="steal", inputs=[op], outputs=_one_sat())
    with pytest.raises(OutputAlreadyReserved):  # all or nothing: `other` was not taken either
        led.create_action(USER, "a2", description="steal", inputs=[other, op], outputs=_one_sat())
    assert _spendable(led, other)

    led.abort_action(USER, "a1", reason="user cancelled")
    assert _spendable(led, op)
    assert led.balance(USER).reserved == 0
    assert led.balance(USER).spendable == 8_000
    led.create_action(USER, "a2", description="retake", inputs=[op], outputs=_one_sat())
    assert not _spendable(led, op)
    assert led.balance(USER).reserved == 5_000
    # a signed, never-broadcast action can be aborted too; its transaction becomes invalid
    txid = _signed(led, "a3", other)
    led.abort_action(USER, "a3", reason="not sending")
    assert led.get_transaction(txid).state == ProcessingStatus.INVALID
    assert _spendable(led, other)
    assert led.verify_projections().ok


def test_an_invalid_spender_releases_its_input(led: Ledger, world: World) -> None:
    (op,) = world.fund(USER, [4_000])
    txid = _signed(led, "pay", op)
    assert led.balance(USER).spendable == 0
    assert led.balance(USER).reserved == 0, "once signed, the input counts as spent"
    tx = led.record_broadcast(txid, [ProviderResult(provider="arc", status="invalid"),
                                     ProviderResult(provider="woc", status="invalid")])
    assert tx.state == ProcessingStatus.INVALID
    assert _spendable(led, op)
    assert led.balance(USER).spendable == 4_000
    view = led.create_action(USER, "pay-again", description="retry", inputs=[op],
                             outputs=_one_sat())
    assert view.txid is None
    assert not _spendable(led, op)
    assert led.verify_projections().ok


def test_a_double_spent_spender_quarantines_its_input_until_confirmed_unspent(
        led: Ledger, world: World) -> None:
    op, free = world.fund(USER, [6_000, 1_500])
    with pytest.raises(PreconditionFailed):  # nothing to confirm yet
        led.confirm_unspent([op], reason="premature")
    txid = _signed(led, "pay", op)
    tx = led.record_broadcast(txid, [ProviderResult(provider="arc", status="success"),
                                     ProviderResult(provider="woc", status="double_spend")])
    assert tx.state == ProcessingStatus.DOUBLE_SPEND
    assert not _spendable(led, op)
    balance = led.balance(USER)
    assert balance.quarantined == 6_000
    assert balance.spendable == 1_500
    assert str(op) not in {f"{o.txid}:{o.vout}" for o in led.list_outputs(USER).items}
    head = led.head_position()
    with pytest.raises(OutputNotSpendable):
        led.create_action(USER, "reuse", description="too early", inputs=[op],
                          outputs=_one_sat())
    assert led.head_position() == head, "a refused command appends nothing"

    led.confirm_unspent([op], reason="utxo check: unspent", actor="ops")
    assert _spendable(led, op)
    balance = led.balance(USER)
    assert balance.quarantined == 0
    assert balance.spendable == 7_500
    led.create_action(USER, "reuse", description="now", inputs=[op], outputs=_one_sat())
    assert not _spendable(led, op)
    assert _spendable(led, free)
    assert led.verify_projections().ok
