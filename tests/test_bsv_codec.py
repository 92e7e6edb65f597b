"""Tests of the strict bsv-sdk boundary (adapters/bsv_codec.py) and of the chain test kit."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.bsv_codec import (
    MAX_BEEF_BYTES,
    MAX_SATOSHIS,
    MAX_TX_BYTES,
    NULL_TXID,
    ParsedProof,
    ParsedTx,
    TxInput,
    TxOutput,
    parse_beef,
    parse_bump,
    parse_raw_tx,
)
from adapters.chainkit import (
    BEEF_V1_MAGIC,
    BEEF_V2_MAGIC,
    internal,
    make_beef,
    make_block,
    make_coinbase,
    make_headers,
    make_tx,
    merkle_root_of,
    p2pkh_script,
    txid_of,
    varint,
)
from ledger.errors import InvalidInput, InvalidProof, InvalidTransaction, LedgerError

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
BLOCK_170_COINBASE = "b1fea52486ce0c62bb442b530a3f0132b826c74e473d1f2c220bfa78111c5082"
BLOCK_170_SPEND = "f4184fc596403b9d638783cf57adfe4c75c605f6356fbc91338530e9831e9e16"
BLOCK_170_ROOT = "7dac2c5666815c17a3b36427de37bb9d2e2c5ccec3f8633eb91a4205cb4c10ff"
Version = Literal["V1", "V2", "ATOMIC"]
VERSIONS: tuple[Version, ...] = ("V1", "V2", "ATOMIC")


def _txid(n: int) -> str:
    return f"{n:064x}"


def sample_tx() -> bytes:
    """Two inputs, three outputs (one with a 300-byte script: a 3-byte varint), a locktime."""
    outputs = [(1_000, p2pkh_script(1)), (0, b"\x6a" + b"\x00" * 299), (7, b"")]
    return make_tx([("ab" * 32, 1), ("cd" * 32, 7)], outputs, locktime=123_456, version=2)


def chain() -> dict[str, bytes]:
    """grandparent -> parent -> child (each spends output 1 of the previous one)."""
    grandparent = make_tx([("11" * 32, 0)], [(5_000, p2pkh_script(1)), (4_000, p2pkh_script(2))])
    parent = make_tx([(txid_of(grandparent), 1)], [(100, p2pkh_script(3)), (3_000, b"\x51")])
    child = make_tx([(txid_of(parent), 1)], [(2_500, p2pkh_script(4))])
    return {"grandparent": grandparent, "parent": parent, "child": child}


# --------------------------------------------------------------------------- raw transactions


def test_parse_raw_tx_returns_every_field() -> None:
    raw = sample_tx()
    tx = parse_raw_tx(raw)
    assert tx.raw == raw
    assert tx.txid == txid_of(raw)
    assert tx.version == 2
    assert tx.locktime == 123_456
    assert tx.inputs == (TxInput("ab" * 32, 1, 0xFFFFFFFF), TxInput("cd" * 32, 7, 0xFFFFFFFF))
    assert tx.outputs[0] == TxOutput(1_000, p2pkh_script(1))
    assert len(tx.outputs[1].locking_script) == 300
    assert tx.outputs[2] == TxOutput(7, b"")
    assert not tx.is_coinbase


outpoints = st.tuples(st.binary(min_size=32, max_size=32).map(bytes.hex), st.integers(0, 2**32 - 1))
outputs = st.tuples(st.integers(0, MAX_SATOSHIS // 10), st.binary(max_size=300))


@FAST
@given(
    ins=st.lists(outpoints, min_size=1, max_size=4, unique=True),
    outs=st.lists(outputs, min_size=1, max_size=4),
    locktime=st.integers(0, 2**32 - 1),
    version=st.integers(0, 2**32 - 1),
)
def test_parse_raw_tx_round_trips_any_shape(
    ins: list[tuple[str, int]], outs: list[tuple[int, bytes]], locktime: int, version: int
) -> None:
    raw = make_tx(ins, outs, locktime=locktime, version=version)
    tx = parse_raw_tx(raw)
    assert (tx.raw, tx.txid, tx.version, tx.locktime) == (raw, txid_of(raw), version, locktime)
    assert [(i.source_txid, i.source_vout) for i in tx.inputs] == ins
    assert [(o.satoshis, o.locking_script) for o in tx.outputs] == outs


def test_parse_raw_tx_reads_wide_output_count() -> None:
    raw = make_tx([("ab" * 32, 0)], [(n, b"\x51") for n in range(253)])  # count needs fd 00 fd
    assert len(parse_raw_tx(raw).outputs) == 253


def test_parse_raw_tx_accepts_bytearray() -> None:
    raw = sample_tx()
    assert parse_raw_tx(bytearray(raw)).txid == txid_of(raw)  # type: ignore[arg-type]


def test_empty_raw_tx_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="empty"):
        parse_raw_tx(b"")


def test_every_truncation_of_a_tx_is_rejected() -> None:
    raw = sample_tx()
    for cut in range(1, len(raw)):
        with pytest.raises(InvalidTransaction, match="truncated"):
            parse_raw_tx(raw[:cut])


@FAST
@given(ins=st.lists(outpoints, min_size=1, max_size=3, unique=True), data=st.data())
def test_random_truncations_are_rejected(ins: list[tuple[str, int]], data: st.DataObject) -> None:
    raw = make_tx(ins, [(1, p2pkh_script(len(ins)))])
    cut = data.draw(st.integers(0, len(raw) - 1))
    with pytest.raises(InvalidTransaction):
        parse_raw_tx(raw[:cut])


@pytest.mark.parametrize("missing", [1, 2, 3])
def test_missing_locktime_bytes_are_rejected(missing: int) -> None:
    with pytest.raises(InvalidTransaction, match="truncated: locktime"):
        parse_raw_tx(sample_tx()[:-missing])


@pytest.mark.parametrize("extra", [1, 100])
def test_trailing_bytes_are_rejected(extra: int) -> None:
    with pytest.raises(InvalidTransaction, match=f"^{extra} trailing bytes after the transaction"):
        parse_raw_tx(sample_tx() + b"\x00" * extra)


@pytest.mark.parametrize("value", [sample_tx().hex(), None, 42, [1, 2, 3]])
def test_non_bytes_raw_tx_is_invalid_input(value: object) -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_raw_tx(value)  # type: ignore[arg-type]


def test_oversized_raw_tx_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="too large"):
        parse_raw_tx(bytes(MAX_TX_BYTES + 1))


def test_tx_without_inputs_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="no inputs"):
        parse_raw_tx(make_tx([], [(1, b"\x51")]))


def test_tx_without_outputs_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="no outputs"):
        parse_raw_tx(make_tx([("ab" * 32, 0)], []))


def test_non_canonical_varint_is_rejected() -> None:
    raw = make_tx([("ab" * 32, 0)], [(1, b"\x51")])
    padded = raw[:4] + b"\xfd\x01\x00" + raw[5:]  # input count 1 written in three bytes
    with pytest.raises(InvalidTransaction, match="canonical"):
        parse_raw_tx(padded)


def test_output_above_the_money_supply_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="MAX_SATOSHIS"):
        parse_raw_tx(make_tx([("ab" * 32, 0)], [(MAX_SATOSHIS + 1, b"\x51")]))


def test_outputs_totalling_above_the_money_supply_are_rejected() -> None:
    half = MAX_SATOSHIS // 2 + 1
    with pytest.raises(InvalidTransaction, match="total"):
        parse_raw_tx(make_tx([("ab" * 32, 0)], [(half, b"\x51"), (half, b"\x52")]))


def test_spending_one_outpoint_twice_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="same outpoint twice"):
        parse_raw_tx(make_tx([("ab" * 32, 0), ("ab" * 32, 0)], [(1, b"\x51")]))


@pytest.mark.parametrize("height", [0, 1, 16, 17, 500_000])
def test_coinbase_is_detected(height: int) -> None:
    tx = parse_raw_tx(make_coinbase(height, [(50 * 10**8, p2pkh_script(height))]))
    assert tx.is_coinbase
    assert tx.inputs[0].source_txid == NULL_TXID


@pytest.mark.parametrize("outpoint", [(NULL_TXID, 0), ("ab" * 32, 0xFFFFFFFF), ("ab" * 32, 0)])
def test_ordinary_inputs_are_not_coinbase(outpoint: tuple[str, int]) -> None:
    assert not parse_raw_tx(make_tx([outpoint], [(1, b"\x51")])).is_coinbase


def test_null_outpoint_among_several_inputs_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="null outpoint"):
        parse_raw_tx(make_tx([(NULL_TXID, 0xFFFFFFFF), ("ab" * 32, 0)], [(1, b"\x51")]))


def test_coinbase_encodes_height_as_bip34_push() -> None:
    raw = make_coinbase(500_000, [(1, b"\x51")])
    assert bytes.fromhex("0320a107") in raw  # 500000 = 0x07a120, pushed little-endian
    assert txid_of(raw) != txid_of(make_coinbase(500_001, [(1, b"\x51")]))


def test_parsed_values_are_frozen() -> None:
    tx = parse_raw_tx(sample_tx())
    with pytest.raises(dataclasses.FrozenInstanceError):
        tx.txid = "00" * 32  # type: ignore[misc]


# --------------------------------------------------------------------------- BUMP


def _block(n: int, height: int = 800_000) -> tuple[list[str], str, dict[str, bytes]]:
    txids = [txid_of(make_tx([(_txid(i + 1), 0)], [(i, p2pkh_script(i))])) for i in range(n)]
    root, bumps = make_block(txids, height=height)
    return txids, root, bumps


@pytest.mark.parametrize("size", [1, 2, 3, 7, 100])
def test_bump_proves_every_txid_of_a_block(size: int) -> None:
    txids, root, bumps = _block(size)
    for offset, txid in enumerate(txids):
        assert parse_bump(bumps[txid], txid) == ParsedProof(
            800_000, txid, root, offset, bumps[txid]
        )


def test_bump_proves_every_txid_of_a_1000_tx_block() -> None:
    txids, root, bumps = _block(1000)
    assert {parse_bump(bumps[t], t).merkle_root for t in txids} == {root}


@FAST
@given(size=st.integers(1, 300), data=st.data())
def test_bump_root_matches_the_kit_for_any_block(size: int, data: st.DataObject) -> None:
    txids, root, bumps = _block(size, height=size)
    txid = txids[data.draw(st.integers(0, size - 1))]
    assert parse_bump(bumps[txid], txid).merkle_root == root


def test_kit_and_codec_agree_with_block_170() -> None:
    root, bumps = make_block([BLOCK_170_COINBASE, BLOCK_170_SPEND], height=170)
    assert root == BLOCK_170_ROOT
    assert parse_bump(bumps[BLOCK_170_SPEND], BLOCK_170_SPEND).merkle_root == BLOCK_170_ROOT
    assert parse_bump(bumps[BLOCK_170_COINBASE], BLOCK_170_COINBASE).leaf_offset == 0


def test_one_tx_block_root_is_the_txid() -> None:
    coinbase = txid_of(make_coinbase(7, [(1, b"\x51")]))
    root, bumps = make_block([coinbase], height=7)
    proof = parse_bump(bumps[coinbase], coinbase)
    assert root == coinbase
    assert (proof.merkle_root, proof.leaf_offset, proof.block_height) == (coinbase, 0, 7)


def test_bump_txid_is_normalised_to_lowercase() -> None:
    txids, _, bumps = _block(3)
    txid = txids[2]
    assert parse_bump(bumps[txid], txid.upper()).txid == txid


def test_bump_for_another_txid_is_invalid_proof() -> None:
    txids, _, bumps = _block(4)
    with pytest.raises(InvalidProof, match="is not a proven leaf of this merkle path"):
        parse_bump(bumps[txids[0]], txids[3])


def test_sibling_hash_is_not_a_proven_leaf() -> None:
    txids, _, bumps = _block(2)  # txids[1] is in the path, but only as the sibling
    with pytest.raises(InvalidProof, match="not a proven leaf"):
        parse_bump(bumps[txids[0]], txids[1])


@pytest.mark.parametrize("txid", ["", "ab" * 31, "zz" * 32, "ab" * 32 + "0", None, 5])
def test_malformed_txid_argument_is_invalid_input(txid: object) -> None:
    txids, _, bumps = _block(2)
    with pytest.raises(InvalidInput, match="64 hex"):
        parse_bump(bumps[txids[0]], txid)  # type: ignore[arg-type]


def test_non_bytes_bump_is_invalid_input() -> None:
    txids, _, bumps = _block(2)
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_bump(bumps[txids[0]].hex(), txids[0])  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [1, 3, 7])
def test_every_truncation_of_a_bump_is_invalid_proof(size: int) -> None:
    txids, _, bumps = _block(size)
    bump = bumps[txids[-1]]
    for cut in range(len(bump)):
        with pytest.raises(InvalidProof):
            parse_bump(bump[:cut], txids[-1])


@pytest.mark.parametrize("extra", [1, 100])
def test_trailing_bytes_after_a_bump_are_invalid_proof(extra: int) -> None:
    txids, _, bumps = _block(5)
    with pytest.raises(InvalidProof, match=f"{extra} trailing bytes"):
        parse_bump(bumps[txids[1]] + b"\x00" * extra, txids[1])


def _leaf(offset: int, flag: int, txid: str = "") -> bytes:
    return varint(offset) + bytes([flag]) + (internal(txid) if txid else b"")


@pytest.mark.parametrize(
    ("bump", "message"),
    [
        (varint(9) + b"\x00", "tree height 0"),
        (varint(9) + b"\x01\x02" + _leaf(0, 2, "ab" * 32) + _leaf(1, 3, "cd" * 32), "flags"),
        (varint(9) + b"\x01\x02" + _leaf(0, 2, "ab" * 32) + _leaf(2, 0, "cd" * 32), "outside"),
        (varint(9) + b"\x01\x01" + _leaf(1, 2, "ab" * 32), "one-transaction"),
        (varint(9) + b"\x01\x01" + _leaf(0, 0, "ab" * 32), "one-transaction"),
        (varint(9) + b"\x01\x00", "no leaves"),
        (b"\xfd\x09\x00\x01\x01" + _leaf(0, 2, "ab" * 32), "canonical"),
    ],
)
def test_malformed_bump_is_invalid_proof(bump: bytes, message: str) -> None:
    with pytest.raises(InvalidProof, match=message):
        parse_bump(bump, "ab" * 32)


def test_bump_root_comes_from_the_path_bytes() -> None:
    txids, root, bumps = _block(4)
    bump = bytearray(bumps[txids[0]])
    bump[-1] ^= 0xFF  # last byte of the top-level sibling hash
    assert parse_bump(bytes(bump), txids[0]).merkle_root != root


def _compound_bump(txids: list[str], height: int, level1: bytes = varint(0)) -> bytes:
    """A 4-tx block path proving txids[0] and txids[2] with every level-0 hash present."""
    level0 = b"".join(_leaf(i, 2 if i % 2 == 0 else 0, t) for i, t in enumerate(txids))
    return varint(height) + b"\x02" + varint(4) + level0 + level1


def test_compound_bump_proves_each_flagged_txid() -> None:
    txids, root, _ = _block(4)
    bump = _compound_bump(txids, 800_000)
    assert [parse_bump(bump, txids[i]).merkle_root for i in (0, 2)] == [root, root]
    with pytest.raises(InvalidProof, match="not a proven leaf"):
        parse_bump(bump, txids[1])


def test_compound_bump_with_inconsistent_roots_is_invalid_proof() -> None:
    txids, _, _ = _block(4)
    right_node = varint(1) + _leaf(1, 0, merkle_root_of(txids[2:]))  # explicit level-1 node
    bump = _compound_bump([*txids[:3], "ee" * 32], 800_000, right_node)  # level 0 disagrees
    with pytest.raises(InvalidProof, match="inconsistent"):
        parse_bump(bump, txids[0])
    consistent = _compound_bump(txids, 800_000, right_node)
    assert parse_bump(consistent, txids[0]).merkle_root == merkle_root_of(txids)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=120))
def test_garbage_bump_raises_only_invalid_proof(garbage: bytes) -> None:
    with contextlib.suppress(InvalidProof):
        parse_bump(garbage, "ab" * 32)


# --------------------------------------------------------------------------- BEEF


def proved_chain() -> tuple[dict[str, bytes], dict[str, bytes], dict[str, str]]:
    """chain(), each transaction proved at offset 1 of its own block: (raws, bumps, roots)."""
    raws = chain()
    bumps, roots = {}, {}
    for n, (name, raw) in enumerate(raws.items()):
        root, block_bumps = make_block([_txid(99), txid_of(raw)], height=100 + n)
        bumps[name], roots[name] = block_bumps[txid_of(raw)], root
    return raws, bumps, roots


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("with_parents", [False, True])
@pytest.mark.parametrize("with_proofs", [False, True])
def test_beef_round_trips(version: Version, with_parents: bool, with_proofs: bool) -> None:
    raws, bumps, roots = proved_chain()
    names = ["grandparent", "parent", "child"] if with_parents else ["child"]
    proof = {n: bumps[n] if with_proofs else None for n in names}
    parents = [(raws[n], proof[n]) for n in names[:-1]]
    beef = parse_beef(make_beef(version, raws["child"], bump=proof["child"], parents=parents))
    assert beef.version == version
    assert beef.subject == parse_raw_tx(raws["child"])
    assert list(beef.transactions) == [txid_of(raws[n]) for n in names]
    assert [tx.raw for tx in beef.transactions.values()] == [raws[n] for n in names]
    expected = {txid_of(raws[n]): (roots[n], 1) for n in names} if with_proofs else {}
    assert {t: (p.merkle_root, p.leaf_offset) for t, p in beef.proofs.items()} == expected
    assert beef.txid_only == frozenset()


def test_v1_beef_keeps_every_proof() -> None:
    """bsv-sdk's parse_beef keeps only the subject of a V1 BEEF; the codec must keep proofs."""
    raws, bumps, roots = proved_chain()
    parents = [(raws["grandparent"], bumps["grandparent"]), (raws["parent"], None)]
    beef = parse_beef(make_beef("V1", raws["child"], bump=bumps["child"], parents=parents))
    gp, child = txid_of(raws["grandparent"]), txid_of(raws["child"])
    assert beef.proofs == {
        gp: ParsedProof(100, gp, roots["grandparent"], 1, bumps["grandparent"]),
        child: ParsedProof(102, child, roots["child"], 1, bumps["child"]),
    }
    assert len(beef.transactions) == 3


def test_atomic_beef_wrapping_v1_keeps_proofs() -> None:
    raws, bumps, roots = proved_chain()
    parents = [(raws["parent"], bumps["parent"])]
    data = make_beef("ATOMIC", raws["child"], parents=parents, atomic_inner="V1")
    assert data[36:40] == BEEF_V1_MAGIC
    beef = parse_beef(data)
    assert beef.version == "ATOMIC"
    assert beef.subject.txid == txid_of(raws["child"])
    assert {t: p.merkle_root for t, p in beef.proofs.items()} == {
        txid_of(raws["parent"]): roots["parent"]
    }


@pytest.mark.parametrize("version", VERSIONS)
def test_beef_proofs_reparse_from_their_own_bump_bytes(version: Version) -> None:
    raws, bumps, _ = proved_chain()
    parents = [(raws["grandparent"], bumps["grandparent"]), (raws["parent"], bumps["parent"])]
    beef = parse_beef(make_beef(version, raws["child"], parents=parents))
    assert len(beef.proofs) == 2
    for proof in beef.proofs.values():
        assert parse_bump(proof.bump, proof.txid) == proof


def test_one_compound_bump_proves_two_beef_transactions() -> None:
    raws = chain()
    block = [txid_of(raws["parent"]), _txid(7), txid_of(raws["child"]), _txid(8)]
    root = merkle_root_of(block)
    bump = _compound_bump(block, 500)
    beef_bytes = make_beef("V2", raws["child"], bump=bump, parents=[(raws["parent"], bump)])
    assert beef_bytes.count(bump) == 1
    beef = parse_beef(beef_bytes)
    assert {t: (p.merkle_root, p.leaf_offset) for t, p in beef.proofs.items()} == {
        block[0]: (root, 0),
        block[2]: (root, 2),
    }


def test_v2_txid_only_entries_are_listed_apart() -> None:
    raws = chain()
    known = txid_of(raws["grandparent"])
    beef = parse_beef(
        make_beef("V2", raws["child"], parents=[(raws["parent"], None)], txid_only=[known])
    )
    assert beef.txid_only == frozenset({known})
    assert known not in beef.transactions
    assert beef.subject.txid == txid_of(raws["child"])


def test_beef_mappings_are_read_only() -> None:
    beef = parse_beef(make_beef("V2", chain()["child"]))
    with pytest.raises(TypeError):
        beef.transactions["x"] = beef.subject  # type: ignore[index]


@pytest.mark.parametrize(
    "data", [bytes.fromhex("0300beef") + b"\x00\x00", bytes.fromhex("efbe0001") + b"\x00\x00"]
)
def test_unknown_beef_magic_is_rejected(data: bytes) -> None:
    with pytest.raises(InvalidTransaction, match="unknown BEEF version"):
        parse_beef(data)


def test_atomic_beef_must_wrap_v1_or_v2() -> None:
    child = chain()["child"]
    inner_atomic = make_beef("ATOMIC", child)
    with pytest.raises(InvalidTransaction, match="unknown BEEF version 01010101"):
        parse_beef(inner_atomic[:36] + inner_atomic)


@pytest.mark.parametrize("version", VERSIONS)
def test_every_truncation_of_a_beef_is_rejected(version: Version) -> None:
    raws, bumps, _ = proved_chain()
    parents = [(raws["grandparent"], bumps["grandparent"]), (raws["parent"], None)]
    beef = make_beef(version, raws["child"], bump=bumps["child"], parents=parents)
    for cut in range(len(beef)):
        with pytest.raises(InvalidTransaction, match="truncated"):
            parse_beef(beef[:cut])


@pytest.mark.parametrize("version", VERSIONS)
def test_trailing_bytes_after_a_beef_are_rejected(version: Version) -> None:
    beef = make_beef(version, chain()["child"])
    with pytest.raises(InvalidTransaction, match="3 trailing bytes"):
        parse_beef(beef + b"\x00\x00\x00")


def test_non_bytes_beef_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="must be bytes"):
        parse_beef(make_beef("V2", chain()["child"]).hex())  # type: ignore[arg-type]


def test_oversized_beef_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="too large"):
        parse_beef(BEEF_V2_MAGIC + bytes(MAX_BEEF_BYTES))


def test_beef_without_transactions_is_rejected() -> None:
    with pytest.raises(InvalidTransaction, match="no transactions"):
        parse_beef(BEEF_V2_MAGIC + varint(0) + varint(0))


def test_beef_ending_in_a_txid_only_entry_has_no_subject() -> None:
    with pytest.raises(InvalidTransaction, match="txid-only"):
        parse_beef(BEEF_V2_MAGIC + varint(0) + varint(1) + b"\x02" + internal("ab" * 32))


def test_atomic_subject_must_be_in_the_beef() -> None:
    raws = chain()
    beef = make_beef("ATOMIC", raws["child"])
    wrong = beef[:4] + internal(txid_of(raws["parent"])) + beef[36:]
    with pytest.raises(InvalidTransaction, match=r"subject \w+ is not among"):
        parse_beef(wrong)


def test_atomic_beef_with_an_unrelated_transaction_is_rejected() -> None:
    raws = chain()
    stranger = make_tx([("99" * 32, 0)], [(1, b"\x51")])
    beef = make_beef("ATOMIC", raws["parent"], parents=[(stranger, None)])
    with pytest.raises(InvalidTransaction, match="unrelated to subject"):
        parse_beef(beef)


def test_beef_out_of_dependency_order_is_rejected() -> None:
    raws = chain()
    beef = make_beef("V2", raws["parent"], parents=[(raws["child"], None)])
    with pytest.raises(InvalidTransaction, match="dependency order"):
        parse_beef(beef)


def test_beef_listing_a_transaction_twice_is_rejected() -> None:
    raws = chain()
    beef = make_beef("V1", raws["parent"], parents=[(raws["parent"], None)])
    with pytest.raises(InvalidTransaction, match="twice"):
        parse_beef(beef)


def test_beef_spending_a_missing_parent_output_is_rejected() -> None:
    parent = chain()["parent"]
    child = make_tx([(txid_of(parent), 5)], [(1, b"\x51")])
    with pytest.raises(InvalidTransaction, match="has only 2 outputs"):
        parse_beef(make_beef("V2", child, parents=[(parent, None)]))


def test_beef_transaction_that_fails_strict_parsing_is_rejected() -> None:
    no_outputs = make_tx([("ab" * 32, 0)], [])
    with pytest.raises(InvalidTransaction, match=r"BEEF transaction 0: .*no outputs"):
        parse_beef(make_beef("V1", no_outputs))


def test_beef_bump_index_out_of_range_is_invalid_proof() -> None:
    raws, bumps, _ = proved_chain()
    beef = BEEF_V1_MAGIC + varint(1) + bumps["child"] + varint(1) + raws["child"] + b"\x01\x01"
    with pytest.raises(InvalidProof, match="refers to BUMP 1"):
        parse_beef(beef)


def test_beef_bump_that_does_not_prove_its_transaction_is_invalid_proof() -> None:
    raws, bumps, _ = proved_chain()
    with pytest.raises(InvalidProof, match="not a proven leaf"):
        parse_beef(make_beef("V2", raws["child"], bump=bumps["parent"]))


@pytest.mark.parametrize("flag", [b"\x02", b"\x07"])
def test_beef_v1_has_bump_flag_must_be_0_or_1(flag: bytes) -> None:
    beef = make_beef("V1", chain()["child"])
    with pytest.raises(InvalidTransaction, match="has-BUMP flag"):
        parse_beef(beef[:-1] + flag)


@settings(max_examples=150, deadline=None)
@given(magic=st.sampled_from([BEEF_V1_MAGIC, BEEF_V2_MAGIC]), body=st.binary(max_size=200))
def test_garbage_beef_raises_only_typed_errors(magic: bytes, body: bytes) -> None:
    with contextlib.suppress(InvalidTransaction, InvalidProof):
        parse_beef(magic + body)


@FAST
@given(version=st.sampled_from(VERSIONS), data=st.data())
def test_mutated_beef_parses_or_raises_typed_errors(version: Version, data: st.DataObject) -> None:
    raws, bumps, _ = proved_chain()
    beef = bytearray(make_beef(version, raws["child"], parents=[(raws["parent"], bumps["parent"])]))
    spot = data.draw(st.integers(0, len(beef) - 1))
    beef[spot] ^= data.draw(st.integers(1, 255))
    try:
        parse_beef(bytes(beef))
    except LedgerError as exc:
        assert isinstance(exc, InvalidTransaction | InvalidProof)


# --------------------------------------------------------------------------- chain kit


def test_headers_link_and_are_deterministic() -> None:
    headers = make_headers(5, start_height=10, prev_hash="aa" * 32)
    assert [h["height"] for h in headers] == [10, 11, 12, 13, 14]
    assert headers[0]["prev_hash"] == "aa" * 32
    assert all(b["prev_hash"] == a["hash"] for a, b in itertools.pairwise(headers))
    assert headers == make_headers(5, start_height=10, prev_hash="aa" * 32)
    assert len({h["hash"] for h in headers}) == 5


def test_headers_use_given_roots_and_salt_makes_forks() -> None:
    main = make_headers(3, roots={1: "cd" * 32})
    fork = make_headers(3, roots={1: "cd" * 32}, salt="fork")
    assert main[1]["merkle_root"] == fork[1]["merkle_root"] == "cd" * 32
    assert main[0]["hash"] != fork[0]["hash"]
    assert main[2]["merkle_root"] != fork[2]["merkle_root"]


def test_kit_refuses_empty_or_duplicate_blocks() -> None:
    with pytest.raises(ValueError):
        make_block([], height=1)
    with pytest.raises(ValueError):
        make_block(["ab" * 32, "ab" * 32], height=1)


def test_p2pkh_script_shape() -> None:
    script = p2pkh_script(3)
    assert len(script) == 25 and script[:3] == b"\x76\xa9\x14" and script[-2:] == b"\x88\xac"
    assert script == p2pkh_script(3) != p2pkh_script(4)


def test_parsed_tx_equality_is_by_value() -> None:
    raw = sample_tx()
    assert parse_raw_tx(raw) == parse_raw_tx(bytes(raw))
    assert isinstance(parse_raw_tx(raw), ParsedTx)
