"""Child processes for the reliability tests, and the parent-side handle that drives them.

A child is a fresh interpreter (``python tests/procs.py ROLE JSON``): no state is shared with
the test process except the database. Children talk to the parent over pipes only:

- the parent writes lines to the child's stdin (``go``, ``exit``) -- used as barriers;
- the child writes one JSON object per line to its stdout with a single unbuffered ``os.write``.
  A line is the child's acknowledgement that the command before it *returned*. Data written to a
  pipe lives in the kernel's pipe buffer, owned by the parent's read end, so an acknowledgement
  sent just before a SIGKILL is still read by the parent (unlike a file, a pipe needs no fsync).

Parent side: :class:`Child` (start, send, recv with a safety deadline, non-blocking poll,
SIGKILL, environment overrides), plus helpers that read the projection position and the event
store straight from the database (``projection_position``, ``log_head``, ``raw_events``: no
ledger code that could repair anything on the way), wait until a killed child's PostgreSQL
sessions are gone, and check what a writer acknowledged against the reopened ledger
(:class:`Writer`, ``check_acknowledged``, ``check_one_holder``). Every wait is on a condition
(a line, a row, a backend list); the deadlines only turn a hang into a failure.

Roles: ``race`` and ``open`` (reservation and open races), ``idem`` (idempotency race; can hold
both racers right before their save), ``writer`` (create/sign/note/broadcast-or-abort loop,
inline or catch-up mode), ``catchup`` (catch-up projector; small pages, follow mode, and a hold
inside a page's open transaction to be killed there), ``rebuild`` (a rebuild held still before
its swap), ``handover`` (mode switches and rebuilds in a loop).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve()
DEADLINE_S = 60.0


# ============================================================================================
# parent side
# ============================================================================================

class ChildFailed(AssertionError):
    """A child exited, said something unexpected, or stayed silent past the deadline."""


class Child:
    """One child process running ``ROLE`` with ``args``."""

    def __init__(self, role: str, args: dict[str, Any], *, tag: str | None = None,
                 env: Mapping[str, str | None] | None = None) -> None:
        """``env`` overrides the inherited environment (a ``None`` value removes a variable)."""
        self.role = role
        self.tag = tag or f"wl-{role}-{uuid.uuid4().hex[:10]}"
        self._err = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the child
            prefix=f"{self.tag}-", suffix=".stderr", delete=False)
        env = _child_env(env or {}, self.tag)
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE), role, json.dumps(args)], cwd=str(ROOT), env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.killed = False
        self.ended = False
        self.received: list[dict[str, Any]] = []
        """Every message returned by :meth:`recv`, :meth:`poll` or :meth:`drain`, in order."""

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._lines.put(raw.decode().rstrip("\n"))
        self._lines.put(None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, chars: int = 3000) -> str:
        try:
            return Path(self._err.name).read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((line + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise ChildFailed(f"{self.tag} is gone; stderr:\n{self.stderr_tail()}") from None

    def recv(self, timeout: float = DEADLINE_S) -> dict[str, Any] | None:
        """The next message; ``None`` at end of stream (the child exited or was killed)."""
        if self.ended:
            return None
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise ChildFailed(f"{self.tag} said nothing for {timeout}s; stderr:\n"
                              f"{self.stderr_tail()}") from None
        return self._parse(line)

    def _parse(self, line: str | None) -> dict[str, Any] | None:
        if line is None:
            self.ended = True
            return None
        msg: dict[str, Any] = json.loads(line)
        if msg.get("fatal"):
            raise ChildFailed(f"{self.tag} crashed: {msg['fatal']}\n{self.stderr_tail()}")
        self.received.append(msg)
        return msg

    def poll(self) -> list[dict[str, Any]]:
        """The messages that already arrived, without waiting."""
        out = []
        while not self.ended:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            msg = self._parse(line)
            if msg is not None:
                out.append(msg)
        return out

    def count(self, kind: str) -> int:
        """How many ``kind`` messages arrived so far (call :meth:`poll` first)."""
        return sum(1 for m in self.received if m.get("kind") == kind)

    def expect(self, kind: str, timeout: float = DEADLINE_S) -> dict[str, Any]:
        msg = self.recv(timeout)
        if msg is None or msg.get("kind") != kind:
            raise ChildFailed(f"{self.tag}: expected {kind!r}, got {msg!r}; exit code "
                              f"{self.proc.poll()}; stderr:\n{self.stderr_tail()}")
        return msg

    def drain(self) -> list[dict[str, Any]]:
        """Every message still buffered after the child ended (it must have ended)."""
        assert self.proc.poll() is not None
        self._reader.join(timeout=DEADLINE_S)
        out: list[dict[str, Any]] = []
        while not self.ended:
            msg = self.recv(timeout=DEADLINE_S)
            if msg is None:
                return out
            out.append(msg)
        return out

    def kill(self) -> int:
        """SIGKILL the child (it gets no chance to clean up) and reap it."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.killed = True
        return self.proc.wait(timeout=DEADLINE_S)

    def wait(self, timeout: float = DEADLINE_S) -> int:
        code = self.proc.wait(timeout=timeout)
        if code != 0:
            raise ChildFailed(f"{self.tag} exited with {code}; stderr:\n{self.stderr_tail()}")
        return code

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self._err.close()
        with contextlib.suppress(OSError):
            os.unlink(self._err.name)


def _child_env(overrides: Mapping[str, str | None], tag: str) -> dict[str, str]:
    env = {**os.environ, "PGAPPNAME": tag, "PYTHONUNBUFFERED": "1"}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def dismiss(children: list[Child], *, ready: str | None = "ready") -> None:
    """Tell every child to exit (after its next ``ready``, if given) and wait for clean exits."""
    for c in children:
        if ready is not None:
            c.expect(ready)
        c.send("exit")
    for c in children:
        c.wait()


def barrier(children: list[Child], ready: str = "ready") -> list[dict[str, Any]]:
    """Wait until every child reported ``ready``, then release them all at once."""
    msgs = [c.expect(ready) for c in children]
    for c in children:
        c.send("go")
    return msgs


def _pg_parts(url: str) -> tuple[str, str | None]:
    base, _, query = url.partition("?")
    schema = query.split("schema=", 1)[1].split("&")[0] if "schema=" in query else None
    return base, schema


def projection_position(url: str) -> int:
    """The projection's tracked position, read straight from the ``tx_audit`` view: its
    newest row (ADR 0012; 0 if none)."""
    if url.startswith("sqlite:///"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=30)
        try:
            row = conn.execute("SELECT max(audit_id) FROM tx_audit").fetchone()
        finally:
            conn.close()
    else:
        import psycopg
        base, schema = _pg_parts(url)
        opts = f"-csearch_path={schema}" if schema else ""
        with psycopg.connect(base, options=opts, autocommit=True) as pg:
            row = pg.execute("SELECT max(audit_id) FROM tx_audit").fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


def wait_pg_sessions_gone(url: str, tags: list[str], timeout: float = DEADLINE_S) -> None:
    """After a SIGKILL, wait until the server has ended the child's sessions (so whatever it
    had in flight is committed or rolled back for good before the parent looks)."""
    if not url.startswith("postgres"):
        return
    import psycopg
    base, _ = _pg_parts(url)
    until = time.monotonic() + timeout
    with psycopg.connect(base, autocommit=True) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                               "= ANY(%s)", (tags,)).fetchone()
            if row is not None and row[0] == 0:
                return
            if time.monotonic() > until:
                raise ChildFailed(f"PostgreSQL sessions of {tags} outlived their processes")
            time.sleep(0.01)


def poll_until(check: Callable[[], Any], what: str, timeout: float = DEADLINE_S,
               interval: float = 0.005) -> Any:
    """Poll ``check`` until it returns something truthy."""
    until = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > until:
            raise ChildFailed(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_for(children: list[Child], check: Callable[[], bool], what: str,
             timeout: float = DEADLINE_S) -> None:
    """Collect the children's messages (into ``Child.received``) until ``check()`` holds."""
    until = time.monotonic() + timeout
    while True:
        for c in children:
            c.poll()
        if check():
            return
        if all(c.ended for c in children):
            raise ChildFailed(f"every child ended before {what}; stderr:\n"
                              + "\n".join(c.stderr_tail(1000) for c in children))
        if time.monotonic() > until:
            raise ChildFailed(f"timed out waiting for {what}")
        time.sleep(0.002)


def _events_table(url: str) -> str:
    if url.startswith("sqlite:///"):
        return "stored_events"
    _, schema = _pg_parts(url)
    return f'"{schema or "public"}"."walletledger_events"'


def raw_events(url: str, after: int = 0) -> list[tuple[int, str, bytes]]:
    """(position, topic, stored state) of every event after ``after``, straight from the event
    store's table -- no ledger code involved, so nothing can be repaired on the way."""
    if url.startswith("sqlite:///"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=30)
        try:
            rows = conn.execute("SELECT rowid, topic, state FROM stored_events WHERE rowid > ? "
                                "ORDER BY rowid", (after,)).fetchall()
        finally:
            conn.close()
    else:
        import psycopg
        base, _ = _pg_parts(url)
        with psycopg.connect(base, autocommit=True) as pg:
            rows = pg.execute(f"SELECT notification_id, topic, state FROM {_events_table(url)} "
                              "WHERE notification_id > %s ORDER BY notification_id",
                              (after,)).fetchall()
    return [(int(r[0]), str(r[1]), bytes(r[2])) for r in rows]


def log_head(url: str) -> int:
    """The event store's newest position, read straight from its table (0 if empty)."""
    column = "rowid" if url.startswith("sqlite:///") else "notification_id"
    query = f"SELECT MAX({column}) FROM {_events_table(url)}"
    if url.startswith("sqlite:///"):
        import sqlite3
        conn = sqlite3.connect(url[len("sqlite:///"):], timeout=30)
        try:
            row = conn.execute(query).fetchone()
        finally:
            conn.close()
    else:
        import psycopg
        base, _ = _pg_parts(url)
        with psycopg.connect(base, autocommit=True) as pg:
            row = pg.execute(query).fetchone()
    return 0 if row is None or row[0] is None else int(row[0])


class XorCipher:
    """A stand-in for ``CIPHER_TOPIC`` (no crypto package is installed): if the ledger ever
    honoured a host's cipher setting, stored states would stop being plain JSON."""

    def __init__(self, environment: Any) -> None:
        self.key = 0x5A

    def encrypt(self, plaintext: bytes) -> bytes:
        return bytes(b ^ self.key for b in plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        return self.encrypt(ciphertext)


# --- writers: what they acknowledged, and what the ledger must show for it -------------------

@dataclass
class Writer:
    """One writer child: its name, user, and the outpoints it walks through in order."""

    name: str
    user: str
    outpoints: list[str]
    child: Child | None = None

    def start(self, url: str, mode: str = "inline") -> Child:
        self.child = Child("writer", {"url": url, "user": self.user, "name": self.name,
                                      "outpoints": self.outpoints, "mode": mode},
                           tag=f"wl-writer-{self.name}-{random.getrandbits(32):08x}")
        return self.child

    @property
    def messages(self) -> list[dict[str, Any]]:
        assert self.child is not None
        return self.child.received

    def acks(self) -> int:
        assert self.child is not None
        return self.child.count("ack")


def _ref_outpoints(writers: list[Writer]) -> dict[tuple[str, str], str]:
    """(user, reference) -> the outpoint that action reserves (each writer's refs are its own)."""
    return {(w.user, f"{w.name}-{i}"): op for w in writers for i, op in enumerate(w.outpoints)}


def _absent(led: Any, user: str, reference: str, why: str) -> None:
    from ledger import UnknownAction
    try:
        found = led.get_action(user, reference)
    except UnknownAction:
        return
    raise AssertionError(f"{why}: yet action {reference!r} exists: {found}")


def check_acknowledged(led: Any, writers: list[Writer]) -> dict[str, int]:
    """After a crash: every command a writer acknowledged (or saw commit, ``lagged``) is in the
    log and visible; nothing the writer never started is. Returns message counts per kind."""
    kinds: dict[str, int] = defaultdict(int)
    for w in writers:
        done = [m for m in w.messages if m.get("kind") in ("ack", "lagged", "skip")]
        for m in w.messages:
            kinds[m["kind"]] += 1
        for m in done:
            where = f"{w.name}: {m}"
            if m["kind"] == "skip":
                _absent(led, w.user, m["ref"], "a refused create_action writes nothing")
                continue
            action = led.get_action(w.user, m["ref"])
            if m["cmd"] == "sign":
                assert action.txid == m["txid"], where
                assert led.get_transaction(m["txid"]).raw_tx is not None, where
            elif m["cmd"] == "note":
                notes = [e.details.get("details") for e in led.history(m["txid"])
                         if e.event == "history.note"]
                assert {"i": m["i"], "writer": w.name} in notes, where
            elif m["cmd"] == "broadcast":
                assert led.get_transaction(m["txid"]).state == "sent", where
                assert action.status == "unproven", where
                if m["kind"] == "ack" and led.projection_mode == "inline":
                    assert m["state"] == "sent", f"the acknowledged view was stale: {where}"
            elif m["cmd"] == "abort":
                assert led.get_transaction(m["txid"]).state == "invalid", where
                assert action.status == "failed", where
        # the writer is sequential: at most the command in flight after its last message may
        # have committed; an action it never started cannot exist
        last = max((m["i"] for m in done), default=-1)
        for i in range(last + 2, len(w.outpoints)):
            _absent(led, w.user, f"{w.name}-{i}", f"{w.name} never got to command {i}")
    return dict(kinds)


def check_one_holder(led: Any, writers: list[Writer], amounts: dict[str, int]) -> None:
    """No outpoint is held by two live actions, and each is spendable exactly when no live
    action holds it; the balance adds up to the same thing."""
    from ledger import UnknownAction
    holders: dict[tuple[str, str], list[str]] = defaultdict(list)
    unsigned: set[tuple[str, str]] = set()
    for (user, ref), op in _ref_outpoints(writers).items():
        try:
            action = led.get_action(user, ref)
        except UnknownAction:
            continue
        if action.status != "failed":  # aborted actions (and invalid spenders) hold nothing
            holders[(user, op)].append(ref)
            if action.status == "unsigned":
                unsigned.add((user, op))
    users = {w.user for w in writers}
    for user in users:
        ops = {op for w in writers if w.user == user for op in w.outpoints}
        for op in ops:
            held = holders.get((user, op), [])
            assert len(held) <= 1, f"{op} is held by two live actions: {held}"
            assert led.explain_output(user, op).spendable == (not held), (op, held)
        balance = led.balance(user)
        assert balance.spendable == sum(amounts[op] for op in ops if not holders.get((user, op)))
        assert balance.reserved == sum(amounts[op] for op in ops if (user, op) in unsigned)


# ============================================================================================
# child side
# ============================================================================================

def _say(**msg: Any) -> None:
    data = (json.dumps(msg, sort_keys=True) + "\n").encode()
    # One write() of a short line to a pipe is atomic and unbuffered: once it returns, the
    # acknowledgement is in the kernel and survives this process.
    written = os.write(1, data)
    assert written == len(data)


def _await_go() -> bool:
    line = sys.stdin.readline()
    if line.strip() not in ("go", "exit", ""):
        raise RuntimeError(f"unexpected parent message {line!r}")
    return line.strip() == "go"


def _open(url: str, mode: str = "inline") -> Any:
    from ledger import Ledger
    return Ledger.open(url, projections=mode)


def _one_sat_out() -> Any:
    from ledger import NewOutput
    return NewOutput(vout=0, satoshis=1, locking_script=b"\x51", basket=None)


def _count_collisions(led: Any) -> list[int]:
    """Instrumentation only: count saves refused by the event store's optimistic-concurrency
    check (the collisions the command handlers then retry)."""
    from eventsourcing.persistence import RecordConflictError
    app = led._app
    seen = [0]
    save = app.save

    def counting_save(*args: Any, **kwargs: Any) -> Any:
        try:
            return save(*args, **kwargs)
        except RecordConflictError:
            seen[0] += 1
            raise

    app.save = counting_save
    return seen


def role_race(args: dict[str, Any]) -> None:
    """Reservation race: each round, try to reserve every outpoint (own shuffled order)."""
    from ledger import ConcurrencyConflict, Outpoint, OutputAlreadyReserved
    led = _open(args["url"])
    collisions = _count_collisions(led)
    rng = random.Random(args["seed"])
    ops = [Outpoint.parse(o) for o in args["outpoints"]]
    proc, user = args["proc"], args["user"]
    round_no = 0
    _say(kind="ready")
    while _await_go():
        order = ops[:]
        if args["orders"][round_no] == "shuffled":
            rng.shuffle(order)
        won: dict[str, str] = {}
        lost: list[str] = []
        conflicts = 0
        collisions[0] = 0
        for i, op in enumerate(order):
            ref = f"r{round_no}-p{proc}-{i}"
            while True:
                try:
                    led.create_action(user, ref, description=f"race {proc}", inputs=[op],
                                      outputs=[_one_sat_out()])
                    won[str(op)] = ref
                except OutputAlreadyReserved:
                    lost.append(str(op))
                except ConcurrencyConflict:
                    conflicts += 1
                    continue
                break
        _say(kind="result", won=won, lost=lost, conflicts=conflicts, collisions=collisions[0])
        round_no += 1
    led.close()


def role_open(args: dict[str, Any]) -> None:
    """Open the ledger when released (several rounds), and report what it saw."""
    _say(kind="ready")
    while _await_go():
        with _open(args["url"]) as led:
            _say(kind="result", head=led.head_position(), mode=led.projection_mode)
        _say(kind="ready")


def _hold_first_save(led: Any) -> list[dict[str, Any] | None]:
    """Instrumentation: when armed (``slot[0] = {...}``), the next save first reports
    ``holding`` and waits for the parent's ``go``. Two children held this way have both read
    and decided before either writes: their saves collide for certain, not by luck."""
    app = led._app
    save = app.save  # already counting collisions
    slot: list[dict[str, Any] | None] = [None]

    def holding_save(*args: Any, **kwargs: Any) -> Any:
        armed, slot[0] = slot[0], None
        if armed is not None:
            _say(kind="holding", **armed)
            if not _await_go():
                raise SystemExit(0)
        return save(*args, **kwargs)

    app.save = holding_save
    return slot


def role_idem(args: dict[str, Any]) -> None:
    """Idempotency race: one create_action per job, released by the parent's ``go``. A job with
    ``hold`` also stops right before its first save until the parent's second ``go``."""
    from ledger import LedgerError, Outpoint
    led = _open(args["url"])
    collisions = _count_collisions(led)
    armed = _hold_first_save(led)
    for job in args["jobs"]:
        _say(kind="ready", key=job["key"])
        if not _await_go():
            break
        collisions[0] = 0
        armed[0] = {"key": job["key"]} if job.get("hold") else None
        try:
            view = led.create_action(
                job["user"], job["ref"], description=job["description"],
                inputs=[Outpoint.parse(o) for o in job["inputs"]], outputs=[_one_sat_out()],
                idempotency_key=job["key"])
            _say(kind="result", key=job["key"], ok=view.model_dump(mode="json"),
                 collisions=collisions[0])
        except LedgerError as err:
            _say(kind="result", key=job["key"], error=type(err).__name__, message=str(err),
                 collisions=collisions[0])
        armed[0] = None
    led.close()


def role_writer(args: dict[str, Any]) -> None:
    """Loop over outpoints: create (reserve), sign, note, then broadcast or abort; acknowledge
    each command once it returned. Outpoints another writer holds are skipped.

    ``mode`` is the projection mode the writer opens with (``inline`` by default). In catch-up
    mode some commands read their return value back from the lagging projection and raise
    ``UnknownAction``/``UnknownTransaction`` *after* committing; the writer reports those as
    ``lagged`` (not acknowledged: the command did not return) and carries on, computing the
    txid itself.
    """
    from adapters import chainkit
    from ledger import (
        ConcurrencyConflict,
        Outpoint,
        OutputAlreadyReserved,
        OutputNotSpendable,
        ProviderResult,
        ProviderStatus,
        UnknownAction,
        UnknownTransaction,
    )
    mode = args.get("mode", "inline")
    led = _open(args["url"], mode)
    user, name = args["user"], args["name"]
    lagging: tuple[type[Exception], ...] = \
        (UnknownAction, UnknownTransaction) if mode == "catchup" else ()
    _say(kind="ready")
    if not _await_go():
        return

    def attempt(fn: Callable[[], Any]) -> Any:
        while True:
            try:
                return fn()
            except ConcurrencyConflict:
                continue

    def run(cmd: str, fn: Callable[[], Any], **said: Any) -> Any:
        """Run one command; acknowledge it once it returned (``lagged`` if only its read-back
        failed). Returns the command's result, ``None`` when lagged."""
        try:
            result = attempt(fn)
        except lagging as err:
            _say(kind="lagged", cmd=cmd, error=type(err).__name__, **said)
            return None
        extra = {"state": str(result.state)} if hasattr(result, "state") else {}
        if cmd == "sign":
            assert result.txid == said["txid"], (result.txid, said["txid"])
        _say(kind="ack", cmd=cmd, **said, **extra)
        return result

    for i, text in enumerate(args["outpoints"]):
        op = Outpoint.parse(text)
        ref = f"{name}-{i}"
        try:
            run("create", lambda: led.create_action(
                user, ref, description="writer", inputs=[op], outputs=[_one_sat_out()]),  # noqa: B023
                ref=ref, outpoint=text, i=i)
        except (OutputAlreadyReserved, OutputNotSpendable):
            _say(kind="skip", ref=ref, outpoint=text, i=i)
            continue
        # one distinct transaction per action (a locktime that is final: every input has a
        # final sequence): a retaken outpoint must not rebuild the aborted action's txid
        raw = chainkit.make_tx([(op.txid, op.vout)], [(1, b"\x51")],
                               locktime=zlib.crc32(ref.encode()) % 400_000_000)
        txid = chainkit.txid_of(raw)
        run("sign", lambda: led.sign_action(user, ref, raw_tx=raw),  # noqa: B023
            ref=ref, txid=txid, i=i)
        run("note", lambda: led.note(txid, "writer", i=i, writer=name),  # noqa: B023
            ref=ref, txid=txid, i=i)
        if i % 3 == 2:
            run("abort", lambda: led.abort_action(user, ref, reason="writer aborts"),  # noqa: B023
                ref=ref, txid=txid, outpoint=text, i=i)
        else:
            result = ProviderResult(provider="arc", status=ProviderStatus.SUCCESS)
            run("broadcast", lambda: led.record_broadcast(txid, [result]),  # noqa: B023
                ref=ref, txid=txid, i=i)
    _say(kind="done")
    led.close()


def role_catchup(args: dict[str, Any]) -> None:
    """A catch-up projection process.

    Default: run pages until nothing is pending, then report ``done``. Options:
    ``page_events`` (events per page, the library's default otherwise), ``follow`` (keep
    waiting for new events instead of stopping; the parent kills it), ``hold_at_page`` (after
    that many committed pages, stop *inside* the next page's transaction -- rows written, not
    committed -- report ``in_page`` and wait to be killed). Every committed page is reported
    as ``page`` with the tracked position read back from the database after the commit.
    """
    url = args["url"]
    led = _open(url, "catchup")  # imports ledger first: projections.* alone is a circular import
    from projections import replay
    from projections.stores import SqlRowStore
    page_events = int(args.get("page_events") or replay.CATCHUP_PAGE_EVENTS)
    hold_at = args.get("hold_at_page")
    pages = [0]
    original = replay._apply_page

    def apply_page(cur: Any, statements: Any, log: Any, n_events: int) -> int:
        n: int = original(cur, statements, log, n_events)
        if n and hold_at is not None and pages[0] >= hold_at:
            pending = SqlRowStore(cur, statements).tracked_position()
            _say(kind="in_page", applied=n, pending_position=pending)
            sys.stdin.readline()  # the parent kills us here, inside the open transaction
            raise SystemExit(1)
        return n

    replay._apply_page = apply_page  # type: ignore[assignment]
    _say(kind="ready")
    total = 0
    while True:
        n = replay.catch_up(led._db, led._log, page_events=page_events, max_pages=1)
        if n:
            pages[0] += 1
            total += n
            position = projection_position(url)
            _say(kind="page", applied=n, position=position, head=led.head_position())
            continue
        if not args.get("follow"):
            break
        time.sleep(0.01)  # a follower polls for new events; the parent kills it
    _say(kind="done", applied=total, position=projection_position(url), head=led.head_position())
    led.close()


def _hold_audit_load(release_file: str) -> None:
    """Make the audit load of a rebuild (forked from this process) stop after reading its first
    event and before writing anything, until ``release_file`` exists."""
    from projections import replay
    unheld, rebuilder = replay.iterate_fields, os.getpid()

    def held(log: Any, **kwargs: Any) -> Any:
        for n, item in enumerate(unheld(log, **kwargs)):
            while n == 1 and os.getpid() != rebuilder and not os.path.exists(release_file):
                time.sleep(0.01)  # a test's gate, opened by the parent
            yield item

    replay.PARALLEL_AUDIT_MIN_EVENTS = 0
    replay.iterate_fields = held  # the fork inherits it; the rebuild's own fold never holds


def role_rebuild(args: dict[str, Any]) -> None:
    """Rebuild the projections when released, holding still inside the rebuild (after its
    first progress report, before the swap) until released again. ``audit_release``: the
    rebuild's audit table is loaded by a second process, which holds before its first write
    until that file exists."""
    if args.get("audit_release"):
        _hold_audit_load(args["audit_release"])
    with _open(args["url"]) as led:
        _say(kind="ready")
        if not _await_go():
            return
        held: list[bool] = []

        def progress(done: int, total: int) -> None:
            if not held:
                held.append(True)
                _say(kind="holding")
                _await_go()

        report = led.rebuild_projections(progress=progress)
        _say(kind="result", position=report.position)


def role_handover(args: dict[str, Any]) -> None:
    """An operator's process handing the projection around while writers write: ``rounds``
    times, switch to catch-up mode and run a catch-up pass, switch back to inline, and every
    other round rebuild the projections; reports ``round`` after each."""
    _say(kind="ready")
    if not _await_go():
        return
    for n in range(args["rounds"]):
        with _open(args["url"], "catchup") as led:
            led.run_projections()
        with _open(args["url"], "inline") as led:
            if n % 2:
                led.rebuild_projections()
        _say(kind="round", n=n)
    _say(kind="done")


ROLES: dict[str, Callable[[dict[str, Any]], None]] = {
    "race": role_race, "open": role_open, "idem": role_idem, "writer": role_writer, "catchup": role_catchup,
    "rebuild": role_rebuild, "handover": role_handover,
}


def main() -> None:
    role, args = sys.argv[1], json.loads(sys.argv[2])
    try:
        ROLES[role](args)
    except BaseException as err:
        import traceback
        traceback.print_exc()
        _say(fatal=f"{type(err).__name__}: {err}"[:2000])
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
