"""Table tests of the processing-state FSM and the legacy vocabularies (SPEC §3).

The expected tables below are transcribed literally, as strings, from SPEC §3; they are not derived
from ``ledger.status`` so that a drift in either direction fails here.
"""

from __future__ import annotations

import itertools

import pytest

from ledger.errors import InvalidInput
from ledger.status import (
    ACTION_STATUS,
    HIDDEN_STATES,
    PROVEN_TX_REQ_STATUS,
    SPENDABLE_STATES,
    TERMINAL,
    TRANSACTION_STATUS,
    TRANSITIONS,
    ProcessingStatus,
    action_status,
    can_transition,
    legal_next,
    parse_status,
)

# --- SPEC §3, transcribed ---------------------------------------------------------------------

STATES: tuple[str, ...] = (
    "queued", "sending", "sent", "seen", "seen_multi", "unconfirmed", "confirmed",
    "reorging", "invalid", "doubleSpend", "unfail", "frozen", "nosend", "nonfinal",
)

SPEC_SPENDABLE = {"sent", "seen", "seen_multi", "unconfirmed", "confirmed"}
SPEC_TERMINAL = {"confirmed", "invalid", "doubleSpend"}
SPEC_HIDDEN = {"queued", "invalid", "doubleSpend", "frozen", "nonfinal"}  # SPEC §4 listing visibility

EXPECTED: dict[str, set[str]] = {
    "queued": {"sending", "sent", "nosend", "frozen", "nonfinal", "invalid", "doubleSpend"},
    "sending": {"sent", "seen", "seen_multi", "invalid", "doubleSpend", "frozen", "queued"},
    "sent": {"seen", "seen_multi", "unconfirmed", "confirmed", "invalid", "doubleSpend", "frozen",
             "sending"},
    "seen": {"seen_multi", "unconfirmed", "confirmed", "invalid", "doubleSpend", "reorging", "frozen",
             "sending"},
    "seen_multi": {"unconfirmed", "confirmed", "invalid", "doubleSpend", "reorging", "frozen",
                   "sending"},
    "unconfirmed": {"confirmed", "invalid", "reorging", "frozen", "seen", "seen_multi", "doubleSpend",
                    "sending"},
    "confirmed": {"reorging"},
    "reorging": {"confirmed", "seen", "seen_multi", "unconfirmed", "frozen"},
    "invalid": {"unfail"},
    "doubleSpend": {"unfail"},
    "unfail": {"queued", "sending", "sent", "seen", "seen_multi", "unconfirmed", "confirmed", "invalid",
               "doubleSpend"},
    "frozen": {"queued", "sending", "sent", "seen", "seen_multi", "unconfirmed", "invalid",
               "doubleSpend"},
    "nosend": {"queued", "sending", "sent", "seen", "invalid", "doubleSpend", "frozen"},
    "nonfinal": {"queued", "sending", "sent", "invalid", "doubleSpend", "frozen"},
}

SPEC_PROVEN_TX_REQ = {
    "completed": "confirmed", "unmined": "sent", "callback": "seen", "unconfirmed": "unconfirmed",
    "sending": "sending", "unsent": "queued", "unprocessed": "queued", "unknown": "sent",
    "nonfinal": "nonfinal", "nosend": "nosend", "invalid": "invalid", "doubleSpend": "doubleSpend",
    "unfail": "unfail",
}

SPEC_TRANSACTION_STATUS = {
    "completed": "confirmed", "failed": "invalid", "unprocessed": "queued", "sending": "sending",
    "unproven": "sent", "unsigned": "queued", "nosend": "nosend", "nonfinal": "nonfinal",
    "unfail": "unfail",
}

SPEC_ACTION_STATUS = {
    "confirmed": "completed",
    "invalid": "failed", "doubleSpend": "failed",
    "queued": "unprocessed", "frozen": "unprocessed",
    "sending": "sending",
    "sent": "unproven", "seen": "unproven", "seen_multi": "unproven", "unconfirmed": "unproven",
    "reorging": "unproven",
    "nosend": "nosend",
    "nonfinal": "nonfinal",
    "unfail": "unfail",
}

ALL_PAIRS = list(itertools.product(STATES, STATES))


def test_transcription_is_self_consistent() -> None:
    # Guards the transcription itself: 14 rows, no identity listed, only known states.
    assert len(STATES) == len(set(STATES)) == 14
    assert set(EXPECTED) == set(STATES)
    for src, dsts in EXPECTED.items():
        assert src not in dsts
        assert dsts <= set(STATES)
    assert sum(len(d) for d in EXPECTED.values()) == 83


# --- the enum ---------------------------------------------------------------------------------

def test_enum_values_are_exactly_the_spec_states() -> None:
    assert [s.value for s in ProcessingStatus] == list(STATES)


def test_state_sets_match_spec_columns() -> None:
    assert {s.value for s in SPENDABLE_STATES} == SPEC_SPENDABLE
    assert {s.value for s in TERMINAL} == SPEC_TERMINAL
    assert {s.value for s in HIDDEN_STATES} == SPEC_HIDDEN


# --- the 14x14 matrix ------------------------------------------------------------------------

@pytest.mark.parametrize(("src", "dst"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_can_transition_matrix(src: str, dst: str) -> None:
    expected = src == dst or dst in EXPECTED[src]
    assert can_transition(src, dst) is expected
    assert can_transition(ProcessingStatus(src), ProcessingStatus(dst)) is expected
    # mixed argument types
    assert can_transition(ProcessingStatus(src), dst) is expected
    assert can_transition(src, ProcessingStatus(dst)) is expected


def test_matrix_counts() -> None:
    allowed = sum(can_transition(a, b) for a, b in ALL_PAIRS)
    assert allowed == 83 + 14  # listed edges plus the 14 identities


@pytest.mark.parametrize("state", STATES)
def test_identity_always_allowed(state: str) -> None:
    assert can_transition(state, state) is True


def test_transitions_equals_spec_table() -> None:
    as_strings = {src.value: {d.value for d in dsts} for src, dsts in TRANSITIONS.items()}
    assert as_strings == EXPECTED
    assert all(isinstance(k, ProcessingStatus) for k in TRANSITIONS)
    assert all(isinstance(d, ProcessingStatus) for dsts in TRANSITIONS.values() for d in dsts)
    assert all(isinstance(dsts, frozenset) for dsts in TRANSITIONS.values())


def test_transitions_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[ProcessingStatus.CONFIRMED] = frozenset()  # type: ignore[index]
    assert {d.value for d in TRANSITIONS[ProcessingStatus.CONFIRMED]} == {"reorging"}


@pytest.mark.parametrize("state", STATES)
def test_legal_next_is_the_row_without_identity(state: str) -> None:
    assert {s.value for s in legal_next(state)} == EXPECTED[state]
    assert legal_next(ProcessingStatus(state)) == legal_next(state)
    assert state not in {s.value for s in legal_next(state)}


# --- critical rules --------------------------------------------------------------------------

@pytest.mark.parametrize("dst", ["invalid", "doubleSpend"])
def test_reorging_never_reaches_invalid_or_double_spend(dst: str) -> None:
    assert can_transition("reorging", dst) is False
    assert dst not in {s.value for s in legal_next("reorging")}


def test_reorging_reaches_invalid_only_through_unconfirmed() -> None:
    # a later independent rejection must first go through unconfirmed
    assert can_transition("reorging", "unconfirmed")
    assert can_transition("unconfirmed", "invalid")
    assert can_transition("unconfirmed", "doubleSpend")


@pytest.mark.parametrize("dst", STATES)
def test_confirmed_only_to_reorging(dst: str) -> None:
    assert can_transition("confirmed", dst) is (dst in {"confirmed", "reorging"})


@pytest.mark.parametrize("src", ["invalid", "doubleSpend"])
@pytest.mark.parametrize("dst", STATES)
def test_failed_states_only_to_unfail(src: str, dst: str) -> None:
    assert can_transition(src, dst) is (dst in {src, "unfail"})


# --- parse_status ----------------------------------------------------------------------------

@pytest.mark.parametrize("state", STATES)
def test_parse_status_accepts_string_and_enum(state: str) -> None:
    member = ProcessingStatus(state)
    assert parse_status(state) is member
    assert parse_status(member) is member


BAD_STATUSES = [
    "Confirmed", "", "done", None, 5, "CONFIRMED", " confirmed", "confirmed ", "double_spend",
    "doublespend", "seen-multi", "completed", b"confirmed", 0, 1.0, [], ["queued"],
]


@pytest.mark.parametrize("value", BAD_STATUSES, ids=repr)
def test_parse_status_rejects_unknown(value: object) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_status(value)  # type: ignore[arg-type]
    message = str(info.value)
    for state in STATES:
        assert state in message, f"message should name valid state {state!r}: {message}"


@pytest.mark.parametrize("value", ["Confirmed", "", "done", None, 5], ids=repr)
def test_predicates_reject_unknown_states(value: object) -> None:
    with pytest.raises(InvalidInput):
        can_transition(value, "queued")  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        can_transition("queued", value)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        legal_next(value)  # type: ignore[arg-type]


# --- legacy vocabularies ---------------------------------------------------------------------

def test_proven_tx_req_status_vocabulary() -> None:
    assert {k: v.value for k, v in PROVEN_TX_REQ_STATUS.items()} == SPEC_PROVEN_TX_REQ
    assert all(isinstance(v, ProcessingStatus) for v in PROVEN_TX_REQ_STATUS.values())


def test_transaction_status_vocabulary() -> None:
    assert {k: v.value for k, v in TRANSACTION_STATUS.items()} == SPEC_TRANSACTION_STATUS
    assert all(isinstance(v, ProcessingStatus) for v in TRANSACTION_STATUS.values())


def test_action_status_table() -> None:
    assert {k.value: v for k, v in ACTION_STATUS.items()} == SPEC_ACTION_STATUS


@pytest.mark.parametrize("state", STATES)
def test_action_status_for_every_state(state: str) -> None:
    assert action_status(ProcessingStatus(state)) == SPEC_ACTION_STATUS[state]


def test_unsigned_draft_is_unsigned() -> None:
    assert action_status(None) == "unsigned"


@pytest.mark.parametrize("state", [None, *STATES])
def test_aborted_action_is_failed(state: str | None) -> None:
    arg = None if state is None else ProcessingStatus(state)
    assert action_status(arg, aborted=True) == "failed"


@pytest.mark.parametrize("legacy", sorted(SPEC_TRANSACTION_STATUS))
def test_transaction_status_round_trips_through_action_status(legacy: str) -> None:
    # TransactionStatus and the listActions status share one vocabulary; importing a value and
    # listing it again gives the same word back, except an imported "unsigned" row (it has a
    # transaction state, queued, so it lists as unprocessed).
    back = action_status(TRANSACTION_STATUS[legacy])
    assert back == ("unprocessed" if legacy == "unsigned" else legacy)
