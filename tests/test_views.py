"""Views built from stored rows (``View.from_stored``) are the views pydantic would build, and
the projection row decoder reads back exactly what the encoder wrote."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.views import ActionView, OutputView, View
from projections.stores import _split, decode_row, encode_row

OUTPUT = {"user": "alice", "txid": "ab" * 32, "vout": 1, "satoshis": 5_000, "basket": "default",
          "tags": ["rent", "ümlaut"], "spendable": True, "change": False, "is_coinbase": False,
          "locking_script": b"\x76\xa9", "custom_instructions": None, "category": "spendable"}
ACTION = {"user": "alice", "reference": "r-1", "txid": None, "status": "unsigned",
          "description": "rent", "satoshis_delta": -5_000, "is_outgoing": True,
          "labels": ["monthly"]}


@pytest.mark.parametrize(("cls", "values"), [(OutputView, OUTPUT), (ActionView, ACTION)])
def test_a_view_from_stored_values_is_the_view_pydantic_builds(
        cls: type[View], values: dict[str, Any]) -> None:
    ours, theirs = cls.from_stored(dict(values)), cls.model_construct(**values)
    assert ours == theirs and ours.model_dump() == theirs.model_dump() == values
    assert ours == cls.model_validate(values), "and the view validation would build"
    assert ours.model_fields_set == theirs.model_fields_set
    with pytest.raises(Exception, match="frozen"):
        ours.user = "mallory"  # type: ignore[misc]


def test_a_view_from_stored_values_needs_every_field() -> None:
    partial = {k: v for k, v in OUTPUT.items() if k != "category"}
    with pytest.raises(AssertionError, match="category"):
        OutputView.from_stored(partial)


COLS = ("user", "tags", "spendable", "preserved", "locking_script", "satoshis", "evidence")
values = st.tuples(
    st.text(max_size=5), st.one_of(st.none(), st.lists(st.text(max_size=3), max_size=3)),
    st.one_of(st.none(), st.booleans()), st.one_of(st.none(), st.booleans()),
    st.one_of(st.none(), st.binary(max_size=8)), st.integers(),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3))


@given(values, st.booleans())
def test_the_row_decoder_reads_back_what_the_encoder_wrote(row: tuple[Any, ...],
                                                          as_memoryview: bool) -> None:
    """Booleans come back from SQLite as 0/1 and bytea from some drivers as memoryview."""
    written = list(encode_row(dict(zip(COLS, row, strict=True)), COLS))
    stored = [int(v) if isinstance(v, bool) else v for v in written]
    if as_memoryview and stored[4] is not None:
        stored[4] = memoryview(stored[4])
    decoded = decode_row(stored, COLS)
    plain, raw = _split(stored, COLS)  # the generic path the lazy rows take
    assert decoded == {**plain, **{c: json.loads(v) for c, v in raw.items()}}
    assert decoded == dict(zip(COLS, row, strict=True))
    assert list(decoded) == list(COLS)
