"""Strict decoding of raw transactions, BUMP merkle paths (BRC-74) and BEEF (BRC-62/95/96),
and the encoding of the Atomic BEEF the ledger hands its broadcasters.

This is the only module of the project that imports ``bsv`` (bsv-sdk 2.4). The SDK is lenient:
its reader returns short data at the end of input instead of failing, ``from_hex`` accepts trailing
bytes and truncated locktimes, ``parse_beef`` drops the proofs of a V1 BEEF, and ``MerklePath``
cannot represent a one-transaction block. So every byte string is first walked by a strict framing
scanner (exact lengths, canonical varints, no trailing bytes), then decoded by the SDK, and the
SDK's result is checked against the input (``tx.serialize() == raw``).

Errors: :class:`InvalidInput` for arguments of the wrong type or shape, :class:`InvalidTransaction`
for raw transactions and for the framing of a BEEF container, :class:`InvalidProof` for the
content of a merkle path. Nothing here reaches the network.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

from bsv.hash import hash256
from bsv.merkle_path import MerklePath
from bsv.transaction import Transaction
from bsv.utils import Reader

from ledger.errors import InvalidInput, InvalidProof, InvalidTransaction
from ledger.values import MAX_BLOCK_HEIGHT

NULL_TXID = "00" * 32
COINBASE_VOUT = 0xFFFFFFFF
MAX_TX_BYTES = 10_000_000
MAX_BEEF_BYTES = 50_000_000
MAX_BUMP_BYTES = MAX_BEEF_BYTES
MAX_TREE_HEIGHT = 64
MAX_SATOSHIS = 21_000_000 * 100_000_000
HASH_BYTES = 32
MAGIC_BYTES = 4
TRUNCATION_HINT = "send the complete serialised transaction"

BEEF_V1_MAGIC = bytes.fromhex("0100beef")
BEEF_V2_MAGIC = bytes.fromhex("0200beef")
ATOMIC_BEEF_MAGIC = bytes.fromhex("01010101")
ATOMIC_HEADER_BYTES = MAGIC_BYTES + HASH_BYTES

BUMP_FLAG_HASH = 0
BUMP_FLAG_DUPLICATE = 1
BUMP_FLAG_TXID = 2
V2_FORMAT_RAW = 0
V2_FORMAT_RAW_WITH_BUMP = 1
V2_FORMAT_TXID_ONLY = 2

_TXID_RE = re.compile(r"[0-9a-fA-F]{64}")
# varint prefix -> (width of the value that follows, smallest value that may use it)
_VARINT_FORMS = {0xFD: (2, 0xFD), 0xFE: (4, 0x1_0000), 0xFF: (8, 0x1_0000_0000)}

BeefVersion = Literal["V1", "V2", "ATOMIC"]
_BEEF_MAGICS: dict[bytes, Literal["V1", "V2"]] = {BEEF_V1_MAGIC: "V1", BEEF_V2_MAGIC: "V2"}


# --------------------------------------------------------------------------- value objects


@dataclass(frozen=True, slots=True)
class TxInput:
    """One input: the outpoint it spends (display-hex txid, output index) and its sequence."""

    source_txid: str
    source_vout: int
    sequence: int


@dataclass(frozen=True, slots=True)
class TxOutput:
    """One output: its value in satoshis (0..MAX_SATOSHIS) and its locking script bytes."""

    satoshis: int
    locking_script: bytes


@dataclass(frozen=True, slots=True)
class ParsedTx:
    """A strictly parsed transaction.

    When produced by :func:`parse_raw_tx`: ``raw`` is exactly one canonical serialisation (no
    trailing bytes, canonical varints, ``bsv`` re-serialises it byte for byte), ``txid`` is the
    lowercase display hex of ``hash256(raw)``, there is at least one input and one output, no
    outpoint is spent twice, and every value and the total are within ``MAX_SATOSHIS``.
    """

    txid: str
    raw: bytes
    version: int
    inputs: tuple[TxInput, ...]
    outputs: tuple[TxOutput, ...]
    locktime: int

    @property
    def is_coinbase(self) -> bool:
        """True when the only input spends the null outpoint (``NULL_TXID``, ``0xFFFFFFFF``)."""
        if len(self.inputs) != 1:
            return False
        only = self.inputs[0]
        return only.source_txid == NULL_TXID and only.source_vout == COINBASE_VOUT


@dataclass(frozen=True, slots=True)
class ParsedProof:
    """A merkle path (BUMP) that proves ``txid``.

    When produced by :func:`parse_bump` or :func:`parse_beef`: ``txid`` is a level-0 leaf of the
    path flagged as a txid at ``leaf_offset``, and ``merkle_root`` (lowercase display hex) is the
    root the path computes for it. Whether that root is the root of the block at
    ``block_height`` is the caller's check. ``bump`` is the exact BRC-74 bytes of the path.
    """

    block_height: int
    txid: str
    merkle_root: str
    leaf_offset: int
    bump: bytes


@dataclass(frozen=True, slots=True)
class ParsedBeef:
    """A strictly parsed BEEF (V1, V2 or Atomic).

    ``transactions`` holds every full transaction in BEEF order (subject included), each parsed
    by :func:`parse_raw_tx`; parents precede the transactions that spend them. ``proofs`` maps a
    txid to its proof for every transaction the BEEF attaches a BUMP to (V1 included).
    ``txid_only`` lists V2 entries that carry only a txid (the sender assumed we know them).
    For Atomic BEEF every transaction is the subject or one of its ancestors.
    """

    version: BeefVersion
    subject: ParsedTx
    transactions: Mapping[str, ParsedTx]
    proofs: Mapping[str, ParsedProof]
    txid_only: frozenset[str] = frozenset()


# --------------------------------------------------------------------------- strict cursor


class _Truncated(Exception):
    """The input ended inside a field."""


class _Malformed(Exception):
    """A field holds a value the format forbids."""


class _Cursor:
    """Reads fields from ``data`` and fails, instead of returning short data, at the end."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def remaining(self) -> int:
        return len(self.data) - self.pos

    def skip(self, n: int, what: str) -> int:
        """Advance over ``n`` bytes and return where they start."""
        if n > self.remaining:
            raise _Truncated(f"{what} needs {n} bytes but only {self.remaining} remain")
        start = self.pos
        self.pos += n
        return start

    def take(self, n: int, what: str) -> bytes:
        start = self.skip(n, what)
        return self.data[start : self.pos]

    def uint(self, width: int, what: str) -> int:
        return int.from_bytes(self.take(width, what), "little")

    def varint(self, what: str) -> int:
        first = self.uint(1, what)
        form = _VARINT_FORMS.get(first)
        if form is None:
            return first
        width, smallest = form
        value = self.uint(width, what)
        if value < smallest:
            raise _Malformed(f"{what} is not a canonical (minimal) varint")
        return value


# --------------------------------------------------------------------------- raw transactions


def _require_bytes(value: object, what: str) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise InvalidInput(
        f"{what} must be bytes, got {type(value).__name__}; decode hex with bytes.fromhex() first"
    )


def _scan_tx(cur: _Cursor) -> None:
    """Advance over one serialised transaction, checking every length fits."""
    cur.skip(4, "version")
    for i in range(cur.varint("input count")):
        cur.skip(HASH_BYTES + 4, f"input {i} outpoint")
        cur.skip(cur.varint(f"input {i} script length"), f"input {i} unlocking script")
        cur.skip(4, f"input {i} sequence")
    for i in range(cur.varint("output count")):
        cur.skip(8, f"output {i} satoshis")
        cur.skip(cur.varint(f"output {i} script length"), f"output {i} locking script")
    cur.skip(4, "locktime")


def _check_framing(raw: bytes) -> None:
    cur = _Cursor(raw)
    try:
        _scan_tx(cur)
    except _Truncated as exc:
        raise InvalidTransaction(
            f"raw transaction is truncated: {exc} (got {len(raw)} bytes); {TRUNCATION_HINT}"
        ) from exc
    except _Malformed as exc:
        raise InvalidTransaction(f"raw transaction is malformed: {exc}") from exc
    if cur.remaining:
        raise InvalidTransaction(
            f"{cur.remaining} trailing bytes after the transaction (it ends at byte {cur.pos} "
            f"of {len(raw)}); send exactly one serialised transaction"
        )


def _decode_with_sdk(raw: bytes) -> Any:
    reader = Reader(raw)
    try:
        tx = Transaction.from_reader(reader)
        same = reader.tell() == len(raw) and tx.serialize() == raw
    except Exception as exc:  # the SDK raises ValueError, TypeError, OverflowError...
        raise InvalidTransaction(f"raw transaction could not be decoded: {exc}") from exc
    if not same:
        raise InvalidTransaction(
            "raw transaction does not re-serialise to the same bytes; it is not canonical"
        )
    return tx


def _inputs_of(tx: Any) -> tuple[TxInput, ...]:
    return tuple(
        TxInput(str(i.source_txid).lower(), int(i.source_output_index), int(i.sequence))
        for i in tx.inputs
    )


def _outputs_of(tx: Any) -> tuple[TxOutput, ...]:
    return tuple(TxOutput(int(o.satoshis), bytes(o.locking_script.serialize())) for o in tx.outputs)


def _check_inputs(inputs: tuple[TxInput, ...]) -> None:
    if not inputs:
        raise InvalidTransaction("raw transaction has no inputs; it must spend something")
    outpoints = {(i.source_txid, i.source_vout) for i in inputs}
    if len(outpoints) != len(inputs):
        raise InvalidTransaction("raw transaction spends the same outpoint twice")
    null = (NULL_TXID, COINBASE_VOUT)
    if len(inputs) > 1 and null in outpoints:
        raise InvalidTransaction("only a single-input coinbase may spend the null outpoint")


def _check_outputs(outputs: tuple[TxOutput, ...]) -> None:
    if not outputs:
        raise InvalidTransaction("raw transaction has no outputs")
    for n, out in enumerate(outputs):
        if out.satoshis > MAX_SATOSHIS:
            raise InvalidTransaction(
                f"output {n} carries {out.satoshis} satoshis, more than MAX_SATOSHIS={MAX_SATOSHIS}"
            )
    if sum(o.satoshis for o in outputs) > MAX_SATOSHIS:
        raise InvalidTransaction(f"outputs total more than MAX_SATOSHIS={MAX_SATOSHIS}")


def txid_of_raw(raw: bytes) -> str:
    """The display-hex txid of serialised transaction bytes (no parsing, no validation)."""
    return str(hash256(raw)[::-1].hex())


def parse_raw_tx(raw: bytes) -> ParsedTx:
    """Parse exactly one serialised transaction, strictly (see :class:`ParsedTx`).

    Raises :class:`InvalidInput` for a non-bytes argument and :class:`InvalidTransaction` for
    anything else that is wrong with it: empty, too large, truncated, trailing bytes,
    non-canonical encoding, no inputs or outputs, duplicate outpoints, out-of-range values.
    """
    data = _require_bytes(raw, "raw transaction")
    if not data:
        raise InvalidTransaction(f"raw transaction is empty; {TRUNCATION_HINT}")
    if len(data) > MAX_TX_BYTES:
        raise InvalidTransaction(
            f"raw transaction is too large: {len(data)} bytes > MAX_TX_BYTES={MAX_TX_BYTES}"
        )
    _check_framing(data)
    tx = _decode_with_sdk(data)
    inputs, outputs = _inputs_of(tx), _outputs_of(tx)
    _check_inputs(inputs)
    _check_outputs(outputs)
    return ParsedTx(
        txid=txid_of_raw(data),
        raw=data,
        version=int(tx.version),
        inputs=inputs,
        outputs=outputs,
        locktime=int(tx.locktime),
    )


# --------------------------------------------------------------------------- BUMP (BRC-74)


@dataclass(slots=True)
class _BumpFrame:
    """What the framing scan of one BUMP learnt: height, shape and the proven level-0 txids."""

    block_height: int
    tree_height: int
    level0_count: int
    proven: dict[str, int]


@dataclass(frozen=True, slots=True)
class _LoadedBump:
    """A structurally valid BUMP; ``path`` is None for a one-transaction block."""

    raw: bytes
    frame: _BumpFrame
    path: Any


def _scan_leaf(cur: _Cursor, level: int, frame: _BumpFrame) -> None:
    where = f"level {level} leaf"
    offset = cur.varint(f"{where} offset")
    if offset >> (frame.tree_height - level):
        raise _Malformed(f"{where} offset {offset} is outside a tree of height {frame.tree_height}")
    flags = cur.uint(1, f"{where} flags")
    if flags not in (BUMP_FLAG_HASH, BUMP_FLAG_DUPLICATE, BUMP_FLAG_TXID):
        raise _Malformed(f"{where} at offset {offset} has unknown flags {flags:#04x}")
    if flags == BUMP_FLAG_DUPLICATE:
        return
    leaf_hash = cur.take(HASH_BYTES, f"{where} hash")[::-1].hex()
    if level == 0 and flags == BUMP_FLAG_TXID:
        if leaf_hash in frame.proven:
            raise _Malformed(f"txid {leaf_hash} appears twice at level 0")
        frame.proven[leaf_hash] = offset


def _scan_bump(cur: _Cursor) -> _BumpFrame:
    """Advance over one BUMP, checking lengths, flags, offsets and canonical varints."""
    block_height = cur.varint("block height")
    if block_height > MAX_BLOCK_HEIGHT:
        raise _Malformed(f"block height {block_height} is above {MAX_BLOCK_HEIGHT}")
    tree_height = cur.uint(1, "tree height")
    if not 1 <= tree_height <= MAX_TREE_HEIGHT:
        raise _Malformed(f"tree height {tree_height} is outside 1..{MAX_TREE_HEIGHT}")
    frame = _BumpFrame(block_height, tree_height, cur.varint("level 0 leaf count"), {})
    if frame.level0_count == 0:
        raise _Malformed("level 0 has no leaves")
    for level in range(tree_height):
        count = frame.level0_count if level == 0 else cur.varint(f"level {level} leaf count")
        for _ in range(count):
            _scan_leaf(cur, level, frame)
    return frame


def _is_one_tx_block(frame: _BumpFrame) -> bool:
    """A single level holding a single leaf: the block has one transaction, root == txid."""
    if frame.tree_height != 1 or frame.level0_count != 1:
        return False
    if list(frame.proven.values()) != [0]:
        raise _Malformed("a one-transaction block path must hold its txid, flagged, at offset 0")
    return True


def _frame_bump(raw: bytes) -> tuple[_BumpFrame, bool]:
    """Frame-check one whole BUMP; returns its frame and whether it is a one-tx block."""
    cur = _Cursor(raw)
    try:
        frame = _scan_bump(cur)
        one_tx = _is_one_tx_block(frame)
    except _Truncated as exc:
        raise InvalidProof(f"merkle path (BUMP) is truncated: {exc}") from exc
    except _Malformed as exc:
        raise InvalidProof(f"merkle path (BUMP) is malformed: {exc}") from exc
    if cur.remaining:
        raise InvalidProof(f"{cur.remaining} trailing bytes after the merkle path (BUMP)")
    if not one_tx and not frame.proven:
        raise InvalidProof("merkle path (BUMP) flags no level-0 leaf as a txid; it proves nothing")
    return frame, one_tx


def _load_bump(raw: bytes) -> _LoadedBump:
    """Frame-check then decode one BUMP with the SDK (offset legality, consistent roots)."""
    frame, one_tx = _frame_bump(raw)
    if one_tx:
        return _LoadedBump(raw, frame, None)  # bsv-sdk 2.4 cannot compute a one-tx block root
    try:
        path = MerklePath.from_binary(raw)
    except Exception as exc:
        raise InvalidProof(f"merkle path (BUMP) is inconsistent: {exc}") from exc
    return _LoadedBump(raw, frame, path)


def _prove(bump: _LoadedBump, txid: str) -> ParsedProof:
    offset = bump.frame.proven.get(txid)
    if offset is None:
        raise InvalidProof(
            f"txid {txid} is not a proven leaf of this merkle path "
            f"(block {bump.frame.block_height}; it proves {len(bump.frame.proven)} txid(s))"
        )
    root = txid if bump.path is None else _compute_root(bump.path, txid)
    return ParsedProof(bump.frame.block_height, txid, root, offset, bump.raw)


def _compute_root(path: Any, txid: str) -> str:
    try:
        root = str(path.compute_root(txid)).lower()
    except Exception as exc:
        raise InvalidProof(f"merkle path cannot compute a root for txid {txid}: {exc}") from exc
    if not _TXID_RE.fullmatch(root):
        raise InvalidProof(f"merkle path computed a malformed root {root!r} for txid {txid}")
    return root


def _require_txid(txid: object) -> str:
    if not isinstance(txid, str) or not _TXID_RE.fullmatch(txid):
        raise InvalidInput(f"txid must be 64 hex characters, got {txid!r}")
    return txid.lower()


def parse_bump(bump: bytes, txid: str) -> ParsedProof:
    """Parse a BRC-74 merkle path and compute the root it gives ``txid``.

    Raises :class:`InvalidInput` for a non-bytes ``bump`` or a ``txid`` that is not 64 hex
    characters, and :class:`InvalidProof` when the path is malformed, truncated, has trailing
    bytes, or does not flag ``txid`` as a level-0 leaf. A one-transaction block (a single
    level-0 leaf at offset 0) proves its txid with ``merkle_root == txid``.
    """
    data = _require_bytes(bump, "merkle path (BUMP)")
    wanted = _require_txid(txid)
    if not data:
        raise InvalidProof("merkle path (BUMP) is empty")
    if len(data) > MAX_BUMP_BYTES:
        raise InvalidProof(f"merkle path is too large: {len(data)} > {MAX_BUMP_BYTES} bytes")
    return _prove(_load_bump(data), wanted)


# --------------------------------------------------------------------------- BEEF


@dataclass(slots=True)
class _BeefBody:
    """What a V1/V2 BEEF body holds, in order; filled while reading."""

    version: Literal["V1", "V2"]
    bumps: list[_LoadedBump]
    order: list[str]
    txs: dict[str, ParsedTx]
    bump_of: dict[str, int]
    txid_only: set[str]


def _read_bumps(cur: _Cursor) -> list[_LoadedBump]:
    bumps = []
    for n in range(cur.varint("BUMP count")):
        start = cur.pos
        try:
            _scan_bump(cur)
        except (_Truncated, _Malformed) as exc:
            raise type(exc)(f"BUMP {n}: {exc}") from exc
        bumps.append(_load_bump(cur.data[start : cur.pos]))
    return bumps


def _read_tx(cur: _Cursor, n: int) -> ParsedTx:
    start = cur.pos
    try:
        _scan_tx(cur)
    except (_Truncated, _Malformed) as exc:
        raise type(exc)(f"transaction {n}: {exc}") from exc
    try:
        return parse_raw_tx(cur.data[start : cur.pos])
    except InvalidTransaction as exc:
        raise InvalidTransaction(f"BEEF transaction {n}: {exc}") from exc


def _add_tx(body: _BeefBody, tx: ParsedTx, bump_index: int | None) -> None:
    _add_txid(body, tx.txid)
    body.txs[tx.txid] = tx
    if bump_index is not None:
        body.bump_of[tx.txid] = bump_index


def _add_txid(body: _BeefBody, txid: str) -> None:
    if txid in body.txs or txid in body.txid_only:
        raise InvalidTransaction(f"BEEF lists transaction {txid} twice")
    body.order.append(txid)


def _read_v1_entry(cur: _Cursor, body: _BeefBody, n: int) -> None:
    tx = _read_tx(cur, n)
    has_bump = cur.uint(1, f"transaction {n} has-BUMP flag")
    if has_bump not in (0, 1):
        raise _Malformed(f"transaction {n} has-BUMP flag is {has_bump}, expected 0 or 1")
    _add_tx(body, tx, cur.varint(f"transaction {n} BUMP index") if has_bump else None)


def _read_v2_entry(cur: _Cursor, body: _BeefBody, n: int) -> None:
    fmt = cur.uint(1, f"transaction {n} format")
    if fmt == V2_FORMAT_TXID_ONLY:
        txid = cur.take(HASH_BYTES, f"transaction {n} txid")[::-1].hex()
        _add_txid(body, txid)
        body.txid_only.add(txid)
        return
    if fmt not in (V2_FORMAT_RAW, V2_FORMAT_RAW_WITH_BUMP):
        raise _Malformed(f"transaction {n} has unknown format byte {fmt}")
    bump_index = cur.varint(f"transaction {n} BUMP index") if fmt else None
    _add_tx(body, _read_tx(cur, n), bump_index)


def _read_body(cur: _Cursor, version: Literal["V1", "V2"]) -> _BeefBody:
    body = _BeefBody(version, _read_bumps(cur), [], {}, {}, set())
    read_entry = _read_v1_entry if version == "V1" else _read_v2_entry
    for n in range(cur.varint("transaction count")):
        read_entry(cur, body, n)
    return body


def _read_framed(data: bytes, start: int, label: str) -> _BeefBody:
    """Read a V1/V2 BEEF starting at ``start`` that must run to the end of ``data``."""
    magic = data[start : start + MAGIC_BYTES]
    if len(magic) < MAGIC_BYTES:
        raise InvalidTransaction(f"{label} is truncated: it needs a {MAGIC_BYTES}-byte version")
    version = _BEEF_MAGICS.get(magic)
    if version is None:
        raise InvalidTransaction(
            f"unknown BEEF version {magic.hex()} in {label}; "
            f"expected {BEEF_V1_MAGIC.hex()}, {BEEF_V2_MAGIC.hex()} or {ATOMIC_BEEF_MAGIC.hex()}"
        )
    cur = _Cursor(data, start + MAGIC_BYTES)
    try:
        body = _read_body(cur, version)
    except _Truncated as exc:
        raise InvalidTransaction(f"{label} is truncated: {exc}") from exc
    except _Malformed as exc:
        raise InvalidTransaction(f"{label} is malformed: {exc}") from exc
    if cur.remaining:
        raise InvalidTransaction(f"{cur.remaining} trailing bytes after the {label}")
    return body


def _check_dependencies(body: _BeefBody) -> None:
    """Parents must precede children, and every spent parent output must exist."""
    position = {txid: n for n, txid in enumerate(body.order)}
    for n, txid in enumerate(body.order):
        for inp in _inputs_listed(body, txid):
            at = position.get(inp.source_txid)
            if at is None:
                continue
            if at >= n:
                raise InvalidTransaction(
                    f"BEEF is not in dependency order: {txid} spends {inp.source_txid}, "
                    "which comes after it"
                )
            _check_parent_output(body, txid, inp)


def _check_parent_output(body: _BeefBody, txid: str, inp: TxInput) -> None:
    parent = body.txs.get(inp.source_txid)
    if parent is not None and inp.source_vout >= len(parent.outputs):
        raise InvalidTransaction(
            f"BEEF transaction {txid} spends output {inp.source_vout} of {parent.txid}, "
            f"which has only {len(parent.outputs)} outputs"
        )


def _proofs_of(body: _BeefBody) -> dict[str, ParsedProof]:
    proofs = {}
    for txid, index in body.bump_of.items():
        if index >= len(body.bumps):
            raise InvalidProof(
                f"BEEF transaction {txid} refers to BUMP {index} but the BEEF holds "
                f"{len(body.bumps)} BUMP(s)"
            )
        proofs[txid] = _prove(body.bumps[index], txid)
    return proofs


def _last_full_tx(body: _BeefBody) -> ParsedTx:
    if not body.order:
        raise InvalidTransaction("BEEF holds no transactions")
    subject = body.txs.get(body.order[-1])
    if subject is None:
        raise InvalidTransaction("the last BEEF entry is txid-only, so there is no subject")
    return subject


def _inputs_listed(body: _BeefBody, txid: str) -> tuple[TxInput, ...]:
    """The inputs of a full transaction of the BEEF; none for a txid-only entry."""
    tx = body.txs.get(txid)
    return tx.inputs if tx is not None else ()


def _ancestry(body: _BeefBody, subject: str) -> set[str]:
    """The subject and every listed transaction it descends from."""
    listed = set(body.order)
    seen: set[str] = set()
    todo = [subject]
    while todo:
        txid = todo.pop()
        if txid in seen or txid not in listed:
            continue
        seen.add(txid)
        todo.extend(i.source_txid for i in _inputs_listed(body, txid))
    return seen


def _atomic_subject(data: bytes, body: _BeefBody) -> ParsedTx:
    txid = data[MAGIC_BYTES:ATOMIC_HEADER_BYTES][::-1].hex()
    subject = body.txs.get(txid)
    if subject is None:
        raise InvalidTransaction(f"Atomic BEEF subject {txid} is not among its full transactions")
    unrelated = set(body.order) - _ancestry(body, txid)
    if unrelated:
        raise InvalidTransaction(
            f"Atomic BEEF holds {len(unrelated)} transaction(s) unrelated to subject {txid}, "
            f"e.g. {min(unrelated)}"
        )
    return subject


def _result(version: BeefVersion, subject: ParsedTx, body: _BeefBody) -> ParsedBeef:
    _check_dependencies(body)
    return ParsedBeef(
        version=version,
        subject=subject,
        transactions=MappingProxyType(dict(body.txs)),
        proofs=MappingProxyType(_proofs_of(body)),
        txid_only=frozenset(body.txid_only),
    )


def parse_beef(beef: bytes) -> ParsedBeef:
    """Parse a V1 (BRC-62), V2 (BRC-96) or Atomic (BRC-95) BEEF strictly, keeping every proof.

    The subject is the last transaction (V1, V2) or the declared one (Atomic). Raises
    :class:`InvalidInput` for a non-bytes argument, :class:`InvalidTransaction` for an unknown
    version, broken container framing (truncation, trailing bytes, bad flags), a transaction
    that does not parse strictly, duplicates or wrong order, and :class:`InvalidProof` for a
    BUMP that is inconsistent or does not prove the transaction attached to it.
    """
    data = _require_bytes(beef, "BEEF")
    if len(data) > MAX_BEEF_BYTES:
        raise InvalidTransaction(f"BEEF is too large: {len(data)} > {MAX_BEEF_BYTES} bytes")
    if data[:MAGIC_BYTES] != ATOMIC_BEEF_MAGIC:
        body = _read_framed(data, 0, "BEEF")
        return _result(body.version, _last_full_tx(body), body)
    if len(data) < ATOMIC_HEADER_BYTES:
        raise InvalidTransaction(
            f"Atomic BEEF is truncated: its header needs {ATOMIC_HEADER_BYTES} bytes, "
            f"got {len(data)}"
        )
    body = _read_framed(data, ATOMIC_HEADER_BYTES, "BEEF inside the Atomic BEEF")
    return _result("ATOMIC", _atomic_subject(data, body), body)


# --------------------------------------------------------------------------- encoding

MAX_BEEF_TRANSACTIONS = 10_000


def _varint(n: int) -> bytes:
    assert n >= 0
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFF_FFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def encode_atomic_beef(subject_raw: bytes, ancestors: list[tuple[bytes, bytes | None]]) -> bytes:
    """An Atomic BEEF (BRC-95 around a BRC-96 V2 BEEF) of ``ancestors`` -- ``(raw tx, BUMP or
    None)``, every parent before the transactions that spend it -- then the subject. Identical
    BUMPs are stored once. The result parses back with :func:`parse_beef`."""
    if len(ancestors) >= MAX_BEEF_TRANSACTIONS:
        raise InvalidInput(f"a BEEF of at most {MAX_BEEF_TRANSACTIONS} transactions")
    bumps: list[bytes] = []
    entries = []
    for raw, bump in [*ancestors, (subject_raw, None)]:
        if bump is None:
            entries.append(bytes([V2_FORMAT_RAW]) + raw)
            continue
        if bump not in bumps:
            bumps.append(bump)
        entries.append(bytes([V2_FORMAT_RAW_WITH_BUMP]) + _varint(bumps.index(bump)) + raw)
    body = b"".join([BEEF_V2_MAGIC, _varint(len(bumps)), *bumps, _varint(len(entries)), *entries])
    return ATOMIC_BEEF_MAGIC + bytes.fromhex(txid_of_raw(subject_raw))[::-1] + body
