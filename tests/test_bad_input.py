"""Bad input gets a typed error and leaves the log untouched (SPEC §6, §9).

Every case checks the exact :class:`ledger.LedgerError` subclass and that ``head_position()`` is
the same before and after; the one exception is :class:`IllegalTransition`, which appends exactly
one ``processing.rejected`` event. Runs on SQLite and PostgreSQL (the ``led`` fixture).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import ledger.facade as facade
from adapters import chainkit
from adapters.persistence import StorageConfig, parse_url
from adapters.world import World
from ledger import (
    TRANSITIONS,
    ChainDiscontinuity,
    IllegalTransition,
    InvalidInput,
    InvalidProof,
    InvalidTransaction,
    Ledger,
    LedgerError,
    NewOutput,
    Outpoint,
    OutputAlreadyReserved,
    OutputNotSpendable,
    PreconditionFailed,
    ProcessingStatus,
    ProviderResult,
    StorageError,
    UnknownAction,
    UnknownTransaction,
)
from ledger.values import MAX_SATOSHIS, validated

S = ProcessingStatus
UNKNOWN_TXID = "ab" * 32
BAD_TXIDS: list[Any] = ["", "xyz", "a" * 63, "a" * 65, "g" * 64, " " + "a" * 63, None, 123,
                        b"a" * 64, ["a" * 64]]


def untouched(led: Ledger, error: type[LedgerError], fn: Callable[..., Any], *args: Any,
              **kwargs: Any) -> LedgerError:
    """Run ``fn``; it must raise exactly ``error`` and append nothing."""
    before = led.head_position()
    with pytest.raises(error) as info:
        fn(*args, **kwargs)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert str(info.value), "errors carry a message"
    assert led.head_position() == before, f"{fn.__name__} appended after {error.__name__}"
    return info.value


@dataclass
class Scene:
    """A funded user with an unsigned draft (and its matching raw tx) and a queued transaction."""

    led: Ledger
    world: World
    funds: list[Outpoint]
    draft_raw: bytes
    draft_outputs: list[NewOutput]
    queued: str
    confirmed: str


@pytest.fixture
def scene(led: Ledger, world: World) -> Scene:
    funds = world.fund("alice", [50_000, 20_000, 9_000])
    world.mine()
    raw, outputs = world.spend("alice", "draft", [funds[0]],
                               [(30_000, world.script()), (19_000, None)])
    pay, _ = world.spend("alice", "pay", [funds[1]], [(15_000, world.script()), (4_000, None)])
    queued = led.sign_action("alice", "pay", raw_tx=pay).txid
    assert led.get_transaction(funds[0].txid).state == S.CONFIRMED
    return Scene(led, world, funds, raw, outputs, queued, funds[0].txid)


# --- raw transactions -----------------------------------------------------------------------

def test_raw_tx_that_does_not_parse_strictly_is_invalid_transaction(scene: Scene) -> None:
    led, raw = scene.led, scene.draft_raw
    for bad in (raw[:-1], raw[:10], raw[:1], raw + b"\x00", raw + b"garbage", b"",
                b"\x00" * 64, bytes(reversed(raw))):
        untouched(led, InvalidTransaction, led.sign_action, "alice", "draft", raw_tx=bad)
    for wrong_type in (raw.hex(), None, 123, [raw]):
        untouched(led, InvalidInput, led.sign_action, "alice", "draft", raw_tx=wrong_type)
    assert led.get_action("alice", "draft").status == "unsigned"
    assert led.sign_action("alice", "draft", raw_tx=raw).state == S.QUEUED, "draft intact"


def test_raw_tx_that_does_not_match_the_draft_is_invalid_transaction(scene: Scene) -> None:
    led, world, outs = scene.led, scene.world, scene.draft_outputs
    spend = [(scene.funds[0].txid, scene.funds[0].vout)]
    declared = [(o.satoshis, o.locking_script) for o in outs]
    cases = {
        "wrong satoshis": chainkit.make_tx(spend, [(30_001, outs[0].locking_script),
                                                   declared[1]]),
        "wrong script": chainkit.make_tx(spend, [(30_000, world.script()), declared[1]]),
        "swapped outputs": chainkit.make_tx(spend, [declared[1], declared[0]]),
        "missing reserved input": chainkit.make_tx(
            [(scene.funds[2].txid, scene.funds[2].vout)], declared),
        "extra output": chainkit.make_tx(spend, [*declared, (1, world.script())]),
        "missing output": chainkit.make_tx(spend, declared[:1]),
    }
    for name, raw in cases.items():
        err = untouched(led, InvalidTransaction, led.sign_action, "alice", "draft", raw_tx=raw)
        assert "draft" in str(err) or "input" in str(err), (name, err)
    assert led.get_action("alice", "draft").txid is None
    assert led.sign_action("alice", "draft", raw_tx=scene.draft_raw).state == S.QUEUED


def test_huge_inputs_are_refused_before_parsing(scene: Scene) -> None:
    led = scene.led
    huge = b"\x01" * (10_000_000 + 1)
    untouched(led, InvalidInput, led.sign_action, "alice", "draft", raw_tx=huge)
    untouched(led, InvalidInput, led.record_proof, scene.queued, huge)
    untouched(led, InvalidInput, led.create_action, "alice", "big", description="x",
              outputs=[{"vout": 0, "satoshis": 1, "locking_script": b"\x51" * 100_001}])


# --- txids, states, texts --------------------------------------------------------------------

def test_malformed_txids_are_invalid_input_everywhere(scene: Scene) -> None:
    led = scene.led
    bump = scene.world.chain[-2].bumps.get(scene.confirmed, b"\x00")
    calls: list[tuple[str, Callable[[Any], Any]]] = [
        ("get_transaction", led.get_transaction),
        ("transition", lambda t: led.transition(t, "sending", reason="x")),
        ("record_proof", lambda t: led.record_proof(t, bump)),
        ("history", led.history),
        ("record_broadcast", lambda t: led.record_broadcast(
            t, [ProviderResult(provider="arc", status="success")])),
        ("note", lambda t: led.note(t, "hello")),
        ("broadcast", lambda t: led.broadcast(t, [])),
    ]
    for bad in BAD_TXIDS:
        for name, call in calls:
            before = led.head_position()
            with pytest.raises(InvalidInput):
                call(bad)
            assert led.head_position() == before, (name, bad)
    for bad in ("", f"{'a' * 63}:0", "a" * 64, f"{'a' * 64}:-1"):
        untouched(led, InvalidInput, led.confirm_unspent, [bad], reason="x")


BAD_STATES: list[Any] = ["done", "Confirmed", "", "CONFIRMED", " queued", "seen-multi",
                         "double_spend", None, 3]


def test_unknown_state_names_are_invalid_input(scene: Scene) -> None:
    led = scene.led
    for state in BAD_STATES:
        untouched(led, InvalidInput, led.transition, scene.queued, state, reason="x")
        if state is not None:  # None is "no expectation"
            untouched(led, InvalidInput, led.transition, scene.queued, "sending", reason="x",
                      expected_from=state)
        untouched(led, InvalidInput, led.list_actions, "alice", statuses=[state])
    assert led.get_transaction(scene.queued).state == S.QUEUED


def test_unicode_text_is_accepted_and_bad_text_rejected(scene: Scene) -> None:
    led, world = scene.led, scene.world
    good = "Zahlung für Café ☕"
    out = {"vout": 0, "satoshis": 1_000, "locking_script": world.script(), "basket": None}
    action = led.create_action("alice", "unicode", description=good, outputs=[out])
    assert action.description == good
    assert led.transition(scene.queued, "frozen", reason=good).state == S.FROZEN
    assert [e.details.get("reason") for e in led.history(scene.queued)][-1] == good
    for bad in ("\ud800", "a\x00b", "x" * 10_000, "é" * 1_001, 42, None, b"bytes"):
        untouched(led, InvalidInput, led.create_action, "alice", "bad-text", description=bad,
                  outputs=[out])
        untouched(led, InvalidInput, led.transition, scene.queued, "queued", reason=bad)
        untouched(led, InvalidInput, led.abort_action, "alice", "draft", reason=bad)
    for bad_name in ("", "   ", "\ud800", "n" * 301, "a\x00"):
        untouched(led, InvalidInput, led.create_action, bad_name, "r", description="x",
                  outputs=[out])
        untouched(led, InvalidInput, led.list_outputs, "alice", basket=bad_name)
    assert led.get_action("alice", "unicode").description == good
    assert led.verify_projections().ok


def _cycle() -> dict[str, Any]:
    d: dict[str, Any] = {}
    d["loop"] = d
    return d


BAD_DETAILS: list[Any] = [
    {"typed": {"_type_": "decimal_str", "_data_": "1.5"}},  # would read back as a Decimal
    {"deeper": [{"_data_": "x", "_type_": "uuid_hex"}]},
    {"n": float("nan")}, {"n": float("inf")}, {"s": {1, 2}}, {"b": b"bytes"},
    {"deep": functools.reduce(lambda inner, _: [inner], range(40), [])}, _cycle(),
    {"big": "x" * 20_000}, ["not", "a", "dict"], "text",
    {"s": "\ud800"}, {"\udcff": 1}, {"n": ["ok", {"k": "\udfff"}]},  # not valid Unicode
    {1: "a"}, {"n": {2.5: "b"}},  # JSON would read the key back as text
]


@pytest.mark.parametrize("bad", BAD_DETAILS, ids=range(len(BAD_DETAILS)))
def test_details_that_the_log_would_not_give_back_are_invalid_input(scene: Scene,
                                                                    bad: Any) -> None:
    """A note's, a transition's and a provider answer's details are kept in the log as JSON;
    anything the log would read back as something else (a typed value, NaN) or not at all is
    refused before it is appended."""
    led = scene.led
    if isinstance(bad, dict) and all(isinstance(key, str) for key in bad):
        untouched(led, InvalidInput, led.note, scene.queued, "check", **bad)
    untouched(led, InvalidInput, led.transition, scene.queued, "frozen", reason="x",
              details=bad)
    led.transition(scene.queued, "sending", reason="broadcast")
    answer = {"provider": "arc", "status": "service_error", "details": bad}
    untouched(led, InvalidInput, led.record_broadcast, scene.queued, [answer])


def test_awkward_but_honest_details_are_kept_and_read_back_from_the_log(scene: Scene) -> None:
    led = scene.led
    kept = {"only_type": {"_type_": "x"}, "three": {"_type_": "a", "_data_": 1, "more": 2},
            "big": 2**80, "neg": -(2**70), "f": 1.5e-7, "text": "\u2028 ☃ \"_type_\"",
            "nested": [[{"a": None}]]}
    led.note(scene.queued, "check", **kept)
    assert led.history(scene.queued)[-1].details["details"] == kept
    led.rebuild_projections()
    assert led.history(scene.queued)[-1].details["details"] == kept
    assert led.verify_projections().ok


# --- values ----------------------------------------------------------------------------------

BAD_SATOSHIS: list[Any] = [-1, -2**63, MAX_SATOSHIS + 1, 2**64, True, False, 1.5, "100", None]


def test_bad_satoshis_in_new_output_are_invalid_input(scene: Scene) -> None:
    led = scene.led
    script = scene.world.script()
    for satoshis in BAD_SATOSHIS:
        with pytest.raises(InvalidInput, match="satoshis"):
            validated(NewOutput, vout=0, satoshis=satoshis, locking_script=script)
        out = {"vout": 0, "satoshis": satoshis, "locking_script": script}
        untouched(led, InvalidInput, led.create_action, "alice", "bad-sats", description="x",
                  outputs=[out])
    untouched(led, UnknownAction, led.get_action, "alice", "bad-sats")


def test_boundary_satoshis_are_accepted() -> None:
    for satoshis in (0, 1, MAX_SATOSHIS):
        assert validated(NewOutput, vout=0, satoshis=satoshis, locking_script=b"\x51").satoshis \
            == satoshis


def test_page_limits_are_checked(scene: Scene) -> None:
    led = scene.led
    for limit in (0, 10_000, -1, 1_001, True, 1.5, "10", None):
        untouched(led, InvalidInput, led.list_outputs, "alice", limit=limit)
        untouched(led, InvalidInput, led.list_actions, "alice", limit=limit)
    for offset in (-1, True, 1.5, None):
        untouched(led, InvalidInput, led.list_outputs, "alice", offset=offset)
    for spendable in ("yes", "true", []):
        untouched(led, InvalidInput, led.list_outputs, "alice", spendable=spendable)
    untouched(led, InvalidInput, led.list_actions, "alice", statuses=["done"])
    assert led.list_outputs("alice", limit=1).total == led.list_outputs("alice", limit=1000).total


# --- proofs ----------------------------------------------------------------------------------

def test_bad_bump_bytes_are_invalid_proof(scene: Scene) -> None:
    led, world, txid = scene.led, scene.world, scene.queued
    good = world.mine([txid]).bumps[txid]
    other_bump = chainkit.make_block([UNKNOWN_TXID, "cd" * 32], height=world.tip_height)[1]
    for bad in (b"\x00", b"garbage", b"\xff" * 40, good[:-1], good[:5], good + b"\x00", b"",
                other_bump[UNKNOWN_TXID]):
        untouched(led, InvalidProof, led.record_proof, txid, bad)
    for wrong_type in (good.hex(), None, 7):
        untouched(led, InvalidInput, led.record_proof, txid, wrong_type)
    assert led.get_transaction(txid).state == S.QUEUED
    assert led.record_proof(txid, good).state == S.UNCONFIRMED, "the real proof still works"


def test_proof_off_the_active_chain_or_above_the_tip_is_invalid_proof(scene: Scene) -> None:
    led, world, txid = scene.led, scene.world, scene.queued
    tip = world.tip_height
    _, not_active = chainkit.make_block([txid, UNKNOWN_TXID], height=tip)
    untouched(led, InvalidProof, led.record_proof, txid, not_active[txid])
    _, above = chainkit.make_block([txid], height=tip + 1)
    untouched(led, InvalidProof, led.record_proof, txid, above[txid])
    _, far_above = chainkit.make_block([txid, UNKNOWN_TXID], height=tip + 1_000)
    untouched(led, InvalidProof, led.record_proof, txid, far_above[txid])
    orphaned = world.mine([txid]).bumps[txid]
    world.reorg(1, [[], []], salt="bad-input-fork")
    untouched(led, InvalidProof, led.record_proof, txid, orphaned)
    assert led.get_transaction(txid).state == S.QUEUED


def test_a_proof_for_an_illegal_move_is_one_rejection(scene: Scene) -> None:
    led, world, txid = scene.led, scene.world, scene.queued
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="invalid")])
    bump = world.mine([txid]).bumps[txid]
    before = led.head_position()
    with pytest.raises(IllegalTransition) as info:
        led.record_proof(txid, bump)
    assert led.head_position() == before + 1
    assert (info.value.from_state, info.value.to_state) == (S.INVALID, S.UNCONFIRMED)
    last = led.history(txid)[-1]
    assert (last.event, last.from_state, last.to_state) == ("processing.rejected", "invalid",
                                                            "unconfirmed")
    assert led.get_transaction(txid).state == S.INVALID


# --- unknown things, preconditions, illegal moves ---------------------------------------------

def test_unknown_txid_is_unknown_transaction(scene: Scene) -> None:
    led = scene.led
    bump = chainkit.make_block([UNKNOWN_TXID], height=scene.world.tip_height)[1][UNKNOWN_TXID]
    untouched(led, UnknownTransaction, led.get_transaction, UNKNOWN_TXID)
    untouched(led, UnknownTransaction, led.get_transaction, UNKNOWN_TXID.upper())
    untouched(led, UnknownTransaction, led.history, UNKNOWN_TXID)
    untouched(led, UnknownTransaction, led.transition, UNKNOWN_TXID, "sending", reason="x")
    untouched(led, UnknownTransaction, led.record_proof, UNKNOWN_TXID, bump)
    untouched(led, UnknownTransaction, led.record_broadcast, UNKNOWN_TXID,
              [ProviderResult(provider="arc", status="seen")])
    untouched(led, UnknownTransaction, led.note, UNKNOWN_TXID, "hello")
    arc = _Named("arc")
    untouched(led, UnknownTransaction, led.broadcast, UNKNOWN_TXID, [arc])
    assert arc.calls == 0


def test_unknown_action_is_unknown_action(scene: Scene) -> None:
    led = scene.led
    untouched(led, UnknownAction, led.get_action, "alice", "nope")
    untouched(led, UnknownAction, led.get_action, "mallory", "draft")
    untouched(led, UnknownAction, led.sign_action, "alice", "nope", raw_tx=scene.draft_raw)
    untouched(led, UnknownAction, led.sign_action, "bob", "draft", raw_tx=scene.draft_raw)
    untouched(led, UnknownAction, led.abort_action, "alice", "nope", reason="x")


def test_proof_and_reorg_states_are_preconditions_not_transitions(scene: Scene) -> None:
    led = scene.led
    for target in ("confirmed", "unconfirmed", "reorging"):
        for txid in (scene.queued, scene.confirmed):
            state = led.get_transaction(txid).state
            if state == target:
                continue
            untouched(led, PreconditionFailed, led.transition, txid, target, reason="x")
            assert led.get_transaction(txid).state == state
    assert all(e.event != "processing.rejected" for e in led.history(scene.queued))
    assert all(e.event != "processing.rejected" for e in led.history(scene.confirmed))


def test_other_preconditions_append_nothing(scene: Scene) -> None:
    led, world = scene.led, scene.world
    untouched(led, PreconditionFailed, led.transition, scene.queued, "sending", reason="x",
              expected_from="sent")
    out = [{"vout": 0, "satoshis": 1, "locking_script": world.script()}]
    untouched(led, PreconditionFailed, led.create_action, "alice", "draft", description="again",
              outputs=out)
    untouched(led, OutputAlreadyReserved, led.create_action, "alice", "steal", description="x",
              outputs=out, inputs=[scene.funds[0]])
    untouched(led, OutputNotSpendable, led.create_action, "bob", "steal", description="x",
              outputs=out, inputs=[scene.funds[2]])
    untouched(led, OutputNotSpendable, led.create_action, "alice", "ghost", description="x",
              outputs=out, inputs=[Outpoint(txid=UNKNOWN_TXID, vout=0)])
    untouched(led, InvalidInput, led.create_action, "alice", "twice", description="x",
              outputs=out, inputs=[scene.funds[2], scene.funds[2]])
    untouched(led, PreconditionFailed, led.confirm_unspent, [scene.funds[2]], reason="x")
    led.record_broadcast(scene.queued, [ProviderResult(provider="arc", status="success")])
    untouched(led, PreconditionFailed, led.abort_action, "alice", "pay", reason="too late")
    untouched(led, PreconditionFailed, led.sign_action, "alice", "pay", raw_tx=scene.draft_raw)


def test_illegal_transition_appends_exactly_one_rejection(scene: Scene) -> None:
    led = scene.led
    for txid, target in ((scene.queued, "seen"), (scene.queued, "unfail"),
                         (scene.queued, "seen_multi")):
        before, state = led.head_position(), led.get_transaction(txid).state
        with pytest.raises(IllegalTransition) as info:
            led.transition(txid, target, reason="operator typo", actor="ops")
        assert led.head_position() == before + 1
        err = info.value
        assert (err.txid, err.from_state, err.to_state) == (txid, state, target)
        assert set(err.legal_next) == {s.value for s in TRANSITIONS[state]}
        last = led.history(txid)[-1]
        assert (last.position, last.event, last.from_state, last.to_state) == (
            before + 1, "processing.rejected", state, target)
        assert led.get_transaction(txid).state == state
    assert led.verify_projections().ok


# --- opening ---------------------------------------------------------------------------------

def test_bad_urls_are_storage_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def short_timeout(url: str) -> StorageConfig:
        config = parse_url(url)
        if config.kind == "postgresql":
            config.env["POSTGRES_CONNECT_TIMEOUT"] = "1"
        return config

    monkeypatch.setattr(facade, "parse_url", short_timeout)
    for url in ("nosuch://x", "sqlite:///", "sqlite:////nonexistent/dir/x.db",
                "postgresql://x@127.0.0.1:1/db", "", "sqlite://relative.db", "memory",
                "postgresql://127.0.0.1", "postgresql://x@127.0.0.1:99999/db",
                "postgresql://x@127.0.0.1/db?schema=bad-name", 42):
        with pytest.raises(StorageError):
            Ledger.open(url)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        Ledger.open("memory://", projections="lazy")


# --- argument shapes -------------------------------------------------------------------------

NOT_LISTS: list[Any] = ["rent", b"ab", None, 5, {"vout": 0}, (x for x in ())]
"""What a list argument must refuse, not take apart: a string (its characters), a dict (its
keys), None, a number, a generator."""


def test_list_arguments_refuse_what_is_not_a_list(scene: Scene) -> None:
    led, t = scene.led, scene.queued
    out = {"vout": 0, "satoshis": 1_000, "locking_script": scene.world.script()}
    for bad in NOT_LISTS:
        untouched(led, InvalidInput, led.create_action, "alice", "shape", description="x",
                  outputs=[out], labels=bad)
        untouched(led, InvalidInput, led.create_action, "alice", "shape", description="x",
                  outputs=[out], inputs=bad)
        untouched(led, InvalidInput, led.create_action, "alice", "shape", description="x",
                  outputs=bad)
        untouched(led, InvalidInput, led.list_outputs, "alice", tags=bad)
        untouched(led, InvalidInput, led.list_actions, "alice", labels=bad)
        untouched(led, InvalidInput, led.list_actions, "alice", statuses=bad)
        untouched(led, InvalidInput, led.internalize_action, "alice", beef=b"\x01",
                  description="x", outputs=bad)
        untouched(led, InvalidInput, led.internalize_action, "alice", beef=b"\x01",
                  description="x", outputs=[{"vout": 0}], labels=bad)
        untouched(led, InvalidInput, led.internalize_action, "alice", beef=b"\x01",
                  description="x", outputs=[{"vout": 0}], broadcasters=bad)
        untouched(led, InvalidInput, led.broadcast, t, bad)
        untouched(led, InvalidInput, led.confirm_unspent, bad, reason="r")
        untouched(led, InvalidInput, led.record_broadcast, t, bad)
    untouched(led, InvalidInput, led.list_actions, "alice", statuses=[["sent"]])
    assert led.get_transaction(t).state == S.QUEUED


def test_flags_are_true_or_false_only(scene: Scene) -> None:
    led = scene.led
    out = {"vout": 0, "satoshis": 1_000, "locking_script": scene.world.script()}
    for bad in ("false", "no", 0, 1, None, []):
        untouched(led, InvalidInput, led.create_action, "alice", "flag", description="x",
                  outputs=[out], is_outgoing=bad)
        untouched(led, InvalidInput, led.sign_action, "alice", "draft", raw_tx=scene.draft_raw,
                  nosend=bad)
        untouched(led, InvalidInput, led.list_outputs, "alice", include_locking_scripts=bad)
    for bad in ("false", 0, 1, []):
        untouched(led, InvalidInput, led.list_outputs, "alice", spendable=bad)
    with pytest.raises(InvalidInput):
        Ledger.open("memory://", max_reorg_depth_blocks=True)


def test_numbers_past_the_database_range_are_refused(scene: Scene) -> None:
    led = scene.led
    for offset in (2**63, 2**64, facade.MAX_PAGE_OFFSET + 1):
        untouched(led, InvalidInput, led.list_outputs, "alice", offset=offset)
        untouched(led, InvalidInput, led.list_actions, "alice", offset=offset)
    assert led.list_outputs("alice", offset=facade.MAX_PAGE_OFFSET).items == []
    for height in (2**63, 2**64 - 1, 100_000_001):
        _, bumps = chainkit.make_block([scene.queued], height=height)
        untouched(led, InvalidProof, led.record_proof, scene.queued, bumps[scene.queued])
    for pages in ("x", 0, -1, True, 1.5, facade.MAX_CATCH_UP_PAGES + 1):
        untouched(led, InvalidInput, led.run_projections, max_pages=pages)
    for progress in (5, "print"):
        untouched(led, InvalidInput, led.rebuild_projections, progress=progress)
    for event in ("\ud800", [1], "", 5):
        untouched(led, InvalidInput, led.audit_tail, event=event)


def test_drafts_no_transaction_could_sign_are_refused(scene: Scene) -> None:
    led, script = scene.led, scene.world.script()
    untouched(led, InvalidInput, led.create_action, "alice", "empty", description="x",
              outputs=[])
    two = [{"vout": v, "satoshis": MAX_SATOSHIS // 2 + 1, "locking_script": script}
           for v in (0, 1)]
    untouched(led, InvalidInput, led.create_action, "alice", "too-much", description="x",
              outputs=two)
    for vouts in ([5], [0, 2], [1, 2]):  # a signed transaction must match every vout 0..n-1
        gap = [{"vout": v, "satoshis": 1, "locking_script": script} for v in vouts]
        untouched(led, InvalidInput, led.create_action, "alice", "gap", description="x",
                  outputs=gap)
    for spaced in ("76 a9 14", " 51", "51\n", "5", "0x51", "\u0665\u0661"):
        untouched(led, InvalidInput, led.create_action, "alice", "hex", description="x",
                  outputs=[{"vout": 0, "satoshis": 1, "locking_script": spaced}])
    assert led.create_action("alice", "hex", description="x", outputs=[
        {"vout": 0, "satoshis": 1, "locking_script": "76A914" + "00" * 20 + "88ac"}]).status


def test_value_types_refuse_bad_fields_with_invalid_input() -> None:
    cases: list[Callable[[], Any]] = [
        lambda: NewOutput(vout=0, satoshis=-1, locking_script=b"\x51"),
        lambda: Outpoint(txid="zz", vout=0),
        lambda: ProviderResult(provider="a", status="bogus"),  # type: ignore[arg-type]
        lambda: ProviderResult(provider="a", status="success", details={"k": "\ud800"}),
    ]
    for make in cases:
        with pytest.raises(InvalidInput) as info:
            make()
        assert isinstance(info.value, LedgerError)


class _Named:
    def __init__(self, name: Any) -> None:
        self.name = name
        self.calls = 0

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        self.calls += 1
        return ProviderResult(provider="arc", status="success")


def test_a_broadcast_with_bad_broadcasters_stores_nothing(scene: Scene) -> None:
    """The broadcasters are checked before the transaction is marked ``sending``."""
    led, t = scene.led, scene.queued
    bad = [_Named(" "), _Named("a\x00"), _Named("\ud800"), _Named(5), _Named("x" * 400)]
    for broadcaster in bad:
        untouched(led, InvalidInput, led.broadcast, t, [broadcaster])
        assert broadcaster.calls == 0
    untouched(led, InvalidInput, led.broadcast, t, [])
    untouched(led, InvalidInput, led.broadcast, t, [object()])
    untouched(led, InvalidInput, led.broadcast, t, [_Named("arc"), _Named("")])
    assert led.get_transaction(t).state == S.QUEUED

    class Failing(_Named):
        def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
            raise RuntimeError("refused \ud800 here")

    led.broadcast(t, [Failing("flaky")])  # a provider failing is data: recorded
    answers = [e for e in led.history(t) if e.event == "broadcast.result"]
    assert answers and "\\ud800" in answers[-1].details["details"]["error"]


def test_a_header_reusing_a_known_block_hash_is_refused(scene: Scene) -> None:
    """A block hash names one block. A header that reused an active block's hash would let a
    later reorg disconnect that hash, and with it the proofs anchored in the real block."""
    led, world = scene.led, scene.world
    world.mine_empty(1)
    tip = led.chain_tip()
    assert tip is not None
    anchored = led.get_transaction(scene.confirmed)
    assert anchored.block_hash is not None
    (fake,) = chainkit.make_headers(1, start_height=tip.height + 1, prev_hash=tip.hash, salt="q")
    for reused in (anchored.block_hash, tip.hash):
        untouched(led, ChainDiscontinuity, led.apply_headers, [{**fake, "hash": reused}])
    a, b = chainkit.make_headers(2, start_height=tip.height + 1, prev_hash=tip.hash, salt="r")
    untouched(led, ChainDiscontinuity, led.apply_headers,
              [a, {**b, "hash": a["hash"]}])  # names itself as its parent
    led.apply_headers(chainkit.make_headers(2, start_height=tip.height + 1, prev_hash=tip.hash,
                                            salt="fork"))
    assert led.get_transaction(scene.confirmed) == anchored  # still proven, untouched


def test_a_header_reusing_a_disconnected_block_hash_at_another_height_is_refused(
        scene: Scene) -> None:
    """Below the chain stream's window the headers table knows every block ever connected."""
    led = scene.led
    tip = led.chain_tip()
    assert tip is not None
    old = chainkit.make_headers(2, start_height=tip.height + 1, prev_hash=tip.hash, salt="old")
    led.apply_headers(old)
    new = chainkit.make_headers(3, start_height=tip.height + 1, prev_hash=tip.hash, salt="new")
    assert [h.hash for h in led.apply_headers(new).disconnected] == [old[1]["hash"], old[0]["hash"]]
    (nxt,) = chainkit.make_headers(1, start_height=tip.height + 4, prev_hash=new[-1]["hash"])
    untouched(led, ChainDiscontinuity, led.apply_headers, [{**nxt, "hash": old[0]["hash"]}])
    assert led.apply_headers([nxt]).connected


def test_sqlite_file_names_are_one_file_and_bad_ones_are_storage_errors(tmp_path: Any) -> None:
    with Ledger.open(f"sqlite:///{tmp_path}/a%2520b.db") as led:
        World(led, salt="pct").fund("alice", [1_000])
        assert led.list_outputs("alice").total == 1
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".db") == ["a%20b.db"]
    with Ledger.open(f"sqlite:///{tmp_path}/a%2520b.db") as led:
        assert led.list_outputs("alice").total == 1
    for url in (f"sqlite:///{tmp_path}/{'a' * 300}.db", f"sqlite:///{tmp_path}/\ud800.db"):
        with pytest.raises(StorageError):
            Ledger.open(url)
