"""Deterministic chain builders for the demo, tests and benchmarks: raw transactions, blocks
with BUMPs, headers, BEEF.

Everything here is hand-serialised with ``hashlib`` only (no bsv-sdk, no network, no randomness),
so it is an independent check of ``adapters.bsv_codec``. The same arguments always give the same
bytes. Hashes are shown as display hex (the reverse of their internal byte order), like txids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

NULL_TXID = "00" * 32
COINBASE_VOUT = 0xFFFFFFFF
FINAL_SEQUENCE = 0xFFFFFFFF
HASH_BYTES = 32
PUBKEY_HASH_BYTES = 20
COINBASE_TAG = b"chainkit"
MAX_SMALL_INT = 16  # heights 1..16 are pushed as OP_1..OP_16
OP_1_BASE = 0x50  # OP_1 is 0x51
BUMP_FLAG_HASH = 0
BUMP_FLAG_DUPLICATE = 1
BUMP_FLAG_TXID = 2
V2_FORMAT_RAW = 0
V2_FORMAT_RAW_WITH_BUMP = 1
V2_FORMAT_TXID_ONLY = 2
BEEF_V1_MAGIC = bytes.fromhex("0100beef")
BEEF_V2_MAGIC = bytes.fromhex("0200beef")
ATOMIC_BEEF_MAGIC = bytes.fromhex("01010101")

Outpoint = tuple[str, int]
Output = tuple[int, bytes]


# --------------------------------------------------------------------------- primitives


def varint(n: int) -> bytes:
    """Bitcoin CompactSize: the minimal encoding of ``n``."""
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + n.to_bytes(2, "little")
    if n <= 0xFFFF_FFFF:
        return b"\xfe" + n.to_bytes(4, "little")
    return b"\xff" + n.to_bytes(8, "little")


def sha256d(data: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def internal(display_hex: str) -> bytes:
    """Display hex (txid, merkle root) -> internal byte order."""
    return bytes.fromhex(display_hex)[::-1]


def display(internal_bytes: bytes) -> str:
    """Internal byte order -> display hex."""
    return internal_bytes[::-1].hex()


def txid_of(raw: bytes) -> str:
    """The display-hex txid of a serialised transaction."""
    return display(sha256d(raw))


# --------------------------------------------------------------------------- transactions


def p2pkh_script(seed: int) -> bytes:
    """A 25-byte P2PKH locking script whose pubkey hash is derived from ``seed``."""
    pubkey_hash = hashlib.sha256(f"chainkit-p2pkh:{seed}".encode()).digest()[:PUBKEY_HASH_BYTES]
    return b"\x76\xa9\x14" + pubkey_hash + b"\x88\xac"


def _input(txid: str, vout: int, script: bytes = b"") -> bytes:
    return (
        internal(txid)
        + vout.to_bytes(4, "little")
        + varint(len(script))
        + script
        + (FINAL_SEQUENCE.to_bytes(4, "little"))
    )


def _output(satoshis: int, script: bytes) -> bytes:
    return satoshis.to_bytes(8, "little") + varint(len(script)) + script


def _assemble(ins: Sequence[bytes], outs: Sequence[bytes], locktime: int, version: int) -> bytes:
    return b"".join(
        [
            version.to_bytes(4, "little"),
            varint(len(ins)),
            *ins,
            varint(len(outs)),
            *outs,
            locktime.to_bytes(4, "little"),
        ]
    )


def make_tx(
    inputs: Sequence[Outpoint],
    outputs: Sequence[Output],
    *,
    locktime: int = 0,
    version: int = 1,
) -> bytes:
    """An unsigned raw transaction (empty unlocking scripts, final sequences) of this shape."""
    ins = [_input(txid, vout) for txid, vout in inputs]
    outs = [_output(sats, script) for sats, script in outputs]
    return _assemble(ins, outs, locktime, version)


def _script_num(n: int) -> bytes:
    """Minimal little-endian CScriptNum encoding of a non-negative integer."""
    out = n.to_bytes((n.bit_length() + 7) // 8, "little") if n else b""
    return out + b"\x00" if out and out[-1] & 0x80 else out


def height_push(height: int) -> bytes:
    """BIP34 height push, as Bitcoin Core's ``CScript() << height`` writes it."""
    if height == 0:
        return b"\x00"
    if height <= MAX_SMALL_INT:
        return bytes([OP_1_BASE + height])
    num = _script_num(height)
    return bytes([len(num)]) + num


def make_coinbase(height: int, outputs: Sequence[Output], *, tag: bytes = COINBASE_TAG) -> bytes:
    """A coinbase: one input spending the null outpoint, script = height push + ``tag`` push."""
    script = height_push(height) + bytes([len(tag)]) + tag
    outs = [_output(sats, locking) for sats, locking in outputs]
    return _assemble([_input(NULL_TXID, COINBASE_VOUT, script)], outs, 0, 1)


# --------------------------------------------------------------------------- blocks and BUMPs


def _tree(leaves: list[bytes]) -> list[list[bytes]]:
    """All levels of the merkle tree, leaves first (odd levels pair the last hash with itself)."""
    levels = [leaves]
    while len(levels[-1]) > 1:
        nodes = levels[-1]
        pairs = [(nodes[i], nodes[min(i + 1, len(nodes) - 1)]) for i in range(0, len(nodes), 2)]
        levels.append([sha256d(left + right) for left, right in pairs])
    return levels


def _leaf(offset: int, flag: int, node: bytes = b"") -> bytes:
    return varint(offset) + bytes([flag]) + node


def _bump_level(levels: list[list[bytes]], index: int, height: int) -> bytes:
    nodes = levels[height]
    sibling = (index >> height) ^ 1
    if sibling < len(nodes):
        leaves = {sibling: _leaf(sibling, BUMP_FLAG_HASH, nodes[sibling])}
    else:  # the last node of an odd level is paired with itself
        leaves = {sibling: _leaf(sibling, BUMP_FLAG_DUPLICATE)}
    if height == 0:
        leaves[index] = _leaf(index, BUMP_FLAG_TXID, nodes[index])
    return varint(len(leaves)) + b"".join(leaves[k] for k in sorted(leaves))


def _bump(levels: list[list[bytes]], index: int, block_height: int) -> bytes:
    if len(levels) == 1:  # one-tx block: a single level holding just the txid
        return varint(block_height) + b"\x01\x01" + _leaf(0, BUMP_FLAG_TXID, levels[0][0])
    tree_height = len(levels) - 1
    body = b"".join(_bump_level(levels, index, h) for h in range(tree_height))
    return varint(block_height) + bytes([tree_height]) + body


def make_block(txids: Sequence[str], *, height: int) -> tuple[str, dict[str, bytes]]:
    """The merkle root (display hex) of a block of ``txids`` and a BRC-74 BUMP proving each."""
    if not txids or len(set(txids)) != len(txids):
        raise ValueError("a block needs at least one txid and no duplicates")
    levels = _tree([internal(t) for t in txids])
    bumps = {t.lower(): _bump(levels, i, height) for i, t in enumerate(txids)}
    return display(levels[-1][0]), bumps


def merkle_root_of(txids: Sequence[str]) -> str:
    """The merkle root (display hex) of a block holding ``txids`` in this order."""
    return make_block(txids, height=0)[0]


# --------------------------------------------------------------------------- headers


def _dummy_root(height: int, salt: str) -> str:
    return hashlib.sha256(f"chainkit-root:{height}:{salt}".encode()).hexdigest()


def make_headers(
    n: int,
    *,
    start_height: int = 0,
    prev_hash: str = NULL_TXID,
    roots: Mapping[int, str] | None = None,
    salt: str = "",
) -> list[dict[str, Any]]:
    """``n`` linked headers ``{height, hash, prev_hash, merkle_root}`` from ``start_height``.

    ``hash`` is sha256 of (height, prev_hash, merkle_root, salt): a different ``salt`` makes a
    different fork. ``roots`` fixes the merkle root at some heights; the rest get a dummy root
    that depends on the height and the salt.
    """
    headers: list[dict[str, Any]] = []
    prev = prev_hash
    for height in range(start_height, start_height + n):
        root = (roots or {}).get(height) or _dummy_root(height, salt)
        block_hash = hashlib.sha256(f"{height}:{prev}:{root}:{salt}".encode()).hexdigest()
        headers.append(
            {"height": height, "hash": block_hash, "prev_hash": prev, "merkle_root": root}
        )
        prev = block_hash
    return headers


# --------------------------------------------------------------------------- BEEF


def _bump_table(entries: Sequence[tuple[bytes, bytes | None]]) -> list[bytes]:
    table: list[bytes] = []
    for _, bump in entries:
        if bump is not None and bump not in table:
            table.append(bump)
    return table


def _v1_entry(raw: bytes, index: int | None) -> bytes:
    return raw + (b"\x00" if index is None else b"\x01" + varint(index))


def _v2_entry(raw: bytes, index: int | None) -> bytes:
    if index is None:
        return bytes([V2_FORMAT_RAW]) + raw
    return bytes([V2_FORMAT_RAW_WITH_BUMP]) + varint(index) + raw


def _plain_beef(
    version: Literal["V1", "V2"],
    entries: Sequence[tuple[bytes, bytes | None]],
    txid_only: Sequence[str],
) -> bytes:
    if txid_only and version == "V1":
        raise ValueError("txid-only entries exist only in BEEF V2")
    table = _bump_table(entries)
    encode = _v1_entry if version == "V1" else _v2_entry
    known = [bytes([V2_FORMAT_TXID_ONLY]) + internal(t) for t in txid_only]
    txs = [encode(raw, None if b is None else table.index(b)) for raw, b in entries]
    magic = BEEF_V1_MAGIC if version == "V1" else BEEF_V2_MAGIC
    return b"".join(
        [magic, varint(len(table)), *table, varint(len(known) + len(txs)), *known, *txs]
    )


def make_beef(
    version: Literal["V1", "V2", "ATOMIC"],
    subject_raw: bytes,
    *,
    bump: bytes | None = None,
    parents: Sequence[tuple[bytes, bytes | None]] = (),
    txid_only: Sequence[str] = (),
    atomic_inner: Literal["V1", "V2"] = "V2",
) -> bytes:
    """A BEEF (BRC-62 V1, BRC-96 V2, BRC-95 Atomic) of ``parents`` (in the given order) then
    the subject, each with its optional BUMP (identical BUMP bytes are stored once).

    ``txid_only`` (V2 only) adds txid-only entries before the parents. An Atomic BEEF is the
    Atomic prefix, the subject txid in internal byte order, then an ``atomic_inner`` BEEF; it is
    only valid when every parent is an ancestor of the subject.
    """
    entries = [*parents, (subject_raw, bump)]
    if version != "ATOMIC":
        return _plain_beef(version, entries, txid_only)
    inner = _plain_beef(atomic_inner, entries, txid_only)
    return ATOMIC_BEEF_MAGIC + internal(txid_of(subject_raw)) + inner
