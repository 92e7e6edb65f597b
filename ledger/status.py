"""Processing states, the FSM table and the legacy vocabularies (SPEC §3).

The table is data; :func:`can_transition` is the one predicate every command handler asks.
Stateful preconditions (proofs, disconnected blocks) are checked by the handlers, not here.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from ledger.errors import InvalidInput


class ProcessingStatus(StrEnum):
    """The fourteen processing states. The string values are stored in events: never rename."""

    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    SEEN = "seen"
    SEEN_MULTI = "seen_multi"
    UNCONFIRMED = "unconfirmed"
    CONFIRMED = "confirmed"
    REORGING = "reorging"
    INVALID = "invalid"
    DOUBLE_SPEND = "doubleSpend"
    UNFAIL = "unfail"
    FROZEN = "frozen"
    NOSEND = "nosend"
    NONFINAL = "nonfinal"


S = ProcessingStatus

_TABLE: dict[ProcessingStatus, frozenset[ProcessingStatus]] = {
    S.QUEUED: frozenset({S.SENDING, S.SENT, S.NOSEND, S.FROZEN, S.NONFINAL, S.INVALID,
                         S.DOUBLE_SPEND}),
    S.SENDING: frozenset({S.SENT, S.SEEN, S.SEEN_MULTI, S.INVALID, S.DOUBLE_SPEND, S.FROZEN,
                          S.QUEUED}),
    S.SENT: frozenset({S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED, S.INVALID,
                       S.DOUBLE_SPEND, S.FROZEN, S.SENDING}),
    S.SEEN: frozenset({S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED, S.INVALID, S.DOUBLE_SPEND,
                       S.REORGING, S.FROZEN, S.SENDING}),
    S.SEEN_MULTI: frozenset({S.UNCONFIRMED, S.CONFIRMED, S.INVALID, S.DOUBLE_SPEND, S.REORGING,
                             S.FROZEN, S.SENDING}),
    S.UNCONFIRMED: frozenset({S.CONFIRMED, S.INVALID, S.REORGING, S.FROZEN, S.SEEN, S.SEEN_MULTI,
                              S.DOUBLE_SPEND, S.SENDING}),
    S.CONFIRMED: frozenset({S.REORGING}),
    S.REORGING: frozenset({S.CONFIRMED, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.FROZEN}),
    S.INVALID: frozenset({S.UNFAIL}),
    S.DOUBLE_SPEND: frozenset({S.UNFAIL}),
    S.UNFAIL: frozenset({S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED,
                         S.CONFIRMED, S.INVALID, S.DOUBLE_SPEND}),
    S.FROZEN: frozenset({S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED,
                         S.INVALID, S.DOUBLE_SPEND}),
    S.NOSEND: frozenset({S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.INVALID, S.DOUBLE_SPEND,
                         S.FROZEN}),
    S.NONFINAL: frozenset({S.QUEUED, S.SENDING, S.SENT, S.INVALID, S.DOUBLE_SPEND, S.FROZEN}),
}

TRANSITIONS: Mapping[ProcessingStatus, frozenset[ProcessingStatus]] = MappingProxyType(_TABLE)
"""Allowed ``from -> to`` moves. The identity move is always allowed and is a no-op."""

TERMINAL: frozenset[ProcessingStatus] = frozenset({S.CONFIRMED, S.INVALID, S.DOUBLE_SPEND})
SPENDABLE_STATES: frozenset[ProcessingStatus] = frozenset(
    {S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED}
)
PRESERVING_STATES: frozenset[ProcessingStatus] = frozenset({S.REORGING, S.UNFAIL})
HIDDEN_STATES: frozenset[ProcessingStatus] = frozenset(
    {S.QUEUED, S.INVALID, S.DOUBLE_SPEND, S.FROZEN, S.NONFINAL}
)
TOXIC_STATES: frozenset[ProcessingStatus] = frozenset({S.INVALID, S.DOUBLE_SPEND})
PROOF_STATES: frozenset[ProcessingStatus] = frozenset({S.UNCONFIRMED, S.CONFIRMED})
"""Reached only through a validated proof (or promotion), never through ``transition()``."""
NEVER_BROADCAST_STATES: frozenset[ProcessingStatus] = frozenset({S.QUEUED, S.NOSEND, S.NONFINAL})


def parse_status(value: str | ProcessingStatus) -> ProcessingStatus:
    """The enum member for ``value``; :class:`InvalidInput` naming the valid states otherwise."""
    if isinstance(value, ProcessingStatus):
        return value
    try:
        return ProcessingStatus(value)
    except (ValueError, TypeError):
        valid = ", ".join(s.value for s in ProcessingStatus)
        raise InvalidInput(f"unknown processing state {value!r}; valid states: {valid}") from None


def can_transition(from_state: str | ProcessingStatus, to_state: str | ProcessingStatus) -> bool:
    """True when the FSM table allows ``from_state -> to_state`` (identity included)."""
    src, dst = parse_status(from_state), parse_status(to_state)
    return src == dst or dst in TRANSITIONS[src]


def legal_next(state: str | ProcessingStatus) -> frozenset[ProcessingStatus]:
    """The states reachable in one move from ``state`` (identity excluded)."""
    return TRANSITIONS[parse_status(state)]


# Legacy vocabularies (import and BRC-100 style listActions output).
PROVEN_TX_REQ_STATUS: Mapping[str, ProcessingStatus] = MappingProxyType({
    "completed": S.CONFIRMED, "unmined": S.SENT, "callback": S.SEEN,
    "unconfirmed": S.UNCONFIRMED, "sending": S.SENDING, "unsent": S.QUEUED,
    "unprocessed": S.QUEUED, "unknown": S.SENT, "nonfinal": S.NONFINAL, "nosend": S.NOSEND,
    "invalid": S.INVALID, "doubleSpend": S.DOUBLE_SPEND, "unfail": S.UNFAIL,
})
"""wallet-toolbox ``ProvenTxReqStatus`` -> processing state."""

TRANSACTION_STATUS: Mapping[str, ProcessingStatus] = MappingProxyType({
    "completed": S.CONFIRMED, "failed": S.INVALID, "unprocessed": S.QUEUED,
    "sending": S.SENDING, "unproven": S.SENT, "unsigned": S.QUEUED, "nosend": S.NOSEND,
    "nonfinal": S.NONFINAL, "unfail": S.UNFAIL,
})
"""wallet-toolbox per-user ``TransactionStatus`` -> processing state."""

ACTION_STATUS: Mapping[ProcessingStatus, str] = MappingProxyType({
    S.CONFIRMED: "completed", S.INVALID: "failed", S.DOUBLE_SPEND: "failed",
    S.QUEUED: "unprocessed", S.FROZEN: "unprocessed", S.SENDING: "sending",
    S.SENT: "unproven", S.SEEN: "unproven", S.SEEN_MULTI: "unproven",
    S.UNCONFIRMED: "unproven", S.REORGING: "unproven", S.NOSEND: "nosend",
    S.NONFINAL: "nonfinal", S.UNFAIL: "unfail",
})
"""Processing state -> listActions status."""

UNSIGNED_ACTION_STATUS = "unsigned"
ABORTED_ACTION_STATUS = "failed"
ACTION_STATUSES: frozenset[str] = frozenset(ACTION_STATUS.values()) | {UNSIGNED_ACTION_STATUS}


def action_status(state: ProcessingStatus | None, *, aborted: bool = False) -> str:
    """The listActions status of an action whose transaction is in ``state`` (None: unsigned)."""
    if aborted:
        return ABORTED_ACTION_STATUS
    if state is None:
        return UNSIGNED_ACTION_STATUS
    return ACTION_STATUS[state]


def actions_unaffected(before: ProcessingStatus, after: ProcessingStatus) -> bool:
    """A move ``before -> after`` of a transaction leaves the status of every action that
    signed or received it as it was, aborted or not (e.g. ``unconfirmed -> confirmed``: both
    are ``completed``), so the projector neither reads nor writes their rows."""
    return ACTION_STATUS[before] == ACTION_STATUS[after]


def _check_table() -> None:
    assert set(_TABLE) == set(ProcessingStatus), "every state needs a row"
    for src, dsts in _TABLE.items():
        assert src not in dsts, f"identity of {src} must not be listed"
    for dst in (S.INVALID, S.DOUBLE_SPEND):
        assert dst not in _TABLE[S.REORGING], "a reorg never invalidates"
    assert set(ACTION_STATUS) == set(ProcessingStatus)


_check_table()
