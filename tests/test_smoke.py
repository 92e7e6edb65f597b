"""The whole write/read path once on each backend: fund, pay, broadcast, prove, reorg, verify."""

from __future__ import annotations

from adapters.world import World
from ledger import Ledger, ProcessingStatus, ProviderResult


def test_payment_lifecycle_survives_a_reorg_and_matches_a_rebuild(led: Ledger, world: World) -> None:
    funding = world.fund("alice", [50_000, 20_000])
    assert led.balance("alice").spendable == 70_000

    raw, _ = world.spend("alice", "pay-1", [funding[0]], [(30_000, world.script()), (19_000, None)])
    tx = led.sign_action("alice", "pay-1", raw_tx=raw)
    assert tx.state == ProcessingStatus.QUEUED
    led.transition(tx.txid, "sending", reason="broadcast")
    tx = led.record_broadcast(tx.txid, [ProviderResult(provider="arc", status="service_error"),
                                        ProviderResult(provider="woc", status="seen")])
    assert tx.state == ProcessingStatus.SEEN
    assert led.balance("alice").spendable == 20_000 + 19_000

    world.prove([tx.txid])
    assert led.get_transaction(tx.txid).state == ProcessingStatus.UNCONFIRMED
    world.mine()
    assert led.get_transaction(tx.txid).state == ProcessingStatus.CONFIRMED

    _, update = world.reorg(2, [[], [], []], salt="fork")
    assert update.affected_txids == [tx.txid]
    assert led.get_transaction(tx.txid).state == ProcessingStatus.REORGING
    assert led.balance("alice").spendable == 39_000, "a reorg preserves spendability"

    assert led.verify_projections().ok
    report = led.rebuild_projections()
    assert report.events == led.head_position()
    assert led.verify_projections().ok
    assert led.balance("alice").spendable == 39_000
