"""Idempotency keys (SPEC §6): a retried request never acts twice, a reused key never acts on a
different request -- in one process, across a restart, and with two OS processes racing.

The incident these prevent: a wallet's HTTP call to ``create_action`` times out, the client
retries with the same idempotency key, and the ledger reserves a second set of inputs (or two
clients sharing a key overwrite each other's intent).
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import pytest
from eventsourcing.persistence import RecordConflictError
from procs import Child, barrier, log_head, raw_events

from adapters.world import World
from ledger import (
    IdempotencyConflict,
    Ledger,
    NewOutput,
    Outpoint,
    OutputAlreadyReserved,
    UnknownAction,
)
from ledger.idempotency import IdempotencyRecord, payload_digest
from ledger.identity import idempotency_id
from ledger.views import ActionView

USER = "alice"
KEY_USED = "ledger.idempotency.KeyUsed"
ONE_CREATE = ("ledger.action.ActionCreated", "ledger.action.InputsReserved", KEY_USED)


def _is_one_create(appended: Counter[str]) -> bool:
    """What one keyed ``create_action`` over one input appends: its action, its reservation
    (on the action and on the outpoint's lock stream) and its key -- each exactly once."""
    reservations = sum(n for t, n in appended.items() if t.startswith("ledger.reservation."))
    return all(appended[t] == 1 for t in ONE_CREATE) and reservations == 1 and \
        all(n == 1 for n in appended.values())


def _out(satoshis: int = 1) -> list[NewOutput]:
    return [NewOutput(vout=0, satoshis=satoshis, locking_script=b"\x51", basket=None)]


def _topics(url: str, after: int) -> Counter[str]:
    return Counter(topic for _, topic, _ in raw_events(url, after))


def _raw_key_used(url: str, key: str) -> int:
    """``KeyUsed`` events for ``key`` in the event store itself (not the audit projection)."""
    return sum(1 for _, topic, state in raw_events(url)
               if topic == KEY_USED and json.loads(state).get("key") == key)


def _key_used(led: Ledger, key: str) -> list[int]:
    """Positions of the audit rows recording a first use of ``key``."""
    return [e.position for e in led.audit_tail(limit=1000, event="idempotency.key_used")
            if e.details.get("key") == key]


def _create(led: Ledger, op: Outpoint, **change: Any) -> ActionView:
    """The baseline request; ``change`` replaces any of its arguments."""
    call: dict[str, Any] = {"user": USER, "reference": "pay-1", "description": "rent",
                            "outputs": _out(), "inputs": [op], "labels": ["bills"],
                            "is_outgoing": True, "idempotency_key": "req-1"}
    call.update(change)
    user, reference = call.pop("user"), call.pop("reference")
    return led.create_action(user, reference, **call)


# --- one process -----------------------------------------------------------------------------

def test_a_retried_request_returns_the_original_result_and_appends_nothing(
        led: Ledger, world: World, ledger_url: str) -> None:
    """The client timed out and retried: it must get its action back, not a second one and not
    an ``OutputAlreadyReserved`` for the input its own first attempt reserved."""
    op, other = world.fund(USER, [5_000, 2_000])
    before = led.head_position()
    first = _create(led, op)
    assert _is_one_create(_topics(ledger_url, before))
    head = led.head_position()
    actions = led.list_actions(USER, limit=1000)
    balance = led.balance(USER)

    for _ in range(3):
        again = _create(led, op)
        assert again == first
    assert led.head_position() == head, "a repeat appends no event"
    assert raw_events(ledger_url, head) == []
    assert led.list_actions(USER, limit=1000) == actions
    assert led.balance(USER) == balance
    assert balance.reserved == 5_000 and balance.spendable == 2_000
    assert len(_key_used(led, "req-1")) == 1
    assert _raw_key_used(ledger_url, "req-1") == 1
    assert led.verify_projections().ok
    assert led.explain_output(USER, other).spendable


def test_the_key_outlives_a_restart_and_a_rebuild(ledger_url: str) -> None:
    """Keys live in the log, not in process memory: a retry after the wallet restarted (or
    after the projections were rebuilt) is still recognised."""
    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(2)
        (op,) = world.fund(USER, [4_000])
        first = _create(led, op)
        head = led.head_position()
    with Ledger.open(ledger_url) as led:
        assert _create(led, op) == first
        led.rebuild_projections()
        assert _create(led, op) == first
        with pytest.raises(IdempotencyConflict):
            _create(led, op, description="something else")
        assert led.head_position() == head
        assert led.verify_projections().ok


def test_a_repeat_after_the_action_moved_on_does_not_act_again(led: Ledger, world: World) -> None:
    """A late retry arriving after the user aborted the draft must not resurrect it: the input
    stays free and nothing is appended (the repeat answers with that same action)."""
    (op,) = world.fund(USER, [3_000])
    first = _create(led, op)
    led.abort_action(USER, "pay-1", reason="user cancelled")
    head = led.head_position()
    again = _create(led, op)
    assert (again.user, again.reference, again.description) == \
        (first.user, first.reference, first.description)
    assert again.status == "failed", "the same (aborted) action, not a new draft"
    assert led.head_position() == head
    assert led.explain_output(USER, op).spendable, "the retry did not re-reserve the input"


_CHANGES: dict[str, dict[str, Any]] = {
    "description": {"description": "groceries"},
    "outputs": {"outputs": _out(2)},
    "labels": {"labels": ["other"]},
    "is_outgoing": {"is_outgoing": False},
    "inputs": {"inputs": "SPARE"},  # another of the user's outputs
    "reference": {"reference": "pay-2"},
    "user": {"user": "bob", "inputs": []},
}


@pytest.mark.parametrize("field", sorted(_CHANGES))
def test_the_same_key_with_a_different_payload_is_refused_and_changes_nothing(
        led: Ledger, world: World, ledger_url: str, field: str) -> None:
    """Two requests sharing a key by mistake (a client bug, a key generator collision): the
    second must be refused loudly, and must not have reserved, created or labelled anything --
    even when it names another action (reference) or another user."""
    op, spare = world.fund(USER, [5_000, 700])
    first = _create(led, op)
    head = led.head_position()
    change = dict(_CHANGES[field])
    if change.get("inputs") == "SPARE":
        change["inputs"] = [spare]  # a different input: must not be reserved either
    with pytest.raises(IdempotencyConflict, match="req-1"):
        _create(led, op, **change)
    assert led.head_position() == head
    assert raw_events(ledger_url, head) == []
    assert led.get_action(USER, "pay-1") == first
    if "reference" in change or "user" in change:
        with pytest.raises(UnknownAction):
            led.get_action(change.get("user", USER), change.get("reference", "pay-1"))
    assert led.explain_output(USER, spare).spendable
    assert len(_key_used(led, "req-1")) == 1


def test_a_key_claimed_by_one_command_is_refused_to_another() -> None:
    """Only ``create_action`` takes a key today, so the command check cannot be reached through
    the facade; the record itself must refuse a different command with an identical digest."""
    digest = payload_digest("create_action", {"x": 1})
    record = IdempotencyRecord.record(key="k", command="create_action", digest=digest,
                                      result={"user": USER, "reference": "r"})
    assert record.check_repeat(command="create_action", digest=digest) == \
        {"user": USER, "reference": "r"}
    with pytest.raises(IdempotencyConflict):
        record.check_repeat(command="internalize_action", digest=digest)
    assert payload_digest("create_action", {"x": 1}) != payload_digest("abort_action", {"x": 1})


def test_a_refused_request_does_not_burn_its_key(
        led: Ledger, world: World, ledger_url: str) -> None:
    """A request that failed (its input was taken) wrote nothing, so retrying it with the same
    key once the input is free must act -- and only once."""
    (op,) = world.fund(USER, [6_000])
    led.create_action(USER, "holder", description="first", inputs=[op], outputs=_out())
    head = led.head_position()
    with pytest.raises(OutputAlreadyReserved):
        _create(led, op)
    assert led.head_position() == head
    assert _key_used(led, "req-1") == []
    led.abort_action(USER, "holder", reason="make room")
    head = led.head_position()
    first = _create(led, op)
    assert _is_one_create(_topics(ledger_url, head))
    assert _create(led, op) == first
    assert len(_key_used(led, "req-1")) == 1


@pytest.mark.parametrize("variant", ["same-request", "other-request"])
@pytest.mark.parametrize("moment", ["before-the-key-read", "after-the-key-read"])
def test_a_retry_overtaken_between_its_key_check_and_its_reservation(
        ledger_url: str, variant: str, moment: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The original request commits while its retry is mid-command: before the retry looked at
    the key (it creates optimistically first), or after it found the key unused. The retry must
    still answer like a retry: the original action, or IdempotencyConflict for a different
    request under the same key -- never "already reserved" for its own input."""
    with Ledger.open(ledger_url) as original, Ledger.open(ledger_url) as retry:
        world = World(original)
        world.mine_empty(2)
        (op,) = world.fund(USER, [5_000])
        first: list[Any] = []
        app: Any = retry._app
        load, check = app._load, app._check_spendable
        key_stream = idempotency_id("req-1")

        def original_commits() -> None:
            if not first:
                first.append(_create(original, op))  # commits while the retry is mid-command

        def load_then_let_the_original_commit(aggregate_id: Any, kind: Any, **kw: Any) -> Any:
            found = load(aggregate_id, kind, **kw)
            if moment == "after-the-key-read" and aggregate_id == key_stream and found is None:
                original_commits()
            return found

        checks: list[int] = []

        def check_then_let_the_original_commit(user: str, outpoint: Outpoint) -> int:
            checks.append(1)
            if moment == "before-the-key-read":
                original_commits()
            elif len(checks) == 1:  # the optimistic first attempt reads no key: make it collide
                raise RecordConflictError("simulated collision")
            return int(check(user, outpoint))

        monkeypatch.setattr(app, "_load", load_then_let_the_original_commit)
        monkeypatch.setattr(app, "_check_spendable", check_then_let_the_original_commit)
        if variant == "same-request":
            again = _create(retry, op)
            assert first, "the interleaving was not produced"
            assert again == first[0]
        else:
            with pytest.raises(IdempotencyConflict):
                _create(retry, op, reference="pay-2")
            assert first, "the interleaving was not produced"
        assert _raw_key_used(ledger_url, "req-1") == 1


# --- two processes, same key, same moment ----------------------------------------------------

def _job(key: str, ref: str, inputs: list[Outpoint], *, description: str = "race",
         hold: bool = True) -> dict[str, Any]:
    return {"key": key, "user": USER, "ref": ref, "description": description,
            "inputs": [str(o) for o in inputs], "hold": hold}


def _play(children: list[Child], held: bool) -> list[dict[str, Any]]:
    """Release both children together; a held round also waits until both have read the log
    and decided (stopped right before their save), then lets both saves go at once."""
    barrier(children)
    if held:
        barrier(children, "holding")
    return [c.expect("result") for c in children]


@pytest.mark.slow
def test_two_processes_retrying_one_request_at_once_act_exactly_once(ledger_url: str) -> None:
    """A client library that fires the same request from two workers (or a retry racing the
    original): both must get the same action, the input reserved once, and one ``KeyUsed``.
    Each round forces the interleaving where both have decided before either commits (the
    other losing interleaving is ``test_a_retry_overtaken_between_its_key_check_and_its_
    reservation``: left to the scheduler it fails now and then, so it is pinned there)."""
    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(2)
        ops = world.fund(USER, [1_000 + i for i in range(8)])
    rounds = [(f"same-{i}", ops[i], True) for i in range(4)]
    jobs = [_job(key, f"ref-{key}", [op], hold=held) for key, op, held in rounds]
    children = [Child("idem", {"url": ledger_url, "jobs": jobs}) for _ in range(2)]
    try:
        for key, _op, held in rounds:
            head = log_head(ledger_url)
            results = _play(children, held)
            assert all("ok" in r for r in results), results
            assert results[0]["ok"] == results[1]["ok"], "both callers see the same action"
            assert results[0]["ok"]["reference"] == f"ref-{key}"
            appended = _topics(ledger_url, head)
            assert _is_one_create(appended), f"{key}: the log holds one create, got {appended}"
            if held:
                assert sorted(r["collisions"] > 0 for r in results) == [False, True], \
                    f"{key}: exactly one save collided and was retried as a repeat"
        for c in children:
            c.wait()
    finally:
        for c in children:
            c.close()
    with Ledger.open(ledger_url) as led:
        for key, op, _ in rounds:
            assert len(_key_used(led, key)) == 1
            assert _raw_key_used(ledger_url, key) == 1
            assert not led.explain_output(USER, op).spendable
        refs = [a.reference for a in led.list_actions(USER, limit=1000).items
                if a.reference.startswith("ref-")]
        assert sorted(refs) == sorted(f"ref-{k}" for k, _, _ in rounds)
        assert led.balance(USER).reserved == sum(1_000 + i for i in range(4))
        assert led.verify_projections().ok


@pytest.mark.slow
def test_two_processes_sharing_a_key_for_different_requests_one_wins(ledger_url: str) -> None:
    """Two different requests under one key at the same moment: exactly one acts, the other gets
    ``IdempotencyConflict`` -- not a second action, and not ``OutputAlreadyReserved`` (the key
    is checked before the input). Once with the same reference and different descriptions,
    once with different references over the same input."""
    with Ledger.open(ledger_url) as led:
        world = World(led)
        world.mine_empty(2)
        ops = world.fund(USER, [2_000, 3_000])
    jobs = [
        [_job("shared-a", "ref-a", [ops[0]], description=f"intent {p}"),
         _job("shared-b", f"ref-b{p}", [ops[1]])]
        for p in range(2)
    ]
    children = [Child("idem", {"url": ledger_url, "jobs": jobs[p]}) for p in range(2)]
    winners: dict[str, dict[str, Any]] = {}
    try:
        for key in ("shared-a", "shared-b"):
            head = log_head(ledger_url)
            results = _play(children, held=True)
            ok = [r for r in results if "ok" in r]
            refused = [r for r in results if "ok" not in r]
            assert len(ok) == 1 and len(refused) == 1, results
            assert refused[0]["error"] == "IdempotencyConflict", refused[0]
            assert refused[0]["collisions"] > 0, "the loser collided, re-read and was refused"
            assert _is_one_create(_topics(ledger_url, head))
            winners[key] = ok[0]["ok"]
        for c in children:
            c.wait()
    finally:
        for c in children:
            c.close()
    with Ledger.open(ledger_url) as led:
        actions = {a.reference: a for a in led.list_actions(USER, limit=1000).items
                   if a.reference.startswith("ref-")}
        assert set(actions) == {"ref-a", winners["shared-b"]["reference"]}
        assert actions["ref-a"].description == winners["shared-a"]["description"]
        for key in winners:
            assert len(_key_used(led, key)) == 1
            assert _raw_key_used(ledger_url, key) == 1
        assert led.balance(USER).reserved == 5_000
        assert led.verify_projections().ok
