"""wallet-ledger: an event-sourced transaction ledger for BSV wallets.

The public API (SPEC §6) is importable from here::

    from ledger import Ledger, ProcessingStatus, BlockHeader, Outpoint, NewOutput
"""

from typing import TYPE_CHECKING, Any

from ledger.application import Broadcaster
from ledger.errors import (
    BroadcastFailed,
    ChainDiscontinuity,
    ChainTrackerUnavailable,
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
from ledger.rules import ProviderStatus
from ledger.status import TRANSITIONS, ProcessingStatus, can_transition
from ledger.tracker import CHAIN_TRACKER_TIMEOUT_S, ChainTracker
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

if TYPE_CHECKING:
    from ledger.facade import Ledger, LedgerView


def __getattr__(name: str) -> Any:
    """``Ledger`` and ``LedgerView`` are imported on first use: the facade wires in
    ``projections`` and ``adapters``, which themselves import from ``ledger``, so importing it
    eagerly here would make ``import projections.replay`` (or any adapter) fail when it comes
    first."""
    if name in ("Ledger", "LedgerView"):
        from ledger import facade
        return getattr(facade, name)
    raise AttributeError(f"module 'ledger' has no attribute {name!r}")


__all__ = [
    "CHAIN_TRACKER_TIMEOUT_S", "TRANSITIONS", "ActionView", "AuditEntry", "Balance",
    "BlockHeader", "BroadcastFailed", "Broadcaster", "ChainDiscontinuity", "ChainTracker",
    "ChainTrackerUnavailable", "ChainUpdate", "ConcurrencyConflict", "DriftReport",
    "Explanation", "IdempotencyConflict", "IllegalTransition", "InternalizeOutput", "InvalidInput",
    "InvalidProof", "InvalidTransaction", "Ledger", "LedgerError", "LedgerView", "NewOutput",
    "Outpoint", "OutputAlreadyReserved", "OutputNotSpendable", "OutputView", "Page",
    "PreconditionFailed", "ProcessingStatus", "ProviderResult", "ProviderStatus", "RebuildReport",
    "StorageError", "TransactionView", "UnknownAction", "UnknownTransaction", "can_transition",
]
