"""The event store as the projections read it, and the read model as the commands read it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from projections import queries


class StoreLog:
    """Decoded events in position order from an ``eventsourcing`` application's recorder."""

    def __init__(self, recorder: Any, mapper: Any, *, dialect: str):
        self._recorder = recorder
        self._mapper = mapper
        self._dialect = dialect

    def read(self, after: int, limit: int) -> list[tuple[int, Any]]:
        found = self._recorder.select_notifications(start=after, limit=limit,
                                                    inclusive_of_start=False)
        return [(n.id, self._mapper.to_domain_event(n)) for n in found]

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


class SqlReadModel:
    """The projections as the command handlers consult them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def output_for_spend(self, user: str, txid: str, vout: int) -> tuple[str, int] | None:
        with self._engine.connect() as conn:
            return queries.output_for_spend(conn, user, txid, vout)

    def active_header(self, height: int) -> dict[str, Any] | None:
        with self._engine.connect() as conn:
            return queries.active_header(conn, height)

    def tip_height(self) -> int | None:
        with self._engine.connect() as conn:
            return queries.meta(conn, "tip_height")

    def anchored_txids(self, block_hash: str) -> list[str]:
        with self._engine.connect() as conn:
            return queries.anchored_txids(conn, block_hash)

    def unconfirmed_below(self, height: int) -> list[str]:
        with self._engine.connect() as conn:
            return queries.unconfirmed_below(conn, height)


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
