"""The requirements' ten acceptance scenarios, each as the incident it prevents."""

from __future__ import annotations

import pytest

from adapters import chainkit
from adapters.world import World
from ledger import (
    BroadcastFailed,
    InternalizeOutput,
    Ledger,
    Outpoint,
    ProcessingStatus,
    ProviderResult,
    UnknownTransaction,
)

S = ProcessingStatus


class Scripted:
    """A broadcaster that answers from a script (or raises)."""

    def __init__(self, name: str, status: str | None) -> None:
        self.name = name
        self.status = status
        self.calls: list[str] = []

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        self.calls.append(txid)
        if self.status is None:
            raise ConnectionError(f"{self.name} is down")
        return ProviderResult(provider=self.name, status=self.status)


def _signed_payment(world: World, user: str = "alice", ref: str = "pay") -> str:
    funding = world.fund(user, [10_000])
    raw, _ = world.spend(user, ref, funding, [(6_000, world.script()), (4_000, None)])
    return world.ledger.sign_action(user, ref, raw_tx=raw).txid


def test_1_happy_path_reaches_confirmed_once_buried(led: Ledger, world: World) -> None:
    txid = _signed_payment(world)
    assert led.broadcast(txid, [Scripted("arc", "success")]).state == S.SENT
    world.prove([txid])
    assert led.get_transaction(txid).state == S.UNCONFIRMED
    update = led.apply_headers([world.mine(apply=False).header()])
    assert update.affected_txids == [txid]
    assert led.get_transaction(txid).state == S.CONFIRMED


def _receive(world: World, user: str, *, depth_blocks: int) -> str:
    raw = world.external_payment([7_000])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    world.mine_empty(depth_blocks)
    beef = chainkit.make_beef("V2", raw, bump=block.bumps[txid])
    world.ledger.internalize_action(user, beef=beef, description="receipt",
                                    outputs=[InternalizeOutput(vout=0)])
    return txid


def test_2_third_party_payment_proven_deep_is_confirmed(led: Ledger, world: World) -> None:
    txid = _receive(world, "bob", depth_blocks=3)
    assert led.get_transaction(txid).state == S.CONFIRMED
    assert led.balance("bob").spendable == 7_000


def test_3_third_party_payment_at_the_tip_is_unconfirmed_then_promoted(
        led: Ledger, world: World) -> None:
    txid = _receive(world, "bob", depth_blocks=0)
    assert led.get_transaction(txid).state == S.UNCONFIRMED
    world.mine()
    assert led.get_transaction(txid).state == S.CONFIRMED


def test_4_unproven_receipt_whose_broadcast_fails_leaves_no_record(
        led: Ledger, world: World) -> None:
    raw = world.external_payment([5_000])
    before = led.head_position()
    with pytest.raises(BroadcastFailed):
        led.internalize_action("bob", beef=chainkit.make_beef("V2", raw), description="receipt",
                               outputs=[InternalizeOutput(vout=0)],
                               broadcasters=[Scripted("arc", None), Scripted("woc", "invalid")])
    assert led.head_position() == before, "not even an audit event"
    with pytest.raises(UnknownTransaction):
        led.get_transaction(chainkit.txid_of(raw))
    assert led.list_actions("bob").total == 0
    assert led.balance("bob").pending == 0


def test_5_a_provider_outage_falls_back_to_the_next(led: Ledger, world: World) -> None:
    txid = _signed_payment(world)
    down, up, spare = Scripted("arc", None), Scripted("woc", "seen"), Scripted("spare", "success")
    assert led.broadcast(txid, [down, up, spare]).state == S.SEEN
    assert spare.calls == [], "the first acceptance stops the sequence"
    results = [e for e in led.history(txid) if e.event == "broadcast.result"]
    assert [(e.details["provider"], e.details["status"]) for e in results] == [
        ("arc", "service_error"), ("woc", "seen")]


@pytest.mark.parametrize("verdict", ["invalid", "double_spend"])
def test_6_invalid_or_double_spent_outputs_are_never_spendable(
        led: Ledger, world: World, verdict: str) -> None:
    txid = _signed_payment(world)
    led.record_broadcast(txid, [ProviderResult(provider="arc", status=verdict)])
    change = led.list_outputs("alice", spendable=None)
    assert all(o.txid != txid for o in change.items), "toxic outputs are not even listed"
    balance = led.balance("alice")
    if verdict == "invalid":
        assert balance.spendable == 10_000, "the failed spender released its input"
    else:
        assert (balance.spendable, balance.quarantined) == (0, 10_000), "input held after a loss"


def test_7_reorg_of_a_confirmed_payment_never_invalidates_it(led: Ledger, world: World) -> None:
    txid = _signed_payment(world)
    led.broadcast(txid, [Scripted("arc", "success")])
    world.prove([txid])
    world.mine()
    before = led.balance("alice")
    _, update = world.reorg(2, [[], [], []], salt="fork")
    tx = led.get_transaction(txid)
    assert update.affected_txids == [txid] and tx.state == S.REORGING
    assert led.balance("alice") == before, "spendability is preserved while reorging"
    world.prove([txid])
    assert led.get_transaction(txid).state == S.UNCONFIRMED
    assert "invalid" not in {e.to_state for e in led.history(txid)}


@pytest.mark.parametrize(("above_block", "mature"), [(98, False), (99, False), (100, True)])
def test_8_coinbase_is_spendable_exactly_at_the_maturity_boundary(
        led: Ledger, world: World, above_block: int, mature: bool) -> None:
    raw = chainkit.make_coinbase(world.tip_height + 1, [(5_000_000_000, world.script())])
    txid = chainkit.txid_of(raw)
    block = world.mine([txid])
    led.internalize_action("miner", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
                           description="coinbase", outputs=[InternalizeOutput(vout=0)])
    world.mine_empty(above_block)
    assert led.chain_tip() is not None
    assert led.get_transaction(txid).is_coinbase
    balance = led.balance("miner")
    assert (balance.spendable, balance.immature) == (
        (5_000_000_000, 0) if mature else (0, 5_000_000_000))


def test_9_unfail_leaves_outputs_untouched(led: Ledger, world: World) -> None:
    txid = _signed_payment(world)
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="invalid")])
    spendable_before = led.list_outputs("alice", spendable=True)
    balance_before = led.balance("alice")
    led.transition(txid, "unfail", reason="operator re-review", actor="ops")
    assert led.list_outputs("alice", spendable=True) == spendable_before
    unfailed = [o for o in led.list_outputs("alice", spendable=None).items if o.txid == txid]
    assert [o.spendable for o in unfailed] == [False], "listed again, value kept (not spendable)"
    assert led.get_transaction(txid).state == S.UNFAIL
    assert led.balance("alice").spendable == balance_before.spendable
    assert led.verify_projections().ok


def test_10_mixed_broadcast_results(led: Ledger, world: World) -> None:
    txid = _signed_payment(world)
    tx = led.record_broadcast(txid, [ProviderResult(provider="arc", status="success"),
                                     ProviderResult(provider="woc", status="invalid"),
                                     ProviderResult(provider="taal", status="seen")])
    assert tx.state == S.SEEN
    notes = [e for e in led.history(txid) if e.event == "history.note"]
    assert [n.details["what"] for n in notes] == ["broadcast.discrepancy"]
    ds = _signed_payment(world, ref="pay-2")
    tx = led.record_broadcast(ds, [ProviderResult(provider="arc", status="success"),
                                   ProviderResult(provider="woc", status="double_spend")])
    assert tx.state == S.DOUBLE_SPEND, "a double-spend report outranks an acceptance"
    ops = [Outpoint(txid=e.details["inputs"][0].split(":")[0], vout=0)
           for e in led.history(ds) if e.event == "transaction.created"]
    assert led.balance("alice").quarantined == 10_000
    led.confirm_unspent(ops, reason="utxo check: unspent")
    assert led.balance("alice").quarantined == 0
    assert led.balance("alice").spendable >= 10_000
