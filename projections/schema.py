"""Read-model tables (SQLAlchemy Core): one definition, DDL for SQLite and PostgreSQL.

Tables can be created under a name prefix so that a rebuild fills fresh tables beside the live
ones and swaps them in one transaction (blue/green).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from ledger.rules import OutputCategory

SET_PREFIXES: tuple[str, str] = ("a_", "b_")
"""Two table sets: one live, one for the next rebuild. Readers use views named without prefix."""
POINTER_TABLE = "ledger_projection_pointer"
LAYOUT_TABLE = "ledger_projection_layout"
LAYOUT_VERSION = 7
"""The layout of the table sets below; a set laid out under another version is rebuilt from the
log before it is used (history: 1 - outputs held their transaction's state; 2 - they do not, so a
state change that leaves an output's category alone writes no output row; 3 - nor an action row
whose status it leaves alone, so ``actions.position`` is the last event that changed the row;
4 - on SQLite, ``transactions`` rows live in creation order, see :data:`CREATION_ORDERED`;
5 - ``outputs.spender_user``: every user's row of an outpoint shows its spender;
6 - no ``meta`` row holds the tracked position: the newest ``tx_audit`` row is it, ADR 0012;
7 - the rare-event audit index's condition is a chain of ``<>``, see :data:`RARE_AUDIT_EVENT`)."""
JSON_COLUMNS = frozenset({"tags", "labels", "inputs", "outputs", "details_json", "evidence"})
CREATION_ORDERED: frozenset[str] = frozenset({"transactions"})
"""Tables whose SQLite rows live in rowid (creation) order, their key in a separate index, and
that a rebuild loads in creation order. Their rows are large (a raw transaction) and the rows a
block or a reorg changes were mostly created together, so they share pages: a block promoting
1,000 transactions writes about 125 pages of ``transactions`` instead of one per row."""


def _sqlite_storage(name: str) -> dict[str, Any]:
    """How SQLite stores table ``name``: in its primary-key b-tree (``WITHOUT ROWID``: one
    b-tree less to write per row change), or in creation order (:data:`CREATION_ORDERED`)."""
    return {} if name in CREATION_ORDERED else {"sqlite_with_rowid": False}


SQLITE_ROWID = BigInteger().with_variant(Integer(), "sqlite")
"""An INTEGER PRIMARY KEY on SQLite is the rowid itself (no separate key index)."""


def _partial(condition: str) -> dict[str, Any]:
    """A partial index: rows outside ``condition`` cost no index write at all."""
    return {"sqlite_where": text(condition), "postgresql_where": text(condition)}


def _transactions(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}transactions", md,
        Column("txid", String(64), primary_key=True),
        Column("state", String(16), nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("was_broadcast", Boolean, nullable=False),
        Column("is_coinbase", Boolean, nullable=False),
        Column("height", BigInteger),
        Column("block_hash", String(64)),
        Column("merkle_root", String(64)),
        Column("raw_tx", LargeBinary),
        Column("inputs", Text, nullable=False),
        Column("origin_user", Text),
        Column("origin_reference", Text),
        Column("position", BigInteger, nullable=False),
        Column("state_position", BigInteger, nullable=False),
        Column("proof_position", BigInteger),
        Column("created_at", Text, nullable=False),
        Column("updated_at", Text, nullable=False),
        Index(f"{p}ix_transactions_unconfirmed", "height", **_partial("state = 'unconfirmed'")),
        Index(f"{p}ix_transactions_block", "block_hash", **_partial("block_hash IS NOT NULL")),
        **_sqlite_storage("transactions"),
    )


def _outputs(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}outputs", md,
        Column("user", Text, primary_key=True),
        Column("txid", String(64), primary_key=True),
        Column("vout", BigInteger, primary_key=True),
        Column("satoshis", BigInteger, nullable=False),
        Column("locking_script", LargeBinary),
        Column("basket", Text, nullable=False),
        Column("tags", Text, nullable=False),
        Column("change", Boolean, nullable=False),
        Column("description", Text, nullable=False),
        Column("custom_instructions", Text),
        Column("is_coinbase", Boolean, nullable=False),
        Column("matures_at_height", BigInteger),
        Column("preserved", Boolean),
        Column("spender_user", Text),
        Column("spender_reference", Text),
        Column("spender_txid", String(64)),
        Column("quarantined", Boolean, nullable=False),
        Column("category", String(12), nullable=False),
        Column("spendable", Boolean, nullable=False),
        Column("evidence", Text, nullable=False),
        Column("position", BigInteger, nullable=False),
        # The hot query: a user's spendable outputs in a basket, largest first.
        Index(f"{p}ix_outputs_spendable", "user", "basket", "spendable", "satoshis", "txid",
              "vout"),
        Index(f"{p}ix_outputs_outpoint", "txid", "vout"),
        Index(f"{p}ix_outputs_maturity", "matures_at_height",
              **_partial("matures_at_height IS NOT NULL")),
        **_sqlite_storage("outputs"),
    )


def balance_columns(category: str) -> tuple[str, str]:
    """The ``balances`` columns holding one output category's satoshis and output count."""
    return f"{category}_satoshis", f"{category}_outputs"


BALANCE_COUNTERS: tuple[str, ...] = tuple(
    column for category in OutputCategory for column in balance_columns(category.value))


def _balances(md: MetaData, p: str) -> Table:
    """Satoshis and output counts of each output category, per (user, basket): balances and page
    totals without scanning a user's outputs. One row per basket, so an output moving between
    categories is one row write."""
    return Table(
        f"{p}balances", md,
        Column("user", Text, primary_key=True),
        Column("basket", Text, primary_key=True),
        *(Column(name, BigInteger, nullable=False) for name in BALANCE_COUNTERS),
        **_sqlite_storage("balances"),
    )


def _output_tags(md: MetaData, p: str) -> Table:
    """One row per tag of an output: tag filters match tags exactly, in SQL, before paging."""
    return Table(
        f"{p}output_tags", md,
        Column("user", Text, primary_key=True),
        Column("tag", Text, primary_key=True),
        Column("txid", String(64), primary_key=True),
        Column("vout", BigInteger, primary_key=True),
        **_sqlite_storage("output_tags"),
    )


def _actions(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}actions", md,
        Column("user", Text, primary_key=True),
        Column("reference", Text, primary_key=True),
        Column("txid", String(64)),
        Column("status", String(16), nullable=False),
        Column("description", Text, nullable=False),
        Column("satoshis_delta", BigInteger, nullable=False),
        Column("is_outgoing", Boolean, nullable=False),
        Column("aborted", Boolean, nullable=False),
        Column("labels", Text, nullable=False),
        Column("inputs", Text, nullable=False),
        Column("outputs", Text, nullable=False),
        Column("position", BigInteger, nullable=False),
        Column("created_position", BigInteger, nullable=False),
        Index(f"{p}ix_actions_txid", "txid", **_partial("txid IS NOT NULL")),
        Index(f"{p}ix_actions_user_pos", "user", "created_position"),
        **_sqlite_storage("actions"),
    )


def _action_labels(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}action_labels", md,
        Column("user", Text, primary_key=True),
        Column("label", Text, primary_key=True),
        Column("reference", Text, primary_key=True),
        Column("created_position", BigInteger, nullable=False),
        Index(f"{p}ix_action_labels_pos", "user", "label", "created_position"),
        **_sqlite_storage("action_labels"),
    )


FREQUENT_AUDIT_EVENTS: tuple[str, ...] = (
    "action.created", "action.inputs_reserved", "reservation.reserved", "transaction.created",
    "action.signed", "processing.changed", "broadcast.result", "attempts.incremented",
    "proof.recorded", "action.internalized", "idempotency.key_used")
"""Audit events of every payment or receipt. A search for the newest of them scans back from
the newest audit row and meets them at once; the event index holds only the other, rarer
events an incident looks for (reorgs, rejections, aborts, quarantines), so an ordinary save
writes no page of it."""
RARE_AUDIT_EVENT = " AND ".join(f"\"event\" <> '{name}'" for name in FREQUENT_AUDIT_EVENTS)
"""The partial index's condition; a query names it verbatim to use the index. A chain of
``<>``, not ``NOT IN (...)``: SQLite builds an ephemeral table for an IN list each time a
statement runs, and evaluates the condition on every audit insert (an insert of two rows took
70 µs with it as ``NOT IN``, 47 µs as this chain, 40 µs without the index)."""


def _tx_audit(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}tx_audit", md,
        Column("audit_id", SQLITE_ROWID, primary_key=True, autoincrement=False),
        Column("txid", String(64)),
        Column("user", Text),
        Column("reference", Text),
        Column("event", String(40), nullable=False),
        Column("from_state", String(16)),
        Column("to_state", String(16)),
        Column("details_json", Text, nullable=False),
        Column("created_at", Text, nullable=False),
        Index(f"{p}ix_tx_audit_txid", "txid", "audit_id", **_partial("txid IS NOT NULL")),
        Index(f"{p}ix_tx_audit_rare_event", "event", "audit_id",
              **_partial(RARE_AUDIT_EVENT)),
    )


def _headers(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}headers", md,
        Column("hash", String(64), primary_key=True),
        Column("height", BigInteger, nullable=False),
        Column("prev_hash", String(64), nullable=False),
        Column("merkle_root", String(64), nullable=False),
        Column("active", Boolean, nullable=False),
        Column("position", BigInteger, nullable=False),
        Index(f"{p}ix_headers_height", "height", "active"),
        **_sqlite_storage("headers"),
    )


def _meta(md: MetaData, p: str) -> Table:
    return Table(
        f"{p}meta", md,
        Column("name", String(32), primary_key=True),
        Column("value", BigInteger),
        **_sqlite_storage("meta"),
    )


_BUILDERS = {
    "transactions": _transactions, "outputs": _outputs, "output_tags": _output_tags,
    "balances": _balances,
    "actions": _actions,
    "action_labels": _action_labels, "tx_audit": _tx_audit, "headers": _headers, "meta": _meta,
}
TABLE_NAMES: tuple[str, ...] = tuple(_BUILDERS)
PRIMARY_KEYS: Mapping[str, tuple[str, ...]] = {
    "transactions": ("txid",), "outputs": ("user", "txid", "vout"),
    "balances": ("user", "basket"), "output_tags": ("user", "tag", "txid", "vout"),
    "actions": ("user", "reference"), "action_labels": ("user", "label", "reference"),
    "tx_audit": ("audit_id",), "headers": ("hash",), "meta": ("name",),
}


COUNTERS: Mapping[str, tuple[str, ...]] = {"balances": BALANCE_COUNTERS}
"""Summary tables whose non-key columns are counters, changed only by adding to them."""


@dataclass(frozen=True)
class Schema:
    """One complete set of read-model tables under a name prefix."""

    prefix: str
    metadata: MetaData
    tables: Mapping[str, Table]

    def table(self, name: str) -> Table:
        return self.tables[name]


def build_schema(prefix: str) -> Schema:
    """The read-model tables named ``{prefix}{name}``."""
    md = MetaData()
    tables = {name: build(md, prefix) for name, build in _BUILDERS.items()}
    return Schema(prefix, md, tables)


def columns(schema: Schema, name: str) -> tuple[str, ...]:
    """Column names of one table, in definition order."""
    return tuple(c.name for c in schema.table(name).columns)
