"""Projection rebuild throughput: ``led.rebuild_projections()`` against a raw notification scan +
decode of the same events (``recorder.select_notifications`` pages + ``mapper.to_domain_event``).
It also prints the ledger's own read of the log (ADR 0010), which replays use instead of that
scan, and the rebuild's share of it: not the target, but what shows the projection work apart.

The log (1,000,000 events; ``--quick``: 100,000) is built from real ledger events:
- each user is funded once through the public API (``World.fund``: a proven third-party payment);
- then payments are written in bulk through the ``LedgerApplication`` (``led._app.save`` of many
  aggregates at once): each payment spends the change of the user's previous payment, with the
  aggregates' own command methods — ActionCreated, InputsReserved, OutpointReserved,
  TransactionCreated, ActionSigned, ProcessingChanged(queued->sending), ProviderResultRecorded,
  ProcessingChanged(sending->sent) — and, once its block is mined through the public API
  (``apply_headers``), ProofRecorded + ProcessingChanged(sent->confirmed): 10 events per payment;
- the ledger is in catch-up mode while the bulk is written (no inline projection), so the
  rebuild is the only projection work.
Every input is reserved only after the payment that created it was saved and broadcast (``sent``,
so its change is spendable), as ``create_action`` would require: a chain appears at most once per
save (``PAYMENTS_PER_SAVE <= USERS * CHAINS_PER_USER``, checked while drafting). After the
rebuild the bench checks the result: each user has exactly its chains' newest change outputs
spendable, with the expected balance.
The rebuild and the scan are timed in the same run, scan / rebuild / scan, on each backend.

    ./dev python bench/rebuild.py --quick [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import gc
import resource
import time
from typing import Any

from benchlib import backends, database, emit_json, header, parse_args, say

from adapters import chainkit
from adapters.world import World
from ledger import Ledger, NewOutput, Outpoint, ProcessingStatus, gc_pause
from ledger.action import ActionAggregate
from ledger.reservation import ReservationAggregate
from ledger.rules import broadcast_outcome
from ledger.transaction import TransactionAggregate
from projections import replay

S = ProcessingStatus
USERS = 20
CHAINS_PER_USER = 25
FUND_SATS = 10**12
PAY_SATS = 1_000
FEE_SATS = 200
EVENTS_PER_PAYMENT = 10
PAYMENTS_PER_BLOCK = 1_000
PAYMENTS_PER_SAVE = 250
PROOFS_PER_SAVE = 500
SCAN_PAGE = replay.READ_PAGE_EVENTS  # the rebuild reads the log in pages of this size too
SIZES = {"quick": 100_000, "full": 1_000_000}


def _declared(output: NewOutput) -> dict[str, Any]:
    """A declared output as ``create_action`` stores it in ``ActionCreated``."""
    data = output.model_dump(mode="python")
    data["locking_script"] = output.locking_script.hex()
    return data


class LogBuilder:
    """Writes real ledger events in bulk (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seed = 0
        self.chains: list[tuple[str, Outpoint, int]] = []
        self.unsaved: set[int] = set()  # chains drafted in the batch being built
        self.broadcast = [{"provider": "arc", "status": "success", "provider_status": None,
                           "competing_txids": [], "details": {}}]
        self.outcome = broadcast_outcome(["success"])

    def script(self) -> bytes:
        self.seed += 1
        return chainkit.p2pkh_script(10_000_000 + self.seed)

    def build(self, target_events: int) -> dict[str, Any]:
        started = time.perf_counter()
        led = Ledger.open(self.url)
        world = World(led, salt="rebuild")
        for u in range(USERS):
            user = f"user{u:03d}"
            ops = world.fund(user, [FUND_SATS] * CHAINS_PER_USER, labels=["funding"])
            self.chains += [(user, op, FUND_SATS) for op in ops]
        world.mine_empty(1)  # every funding proof confirmed before we leave inline mode
        led.close()
        led = Ledger.open(self.url, projections="catchup")
        world.ledger = led
        app: Any = led._app
        funded = led.head_position()
        i = 0
        while led.head_position() < target_events:
            left = target_events - led.head_position()
            count = max(1, min(PAYMENTS_PER_BLOCK, left // EVENTS_PER_PAYMENT))
            txs = []
            for start in range(0, count, PAYMENTS_PER_SAVE):
                self.unsaved.clear()
                todo = [self._draft(i + k) for k in range(min(PAYMENTS_PER_SAVE, count - start))]
                i += len(todo)
                # the event order of the four API commands, each a save of the whole batch
                app.save(*(agg for p in todo for agg in (p["action"], p["lock"])))
                for p in todo:  # sign_action: TransactionCreated, ActionSigned
                    p["tx"] = TransactionAggregate.create(
                        txid=p["txid"], raw_tx=p["raw"], state=S.QUEUED, is_coinbase=False,
                        inputs=[p["input"]], output_count=2, origin=(p["user"], p["reference"]))
                    p["action"].sign(txid=p["txid"], nosend=False)
                app.save(*(agg for p in todo for agg in (p["tx"], p["action"])))
                for p in todo:  # transition(sending)
                    assert p["tx"].request_transition(S.SENDING, reason="broadcast") is None
                app.save(*(p["tx"] for p in todo))
                for p in todo:  # record_broadcast([success])
                    p["tx"].record_broadcast(self.broadcast, self.outcome)
                app.save(*(p["tx"] for p in todo))
                txs += [p["tx"] for p in todo]
            block = world.mine([t.txid for t in txs])
            world.mine_empty(1)  # the block is buried: proofs go straight to confirmed
            for start in range(0, len(txs), PROOFS_PER_SAVE):
                chunk = txs[start:start + PROOFS_PER_SAVE]
                for offset, tx in enumerate(chunk, start=start):
                    rejected = tx.record_proof(
                        height=block.height, block_hash=block.hash, merkle_root=block.merkle_root,
                        leaf_offset=offset, bump=block.bumps[tx.txid], target=S.CONFIRMED)
                    assert rejected is None
                app.save(*chunk)
        events = led.head_position()
        led.close()
        return {"events": events, "payments": i, "funding_events": funded,
                "seconds": time.perf_counter() - started, "chains": list(self.chains)}

    def _draft(self, i: int) -> dict[str, Any]:
        """create_action of payment ``i`` on chain ``i % chains`` (a chain appears at most once
        per batch, so every input is a projected, spendable change output when reserved)."""
        c = i % len(self.chains)
        # Its input is the change of the chain's previous payment: that payment must already be
        # saved and sent, or the log would reserve an output that does not exist yet (the
        # projector then never marks it spent; create_action would have refused it).
        assert c not in self.unsaved, "a chain appears twice in one save"
        self.unsaved.add(c)
        user, op, sats = self.chains[c]
        reference = f"pay-{i}"
        change = sats - PAY_SATS - FEE_SATS
        outputs = [NewOutput(vout=0, satoshis=PAY_SATS, locking_script=self.script(), basket=None),
                   NewOutput(vout=1, satoshis=change, locking_script=self.script(), change=True)]
        raw = chainkit.make_tx([(op.txid, op.vout)], [(o.satoshis, o.locking_script) for o in outputs])
        txid = chainkit.txid_of(raw)
        action = ActionAggregate.create(user=user, reference=reference, description="payment",
                                        is_outgoing=True, outputs=[_declared(o) for o in outputs],
                                        labels=["payment"])
        action.reserve([{"outpoint": str(op), "satoshis": sats}])
        lock = ReservationAggregate.take_new(txid=op.txid, vout=op.vout, user=user,
                                            reference=reference)
        self.chains[c] = (user, Outpoint(txid=txid, vout=1), change)
        return {"user": user, "reference": reference, "input": str(op), "raw": raw,
                "txid": txid, "action": action, "lock": lock}


def check_result(led: Ledger, chains: list[tuple[str, Outpoint, int]]) -> None:
    """The rebuilt projection says what the log says: per user, the newest change output of each
    chain is spendable (every older one was spent by the next payment), and nothing else."""
    expected: dict[str, dict[str, int]] = {}
    for user, op, sats in chains:
        expected.setdefault(user, {})[f"{op.txid}:{op.vout}"] = sats
    for user, outs in expected.items():
        page = led.list_outputs(user, spendable=True, limit=CHAINS_PER_USER + 1)
        got = {f"{o.txid}:{o.vout}": o.satoshis for o in page.items}
        assert page.total == len(outs) and got == outs, (user, page.total, len(outs))
        balance = led.balance(user)
        assert balance.spendable == sum(outs.values()) and balance.reserved == 0, (user, balance)


def scan(led: Ledger, page: int = SCAN_PAGE) -> tuple[int, float]:
    """The baseline: every notification read in pages (``> last id``) and decoded, with the
    cyclic garbage collector paused as the rebuild pauses it (with it running, the collector
    walks this process's large heap: a quarter of the scan at full size)."""
    app: Any = led._app
    recorder, mapper = app.recorder, app.mapper
    gc.collect()
    with gc_pause.paused():
        start = time.perf_counter()
        last, count = 0, 0
        while True:
            notes = recorder.select_notifications(start=last, limit=page,
                                                  inclusive_of_start=False)
            for n in notes:
                mapper.to_domain_event(n)
            count += len(notes)
            if len(notes) < page:
                break
            last = notes[-1].id
        return count, time.perf_counter() - start


def own_scan(led: Ledger) -> tuple[int, float]:
    """The ledger's own read of the log, as its replays read it (``replay.iterate_fields``:
    stored fields through ``BulkDecoder``, no event objects), with the collector paused: not
    the target's baseline, printed so that the rebuild's projection work shows apart from it."""
    gc.collect()
    with gc_pause.paused():
        start = time.perf_counter()
        count = sum(1 for _ in replay.iterate_fields(led._log))
        return count, time.perf_counter() - start


def bench_backend(backend: str, target: int) -> dict[str, Any]:
    say(f"\n-- {backend}: log of {target:,} events --")
    with database(backend, "rebuild") as db:
        built = LogBuilder(db["url"]).build(target)
        say(f"   setup: {built['events']:,} events ({built['payments']:,} bulk payments, "
            f"{built['funding_events']} funding events through the API) in "
            f"{built['seconds']:.1f} s = {built['events'] / built['seconds']:.0f} events/s")
        led = Ledger.open(db["url"], projections="catchup")
        try:
            scans = []
            n1, s1 = scan(led)
            scans.append(s1)
            gc.collect()
            t0 = time.perf_counter()
            report = led.rebuild_projections()
            wall = time.perf_counter() - t0
            n2, s2 = scan(led)
            scans.append(s2)
            n3, own_s = own_scan(led)
            assert n1 == n2 == n3 == built["events"] == report.events, (n1, n2, built, report)
            check_result(led, built["chains"])
        finally:
            led.close()
    scan_s = sum(scans) / len(scans)
    scan_rate = n1 / scan_s
    rebuild_rate = report.events / wall
    ratio = rebuild_rate / scan_rate
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    say(f"   raw scan + decode : {n1:,} events in {scan_s:6.2f} s = {scan_rate:8.0f} events/s "
        f"(runs: {', '.join(f'{s:.2f} s' for s in scans)}; pages of {SCAN_PAGE})")
    say(f"   rebuild_projections: {report.events:,} events in {wall:6.2f} s = "
        f"{rebuild_rate:8.0f} events/s (report says {report.seconds:.2f} s)")
    say(f"   ratio rebuild/scan = {ratio:.0%}  (target >= 40%: {'met' if ratio >= 0.4 else 'NOT met'})"
        f"; peak RSS of this process {rss_mb:.0f} MB")
    own_rate = n1 / own_s
    say(f"   the ledger's own read (stored fields, no event objects): {own_s:6.2f} s = "
        f"{own_rate:8.0f} events/s; rebuild / own read = {rebuild_rate / own_rate:.0%}")
    return {"events": report.events, "setup_s": round(built["seconds"], 1),
            "scan_per_s": round(scan_rate, 1), "rebuild_per_s": round(rebuild_rate, 1),
            "rebuild_s": round(wall, 2), "ratio": round(ratio, 3), "peak_rss_mb": round(rss_mb),
            "own_read_per_s": round(own_rate, 1),
            "ratio_to_own_read": round(rebuild_rate / own_rate, 3)}


def main() -> None:
    args = parse_args(__doc__.splitlines()[0],
                      lambda p: p.add_argument("--events", type=int, default=None,
                                               help="log size (overrides the size)"))
    header("rebuild throughput: rebuild_projections vs raw scan + decode", args)
    size = "quick" if args.quick else "full"
    target = args.events or SIZES[size]
    results = {b: bench_backend(b, target) for b in backends(args.backend)}
    emit_json({"bench": "rebuild", "size": size, **results})


if __name__ == "__main__":
    main()
