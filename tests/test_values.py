"""Bad-input tables for the validated value types (``ledger.values``, SPEC §6).

Every rejection must surface as :class:`ledger.errors.InvalidInput` (never a bare ``ValueError`` or
pydantic ``ValidationError``), so callers can rely on one error type for malformed arguments.
"""

from __future__ import annotations

from typing import Any

import pytest

from ledger.errors import InvalidInput
from ledger.values import (
    MAX_SATOSHIS,
    MAX_SCRIPT_BYTES,
    MAX_TEXT_BYTES,
    MAX_VOUT,
    BlockHeader,
    NewOutput,
    Outpoint,
    check_name,
    check_text,
    check_txid,
    validated,
)

HEX64 = "0123456789abcdef" * 4
HEX64_UPPER = HEX64.upper()
HEX63 = HEX64[:63]
HEX65 = HEX64 + "0"
OTHER64 = "f" * 64


# --- Outpoint.parse --------------------------------------------------------------------------

BAD_OUTPOINTS = [
    "",
    "abc",
    HEX64,
    f"{HEX64}:",
    f"{HEX64}:-1",
    f"{HEX64}:x",
    f"{HEX63}:0",
    f"{HEX65}:0",
    f"{HEX64}:4294967296",
    f"{HEX64}:99999999999999999999",
    f"{HEX64}:0:1",
    f"{HEX64}::0",
    f":{HEX64}",
    ":0",
    f"{HEX64}: 0",
    f"{HEX64}:0 ",
    f" {HEX64}:0",
    f"{HEX64}:+1",
    f"{HEX64}:0x1",
    f"{HEX64}:1.0",
    f"{'g' * 64}:0",
    f"{HEX64[:62]}zz:0",
    f"{HEX64}.0",
]


@pytest.mark.parametrize("text", BAD_OUTPOINTS, ids=repr)
def test_outpoint_parse_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(text)


@pytest.mark.parametrize("value", [None, 5, b"x", [HEX64, 0]], ids=repr)
def test_outpoint_parse_rejects_non_strings(value: Any) -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(value)


def test_outpoint_parse_rejects_arabic_indic_digit() -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(f"{HEX64}:\u0663")  # ARABIC-INDIC DIGIT THREE


def test_outpoint_parse_rejects_superscript_digit() -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(f"{HEX64}:\u00b2")


def test_outpoint_parse_rejects_enormous_vout() -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(f"{HEX64}:{'9' * 5000}")


def test_outpoint_parse_rejects_txid_with_trailing_newline() -> None:
    with pytest.raises(InvalidInput):
        Outpoint.parse(f"{HEX64}\n:0")


@pytest.mark.parametrize(
    ("text", "txid", "vout"),
    [
        (f"{HEX64}:0", HEX64, 0),
        (f"{HEX64}:1", HEX64, 1),
        (f"{HEX64}:{MAX_VOUT}", HEX64, MAX_VOUT),
        (f"{HEX64_UPPER}:7", HEX64, 7),
        (f"{OTHER64}:42", OTHER64, 42),
    ],
)
def test_outpoint_parse_accepts(text: str, txid: str, vout: int) -> None:
    op = Outpoint.parse(text)
    assert op.txid == txid
    assert op.vout == vout
    assert str(op) == f"{txid}:{vout}"
    assert Outpoint.parse(str(op)) == op


def test_uppercase_txid_is_lowercased_everywhere() -> None:
    assert validated(Outpoint, txid=HEX64_UPPER, vout=0).txid == HEX64
    assert check_txid(HEX64_UPPER) == HEX64
    mixed = "".join(c.upper() if i % 2 else c for i, c in enumerate(HEX64))
    assert check_txid(mixed) == HEX64


@pytest.mark.parametrize(
    "fields",
    [
        {"txid": HEX64, "vout": -1},
        {"txid": HEX64, "vout": MAX_VOUT + 1},
        {"txid": HEX64, "vout": True},
        {"txid": HEX64, "vout": "0"},
        {"txid": HEX64, "vout": 0.0},
        {"txid": HEX64, "vout": None},
        {"txid": HEX63, "vout": 0},
        {"txid": HEX65, "vout": 0},
        {"txid": "", "vout": 0},
        {"txid": bytes.fromhex(HEX64), "vout": 0},
        {"txid": HEX64},
        {"vout": 0},
        {"txid": HEX64, "vout": 0, "extra": 1},
    ],
    ids=repr,
)
def test_outpoint_fields_rejected(fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        validated(Outpoint, **fields)


@pytest.mark.parametrize("value", ["", "abc", HEX63, HEX65, "g" * 64, None, 5, bytes(32)], ids=repr)
def test_check_txid_rejects(value: Any) -> None:
    with pytest.raises(InvalidInput):
        check_txid(value)


# --- NewOutput -------------------------------------------------------------------------------

GOOD_OUTPUT: dict[str, Any] = {"vout": 0, "satoshis": 1_000, "locking_script": b"\x76\xa9\x14"}


def _output(**overrides: Any) -> NewOutput:
    return validated(NewOutput, **{**GOOD_OUTPUT, **overrides})


BAD_OUTPUT_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("satoshis -1", {"satoshis": -1}),
    ("satoshis above 21e14", {"satoshis": 2_100_000_000_000_001}),
    ("satoshis far above", {"satoshis": 10**30}),
    ("satoshis True", {"satoshis": True}),
    ("satoshis False", {"satoshis": False}),
    ("satoshis float", {"satoshis": 1000.0}),
    ("satoshis str", {"satoshis": "1000"}),
    ("satoshis None", {"satoshis": None}),
    ("vout -1", {"vout": -1}),
    ("vout 2**32", {"vout": 2**32}),
    ("vout True", {"vout": True}),
    ("script > 100000 bytes", {"locking_script": b"\x00" * (MAX_SCRIPT_BYTES + 1)}),
    ("script hex > 100000 bytes", {"locking_script": "00" * (MAX_SCRIPT_BYTES + 1)}),
    ("script 1 MB", {"locking_script": b"\x51" * 1_000_000}),
    ("script bad hex", {"locking_script": "zz"}),
    ("script odd hex", {"locking_script": "abc"}),
    ("script int", {"locking_script": 5}),
    ("script list", {"locking_script": [1, 2]}),
    ("description 10 kB", {"description": "x" * 10_000}),
    ("description 2001 bytes", {"description": "x" * (MAX_TEXT_BYTES + 1)}),
    ("description 2002 bytes of 2-byte chars", {"description": "\u00e9" * 1_001}),
    ("description lone surrogate", {"description": "\ud800"}),
    ("description surrogate inside", {"description": "ok \udfff ok"}),
    ("description NUL", {"description": "\x00"}),
    ("description NUL inside", {"description": "pay\x00ment"}),
    ("description escape", {"description": "a\x1b[31mb"}),
    ("description DEL", {"description": "a\x7fb"}),
    ("description noncharacter", {"description": "a\uffffb"}),
    ("description bytes", {"description": b"abc"}),
    ("description int", {"description": 5}),
    ("custom_instructions NUL", {"custom_instructions": "\x00"}),
    ("custom_instructions 10 kB", {"custom_instructions": "y" * 10_000}),
    ("basket empty", {"basket": ""}),
    ("basket blank", {"basket": "   "}),
    ("basket 301 chars", {"basket": "b" * 301}),
    ("basket NUL", {"basket": "a\x00b"}),
    ("tag blank", {"tags": ["ok", " "]}),
    ("101 tags", {"tags": [f"t{i}" for i in range(101)]}),
    ("tags not a list", {"tags": "abc"}),
    ("unknown field", {"satoshi": 1}),
]


@pytest.mark.parametrize("overrides", [c[1] for c in BAD_OUTPUT_FIELDS],
                         ids=[c[0] for c in BAD_OUTPUT_FIELDS])
def test_new_output_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput) as info:
        _output(**overrides)
    field = next(iter(overrides))
    assert "NewOutput" in str(info.value)
    if field != "satoshi":  # the unknown-field case names the stray field instead
        assert field in str(info.value), f"message should name {field!r}: {info.value}"


@pytest.mark.parametrize("field", ["vout", "satoshis", "locking_script"])
def test_new_output_required_fields(field: str) -> None:
    fields = {k: v for k, v in GOOD_OUTPUT.items() if k != field}
    with pytest.raises(InvalidInput):
        validated(NewOutput, **fields)


def test_new_output_accepts_ordinary_unicode_description() -> None:
    text = "Zahlung f\u00fcr Caf\u00e9 \u2615"
    out = _output(description=text)
    assert out.description == "Zahlung für Café ☕"
    assert out.description == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "x" * MAX_TEXT_BYTES,
        "\u00e9" * (MAX_TEXT_BYTES // 2),
        "line one\nline two\tcolumn",
        "\u65e5\u672c\u8a9e\u306e\u8aac\u660e",
        "emoji \U0001f4b8 ok",
    ],
    ids=["empty", "max bytes", "max bytes 2-byte", "tab and newline", "cjk", "astral"],
)
def test_new_output_accepts_text(text: str) -> None:
    assert _output(description=text).description == text


@pytest.mark.parametrize("satoshis", [0, 1, 546, MAX_SATOSHIS])
def test_new_output_accepts_satoshis(satoshis: int) -> None:
    assert _output(satoshis=satoshis).satoshis == satoshis


def test_satoshis_limit_is_21e14() -> None:
    assert MAX_SATOSHIS == 2_100_000_000_000_000


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (b"", b""),
        (b"\x76\xa9", b"\x76\xa9"),
        ("76a9", b"\x76\xa9"),
        ("76A9", b"\x76\xa9"),
        (bytearray(b"\x51"), b"\x51"),
        (memoryview(b"\x52"), b"\x52"),
        (b"\x00" * MAX_SCRIPT_BYTES, b"\x00" * MAX_SCRIPT_BYTES),
    ],
    ids=["empty", "bytes", "hex", "upper hex", "bytearray", "memoryview", "max size"],
)
def test_new_output_script_forms(script: Any, expected: bytes) -> None:
    out = _output(locking_script=script)
    assert isinstance(out.locking_script, bytes)
    assert out.locking_script == expected


def test_new_output_defaults_and_frozen() -> None:
    out = _output()
    assert out.basket == "default"
    assert out.tags == []
    assert out.description == ""
    assert out.change is False
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        out.satoshis = 5  # type: ignore[misc]
    assert out.satoshis == 1_000


def test_new_output_basket_none_is_paid_away() -> None:
    assert _output(basket=None).basket is None


def test_new_output_basket_is_stripped() -> None:
    assert _output(basket="  savings  ").basket == "savings"


# --- BlockHeader -----------------------------------------------------------------------------

GOOD_HEADER: dict[str, Any] = {"height": 1, "hash": HEX64, "prev_hash": OTHER64, "merkle_root": HEX64}

BAD_HASHES = ["", "ab", HEX63, HEX65, HEX64 * 2, "g" * 64, f" {HEX64[1:]}", bytes(32), None, 0]


@pytest.mark.parametrize("field", ["hash", "prev_hash", "merkle_root"])
@pytest.mark.parametrize("value", BAD_HASHES, ids=repr)
def test_block_header_rejects_bad_hash(field: str, value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        validated(BlockHeader, **{**GOOD_HEADER, field: value})
    assert field in str(info.value)


@pytest.mark.parametrize("field", ["hash", "prev_hash", "merkle_root"])
def test_block_header_rejects_hash_with_trailing_newline(field: str) -> None:
    with pytest.raises(InvalidInput):
        validated(BlockHeader, **{**GOOD_HEADER, field: HEX64 + "\n"})


@pytest.mark.parametrize("height", [-1, 100_000_001, True, "1", 1.0, None], ids=repr)
def test_block_header_rejects_bad_height(height: Any) -> None:
    with pytest.raises(InvalidInput):
        validated(BlockHeader, **{**GOOD_HEADER, "height": height})


def test_block_header_accepts_and_lowercases() -> None:
    header = validated(BlockHeader, height=0, hash=HEX64_UPPER, prev_hash="0" * 64,
                       merkle_root=HEX64_UPPER)
    assert header.hash == HEX64
    assert header.merkle_root == HEX64
    assert header.prev_hash == "0" * 64
    assert validated(BlockHeader, **{**GOOD_HEADER, "height": 100_000_000}).height == 100_000_000


# --- check_* helpers -------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "  ", "a\x00", "x" * 301, "\ud800", None, 5, b"name"], ids=repr)
def test_check_name_rejects(value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        check_name("basket", value)
    assert "basket" in str(info.value)


@pytest.mark.parametrize("value", ["x" * 10_000, "\ud800", "\x00", None, 5], ids=repr)
def test_check_text_rejects(value: Any) -> None:
    with pytest.raises(InvalidInput) as info:
        check_text("description", value)
    assert "description" in str(info.value)


def test_check_helpers_accept() -> None:
    assert check_name("user", "  alice  ") == "alice"
    assert check_text("description", "Zahlung für Café ☕") == "Zahlung für Café ☕"
