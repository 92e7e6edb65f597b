"""A command's answer is the write model right after it saved, and it agrees with the projections.

Commands build their returned views from the aggregates they saved (``ledger.results``) instead of
reading the projections back. These tests guard the two ways that could go wrong: an answer that
differs from what the next query says (inline mode), and a command that committed but then failed
to answer because the projection had not caught up yet (catch-up mode).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import new_pg_schema

from adapters import chainkit
from adapters.world import World
from ledger import (
    ActionView,
    InternalizeOutput,
    Ledger,
    Outpoint,
    ProviderResult,
    TransactionView,
)


class Scripted:
    def __init__(self, name: str, status: str | None) -> None:
        self.name, self.status = name, status

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        if self.status is None:
            raise ConnectionError(f"{self.name} is down")
        return ProviderResult(provider=self.name, status=self.status)


def _story(led: Ledger, world: World) -> list[str]:
    """Every kind of command once; right after each, the query that must agree with its answer.
    Returns the names of the commands checked."""
    checked: list[str] = []

    def tx(name: str, view: TransactionView) -> None:
        _same(name, led.get_transaction(view.txid), view)
        checked.append(name)

    def action(name: str, view: ActionView) -> None:
        _same(name, led.get_action(view.user, view.reference), view)
        checked.append(name)

    funding = world.fund("alice", [10_000, 5_000])
    world.mine()
    created = led.create_action(
        "alice", "pay", description="payment", labels=["rent"], inputs=funding[:1],
        outputs=[{"vout": 0, "satoshis": 6_000, "locking_script": world.script(), "basket": None},
                 {"vout": 1, "satoshis": 3_800, "locking_script": world.script(), "change": True}])
    action("create_action", created)
    raw = chainkit.make_tx([(funding[0].txid, 0)], [(6_000, _script(led, "pay", 0)),
                                                    (3_800, _script(led, "pay", 1))])
    signed = led.sign_action("alice", "pay", raw_tx=raw)
    tx("sign_action", signed)
    tx("sign_action repeated", led.sign_action("alice", "pay", raw_tx=raw))
    led.note(signed.txid, "memo", by="test")
    tx("broadcast", led.broadcast(signed.txid, [Scripted("arc", None), Scripted("woc", "seen")]))
    tx("record_broadcast (late)", led.record_broadcast(
        signed.txid, [ProviderResult(provider="gp", status="success")]))
    tx("identity transition", led.transition(signed.txid, "seen", reason="already seen"))
    block = world.mine([signed.txid])
    tx("record_proof", led.record_proof(signed.txid, block.bumps[signed.txid]))
    tx("record_proof repeated", led.record_proof(signed.txid, block.bumps[signed.txid]))

    world.spend("alice", "draft", funding[1:], [(4_000, world.script()), (900, None)])
    action("abort unsigned", led.abort_action("alice", "draft", reason="changed my mind"))
    action("abort repeated", led.abort_action("alice", "draft", reason="changed my mind"))

    receipt = world.external_payment([2_500, 700])
    txid = chainkit.txid_of(receipt)
    proof_block = world.mine([txid])
    beef = chainkit.make_beef("V1", receipt, bump=proof_block.bumps[txid])
    action("internalize", led.internalize_action(
        "bob", beef=beef, description="from a friend", labels=["gift"],
        outputs=[InternalizeOutput(vout=0)]))
    action("internalize again (merge)", led.internalize_action(
        "bob", beef=beef, description="from a friend", labels=["gift", "late"],
        outputs=[InternalizeOutput(vout=1)]))
    paid_away = [{"vout": 0, "satoshis": 1, "locking_script": b"\x51", "basket": None}]
    action("create_action with a key", led.create_action(
        "bob", "keyed", description="keyed", outputs=paid_away, idempotency_key="k-1"))
    action("create_action repeated with the key", led.create_action(
        "bob", "keyed", description="keyed", outputs=paid_away, idempotency_key="k-1"))
    return checked


def _script(led: Ledger, reference: str, vout: int) -> bytes:
    """The locking script the draft declared for ``vout`` (read back from the action row)."""
    with led._engine.connect() as conn:
        from sqlalchemy import text
        row = conn.execute(text('SELECT "outputs" FROM "actions" WHERE "reference" = :r'),
                           {"r": reference}).scalar_one()
    import json
    return bytes.fromhex(next(o for o in json.loads(row) if o["vout"] == vout)["locking_script"])


def _same(name: str, queried: Any, answered: Any) -> None:
    assert queried == answered, f"{name}: query {queried!r}\n  != answer {answered!r}"


def test_every_answer_equals_the_next_query(led: Ledger, world: World) -> None:
    checked = _story(led, world)
    assert len(checked) == 14


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def catchup_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catchup.db'}"
    return new_pg_schema(request.getfixturevalue("pg_database"))


def test_commands_answer_in_catch_up_mode_before_the_projection_runs(catchup_url: str) -> None:
    """A writer in catch-up mode must get its answer even though no projection ran yet; once the
    catch-up process ran, the queries say what the commands answered."""
    with Ledger.open(catchup_url) as setup:  # headers and funds must be projected to spend
        world = World(setup)
        world.mine_empty(3)
        funding = world.fund("alice", [10_000])
        world.mine()
    with Ledger.open(catchup_url, projections="catchup") as led:
        world.ledger = led
        head = led.head_position()
        outputs = [{"vout": 0, "satoshis": 9_000, "locking_script": world.script(), "basket": None},
                   {"vout": 1, "satoshis": 800, "locking_script": world.script(), "change": True}]
        created = led.create_action("alice", "pay", description="in catch-up mode",
                                    inputs=funding, outputs=outputs)
        assert created.status == "unsigned" and created.satoshis_delta == 800 - 10_000
        raw = chainkit.make_tx([(funding[0].txid, 0)],
                               [(o["satoshis"], o["locking_script"]) for o in outputs])
        signed = led.sign_action("alice", "pay", raw_tx=raw)
        sent = led.broadcast(signed.txid, [Scripted("arc", "success")])
        assert (signed.state, sent.state) == ("queued", "sent")
        assert led.head_position() > head
        with pytest.raises(Exception, match="unknown"):
            led.get_transaction(signed.txid)  # not projected yet: the query cannot know it
        assert led.run_projections() > 0
        assert led.get_transaction(signed.txid) == sent
        assert led.get_action("alice", "pay").status == "unproven"
        assert led.verify_projections().ok


def test_broadcasters_get_an_atomic_beef_with_the_ancestry_they_need(led: Ledger,
                                                                     world: World) -> None:
    """A processor given a bare raw transaction cannot check its inputs: the broadcast BEEF must
    carry the proven parent with its BUMP, and an unproven parent with its own proven parent."""
    from adapters import bsv_codec
    got: list[bytes] = []

    class Recorder:
        name = "recorder"

        def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
            got.append(beef)
            return ProviderResult(provider=self.name, status="success")

    (coin,) = world.fund("alice", [9_000])            # proven: the BEEF carries its BUMP
    world.mine()
    raw, _ = world.spend("alice", "first", [coin], [(1_000, world.script()), (7_900, None)])
    first = led.broadcast(led.sign_action("alice", "first", raw_tx=raw).txid, [Recorder()])
    change = led.list_outputs("alice", spendable=True).items
    unproven = next(o for o in change if o.txid == first.txid)
    raw2, _ = world.spend("alice", "second", [Outpoint(txid=unproven.txid, vout=unproven.vout)],
                          [(500, world.script()), (7_300, None)])
    second = led.broadcast(led.sign_action("alice", "second", raw_tx=raw2).txid, [Recorder()])

    one, two = (bsv_codec.parse_beef(b) for b in got)
    assert one.version == "ATOMIC" and one.subject.txid == first.txid
    assert list(one.transactions) == [coin.txid, first.txid] and coin.txid in one.proofs
    assert two.subject.txid == second.txid
    assert list(two.transactions) == [coin.txid, first.txid, second.txid], \
        "the unproven parent comes with its own proven parent, parents first"
    assert set(two.proofs) == {coin.txid}
