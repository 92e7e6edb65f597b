"""The injected chain tracker (SPEC §4, ADR 0008): it validates proofs at heights the ledger has
no header for; the ledger's own header always wins; a tracker's "no" or failure stores nothing.
Every scenario runs on SQLite and PostgreSQL (the ``ledger_url`` fixture)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from bsv.chaintracker import ChainTracker as BsvChainTracker

from adapters import chainkit
from adapters.world import World
from ledger import (
    ChainTrackerUnavailable,
    InternalizeOutput,
    InvalidInput,
    InvalidProof,
    Ledger,
    LedgerError,
    ProcessingStatus,
    ProviderResult,
)
from ledger.identity import transaction_id
from ledger.rules import tracker_depth_tip, tracker_needs_height

S = ProcessingStatus


class SyncTracker:
    """A synchronous tracker: known roots by height, a tip height, and a log of its calls."""

    def __init__(self, roots: dict[int, str], height: int) -> None:
        self.roots, self.height = dict(roots), height
        self.calls: list[str] = []

    def is_valid_root_for_height(self, root: str, height: int) -> bool:
        self.calls.append(f"root@{height}")
        return self.roots.get(height) == root

    def current_height(self) -> int:
        self.calls.append("height")
        return self.height


class AsyncTracker(BsvChainTracker):
    """bsv-sdk's own async ChainTracker ABC, implemented as a wallet would."""

    def __init__(self, roots: dict[int, str], height: int, *, delay_s: float = 0.0) -> None:
        self.roots, self.height, self.delay_s = dict(roots), height, delay_s
        self.calls: list[str] = []

    async def is_valid_root_for_height(self, root: str, height: int) -> bool:
        self.calls.append(f"root@{height}")
        await asyncio.sleep(self.delay_s)
        return self.roots.get(height) == root

    async def current_height(self) -> int:
        self.calls.append("height")
        await asyncio.sleep(self.delay_s)
        return self.height


class DownTracker:
    def is_valid_root_for_height(self, root: str, height: int) -> bool:
        raise ConnectionError("whatsonchain: connection refused")

    def current_height(self) -> int:
        raise ConnectionError("whatsonchain: connection refused")


class Accepting:
    name = "arc"

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        return ProviderResult(provider=self.name, status="success")


TRACKERS = {"sync": SyncTracker, "async": AsyncTracker}


@contextmanager
def opened(url: str, tracker: Any = None, **kwargs: Any) -> Iterator[tuple[Ledger, World]]:
    with Ledger.open(url, chain_tracker=tracker, **kwargs) as led:
        yield led, World(led)


def sent_payment(led: Ledger, world: World, user: str = "alice") -> str:
    """A third-party payment stored ``sent`` (broadcast, no proof yet)."""
    raw = world.external_payment([10_000])
    led.internalize_action(user, beef=chainkit.make_beef("V1", raw),
                           outputs=[InternalizeOutput(vout=0)], description="payment",
                           broadcasters=[Accepting()])
    txid = chainkit.txid_of(raw)
    assert led.get_transaction(txid).state == S.SENT
    return txid


def block_of(txid: str, height: int) -> tuple[str, bytes]:
    """(merkle root, BUMP of ``txid``) of a block at ``height`` the ledger never heard of."""
    filler = chainkit.txid_of(chainkit.make_coinbase(height, [(1, b"\x51")]))
    root, bumps = chainkit.make_block([filler, txid], height=height)
    return root, bumps[txid]


@pytest.mark.parametrize(("proof", "ledger_tip", "tracker_tip", "decides"), [
    (100, None, 105, 105),   # no ledger tip: the tracker's
    (100, 90, 105, 105),     # above the ledger's tip: the tracker's
    (100, 100, 0, 100),      # at the ledger's tip (no header there): the ledger's
    (100, 200, 0, 200),      # below the ledger's chain start: the ledger's
    (100, None, None, None), # the tip that decides is unknown: refused by the caller
])
def test_depth_tip_rule(proof: int, ledger_tip: int | None, tracker_tip: int | None,
                        decides: int | None) -> None:
    assert tracker_depth_tip(proof, ledger_tip, tracker_tip) == decides
    assert tracker_needs_height(proof, ledger_tip) == (ledger_tip is None or proof > ledger_tip)


# --- accepted / rejected / unavailable ---------------------------------------------------------

@pytest.mark.parametrize("kind", TRACKERS)
def test_proof_accepted_via_tracker_when_ledger_has_no_header(ledger_url: str, kind: str) -> None:
    tracker = TRACKERS[kind]({}, height=110)
    with opened(ledger_url, tracker) as (led, world):
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root
        tx = led.record_proof(txid, bump)
        assert (tx.state, tx.height, tx.block_hash, tx.merkle_root) == (
            S.CONFIRMED, 100, None, root)
        assert led.get_transaction(txid) == tx
        assert led.balance("alice").spendable == 10_000
        (recorded,) = [e for e in led.history(txid) if e.event == "proof.recorded"]
        assert recorded.details["verified_by"] == "chain_tracker"
        assert recorded.details["block_hash"] is None
        moved = next(e for e in led.history(txid) if e.to_state == S.CONFIRMED)
        assert moved.details["details"]["tip_height"] == 110
        assert tracker.calls == ["root@100", "height"]
        assert led.verify_projections().ok


@pytest.mark.parametrize("kind", TRACKERS)
def test_proof_rejected_when_tracker_says_root_invalid_log_untouched(
        ledger_url: str, kind: str) -> None:
    tracker = TRACKERS[kind]({100: "ab" * 32}, height=110)
    with opened(ledger_url, tracker) as (led, world):
        txid = sent_payment(led, world)
        _, bump = block_of(txid, 100)
        head = led.head_position()
        with pytest.raises(InvalidProof, match="says the chain tracker"):
            led.record_proof(txid, bump)
        assert led.head_position() == head
        assert led.get_transaction(txid).state == S.SENT
        assert tracker.calls == ["root@100"]


def test_tracker_failure_is_typed_and_log_untouched(ledger_url: str) -> None:
    with opened(ledger_url, DownTracker()) as (led, world):
        txid = sent_payment(led, world)
        _, bump = block_of(txid, 100)
        head = led.head_position()
        with pytest.raises(ChainTrackerUnavailable, match="connection refused") as err:
            led.record_proof(txid, bump)
        assert isinstance(err.value, LedgerError)
        assert "nothing was stored" in str(err.value) and "apply_headers" in str(err.value)
        assert led.head_position() == head
        assert led.get_transaction(txid).state == S.SENT


def test_async_tracker_timeout_is_typed_and_log_untouched(ledger_url: str) -> None:
    tracker = AsyncTracker({}, height=110, delay_s=5.0)
    with opened(ledger_url, tracker, chain_tracker_timeout_s=0.2) as (led, world):
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root
        head = led.head_position()
        with pytest.raises(ChainTrackerUnavailable, match=r"within 0\.2 s"):
            led.record_proof(txid, bump)
        assert led.head_position() == head


@pytest.mark.parametrize("answer", [None, "yes", 1])
def test_tracker_answering_nonsense_is_unavailable(ledger_url: str, answer: Any) -> None:
    class Odd(SyncTracker):
        def is_valid_root_for_height(self, root: str, height: int) -> Any:
            return answer

    with opened(ledger_url, Odd({}, 110)) as (led, world):
        txid = sent_payment(led, world)
        head = led.head_position()
        with pytest.raises(ChainTrackerUnavailable, match="not bool"):
            led.record_proof(txid, block_of(txid, 100)[1])
        assert led.head_position() == head


def test_async_tracker_works_when_the_caller_runs_an_event_loop(ledger_url: str) -> None:
    tracker = AsyncTracker({}, height=100)
    with opened(ledger_url, tracker) as (led, world):
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root

        async def host() -> ProcessingStatus:  # an async wallet calling the sync ledger
            return led.record_proof(txid, bump).state

        assert asyncio.run(host()) == S.UNCONFIRMED


# --- precedence ------------------------------------------------------------------------------

def test_ledger_header_takes_precedence_over_a_lying_tracker(ledger_url: str) -> None:
    liar = SyncTracker({}, height=0)  # would call every root invalid and the chain empty
    with opened(ledger_url, liar) as (led, world):
        world.mine_empty(3)
        txid = sent_payment(led, world)
        block = world.prove([txid])
        assert led.get_transaction(txid).block_hash == block.hash
        assert led.get_transaction(txid).state == S.UNCONFIRMED
        assert liar.calls == []


def test_ledger_header_refuses_a_root_the_tracker_vouches_for(ledger_url: str) -> None:
    with opened(ledger_url) as (led, world):
        world.mine_empty(3)
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 2)  # not the root of the ledger's block 2
    accomplice = SyncTracker({2: root}, height=2)
    with opened(ledger_url, accomplice) as (led, world):
        head = led.head_position()
        with pytest.raises(InvalidProof, match="not the root of the active block"):
            led.record_proof(txid, bump)
        assert led.head_position() == head and accomplice.calls == []


def test_without_a_tracker_behaviour_is_unchanged(ledger_url: str) -> None:
    with opened(ledger_url) as (led, world):
        world.mine_empty(3)
        txid = sent_payment(led, world)
        head = led.head_position()
        with pytest.raises(InvalidProof, match="no active header at height 100: apply the "
                                               r"headers up to that block first \(apply_headers\)"):
            led.record_proof(txid, block_of(txid, 100)[1])
        assert led.head_position() == head


# --- depth -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("tracker_height", "expected"), [
    (100, S.UNCONFIRMED), (101, S.CONFIRMED), (99, None)])
def test_depth_from_tracker_height_when_ledger_has_no_tip(
        ledger_url: str, tracker_height: int, expected: ProcessingStatus | None) -> None:
    tracker = SyncTracker({}, height=tracker_height)
    with opened(ledger_url, tracker) as (led, world):
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root
        head = led.head_position()
        if expected is None:
            with pytest.raises(InvalidProof, match="above the chain tip 99"):
                led.record_proof(txid, bump)
            assert led.head_position() == head
        else:
            assert led.record_proof(txid, bump).state == expected


def test_proof_above_ledger_tip_uses_tracker_height_then_promotes_with_headers(
        ledger_url: str) -> None:
    tracker = SyncTracker({}, height=6)
    with opened(ledger_url, tracker) as (led, world):
        world.mine_empty(5)  # heights 0-4
        txid = sent_payment(led, world)
        later = [world.mine(apply=False), world.mine([txid], apply=False)]  # 5, 6: not applied
        tracker.roots[6] = later[1].merkle_root
        tx = led.record_proof(txid, later[1].bumps[txid])
        assert (tx.state, tx.height, tx.block_hash) == (S.UNCONFIRMED, 6, None)
        assert tracker.calls == ["root@6", "height"]
        later.append(world.mine(apply=False))  # 7: the ledger now applies 5, 6 and 7 ...
        led.apply_headers([b.header() for b in later])
        assert led.get_transaction(txid).state == S.CONFIRMED  # ... and promotes at 7
        assert led.verify_projections().ok


def test_proof_below_the_ledger_chain_start_uses_the_ledger_tip(ledger_url: str) -> None:
    tracker = SyncTracker({}, height=0)  # a tip the ledger must not use: its own is higher
    with opened(ledger_url, tracker) as (led, world):
        led.apply_headers(chainkit.make_headers(3, start_height=200))  # a checkpoint start
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 150)
        tracker.roots[150] = root
        tx = led.record_proof(txid, bump)
        assert (tx.state, tx.block_hash) == (S.CONFIRMED, None)
        assert tracker.calls == ["root@150"]  # depth from the ledger's tip 202


def test_recording_the_same_tracker_proof_again_is_a_no_op_until_it_deepens(
        ledger_url: str) -> None:
    tracker = SyncTracker({}, height=100)
    with opened(ledger_url, tracker) as (led, world):
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root
        assert led.record_proof(txid, bump).state == S.UNCONFIRMED
        head = led.head_position()
        assert led.record_proof(txid, bump).state == S.UNCONFIRMED
        assert led.head_position() == head
        tracker.height = 101  # a tracker-only wallet promotes by recording the proof again
        assert led.record_proof(txid, bump).state == S.CONFIRMED


def test_reorg_of_the_ledger_chain_does_not_touch_a_tracker_proof(ledger_url: str) -> None:
    """ADR 0008: the ledger cannot disconnect a block it never knew."""
    tracker = SyncTracker({}, height=10)
    with opened(ledger_url, tracker) as (led, world):
        world.mine_empty(5)
        txid = sent_payment(led, world)
        root, bump = block_of(txid, 8)
        tracker.roots[8] = root
        assert led.record_proof(txid, bump).state == S.CONFIRMED
        _, update = world.reorg(2, [[], [], []], salt="fork")
        assert txid not in update.affected_txids
        assert led.get_transaction(txid).state == S.CONFIRMED
        assert led.verify_projections().ok


# --- internalize_action ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", TRACKERS)
def test_internalize_action_with_a_proof_validated_by_the_tracker(
        ledger_url: str, kind: str) -> None:
    tracker = TRACKERS[kind]({}, height=100)
    with opened(ledger_url, tracker) as (led, world):
        raw = world.external_payment([25_000])
        txid = chainkit.txid_of(raw)
        root, bump = block_of(txid, 100)
        tracker.roots[100] = root
        action = led.internalize_action("bob", beef=chainkit.make_beef("V2", raw, bump=bump),
                                        outputs=[InternalizeOutput(vout=0)],
                                        description="received")
        assert action.txid == txid and action.satoshis_delta == 25_000
        tx = led.get_transaction(txid)
        assert (tx.state, tx.height, tx.block_hash) == (S.UNCONFIRMED, 100, None)
        assert led.balance("bob").spendable == 25_000


def test_internalize_action_refused_by_the_tracker_stores_nothing(ledger_url: str) -> None:
    tracker = SyncTracker({}, height=100)  # knows no root at all
    with opened(ledger_url, tracker) as (led, world):
        raw = world.external_payment([25_000])
        txid = chainkit.txid_of(raw)
        head = led.head_position()
        with pytest.raises(InvalidProof, match="says the chain tracker"):
            led.internalize_action("bob", beef=chainkit.make_beef("V1", raw,
                                                                  bump=block_of(txid, 100)[1]),
                                   outputs=[InternalizeOutput(vout=0)], description="received")
        with Ledger.open(ledger_url, chain_tracker=DownTracker()) as down, \
                pytest.raises(ChainTrackerUnavailable):
            down.internalize_action("bob", beef=chainkit.make_beef(
                "V1", raw, bump=block_of(txid, 100)[1]),
                outputs=[InternalizeOutput(vout=0)], description="received")
        assert led.head_position() == head


# --- stored contract and configuration -------------------------------------------------------

def test_a_version_1_proof_event_decodes_as_verified_by_headers(led: Ledger, world: World) -> None:
    txid = sent_payment(led, world)
    world.prove([txid])
    app: Any = led._app  # the event store itself: rewrite the stored v2 event as a v1 one
    stored = [s for s in app.recorder.select_events(transaction_id(txid))
              if s.topic == "ledger.transaction.ProofRecorded"]
    assert len(stored) == 1
    state = json.loads(stored[0].state)
    assert state.pop("class_version") == 2 and state.pop("verified_by") == "headers"
    old = type(stored[0])(originator_id=stored[0].originator_id,
                          originator_version=stored[0].originator_version,
                          topic=stored[0].topic, state=json.dumps(state).encode())
    event = app.mapper.to_domain_event(old)
    assert event.verified_by == "headers" and event.block_hash == led.get_transaction(txid).block_hash


@pytest.mark.parametrize("kwargs", [{"chain_tracker": object()},
                                    {"chain_tracker_timeout_s": 0},
                                    {"chain_tracker_timeout_s": True},
                                    {"chain_tracker_timeout_s": 301}])
def test_open_refuses_a_bad_tracker_or_timeout(tmp_path: Any, kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="chain_tracker"):
        Ledger.open(f"sqlite:///{tmp_path / 'l.db'}", **kwargs)
