"""Reorg benchmark: N of the ledger's transactions proven in the last 3 blocks, then a 3-block
reorg. Times the reorg (until every one is ``reorging``, projections committed with it) and the
re-proof pass in the new chain. The baseline is a raw scan + decode of the events the reorg
appended, measured in the same run.

    ./dev python bench/reorg.py [--quick] [--backend sqlite|postgresql|both] [--txs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
REORG_DEPTH_BLOCKS = 3


def _open(backend: str, tmp: Path) -> tuple[Ledger, Any]:
    if backend == "sqlite":
        return Ledger.open(f"sqlite:///{tmp / 'reorg.db'}"), None
    name = f"wl_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return Ledger.open(f"postgresql://postgres@127.0.0.1:5432/{name}"), name


def _drop(name: str | None) -> None:
    if name:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _setup(world: World, txs: int) -> list[str]:
    """``txs`` third-party receipts proven in the last three blocks."""
    raws = [world.external_payment([1_000 + i]) for i in range(txs)]
    txids = [chainkit.txid_of(r) for r in raws]
    per_block = -(-txs // REORG_DEPTH_BLOCKS)
    blocks = [world.mine(txids[i:i + per_block], apply=False) for i in range(0, txs, per_block)]
    world.ledger.apply_headers([b.header() for b in blocks])
    bump_of = {t: b.bumps[t] for b in blocks for t in b.bumps}
    for i, (raw, txid) in enumerate(zip(raws, txids, strict=True)):
        world.ledger.internalize_action(
            f"user{i % 10}", beef=chainkit.make_beef("V1", raw, bump=bump_of[txid]),
            description="receipt", outputs=[InternalizeOutput(vout=0)])
    return txids


def _count_state(led: Ledger, state: str) -> int:
    from sqlalchemy import text
    with led._engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM transactions WHERE state = :s"),
                                {"s": state}).scalar() or 0)


def _raw_scan(led: Ledger, after: int) -> tuple[int, float]:
    started = time.perf_counter()
    count = 0
    position = after
    while True:
        page = led._log.read(after=position, limit=5_000)
        count += len(page)
        if not page:
            break
        position = page[-1][0]
    return count, time.perf_counter() - started


def run(backend: str, txs: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        led, dbname = _open(backend, Path(tmp))
        try:
            world = World(led)
            world.mine_empty(5)
            t0 = time.perf_counter()
            txids = _setup(world, txs)
            setup_s = time.perf_counter() - t0
            before = led.head_position()
            t0 = time.perf_counter()
            new_blocks, update = world.reorg(REORG_DEPTH_BLOCKS,
                                             [list(b.bumps) for b in world.chain[-3:]] + [[]],
                                             salt="fork")
            reorg_s = time.perf_counter() - t0
            assert len(update.affected_txids) == txs
            assert _count_state(led, "reorging") == txs
            events, scan_s = _raw_scan(led, before)
            t0 = time.perf_counter()
            for block in new_blocks:
                for txid in block.bumps:
                    if txid in update.affected_txids:
                        led.record_proof(txid, block.bumps[txid])
            reproof_s = time.perf_counter() - t0
            assert _count_state(led, "reorging") == 0
            t0 = time.perf_counter()
            ok = led.verify_projections().ok
            verify_s = time.perf_counter() - t0
            assert ok, "projections drifted"
            del txids
            return {"backend": backend, "txs": txs, "setup_s": round(setup_s, 2),
                    "reorg_s": round(reorg_s, 3), "reorg_events": events,
                    "reorg_events_per_s": round(events / reorg_s),
                    "raw_scan_decode_s": round(scan_s, 3),
                    "ratio_to_scan": round(scan_s / reorg_s, 3),
                    "reproof_s": round(reproof_s, 2),
                    "reproof_tx_per_s": round(txs / reproof_s),
                    "verify_s": round(verify_s, 2), "verify_ok": ok}
        finally:
            led.close()
            _drop(dbname)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 transactions")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--txs", type=int, default=None)
    args = parser.parse_args()
    txs = args.txs or (2_000 if args.quick else 10_000)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        r = run(backend, txs)
        target = 2.0 if backend == "sqlite" else 5.0
        print(f"{backend:>10}: {txs} txs reorged in {r['reorg_s']:.3f} s "
              f"({r['reorg_events']} events, {r['reorg_events_per_s']}/s; raw scan+decode of the "
              f"same events {r['raw_scan_decode_s']:.3f} s) target <= {target} s; "
              f"re-proof {r['reproof_s']:.2f} s ({r['reproof_tx_per_s']} tx/s); "
              f"verify {r['verify_s']:.2f} s ok={r['verify_ok']}; setup {r['setup_s']:.1f} s")
        results.append(r)
    print(json.dumps({"bench": "reorg", "results": results}))


if __name__ == "__main__":
    main()
