"""Validated value types of the public API (SPEC §6).

Every constructor validates; a bad value raises :class:`~ledger.errors.InvalidInput` (through
:func:`validated`) with a message naming the field. Limits are named constants.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
)

from ledger.errors import InvalidInput
from ledger.rules import ProviderStatus

MAX_SATOSHIS = 2_100_000_000_000_000
"""21e14: every satoshi that will ever exist."""
MAX_VOUT = 0xFFFF_FFFF
MAX_BLOCK_HEIGHT = 100_000_000
MAX_TEXT_BYTES = 2_000
"""Descriptions and reasons, UTF-8 encoded."""
MAX_NAME_CHARS = 300
"""Users, references, baskets, labels, tags."""
MAX_TAGS = 100
MAX_SCRIPT_BYTES = 100_000
MAX_OUTPUTS = 10_000
MAX_INPUTS = 10_000
MAX_DETAILS_BYTES = 16_000
MAX_DETAILS_DEPTH = 32
"""Nesting of lists and objects in ``details``."""
TYPED_VALUE_KEYS = frozenset({"_type_", "_data_"})
"""An object of exactly these keys is how the event store writes a typed value (a datetime, a
UUID); details holding one would read back from the log as that type, not as what was given."""

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_VOUT_DIGITS = re.compile(r"[0-9]{1,10}")


def _check_text(value: str, what: str, max_bytes: int) -> str:
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (lone surrogate)") from None
    if len(encoded) > max_bytes:
        raise ValueError(f"{what} is {len(encoded)} bytes; at most {max_bytes} UTF-8 bytes")
    bad = [c for c in value if unicodedata.category(c) in ("Cc", "Cs", "Cn") and c not in "\t\n"]
    if bad:
        raise ValueError(f"{what} contains control or unassigned characters ({bad[0]!r})")
    return value


def _text(value: str) -> str:
    return _check_text(value, "text", MAX_TEXT_BYTES)


def _name(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be empty or blank")
    if len(value) > MAX_NAME_CHARS:
        raise ValueError(f"is {len(value)} characters; at most {MAX_NAME_CHARS}")
    return _check_text(value, "name", MAX_NAME_CHARS * 4)


def normalize_txid(value: Any) -> str:
    """A txid as 64 lowercase hex characters; ``ValueError`` otherwise."""
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        shown = value if not isinstance(value, str) else value[:80]
        raise ValueError(f"a txid is 64 hex characters, got {shown!r}")
    return value.lower()


_HEX_PAIRS = re.compile(r"(?:[0-9a-fA-F]{2})*")


def _hex_or_bytes(value: Any) -> Any:
    if isinstance(value, str):
        if not _HEX_PAIRS.fullmatch(value):  # ``bytes.fromhex`` would skip whitespace
            raise ValueError("expected bytes or a hex string (pairs of hex digits, nothing "
                             "else)")
        return bytes.fromhex(value)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    return value


Txid = Annotated[str, BeforeValidator(normalize_txid)]
Hash = Annotated[str, BeforeValidator(normalize_txid)]
Name = Annotated[str, Field(strict=True), AfterValidator(_name)]
Text = Annotated[str, Field(strict=True), AfterValidator(_text)]
Satoshis = Annotated[int, Field(strict=True, ge=0, le=MAX_SATOSHIS)]
Vout = Annotated[int, Field(strict=True, ge=0, le=MAX_VOUT)]
Script = Annotated[bytes, BeforeValidator(_hex_or_bytes), Field(strict=True, max_length=MAX_SCRIPT_BYTES)]
Names = Annotated[list[Name], Field(max_length=MAX_TAGS)]


class Value(BaseModel):
    """Base of value types: frozen, no unknown fields. Constructing one with a bad field
    raises :class:`~ledger.errors.InvalidInput` naming the field, like every other bad input
    (not ``pydantic``'s own error)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, **fields: Any) -> None:
        try:
            super().__init__(**fields)
        except ValidationError as err:
            raise InvalidInput(f"invalid {type(self).__name__}: {_explain(err)}") from None


class Outpoint(Value):
    """A transaction output reference ``txid:vout``."""

    txid: Txid
    vout: Vout

    @classmethod
    def parse(cls, text: str) -> Outpoint:
        """``"<txid>:<vout>"`` -> Outpoint; :class:`InvalidInput` for anything else."""
        if not isinstance(text, str) or text.count(":") != 1:
            raise InvalidInput(f"an outpoint is written TXID:VOUT, got {str(text)[:100]!r}")
        txid, _, vout = text.partition(":")
        if not _VOUT_DIGITS.fullmatch(vout):
            raise InvalidInput(f"the vout of an outpoint is a whole number from 0 to "
                               f"{MAX_VOUT}, got {vout[:20]!r}")
        return validated(cls, txid=txid, vout=int(vout))

    def __str__(self) -> str:
        return f"{self.txid}:{self.vout}"


class NewOutput(Value):
    """An output a self-created action declares (checked against the signed transaction).

    ``basket=None`` declares an output paid away: it is checked at signing but is not the
    user's output (no output row, not in the balance).
    """

    vout: Vout
    satoshis: Satoshis
    locking_script: Script
    basket: Name | None = "default"
    tags: Names = Field(default_factory=list)
    description: Text = ""
    custom_instructions: Text | None = None
    change: bool = False


class InternalizeOutput(Value):
    """An output of a received transaction that a user takes into a basket."""

    vout: Vout
    basket: Name = "default"
    tags: Names = Field(default_factory=list)
    custom_instructions: Text | None = None


class BlockHeader(Value):
    """One block header as the ledger's header chain needs it."""

    height: Annotated[int, Field(strict=True, ge=0, le=MAX_BLOCK_HEIGHT)]
    hash: Hash
    prev_hash: Hash
    merkle_root: Hash


class ProviderResult(Value):
    """What one broadcast provider answered for one transaction."""

    provider: Name
    status: ProviderStatus
    provider_status: Text | None = None
    competing_txids: list[Txid] = Field(default_factory=list, max_length=100)
    details: Details = Field(default_factory=dict)


def json_details(value: Any) -> dict[str, Any]:
    """``details`` as the log keeps them: an object of JSON values (no NaN or infinity), at most
    :data:`MAX_DETAILS_BYTES` as JSON and :data:`MAX_DETAILS_DEPTH` deep, with no object of
    exactly the keys in :data:`TYPED_VALUE_KEYS`; returned as JSON gives it back (tuples become
    lists). ``ValueError`` says what is wrong."""
    if not isinstance(value, dict):
        raise ValueError(f"details must be a dict of JSON values, got {type(value).__name__}")
    _check_json_shape(value, depth=0)
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(f"details must be JSON values: {err}") from None
    size = len(text.encode())
    if size > MAX_DETAILS_BYTES:
        raise ValueError(f"details are {size} bytes as JSON; at most {MAX_DETAILS_BYTES}")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def _check_json_shape(value: Any, *, depth: int) -> None:
    if depth > MAX_DETAILS_DEPTH:
        raise ValueError(f"details nest more than {MAX_DETAILS_DEPTH} levels deep")
    if isinstance(value, dict):
        if value.keys() == TYPED_VALUE_KEYS:
            raise ValueError("details may not hold an object whose only keys are '_type_' and "
                             "'_data_' (the event store marks typed values that way); rename "
                             "a key")
        for key, item in value.items():
            if not isinstance(key, str):  # JSON would turn it into text: not given back
                raise ValueError(f"details keys must be strings, got {type(key).__name__} "
                                 f"{key!r:.40}")
            _check_unicode(key)
            _check_json_shape(item, depth=depth + 1)
    elif isinstance(value, str):
        _check_unicode(value)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_json_shape(item, depth=depth + 1)


def _check_unicode(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"details text must be valid Unicode (a lone surrogate in "
                         f"{text[:40]!r})") from None


Details = Annotated[dict[str, Any], BeforeValidator(json_details)]
"""Free-form ``details`` of a command, checked by :func:`json_details`."""

M = TypeVar("M", bound=BaseModel)


def _explain(err: ValidationError) -> str:
    parts = []
    for e in err.errors()[:3]:
        loc = ".".join(str(p) for p in e["loc"]) or "value"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


def validated(model: type[M], /, **fields: Any) -> M:
    """Construct ``model`` or raise :class:`InvalidInput` with the failing fields named."""
    try:
        return model(**fields)
    except ValidationError as err:
        raise InvalidInput(f"invalid {model.__name__}: {_explain(err)}") from None


def coerce(model: type[M], value: Any, what: str) -> M:
    """Accept ``model`` instances or dicts of its fields; :class:`InvalidInput` otherwise."""
    if isinstance(value, model):
        return value
    if isinstance(value, dict):
        return validated(model, **value)
    raise InvalidInput(f"{what} must be a {model.__name__}, got {type(value).__name__}")


def check(what: str, fn: Callable[[Any], Any], value: Any) -> Any:
    """Run a field validator outside a model: ``ValueError`` becomes :class:`InvalidInput`."""
    try:
        return fn(value)
    except (ValueError, TypeError) as err:
        raise InvalidInput(f"{what}: {err}") from None


def check_name(what: str, value: Any) -> str:
    """A user, reference, basket, label or tag; :class:`InvalidInput` otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    return str(check(what, _name, value))


def check_text(what: str, value: Any) -> str:
    """A description or reason; :class:`InvalidInput` otherwise."""
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    return str(check(what, _text, value))


def check_txid(value: Any) -> str:
    """A txid, lowercased; :class:`InvalidInput` otherwise."""
    return str(check("txid", normalize_txid, value))


def check_details(value: Any) -> dict[str, Any]:
    """A command's ``details`` (:func:`json_details`); :class:`InvalidInput` otherwise."""
    try:
        return json_details(value)
    except ValueError as err:
        raise InvalidInput(str(err)) from None


def check_list(what: str, value: Any, max_items: int) -> list[Any]:
    """A list argument (a list or tuple); a string, a dict, None or a generator is refused
    rather than taken apart. :class:`InvalidInput` otherwise."""
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"{what} must be a list, got {type(value).__name__}")
    if len(value) > max_items:
        raise InvalidInput(f"{what}: at most {max_items} entries, got {len(value)}")
    return list(value)


def check_names(what: str, values: Any) -> list[str]:
    """A list of names, de-duplicated in order."""
    return list(dict.fromkeys(check_name(what, v) for v in check_list(what, values, MAX_TAGS)))
