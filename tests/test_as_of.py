"""``as_of``: what the ledger believed at a log position or a time, checked against an independent
fold of the log prefix (``tests/fold_oracle.py``, which uses no ``projections`` code).

One realistic incident history runs on each backend: receipts, a payment that needs two
broadcast attempts and is taken by its payee, a draft holding an input, a double spend (its input
quarantined, a local re-spend refused, then released by ``confirm_unspent``), a two-block reorg of
a confirmed payment that is re-proven, a reorged coinbase frozen by an operator, a nosend payment
frozen and released, a coinbase that matures 100 blocks after its block, and the
double-spent payment put back under review (``unfail``).

About fifty positions of that history (each named moment and its neighbours, every event inside
the double-spend and reorg saves, every fourth event elsewhere) are replayed and compared with
the fold of the same prefix: transactions, actions, outputs for spendable True/False/None per
basket, balances per user and basket, explanations and their evidence positions, the chain tip,
and each transaction's history (a prefix of the live one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import new_pg_schema
from fold_oracle import BUCKETS, Fold, fold_log, read_log
from query_capture import assert_matches_fold, capture, capture_differences
from sqlalchemy import text

from adapters import chainkit
from adapters.world import World
from ledger import (
    InternalizeOutput,
    InvalidInput,
    Ledger,
    NewOutput,
    Outpoint,
    OutputNotSpendable,
    ProcessingStatus,
    ProviderResult,
    UnknownTransaction,
)

S = ProcessingStatus
LIVE_TABLES = ("outputs", "transactions", "actions", "action_labels", "tx_audit", "headers", "meta")
CB_SATS = 625_000_000
LOST_CB_SATS = 312_500_000


@dataclass
class Incident:
    """The history's transactions and the positions that matter to an auditor."""

    tx: dict[str, str] = field(default_factory=dict)
    at: dict[str, int] = field(default_factory=dict)
    coinbase_height: int = 0


def _receive_coinbase(world: World, user: str, satoshis: int) -> tuple[str, int]:
    raw = chainkit.make_coinbase(world.tip_height + 1, [(satoshis, world.script())])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    world.ledger.internalize_action(
        user, beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
        description="block reward", outputs=[InternalizeOutput(vout=0, basket="mining")])
    return txid, block.height


def _pay(world: World, user: str, ref: str, inputs: list[Outpoint],
         outputs: list[NewOutput]) -> bytes:
    world.ledger.create_action(user, ref, description=ref, inputs=inputs, outputs=outputs,
                               labels=[ref.split("-")[0]])
    return chainkit.make_tx([(i.txid, i.vout) for i in inputs],
                            [(o.satoshis, o.locking_script) for o in outputs])


def _incident(world: World) -> Incident:
    """Build the history; ``at[name]`` is the head position right after the named step."""
    led, inc = world.ledger, Incident()

    def mark(name: str) -> None:
        inc.at[name] = led.head_position()

    alice = world.fund("alice", [50_000, 30_000], labels=["salary"])
    bob = world.fund("bob", [20_000, 7_000], basket="savings")
    inc.tx["cb"], inc.coinbase_height = _receive_coinbase(world, "carol", CB_SATS)
    mark("funded")

    raw = _pay(world, "alice", "rent-1", [alice[0]], [
        NewOutput(vout=0, satoshis=20_000, locking_script=world.script(), basket=None),
        NewOutput(vout=1, satoshis=30_000, locking_script=world.script(), tags=["change"],
                  change=True)])
    pay = inc.tx["pay"] = led.sign_action("alice", "rent-1", raw_tx=raw).txid
    led.record_broadcast(pay, [ProviderResult(provider="arc", status="service_error")])
    mark("pay sending")
    led.record_broadcast(pay, [ProviderResult(provider="arc", status="success"),
                               ProviderResult(provider="woc", status="seen")])
    led.internalize_action("bob", beef=chainkit.make_beef("V2", raw), description="rent",
                           outputs=[InternalizeOutput(vout=0, tags=["from-alice"])],
                           labels=["rent"])
    world.prove([pay])
    world.mine()
    mark("pay confirmed")

    led.create_action("alice", "coffee-draft", description="held", inputs=[alice[1]],
                      outputs=[NewOutput(vout=0, satoshis=30_000, locking_script=world.script(),
                                         basket=None)], labels=["coffee"])
    mark("draft reserved")

    raw = _pay(world, "bob", "gift-1", [bob[0]], [
        NewOutput(vout=0, satoshis=15_000, locking_script=world.script(), basket=None),
        NewOutput(vout=1, satoshis=5_000, locking_script=world.script(), basket="savings",
                  change=True)])
    ds = inc.tx["ds"] = led.sign_action("bob", "gift-1", raw_tx=raw).txid
    mark("before double spend")
    led.record_broadcast(ds, [ProviderResult(provider="arc", status="success"),
                              ProviderResult(provider="woc", status="double_spend")])
    mark("after double spend")
    head = led.head_position()
    with pytest.raises(OutputNotSpendable):
        led.create_action("bob", "gift-2", description="re-spend", inputs=[bob[0]],
                          outputs=[NewOutput(vout=0, satoshis=20_000,
                                             locking_script=world.script(), basket=None)])
    assert led.head_position() == head
    led.confirm_unspent([bob[0]], reason="utxo check: unspent", actor="monitor")
    mark("released")

    before_reorg = led.head_position()
    new, _ = world.reorg(2, [[], [pay], []], salt="fork-1")
    inc.at["reorg start"] = before_reorg
    mark("pay reorging")
    led.record_proof(pay, new[1].bumps[pay])
    mark("pay re-proven")

    raw = _pay(world, "alice", "coffee-1", [Outpoint(txid=pay, vout=1)], [
        NewOutput(vout=0, satoshis=4_000, locking_script=world.script(), basket=None),
        NewOutput(vout=1, satoshis=26_000, locking_script=world.script(), change=True)])
    ns = inc.tx["nosend"] = led.sign_action("alice", "coffee-1", raw_tx=raw, nosend=True).txid
    led.transition(ns, S.FROZEN, reason="operator hold", actor="ops")
    led.transition(ns, S.QUEUED, reason="operator release", actor="ops")
    led.abort_action("alice", "coffee-draft", reason="changed my mind")
    mark("draft aborted")

    inc.tx["lost"], _ = _receive_coinbase(world, "dave", LOST_CB_SATS)
    world.reorg(1, [[], []], salt="fork-2")
    mark("coinbase lost")
    led.transition(inc.tx["lost"], S.FROZEN, reason="coinbase-lost", actor="monitor")
    mark("lost coinbase frozen")

    world.mine_empty(inc.coinbase_height + 99 - world.tip_height)
    mark("coinbase immature")
    world.mine()
    mark("coinbase mature")
    led.transition(ds, S.UNFAIL, reason="operator re-review", actor="ops")
    mark("double spend unfailed")
    led.note(pay, "incident.ticket", ticket="INC-42")
    return inc


Replayed = tuple[Ledger, Incident]


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def replayed(request: pytest.FixtureRequest,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ledger, Incident]]:
    """One incident ledger per backend, shared by this module's tests: they only read (and the
    ones that check the log and the live tables stay unchanged would catch a writer)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('as-of') / 'ledger.db'}"
    else:
        url = new_pg_schema(request.getfixturevalue("pg_database"))
    with Ledger.open(url) as led:
        world = World(led)
        world.mine_empty(5)
        yield led, _incident(world)


def _sweep_positions(led: Ledger, inc: Incident) -> list[int]:
    """The replayed positions: 0, each named moment and its neighbours, every event inside the
    double-spend and reorg saves, and every fourth event otherwise (the long run of empty blocks
    contributes only its maturity boundary)."""
    events = [p for p, _ in read_log(led)]
    wanted = {0, events[-1]}
    for mark in inc.at.values():
        wanted |= {mark - 1, mark, mark + 1}
    for start, end in (("before double spend", "after double spend"),
                       ("reorg start", "pay reorging")):
        wanted |= {p for p in events if inc.at[start] < p <= inc.at[end]}
    run = range(inc.at["lost coinbase frozen"] + 2, inc.at["coinbase immature"] - 1)
    wanted |= {p for i, p in enumerate(events) if i % 4 == 0 and p not in run}
    return sorted(wanted & {0, *events})


def _live_dump(led: Ledger) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the live projection views and every stored event (position, topic)."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with led._engine.connect() as conn:
        for table in LIVE_TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table}")).all()
            dump[table] = sorted((tuple(r) for r in rows), key=repr)
    dump["log"] = [(p, type(e).TOPIC) for p, e in read_log(led)]
    return dump


class TestAsOfEqualsTheFold:
    """Replays at positions agree with an independent fold of the same log prefix."""

    def test_every_position_of_an_incident_matches_the_fold(self, replayed: Replayed) -> None:
        """Guards against as_of replaying a different prefix than asked, or a replay projection
        that disagrees with the log's meaning at any point (mid-save, mid-reorg, around the
        double spend and the coinbase maturing)."""
        led, incident = replayed
        positions = _sweep_positions(led, incident)
        everything = fold_log(led).txs
        live_history = {t: led.history(t) for t in everything}
        fold, events = Fold(), iter(read_log(led))
        pending: tuple[int, Any] | None = None
        for p in positions:
            while True:
                pending = pending or next(events, None)
                if pending is None or pending[0] > p:
                    break
                fold.apply(*pending)
                pending = None
            view = led.as_of(p)
            assert view.position == fold.position == p, (view.position, p)
            absent = tuple(t for t in everything if t not in fold.txs)
            got = capture(view, fold, absent_txids=absent, full=False)
            assert_matches_fold(got, fold, where=f"as_of({p})")
            for txid in absent:
                assert got[f"history {txid}"][1] == "UnknownTransaction"
            for txid in fold.txs:
                history = got[f"history {txid}"]
                assert [e["position"] for e in history] == [
                    e.position for e in live_history[txid] if e.position <= p], \
                    f"as_of({p}).history({txid}) is not the prefix of the live history"
                assert set(fold.audit_positions[txid]) <= {e["position"] for e in history}

    def test_the_named_moments_mean_what_an_auditor_expects(self, replayed: Replayed) -> None:
        """Guards against an oracle and a projection that agree on something wrong: the key
        moments are pinned to hand-computed SPEC §4 answers."""
        led, incident = replayed
        at, tx = incident.at, incident.tx

        def balance(p: int, user: str) -> tuple[int, ...]:
            b = led.as_of(p).balance(user)
            return tuple(getattr(b, k) for k in BUCKETS)

        def state(p: int, txid: str) -> S:
            return led.as_of(p).get_transaction(txid).state

        assert state(at["pay sending"], tx["pay"]) == S.SENDING
        assert led.as_of(at["pay sending"]).get_transaction(tx["pay"]).attempts == 1
        assert balance(at["pay sending"], "alice") == (30_000, 0, 30_000, 0, 0)
        assert balance(at["draft reserved"], "alice") == (30_000, 30_000, 0, 0, 0)
        assert balance(at["before double spend"], "bob") == (27_000, 0, 0, 0, 0)
        assert state(at["before double spend"], tx["ds"]) == S.QUEUED
        assert balance(at["after double spend"], "bob") == (27_000, 0, 0, 0, 20_000)
        assert state(at["after double spend"], tx["ds"]) == S.DOUBLE_SPEND
        assert balance(at["released"], "bob") == (47_000, 0, 0, 0, 0)
        assert state(at["pay reorging"], tx["pay"]) == S.REORGING
        assert balance(at["pay reorging"], "alice") == balance(at["released"], "alice"), \
            "a reorg preserves spendability"
        assert state(at["pay re-proven"], tx["pay"]) == S.CONFIRMED
        assert balance(at["coinbase lost"], "dave") == (0, 0, LOST_CB_SATS, 0, 0), \
            "a reorged coinbase is unspendable at once (visible, pending)"
        assert balance(at["lost coinbase frozen"], "dave") == (0, 0, 0, 0, 0)
        assert balance(at["coinbase immature"], "carol") == (0, 0, 0, CB_SATS, 0)
        assert balance(at["coinbase mature"], "carol") == (CB_SATS, 0, 0, 0, 0)
        unfailed = led.as_of(at["double spend unfailed"])
        assert balance(at["double spend unfailed"], "bob") == (47_000, 0, 5_000, 0, 0), \
            "unfail keeps the toxic value it entered with: listed again, not spendable"
        assert [(o.txid, o.vout) for o in unfailed.list_outputs(
            "bob", basket="savings", spendable=False).items] == [(tx["ds"], 1)]
        mature = led.as_of(at["coinbase mature"])
        tip = mature.chain_tip()
        assert tip is not None and tip.height == incident.coinbase_height + 100
        immature_tip = led.as_of(at["coinbase immature"]).chain_tip()
        assert immature_tip is not None and immature_tip.height == tip.height - 1

    def test_positions_inside_the_reorg_save(self, replayed: Replayed) -> None:
        """Guards against a replay that jumps over the inside of one atomic save: between the
        first disconnect and the state change, the proof still names an orphaned block."""
        led, incident = replayed
        start, end, pay = incident.at["reorg start"], incident.at["pay reorging"], \
            incident.tx["pay"]
        inside = [(p, type(e).TOPIC.rsplit(".", 1)[1]) for p, e in read_log(led)
                  if start < p <= end]
        kinds = [k for _, k in inside]
        assert kinds[:2] == ["BlockDisconnected", "BlockDisconnected"], kinds
        assert kinds[-2:] == ["ProofInvalidated", "ProcessingChanged"], kinds
        first_disconnect, invalidated = inside[0][0], inside[-2][0]
        orphaned = led.as_of(start).get_transaction(pay)
        torn = led.as_of(first_disconnect).get_transaction(pay)
        assert torn.state == S.CONFIRMED and torn.block_hash == orphaned.block_hash
        tip = led.as_of(first_disconnect).chain_tip()
        assert tip is not None and orphaned.height is not None and tip.height == orphaned.height
        lost = led.as_of(invalidated).get_transaction(pay)
        assert (lost.state, lost.height, lost.block_hash) == (S.CONFIRMED, None, None)
        assert led.as_of(end).get_transaction(pay).state == S.REORGING
        for p, _ in inside:
            fold = fold_log(led, p)
            assert_matches_fold(capture(led.as_of(p), fold, full=False), fold,
                                where=f"inside the reorg, as_of({p})")


class TestAsOfEnds:
    """The empty start, the head, and the live tables left alone."""

    def test_as_of_zero_is_empty(self, replayed: Replayed) -> None:
        """Guards against a replay that leaks rows from the live tables or from a later prefix."""
        led, incident = replayed
        view = led.as_of(0)
        assert view.position == 0
        assert view.chain_tip() is None
        for user in ("alice", "bob", "carol", "dave"):
            assert view.list_outputs(user, basket=None, spendable=None).total == 0
            assert view.list_actions(user).total == 0
            assert view.balance(user).model_dump() == dict.fromkeys(BUCKETS, 0)
        for txid in incident.tx.values():
            with pytest.raises(UnknownTransaction):
                view.get_transaction(txid)
            with pytest.raises(UnknownTransaction):
                view.history(txid)
        assert view.audit_tail(limit=10) == []

    def test_as_of_head_equals_the_live_view(self, replayed: Replayed) -> None:
        """Guards against a replay path that differs from the inline path in any query."""
        led, _ = replayed
        fold = fold_log(led)
        live = capture(led, fold)
        assert_matches_fold(live, fold, where="live")
        replay = capture(led.as_of(led.head_position()), fold)
        diff = capture_differences(live, replay)
        assert not diff, "\n".join(diff[:5])

    def test_as_of_changes_neither_the_live_tables_nor_the_log(self, replayed: Replayed) -> None:
        """Guards against a replay that writes into (or swaps) the live projection set, or
        appends to the log: an incident audit must be side-effect free."""
        led, _ = replayed
        before = _live_dump(led)
        head = led.head_position()
        stamps = [e.timestamp for _, e in read_log(led)]
        for at in [0, 1, head // 3, head // 2, head - 1, head, head + 10, stamps[len(stamps) // 2],
                   stamps[-1] + timedelta(days=1)]:
            view = led.as_of(at)
            assert view.position <= head
            view.balance("alice")
        assert led.head_position() == head
        assert _live_dump(led) == before
        assert led.verify_projections().ok


def _clean_cuts(led: Ledger) -> Iterator[tuple[int, datetime, int]]:
    """``(position, timestamp, previous position)`` of events whose timestamp is later than every
    earlier event's and earlier than every later event's: there, time and position agree."""
    events = [(p, e.timestamp) for p, e in read_log(led)]
    for i, (p, ts) in enumerate(events):
        if all(t < ts for _, t in events[:i]) and all(t > ts for _, t in events[i + 1:]):
            yield p, ts, events[i - 1][0] if i else 0


class TestAsOfDatetime:
    """A time selects the same prefix as the position of the event stamped with it."""

    def test_an_event_timestamp_selects_that_event(self, replayed: Replayed) -> None:
        """Guards against an off-by-one at the time boundary (events stamped exactly ``t`` are
        in, one microsecond earlier they are out) and against a time replay that disagrees with
        the position replay it picks."""
        led, _ = replayed
        cuts = list(_clean_cuts(led))
        assert len(cuts) > 50, "most events are clean cuts in a single-writer history"
        for p, ts, previous in cuts[:: max(1, len(cuts) // 12)]:
            assert led.as_of(ts).position == p
            assert led.as_of(ts - timedelta(microseconds=1)).position == previous
        p, ts, _ = cuts[len(cuts) // 2]
        fold = fold_log(led, p)
        by_time, by_position = capture(led.as_of(ts), fold), capture(led.as_of(p), fold)
        assert not capture_differences(by_position, by_time)

    def test_any_timezone_names_the_same_instant(self, replayed: Replayed) -> None:
        """Guards against comparing wall-clock digits instead of instants."""
        led, _ = replayed
        p, ts, _ = list(_clean_cuts(led))[-3]
        for offset in (timedelta(hours=-7), timedelta(hours=5, minutes=30), timedelta(0)):
            assert led.as_of(ts.astimezone(timezone(offset))).position == p

    def test_a_time_before_the_first_event_is_empty(self, replayed: Replayed) -> None:
        """Guards against a time replay that starts from the wrong end of the log."""
        led, _ = replayed
        first = next(iter(read_log(led)))[1].timestamp
        view = led.as_of(first - timedelta(seconds=1))
        assert view.position == 0 and view.chain_tip() is None
        assert led.as_of(datetime(2000, 1, 1, tzinfo=UTC)).position == 0

    def test_every_event_timestamp_selects_a_prefix_that_contains_the_event(self, replayed: Replayed) -> None:
        """Guards against an auditor taking ``history(txid)[i].at`` and getting a replay that
        does not contain that very event (today: every reservation of a create_action)."""
        led, _ = replayed
        for p, e in read_log(led):
            assert led.as_of(e.timestamp).position >= p, (p, type(e).TOPIC)


class TestAsOfBadInput:
    """Malformed arguments are typed refusals and leave the log alone."""

    @pytest.mark.parametrize("bad", [-1, -(10**20), True, False, "5", "2025-01-31T14:03:00Z",
                                     1.5, None, b"\x01", [3], datetime(2025, 1, 31).date()],
                             ids=repr)
    def test_bad_positions_and_times_are_invalid_input(self, replayed: Replayed,
                                                       bad: Any) -> None:
        """Guards against a bool read as position 0/1, a string or float coerced, or a raw
        TypeError/ValueError escaping the typed error hierarchy."""
        led, _ = replayed
        head, before = led.head_position(), _live_dump(led)
        with pytest.raises(InvalidInput):
            led.as_of(bad)
        assert led.head_position() == head
        assert _live_dump(led) == before

    def test_a_naive_datetime_is_invalid_input(self, replayed: Replayed) -> None:
        """Guards against an ambiguous wall-clock time silently replaying the wrong moment."""
        led, _ = replayed
        head = led.head_position()
        with pytest.raises(InvalidInput):
            led.as_of(datetime(2025, 1, 31, 14, 3))
        assert led.head_position() == head
