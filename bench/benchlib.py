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
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

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
