"""The event store as the projections read it, and the read model as the commands read it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine

from adapters.event_decoding import BulkDecoder
from projections.projector import Recorded


class StoreLog:
    """The log in position order, as the projections read it, from an ``eventsourcing``
    application's recorder.

    Guarantees: :meth:`read_fields` gives each event's topic, fields and timestamp text as the
    mapper would decode them from the recorder's notifications; it reads them through the
    recorder's ``select_event_rows`` and :class:`BulkDecoder`, without event objects. Events
    whose topic is in ``skip`` come back with empty fields (not decoded)."""

    def __init__(self, recorder: Any, mapper: Any, *, dialect: str):
        self._recorder = recorder
        self._mapper = mapper
        self._dialect = dialect
        self._decoder = BulkDecoder(mapper)

    def read_fields(self, after: int, limit: int, skip: frozenset[str] = frozenset()
                    ) -> list[Recorded]:
        found = self._recorder.select_event_rows(after, limit)
        fields = self._decoder.fields
        if skip:
            return [(row[0], row[3], {}, "") if row[3] in skip else (row[0], *fields(row))
                    for row in found]
        return [(row[0], *fields(row)) for row in found]

    def head(self) -> int:
        return int(self._recorder.max_notification_id() or 0)

    def decode(self, stored: Any) -> Any:
        return self._mapper.to_domain_event(stored)

    def lock_writers(self, cursor: Any) -> None:
        """Hold appends off for the rest of the caller's transaction (PostgreSQL: the same
        EXCLUSIVE lock every append takes; SQLite: the caller's BEGIN IMMEDIATE already does)."""
        if self._dialect == "postgresql":
            schema = self._recorder.datastore.schema
            table = self._recorder.events_table_name
            cursor.execute(f'LOCK TABLE "{schema}"."{table}" IN EXCLUSIVE MODE')


IN_LIST_KEYS = 500
"""Keys per ``IN`` list of a lookup (under SQLite's 999-parameter limit)."""


class SqlReadModel:
    """The projections as the command handlers consult them: a few fixed statements over the
    reader views, on raw DB-API connections (they run once or more per command)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        ph = self._ph = "%s" if engine.dialect.name == "postgresql" else "?"
        self._sql = {
            "output": 'SELECT "category", "satoshis" FROM "outputs" '
                      f'WHERE "user" = {ph} AND "txid" = {ph} AND "vout" = {ph}',
            "header": 'SELECT "hash", "height", "prev_hash", "merkle_root" FROM "headers" '
                      f'WHERE "height" = {ph} AND "active" = {ph}',
            "tip": f'SELECT "value" FROM "meta" WHERE "name" = {ph}',
            "anchored": f'SELECT "txid" FROM "transactions" WHERE "block_hash" = {ph} '
                        'ORDER BY "txid"',
            "unconfirmed": 'SELECT "txid" FROM "transactions" WHERE "state" = '
                           f"'unconfirmed' AND \"height\" < {ph} ORDER BY \"txid\"",
        }

    def _rows(self, name: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self._query(self._sql[name], params)

    def _query(self, statement: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        raw = self._engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute(statement, params)
            rows = [tuple(r) for r in cur.fetchall()]
            cur.close()
            raw.rollback()
            return rows
        finally:
            raw.close()

    def _query_in(self, head: str, keys: Sequence[str], tail: str = "") -> list[tuple[Any, ...]]:
        """Rows of ``{head} IN (keys...){tail}``, in lists of at most :data:`IN_LIST_KEYS`."""
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(keys), IN_LIST_KEYS):
            chunk = tuple(keys[start:start + IN_LIST_KEYS])
            rows += self._query(f'{head} IN ({", ".join([self._ph] * len(chunk))}){tail}', chunk)
        return rows

    def output_for_spend(self, user: str, txid: str, vout: int) -> tuple[str, int] | None:
        rows = self._rows("output", (user, txid, vout))
        return (str(rows[0][0]), int(rows[0][1])) if rows else None

    def active_header(self, height: int) -> dict[str, Any] | None:
        rows = self._rows("header", (height, True))
        return _header(rows[0]) if rows else None

    def tip_height(self) -> int | None:
        rows = self._rows("tip", ("tip_height",))
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    def anchored_txids(self, block_hash: str) -> list[str]:
        return [str(r[0]) for r in self._rows("anchored", (block_hash,))]

    def unconfirmed_below(self, height: int) -> list[str]:
        return [str(r[0]) for r in self._rows("unconfirmed", (height,))]

    def output_owners(self, outpoints: Sequence[str]) -> dict[str, str]:
        wanted = set(outpoints)
        txids = sorted({op.split(":", 1)[0] for op in wanted})
        found: dict[str, str] = {}
        # a transaction's rows come in one list, so "the first by name" holds across lists
        for txid, vout, user in self._query_in(
                'SELECT "txid", "vout", "user" FROM "outputs" WHERE "txid"', txids,
                ' ORDER BY "user"'):
            outpoint = f"{txid}:{int(vout)}"
            if outpoint in wanted:
                found.setdefault(outpoint, str(user))
        return found

    def known_headers(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        rows = self._query_in('SELECT "hash", "height", "prev_hash", "merkle_root" FROM "headers" '
                              'WHERE "hash"', list(dict.fromkeys(hashes)))
        return {row[0]: _header(row) for row in rows}


def _header(row: tuple[Any, ...]) -> dict[str, Any]:
    """A ``headers`` row (hash, height, prev_hash, merkle_root) as the chain reads headers."""
    hash_, height, prev, root = row
    return {"hash": hash_, "height": int(height), "prev_hash": prev, "merkle_root": root}


class BsvCodec:
    """The strict bsv-sdk wrapper behind the ledger's ``Codec`` port."""

    def parse_raw_tx(self, raw: bytes) -> Any:
        from adapters import bsv_codec
        return bsv_codec.parse_raw_tx(raw)

    def parse_bump(self, bump: bytes, txid: str) -> Any:
        from adapters import bsv_codec
        return bsv_codec.parse_bump(bump, txid)

    def parse_beef(self, beef: bytes) -> Any:
        from adapters import bsv_codec
        return bsv_codec.parse_beef(beef)

    def encode_beef(self, subject_raw: bytes, ancestors: list[tuple[bytes, bytes | None]]) -> bytes:
        from adapters import bsv_codec
        return bsv_codec.encode_atomic_beef(subject_raw, ancestors)
