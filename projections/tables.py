"""Projection table sets, the pointer to the live set, and the reader views.

Two sets of tables (``a_*``, ``b_*``); the pointer row names the live one and the projection
mode. Views with plain names (``outputs``, ``tx_audit``, ...) always select from the live set, so
SQL readers and the query layer never see a half-built projection: a swap replaces the views and
the pointer in one transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex, CreateTable, DropTable

from projections.db import Database, Dialect
from projections.schema import (
    LAYOUT_TABLE,
    LAYOUT_VERSION,
    POINTER_TABLE,
    SET_PREFIXES,
    TABLE_NAMES,
    build_schema,
)

MODES = ("inline", "catchup")
_LAYOUT_DDL = (f'CREATE TABLE IF NOT EXISTS "{LAYOUT_TABLE}" ("prefix" VARCHAR(8) PRIMARY KEY, '
               '"version" INTEGER NOT NULL)')
_PG_SETUP_LOCK = 727_274_001


def _dialect(d: Dialect) -> Any:
    maker: Any = postgresql.dialect if d == "postgresql" else sqlite.dialect
    return maker()


def ddl_create_set(prefix: str, dialect: Dialect, *, indexes: bool = True) -> list[str]:
    """CREATE statements for one table set (idempotent), which also record its layout version;
    ``indexes=False`` leaves out the secondary indexes (a bulk load builds them afterwards, see
    :func:`ddl_create_indexes`)."""
    assert prefix in SET_PREFIXES
    schema, dia = build_schema(prefix), _dialect(dialect)
    out = [str(CreateTable(table, if_not_exists=True).compile(dialect=dia))
           for table in schema.tables.values()]
    out += [_LAYOUT_DDL,
            f'INSERT INTO "{LAYOUT_TABLE}" ("prefix", "version") VALUES '
            f"('{prefix}', {LAYOUT_VERSION}) ON CONFLICT (\"prefix\") DO UPDATE SET "
            '"version" = excluded."version"']
    return out + ddl_create_indexes(prefix, dialect) if indexes else out


def layout_version(cur: Any, dialect: Dialect, prefix: str) -> int | None:
    """The layout version set ``prefix`` was created under (None: before versions were kept)."""
    ph = "%s" if dialect == "postgresql" else "?"
    cur.execute(f'SELECT "version" FROM "{LAYOUT_TABLE}" WHERE "prefix" = {ph}', (prefix,))
    rows = cur.fetchall()
    if not rows:
        return None
    row = rows[0]
    return int(row["version"] if isinstance(row, dict) else row[0])


def ddl_create_indexes(prefix: str, dialect: Dialect,
                       tables: Iterable[str] = TABLE_NAMES) -> list[str]:
    """CREATE INDEX statements for one table set (idempotent), or for some of its tables."""
    schema, dia = build_schema(prefix), _dialect(dialect)
    return [str(CreateIndex(index, if_not_exists=True).compile(dialect=dia))
            for name in tables
            for index in sorted(schema.table(name).indexes, key=lambda i: str(i.name))]


def ddl_drop_set(prefix: str, dialect: Dialect) -> list[str]:
    schema, dia = build_schema(prefix), _dialect(dialect)
    return [str(DropTable(t, if_exists=True).compile(dialect=dia))
            for t in schema.tables.values()]


def ddl_views(prefix: str) -> list[str]:
    """Drop and recreate the reader views over set ``prefix``."""
    out = []
    for name in TABLE_NAMES:
        out.append(f'DROP VIEW IF EXISTS "{name}"')
        out.append(f'CREATE VIEW "{name}" AS SELECT * FROM "{prefix}{name}"')
    return out


def pointer_query(pg_schema: str | None = None, *, position: str | None = None) -> str:
    """The statement reading (live prefix, mode); ``pg_schema`` qualifies the table. With
    ``position`` (a set's :meth:`~projections.stores.SqlStatements.tracked_position` query) it
    reads that set's tracked position as a third column, in the same statement."""
    table = f'"{pg_schema}"."{POINTER_TABLE}"' if pg_schema else f'"{POINTER_TABLE}"'
    third = "" if position is None else f', ({position}) AS "position"'
    return f'SELECT "active", "mode"{third} FROM {table} WHERE "id" = 1'


def parse_pointer(rows: list[Any]) -> tuple[str, str]:
    """(live prefix, mode) from the result of :func:`pointer_query`."""
    assert rows, "projection pointer missing: open the ledger to set it up"
    row = rows[0]
    active, mode = (row["active"], row["mode"]) if isinstance(row, dict) else tuple(row)[:2]
    assert active in SET_PREFIXES and mode in MODES, (active, mode)
    return str(active), str(mode)


def read_pointer(cur: Any) -> tuple[str, str]:
    """(live prefix, mode) from inside a transaction."""
    cur.execute(pointer_query())
    return parse_pointer(cur.fetchall())


def ensure_tables(db: Database) -> tuple[str, str]:
    """Create the pointer, the first table set and the views if missing. Safe to race."""
    with db.transaction(write=True) as cur:
        if db.dialect == "postgresql":
            cur.execute(f"SELECT pg_advisory_xact_lock({_PG_SETUP_LOCK})")
        cur.execute(
            f'CREATE TABLE IF NOT EXISTS "{POINTER_TABLE}" ("id" INTEGER PRIMARY KEY, '
            '"active" VARCHAR(8) NOT NULL, "mode" VARCHAR(16) NOT NULL)')
        cur.execute(_LAYOUT_DDL)  # a database from before layout versions lacks it
        cur.execute(f'SELECT "active", "mode" FROM "{POINTER_TABLE}" WHERE "id" = 1')
        if cur.fetchone() is None:
            prefix = SET_PREFIXES[0]
            for statement in ddl_create_set(prefix, db.dialect):
                cur.execute(statement)
            for statement in ddl_views(prefix):
                cur.execute(statement)
            cur.execute(f'INSERT INTO "{POINTER_TABLE}" ("id", "active", "mode") '
                        f"VALUES (1, '{prefix}', 'inline')")
        return read_pointer(cur)


def set_mode(cur: Any, mode: str) -> None:
    assert mode in MODES
    cur.execute(f'UPDATE "{POINTER_TABLE}" SET "mode" = \'{mode}\' WHERE "id" = 1')


def other_prefix(prefix: str) -> str:
    a, b = SET_PREFIXES
    return b if prefix == a else a


def swap_to(cur: Any, prefix: str) -> None:
    """Make ``prefix`` live: views and pointer, inside the caller's transaction."""
    assert prefix in SET_PREFIXES
    for statement in ddl_views(prefix):
        cur.execute(statement)
    cur.execute(f'UPDATE "{POINTER_TABLE}" SET "active" = \'{prefix}\' WHERE "id" = 1')
