"""Read-side views returned by the public API (SPEC §6). Frozen pydantic models, JSON-friendly."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from ledger.status import ProcessingStatus
from ledger.values import BlockHeader

T = TypeVar("T")


class View(BaseModel):
    """Base of views: frozen snapshots of what the projections held when read."""

    model_config = ConfigDict(frozen=True)

    @classmethod
    def from_stored(cls, values: dict[str, Any]) -> Self:
        """A view of values read from the ledger's own tables, which hold only what was
        validated on the way in: every field given, nothing checked again. What pydantic's
        ``model_construct`` builds, without its per-field loop (a page of 100 outputs spent a
        fifth of its time there); ``tests/test_views.py`` holds the two equal."""
        assert values.keys() == cls.model_fields.keys(), \
            sorted(values.keys() ^ cls.model_fields.keys())
        view = cls.__new__(cls)
        _set = object.__setattr__
        _set(view, "__dict__", values)
        _set(view, "__pydantic_fields_set__", set(values))
        _set(view, "__pydantic_extra__", None)
        _set(view, "__pydantic_private__", None)
        return view


class TransactionView(View):
    """One transaction as the ledger believes it now (or at an as-of position)."""

    txid: str
    state: ProcessingStatus
    attempts: int = 0
    was_broadcast: bool = False
    is_coinbase: bool = False
    height: int | None = None
    block_hash: str | None = None
    merkle_root: str | None = None
    raw_tx: bytes | None = None
    position: int = 0
    """Log position of the newest event in this transaction's stream (notes and refusals too)."""


class ActionView(View):
    """One user's action (a payment they made or a receipt they internalized)."""

    user: str
    reference: str
    txid: str | None
    status: str
    description: str
    satoshis_delta: int
    is_outgoing: bool
    labels: list[str] = Field(default_factory=list)


class OutputView(View):
    """One user's view of one output."""

    user: str
    txid: str
    vout: int
    satoshis: int
    basket: str
    tags: list[str] = Field(default_factory=list)
    spendable: bool
    change: bool = False
    is_coinbase: bool = False
    locking_script: bytes | None = None
    custom_instructions: str | None = None
    category: str = ""
    """Where the value counts in :class:`Balance` (spendable, reserved, pending, ...)."""


class Page(View, Generic[T]):
    """A page of results and the total count matching the query."""

    items: list[T]
    total: int


class Balance(View):
    """Satoshis of one user (optionally one basket), one bucket per output category."""

    spendable: int = 0
    reserved: int = 0
    pending: int = 0
    immature: int = 0
    quarantined: int = 0


class AuditEntry(View):
    """One event of the log as the ``tx_audit`` table shows it."""

    position: int
    event: str
    txid: str | None = None
    user: str | None = None
    reference: str | None = None
    from_state: str | None = None
    to_state: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class ChainUpdate(View):
    """What one ``apply_headers`` call changed."""

    connected: list[BlockHeader] = Field(default_factory=list)
    disconnected: list[BlockHeader] = Field(default_factory=list)
    affected_txids: list[str] = Field(default_factory=list)


class Explanation(View):
    """Why an output is (not) spendable: the rule's inputs and the log positions behind them."""

    spendable: bool
    category: str
    reasons: list[str]
    positions: list[int]


class RebuildReport(View):
    """A finished projection rebuild."""

    events: int
    seconds: float
    position: int = 0


class DriftReport(View):
    """Live projections diffed against a shadow rebuild. ``ok`` when nothing differs."""

    ok: bool
    differences: list[dict[str, Any]] = Field(default_factory=list)
    position: int = 0


