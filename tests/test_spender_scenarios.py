"""Scenarios of a wallet's spends going wrong, each the incident it prevents: a spend the draft
never reserved, a double spend found after a release, a proof that arrives inside a BEEF for a
transaction the ledger already has. Run on SQLite and PostgreSQL; every one ends with the
projections equal to a rebuild from the log."""

from __future__ import annotations

import pytest

from adapters import chainkit
from adapters.world import World
from ledger import (
    InternalizeOutput,
    InvalidProof,
    InvalidTransaction,
    Ledger,
    NewOutput,
    Outpoint,
    PreconditionFailed,
    ProcessingStatus,
    ProviderResult,
)

S = ProcessingStatus


class Arc:
    name = "arc"

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        return ProviderResult(provider="arc", status="seen")


def test_a_signed_transaction_may_not_spend_outputs_its_draft_did_not_reserve(
        led: Ledger, world: World) -> None:
    """The wallet signs a transaction that also spends alice's other coin and one of bob's.
    Accepted, both would stay listed as spendable although spent on chain."""
    x, y = world.fund("alice", [20_000, 7_000])
    (z,) = world.fund("bob", [9_000])
    script = world.script()
    led.create_action("alice", "pay", description="d", inputs=[x],
                      outputs=[NewOutput(vout=0, satoshis=30_000, locking_script=script,
                                         basket=None)])
    for extra in (y, z):
        raw = chainkit.make_tx([(x.txid, x.vout), (extra.txid, extra.vout)], [(30_000, script)])
        head = led.head_position()
        with pytest.raises(InvalidTransaction, match=f"spends {extra}"):
            led.sign_action("alice", "pay", raw_tx=raw)
        assert led.head_position() == head
    outside = chainkit.txid_of(b"a coin from outside the ledger")
    raw = chainkit.make_tx([(x.txid, x.vout), (outside, 0)], [(30_000, script)])
    assert led.sign_action("alice", "pay", raw_tx=raw).state == S.QUEUED
    assert led.balance("alice").spendable == 7_000 and led.balance("bob").spendable == 9_000
    assert led.verify_projections().ok


def test_a_double_spend_found_after_the_inputs_were_released_quarantines_them(
        led: Ledger, world: World) -> None:
    """Providers said invalid (the inputs went back), an operator revived the transaction for
    review, and then a conflicting transaction turned up: its input is quarantined, as on the
    direct path, never silently spendable again."""
    (coin,) = world.fund("alice", [20_000])
    raw, _ = world.spend("alice", "a", [coin], [(19_000, world.script())])
    txid = led.sign_action("alice", "a", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="invalid")])
    assert led.balance("alice").spendable == 20_000
    led.transition(txid, "unfail", reason="re-review")
    led.transition(txid, "doubleSpend", reason="a conflicting transaction was found")
    assert led.explain_output("alice", coin).category == "quarantined"
    assert led.balance("alice").quarantined == 20_000 and led.balance("alice").spendable == 0
    led.confirm_unspent([coin], reason="utxo check: unspent")
    assert led.balance("alice").spendable == 20_000
    assert led.verify_projections().ok


def test_a_double_spend_after_release_leaves_an_input_another_action_took(
        led: Ledger, world: World) -> None:
    (coin,) = world.fund("alice", [20_000])
    raw, _ = world.spend("alice", "a", [coin], [(19_000, world.script())])
    txid = led.sign_action("alice", "a", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="invalid")])
    led.transition(txid, "unfail", reason="re-review")
    world.spend("alice", "b", [coin], [(18_000, world.script())])  # reserves it again
    led.transition(txid, "doubleSpend", reason="a conflicting transaction was found")
    assert led.explain_output("alice", coin).category == "reserved"
    assert led.verify_projections().ok


def _received_unproven(led: Ledger, world: World) -> tuple[bytes, str]:
    """Bob takes output 0 of a payment the network has seen but no block holds yet."""
    world.mine_empty(2)
    raw = world.external_payment([5_000, 6_000])
    txid = chainkit.txid_of(raw)
    led.internalize_action("bob", beef=chainkit.make_beef("V1", raw),
                           outputs=[InternalizeOutput(vout=0)], description="x",
                           broadcasters=[Arc()])
    return raw, txid


def test_a_proof_in_a_beef_for_a_known_transaction_is_checked_and_recorded(
        led: Ledger, world: World) -> None:
    """Bob received a payment while it was unproven; carol is paid by the same transaction
    once it is mined, and her BEEF carries the proof."""
    raw, txid = _received_unproven(led, world)
    assert led.get_transaction(txid).state == S.SEEN
    block = world.mine([txid])
    _, bogus = chainkit.make_block([txid, "11" * 32], height=block.height)
    head = led.head_position()
    with pytest.raises(InvalidProof):
        led.internalize_action("carol", beef=chainkit.make_beef("V1", raw, bump=bogus[txid]),
                               outputs=[InternalizeOutput(vout=1)], description="x")
    assert led.head_position() == head
    led.internalize_action("carol", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           outputs=[InternalizeOutput(vout=1)], description="x")
    tx = led.get_transaction(txid)
    assert (tx.state, tx.height, tx.block_hash) == (S.UNCONFIRMED, block.height, block.hash)
    world.mine()
    assert led.get_transaction(txid).state == S.CONFIRMED
    assert led.verify_projections().ok


def test_a_mined_payment_another_user_internalizes_can_no_longer_be_aborted(
        led: Ledger, world: World) -> None:
    """Alice's payment to bob was never broadcast by the wallet but got mined; bob
    internalizes it with its proof. Aborting it afterwards would release a spent input."""
    (coin,) = world.fund("alice", [7_000])
    raw, _ = world.spend("alice", "q", [coin], [(6_000, world.script())])
    txid = led.sign_action("alice", "q", raw_tx=raw).txid
    block = world.mine([txid])
    led.internalize_action("bob", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           outputs=[InternalizeOutput(vout=0)], description="paid by alice")
    assert led.get_transaction(txid).state == S.UNCONFIRMED
    with pytest.raises(PreconditionFailed):
        led.abort_action("alice", "q", reason="changed my mind")
    assert led.explain_output("alice", coin).category == "spent"
    assert led.verify_projections().ok


def test_a_double_spent_transaction_keeps_its_state_when_a_beef_proves_it(
        led: Ledger, world: World) -> None:
    """``doubleSpend`` takes no proof (the FSM table): a BEEF proving the transaction is still
    checked, and bob's receipt recorded, but the state is the network's verdict and stays."""
    raw, txid = _received_unproven(led, world)
    led.transition(txid, "doubleSpend", reason="a conflicting transaction was mined")
    block = world.mine([txid])
    _, bogus = chainkit.make_block([txid, "11" * 32], height=block.height)
    with pytest.raises(InvalidProof):
        led.internalize_action("carol", beef=chainkit.make_beef("V1", raw, bump=bogus[txid]),
                               outputs=[InternalizeOutput(vout=1)], description="x")
    led.internalize_action("carol", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           outputs=[InternalizeOutput(vout=1)], description="x")
    assert led.get_transaction(txid).state == S.DOUBLE_SPEND
    assert led.list_actions("carol").total == 1
    assert led.verify_projections().ok


def _shared_coin(led: Ledger, world: World, users: tuple[str, ...]) -> tuple[bytes, str]:
    world.mine_empty(2)
    raw = world.external_payment([10_000, 1_000])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    beef = chainkit.make_beef("V1", raw, bump=block.bumps[txid])
    for user in users:
        led.internalize_action(user, beef=beef, outputs=[InternalizeOutput(vout=0)],
                               description="a payment to the household")
    return beef, txid


def _category(led: Ledger, user: str, op: Outpoint) -> str:
    return str(led.explain_output(user, op).category)


def test_an_output_two_users_hold_shows_the_other_users_spend(led: Ledger, world: World) -> None:
    """Alice and bob both hold an output. Alice spends it: bob's row must not stay spendable
    (his balance overstated, his wallet offering a spent coin); when alice's spend is aborted,
    it is spendable for both again."""
    _, txid = _shared_coin(led, world, ("alice", "bob"))
    coin = Outpoint(txid=txid, vout=0)
    world.spend("alice", "first", [coin], [(9_000, world.script())])
    assert [_category(led, u, coin) for u in ("alice", "bob")] == ["reserved", "reserved"]
    assert "of user 'alice'" in " ".join(led.explain_output("bob", coin).reasons)
    assert led.balance("bob").spendable == 0 and led.balance("bob").reserved == 10_000
    led.abort_action("alice", "first", reason="wrong amount")
    assert [_category(led, u, coin) for u in ("alice", "bob")] == ["spendable", "spendable"]
    raw, _ = world.spend("alice", "pay", [coin], [(9_000, world.script())])
    txid2 = led.sign_action("alice", "pay", raw_tx=raw).txid
    led.record_broadcast(txid2, [ProviderResult(provider="arc", status="success")])
    world.prove([txid2])
    world.mine()
    assert [_category(led, u, coin) for u in ("alice", "bob")] == ["spent", "spent"]
    assert led.balance("bob").spendable == 0
    assert led.verify_projections().ok
    before = [led.list_outputs(u, spendable=None).items for u in ("alice", "bob")]
    led.rebuild_projections()
    assert [led.list_outputs(u, spendable=None).items for u in ("alice", "bob")] == before


def test_a_user_who_takes_an_output_after_another_reserved_it_sees_the_reservation(
        led: Ledger, world: World) -> None:
    beef, txid = _shared_coin(led, world, ("alice",))
    coin = Outpoint(txid=txid, vout=0)
    world.spend("alice", "pay", [coin], [(9_000, world.script())])
    led.internalize_action("carol", beef=beef, outputs=[InternalizeOutput(vout=0)],
                           description="the same payment, seen by carol")
    assert _category(led, "carol", coin) == "reserved"
    led.abort_action("alice", "pay", reason="not needed")
    assert _category(led, "carol", coin) == "spendable"
    assert led.verify_projections().ok


def test_a_double_spent_shared_output_is_quarantined_for_every_holder(
        led: Ledger, world: World) -> None:
    _, txid = _shared_coin(led, world, ("alice", "bob"))
    coin = Outpoint(txid=txid, vout=0)
    raw, _ = world.spend("alice", "pay", [coin], [(9_000, world.script())])
    spender = led.sign_action("alice", "pay", raw_tx=raw).txid
    led.record_broadcast(spender, [ProviderResult(provider="arc", status="double_spend")])
    assert [_category(led, u, coin) for u in ("alice", "bob")] == ["quarantined"] * 2
    led.confirm_unspent([coin], reason="utxo check: unspent")
    assert [_category(led, u, coin) for u in ("alice", "bob")] == ["spendable"] * 2
    assert led.verify_projections().ok
