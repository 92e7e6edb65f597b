"""Row stores the projector writes through: in memory (rebuild, verify, as-of) and SQL (inline,
catch-up) over a raw DB-API cursor, so inline rows commit in the event store's own transaction.
"""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

from projections.projector import Row
from projections.schema import JSON_COLUMNS, PRIMARY_KEYS, Schema, columns

Dialect = Literal["sqlite", "postgresql"]
Key = tuple[Any, ...]
PREFETCH_CHUNK = 400
BOOL_COLUMNS = frozenset({"was_broadcast", "is_coinbase", "change", "preserved", "quarantined",
                          "spendable", "is_outgoing", "aborted", "active"})
_APPEND_ONLY = frozenset({"tx_audit", "action_labels"})


def row_key(table: str, row: Row) -> Key:
    return tuple(row[c] for c in PRIMARY_KEYS[table])


class MemoryRowStore:
    """All rows in dicts, with the secondary indexes the projector asks for."""

    def __init__(self) -> None:
        self.tables: dict[str, dict[Key, Row]] = defaultdict(dict)
        self.appended: dict[str, list[Row]] = defaultdict(list)
        self._outputs_by_txid: dict[str, set[Key]] = defaultdict(set)
        self._actions_by_txid: dict[str, set[Key]] = defaultdict(set)
        self._coinbase: set[Key] = set()

    def get(self, table: str, key: Key) -> Row | None:
        return self.tables[table].get(key)

    def put(self, table: str, row: Row) -> None:
        key = row_key(table, row)
        self.tables[table][key] = row
        if table == "outputs":
            self._outputs_by_txid[row["txid"]].add(key)
            if row["is_coinbase"]:
                self._coinbase.add(key)
        elif table == "actions" and row["txid"] is not None:
            self._actions_by_txid[row["txid"]].add(key)

    def append(self, table: str, row: Row) -> None:
        self.appended[table].append(row)

    def outputs_of_tx(self, txid: str) -> list[Row]:
        rows = self.tables["outputs"]
        return [rows[k] for k in sorted(self._outputs_by_txid.get(txid, ()))]

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
        if table in _APPEND_ONLY:
            return list(self.appended[table])
        return list(self.tables[table].values())


# --- SQL encoding ---------------------------------------------------------------------------

def encode_row(row: Row, cols: Sequence[str]) -> tuple[Any, ...]:
    """Python row -> DB parameters (JSON columns as text)."""
    return tuple(json.dumps(row[c], separators=(",", ":"), sort_keys=True)
                 if c in JSON_COLUMNS else row[c] for c in cols)


def decode_row(values: Sequence[Any], cols: Sequence[str]) -> Row:
    """DB values -> Python row (JSON parsed, booleans as bool, bytea as bytes)."""
    row: Row = {}
    for c, v in zip(cols, values, strict=True):
        if v is None:
            row[c] = None
        elif c in JSON_COLUMNS:
            row[c] = json.loads(v)
        elif c in BOOL_COLUMNS:
            row[c] = bool(v)
        elif isinstance(v, memoryview):
            row[c] = bytes(v)
        else:
            row[c] = v
    return row


def _q(name: str) -> str:
    return f'"{name}"'


class SqlStatements:
    """Hand-rolled SQL for one table set and dialect (portable upserts, quoted identifiers)."""

    def __init__(self, schema: Schema, dialect: Dialect) -> None:
        self.schema = schema
        self.dialect = dialect
        self.ph = "?" if dialect == "sqlite" else "%s"
        self.cols = {name: columns(schema, name) for name in schema.tables}

    def table(self, name: str) -> str:
        return _q(self.schema.table(name).name)

    @functools.cache  # noqa: B019 - a handful of statements per instance, instances live long
    def select(self, name: str, where: tuple[str, ...]) -> str:
        cols = ", ".join(_q(c) for c in self.cols[name])
        cond = " AND ".join(f"{_q(c)} = {self.ph}" for c in where)
        return f"SELECT {cols} FROM {self.table(name)} WHERE {cond}"

    @functools.cache  # noqa: B019
    def select_in(self, name: str, column: str, count: int) -> str:
        cols = ", ".join(_q(c) for c in self.cols[name])
        marks = ", ".join(self.ph for _ in range(count))
        return f"SELECT {cols} FROM {self.table(name)} WHERE {_q(column)} IN ({marks})"

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


def _values(row: Any, cols: Sequence[str]) -> Sequence[Any]:
    if isinstance(row, dict):
        return [row[c] for c in cols]
    return tuple(row)


class SqlRowStore:
    """Rows read on demand through a cursor, cached for the batch, written back by :meth:`flush`.

    One instance serves one database transaction (an inline save, or one catch-up page).
    """

    def __init__(self, cursor: Any, sql: SqlStatements) -> None:
        self._cur = cursor
        self._sql = sql
        self._cache: dict[str, dict[Key, Row | None]] = defaultdict(dict)
        self._dirty: dict[str, set[Key]] = defaultdict(set)
        self._appended: dict[str, list[Row]] = defaultdict(list)
        self._by_txid: dict[str, dict[str, set[Key]]] = {"outputs": defaultdict(set),
                                                         "actions": defaultdict(set)}
        self._loaded_txids: dict[str, set[str]] = {"outputs": set(), "actions": set()}
        self._coinbase_ranges: list[tuple[int, int]] = []

    def _fetch(self, table: str, statement: str, params: Sequence[Any]) -> Iterator[Row]:
        cols = self._sql.cols[table]
        self._cur.execute(statement, tuple(params))
        for raw in self._cur.fetchall():
            row = decode_row(_values(raw, cols), cols)
            key = row_key(table, row)
            cached = self._cache[table].get(key)
            if cached is None:
                self._remember(table, key, row)
                cached = row
            yield cached

    def _remember(self, table: str, key: Key, row: Row) -> None:
        self._cache[table][key] = row
        if table in self._by_txid and row.get("txid") is not None:
            self._by_txid[table][row["txid"]].add(key)

    def get(self, table: str, key: Key) -> Row | None:
        cache = self._cache[table]
        if key in cache:
            return cache[key]
        pk = PRIMARY_KEYS[table]
        found = list(self._fetch(table, self._sql.select(table, pk), key))
        if not found:
            cache[key] = None
            return None
        return found[0]

    def put(self, table: str, row: Row) -> None:
        key = row_key(table, row)
        self._remember(table, key, row)
        self._dirty[table].add(key)

    def append(self, table: str, row: Row) -> None:
        self._appended[table].append(row)

    def _of_tx(self, table: str, txid: str) -> list[Row]:
        if txid not in self._loaded_txids[table]:
            list(self._fetch(table, self._sql.select(table, ("txid",)), (txid,)))
            self._loaded_txids[table].add(txid)
        cache = self._cache[table]
        rows = [cache[k] for k in sorted(self._by_txid[table].get(txid, ()))]
        return [r for r in rows if r is not None and r.get("txid") == txid]

    def prefetch(self, txids: Iterable[str]) -> None:
        """Load the rows of many transactions in a few round trips (a reorg touches thousands)."""
        wanted = sorted(set(txids) - self._loaded_txids["outputs"])
        for start in range(0, len(wanted), PREFETCH_CHUNK):
            chunk = wanted[start:start + PREFETCH_CHUNK]
            for table in ("transactions", "outputs", "actions"):
                statement = self._sql.select_in(table, "txid", len(chunk))
                list(self._fetch(table, statement, chunk))
            for table in ("outputs", "actions"):
                self._loaded_txids[table].update(chunk)
            known = {k[0] for k, r in self._cache["transactions"].items() if r is not None}
            for txid in chunk:
                if txid not in known:
                    self._cache["transactions"][(txid,)] = None

    def outputs_of_tx(self, txid: str) -> list[Row]:
        return self._of_tx("outputs", txid)

    def actions_of_tx(self, txid: str) -> list[Row]:
        return self._of_tx("actions", txid)

    def maturing_coinbase(self, lo_exclusive: int, hi_inclusive: int) -> list[Row]:
        t = self._sql.table("outputs")
        cols = ", ".join(_q(c) for c in self._sql.cols["outputs"])
        ph = self._sql.ph
        statement = (f"SELECT {cols} FROM {t} WHERE {_q('matures_at_height')} > {ph} "
                     f"AND {_q('matures_at_height')} <= {ph}")
        list(self._fetch("outputs", statement, (lo_exclusive, hi_inclusive)))
        return [r for r in self._cache["outputs"].values()
                if r is not None and r["is_coinbase"] and r["matures_at_height"] is not None
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
        txids |= {k for k, r in self._cache["transactions"].items() if r is not None}
        rows = [self.get("transactions", k) for k in sorted(txids)]
        return [r for r in rows if r is not None and r[column] == value
                and (below is None or (r[below[0]] is not None and r[below[0]] < below[1]))]

    def flush(self) -> int:
        """Write every changed and appended row; returns the number of rows written."""
        written = 0
        for table, keys in self._dirty.items():
            cols = self._sql.cols[table]
            params = [encode_row(r, cols) for k in sorted(keys, key=repr)
                      if (r := self._cache[table][k]) is not None]
            if params:
                self._cur.executemany(self._sql.upsert(table), params)
                written += len(params)
        for table, rows in self._appended.items():
            if rows:
                cols = self._sql.cols[table]
                self._cur.executemany(self._sql.insert(table), [encode_row(r, cols) for r in rows])
                written += len(rows)
        self._dirty.clear()
        self._appended.clear()
        return written


def bulk_insert(cursor: Any, sql: SqlStatements, table: str, rows: Iterable[Row],
                page_rows: int = 5_000) -> int:
    """Insert rows into an empty table in pages; returns the count."""
    cols = sql.cols[table]
    statement = sql.insert(table)
    count = 0
    page: list[tuple[Any, ...]] = []
    for row in rows:
        page.append(encode_row(row, cols))
        if len(page) >= page_rows:
            cursor.executemany(statement, page)
            count += len(page)
            page = []
    if page:
        cursor.executemany(statement, page)
        count += len(page)
    return count
