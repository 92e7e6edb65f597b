"""Inline projection: rows and the tracked position written in the append transaction itself.

Guarantee: in inline mode an event and its row changes commit together or not at all, so a status
change and its spendability change are never observable apart, and a crash between them is
impossible. In catch-up mode the hook does nothing and a catch-up process projects instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.projector import ReadPlan, Recorded, project_batch, read_plan, recorded, tip_height
from projections.schema import SET_PREFIXES, build_schema
from projections.stores import Dialect, PendingReads, SqlRowStore, SqlStatements
from projections.tables import parse_pointer, pointer_query

Decode = Callable[[Any], Any]
_PROOF_RECORDED = "ledger.transaction.ProofRecorded"
_BLOCK_CONNECTED = "ledger.chain.BlockConnected"
_BLOCK_DISCONNECTED = "ledger.chain.BlockDisconnected"


class StaleDecision(Exception):
    """A command decided on chain state that changed before it committed. Retry it."""


def check_chain_invariants(store: SqlRowStore, events: Sequence[Any]) -> None:
    """Cross-stream invariants checked at commit, where appends are serialised: a proof is
    anchored in an active block (unless a chain tracker validated it, ADR 0008); a disconnected
    block keeps no proven transaction; no ``unconfirmed`` transaction is left below the tip."""
    connected = False
    for event in events:
        topic = type(event).TOPIC
        if topic == _PROOF_RECORDED and event.block_hash is not None:
            # (None: a chain tracker vouched for the root of a block the ledger never knew)
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


MAX_KEPT_ROWS = 50_000
"""Rows the inline projection keeps between saves (beyond that it starts afresh)."""


@dataclass
class _Kept:
    """The row store of the last committed batch, valid while the projection's position is still
    the one that batch wrote (nobody else has written since)."""

    store: SqlRowStore
    prefix: str
    position: int


@dataclass
class Ahead:
    """What a batch sent before the insert's answer: its events, what they will read, and the
    reads (the pointer and position first) in flight on the store they will fill."""

    events: Sequence[Any]
    items: list[Recorded]
    """The events as the projector reads them, at position 0 (the insert's answer has the
    positions)."""
    plan: ReadPlan | None
    """None: last seen in catch-up mode, only the pointer was read."""
    guess: str
    store: SqlRowStore
    reads: PendingReads


class InlineProjection:
    """The recorder hook: :meth:`ahead` before the insert's answer is in, then
    ``hook(cursor, ids, domain_events, stored_events, ahead)``.

    It reads the projection pointer (live table set and mode) and position in the same burst as
    the rows the batch needs, betting on the set it saw last; a rebuild that swapped sets since
    (rare) costs one more read. The recorder has taken the writers' lock before, so what it
    reads cannot change before the commit: swaps, mode switches and other writers all hold that
    lock. On PostgreSQL that burst goes in the insert's own round trip and the writes go with
    the COMMIT: an inline save takes the two round trips a save without projections takes.

    Rows of its last committed batch are kept (:class:`_Kept`) and reused, without reading them
    again, when the stored position proves that no other writer -- another process, a rebuild, a
    catch-up run -- has written since and that the batch did commit: the recorder reports each
    commit (:meth:`committed`), and a position is never written twice.
    """

    def __init__(self, dialect: Dialect, decode: Decode, *, pg_schema: str | None = None) -> None:
        self._statements = {p: SqlStatements(build_schema(p), dialect, pg_schema=pg_schema)
                            for p in SET_PREFIXES}
        self._decode = decode
        schema = pg_schema if dialect == "postgresql" else None
        self._pointer = pointer_query(schema)
        self._pointer_and_position = {p: pointer_query(schema, position=st.tracked_position())
                                      for p, st in self._statements.items()}
        self._guess = (SET_PREFIXES[0], "inline")
        self._kept: _Kept | None = None
        self._pending: _Kept | None = None

    def committed(self) -> None:
        """The recorder committed the batch this hook projected last: keep its rows."""
        self._kept, self._pending = self._pending, None

    def rolled_back(self) -> None:
        self._kept = self._pending = None

    def _store(self, cursor: Any, prefix: str) -> SqlRowStore:
        kept = self._kept
        if kept is not None and kept.prefix == prefix:
            kept.store.rebind(cursor)
            return kept.store
        return SqlRowStore(cursor, self._statements[prefix])

    def ahead(self, cursor: Any, events: Sequence[Any] | None, stored: Sequence[Any]) -> Ahead:
        """Send the batch's reads: the pointer and position, and the rows it needs that are not
        kept (in catch-up mode, as last seen: the pointer only). Called after the writers' lock
        and before the insert's answer (PostgreSQL: they share its round trip)."""
        self._pending = None
        if events is None or len(events) != len(stored):
            events = [self._decode(s) for s in stored]
        items = [recorded(0, event) for event in events]
        prefix, mode = self._guess
        if mode != "inline":  # last seen in catch-up mode: look before reading rows
            reader = SqlRowStore(cursor, self._statements[prefix])
            return Ahead(events, items, None, prefix, reader,
                         reader.send_reads(ReadPlan(), [(self._pointer, ())]))
        plan = read_plan(items)
        store = self._store(cursor, prefix)
        reads = store.send_reads(plan, [(self._pointer_and_position[prefix], ())])
        return Ahead(events, items, plan, prefix, store, reads)

    def __call__(self, cursor: Any, ids: Sequence[int], events: Sequence[Any] | None,
                 stored: Sequence[Any], ahead: Ahead | None = None) -> None:
        if ahead is None:  # SQLite: nothing to save by reading before the insert
            ahead = self.ahead(cursor, events, stored)
        store = ahead.store
        (pointer,) = store.receive_reads(ahead.reads)
        prefix, mode = self._guess = parse_pointer(pointer)
        if mode != "inline":
            self._kept = None
            return
        kept = self._kept if self._kept is not None and store is self._kept.store else None
        if ahead.plan is None or prefix != ahead.guess or (
                kept is not None and not _unmoved(pointer, ahead.guess, kept)):
            # switched to inline, or another writer moved the projection: read afresh
            store = self._read_afresh(cursor, prefix, ahead.plan or read_plan(ahead.items))
        project_batch(store, [(pos, topic, fields, at) for pos, (_, topic, fields, at)
                              in zip(ids, ahead.items, strict=True)])
        check_chain_invariants(store, ahead.events)
        store.flush(sync=False)
        self._keep(store, prefix, ids)

    def _read_afresh(self, cursor: Any, prefix: str, plan: ReadPlan) -> SqlRowStore:
        """A store of the batch's rows read now, none of them kept (one more round trip)."""
        self._kept = None
        store = SqlRowStore(cursor, self._statements[prefix])
        store.prefetch(plan)
        return store

    def _keep(self, store: SqlRowStore, prefix: str, ids: Sequence[int]) -> None:
        if store.cached_rows <= MAX_KEPT_ROWS:
            self._pending = _Kept(store, prefix, ids[-1])


def _unmoved(pointer: list[Any], guess: str, kept: _Kept) -> bool:
    """The pointer read says nobody has written the projection since the kept batch: the same
    live set, still inline, at the kept batch's own position."""
    return parse_pointer(pointer) == (guess, "inline") and _position_of(pointer) == kept.position


def _position_of(rows: list[Any]) -> int | None:
    """The position read with the pointer."""
    row = rows[0]
    value = row["position"] if isinstance(row, dict) else row[2]
    return None if value is None else int(value)
