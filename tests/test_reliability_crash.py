"""Crashes (SIGKILL) of writers and of the catch-up projector, on SQLite and PostgreSQL.

SPEC §9: crashes lose no acknowledged command; projections are exactly-once. The incidents these
prevent: a wallet process is OOM-killed right after telling its user "payment created" and the
payment is gone on restart; a projection process dies mid-page and on restart applies the page
again (double-counted outputs, duplicate audit rows) or skips it (a spendable output missing).

A child acknowledges a command over a pipe only after the command returned; the parent kills it
at a random acknowledgement count (never after a sleep), waits until the server has ended its
sessions, and then reads the database directly before any ledger code could repair anything.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from procs import (
    Child,
    Writer,
    barrier,
    check_acknowledged,
    check_one_holder,
    log_head,
    projection_position,
    raw_events,
    wait_for,
    wait_pg_sessions_gone,
)

from adapters import chainkit
from adapters.world import World
from ledger import (
    Ledger,
    NewOutput,
    ProviderResult,
    ProviderStatus,
    UnknownAction,
    UnknownTransaction,
)

ALICE, BOB = "alice", "bob"
N_OUTPOINTS = 20


def _amounts(n: int, base: int) -> list[int]:
    return [base + 11 * i for i in range(n)]


def _one_sat() -> list[NewOutput]:
    return [NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)]


def _fund(world: World, user: str, amounts: list[int]) -> tuple[list[str], dict[str, int]]:
    """A proven payment of ``amounts`` to ``user``: its outpoints and their values."""
    ops = [str(o) for o in world.fund(user, amounts)]
    return ops, dict(zip(ops, amounts, strict=True))


def _world(led: Ledger) -> World:
    world = World(led)
    world.mine_empty(2)
    return world


def _at_least(child: Child, kind: str, n: int) -> Callable[[], bool]:
    return lambda: child.count(kind) >= n


# --- 2. durability: writers killed in inline mode ----------------------------------------------

@dataclass(frozen=True)
class KillPlan:
    """Where to kill: after the writers acknowledged ``lo..hi`` commands in all (seeded)."""

    seed: int
    lo: int
    hi: int
    two_writers: bool


KILL_PLANS = {
    "early": KillPlan(seed=101, lo=1, hi=12, two_writers=False),
    "late": KillPlan(seed=202, lo=40, hi=72, two_writers=False),
    # every outpoint is processed to its end by one writer or the other: >= 80 acks in all
    "two-writers-overlapping": KillPlan(seed=303, lo=8, hi=60, two_writers=True),
}


@pytest.fixture(params=sorted(KILL_PLANS))
def kill_plan(request: pytest.FixtureRequest) -> KillPlan:
    return KILL_PLANS[request.param]


@pytest.mark.slow
def test_a_killed_writer_loses_no_acknowledged_command(ledger_url: str, kill_plan: KillPlan) -> None:
    """SIGKILL a wallet process mid-stream of create/sign/note/broadcast/abort commands: on
    restart, every command it acknowledged is there and visible, the in-flight one is all or
    nothing, no outpoint has two live holders, and the inline projection equals a rebuild
    (inline mode commits rows with the events, so a crash cannot split them)."""
    rng = random.Random(kill_plan.seed)
    with Ledger.open(ledger_url) as led:
        ops, amounts = _fund(_world(led), ALICE, _amounts(N_OUTPOINTS, 1_000))
    # two writers walk the same outpoints in the same order: they contend from the first one
    writers = [Writer(f"w{n}", ALICE, ops) for n in range(1 + kill_plan.two_writers)]
    children = [w.start(ledger_url) for w in writers]
    try:
        barrier(children)
        kill_at = rng.randint(kill_plan.lo, kill_plan.hi)
        wait_for(children, lambda: sum(w.acks() for w in writers) >= kill_at
                 and all(w.acks() + w.child.count("skip") for w in writers if w.child),
                 f"{kill_at} acknowledgements")
        for c in children:
            c.kill()
        for c in children:
            c.drain()
        wait_pg_sessions_gone(ledger_url, [c.tag for c in children])
        assert not all(c.count("done") for c in children), "the kill came mid-run"

        # straight from the database, before a reopen could catch anything up
        head = log_head(ledger_url)
        assert projection_position(ledger_url) == head, "inline: events and rows commit together"

        with Ledger.open(ledger_url) as led:
            assert led.head_position() == head
            kinds = check_acknowledged(led, writers)
            assert kinds.get("ack", 0) >= kill_at
            if kill_plan.two_writers:  # both spoke, and the loser of outpoint 0 skipped it
                assert kinds.get("skip", 0) >= 1, kinds
            check_one_holder(led, writers, amounts)
            report = led.verify_projections()
            assert report.ok, report.differences[:3]
            assert report.position == head
            # nothing is stuck (no lock stream taken without its action, or the reverse):
            # every free outpoint can be reserved again after the crash
            free = [op for op in amounts if led.explain_output(ALICE, op).spendable]
            for n, op in enumerate(free):
                led.create_action(ALICE, f"after-crash-{n}", description="retake", inputs=[op],
                                  outputs=_one_sat())
            assert led.balance(ALICE).spendable == 0
            assert led.verify_projections().ok
    finally:
        for c in children:
            c.close()


# --- 3. catch-up: the projector killed mid-page, restarted, exactly once --------------------------

def snapshot(led: Ledger, users: list[str]) -> dict[str, Any]:
    """Every query answer for ``users`` and every transaction they touch."""
    out: dict[str, Any] = {"tip": led.chain_tip(), "audit": led.audit_tail(limit=1000)}
    txids: set[str] = set()
    for user in users:
        outputs = led.list_outputs(user, basket=None, spendable=None,
                                   include_locking_scripts=True, limit=1000)
        actions = led.list_actions(user, limit=1000)
        out[f"{user}/outputs"] = outputs
        out[f"{user}/spendable"] = led.list_outputs(user, limit=1000)
        out[f"{user}/actions"] = actions
        out[f"{user}/balance"] = led.balance(user)
        out[f"{user}/balance/default"] = led.balance(user, basket="default")
        for o in outputs.items:
            out[f"{user}/explain/{o.txid}:{o.vout}"] = led.explain_output(user, f"{o.txid}:{o.vout}")
            txids.add(o.txid)
        txids |= {a.txid for a in actions.items if a.txid}
    for txid in sorted(txids):
        out[f"tx/{txid}"] = led.get_transaction(txid)
        out[f"history/{txid}"] = led.history(txid)
    return out


@pytest.fixture
def catchup_ledger(ledger_url: str) -> Iterator[tuple[str, list[Writer], dict[str, int]]]:
    with Ledger.open(ledger_url) as led:  # funded inline, so the outputs are projected
        world = _world(led)
        alice_ops, amounts = _fund(world, ALICE, _amounts(12, 2_000))
        bob_ops, bob_amounts = _fund(world, BOB, _amounts(5, 5_000))
    amounts.update(bob_amounts)
    writers = [Writer("a1", ALICE, alice_ops[:8]), Writer("a2", ALICE, alice_ops[4:][::-1]),
               Writer("b1", BOB, bob_ops)]
    yield ledger_url, writers, amounts


@pytest.mark.slow
def test_a_killed_catchup_projector_applies_every_event_exactly_once(
        catchup_ledger: tuple[str, list[Writer], dict[str, int]]) -> None:
    """Writers in catch-up mode append while the projector is SIGKILLed three times -- twice
    inside a page's transaction (rows written, not committed), once wherever it happened to
    be -- and restarted; a final run completes. The tracked position never passes the log
    head, never moves back, a page killed before its commit leaves no trace, the live tables
    match a fold of the log at every kill, and at the end every query answers the same before
    and after a rebuild from zero."""
    url, writers, amounts = catchup_ledger
    rng = random.Random(404)
    wchildren = [w.start(url, "catchup") for w in writers]
    runners: list[Child] = []
    try:
        barrier(wchildren)
        with Ledger.open(url, projections="catchup") as led:
            position = projection_position(url)
            for round_no, held in enumerate([True, False, True]):
                # small pages: many page boundaries to die at. The writers append >= 8 events
                # per outpoint (>= 136), far more than three rounds of a few pages consume, so
                # a runner never waits for events that will not come
                args: dict[str, Any] = {"url": url, "page_events": 5, "follow": True}
                pages = rng.randint(1, 4)
                if held:
                    args["hold_at_page"] = pages
                runner = Child("catchup", args)
                runners.append(runner)
                runner.expect("ready")
                if held:
                    wait_for([runner], _at_least(runner, "in_page", 1), "a stop inside a page")
                else:
                    wait_for([runner], _at_least(runner, "page", pages), f"{pages} pages")
                runner.kill()
                runner.drain()
                wait_pg_sessions_gone(url, [runner.tag])

                reported = [m for m in runner.received if m["kind"] == "page"]
                for m in reported:
                    assert m["position"] <= m["head"], f"tracked past the head: {m}"
                assert [m["position"] for m in reported] == \
                    sorted({m["position"] for m in reported}), "positions only move forward"
                now = projection_position(url)
                head = log_head(url)
                assert position <= now <= head, (round_no, position, now, head)
                assert not reported or now >= reported[-1]["position"], "a reported page was lost"
                if held:
                    (stopped,) = [m for m in runner.received if m["kind"] == "in_page"]
                    committed = reported[-1]["position"] if reported else position
                    assert now == committed, "the page killed before its commit left no trace"
                    assert stopped["pending_position"] > now
                position = now
                report = led.verify_projections()
                assert report.ok, (round_no, report.differences[:3])
                assert report.position == now

            for c in wchildren:
                wait_for([c], _at_least(c, "done", 1), "the writer to finish")
                c.wait()
            assert projection_position(url) < log_head(url), "events are still pending"

            # the final run, through the public API this time (default page size)
            head = log_head(url)
            applied = 0
            while n := led.run_projections(max_pages=1):
                applied += n
                assert projection_position(url) <= head
            assert applied == len(raw_events(url, position)), "each pending event applied once"
            assert projection_position(url) == head == led.head_position()

            report = led.verify_projections()
            assert report.ok, report.differences[:3]
            assert report.position == head
            kinds = check_acknowledged(led, writers)
            assert kinds.get("ack", 0) + kinds.get("lagged", 0) >= 4 * 17, kinds
            check_one_holder(led, writers, amounts)
            before = snapshot(led, [ALICE, BOB])
            rebuilt = led.rebuild_projections()
            assert rebuilt.position == head
            after = snapshot(led, [ALICE, BOB])
            assert before.keys() == after.keys()
            differing = [k for k in before if before[k] != after[k]]
            assert not differing, f"live tables and a rebuild from zero disagree on {differing[:5]}"
            assert projection_position(url) == head
            assert led.verify_projections().ok
    finally:
        for c in wchildren + runners:
            c.close()


LAGGING_READ_BACK = (
    "catch-up mode: the facade answers create_action/sign_action/abort_action/record_broadcast/"
    "transition/record_proof by reading the view back from the lagging projection "
    "(ledger/facade.py: `return self.get_action(...)` / `return self.get_transaction(...)` "
    "after the app command committed)")


def test_commands_in_catchup_mode_return_their_own_result(ledger_url: str) -> None:
    """A caller in catch-up mode must be told what its command did, not what the projection
    knew before it: an exception after a commit makes the caller retry a command that
    already happened."""
    with Ledger.open(ledger_url) as led:
        (op,) = _fund(_world(led), ALICE, [9_000])[0]
    with Ledger.open(ledger_url, projections="catchup") as led:
        view = led.create_action(ALICE, "pay", description="lagging", inputs=[op],
                                 outputs=_one_sat())
        assert view.reference == "pay" and view.status == "unsigned"
        txid, vout = op.split(":")
        raw = chainkit.make_tx([(txid, int(vout))], [(1, b"\x51")])
        assert led.sign_action(ALICE, "pay", raw_tx=raw).state == "queued"
        tx = led.record_broadcast(chainkit.txid_of(raw),
                                  [ProviderResult(provider="arc", status=ProviderStatus.SUCCESS)])
        assert tx.state == "sent"


class StaleView(Exception):
    """A command answered with a view older than its own effect."""


def test_a_catchup_mode_command_does_not_answer_with_a_stale_view(ledger_url: str) -> None:
    """A broadcaster loop in catch-up mode that sees ``queued`` after recording a success will
    broadcast again (and record a second attempt)."""
    with Ledger.open(ledger_url) as led:
        (op,) = _fund(_world(led), ALICE, [9_000])[0]
    with Ledger.open(ledger_url, projections="catchup") as led:
        with contextlib.suppress(UnknownAction):
            led.create_action(ALICE, "pay", description="lagging", inputs=[op], outputs=_one_sat())
        txid, vout = op.split(":")
        raw = chainkit.make_tx([(txid, int(vout))], [(1, b"\x51")])
        with contextlib.suppress(UnknownTransaction):
            led.sign_action(ALICE, "pay", raw_tx=raw)
        assert led.run_projections() > 0  # the projection now knows the queued transaction
        tx = led.record_broadcast(chainkit.txid_of(raw),
                                  [ProviderResult(provider="arc", status=ProviderStatus.SUCCESS)])
        if tx.state != "sent":
            raise StaleView(f"answered {tx.state}, but the log says sent")
