"""Block benchmark: connecting a block that confirms N of the ledger's transactions (every one
``unconfirmed`` at the old tip is promoted in the same save), repeated. Reports events/s of the
timed ``apply_headers`` calls and, in the same run, a raw scan + decode of those events.

    ./dev python bench/blocks.py [--quick] [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from adapters import chainkit
from adapters.world import World
from bench.reorg import _count_state, _drop, _open, _raw_scan
from ledger import InternalizeOutput

TXS_PER_BLOCK = 1_000


def _unconfirmed_at_tip(world: World, txs: int, round_no: int) -> None:
    raws = [world.external_payment([500 + i]) for i in range(txs)]
    txids = [chainkit.txid_of(r) for r in raws]
    block = world.mine(txids)
    for i, (raw, txid) in enumerate(zip(raws, txids, strict=True)):
        world.ledger.internalize_action(
            f"user{i % 10}", reference=f"r{round_no}-{i}", description="receipt",
            beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
            outputs=[InternalizeOutput(vout=0)])


def run(backend: str, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        led, dbname = _open(backend, Path(tmp))
        try:
            world = World(led)
            world.mine_empty(3)
            timed_s, events, scan_s = 0.0, 0, 0.0
            for round_no in range(rounds):
                _unconfirmed_at_tip(world, TXS_PER_BLOCK, round_no)
                assert _count_state(led, "unconfirmed") == TXS_PER_BLOCK
                before = led.head_position()
                header = world.mine(apply=False).header()
                t0 = time.perf_counter()
                update = led.apply_headers([header])
                timed_s += time.perf_counter() - t0
                assert len(update.affected_txids) == TXS_PER_BLOCK
                n, s = _raw_scan(led, before)
                events, scan_s = events + n, scan_s + s
            assert _count_state(led, "unconfirmed") == 0
            assert led.verify_projections().ok
            return {"backend": backend, "rounds": rounds, "txs_per_block": TXS_PER_BLOCK,
                    "events": events, "seconds": round(timed_s, 3),
                    "events_per_s": round(events / timed_s),
                    "raw_scan_decode_events_per_s": round(events / scan_s),
                    "ratio_to_scan": round(scan_s / timed_s, 3)}
        finally:
            led.close()
            _drop(dbname)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 blocks instead of 5")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    rounds = 2 if args.quick else 5
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    results = []
    for backend in backends:
        r = run(backend, rounds)
        print(f"{backend:>10}: {r['rounds']} blocks x {TXS_PER_BLOCK} promotions: "
              f"{r['events_per_s']} events/s (target >= 10000 on sqlite); raw scan+decode "
              f"{r['raw_scan_decode_events_per_s']}/s, ratio {r['ratio_to_scan']}")
        results.append(r)
    print(json.dumps({"bench": "blocks", "results": results}))


if __name__ == "__main__":
    main()
