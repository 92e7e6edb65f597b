"""Inline projection: rows and the tracked position written in the append transaction itself.

Guarantee: in inline mode an event and its row changes commit together or not at all, so a status
change and its spendability change are never observable apart, and a crash between them is
impossible. In catch-up mode the hook does nothing and a catch-up process projects instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from projections.projector import project, read_plan, tip_height
from projections.schema import SET_PREFIXES, build_schema
from projections.stores import Dialect, SqlRowStore, SqlStatements
from projections.tables import parse_pointer, pointer_query

Decode = Callable[[Any], Any]
_PROOF_RECORDED = "ledger.transaction.ProofRecorded"
_BLOCK_CONNECTED = "ledger.chain.BlockConnected"
_BLOCK_DISCONNECTED = "ledger.chain.BlockDisconnected"


class StaleDecision(Exception):
    """A command decided on chain state that changed before it committed. Retry it."""


def check_chain_invariants(store: SqlRowStore, events: Sequence[Any]) -> None:
    """Cross-stream invariants checked at commit, where appends are serialised: a proof is
    anchored in an active block; a disconnected block keeps no proven transaction; no
    ``unconfirmed`` transaction is left below the tip."""
    connected = False
    for event in events:
        topic = type(event).TOPIC
        if topic == _PROOF_RECORDED:
            header = store.get("headers", (event.block_hash,))
            if header is None or not header["active"]:
                raise StaleDecision(f"block {event.block_hash} is not on the active chain")
        elif topic == _BLOCK_DISCONNECTED and store.transactions_where("block_hash", event.hash):
            raise StaleDecision(f"a proof in block {event.hash} was not invalidated")
        connected = connected or topic == _BLOCK_CONNECTED
    tip = tip_height(store)
    if connected and tip is not None and store.transactions_where(
            "state", "unconfirmed", below=("height", tip)):
        raise StaleDecision(f"unconfirmed transactions were left below the tip {tip}")


class InlineProjection:
    """The recorder hook: ``hook(cursor, ids, domain_events, stored_events)``.

    It reads the projection pointer (live table set and mode) in the same burst as the rows the
    batch needs, betting on the set it saw last; a rebuild that swapped sets since (rare) costs
    one more read. The pointer cannot change under it: swaps hold the writers' lock.
    """

    def __init__(self, dialect: Dialect, decode: Decode, *, pg_schema: str | None = None) -> None:
        self._statements = {p: SqlStatements(build_schema(p), dialect, pg_schema=pg_schema)
                            for p in SET_PREFIXES}
        self._decode = decode
        self._pointer = pointer_query(pg_schema if dialect == "postgresql" else None)
        self._guess = (SET_PREFIXES[0], "inline")

    def __call__(self, cursor: Any, ids: Sequence[int], events: Sequence[Any] | None,
                 stored: Sequence[Any]) -> None:
        if self._guess[1] != "inline":  # last seen in catch-up mode: look before reading rows
            cursor.execute(self._pointer)
            self._guess = parse_pointer(cursor.fetchall())
            if self._guess[1] != "inline":
                return
        if events is None or len(events) != len(ids):
            events = [self._decode(s) for s in stored]
        plan = read_plan(events)
        store = SqlRowStore(cursor, self._statements[self._guess[0]])
        pointer = store.prefetch(plan, also=[(self._pointer, ())])[0]
        prefix, mode = parse_pointer(pointer)
        if (prefix, mode) != self._guess:
            self._guess = (prefix, mode)
            if mode != "inline":
                return
            store = SqlRowStore(cursor, self._statements[prefix])
            store.prefetch(plan)
        for position, event in zip(ids, events, strict=True):
            project(store, position, event)
        check_chain_invariants(store, events)
        store.flush()
