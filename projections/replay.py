"""Replaying the log through the projector: catch-up, blue/green rebuild, verify and as-of.

All four apply events with :func:`projections.projector.apply_recorded`, as the inline hook does,
so incremental state and a rebuild from zero cannot disagree by construction; :func:`verify`
proves it on the live data. They read the log as stored fields (:meth:`EventLog.read_fields`),
not as event objects.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import StaticPool

from ledger import gc_pause
from projections.db import Database, WriterBusy
from projections.projector import (
    AUDIT_ONLY_TOPICS,
    AuditFold,
    Recorded,
    apply_recorded,
    project_batch,
    read_plan,
)
from projections.schema import (
    CREATION_ORDERED,
    PRIMARY_KEYS,
    SET_PREFIXES,
    TABLE_NAMES,
    build_schema,
    columns,
)
from projections.stores import (
    MemoryRowStore,
    SqlRowStore,
    SqlStatements,
    bulk_insert,
    decode_row,
    encode_row,
    encode_rows,
    insert_encoded,
    row_key,
)
from projections.tables import (
    MODES,
    ddl_create_indexes,
    ddl_create_set,
    ddl_drop_set,
    ddl_views,
    other_prefix,
    read_pointer,
    set_mode,
    swap_to,
)

READ_PAGE_EVENTS = 2_000
CATCHUP_PAGE_EVENTS = 1_000
LOAD_PAGE_ROWS = 20_000
MAX_FOLD_EVENTS = 1_000_000
"""Logs up to this long are rebuilt in memory (about 2 GB of rows at the limit); longer ones
page by page into the idle table set."""
MAX_FOLD_EVENTS_AUDIT_APART = 2_500_000
"""The same limit when another process loads ``tx_audit``: the fold then holds no audit rows,
most of the rows of a rebuild."""
REBUILD_PAGE_EVENTS = 10_000
MAX_REBUILD_KEPT_ROWS = 200_000
MAX_DIFFERENCES = 1_000
PARALLEL_AUDIT_MIN_EVENTS = 50_000
"""Logs from this long on have their ``tx_audit`` loaded by an :class:`AuditLoader` (another
process) while the rebuild folds the other tables; shorter ones are rebuilt in one pass."""
AUDIT_PAGE_ROWS = 20_000
"""Audit rows per write transaction of :func:`load_audit` (short, so SQLite's one writer
lock alternates with the rebuild's own loads)."""
MAX_PENDING_AUDIT_ROWS = 10 * AUDIT_PAGE_ROWS
"""Audit rows :func:`load_audit` holds while SQLite's writer lock is busy, reading on, before
it waits for the lock."""
_PG_CATCHUP_LOCK = 727_274_002

class RebuildRaced(Exception):
    """Another rebuild swapped its table set in while this one was building (nothing swapped)."""


class AuditLoadFailed(Exception):
    """The audit load beside a rebuild failed or stopped (nothing swapped)."""


class AuditLoad(Protocol):
    """A running :func:`load_audit`."""

    def wait(self) -> int:
        """Block until it is done: rows loaded, or :class:`AuditLoadFailed`."""
        ...

    def cancel(self) -> None:
        """Stop it, loading nothing more (the rebuild failed)."""
        ...


class AuditLoader(Protocol):
    """Starts :func:`load_audit` of set ``prefix`` up to position ``upto`` elsewhere (another
    process: the audit table is half the rows of a rebuild, and a second core loads it)."""

    def start(self, prefix: str, upto: int) -> AuditLoad:
        """The load, running; :class:`AuditLoadFailed` if it cannot be started (the rebuild
        then makes its audit rows itself)."""
        ...


Progress = Callable[[int, int], None]
"""``progress(events_done, events_total)``."""


class EventLog(Protocol):
    """The event store as the projections read it: events in position order."""

    def read_fields(self, after: int, limit: int, skip: frozenset[str] = frozenset()
                    ) -> list[Recorded]:
        """Up to ``limit`` events after position ``after`` as the projector reads them
        (:data:`Recorded`), without event objects: the fields may leave out the originator's
        id and version and the timestamp. Those of the topics in ``skip`` come back with empty
        fields (not decoded)."""
        ...
    def head(self) -> int: ...
    def lock_writers(self, cursor: Any) -> None: ...


def _statements(db: Database) -> dict[str, SqlStatements]:
    return {p: SqlStatements(build_schema(p), db.dialect) for p in SET_PREFIXES}


def iterate_fields(log: EventLog, *, upto: int | None = None,
                   skip: frozenset[str] = frozenset()) -> Iterator[Recorded]:
    """:meth:`EventLog.read_fields` of every event up to ``upto``, in order, read in pages."""
    position = 0
    while True:
        page = log.read_fields(after=position, limit=READ_PAGE_EVENTS, skip=skip)
        for item in page:
            if upto is not None and item[0] > upto:
                return
            yield item
        if len(page) < READ_PAGE_EVENTS:
            return
        position = page[-1][0]


def fold(log: EventLog, *, upto: int | None = None, until: datetime | None = None,
         progress: Progress | None = None, audit: bool = True
         ) -> tuple[MemoryRowStore, int, int]:
    """Project the log (up to a position or a time) into memory: (store, events, last position);
    ``audit=False`` leaves ``tx_audit`` empty."""
    with gc_pause.paused():
        return _fold(log, upto=upto, until=until, progress=progress, audit=audit)


def _fold(log: EventLog, *, upto: int | None, until: datetime | None,
          progress: Progress | None, audit: bool) -> tuple[MemoryRowStore, int, int]:
    store = MemoryRowStore()
    total = log.head() if progress else 0
    count = last = 0
    skip = frozenset() if audit else AUDIT_ONLY_TOPICS
    for item in iterate_fields(log, upto=upto, skip=skip):
        pos = item[0]
        if item[1] not in skip:
            if until is not None and datetime.fromisoformat(item[3]) > until:
                break
            apply_recorded(store, item, audit=audit)
        count, last = count + 1, pos
        if progress and count % 10_000 == 0:
            progress(count, total)
    if progress:
        progress(count, max(total, count))
    return store, count, last


def catch_up(db: Database, log: EventLog, *, page_events: int = CATCHUP_PAGE_EVENTS,
             max_pages: int | None = None) -> int:
    """Apply unprojected events page by page, one transaction per page; returns how many.

    Exactly-once: a page's rows and the tracked position commit together, and the position is
    read inside the same write transaction. In inline mode nothing is pending (the writers
    project), and nothing is done.
    """
    assert 1 <= page_events <= 100_000
    statements, done, pages = _statements(db), 0, 0
    while max_pages is None or pages < max_pages:
        with db.transaction(write=True) as cur:
            _hold_catch_up(db, cur)
            prefix, mode = read_pointer(cur)
            if mode == "inline":
                return done
            n = _apply_page(cur, statements[prefix], log, page_events)
        if n == 0:
            return done
        done, pages = done + n, pages + 1
    return done


def _hold_catch_up(db: Database, cur: Any) -> None:
    """PostgreSQL: wait for a catch-up page another process is applying, and hold the next one
    off until this transaction ends (SQLite's one writer does the same)."""
    if db.dialect == "postgresql":
        cur.execute(f"SELECT pg_advisory_xact_lock({_PG_CATCHUP_LOCK})")


def switch_mode(db: Database, log: EventLog, mode: str) -> int:
    """Set the projection mode; returns how many events it projected on the way.

    To inline: the events appended in catch-up mode are projected first -- most of them page by
    page while writers go on, the rest in the transaction that switches, which holds the
    writers and any catch-up page off. So no inline writer projects on a projection that is
    behind the log, and no catch-up page commits after the switch. To catch-up: the switch
    waits for the append in progress; the next one sees it and leaves its rows to catch-up runs.
    """
    assert mode in MODES
    done = catch_up(db, log) if mode == "inline" else 0
    with db.transaction(write=True) as cur:
        _hold_projection(db, cur, log)
        prefix, _ = read_pointer(cur)
        if mode == "inline":
            done += _project_the_rest(cur, _statements(db)[prefix], log)
        set_mode(cur, mode)
    return done


def _hold_projection(db: Database, cur: Any, log: EventLog) -> None:
    """Hold off, for the rest of the caller's transaction, everyone who writes the projection:
    catch-up pages (the one under way first finishes), then appends. A hand-over (a mode
    switch, a rebuild's swap) then changes the pointer with nobody projecting beside it."""
    _hold_catch_up(db, cur)
    log.lock_writers(cur)


def _project_the_rest(cur: Any, statements: SqlStatements, log: EventLog) -> int:
    """Project every event not yet in the set, page by page, inside the caller's transaction;
    returns how many."""
    done = 0
    while n := _apply_page(cur, statements, log, CATCHUP_PAGE_EVENTS):
        done += n
    return done


def _apply_page(cur: Any, statements: SqlStatements, log: EventLog, page_events: int) -> int:
    with gc_pause.paused():
        return _project_page(cur, statements, log, page_events)


def _project_page(cur: Any, statements: SqlStatements, log: EventLog, page_events: int) -> int:
    store = SqlRowStore(cur, statements)
    position = store.tracked_position()
    return _project_items(store, log.read_fields(after=position, limit=page_events))


def _project_items(store: SqlRowStore, items: list[Recorded], *, audit: bool = True) -> int:
    """One page through a SQL store: its rows read in a burst, projected, written back."""
    store.prefetch(read_plan(items))
    project_batch(store, items, audit=audit)
    store.flush()
    return len(items)


def rebuild(db: Database, log: EventLog, progress: Progress | None = None, *,
            max_fold_events: int | None = None,
            audit_loader: AuditLoader | None = None) -> tuple[int, float, int]:
    """Blue/green: build the idle table set from the log, catch it up with writers held, swap
    it live in one transaction, empty the old set. Returns (events, seconds, position).

    A log of up to ``max_fold_events`` (default :data:`MAX_FOLD_EVENTS`) is folded in memory
    and bulk-loaded (fastest); a longer one is projected into the idle set page by page, so
    memory stays bounded whatever the log's length. From :data:`PARALLEL_AUDIT_MIN_EVENTS`
    events on, ``audit_loader`` loads ``tx_audit`` meanwhile, and the fold holds no audit rows
    (its limit is then :data:`MAX_FOLD_EVENTS_AUDIT_APART`)."""
    started = time.perf_counter()
    with db.transaction(write=False) as cur:
        live, _ = read_pointer(cur)
    target = other_prefix(live)
    upto = log.head()
    apart = audit_loader is not None and upto >= PARALLEL_AUDIT_MIN_EVENTS
    in_memory = upto <= _fold_limit(max_fold_events, audit_apart=apart)
    _empty_set(db, log, target, indexes=not in_memory)
    job = _start_audit(audit_loader, target, upto) if apart else None
    if apart and job is None and in_memory and upto > _fold_limit(max_fold_events, audit_apart=False):
        in_memory = False  # no process for the audit rows: too many rows to hold them too
        with db.transaction(write=True) as cur:
            for statement in ddl_create_indexes(target, db.dialect):
                cur.execute(statement)
    try:
        if in_memory:
            store, count, last = fold(log, upto=upto, progress=progress, audit=job is None)
            _load_set(db, target, store, [t for t in TABLE_NAMES
                                          if job is None or t != "tx_audit"])
        else:
            count, last = _build_by_pages(db, log, target, progress, upto, audit=job is None)
        if job is not None:
            job.wait()
    except BaseException:
        if job is not None:
            job.cancel()
        raise
    with db.transaction(write=True) as cur:
        _hold_projection(db, cur, log)
        live_now, _ = read_pointer(cur)
        if live_now != live:
            raise RebuildRaced("another rebuild swapped in its tables while this one was "
                               "building; the projections are rebuilt (check with verify)")
        _project_the_rest(cur, _statements(db)[target], log)
        swap_to(cur, target)
        position = SqlRowStore(cur, _statements(db)[target]).tracked_position()
    # Empty the old set but keep it: a writer that last saw it live reads it (and the pointer)
    # in one burst before it learns of the swap, so its tables must always exist.
    _empty_set(db, log, live, indexes=True)
    return count, time.perf_counter() - started, max(position, last)


def _fold_limit(max_fold_events: int | None, *, audit_apart: bool) -> int:
    if max_fold_events is not None:
        return max_fold_events
    return MAX_FOLD_EVENTS_AUDIT_APART if audit_apart else MAX_FOLD_EVENTS


def _start_audit(loader: AuditLoader | None, prefix: str, upto: int) -> AuditLoad | None:
    """The audit load, started; None: this rebuild makes its audit rows itself (the loader
    cannot start a process now)."""
    if loader is None:
        return None
    try:
        return loader.start(prefix, upto)
    except AuditLoadFailed:
        return None


def _empty_set(db: Database, log: EventLog, prefix: str, *, indexes: bool) -> None:
    """Drop and create again the tables of set ``prefix``, with writers held off: a writer that
    bets on this set reads its tables after taking the writers' lock, so a drop that waited for
    its reads while it waited for the drop's tables would deadlock with it."""
    with db.transaction(write=True) as cur:
        log.lock_writers(cur)
        for statement in [*ddl_drop_set(prefix, db.dialect),
                          *ddl_create_set(prefix, db.dialect, indexes=indexes)]:
            cur.execute(statement)


def _build_by_pages(db: Database, log: EventLog, prefix: str, progress: Progress | None,
                    upto: int, *, audit: bool) -> tuple[int, int]:
    """Project the log up to ``upto`` into the emptied set ``prefix``, ``REBUILD_PAGE_EVENTS``
    per transaction, keeping at most ``MAX_REBUILD_KEPT_ROWS`` rows between pages."""
    statements = SqlStatements(build_schema(prefix), db.dialect)
    total = upto
    count = last = 0
    kept: SqlRowStore | None = None
    with gc_pause.paused():
        while last < upto:
            with db.transaction(write=True) as cur:
                store = SqlRowStore(cur, statements) if kept is None else kept
                store.rebind(cur)
                items = [item for item in log.read_fields(after=last, limit=REBUILD_PAGE_EVENTS)
                         if item[0] <= upto]
                if not items:
                    break
                count += _project_items(store, items, audit=audit)
                last = items[-1][0]
            kept = store if store.cached_rows <= MAX_REBUILD_KEPT_ROWS else None
            if progress:
                progress(count, max(total, count))
    return count, last


def _load_set(db: Database, prefix: str, store: MemoryRowStore, tables: list[str]) -> None:
    """Fill ``tables`` of the emptied idle set: rows in key order (appends to each b-tree) or,
    for the tables in :data:`CREATION_ORDERED`, in the order the fold created them; then their
    secondary indexes, built once over the loaded rows. Each page of at most
    :data:`LOAD_PAGE_ROWS` rows is encoded before its write transaction, so that on SQLite an
    audit load (:func:`load_audit`) writes its pages meanwhile instead of waiting."""
    statements = SqlStatements(build_schema(prefix), db.dialect)
    for table in tables:
        rows = store.all_rows(table) if table in CREATION_ORDERED else store.rows_by_key(table)
        for start in range(0, len(rows), LOAD_PAGE_ROWS):
            values = encode_rows(statements, table, rows[start:start + LOAD_PAGE_ROWS])
            with db.transaction(write=True) as cur:
                insert_encoded(cur, statements, table, values)
    with db.transaction(write=True) as cur:
        for statement in ddl_create_indexes(prefix, db.dialect, tables):
            cur.execute(statement)


def load_audit(db: Database, log: EventLog, prefix: str, upto: int, *,
               wanted: Callable[[], bool] = lambda: True) -> int:
    """Fill ``tx_audit`` of the emptied idle set ``prefix`` from the log up to ``upto``, then
    build its indexes; returns the rows loaded. ``wanted()`` is asked inside every write
    transaction: once it says no, nothing more is written (:class:`AuditLoadFailed`)."""
    statements = SqlStatements(build_schema(prefix), db.dialect)
    audit, rows, count, due = AuditFold(), [], 0, AUDIT_PAGE_ROWS

    def still_wanted() -> None:
        if not wanted():
            raise AuditLoadFailed("the rebuild this audit load was part of has ended")

    def write(page: list[dict[str, Any]], *, wait: bool) -> int | None:
        """The rows written, or None: the writer lock is busy (the rebuild is loading)."""
        try:
            with db.transaction(write=True, wait=wait) as cur:
                still_wanted()
                return bulk_insert(cur, statements, "tx_audit", page)
        except WriterBusy:
            return None

    with gc_pause.paused():
        for pos, topic, fields, at in iterate_fields(log, upto=upto):
            rows.append(audit.row(pos, topic, fields, at))
            if len(rows) >= due:  # read on while the rebuild holds SQLite's one writer lock
                written = write(rows, wait=len(rows) >= MAX_PENDING_AUDIT_ROWS)
                if written is None:
                    due += AUDIT_PAGE_ROWS
                else:
                    count, rows, due = count + written, [], AUDIT_PAGE_ROWS
        count += (write(rows, wait=True) or 0) if rows else 0
    with db.transaction(write=True) as cur:
        still_wanted()
        for statement in ddl_create_indexes(prefix, db.dialect, ["tx_audit"]):
            cur.execute(statement)
    return count


def _normalized(table: str, rows: list[dict[str, Any]], cols: tuple[str, ...]
                ) -> dict[tuple[Any, ...], dict[str, Any]]:
    out = {}
    for row in rows:
        clean = decode_row(encode_row(row, cols), cols)
        out[row_key(table, clean)] = clean
    return out


def verify(db: Database, log: EventLog) -> tuple[list[dict[str, Any]], int]:
    """Shadow rebuild diffed against the live tables: (differences, position checked)."""
    live_rows: dict[str, list[dict[str, Any]]] = {}
    with db.transaction(write=False, snapshot=True) as cur:
        prefix, _ = read_pointer(cur)
        statements = _statements(db)[prefix]
        for table in TABLE_NAMES:
            cols = statements.cols[table]
            cur.execute(f"SELECT {', '.join(chr(34) + c + chr(34) for c in cols)} "
                        f"FROM {statements.table(table)}")
            live_rows[table] = [decode_row(tuple(r.values()) if isinstance(r, dict) else r, cols)
                                for r in cur.fetchall()]
        position = SqlRowStore(cur, statements).tracked_position()
    shadow, _, _ = fold(log, upto=position)
    schema = build_schema(prefix)
    differences: list[dict[str, Any]] = []
    for table in TABLE_NAMES:
        cols = columns(schema, table)
        live = _normalized(table, live_rows[table], cols)
        rebuilt = _normalized(table, shadow.all_rows(table), cols)
        differences += _diff(table, live, rebuilt)
    return differences[:MAX_DIFFERENCES], position


def _diff(table: str, live: dict[Any, dict[str, Any]], rebuilt: dict[Any, dict[str, Any]]
          ) -> list[dict[str, Any]]:
    out = []
    for key in sorted(live.keys() | rebuilt.keys(), key=repr):
        a, b = live.get(key), rebuilt.get(key)
        if a == b:
            continue
        changed = sorted(c for c in (a or b or {}) if (a or {}).get(c) != (b or {}).get(c))
        out.append({"table": table, "key": list(key), "columns": changed,
                    "live": _printable(a), "rebuilt": _printable(b)})
    return out


def _printable(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in row.items()}


def scratch_engine(store: MemoryRowStore) -> Engine:
    """An in-memory SQLite database holding ``store``'s rows behind the usual views."""
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    db = Database(engine)
    prefix = SET_PREFIXES[0]
    statements = SqlStatements(build_schema(prefix), "sqlite")
    with db.transaction(write=True) as cur:
        for statement in [*ddl_create_set(prefix, "sqlite"), *ddl_views(prefix)]:
            cur.execute(statement)
        for table in TABLE_NAMES:
            bulk_insert(cur, statements, table, store.all_rows(table))
    return engine


__all__ = ["PRIMARY_KEYS", "AuditLoad", "AuditLoadFailed", "AuditLoader", "EventLog",
           "RebuildRaced", "catch_up", "fold", "load_audit", "rebuild", "scratch_engine", "verify"]
