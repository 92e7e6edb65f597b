"""Reorg scenarios in the style of BDK's conflict tests: facts are never deleted, the view is
recomputed from them and the chain tip."""

from __future__ import annotations

import pytest

from adapters import chainkit
from adapters.world import World
from ledger import (
    ChainDiscontinuity,
    InternalizeOutput,
    Ledger,
    Outpoint,
    ProcessingStatus,
    ProviderResult,
)

S = ProcessingStatus


def _confirmed_payment(world: World, ref: str = "pay") -> str:
    funding = world.fund("alice", [10_000])
    raw, _ = world.spend("alice", ref, funding, [(6_000, world.script()), (4_000, None)])
    txid = world.ledger.sign_action("alice", ref, raw_tx=raw).txid
    world.ledger.record_broadcast(txid, [ProviderResult(provider="arc", status="success")])
    world.prove([txid])
    world.mine()
    assert world.ledger.get_transaction(txid).state == S.CONFIRMED
    return txid


def test_confirmed_in_an_orphaned_block_and_re_mined_at_another_height(
        led: Ledger, world: World) -> None:
    txid = _confirmed_payment(world)
    old_height = led.get_transaction(txid).height
    new_blocks, _ = world.reorg(2, [[], [txid], [], []], salt="fork")
    assert led.get_transaction(txid).state == S.REORGING
    led.record_proof(txid, new_blocks[1].bumps[txid])
    tx = led.get_transaction(txid)
    assert tx.state == S.CONFIRMED and tx.height == old_height + 1
    assert tx.block_hash == new_blocks[1].hash
    events = [e.event for e in led.history(txid)]
    assert events.count("proof.recorded") == 2 and events.count("proof.invalidated") == 1
    assert led.verify_projections().ok


def test_confirmed_then_reorged_and_never_re_mined_keeps_its_value(
        led: Ledger, world: World) -> None:
    txid = _confirmed_payment(world)
    before = led.balance("alice")
    world.reorg(2, [[], [], []], salt="fork")
    world.mine_empty(10)
    assert led.get_transaction(txid).state == S.REORGING
    assert led.balance("alice") == before
    stale = [e for e in led.history(txid) if e.event == "proof.invalidated"]
    assert len(stale) == 1, "one invalidation, however far the new chain grows"


def test_unconfirmed_spend_chain_survives_a_reorg_of_its_ancestor(
        led: Ledger, world: World) -> None:
    parent = _confirmed_payment(world)
    change = [o for o in led.list_outputs("alice").items if o.txid == parent]
    assert [o.satoshis for o in change] == [4_000]
    child_raw, _ = world.spend("alice", "child", [Outpoint(txid=parent, vout=1)],
                               [(3_000, world.script()), (1_000, None)])
    child = led.sign_action("alice", "child", raw_tx=child_raw).txid
    led.record_broadcast(child, [ProviderResult(provider="arc", status="seen")])
    world.reorg(2, [[], [], []], salt="fork")
    assert led.get_transaction(parent).state == S.REORGING
    assert led.get_transaction(child).state == S.SEEN, "the child's own state is untouched"
    child_change = [o for o in led.list_outputs("alice").items if o.txid == child]
    assert [o.satoshis for o in child_change] == [1_000]
    assert led.explain_output("alice", f"{parent}:1").category == "spent"
    assert led.verify_projections().ok


def test_a_reorged_coinbase_is_unspendable_at_once(led: Ledger, world: World) -> None:
    raw = chainkit.make_coinbase(world.tip_height + 1, [(625_000_000, world.script())])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    led.internalize_action("miner", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           description="coinbase", outputs=[InternalizeOutput(vout=0)])
    world.mine_empty(100)
    assert led.balance("miner").spendable == 625_000_000
    world.reorg(101, [[]] * 102, salt="fork")
    assert led.get_transaction(txid).state == S.REORGING
    balance = led.balance("miner")
    assert (balance.spendable, balance.immature) == (0, 0)
    assert led.explain_output("miner", f"{txid}:0").spendable is False
    assert led.verify_projections().ok


def test_two_reorgs_in_a_row(led: Ledger, world: World) -> None:
    txid = _confirmed_payment(world)
    first, _ = world.reorg(2, [[], [txid], []], salt="fork-1")
    led.record_proof(txid, first[1].bumps[txid])
    assert led.get_transaction(txid).state == S.CONFIRMED
    _, update = world.reorg(3, [[], [], [], []], salt="fork-2")
    assert update.affected_txids == [txid]
    assert led.get_transaction(txid).state == S.REORGING
    changes = [(e.from_state, e.to_state) for e in led.history(txid)
               if e.event == "processing.changed"]
    assert changes[-3:] == [("confirmed", "reorging"), ("reorging", "confirmed"),
                            ("confirmed", "reorging")]
    assert led.verify_projections().ok


def test_a_reorg_deeper_than_the_limit_is_refused_and_changes_nothing(ledger_url: str) -> None:
    with Ledger.open(ledger_url, max_reorg_depth_blocks=3) as led:
        world = World(led)
        world.mine_empty(8)
        tip_before, position_before = led.chain_tip(), led.head_position()
        with pytest.raises(ChainDiscontinuity, match="exceeds the limit of 3"):
            world.reorg(4, [[]] * 5, salt="deep")
        assert led.chain_tip() == tip_before
        assert led.head_position() == position_before


def test_headers_that_connect_to_nothing_known_are_refused(led: Ledger, world: World) -> None:
    orphan = chainkit.make_headers(2, start_height=50, prev_hash="ab" * 32, salt="x")
    before = led.head_position()
    with pytest.raises(ChainDiscontinuity, match="not on the active chain"):
        led.apply_headers(orphan)
    assert led.head_position() == before


def test_re_sent_headers_are_harmless(led: Ledger, world: World) -> None:
    before = led.head_position()
    update = led.apply_headers([b.header() for b in world.chain])
    assert (update.connected, update.disconnected) == ([], [])
    assert led.head_position() == before
