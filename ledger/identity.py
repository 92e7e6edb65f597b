"""Deterministic aggregate ids: the same fact always lands in the same stream."""

from __future__ import annotations

import functools
from uuid import UUID, uuid5

_NAMESPACE = UUID("5b1c2c58-0c3a-4bde-9f7e-7c1d3f0e9a41")
_SEP = "\x1f"
_CACHED_IDS = 65_536
"""Ids remembered per kind: a block or a reorg names thousands of streams again and again, and a
name-based UUID costs a SHA-1."""


@functools.lru_cache(maxsize=_CACHED_IDS)
def transaction_id(txid: str) -> UUID:
    """The stream of one transaction (one per txid, shared by every user)."""
    return uuid5(_NAMESPACE, f"tx{_SEP}{txid}")


@functools.lru_cache(maxsize=_CACHED_IDS)
def action_id(user: str, reference: str) -> UUID:
    """The stream of one user's action."""
    return uuid5(_NAMESPACE, f"action{_SEP}{user}{_SEP}{reference}")


@functools.lru_cache(maxsize=_CACHED_IDS)
def reservation_id(txid: str, vout: int) -> UUID:
    """The lock stream of one outpoint: its version sequence serialises reservations."""
    return uuid5(_NAMESPACE, f"outpoint{_SEP}{txid}{_SEP}{vout}")


def idempotency_id(key: str) -> UUID:
    """The stream recording the first use of an idempotency key."""
    return uuid5(_NAMESPACE, f"idempotency{_SEP}{key}")


def chain_id() -> UUID:
    """The single header-chain stream."""
    return uuid5(_NAMESPACE, "chain")
