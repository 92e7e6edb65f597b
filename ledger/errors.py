"""The ledger's error hierarchy (SPEC §6).

Every error a caller can see is a :class:`LedgerError`. A failed command appends nothing to the
log; the one exception is :class:`IllegalTransition`, whose refusal is itself recorded as a
``TransitionRejected`` event so that incident audits see it.
"""

from __future__ import annotations

from collections.abc import Iterable


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose. Messages say what to do next."""


class InvalidInput(LedgerError):
    """Malformed arguments: bad hex, negative satoshis, wrong lengths, unknown enum values."""


class InvalidTransaction(LedgerError):
    """The raw transaction does not parse strictly, or does not match its draft."""


class InvalidProof(LedgerError):
    """A merkle proof (BUMP) is malformed, lacks the txid, or does not match the active chain."""


class UnknownTransaction(LedgerError):
    """No transaction with this txid was ever stored."""

    def __init__(self, txid: str) -> None:
        self.txid = txid
        super().__init__(f"unknown transaction {txid}: the ledger has never stored it")


class UnknownAction(LedgerError):
    """No action exists for this (user, reference)."""

    def __init__(self, user: str, reference: str) -> None:
        self.user = user
        self.reference = reference
        super().__init__(f"unknown action {reference!r} of user {user!r}")


class IllegalTransition(LedgerError):
    """The FSM table does not allow this move; a ``TransitionRejected`` event was recorded."""

    def __init__(self, txid: str, from_state: str, to_state: str, legal_next: Iterable[str]) -> None:
        self.txid = txid
        self.from_state = from_state
        self.to_state = to_state
        self.legal_next = tuple(sorted(legal_next))
        allowed = ", ".join(self.legal_next) or "nothing (terminal)"
        super().__init__(
            f"transaction {txid}: {from_state} -> {to_state} is not allowed; "
            f"from {from_state} the legal next states are: {allowed}"
        )


class PreconditionFailed(LedgerError):
    """The move is in the table but the command's stateful precondition does not hold."""


class OutputNotSpendable(LedgerError):
    """An input named by a command is not a spendable output of that user."""


class OutputAlreadyReserved(LedgerError):
    """An input is already reserved or spent by another live action."""


class IdempotencyConflict(LedgerError):
    """The idempotency key was used before with a different payload."""


class ChainDiscontinuity(LedgerError):
    """Headers connect to nothing the ledger knows, or reorganise deeper than the limit."""


class ChainTrackerUnavailable(LedgerError):
    """The injected chain tracker failed, timed out or answered nonsense while a proof for a
    height the ledger has no header for was checked. Nothing was stored; the proof may be
    valid: retry later, or apply the headers up to its block."""


class BroadcastFailed(LedgerError):
    """Every broadcaster failed; for a third-party transaction nothing was stored."""


class ConcurrencyConflict(LedgerError):
    """Concurrent writers kept colliding and the retry budget ran out. Safe to retry."""


class StorageError(LedgerError):
    """The database could not be opened or reached (bad URL, server down, wrong file)."""


__all__ = [
    "BroadcastFailed",
    "ChainDiscontinuity",
    "ChainTrackerUnavailable",
    "ConcurrencyConflict",
    "IdempotencyConflict",
    "IllegalTransition",
    "InvalidInput",
    "InvalidProof",
    "InvalidTransaction",
    "LedgerError",
    "OutputAlreadyReserved",
    "OutputNotSpendable",
    "PreconditionFailed",
    "StorageError",
    "UnknownAction",
    "UnknownTransaction",
]
