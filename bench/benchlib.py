"""Shared helpers of the benchmarks: arguments, throw-away databases, timing, JSON output.

Every benchmark creates its own databases (a temporary directory for SQLite, a fresh
``wl_bench_<pid>_<tag>`` database for PostgreSQL) and removes them afterwards, also on failure.
PostgreSQL is reached at ``WL_BENCH_PG`` (default ``postgresql://postgres@127.0.0.1:5432``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate

PG_BASE = os.environ.get("WL_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
BACKENDS = ("sqlite", "postgresql")


def parse_args(description: str, extra: Any = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="small sizes (< 60 s in total)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    if extra is not None:
        extra(parser)
    return parser.parse_args()


def backends(choice: str) -> list[str]:
    return list(BACKENDS) if choice == "both" else [choice]


def _pg_admin() -> Any:
    import psycopg
    return psycopg.connect(f"{PG_BASE}/postgres", autocommit=True, connect_timeout=5)


@contextlib.contextmanager
def database(backend: str, tag: str) -> Iterator[dict[str, str]]:
    """A fresh, empty database; yields ``{"url": ledger URL, "env": eventsourcing env}``."""
    if backend == "sqlite":
        tmp = tempfile.mkdtemp(prefix=f"wl_bench_{tag}_")
        path = os.path.join(tmp, f"{tag}.db")
        try:
            yield {"url": f"sqlite:///{path}", "path": path,
                   "env": {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": path,
                           "CREATE_TABLE": "y"}}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    name = f"wl_bench_{os.getpid()}_{tag}".lower()
    with _pg_admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        host_port = PG_BASE.split("@", 1)[1]
        host, _, port = host_port.partition(":")
        user = PG_BASE.split("://", 1)[1].split("@", 1)[0]
        yield {"url": f"{PG_BASE}/{name}", "name": name,
               "env": {"PERSISTENCE_MODULE": "eventsourcing.postgres", "POSTGRES_DBNAME": name,
                       "POSTGRES_HOST": host, "POSTGRES_PORT": port or "5432",
                       "POSTGRES_USER": user, "POSTGRES_PASSWORD": "", "CREATE_TABLE": "y"}}
    finally:
        with _pg_admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Timer:
    """Accumulates wall time per named section."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.totals[name] = self.totals.get(name, 0.0) + time.perf_counter() - start
            self.counts[name] = self.counts.get(name, 0) + 1


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


def median(samples: list[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def machine() -> dict[str, Any]:
    from importlib.metadata import version
    return {"cores": os.cpu_count(), "python": platform.python_version(),
            "eventsourcing": version("eventsourcing"), "sqlalchemy": version("sqlalchemy"),
            "psycopg": version("psycopg"), "sqlite": __import__("sqlite3").sqlite_version,
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def pg_version() -> str:
    try:
        with _pg_admin() as admin:
            row = admin.execute("SHOW server_version").fetchone()
            return str(row[0]) if row else "?"
    except Exception as err:  # report, never crash the header
        return f"unreachable ({type(err).__name__})"


def header(title: str, args: argparse.Namespace) -> None:
    info = machine()
    print(f"== {title} ==")
    print(f"   {info['date']} | {info['cores']} cores | Python {info['python']} | "
          f"eventsourcing {info['eventsourcing']} | SQLite {info['sqlite']} | "
          f"PostgreSQL {pg_version() if 'postgresql' in backends(args.backend) else '-'}")
    print(f"   command: {' '.join([os.path.basename(sys.executable), *sys.argv])}")
    sys.stdout.flush()


def emit_json(payload: dict[str, Any]) -> None:
    """The one machine-readable line every benchmark ends with."""
    print(json.dumps(payload, sort_keys=True, separators=(",", ":")))
    sys.stdout.flush()


def say(text: str) -> None:
    print(text)
    sys.stdout.flush()


# --- helpers shared by the chain benchmarks (blocks, reorg) ------------------------------------

def state_counts(led: Any) -> dict[str, int]:
    """Transactions per processing state, read from the ledger's ``transactions`` projection."""
    from sqlalchemy import text
    with led._engine.connect() as conn:
        rows = conn.execute(text("SELECT state, count(*) FROM transactions GROUP BY state"))
        return {str(state): int(n) for state, n in rows}


class BareChainTx(Aggregate):
    """A transaction stream with payloads shaped like the ledger's (bare ``eventsourcing``)."""

    class Created(Aggregate.Created):
        txid: str
        raw_tx: str
        state: str

    class Proved(Aggregate.Event):
        txid: str
        height: int
        block_hash: str
        merkle_root: str
        leaf_offset: int
        bump: str

    class Unproved(Aggregate.Event):
        txid: str
        height: int
        block_hash: str
        reason: str

    class Changed(Aggregate.Event):
        txid: str
        from_state: str
        to_state: str
        reason: str
        details: dict[str, Any]

        def apply(self, agg: Any) -> None:
            agg.state = self.to_state

    def __init__(self, txid: str, raw_tx: str, state: str) -> None:
        self.txid, self.raw_tx, self.state = txid, raw_tx, state

    def move(self, to: str, reason: str, details: dict[str, Any]) -> None:
        self.trigger_event(self.Changed, txid=self.txid, from_state=self.state, to_state=to,
                           reason=reason, details=details)


class BareChain(Aggregate):
    """The header chain stream (bare ``eventsourcing``)."""

    class Connected(Aggregate.Event):
        height: int
        hash: str
        prev_hash: str
        merkle_root: str

    class Disconnected(Aggregate.Event):
        height: int
        hash: str
        prev_hash: str
        merkle_root: str

    def __init__(self) -> None:
        pass


class BareChainApp(Application[Any]):
    name = "BareChainBench"


class BareChainLedger:
    """Bare ``eventsourcing`` doing the writes of a block connect / reorg with nothing else: the
    floor for ``apply_headers``. ``n`` transaction streams (created, proven, ``state``) are saved
    untimed; :meth:`save` times one save of the given aggregates' pending events."""

    def __init__(self, env: dict[str, str], n: int, *, state: str, chunk: int = 500) -> None:
        tx_cls, chain_cls = BareChainTx, BareChain
        self.app = BareChainApp(env=env)
        self.chain = chain_cls()
        self.txs: list[Any] = []
        for start in range(0, n, chunk):
            batch = []
            for i in range(start, min(n, start + chunk)):
                txid = f"{i:064x}"
                tx = tx_cls(txid=txid, raw_tx="ab" * 120, state="sent")
                tx.trigger_event(tx_cls.Proved, txid=txid, height=100, block_hash="cd" * 32,
                                 merkle_root="ef" * 32, leaf_offset=i, bump="01" * 200)
                tx.move(state, "proof", {"height": 100, "block_hash": "cd" * 32})
                batch.append(tx)
            self.app.save(*batch)
            self.txs += batch
        self.app.save(self.chain)
        self.tx_cls, self.chain_cls = tx_cls, chain_cls

    def header_event(self, kind: str, height: int) -> None:
        cls = self.chain_cls.Connected if kind == "connect" else self.chain_cls.Disconnected
        self.chain.trigger_event(cls, height=height, hash=f"{height:064x}",
                                 prev_hash=f"{height - 1:064x}", merkle_root="ef" * 32)

    def save_timed(self, *aggregates: Any) -> tuple[int, float]:
        """One save of ``aggregates``; returns (events appended, seconds)."""
        pending = sum(len(a.pending_events) for a in aggregates)
        start = time.perf_counter()
        self.app.save(*aggregates)
        return pending, time.perf_counter() - start

    def get_timed(self, txs: list[Any]) -> tuple[list[Any], float]:
        """``repository.get`` of each of ``txs`` (what a command must read before deciding)."""
        start = time.perf_counter()
        loaded = [self.app.repository.get(t.id) for t in txs]
        return loaded, time.perf_counter() - start

    def close(self) -> None:
        self.app.close()


# --- fast, realistic setup: receipts through the ledger's own aggregates -----------------------

@dataclass
class Receipt:
    """A third-party transaction to take outputs of, as ``internalize_action`` receives it."""

    user: str
    raw: bytes
    outputs: list[Any]  # InternalizeOutput
    labels: list[str] = field(default_factory=list)
    reference: str | None = None
    description: str = "receipt"


def bulk_internalize(led: Any, block: Any, receipts: Sequence[Receipt], *,
                     per_save: int = 250) -> list[str]:
    """Save ``receipts`` proven in ``block`` (already applied to the ledger) many per save.

    Each receipt appends exactly the events ``led.internalize_action`` appends for a new proven
    transaction - TransactionCreated, ProofRecorded, ProcessingChanged(sent -> unconfirmed or
    confirmed), ActionCreated, OutputsInternalized - made by the same aggregate methods, after the
    same checks (strict parse, BUMP parse, root equal to the active header's, state from the
    tip - both read from the chain stream); only the per-command read-backs and the one save
    per receipt are skipped. The ledger's mode decides whether the projections are written
    inline. Returns the txids.
    """
    from ledger.action import ActionAggregate
    from ledger.application import _internalized_outputs
    from ledger.chain import ChainAggregate
    from ledger.identity import chain_id
    from ledger.rules import proof_state
    from ledger.status import ProcessingStatus
    from ledger.transaction import TransactionAggregate

    app = led._app
    # The chain as the event store has it (the projections may lag in catch-up mode).
    chain = app._load(chain_id(), ChainAggregate)
    active = chain.header_at(block.height) if chain else None
    assert chain is not None and chain.tip is not None and active is not None
    assert (active["hash"], active["merkle_root"]) == (block.hash, block.merkle_root), \
        "the block is not on the ledger's active chain"
    target = proof_state(block.height, int(chain.tip["height"]))
    batch: list[Any] = []
    txids = []
    for r in receipts:
        parsed = app.codec.parse_raw_tx(r.raw)
        proof = app.codec.parse_bump(block.bumps[parsed.txid], parsed.txid)
        assert (proof.block_height, proof.merkle_root) == (block.height, block.merkle_root)
        tx = TransactionAggregate.create(
            txid=parsed.txid, raw_tx=parsed.raw, state=ProcessingStatus.SENT,
            is_coinbase=parsed.is_coinbase,
            inputs=[f"{i.source_txid}:{i.source_vout}" for i in parsed.inputs],
            output_count=len(parsed.outputs))
        rejected = tx.record_proof(height=proof.block_height, block_hash=block.hash,
                                   merkle_root=proof.merkle_root, leaf_offset=proof.leaf_offset,
                                   bump=proof.bump, target=target)
        assert rejected is None
        action = ActionAggregate.create(
            user=r.user, reference=r.reference or parsed.txid, description=r.description,
            is_outgoing=False, outputs=[], labels=list(r.labels))
        action.internalize(txid=parsed.txid, outputs=_internalized_outputs(parsed, r.outputs))
        action.add_labels(list(r.labels))
        batch += [tx, action]
        txids.append(parsed.txid)
        if len(batch) >= 2 * per_save:
            _save(app, batch)
            batch = []
    if batch:
        _save(app, batch)
    return txids


def _save(app: Any, batch: list[Any]) -> None:
    """One save inside a command, so the ledger keeps the saved aggregates in its stream cache,
    as ``internalize_action``'s own save does."""
    app.retrying(lambda attempt: app._save(*batch))
