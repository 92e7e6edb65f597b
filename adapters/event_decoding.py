"""Decoding stored events in bulk, for replays: the same domain events ``eventsourcing``'s mapper
makes, at about half its cost per event.

A rebuild, a catch-up page, ``verify`` and ``as_of`` decode every event of the log they read,
and the mapper's decoding (the standard ``json`` module with an object hook, then the event
object) is most of what a read of the log costs. :class:`BulkDecoder` parses with ``msgspec``
(whose integers, like ``json``'s, have no size limit) instead and builds the event object
directly, when it can promise the mapper's result; any other stored state goes through the
mapper itself. This module and :mod:`adapters.persistence` are the only ones that read stored
events without the mapper.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any
from uuid import UUID, SafeUUID

import msgspec
from eventsourcing.persistence import (
    DatetimeAsISO,
    JSONTranscoder,
    Mapper,
    StoredEvent,
    find_id_convertor,
)
from eventsourcing.utils import resolve_topic

EventRow = tuple[int, Any, int, str, bytes]
"""A stored event as a recorder's ``select_event_rows`` gives it: (notification id,
originator id as stored, originator version, topic, state)."""

_TYPE_KEY = b'"_type_"'
_ESCAPE = b"\\u"
_UUID_HEX_CHARS = 32


class BulkDecoder:
    """Turns stored event rows into domain events.

    Guarantees: ``decode(row)`` equals what the application's mapper makes of the same stored
    event, field for field and type for type. It parses a state with ``msgspec`` only when the
    state's one custom-typed value is the event's timestamp (the shape every ledger event has,
    see ADR 0001), it holds no ``\\u`` escape (so no key can hide from that check), and the
    mapper neither encrypts nor compresses; it upcasts as the mapper does. Anything else, and any
    state ``msgspec`` refuses (``NaN``, numbers out of a float's range), is decoded by the
    mapper."""

    def __init__(self, mapper: Mapper[Any]) -> None:
        self._mapper = mapper
        transcoder = mapper.transcoder
        self._fast = (mapper.cipher is None and mapper.compressor is None
                      and isinstance(transcoder, JSONTranscoder)
                      and type(transcoder.names.get("datetime_iso")) is DatetimeAsISO)
        self._classes: dict[str, tuple[type, Callable[[Any], Any], int]] = {}
        self._parse = msgspec.json.Decoder().decode

    def decode(self, row: EventRow) -> Any:
        """The domain event of one stored row."""
        _, originator_id, version, topic, state = row
        state = _bytes(state)
        parsed = self._parsed(topic, state)
        if parsed is None:
            return self._by_mapper(originator_id, version, topic, state)
        return self._event(row, *parsed)

    def fields(self, row: EventRow) -> tuple[str, dict[str, Any], str]:
        """One stored row as (topic, the event's fields, its timestamp as ISO text), without
        an event object: what :meth:`decode` would give as ``vars(event)`` and
        ``event.timestamp.isoformat()``, except that the fields may leave out the originator's
        id and version and the timestamp."""
        _, originator_id, version, topic, state = row
        state = _bytes(state)
        parsed = self._parsed(topic, state)
        if parsed is None:
            event = self._by_mapper(originator_id, version, topic, state)
        else:
            values, stamp = parsed
            if values.get("class_version", 1) == self._class(topic)[2]:  # nothing to upcast
                values.pop("class_version", None)
                del values["timestamp"]
                return topic, values, stamp
            event = self._event(row, values, stamp)  # upcast from the state parsed already
        return topic, vars(event), event.timestamp.isoformat()

    def _event(self, row: EventRow, values: dict[str, Any], stamp: str) -> Any:
        """The event of a parsed state, built as the mapper builds it: ids, version, then
        the class's upcasting, step for step."""
        _, originator_id, version, topic, _ = row
        cls, convert, class_version = self._class(topic)
        values["timestamp"] = datetime.fromisoformat(stamp)
        values["originator_id"] = convert(_uuid(originator_id))
        values["originator_version"] = version
        from_version = values.pop("class_version", 1)
        while from_version < class_version:
            getattr(cls, f"upcast_v{from_version}_v{from_version + 1}")(values)
            from_version += 1
        event: Any = object.__new__(cls)
        object.__setattr__(event, "__dict__", values)
        return event

    def _parsed(self, topic: str, state: bytes) -> tuple[dict[str, Any], str] | None:
        """The state's fields and its timestamp's ISO text (which ``isoformat()`` wrote), or
        None: the mapper must decode this state."""
        if not self._fast or state.count(_TYPE_KEY) != 1 or _ESCAPE in state:
            return None
        try:
            values: dict[str, Any] = self._parse(state)
        except msgspec.DecodeError:  # ValidationError is one
            return None
        stamp = values.get("timestamp")
        if (type(stamp) is not dict or len(stamp) != 2 or stamp.get("_type_") != "datetime_iso"
                or type(stamp.get("_data_")) is not str):
            return None
        return values, stamp["_data_"]

    def _class(self, topic: str) -> tuple[type, Callable[[Any], Any], int]:
        """The event class of a topic, its id convertor and its class version."""
        found = self._classes.get(topic)
        if found is None:
            cls = resolve_topic(topic)
            found = self._classes[topic] = (cls, find_id_convertor(cls, UUID),
                                            getattr(cls, "class_version", 1))
        return found

    def _by_mapper(self, originator_id: Any, version: int, topic: str, state: bytes) -> Any:
        stored = StoredEvent(originator_id=_uuid(originator_id), originator_version=version,
                             topic=topic, state=state)
        return self._mapper.to_domain_event(stored)


def _bytes(state: Any) -> bytes:
    """A stored state as ``bytes`` (a driver may give a ``memoryview``)."""
    return state if type(state) is bytes else bytes(state)


def _uuid(stored: Any) -> UUID:
    """An originator id as stored (a ``UUID`` from PostgreSQL, 32 hex digits from SQLite) as
    the ``UUID`` that ``UUID(text)`` makes, without its string clean-up when the text is
    already plain hex."""
    if type(stored) is UUID:
        return stored
    if type(stored) is str and len(stored) == _UUID_HEX_CHARS and stored.isalnum():
        made = object.__new__(UUID)
        object.__setattr__(made, "int", int(stored, 16))  # ValueError for non-hex, as UUID()
        object.__setattr__(made, "is_safe", SafeUUID.unknown)
        return made
    return UUID(stored)
