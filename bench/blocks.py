"""Block connect benchmark: a new block on top of a tip that holds N of the ledger's transactions
(all ``unconfirmed``, proven in the tip block), so ``apply_headers`` appends one
``BlockConnected`` and promotes every one of them ``unconfirmed -> confirmed`` in the same save
(one ``ProcessingChanged`` each; inline projections in the same transaction). Repeated for
several blocks, each on a fresh set of N transactions.

Timed: the ``led.apply_headers([header])`` call only. Not timed: building the block, and the
setup of each round: N third-party receipts with a proof in the tip block, so ``unconfirmed`` -
the events ``internalize_action`` appends, made by the ledger's aggregates and saved 250
receipts per save with inline projections (``benchlib.bulk_internalize``). Events are counted
from the log (head position delta) and checked: exactly N + 1 per block.

Baseline in the same run, on its own database: bare ``eventsourcing`` appending the same events
(one chain event and N transaction events of the same shape) in one ``save`` of N + 1 aggregates
already in memory ("bare save" - the floor of this write), and the same after
``repository.get`` of the N streams ("bare get+save" - what any command must read first).

    ./dev python bench/blocks.py [--quick] [--backend sqlite|postgresql|both] [--blocks N]
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Any

from benchlib import (
    BareChainLedger,
    Receipt,
    backends,
    bulk_internalize,
    database,
    emit_json,
    header,
    median,
    parse_args,
    say,
    state_counts,
)

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger

TXS_PER_BLOCK = 1_000
TARGET_EVENTS_PER_S = {"sqlite": 10_000}  # the target; PostgreSQL is reported only
BLOCKS = {"quick": 3, "full": 10}


def unconfirmed_at_tip(world: World, txs: int, round_no: int) -> list[str]:
    """``txs`` receipts mined in a new tip block and internalized with their proofs (the
    events of ``internalize_action``, 250 receipts per save, inline projections)."""
    raws = [world.external_payment([500 + i]) for i in range(txs)]
    block = world.mine([chainkit.txid_of(r) for r in raws])
    return bulk_internalize(world.ledger, block, [
        Receipt(user=f"user{i % 10}", raw=raw, reference=f"r{round_no}-{i}",
                outputs=[InternalizeOutput(vout=0)]) for i, raw in enumerate(raws)])


class Ours:
    def __init__(self, url: str, txs: int) -> None:
        self.led = Ledger.open(url)
        self.world = World(self.led, salt="blocks")
        self.world.mine_empty(3)
        self.txs = txs
        self.rounds = 0

    def round(self, *, cold: bool = False) -> tuple[int, float]:
        """``cold``: the ledger's stream cache is emptied first, as if the process had just
        started (the transactions are read from the log); otherwise it holds them, as it does
        for transactions this process proved or received moments ago."""
        led = self.led
        txids = unconfirmed_at_tip(self.world, self.txs, self.rounds)
        self.rounds += 1
        if cold:
            app: Any = led._app
            app._streams.evict(list(app._streams._items))
        before = state_counts(led)
        assert before.get("unconfirmed", 0) == self.txs, before
        block_header = self.world.mine(apply=False).header()
        h0 = led.head_position()
        gc.collect()
        start = time.perf_counter()
        update = led.apply_headers([block_header])
        seconds = time.perf_counter() - start
        events = led.head_position() - h0
        assert sorted(update.affected_txids) == sorted(txids)
        assert events == self.txs + 1, events
        after = state_counts(led)
        assert after.get("unconfirmed", 0) == 0
        assert after["confirmed"] == before.get("confirmed", 0) + self.txs, (before, after)
        return events, seconds

    def close(self) -> None:
        try:
            report = self.led.verify_projections()
            assert report.ok, report.differences[:3]
        finally:
            self.led.close()


class Bare:
    def __init__(self, env: dict[str, str], txs: int, rounds: int) -> None:
        self.base = BareChainLedger(env, txs * rounds, state="unconfirmed")
        self.txs = txs
        self.rounds = 0
        self.height = 1_000

    def round(self, *, load: bool) -> tuple[int, float]:
        b = self.base
        chunk = b.txs[self.rounds * self.txs:(self.rounds + 1) * self.txs]
        get_s = 0.0
        if load:
            chunk, get_s = b.get_timed(chunk)
        self.rounds += 1
        self.height += 1
        b.header_event("connect", self.height)
        for tx in chunk:
            tx.move("confirmed", "tip-advanced", {"tip_height": self.height})
        gc.collect()
        events, save_s = b.save_timed(b.chain, *chunk)
        return events, get_s + save_s

    def close(self) -> None:
        self.base.close()


def bench_backend(backend: str, blocks: int, txs: int) -> dict[str, Any]:
    say(f"\n-- {backend}: {blocks} blocks, each promoting {txs} unconfirmed transactions --")
    with contextlib.ExitStack() as stack:
        ours_db = stack.enter_context(database(backend, "blocks"))
        bare_db = stack.enter_context(database(backend, "blocks_bare"))
        ours = Ours(ours_db["url"], txs)
        stack.callback(ours.close)
        bare_save = Bare(bare_db["env"], txs, 2 * blocks)
        stack.callback(bare_save.close)
        timed: dict[str, list[tuple[int, float]]] = {"ours": [], "bare_save": [],
                                                      "bare_get_save": []}
        setup_s = 0.0  # of our rounds, outside the timed call
        for r in range(blocks):
            t0 = time.perf_counter()
            timed["ours"].append(ours.round())
            setup_s += time.perf_counter() - t0 - timed["ours"][-1][1]
            # the two bare variants alternate which goes first, on the same store
            order = ("bare_save", "bare_get_save") if r % 2 == 0 else ("bare_get_save", "bare_save")
            for key in order:
                timed[key].append(bare_save.round(load=key == "bare_get_save"))
            say(f"   block {r + 1}: apply_headers {1000 * timed['ours'][-1][1]:7.1f} ms "
                f"({timed['ours'][-1][0]} events); bare save {1000 * timed['bare_save'][-1][1]:6.1f} ms,"
                f" bare get+save {1000 * timed['bare_get_save'][-1][1]:6.1f} ms")
        cold_events, cold_s = ours.round(cold=True)
        say(f"   block {blocks + 1} (cold: stream cache emptied first): apply_headers "
            f"{1000 * cold_s:7.1f} ms ({cold_events} events)")
    rate = {k: sum(e for e, _ in v) / sum(s for _, s in v) for k, v in timed.items()}
    cold_rate = cold_events / cold_s
    block_ms = [1000 * s for _, s in timed["ours"]]
    ratio = rate["ours"] / rate["bare_save"]
    target = TARGET_EVENTS_PER_S.get(backend)
    verdict = (f"target >= {target:,} events/s: {'met' if rate['ours'] >= target else 'NOT met'}"
               if target else "no target on this backend (reported)")
    say(f"   ours          : {rate['ours']:8.0f} events/s  ({verdict}); per block: median "
        f"{median(block_ms):.0f} ms, max {max(block_ms):.0f} ms; setup (bulk receipts, untimed) "
        f"{setup_s:.1f} s")
    say(f"   ours, cold    : {cold_rate:8.0f} events/s  (the transactions read from the log: a "
        "freshly started process)")
    say(f"   bare save     : {rate['bare_save']:8.0f} events/s   ratio ours/bare save = {ratio:.0%}")
    say(f"   bare get+save : {rate['bare_get_save']:8.0f} events/s   ratio ours/bare get+save = "
        f"{rate['ours'] / rate['bare_get_save']:.0%}")
    return {"blocks": blocks, "txs_per_block": txs, "events_per_s": round(rate["ours"]),
            "cold_events_per_s": round(cold_rate),
            "block_ms_median": round(median(block_ms), 1), "block_ms_max": round(max(block_ms), 1),
            "bare_save_events_per_s": round(rate["bare_save"]),
            "bare_get_save_events_per_s": round(rate["bare_get_save"]),
            "ratio_vs_bare_save": round(ratio, 3),
            "target_events_per_s": target,
            "target_met": None if target is None else rate["ours"] >= target}


def _extra_args(parser: Any) -> None:
    parser.add_argument("--blocks", type=int, default=None, help="blocks to connect (timed)")
    parser.add_argument("--txs", type=int, default=TXS_PER_BLOCK,
                        help="unconfirmed transactions promoted per block")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], _extra_args)
    header("block connect: apply_headers promoting unconfirmed -> confirmed", args)
    size = "quick" if args.quick else "full"
    blocks = args.blocks or BLOCKS[size]
    results = {b: bench_backend(b, blocks, args.txs) for b in backends(args.backend)}
    emit_json({"bench": "blocks", "size": size, **results})


if __name__ == "__main__":
    main()
