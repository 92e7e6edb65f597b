"""Write throughput: the self-created payment lifecycle through the public ``Ledger`` API, against
bare ``eventsourcing`` aggregates doing the same number of saves and events per save.

Lifecycle of one payment (4 commands, 4 saves, 8 events):
  create_action  (one reserved input; outputs: payee basket=None + change)   3 events, 1 save
  sign_action    (matching raw tx from chainkit.make_tx)                      2 events, 1 save
  transition     (queued -> sending)                                          1 event,  1 save
  record_broadcast([success])  (ProviderResultRecorded + sending -> sent)     2 events, 1 save

Variants per backend, each on its own fresh database:
  ours/inline    Ledger.open(url)                         (projections in the append transaction)
  ours/catchup   Ledger.open(url, projections="catchup")  (no catch-up run in the timed section)
  bare/command   Application + Aggregate subclasses: repository.get + trigger + save per command
  bare/save      the same saves without the repository.get (aggregates kept in memory)
  ours/sql_only  inline, with the projection's SQL only: the same lifecycle on a fresh
                 database whose inline hook replays, save by save, the very statements the
                 real hook ran in an untimed first pass (reads, writes, pipelines). No
                 projector runs, so catch-up vs sql_only is the floor of the inline slowdown
                 for these rows: what the database work alone costs.

Funding (World.fund with many amounts per call) happens before the timed section. Events are
counted with ``led.head_position()`` deltas (``max_notification_id`` for bare).

    ./dev python bench/write.py --quick [--backend sqlite|postgresql|both]
"""

from __future__ import annotations

import contextlib
import gc
import time
from typing import Any

from benchlib import Timer, backends, database, emit_json, header, parse_args, say
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

from adapters import chainkit
from adapters.world import World
from ledger import Ledger, NewOutput, Outpoint, ProviderResult
from ledger.errors import UnknownAction, UnknownTransaction

FUND_CHUNK = 1_000
USERS = ("alice", "bob", "carol", "dave")
INPUT_SATS = 50_000
PAY_SATS = 20_000
CHANGE_SATS = 29_800
SIZES = {  # payments per variant
    "quick": {"sqlite": 240, "postgresql": 120},
    "full": {"sqlite": 3_000, "postgresql": 1_500},
}


# --- ours ------------------------------------------------------------------------------------

def _plan(world: World, n: int) -> list[dict[str, Any]]:
    """Fund the inputs (not timed) and pre-build every payment's outputs and raw tx."""
    per_user = -(-n // len(USERS))
    inputs: dict[str, list[Outpoint]] = {}
    for user in USERS:
        inputs[user] = []
        left = per_user
        while left > 0:
            take = min(FUND_CHUNK, left)
            inputs[user] += world.fund(user, [INPUT_SATS] * take)
            left -= take
    plans = []
    for i in range(n):
        user = USERS[i % len(USERS)]
        op = inputs[user].pop()
        outputs = [NewOutput(vout=0, satoshis=PAY_SATS, locking_script=world.script(), basket=None),
                   NewOutput(vout=1, satoshis=CHANGE_SATS, locking_script=world.script(),
                             basket="default", change=True)]
        raw = chainkit.make_tx([(op.txid, op.vout)], [(o.satoshis, o.locking_script) for o in outputs])
        plans.append({"user": user, "reference": f"pay-{i}", "input": op, "outputs": outputs,
                      "raw": raw, "txid": chainkit.txid_of(raw)})
    return plans


class OursVariant:
    """A ledger on its own database, funded (not timed), then reopened in ``mode``."""

    def __init__(self, url: str, n: int, mode: str) -> None:
        led = Ledger.open(url)  # inline while funding: inputs must be in the outputs projection
        try:
            self.plans = _plan(World(led, salt=f"write-{mode}"), n)
        finally:
            led.close()
        self.mode = mode
        self.led = Ledger.open(url, projections=mode)
        self.results = [ProviderResult(provider="arc", status="success")]
        self.timer = Timer()
        # In catch-up mode the facade's read-back of the new action/transaction finds no row
        # (the projection lags by design) and raises Unknown*; the events are committed by then.
        self.lagging: tuple[type[Exception], ...] = \
            (UnknownAction, UnknownTransaction) if mode == "catchup" else ()
        self.misses = 0
        self.done = 0

    def run(self, count: int) -> tuple[int, float]:
        led, timer, lagging = self.led, self.timer, self.lagging
        plans = self.plans[self.done:self.done + count]
        self.done += len(plans)
        h0 = led.head_position()
        start = time.perf_counter()
        for p in plans:
            with timer.section("create_action"):
                try:
                    led.create_action(p["user"], p["reference"], description="benchmark payment",
                                      outputs=p["outputs"], inputs=[p["input"]])
                except lagging:
                    self.misses += 1
            with timer.section("sign_action"):
                try:
                    led.sign_action(p["user"], p["reference"], raw_tx=p["raw"])
                except lagging:
                    self.misses += 1
            with timer.section("transition"):
                try:
                    led.transition(p["txid"], "sending", reason="broadcast")
                except lagging:
                    self.misses += 1
            with timer.section("record_broadcast"):
                try:
                    led.record_broadcast(p["txid"], self.results)
                except lagging:
                    self.misses += 1
        seconds = time.perf_counter() - start
        return led.head_position() - h0, seconds

    def close(self) -> None:
        if self.done:  # sanity: both modes wrote the same lifecycle (catch-up: once projected)
            if self.mode == "catchup":
                self.led.run_projections()
            for p in (self.plans[0], self.plans[self.done - 1]):
                assert self.led.get_transaction(p["txid"]).state == "sent"
        self.led.close()


class _RecordingCursor:
    """A cursor (and, through ``connection``, its connection's pipelines and cursors) that
    logs every statement the inline hook sends, in order. A statement on a cursor of its own
    (PostgreSQL's reads of a burst) is logged as a ``read``: its answer comes with a sync."""

    def __init__(self, cursor: Any, log: list[tuple[Any, ...]], *, side: bool = False) -> None:
        self._cursor, self.log, self._side = cursor, log, side

    def execute(self, statement: str, params: Any = ()) -> Any:
        self.log.append(("read" if self._side else "execute", statement, tuple(params)))
        return self._cursor.execute(statement, params)

    def executemany(self, statement: str, params: Any) -> Any:
        rows = [tuple(p) for p in params]
        self.log.append(("executemany", statement, rows))
        return self._cursor.executemany(statement, rows)

    @property
    def connection(self) -> Any:
        return _RecordingConnection(self._cursor.connection, self.log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cursor, name)


class _RecordingConnection:
    def __init__(self, conn: Any, log: list[tuple[Any, ...]]) -> None:
        self._conn, self._log = conn, log

    def cursor(self) -> _RecordingCursor:
        return _RecordingCursor(self._conn.cursor(), self._log, side=True)

    @contextlib.contextmanager
    def pipeline(self) -> Any:
        self._log.append(("pipeline",))
        with self._conn.pipeline() as pipe:
            yield pipe
        self._log.append(("end",))


class SqlCapture:
    """Wraps a ledger's inline hook and keeps, per committed append, its positions and
    statements: those sent ahead of the insert's answer, and those sent after it. An append
    that does not commit (a collision, say) is left out: it wrote nothing."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.appends: list[tuple[list[int], list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
        self._pending: tuple[list[int], list[tuple[Any, ...]], list[tuple[Any, ...]]] | None = None

    def ahead(self, cursor: Any, events: Any, stored: Any) -> Any:
        self._pending = None
        recording = _RecordingCursor(cursor, [])
        return self.hook.ahead(recording, events, stored), recording

    def __call__(self, cursor: Any, ids: Any, events: Any, stored: Any, ahead: Any = None) -> None:
        first, recording = self.ahead(cursor, events, stored) if ahead is None else ahead
        log, after = recording.log, []
        recording.log = after  # the hook's store keeps the cursor it read with: log on
        self.hook(recording, ids, events, stored, first)
        self._pending = (list(ids), log, after)

    def committed(self) -> None:
        self.hook.committed()
        if self._pending is not None:
            self.appends.append(self._pending)
        self._pending = None

    def rolled_back(self) -> None:
        self.hook.rolled_back()
        self._pending = None


def _replay(cursor: Any, log: list[tuple[Any, ...]]) -> None:
    pipes: list[Any] = []
    for kind, *rest in log:
        if kind == "pipeline":
            pipes.append(cursor.connection.pipeline())
            pipes[-1].__enter__()
        elif kind == "end":
            pipes.pop().__exit__(None, None, None)
        elif kind == "executemany":
            cursor.executemany(*rest)
        elif kind == "read":  # PostgreSQL: on a cursor of its own, answered with the next sync
            cursor.connection.cursor().execute(*rest)
        else:
            cursor.execute(*rest)
            cursor.fetchall()


class SqlReplay:
    """An inline hook that runs, append by append, what :class:`SqlCapture` kept (the reads
    ahead of the insert's answer, the rest after it), and checks each append's positions are
    the captured ones (the same lifecycle, in order). It moves on to the next captured append
    only once an append commits, as the capture did."""

    def __init__(self, appends: list[tuple[list[int], list[tuple[Any, ...]],
                                           list[tuple[Any, ...]]]]) -> None:
        self._appends = list(appends)
        self._next = 0

    def ahead(self, cursor: Any, events: Any, stored: Any) -> Any:
        positions, first, after = self._appends[self._next]
        _replay(cursor, first)
        return positions, after

    def __call__(self, cursor: Any, ids: Any, events: Any, stored: Any, ahead: Any = None) -> None:
        positions, after = self.ahead(cursor, events, stored) if ahead is None else ahead
        assert positions == list(ids), (positions, list(ids))
        _replay(cursor, after)

    def committed(self) -> None:
        self._next += 1

    def rolled_back(self) -> None:
        pass


class SqlOnlyVariant(OursVariant):
    """Inline mode whose hook replays the SQL an untimed inline pass ran on its own database
    (``capture_url``) for the same payments: the projection's database work without the
    projector."""

    def __init__(self, url: str, capture_url: str, n: int) -> None:
        capture = OursVariant(capture_url, n, "inline")
        recorder: Any = capture.led._app.recorder
        recorder.inline_hook = sql = SqlCapture(recorder.inline_hook)
        capture.run(n)
        capture.close()
        super().__init__(url, n, "inline")
        replay: Any = self.led._app.recorder
        replay.inline_hook = SqlReplay(sql.appends)


# --- bare eventsourcing ----------------------------------------------------------------------

_PAD = "ab" * 96  # payload sizes comparable to ours (events of 200-650 bytes)


class BareAction(Aggregate):
    class Created(Aggregate.Created):
        user: str
        reference: str
        description: str
        outputs: list[dict[str, Any]]

    class InputsReserved(Aggregate.Event):
        inputs: list[dict[str, Any]]

    class Signed(Aggregate.Event):
        txid: str

        def apply(self, agg: BareAction) -> None:
            agg.txid = self.txid

    def __init__(self, user: str, reference: str, description: str,
                 outputs: list[dict[str, Any]]) -> None:
        self.user, self.reference, self.outputs, self.txid = user, reference, outputs, None

    def reserve(self, inputs: list[dict[str, Any]]) -> None:
        self.trigger_event(self.InputsReserved, inputs=inputs)

    def sign(self, txid: str) -> None:
        self.trigger_event(self.Signed, txid=txid)


class BareLock(Aggregate):
    class Created(Aggregate.Created):
        outpoint: str
        user: str
        reference: str

    def __init__(self, outpoint: str, user: str, reference: str) -> None:
        self.outpoint, self.holder = outpoint, (user, reference)


class BareTx(Aggregate):
    class Created(Aggregate.Created):
        txid: str
        raw_tx: str
        state: str
        inputs: list[str]

    class Changed(Aggregate.Event):
        from_state: str
        to_state: str
        reason: str
        details: dict[str, Any]

        def apply(self, agg: BareTx) -> None:
            agg.state = self.to_state

    class ProviderResult(Aggregate.Event):
        provider: str
        status: str
        details: dict[str, Any]

    def __init__(self, txid: str, raw_tx: str, state: str, inputs: list[str]) -> None:
        self.txid, self.raw_tx, self.state, self.inputs = txid, raw_tx, state, inputs

    def move(self, to: str, reason: str) -> None:
        self.trigger_event(self.Changed, from_state=self.state, to_state=to, reason=reason,
                           details={"pad": _PAD[:40]})

    def result(self, provider: str, status: str) -> None:
        self.trigger_event(self.ProviderResult, provider=provider, status=status,
                           details={"pad": _PAD[:64]})


class BareApp(Application[Any]):
    name = "BareBench"


class BareVariant:
    """Bare eventsourcing on its own database. ``load``: repository.get before each command."""

    def __init__(self, env: dict[str, str], n: int, *, load: bool) -> None:
        self.app = BareApp(env=env)
        self.plans = bare_plans(n)
        self.load = load
        self.done = 0

    def head(self) -> int:
        return int(self.app.recorder.max_notification_id() or 0)

    def run(self, count: int) -> tuple[int, float]:
        app, load = self.app, self.load
        plans = self.plans[self.done:self.done + count]
        self.done += len(plans)
        h0 = self.head()
        start = time.perf_counter()
        for p in plans:
            out = [{"vout": o.vout, "satoshis": o.satoshis, "script": o.locking_script.hex(),
                    "basket": o.basket, "pad": _PAD} for o in p["outputs"]]
            action = BareAction(user=p["user"], reference=p["reference"],
                                description="benchmark payment", outputs=out)
            action.reserve([{"outpoint": str(p["input"]), "satoshis": INPUT_SATS}])
            lock = BareLock(outpoint=str(p["input"]), user=p["user"], reference=p["reference"])
            app.save(action, lock)
            if load:
                action = app.repository.get(action.id)
            tx = BareTx(txid=p["txid"], raw_tx=p["raw"].hex(), state="queued",
                        inputs=[str(p["input"])])
            action.sign(p["txid"])
            app.save(tx, action)
            if load:
                tx = app.repository.get(tx.id)
            tx.move("sending", "broadcast")
            app.save(tx)
            if load:
                tx = app.repository.get(tx.id)
            tx.result("arc", "success")
            tx.move("sent", "broadcast")
            app.save(tx)
        seconds = time.perf_counter() - start
        return self.head() - h0, seconds

    def close(self) -> None:
        self.app.close()


def bare_plans(n: int) -> list[dict[str, Any]]:
    """Payments shaped like ours (no ledger needed)."""
    plans = []
    for i in range(n):
        op = Outpoint(txid=chainkit.txid_of(i.to_bytes(8, "little")), vout=i % 3)
        outputs = [NewOutput(vout=0, satoshis=PAY_SATS, locking_script=chainkit.p2pkh_script(2 * i),
                             basket=None),
                   NewOutput(vout=1, satoshis=CHANGE_SATS,
                             locking_script=chainkit.p2pkh_script(2 * i + 1), change=True)]
        raw = chainkit.make_tx([(op.txid, op.vout)], [(o.satoshis, o.locking_script) for o in outputs])
        plans.append({"user": USERS[i % len(USERS)], "reference": f"pay-{i}", "input": op,
                      "outputs": outputs, "raw": raw, "txid": chainkit.txid_of(raw)})
    return plans


# --- driver ----------------------------------------------------------------------------------

VARIANTS = ("bare_command", "ours_inline", "bare_save", "ours_catchup", "ours_sql_only")


def bench_backend(backend: str, n: int, rounds: int) -> dict[str, Any]:
    say(f"\n-- {backend}: {n} payments per variant ({8 * n} events, {4 * n} saves), "
        f"{rounds} interleaved rounds --")
    totals = {k: [0, 0.0] for k in VARIANTS}
    round_rates: dict[str, list[float]] = {k: [] for k in VARIANTS}
    with contextlib.ExitStack() as stack:
        variants: dict[str, Any] = {}
        for key in VARIANTS:
            db = stack.enter_context(database(backend, key))
            if key.startswith("bare"):
                variants[key] = BareVariant(db["env"], n, load=key == "bare_command")
            elif key == "ours_sql_only":
                capture = stack.enter_context(database(backend, "capture"))
                variants[key] = SqlOnlyVariant(db["url"], capture["url"], n)
            else:
                variants[key] = OursVariant(db["url"], n, key.split("_")[1])
            stack.callback(variants[key].close)
        # Rounds rotate the order, so machine drift (fsync latency, autovacuum) hits all variants.
        per_round = -(-n // rounds)
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            for key in order:
                gc.collect()
                events, seconds = variants[key].run(per_round)
                if events:
                    totals[key][0] += events
                    totals[key][1] += seconds
                    round_rates[key].append(events / seconds)
        timers = {k: v.timer for k, v in variants.items() if isinstance(v, OursVariant)}
        misses = variants["ours_catchup"].misses
        done = variants["ours_inline"].done
    rate = {k: totals[k][0] / totals[k][1] for k in VARIANTS}
    for key in VARIANTS:
        extra = ""
        if key in timers:
            extra = "  ms/command: " + ", ".join(
                f"{c} {1000 * t / done:.2f}" for c, t in timers[key].totals.items())
        spread = f"[{min(round_rates[key]):.0f}..{max(round_rates[key]):.0f}]"
        say(f"   {key:13s} {totals[key][0]:7d} events in {totals[key][1]:6.2f} s = "
            f"{rate[key]:7.0f} events/s {spread:>13s}{extra}")
    inline, catchup = rate["ours_inline"], rate["ours_catchup"]
    ratio_cmd = inline / rate["bare_command"]
    ratio_save = inline / rate["bare_save"]
    slowdown = catchup / inline
    say(f"   ratio ours(inline)/bare(command)   = {ratio_cmd:5.0%}  (target >= 50%: "
        f"{'met' if ratio_cmd >= 0.5 else 'NOT met'})")
    say(f"   ratio ours(inline)/bare(save-only) = {ratio_save:5.0%}  (reported only: the target "
        "is against a command's get + save)")
    floor = catchup / rate["ours_sql_only"]
    say(f"   inline-projection slowdown = {slowdown:.2f}x  (catch-up {catchup:.0f} vs inline "
        f"{inline:.0f} events/s; target <= 1.5x: {'met' if slowdown <= 1.5 else 'NOT met'})")
    say(f"   its floor, the projection's SQL alone = {floor:.2f}x  (catch-up vs sql_only "
        f"{rate['ours_sql_only']:.0f} events/s; the projector's own work: "
        f"{slowdown - floor:.2f}x)")
    if misses:
        say(f"   note: in catch-up mode {misses} facade read-backs raised UnknownAction/"
            "UnknownTransaction after the command had committed (the projection lags by design)")
    return {"events_per_s": {k: round(v, 1) for k, v in rate.items()},
            "ratio_vs_bare_command": round(ratio_cmd, 3),
            "ratio_vs_bare_save": round(ratio_save, 3),
            "inline_slowdown": round(slowdown, 3),
            "inline_slowdown_sql_floor": round(floor, 3),
            "ms_per_command_inline": {c: round(1000 * t / done, 3)
                                      for c, t in timers["ours_inline"].totals.items()},
            "payments": n}


def _extra_args(parser: Any) -> None:
    parser.add_argument("--payments", type=int, default=None,
                        help="payments per variant (overrides the size)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0],
                      _extra_args)
    header("write throughput: ours (public API) vs bare eventsourcing", args)
    size = "quick" if args.quick else "full"
    results: dict[str, Any] = {}
    for backend in backends(args.backend):
        n = args.payments or SIZES[size][backend]
        results[backend] = bench_backend(backend, n, args.rounds or (4 if args.quick else 6))
    emit_json({"bench": "write", "size": size, **results})


if __name__ == "__main__":
    main()
