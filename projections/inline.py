"""Inline projection: rows and the tracked position written in the append transaction itself.

Guarantee: in inline mode an event and its row changes commit together or not at all, so a status
change and its spendability change are never observable apart, and a crash between them is
impossible. In catch-up mode the hook does nothing and a catch-up process projects instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from projections.projector import Recorded, project_batch, read_plan, recorded, tip_height
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


class InlineProjection:
    """The recorder hook: ``hook(cursor, ids, domain_events, stored_events)``.

    It reads the projection pointer (live table set and mode) and position in the same burst as
    the rows the batch needs, betting on the set it saw last; a rebuild that swapped sets since
    (rare) costs one more read. The pointer cannot change under it: swaps hold the writers' lock.
    On PostgreSQL, while it writes alone and keeps every row a batch needs, it sends that check
    with the batch's writes instead, and refuses the append if it fails
    (:meth:`_project_deferred`).

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
        self._pointer_and_position = {p: pointer_query(schema, position_of=st.table("meta"))
                                      for p, st in self._statements.items()}
        self._guess = (SET_PREFIXES[0], "inline")
        self._defer_check = dialect == "postgresql"
        """PostgreSQL: with every row kept, check the pointer in the writes' round trip."""
        self._alone = False
        """The last check found nobody else had written since this hook's batch before it. Only
        then is the check sent with the writes: a stale one refuses the save, and the whole
        command runs again, which would happen save after save to writers taking turns."""
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

    def __call__(self, cursor: Any, ids: Sequence[int], events: Sequence[Any] | None,
                 stored: Sequence[Any]) -> None:
        self._pending = None
        if self._guess[1] != "inline":  # last seen in catch-up mode: look before reading rows
            cursor.execute(self._pointer)
            self._guess = parse_pointer(cursor.fetchall())
            if self._guess[1] != "inline":
                self._kept = None
                return
        if events is None or len(events) != len(ids):
            events = [self._decode(s) for s in stored]
        items = [recorded(pos, event) for pos, event in zip(ids, events, strict=True)]
        plan = read_plan(items)
        guess = self._guess[0]
        store = self._store(cursor, guess)
        check = [(self._pointer_and_position[guess], ())]
        kept = self._kept if self._kept is not None and store is self._kept.store else None
        read = store.prefetch(plan, also=check,
                              defer_also=self._defer_check and self._alone and kept is not None)
        if read is None:  # every row kept: the pointer is checked with the writes
            assert kept is not None
            self._project_deferred(store, kept, ids, events, items, check, guess)
            return
        (pointer,) = read
        prefix, mode = parse_pointer(pointer)
        self._guess = (prefix, mode)
        if mode != "inline":
            self._kept = None
            return
        self._alone = kept is not None and _unmoved(pointer, guess, kept)
        if prefix != guess or (kept is not None and not self._alone):
            self._kept = None  # another writer moved the projection: read everything afresh
            store = SqlRowStore(cursor, self._statements[prefix])
            store.prefetch(plan)
        project_batch(store, items)
        check_chain_invariants(store, events)
        store.flush()
        self._keep(store, prefix, ids)

    def _project_deferred(self, store: SqlRowStore, kept: _Kept, ids: Sequence[int],
                          events: Sequence[Any], items: list[Recorded],
                          check: list[tuple[str, tuple[()]]], guess: str) -> None:
        """Project on the kept rows, then write them in the same round trip as the pointer
        check. If the check shows another writer (or a mode switch, or a swapped set), the
        append is refused as stale: the command runs again and this hook then reads everything
        afresh. So is it if projecting or writing fails: kept rows another writer changed may
        contradict the batch (a state its event moves from, a row it creates). A genuine error
        recurs on the fresh reads, and propagates from there."""
        self._kept = None  # trusted again only once this batch commits
        try:
            project_batch(store, items)
            check_chain_invariants(store, events)
            (pointer,) = store.flush(first=check)
        except Exception as err:
            self._alone = False
            raise StaleDecision(f"the inline projection failed on kept rows, deciding again "
                                f"from fresh reads ({type(err).__name__}: {err})") from err
        self._guess = parse_pointer(pointer)
        if not _unmoved(pointer, guess, kept):
            self._alone = False
            raise StaleDecision("another writer moved the projection since this process's "
                                "last write")
        self._keep(store, guess, ids)

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
