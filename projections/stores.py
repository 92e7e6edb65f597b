"""Row stores the projector writes through: in memory (rebuild, verify, as-of) and SQL (inline,
catch-up) over a raw DB-API cursor, so inline rows commit in the event store's own transaction.

The SQL store is built for the inline path, where it runs inside every append: it reads the rows
a batch needs in a few statements (:class:`~projections.projector.ReadPlan`), and writes back
only what changed -- an ``UPDATE`` of the changed columns, so indexes on untouched columns cost
nothing. On PostgreSQL the reads and the writes each go out as one burst of a pipeline
(inline: bursts of the append's own pipeline, see :class:`~projections.inline.InlineProjection`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import operator
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from projections.projector import ReadPlan, Row
from projections.schema import COUNTERS, JSON_COLUMNS, PRIMARY_KEYS, Schema, columns

Dialect = Literal["sqlite", "postgresql"]
Key = tuple[Any, ...]
PREFETCH_CHUNK_KEYS = 300
"""Keys per ``IN (...)`` list: under SQLite's 999-parameter limit for three-column keys."""
BOOL_COLUMNS = frozenset({"was_broadcast", "is_coinbase", "change", "preserved", "quarantined",
                          "spendable", "is_outgoing", "aborted", "active"})
APPEND_ONLY = frozenset({"tx_audit", "action_labels", "output_tags"})
"""Tables the projector only appends to (kept in append order)."""
_BY_TXID = ("outputs", "actions")
UNREAD_COLUMNS: dict[str, frozenset[str]] = {"transactions": frozenset({"raw_tx"})}
"""Columns the projector writes when a row is created and never reads or changes again."""


def _key_getter(cols: tuple[str, ...]) -> Callable[[Row], Key]:
    if len(cols) == 1:
        only = cols[0]
        return lambda row: (row[only],)
    getter = operator.itemgetter(*cols)
    return lambda row: tuple(getter(row))


_KEY_OF: dict[str, Callable[[Row], Key]] = {t: _key_getter(c) for t, c in PRIMARY_KEYS.items()}


def row_key(table: str, row: Row) -> Key:
    return _KEY_OF[table](row)


class MemoryRowStore:
    """All rows in dicts, with the secondary indexes the projector asks for."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, Row]] = defaultdict(dict)
        self.appended: dict[str, list[Row]] = defaultdict(list)
        self._outputs_by_txid: dict[str, set[Key]] = defaultdict(set)
        self._outputs_by_outpoint: dict[tuple[str, int], set[Key]] = defaultdict(set)
        self._actions_by_txid: dict[str, set[Key]] = defaultdict(set)
        self._coinbase: set[Key] = set()

    def get(self, table: str, key: Key) -> Row | None:
        return self.tables[table].get(key)

    def put(self, table: str, row: Row) -> None:
        key = row_key(table, row)
        rows = self.tables[table]
        new = key not in rows
        rows[key] = row
        if table == "outputs":
            if new:  # an output row's txid, vout and coinbase flag never change
                self._outputs_by_txid[row["txid"]].add(key)
                self._outputs_by_outpoint[(row["txid"], row["vout"])].add(key)
                if row["is_coinbase"]:
                    self._coinbase.add(key)
        elif table == "actions" and row["txid"] is not None:
            self._actions_by_txid[row["txid"]].add(key)

    def append(self, table: str, row: Row) -> None:
        self.appended[table].append(row)

    def add(self, table: str, key: Key, deltas: dict[str, int]) -> None:
        rows = self.tables[table]
        row = rows.get(key)
        if row is None:
            row = rows[key] = {**dict(zip(PRIMARY_KEYS[table], key, strict=True)),
                               **dict.fromkeys(COUNTERS[table], 0)}
        for column, delta in deltas.items():
            row[column] += delta

    def outputs_of_tx(self, txid: str) -> list[Row]:
        rows = self.tables["outputs"]
        return [rows[k] for k in sorted(self._outputs_by_txid.get(txid, ()))]

    def outputs_at(self, txid: str, vout: int) -> list[Row]:
        rows = self.tables["outputs"]
        return [rows[k] for k in sorted(self._outputs_by_outpoint.get((txid, vout), ()))]

    def actions_of_tx(self, txid: str) -> list[Row]:
        rows = self.tables["actions"]
        return [rows[k] for k in sorted(self._actions_by_txid.get(txid, ()))]

    def maturing_coinbase(self, lo_exclusive: int, hi_inclusive: int) -> list[Row]:
        rows = self.tables["outputs"]
        found = [rows[k] for k in sorted(self._coinbase)]
        return [r for r in found if r["matures_at_height"] is not None
                and lo_exclusive < r["matures_at_height"] <= hi_inclusive]

    def all_rows(self, table: str) -> list[Row]:
        """Every row of ``table`` (append-only tables in append order)."""
        if table in APPEND_ONLY:
            return list(self.appended[table])
        return list(self.tables[table].values())

    def rows_by_key(self, table: str) -> list[Row]:
        """Every row of ``table`` in primary-key order (for a keyed table by sorting its keys,
        which costs less than sorting the rows by a key function; the audit rows, appended in
        position order, are sorted already, which a sort finds in one pass)."""
        if table in APPEND_ONLY:
            return sorted(self.appended[table], key=_KEY_OF[table])
        rows = self.tables[table]
        return [rows[key] for key in sorted(rows)]


# --- SQL encoding ---------------------------------------------------------------------------

def _json_encoder() -> Callable[[Any], str]:
    """Compact JSON with sorted keys, as ``json.dumps(v, separators=(",", ":"),
    sort_keys=True, ensure_ascii=False)`` would write it (numbers may be spelled differently:
    ``1.5e-7``), made by ``msgspec`` at a fifth of the cost. A value ``msgspec`` cannot write
    (a dict with other than string keys) goes to ``json``. Rows hold JSON values only (the
    projector builds them from checked commands), so what ``msgspec`` would write beyond
    ``json`` never arises: ``null`` for a NaN, an array for a set."""
    fast = msgspec.json.Encoder(order="sorted").encode
    standard = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode

    def to_json(value: Any) -> str:
        try:
            return fast(value).decode()
        except TypeError:
            return standard(value)

    return to_json


_to_json = _json_encoder()
_parse_json = msgspec.json.Decoder().decode


def _from_json(text: str) -> Any:
    """A JSON column's value, parsed by ``msgspec`` (a quarter of ``json``'s cost); text it
    refuses (a NaN an older version wrote) is parsed by ``json``."""
    try:
        return _parse_json(text)
    except msgspec.DecodeError:
        return json.loads(text)


@functools.cache
def _row_encoder(cols: tuple[str, ...]) -> Callable[[Row], tuple[Any, ...]]:
    """An encoder for rows of these columns: values in order, JSON columns as text."""
    getter = operator.itemgetter(*cols)
    json_at = tuple(i for i, c in enumerate(cols) if c in JSON_COLUMNS)
    if len(cols) == 1:
        return lambda row: (_to_json(row[cols[0]]) if json_at else row[cols[0]],)
    if not json_at:
        return lambda row: tuple(getter(row))

    def encode(row: Row) -> tuple[Any, ...]:
        values = list(getter(row))
        for i in json_at:
            values[i] = _to_json(values[i])
        return tuple(values)

    return encode


def encode_row(row: Row, cols: Sequence[str]) -> tuple[Any, ...]:
    """Python row -> DB parameters (JSON columns as text)."""
    return _row_encoder(tuple(cols))(row)


@functools.cache
def _column_kinds(cols: tuple[str, ...]) -> tuple[tuple[int, ...], tuple[int, ...],
                                                   tuple[int, ...]]:
    """Positions of the JSON, the boolean and the other columns (the other ones may come back
    from a driver as ``memoryview``), worked out once per column set."""
    json_at = tuple(i for i, c in enumerate(cols) if c in JSON_COLUMNS)
    bool_at = tuple(i for i, c in enumerate(cols) if c in BOOL_COLUMNS and c not in JSON_COLUMNS)
    other_at = tuple(i for i in range(len(cols)) if i not in json_at and i not in bool_at)
    return json_at, bool_at, other_at


def _typed(values: Sequence[Any], cols: tuple[str, ...]) -> tuple[list[Any], tuple[int, ...]]:
    """DB values with booleans as bool and bytea as bytes (JSON still text), and the JSON
    columns' positions: the one place stored values get their Python types back."""
    json_at, bool_at, other_at = _column_kinds(cols)
    out = list(values)
    if len(out) != len(cols):
        raise ValueError(f"{len(out)} values for {len(cols)} columns")
    for i in bool_at:
        if out[i] is not None:
            out[i] = bool(out[i])
    for i in other_at:
        if type(out[i]) is memoryview:
            out[i] = bytes(out[i])
    return out, json_at


def _split(values: Sequence[Any], cols: Sequence[str]) -> tuple[Row, dict[str, str]]:
    """DB values -> (plain columns typed: booleans as bool, bytea as bytes; JSON columns as
    their text)."""
    key = tuple(cols)
    out, json_at = _typed(values, key)
    raw_json = {key[i]: out[i] for i in json_at if out[i] is not None}
    return {c: v for c, v in zip(key, out, strict=True) if c not in raw_json}, raw_json


def decode_row(values: Sequence[Any], cols: Sequence[str]) -> Row:
    """DB values -> Python row (JSON parsed, booleans as bool, bytea as bytes)."""
    key = tuple(cols)
    out, json_at = _typed(values, key)
    for i in json_at:
        if out[i] is not None:
            out[i] = _from_json(out[i])
    return dict(zip(key, out, strict=True))


class LazyRow(dict[str, Any]):
    """A row read from SQL whose JSON columns are decoded on first access (a reorg reads
    thousands of rows and looks at few of their JSON columns). A decoded value is recorded in
    the row's snapshot of its stored state too, so it does not count as a change."""

    __slots__ = ("assigned", "raw_json", "snapshot")

    def __init__(self, values: dict[str, Any], raw_json: dict[str, str]) -> None:
        super().__init__(values)
        self.raw_json = raw_json
        self.snapshot: dict[str, Any] = dict(values)
        self.assigned: set[str] = set()
        """Columns the projector assigned since the row was stored: the only ones that can
        differ from the snapshot."""

    def __setitem__(self, column: str, value: Any) -> None:
        self.assigned.add(column)
        dict.__setitem__(self, column, value)

    def __missing__(self, column: str) -> Any:
        value = _from_json(self.raw_json.pop(column))  # KeyError: no such column
        dict.__setitem__(self, column, value)
        self.snapshot[column] = value
        return value

    def stored(self) -> None:
        """The row as it is now has been written."""
        for column in self.assigned:
            self.snapshot[column] = dict.__getitem__(self, column)
        self.assigned.clear()


def decode_lazy(values: Sequence[Any], cols: Sequence[str]) -> LazyRow:
    """DB values -> :class:`LazyRow` (JSON columns kept as text until read)."""
    return LazyRow(*_split(values, cols))


def _q(name: str) -> str:
    return f'"{name}"'


class SqlStatements:
    """Hand-rolled SQL for one table set and dialect (portable upserts, quoted identifiers).

    ``pg_schema`` qualifies every table name, so statements work on a connection whose
    ``search_path`` is not the ledger's (the event store's own connections).
    """

    def __init__(self, schema: Schema, dialect: Dialect, *, pg_schema: str | None = None) -> None:
        self.schema = schema
        self.dialect = dialect
        self.ph = "?" if dialect == "sqlite" else "%s"
        self.cols = {name: columns(schema, name) for name in schema.tables}
        self.read_cols = {name: tuple(c for c in cols if c not in UNREAD_COLUMNS.get(name, ()))
                          for name, cols in self.cols.items()}
        """What the projector reads back: bulky columns it only ever writes are left out."""
        self.read_order = {name: {c: i for i, c in enumerate(cols)}
                           for name, cols in self.read_cols.items()}
        """Each read column's place in :attr:`read_cols` (changed columns are listed in it)."""
        self._qualifier = f"{_q(pg_schema)}." if pg_schema and dialect == "postgresql" else ""

    def table(self, name: str) -> str:
        return self._qualifier + _q(self.schema.table(name).name)

    @functools.cache  # noqa: B019 - a handful of statements per instance, instances live long
    def select(self, name: str, where: tuple[str, ...]) -> str:
        cols = ", ".join(_q(c) for c in self.read_cols[name])
        cond = " AND ".join(f"{_q(c)} = {self.ph}" for c in where)
        return f"SELECT {cols} FROM {self.table(name)} WHERE {cond}"

    def tracked_position(self) -> str:
        """The set's tracked position: its newest audit row (ADR 0012; an index's last key)."""
        return f'SELECT max("audit_id") AS "position" FROM {self.table("tx_audit")}'

    @functools.cache  # noqa: B019
    def select_keys(self, name: str, key_columns: tuple[str, ...], count: int) -> str:
        """Rows whose ``key_columns`` equal one of ``count`` parameter tuples."""
        cols = ", ".join(_q(c) for c in self.read_cols[name])
        if len(key_columns) == 1:
            marks = ", ".join(self.ph for _ in range(count))
            return f"SELECT {cols} FROM {self.table(name)} WHERE {_q(key_columns[0])} IN ({marks})"
        # A join, not ``(a, b) IN (VALUES ...)``: SQLite scans the whole table for a row-value
        # IN list of two or more tuples, and looks each key up in the primary key for this.
        cols = ", ".join(f"t.{_q(c)}" for c in self.read_cols[name])
        one = "(" + ", ".join(self.ph for _ in key_columns) + ")"
        values = ", ".join(one for _ in range(count))
        on = " AND ".join(f"t.{_q(c)} = k.column{i}" for i, c in enumerate(key_columns, 1))
        return f"SELECT {cols} FROM (VALUES {values}) AS k JOIN {self.table(name)} AS t ON {on}"

    @functools.cache  # noqa: B019
    def insert(self, name: str) -> str:
        cols = self.cols[name]
        marks = ", ".join(self.ph for _ in cols)
        return f"INSERT INTO {self.table(name)} ({', '.join(_q(c) for c in cols)}) VALUES ({marks})"

    @functools.cache  # noqa: B019
    def upsert(self, name: str) -> str:
        pk = PRIMARY_KEYS[name]
        rest = [c for c in self.cols[name] if c not in pk]
        sets = ", ".join(f"{_q(c)} = excluded.{_q(c)}" for c in rest)
        conflict = ", ".join(_q(c) for c in pk)
        return f"{self.insert(name)} ON CONFLICT ({conflict}) DO UPDATE SET {sets}"

    @functools.cache  # noqa: B019
    def update(self, name: str, changed: tuple[str, ...]) -> str:
        sets = ", ".join(f"{_q(c)} = {self.ph}" for c in changed)
        cond = " AND ".join(f"{_q(c)} = {self.ph}" for c in PRIMARY_KEYS[name])
        return f"UPDATE {self.table(name)} SET {sets} WHERE {cond}"

    @functools.cache  # noqa: B019
    def add(self, name: str, changed: tuple[str, ...]) -> str:
        """Insert a summary row (every counter given), or add to the ``changed`` counters."""
        pk = PRIMARY_KEYS[name]
        cols = (*pk, *COUNTERS[name])
        marks = ", ".join(self.ph for _ in cols)
        sets = ", ".join(f"{_q(c)} = {self.table(name)}.{_q(c)} + excluded.{_q(c)}"
                         for c in changed)
        return (f"INSERT INTO {self.table(name)} ({', '.join(_q(c) for c in cols)}) "
                f"VALUES ({marks}) ON CONFLICT ({', '.join(_q(c) for c in pk)}) DO UPDATE SET {sets}")


def _values(row: Any, cols: Sequence[str]) -> Sequence[Any]:
    if isinstance(row, dict):
        return [row[c] for c in cols]
    return tuple(row)


@dataclass
class PendingReads:
    """Reads :meth:`SqlRowStore.send_reads` sent: the statements, their answers to come, and
    how many of them (first) were the caller's own."""

    queries: list[tuple[str, str, tuple[Any, ...], list[Key]]]
    answers: list[Any]
    also: int


class SqlRowStore:
    """Rows read through a cursor, cached for the batch, written back by :meth:`flush`.

    One instance serves one database transaction (an inline save, or one catch-up page). Each
    row read keeps its stored encoding, so :meth:`flush` writes only the columns that changed.
    """

    def __init__(self, cursor: Any, sql: SqlStatements) -> None:
        self._cur = cursor
        self._sql = sql
        self._cache: dict[str, dict[Key, Row | None]] = defaultdict(dict)
        self._stored: dict[str, dict[Key, dict[str, Any]]] = defaultdict(dict)
        """A shallow copy of each row read or written, as the database now holds it (the
        projector replaces values, never mutates them in place, so an unchanged column still
        holds the very same object). A :class:`LazyRow` shares it as its snapshot."""
        self._dirty: dict[str, set[Key]] = defaultdict(set)
        self._appended: dict[str, list[Row]] = defaultdict(list)
        self._added: dict[str, dict[Key, dict[str, int]]] = defaultdict(dict)
        self._absent: dict[str, set[Key]] = defaultdict(set)
        """Keys looked up and found missing before this batch put them: inserted, not upserted."""
        self._by_txid: dict[str, dict[str, set[Key]]] = {t: defaultdict(set) for t in _BY_TXID}
        self._loaded_txids: dict[str, set[str]] = {t: set() for t in _BY_TXID}
        self._loaded_outpoints: set[tuple[str, int]] = set()
        """Outpoints whose output rows (every user's) are all cached."""
        self._by_outpoint: dict[tuple[str, int], set[Key]] = defaultdict(set)

    def rebind(self, cursor: Any) -> None:
        """Serve the next transaction: this store's rows are still what the database holds
        (the caller has checked that nobody wrote since it last flushed and committed)."""
        assert not self._dirty and not self._appended and not self._added
        self._cur = cursor

    def tracked_position(self) -> int:
        """Every event up to this log position is projected into the set (0: none is), as
        stored: a batch's own audit rows count once it has flushed."""
        self._cur.execute(self._sql.tracked_position())
        rows = self._cur.fetchall()
        value = _values(rows[0], ("position",))[0] if rows else None
        return 0 if value is None else int(value)

    @property
    def cached_rows(self) -> int:
        return sum(len(rows) for rows in self._cache.values())

    # --- reading ---------------------------------------------------------------------------

    def _pipeline(self) -> Any:
        """PostgreSQL: send a burst of statements without waiting for each answer."""
        if self._sql.dialect == "postgresql":
            return self._cur.connection.pipeline()
        return contextlib.nullcontext()

    def _cursor(self) -> Any:
        return self._cur.connection.cursor() if self._sql.dialect == "postgresql" else self._cur

    def _remember(self, table: str, raw: Any) -> Row:
        cols = self._sql.read_cols[table]
        values = tuple(_values(raw, cols))
        row = decode_lazy(values, cols)
        key = row_key(table, row)
        cached = self._cache[table].get(key)
        if cached is not None:
            return cached  # this batch may have changed it already: the cached row wins
        self._cache[table][key] = row
        self._stored[table][key] = row.snapshot
        self._index(table, key, row)
        return row

    def _index(self, table: str, key: Key, row: Row) -> None:
        """Cached rows by transaction (outputs, actions) and by outpoint (outputs)."""
        if table in self._by_txid and row.get("txid") is not None:
            self._by_txid[table][row["txid"]].add(key)  # an action's txid appears on signing
        if table == "outputs":
            self._by_outpoint[(key[1], key[2])].add(key)

    def _fetch(self, table: str, statement: str, params: Sequence[Any]) -> list[Row]:
        self._cur.execute(statement, tuple(params))
        return [self._remember(table, raw) for raw in self._cur.fetchall()]

    def get(self, table: str, key: Key) -> Row | None:
        cache = self._cache[table]
        if key in cache:
            return cache[key]
        if table == "outputs" and (key[1] in self._loaded_txids["outputs"]
                                   or (key[1], key[2]) in self._loaded_outpoints):
            return None  # every output row of that transaction (or outpoint) is loaded
        found = self._fetch(table, self._sql.select(table, PRIMARY_KEYS[table]), key)
        if not found:
            cache[key] = None
        return found[0] if found else None

    def prefetch(self, plan: ReadPlan, also: Sequence[tuple[str, tuple[Any, ...]]] = ()
                 ) -> list[list[Any]]:
        """Read every row ``plan`` names (PostgreSQL: in one round trip), and run the ``also``
        statements in the same burst; returns their raw result rows."""
        with self._pipeline():
            pending = self.send_reads(plan, also)
        return self.receive_reads(pending)

    def send_reads(self, plan: ReadPlan, also: Sequence[tuple[str, tuple[Any, ...]]] = ()
                   ) -> PendingReads:
        """Send the reads of :meth:`prefetch` without waiting for their answers (PostgreSQL:
        they arrive with the caller's next pipeline sync; SQLite: they are read at once).
        :meth:`receive_reads` takes them in."""
        queries: list[tuple[str, str, tuple[Any, ...], list[Key]]] = [
            ("", statement, params, []) for statement, params in also]
        for table, keys in plan.new_keys.items():
            for key in keys:
                self._cache[table].setdefault(key, None)
        for table in _BY_TXID:
            self._loaded_txids[table].update(plan.new_txids)
        unread = sorted(op for op in plan.outpoint_rows - self._loaded_outpoints
                        if op[0] not in self._loaded_txids["outputs"])
        for start in range(0, len(unread), PREFETCH_CHUNK_KEYS):
            ops = unread[start:start + PREFETCH_CHUNK_KEYS]
            queries.append(("outputs", self._sql.select_keys("outputs", ("txid", "vout"),
                                                             len(ops)),
                            tuple(v for op in ops for v in op), []))
        self._loaded_outpoints.update(unread)
        for table, keys in plan.keys.items():
            wanted = sorted((k for k in keys if k not in self._cache[table]), key=repr)
            pk = PRIMARY_KEYS[table]
            for start in range(0, len(wanted), PREFETCH_CHUNK_KEYS):
                chunk = wanted[start:start + PREFETCH_CHUNK_KEYS]
                params = tuple(v for k in chunk for v in k)
                queries.append((table, self._sql.select_keys(table, pk, len(chunk)), params, chunk))
        wanted_txids = {table: sorted(plan.txids.get(table, set()) - self._loaded_txids[table])
                        for table in _BY_TXID}
        for table, txids in wanted_txids.items():
            for start in range(0, len(txids), PREFETCH_CHUNK_KEYS):
                some = txids[start:start + PREFETCH_CHUNK_KEYS]
                queries.append((table, self._sql.select_keys(table, ("txid",), len(some)),
                                tuple(some), []))
        for table, txids in wanted_txids.items():
            self._loaded_txids[table].update(txids)
        answers = [self._send(statement, params) for _, statement, params, _ in queries]
        return PendingReads(queries, answers, len(also))

    def receive_reads(self, pending: PendingReads) -> list[list[Any]]:
        """Take in the answers of :meth:`send_reads`: rows are cached; the raw result rows
        of its ``also`` statements come back."""
        results: list[list[Any]] = []
        for (table, _, _, keys), answer in zip(pending.queries, pending.answers, strict=True):
            raws = _rows_of(answer)
            if not table:
                results.append(list(raws))
                continue
            for raw in raws:
                self._remember(table, raw)
            for key in keys:
                self._cache[table].setdefault(key, None)
        assert len(results) == pending.also
        return results

    def _send(self, statement: str, params: tuple[Any, ...]) -> Any:
        """Run one read of a burst: its cursor (PostgreSQL: the answer arrives with the
        burst's), or its rows (SQLite shares one cursor: each answer is read before the next
        statement)."""
        cur = self._cursor()
        cur.execute(statement, params)
        return cur if self._sql.dialect == "postgresql" else cur.fetchall()

    def _of_tx(self, table: str, txid: str) -> list[Row]:
        if txid not in self._loaded_txids[table]:
            self._fetch(table, self._sql.select(table, ("txid",)), (txid,))
            self._loaded_txids[table].add(txid)
        cache = self._cache[table]
        rows = [cache[k] for k in sorted(self._by_txid[table].get(txid, ()))]
        return [r for r in rows if r is not None and r.get("txid") == txid]

    def outputs_of_tx(self, txid: str) -> list[Row]:
        return self._of_tx("outputs", txid)

    def outputs_at(self, txid: str, vout: int) -> list[Row]:
        """Every user's output row of one outpoint, as this transaction sees them."""
        outpoint = (txid, vout)
        if outpoint not in self._loaded_outpoints and txid not in self._loaded_txids["outputs"]:
            self._fetch("outputs", self._sql.select("outputs", ("txid", "vout")), outpoint)
            self._loaded_outpoints.add(outpoint)
        cache = self._cache["outputs"]
        return [row for k in sorted(self._by_outpoint.get(outpoint, ()))
                if (row := cache.get(k)) is not None]

    def actions_of_tx(self, txid: str) -> list[Row]:
        return self._of_tx("actions", txid)

    def maturing_coinbase(self, lo_exclusive: int, hi_inclusive: int) -> list[Row]:
        t = self._sql.table("outputs")
        cols = ", ".join(_q(c) for c in self._sql.read_cols["outputs"])
        ph = self._sql.ph
        statement = (f"SELECT {cols} FROM {t} WHERE {_q('matures_at_height')} > {ph} "
                     f"AND {_q('matures_at_height')} <= {ph}")
        found = self._fetch("outputs", statement, (lo_exclusive, hi_inclusive))
        cache = self._cache["outputs"]
        # Rows this batch changed may not be stored yet; every other cached row is as stored.
        rows = {row_key("outputs", r): r for r in found}
        rows.update((k, r) for k in self._dirty["outputs"] if (r := cache[k]) is not None)
        return [r for _, r in sorted(rows.items())
                if r["is_coinbase"] and r["matures_at_height"] is not None
                and lo_exclusive < r["matures_at_height"] <= hi_inclusive]

    def transactions_where(self, column: str, value: Any, *, below: tuple[str, int] | None = None
                           ) -> list[Row]:
        """Transaction rows with ``column == value`` (and ``below[0] < below[1]``), as this
        transaction sees them: cached rows win over stored ones."""
        t, ph = self._sql.table("transactions"), self._sql.ph
        statement = f"SELECT {_q('txid')} FROM {t} WHERE {_q(column)} = {ph}"
        params: list[Any] = [value]
        if below is not None:
            statement += f" AND {_q(below[0])} < {ph}"
            params.append(below[1])
        self._cur.execute(statement, tuple(params))
        txids = {(_values(r, ("txid",))[0],) for r in self._cur.fetchall()}
        txids |= self._dirty["transactions"]  # changed in this batch, maybe not stored yet
        rows = [self.get("transactions", k) for k in sorted(txids)]
        return [r for r in rows if r is not None and r[column] == value
                and (below is None or (r[below[0]] is not None and r[below[0]] < below[1]))]

    # --- writing ---------------------------------------------------------------------------

    def put(self, table: str, row: Row) -> None:
        key = row_key(table, row)
        cache = self._cache[table]
        if key in cache and cache[key] is None:
            self._absent[table].add(key)
        cache[key] = row
        self._index(table, key, row)
        self._dirty[table].add(key)

    def append(self, table: str, row: Row) -> None:
        self._appended[table].append(row)

    def add(self, table: str, key: Key, deltas: dict[str, int]) -> None:
        pending = self._added[table].setdefault(key, {})
        for column, delta in deltas.items():
            pending[column] = pending.get(column, 0) + delta

    def _writes(self) -> list[tuple[str, list[tuple[Any, ...]]]]:
        """(statement, parameter rows) for everything this batch changed."""
        out: list[tuple[str, list[tuple[Any, ...]]]] = []
        for table, keys in self._dirty.items():
            cols, order = self._sql.cols[table], self._sql.read_order[table]
            encode = _row_encoder(cols)
            cache, stored_rows, absent = self._cache[table], self._stored[table], self._absent[table]
            fresh: list[tuple[Any, ...]] = []
            blind: list[tuple[Any, ...]] = []
            updates: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
            for key in keys:
                row = cache[key]
                assert row is not None
                stored = stored_rows.get(key)
                if stored is None:
                    (fresh if key in absent else blind).append(encode(row))
                    continue
                # A row as read knows which columns were assigned; a replacement row may
                # differ anywhere.
                candidates: Collection[str] = (
                    row.assigned if type(row) is LazyRow and row.snapshot is stored
                    else row.keys())
                changed = [c for c in candidates if c in order and (
                    c not in stored or (row[c] is not stored[c] and row[c] != stored[c]))]
                if changed:
                    changed.sort(key=order.__getitem__)
                    updates[tuple(changed)].append(
                        (*[_to_json(row[c]) if c in JSON_COLUMNS else row[c] for c in changed],
                         *key))
            if fresh:
                out.append((self._sql.insert(table), fresh))
            if blind:
                out.append((self._sql.upsert(table), blind))
            out += [(self._sql.update(table, changed), params) for changed, params in updates.items()]
        for table, rows in self._appended.items():
            if rows:
                encode = _row_encoder(self._sql.cols[table])
                out.append((self._sql.insert(table), [encode(r) for r in rows]))
        for table, added in self._added.items():
            # A net-zero change still writes: a rebuild creates the row when first touched too.
            counters = COUNTERS[table]
            grouped: dict[tuple[str, ...], list[tuple[Any, ...]]] = defaultdict(list)
            for key, deltas in added.items():
                grouped[tuple(sorted(deltas))].append(
                    (*key, *[deltas.get(c, 0) for c in counters]))
            out += [(self._sql.add(table, changed), params) for changed, params in grouped.items()]
        return out

    def flush(self, *, sync: bool = True) -> None:
        """Write every changed, appended and added row (PostgreSQL: one round trip). With
        ``sync=False`` the writes join the caller's pipeline instead, answered with its next
        sync (the inline hook's writes go with the COMMIT)."""
        writes = self._writes()
        with self._pipeline() if sync else contextlib.nullcontext():
            for statement, params in writes:
                self._cur.executemany(statement, params)
        for table, keys in self._dirty.items():
            cache, stored = self._cache[table], self._stored[table]
            for key in keys:
                row = cache[key]
                assert row is not None
                if isinstance(row, LazyRow) and row.snapshot is stored.get(key):
                    row.stored()
                else:  # a new or replaced row: keep it as a LazyRow from now on
                    kept = cache[key] = LazyRow(row, {})
                    stored[key] = kept.snapshot
        self._dirty.clear()
        self._appended.clear()
        self._added.clear()
        self._absent.clear()


def _rows_of(answer: Any) -> list[Any]:
    """The rows of an answer :meth:`SqlRowStore._send` gave."""
    return list(answer) if isinstance(answer, list) else list(answer.fetchall())


def bulk_insert(cursor: Any, sql: SqlStatements, table: str, rows: Iterable[Row],
                page_rows: int = 5_000) -> int:
    """Insert rows into an empty table; returns the count. PostgreSQL streams them through one
    ``COPY`` (about ten times the rate of batched INSERTs); SQLite inserts them in pages (each
    encoded just before it is written: ``rows`` may be long)."""
    encode = _row_encoder(sql.cols[table])
    if sql.dialect == "postgresql":
        return _copy_rows(cursor, sql, table, (encode(row) for row in rows))
    count, page = 0, []
    for row in rows:
        page.append(encode(row))
        if len(page) >= page_rows:
            count += insert_encoded(cursor, sql, table, page)
            page = []
    return count + (insert_encoded(cursor, sql, table, page) if page else 0)


def encode_rows(sql: SqlStatements, table: str, rows: Iterable[Row]) -> list[tuple[Any, ...]]:
    """Rows of ``table`` as the parameters :func:`insert_encoded` writes (done before the
    write transaction, so that another writer may use SQLite's one writer lock meanwhile)."""
    encode = _row_encoder(sql.cols[table])
    return [encode(row) for row in rows]


def insert_encoded(cursor: Any, sql: SqlStatements, table: str,
                   values: Sequence[tuple[Any, ...]], page_rows: int = 5_000) -> int:
    """Insert :func:`encode_rows` values into an empty table; returns the count."""
    if sql.dialect == "postgresql":
        return _copy_rows(cursor, sql, table, values)
    statement = sql.insert(table)
    for start in range(0, len(values), page_rows):
        cursor.executemany(statement, values[start:start + page_rows])
    return len(values)


def _copy_rows(cursor: Any, sql: SqlStatements, table: str,
               values: Iterable[tuple[Any, ...]]) -> int:
    cols = ", ".join(_q(c) for c in sql.cols[table])
    count = 0
    with cursor.copy(f"COPY {sql.table(table)} ({cols}) FROM STDIN") as copy:
        for row in values:
            copy.write_row(row)
            count += 1
    return count
