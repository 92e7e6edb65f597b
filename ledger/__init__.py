"""wallet-ledger: an event-sourced transaction ledger for BSV wallets.

The public API (SPEC §6) is importable from here::

    from ledger import Ledger, ProcessingStatus, BlockHeader, Outpoint, NewOutput
"""

from ledger.application import Broadcaster
from ledger.errors import (
    BroadcastFailed,
    ChainDiscontinuity,
    ConcurrencyConflict,
    IdempotencyConflict,
    IllegalTransition,
    InvalidInput,
    InvalidProof,
    InvalidTransaction,
    LedgerError,
    OutputAlreadyReserved,
    OutputNotSpendable,
    PreconditionFailed,
    StorageError,
    UnknownAction,
    UnknownTransaction,
)
from ledger.facade import Ledger, LedgerView
from ledger.rules import ProviderStatus
from ledger.status import TRANSITIONS, ProcessingStatus, can_transition
from ledger.values import BlockHeader, InternalizeOutput, NewOutput, Outpoint, ProviderResult
from ledger.views import (
    ActionView,
    AuditEntry,
    Balance,
    ChainUpdate,
    DriftReport,
    Explanation,
    OutputView,
    Page,
    RebuildReport,
    TransactionView,
)

__all__ = [
    "TRANSITIONS", "ActionView", "AuditEntry", "Balance", "BlockHeader", "BroadcastFailed",
    "Broadcaster", "ChainDiscontinuity", "ChainUpdate", "ConcurrencyConflict", "DriftReport",
    "Explanation", "IdempotencyConflict", "IllegalTransition", "InternalizeOutput", "InvalidInput",
    "InvalidProof", "InvalidTransaction", "Ledger", "LedgerError", "LedgerView", "NewOutput",
    "Outpoint", "OutputAlreadyReserved", "OutputNotSpendable", "OutputView", "Page",
    "PreconditionFailed", "ProcessingStatus", "ProviderResult", "ProviderStatus", "RebuildReport",
    "StorageError", "TransactionView", "UnknownAction", "UnknownTransaction", "can_transition",
]
