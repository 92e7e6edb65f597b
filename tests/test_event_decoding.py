"""The bulk decoder makes exactly the events ``eventsourcing``'s mapper makes.

Every replay (rebuild, catch-up, ``verify``, ``as_of``) reads the log through
:class:`adapters.event_decoding.BulkDecoder`, which parses states with ``msgspec`` where it can
promise the mapper's result. These tests hold it to the mapper, value for value and type for
type: on a real ledger log (both backends), on generated states with awkward values (huge
integers, floats, escapes, unicode, objects that look like typed values), and on stored
states the fast path must leave to the mapper. They also check the fast path is taken, so
the speed it exists for does not silently disappear.
"""

from __future__ import annotations

import json
import math
from typing import Any
from uuid import UUID, uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.event_decoding import BulkDecoder, _uuid
from adapters.world import World
from ledger import Ledger, ProviderResult
from ledger.transaction import TransactionAggregate

NOTE_TOPIC = TransactionAggregate.NoteRecorded.TOPIC


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down (``1 == 1.0 == True`` is not enough)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return bool(a == b)


def same_event(a: Any, b: Any) -> bool:
    return type(a) is type(b) and same(vars(a), vars(b))


class CountingMapper:
    """The application's mapper, counting the events it decodes."""

    def __init__(self, mapper: Any) -> None:
        self._mapper = mapper
        self.decoded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._mapper, name)

    def to_domain_event(self, stored: Any) -> Any:
        self.decoded += 1
        return self._mapper.to_domain_event(stored)


def stored_rows(led: Ledger) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = led._app.recorder.select_event_rows(0, 100_000)
    return rows


def history_with_awkward_details(led: Ledger, world: World) -> str:
    funds = world.fund("alice", [50_000, 7_000], labels=["naïve ☃"])
    raw, _ = world.spend("alice", "pay\u00e9", [funds[0]], [(30_000, world.script()), (19_000, None)],
                         description='quote " backslash \\ tab \t nul-free ünïcödé 💸')
    txid = led.sign_action("alice", "pay\u00e9", raw_tx=raw).txid
    led.transition(txid, "sending", reason="broadcast")
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="success",
                                               details={"big": 2**80, "neg": -(2**70),
                                                        "f": 1.5e-7, "s": "\u2028\x01"})])
    led.note(txid, "hand-check", n=18446744073709551616, ok=True, none=None,
             nested={"_type_": "only one key"}, text='"_type_"', deep=[[["x"]]])
    world.prove([txid])
    return txid


def test_every_event_of_a_real_log_decodes_as_the_mapper_decodes_it(led: Ledger,
                                                                    world: World) -> None:
    history_with_awkward_details(led, world)
    mapper = CountingMapper(led._app.mapper)
    decoder = BulkDecoder(mapper)
    rows = stored_rows(led)
    assert len(rows) == led.head_position()
    notes = led._app.recorder.select_notifications(start=0, limit=100_000)
    assert [n.id for n in notes] == [r[0] for r in rows]
    for note, row in zip(notes, rows, strict=True):
        ours = decoder.decode(row)
        assert same_event(ours, led._app.mapper.to_domain_event(note)), (note.topic, vars(ours))
    # the states with escapes or a second "_type_" went to the mapper; the rest did not
    slow = sum(1 for r in rows if bytes(r[4]).count(b'"_type_"') != 1 or b"\\u" in bytes(r[4]))
    assert mapper.decoded == slow
    assert 0 < slow < len(rows) // 4


AUDIT_FREE_FIELDS = {"originator_id", "originator_version", "timestamp"}


def test_stored_fields_are_the_mappers_events_fields_and_timestamp_text(led: Ledger,
                                                                        world: World) -> None:
    """What the audit load reads instead of events: every field the event has (but the three
    no audit column holds), and the timestamp as ``isoformat()`` writes it."""
    history_with_awkward_details(led, world)
    decoder = BulkDecoder(led._app.mapper)
    notes = led._app.recorder.select_notifications(start=0, limit=100_000)
    for note, row in zip(notes, stored_rows(led), strict=True):
        event = led._app.mapper.to_domain_event(note)
        topic, fields, at = decoder.fields(row)
        assert topic == note.topic and at == event.timestamp.isoformat()
        expected = {k: v for k, v in vars(event).items() if k not in AUDIT_FREE_FIELDS}
        assert same({k: v for k, v in fields.items() if k not in AUDIT_FREE_FIELDS}, expected)
        assert fields.keys() - AUDIT_FREE_FIELDS == expected.keys()


def test_the_ledgers_log_reader_gives_the_mappers_fields(led: Ledger, world: World) -> None:
    history_with_awkward_details(led, world)
    ours = led._log.read_fields(after=0, limit=100_000)
    notes = led._app.recorder.select_notifications(start=0, limit=100_000)
    assert len(ours) == len(notes) == led.head_position()
    for (pos, topic, fields, at), note in zip(ours, notes, strict=True):
        event = led._app.mapper.to_domain_event(note)
        assert (pos, topic, at) == (note.id, note.topic, event.timestamp.isoformat())
        expected = {k: v for k, v in vars(event).items() if k not in AUDIT_FREE_FIELDS}
        assert same({k: v for k, v in fields.items() if k not in AUDIT_FREE_FIELDS}, expected)
    skip = frozenset({"ledger.transaction.NoteRecorded"})
    skipped = [item for item in led._log.read_fields(after=0, limit=100_000, skip=skip)
               if item[1] in skip]
    assert skipped and all(fields == {} and at == "" for _, _, fields, at in skipped)


JSON_LEAF = (st.none() | st.booleans() | st.integers() | st.text()
             | st.floats(allow_nan=False, allow_infinity=False))
JSON = st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                    | st.just({"_type_": "uuid_hex", "_data_": "ab" * 16})
                    | st.builds(lambda d: {"_type_": "decimal_str", "_data_": str(d)},
                                st.decimals(allow_nan=False, allow_infinity=False)),
                    max_leaves=12)


@pytest.fixture(scope="module")
def sqlite_ledger(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with Ledger.open(f"sqlite:///{tmp_path_factory.mktemp('decode') / 'l.db'}") as led:
        yield led


@settings(max_examples=300, deadline=None)
@given(fields=st.dictionaries(st.text(max_size=10), JSON, max_size=5), extra=st.booleans())
def test_generated_states_decode_as_the_mapper_decodes_them(sqlite_ledger: Ledger,
                                                           fields: dict[str, Any],
                                                           extra: bool) -> None:
    """Whatever the transcoder wrote (typed values anywhere, any text, any integer), the
    decoder's event is the mapper's; a state without a typed timestamp too."""
    from datetime import UTC, datetime
    mapper = sqlite_ledger._app.mapper
    state = dict(fields)
    if extra or "timestamp" not in state:
        state["timestamp"] = datetime(2026, 12, 1, 15, 30, 1, 250, tzinfo=UTC)
    encoded = mapper.transcoder.encode(state)
    oid = uuid4()
    row = (7, oid.hex, 3, NOTE_TOPIC, encoded)
    from eventsourcing.persistence import StoredEvent
    stored = StoredEvent(originator_id=oid, originator_version=3, topic=NOTE_TOPIC, state=encoded)
    assert same_event(BulkDecoder(mapper).decode(row), mapper.to_domain_event(stored))


@pytest.mark.parametrize("state", [
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},"n":NaN}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},"n":1e400}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},'
    b'"x":{"\\u005ftype_":"decimal_str","_data_":"1.5"}}',  # a key only an escape hides
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},'
    b'"n":123456789012345678901234567890}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00","x":1}}',
    b'{"timestamp":"2026-12-01T15:30:01+00:00","x":{"_type_":"uuid_hex","_data_":"' + b"cd" * 16
    + b'"}}',
])
def test_states_the_fast_path_must_not_guess_at_get_the_mappers_answer(
        sqlite_ledger: Ledger, state: bytes) -> None:
    from eventsourcing.persistence import StoredEvent
    mapper = sqlite_ledger._app.mapper
    oid = uuid4()
    stored = StoredEvent(originator_id=oid, originator_version=1, topic=NOTE_TOPIC, state=state)
    try:
        expected: Any = mapper.to_domain_event(stored)
    except Exception as err:  # the mapper refuses it: so must the decoder, the same way
        with pytest.raises(type(err)):
            BulkDecoder(mapper).decode((1, oid.hex, 1, NOTE_TOPIC, state))
        return
    assert same_event(BulkDecoder(mapper).decode((1, oid.hex, 1, NOTE_TOPIC, state)), expected)


def test_events_stored_at_an_older_class_version_are_upcast_as_the_mapper_does(
        sqlite_ledger: Ledger) -> None:
    from eventsourcing.persistence import StoredEvent
    mapper = CountingMapper(sqlite_ledger._app.mapper)
    topic = TransactionAggregate.ProofRecorded.TOPIC
    v1 = (b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},'
          b'"txid":"' + b"ab" * 32 + b'","height":5,"block_hash":null,"merkle_root":"'
          + b"cd" * 32 + b'","leaf_offset":0,"bump":"00"}')
    oid = uuid4()
    ours = BulkDecoder(mapper).decode((1, oid.hex, 2, topic, v1))
    assert mapper.decoded == 0 and ours.verified_by == "headers"
    assert BulkDecoder(mapper).fields((1, oid.hex, 2, topic, v1))[1]["verified_by"] == "headers"
    expected = mapper.to_domain_event(StoredEvent(originator_id=oid, originator_version=2,
                                                  topic=topic, state=v1))
    assert same_event(ours, expected)


def test_a_compressing_mapper_is_left_to_decode_everything(sqlite_ledger: Ledger) -> None:
    import zlib
    from datetime import UTC, datetime

    from eventsourcing.persistence import Mapper

    class Zlib:
        def compress(self, data: bytes) -> bytes:
            return zlib.compress(data)

        def decompress(self, data: bytes) -> bytes:
            return zlib.decompress(data)

    base = sqlite_ledger._app.mapper
    mapper = CountingMapper(Mapper(transcoder=base.transcoder, compressor=Zlib()))
    state = zlib.compress(json.dumps({"timestamp": {"_type_": "datetime_iso",
                                                    "_data_": datetime.now(UTC).isoformat()},
                                      "what": "x"}).encode())
    event = BulkDecoder(mapper).decode((1, uuid4().hex, 1, NOTE_TOPIC, state))
    assert mapper.decoded == 1 and event.what == "x"


@pytest.mark.parametrize("text", [uuid4().hex, uuid4().hex.upper(), str(uuid4()),
                                  "{" + str(uuid4()) + "}", "urn:uuid:" + str(uuid4()),
                                  " " + "a" * 31])  # UUID() takes that one: int() strips
def test_stored_ids_become_the_uuids_uuid_makes(text: str) -> None:
    ours = _uuid(text)
    assert type(ours) is UUID and ours == UUID(text) and ours.is_safe == UUID(text).is_safe
    assert hash(ours) == hash(UUID(text)) and str(ours) == str(UUID(text))


@pytest.mark.parametrize("text", ["g" * 32, "0x" + "a" * 29 + "-", "", "a" * 31, "é" * 32])
def test_ids_uuid_refuses_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        UUID(text)
    with pytest.raises(ValueError):
        _uuid(text)


@pytest.mark.parametrize("state", [
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},"a":1}',
    b'{"timestamp":{"_type_":"datetime_iso","_data_":"2026-12-01T15:30:01+00:00"},'
    b'"x":{"\\u005ftype_":"decimal_str","_data_":"1.5"}}',  # left to the mapper
])
def test_a_state_given_as_a_memoryview_decodes_as_bytes_do(sqlite_ledger: Ledger,
                                                            state: bytes) -> None:
    decoder = BulkDecoder(sqlite_ledger._app.mapper)
    oid = uuid4()
    as_bytes = decoder.decode((1, oid.hex, 1, NOTE_TOPIC, state))
    assert same_event(decoder.decode((1, oid.hex, 1, NOTE_TOPIC, memoryview(state))), as_bytes)
    assert same(decoder.fields((1, oid.hex, 1, NOTE_TOPIC, memoryview(state)))[1:],
                decoder.fields((1, oid.hex, 1, NOTE_TOPIC, state))[1:])
