"""``wallet-ledger``: the command line over the public :class:`ledger.Ledger` API (SPEC §8).

Exit codes: 0 ok; 1 the ledger refused (a domain rule: illegal transition, failed precondition,
unknown transaction, projection drift); 2 bad input (malformed argument, database URL or file).
A user mistake is one line on stderr prefixed ``error:``, never a traceback. Every read command
takes ``--json`` (plain JSON on stdout, nothing else) and never creates a database.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import signal
import socket
import sqlite3
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import unquote, urlsplit

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy import text as sql_text
from sqlalchemy.exc import OperationalError, ProgrammingError, SQLAlchemyError
from typer.core import TyperGroup

from adapters.demo import DemoFacts, run_demo
from adapters.persistence import parse_url
from ledger import (
    AuditEntry,
    Balance,
    BlockHeader,
    IllegalTransition,
    InvalidInput,
    Ledger,
    LedgerError,
    LedgerView,
    Outpoint,
    OutputView,
    StorageError,
)
from ledger.chain import MAX_HEADERS_PER_CALL, follows
from ledger.values import coerce
from projections.db import make_engine
from projections.schema import POINTER_TABLE

try:  # recent typer vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click.exceptions import ClickException  # type: ignore[no-redef,import-not-found]

DEFAULT_DB = "sqlite:///wallet-ledger.db"
DB_ENV = "WALLET_LEDGER_DB"
EXIT_OK, EXIT_REFUSED, EXIT_BAD_INPUT = 0, 1, 2
PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
PG_PROBE_TIMEOUT_S = 3.0
REPLAY_SCAN_EVENTS = 1_000
MAX_LIMIT = 1_000
IDLE_WAIT_S = 0.5
PROG_ENV = "WALLET_LEDGER_PROG"
"""How to invoke this program in printed hints (``./dev`` sets ``./dev wallet-ledger``)."""
CHAIN_EVENTS = ("chain.block_connected", "chain.block_disconnected")
TXID_IN_TEXT = re.compile(r"\b[0-9a-f]{64}\b")
FULL_TXID = re.compile(r"[0-9a-f]{64}")
MIN_PREFIX = 4
SHORT_TXID = 12
TXID_PREFIX = re.compile(rf"[0-9a-fA-F]{{{MIN_PREFIX},63}}")


# --- errors ----------------------------------------------------------------------------------

def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """One ``error:`` line on stderr, then exit with ``code``."""
    line = " ".join(str(message).split()) or "unknown error"
    typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


@contextmanager
def reporting() -> Iterator[None]:
    """Ledger errors become one line and an exit code: bad input 2, domain refusal 1."""
    try:
        yield
    except (InvalidInput, StorageError) as err:
        fail(str(err), EXIT_BAD_INPUT)
    except LedgerError as err:
        fail(str(err), EXIT_REFUSED)


class OneLineErrors(TyperGroup):
    """The root command group: click usage errors also become one ``error:`` line (exit 2)."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             windows_expand_args: bool = True, **extra: Any) -> Any:
        try:
            rv = super().main(args=args, prog_name=prog_name, complete_var=complete_var,
                              standalone_mode=False, windows_expand_args=windows_expand_args,
                              **extra)
        except ClickException as err:
            if type(err).__name__ != "NoArgsIsHelpError":  # that one has printed the help
                ctx = getattr(err, "ctx", None)
                hint = f" (see {ctx.command_path} --help)" if ctx is not None else ""
                typer.echo(f"error: {' '.join(err.format_message().split())}{hint}", err=True)
            rv = err.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            rv = 130
        code = rv if isinstance(rv, int) else EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


# --- the app ---------------------------------------------------------------------------------

app = typer.Typer(
    cls=OneLineErrors, no_args_is_help=True, add_completion=False,
    pretty_exceptions_enable=False, rich_markup_mode="markdown",
    help="An event-sourced transaction ledger for BSV wallets: play the demo, read actions, "
         "outputs and balances, audit what the wallet believed and why, maintain projections.")
audit_app = typer.Typer(no_args_is_help=True,
                        help="Incident audits: replay, explain, tail.")
projections_app = typer.Typer(no_args_is_help=True,
                              help="Rebuild, verify, run or switch the projections.")
headers_app = typer.Typer(no_args_is_help=True, help="Feed block headers to the ledger's chain.")
app.add_typer(audit_app, name="audit")
app.add_typer(projections_app, name="projections")
app.add_typer(headers_app, name="headers")

Db = Annotated[str, typer.Option(
    "--db", envvar=DB_ENV, metavar="URL",
    help="Ledger database: sqlite:///PATH, postgresql://USER@HOST:PORT/DB or memory://.")]
Json = Annotated[bool, typer.Option("--json", help="Plain JSON on stdout instead of tables.")]
User = Annotated[str, typer.Option("--user", "-u", metavar="USER", help="The wallet user.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why (recorded in the event).")]
Txid = Annotated[str, typer.Argument(
    metavar="TXID", help="A transaction id: 64 hex digits, or a unique prefix (4+).")]
Actor = Annotated[str | None, typer.Option(
    "--actor", help="Who is acting (recorded in the event); default: your login name.")]


def console() -> Console:
    """Standard output. No markup or emoji codes are read from the text printed: it holds what
    users stored (a label ``[red]vip`` is shown as written, ``[/]`` does not crash); the CLI's
    own emphasis is given as styles."""
    return Console(highlight=False, markup=False, emoji=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False, markup=False, emoji=False)


# --- opening the ledger ----------------------------------------------------------------------

def _scheme(url: str) -> str:
    return url.split("://", 1)[0].lower() if "://" in url else ""


def sqlite_path(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names (None for other URLs)."""
    if _scheme(url) != "sqlite" or not url.lower().startswith("sqlite:///"):
        return None
    raw = unquote(url[len("sqlite:///"):])
    return Path(raw) if raw and "?" not in raw and "\x00" not in raw else None


def _probe_postgres(url: str) -> None:
    """Fail fast (exit 2) when the PostgreSQL server cannot even be reached over TCP."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or 5432
    except ValueError:
        return  # the ledger names the problem
    if not host or host.startswith("/"):
        return
    try:
        socket.create_connection((host, port), timeout=PG_PROBE_TIMEOUT_S).close()
    except OSError as err:
        fail(f"cannot reach PostgreSQL at {host}:{port}: {err.strerror or err}")


def check_target(url: str, *, create: bool) -> None:
    """Refuse (exit 2) a read of a database that holds no ledger, or an unreachable server:
    reading never creates a ledger (nor adds its tables to somebody else's database)."""
    path = sqlite_path(url)
    if path is not None and not create and (not path.is_file() or path.stat().st_size == 0):
        fail(f"no ledger at {path}; run `{prog()} demo` or give --db")
    if _scheme(url) in PG_SCHEMES:
        _probe_postgres(url)
    if not create and holds_no_ledger(url):
        fail(f"{path or _display(url)} holds no wallet-ledger; check --db")


def _display(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    return url.replace(f":{parts.password}@", "@") if parts.password else url


def read_sql(url: str, query: str, params: dict[str, Any] | None = None
             ) -> list[tuple[Any, ...]] | None:
    """Rows of a read-only query on the projection views at ``url`` (SQLite or PostgreSQL),
    outside the :class:`Ledger` (which would switch the projection mode when opened).

    ``[]`` when the database holds no ledger (no such file or table); None when it cannot be
    asked here (unreachable, not a database, another scheme): ``Ledger.open`` names the problem.
    """
    path = sqlite_path(url)
    if path is not None:
        if not path.is_file():
            return []
        try:
            with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                                 timeout=5) as conn:
                return [tuple(r) for r in conn.execute(query, params or {}).fetchall()]
        except sqlite3.OperationalError as err:
            return [] if "no such table" in str(err) else None
        except sqlite3.Error:
            return None
    if _scheme(url) not in PG_SCHEMES:
        return None
    try:
        config = parse_url(url)
    except LedgerError:
        return None
    engine = make_engine(config.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sql_text(query), params or {}).fetchall()]
    except ProgrammingError as err:
        return [] if "does not exist" in str(err) else None
    except OperationalError as err:  # server reached, but no such database, role, password...
        cause = str(err.orig).strip().splitlines()[0] if err.orig else str(err)
        fail(f"cannot open {_display(url)}: {cause[:300]}")
    except SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def stored_mode(url: str) -> str | None:
    """The projection mode (``inline`` / ``catchup``) the database at ``url`` is in; None when
    it holds no ledger or cannot be asked (``Ledger.open`` then creates one, or names the
    problem).

    Read before opening because ``Ledger.open`` *sets* the database-wide mode: a read command
    opening a catch-up deployment inline would silently switch every writer to inline.
    """
    rows = read_sql(url, f'SELECT "mode" FROM "{POINTER_TABLE}" WHERE "id" = 1')
    return str(rows[0][0]) if rows else None


def holds_no_ledger(url: str) -> bool:
    """True when the database at ``url`` is reachable and holds no ledger (nothing to read)."""
    return read_sql(url, f'SELECT "mode" FROM "{POINTER_TABLE}" WHERE "id" = 1') == []


def resolve_txid(db: str, text: str) -> str:
    """A full txid, or a unique prefix of one (at least 4 hex digits; a trailing ``…`` as the
    tables print it is fine): the full txid. Unknown prefix exit 1, ambiguous or malformed 2."""
    value = text.strip().removesuffix("…").removesuffix("...")
    if len(value) == 64:
        return value  # the ledger validates it
    if not TXID_PREFIX.fullmatch(value):
        fail(f"a txid is 64 hex digits, or a unique prefix of at least {MIN_PREFIX}; "
             f"got {text[:80]!r}")
    prefix = value.lower()
    rows = read_sql(db, 'SELECT "txid" FROM "transactions" WHERE "txid" >= :lo AND "txid" < :hi '
                        'ORDER BY "txid" LIMIT 6', {"lo": prefix, "hi": prefix + "g"})
    found = [str(r[0]) for r in rows or []]
    if not found:
        fail(f"no transaction id starts with {prefix}", EXIT_REFUSED)
    if len(found) > 1:
        shown = ", ".join(f[:len(prefix) + 4] + "…" for f in found[:5])
        fail(f"{prefix} is ambiguous ({shown}{', …' if len(found) > 5 else ''}); "
             "give more hex digits")
    return found[0]


def resolve_outpoint(db: str, text: str) -> Outpoint:
    """``TXID:VOUT`` where TXID may be a unique prefix (see :func:`resolve_txid`)."""
    txid, sep, vout = text.strip().rpartition(":")
    if not sep or not txid:
        fail(f"an outpoint is written TXID:VOUT, got {text[:100]!r}")
    with reporting():
        return Outpoint.parse(f"{resolve_txid(db, txid)}:{vout}")


@contextmanager
def session(db: str, *, create: bool = False, projections: str | None = None) -> Iterator[Ledger]:
    """The ledger at ``db``, with its errors reported as one line and an exit code.

    ``projections=None`` keeps the mode the database is in (inline for a new one).
    """
    check_target(db, create=create)
    mode = projections or stored_mode(db) or "inline"
    with reporting():
        try:
            led = Ledger.open(db, projections=mode)
        except sqlite3.DatabaseError as err:  # the library lets this one through (see tests)
            fail(f"cannot open {_display(db)}: {err}")
    try:
        with reporting():
            yield led
    finally:
        led.close()


# --- output helpers --------------------------------------------------------------------------

def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return _jsonable(value.model_dump())
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def emit_json(value: Any) -> None:
    """Plain JSON on stdout (bytes as hex, times as ISO 8601)."""
    sys.stdout.write(json.dumps(_jsonable(value), indent=2) + "\n")


def when(at: datetime) -> str:
    """A UTC time to the millisecond, in a form ``--at`` accepts back."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def table(title: str, *columns: str, **options: Any) -> Table:
    """The CLI's table style: a rule under the header, no vertical borders, so that the
    columns that matter fit an 80-column terminal."""
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
              show_edge=False, padding=(0, 1, 0, 0), **options)
    for name in columns:
        t.add_column(name)
    return t


def short_txid(txid: str) -> str:
    """A txid as tables show it: a prefix that commands accept back (see resolve_txid)."""
    return txid[:SHORT_TXID] + "…"


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 64 and value[:64].isalnum():
        return value[:8] + "…" + value[64:]  # a txid or hash, with any ":vout" kept
    if isinstance(value, list):
        if len(value) <= 2 and all(not isinstance(v, dict | list) for v in value):
            return ",".join(_short(v) for v in value)
        return str(len(value))
    text = str(value)
    return text if len(text) <= 48 else text[:47] + "…"


_FIRST_KEYS = ("reason", "provider", "status", "what", "height", "actor")
_SKIP_KEYS = {"txid", "from_state", "to_state", "state", "user", "reference", "provider_status",
              "origin_user", "origin_reference", "prev_hash", "merkle_root", "bump_bytes",
              "raw_tx_bytes"}
"""Left out of the tables (``--json`` has every field)."""


def details_text(entry: AuditEntry) -> str:
    """An audit row's details, compact: the important keys first, empty values left out."""
    flat: dict[str, Any] = {}
    for key, value in entry.details.items():
        if isinstance(value, dict):
            flat.update({k: v for k, v in value.items() if k not in flat})
        else:
            flat[key] = value
    keys = [k for k in _FIRST_KEYS if k in flat] + sorted(k for k in flat if k not in _FIRST_KEYS)
    parts = [f"{k}={_short(flat[k])}" for k in keys
             if k not in _SKIP_KEYS and flat[k] not in (None, False, "", [], {})]
    who = f"{entry.user}/{_short(entry.reference)} " if entry.user else ""
    return who + " ".join(parts)


def _arrow(entry: AuditEntry) -> str:
    if entry.from_state is None and entry.to_state is None:
        return ""
    return f"{entry.from_state or '·'} → {entry.to_state or '·'}"


def audit_table(entries: Sequence[AuditEntry], title: str, *, with_txid: bool = False) -> Table:
    """A timeline: position, time, event, from → to, details (one day: the date in the title)."""
    days = {e.at.astimezone(UTC).date() for e in entries}
    one_day = len(days) == 1
    t = table(f"{title} ({days.pop()}, UTC)" if one_day else f"{title} (UTC)")
    t.add_column("pos", justify="right", no_wrap=True)
    t.add_column("time", no_wrap=one_day)
    t.add_column("event (txid)" if with_txid else "event", no_wrap=True)
    t.add_column("from → to", max_width=13)
    t.add_column("details", ratio=1, overflow="fold")
    for e in entries:
        at = when(e.at)[11:19] if one_day else when(e.at)
        event = f"{e.event}\n({short_txid(e.txid)})" if with_txid and e.txid else e.event
        t.add_row(str(e.position), at, event, _arrow(e), details_text(e))
    return t


def outputs_table(outputs: Iterable[OutputView], title: str) -> Table:
    t = table(title)
    t.add_column("outpoint", no_wrap=True)
    t.add_column("satoshis", justify="right", no_wrap=True)
    t.add_column("basket", overflow="fold", ratio=1)
    t.add_column("category", no_wrap=True)
    t.add_column("flags")
    t.add_column("tags", overflow="fold", ratio=1)
    for o in outputs:
        flags = ",".join(f for f, on in (("change", o.change), ("coinbase", o.is_coinbase)) if on)
        t.add_row(f"{short_txid(o.txid)}:{o.vout}", f"{o.satoshis:,}", o.basket, o.category,
                  flags, ",".join(o.tags))
    return t


BUCKETS = ("spendable", "reserved", "pending", "immature", "quarantined")


def balance_table(balances: Sequence[tuple[str, Balance]], title: str) -> Table:
    t = table(title, "")
    for bucket in BUCKETS:
        t.add_column(bucket, justify="right")
    for name, b in balances:
        t.add_row(name, *(f"{getattr(b, bucket):,}" for bucket in BUCKETS))
    return t


def evidence_entries(led: LedgerView, txids: Sequence[str], positions: Sequence[int]
                     ) -> tuple[list[AuditEntry], list[int]]:
    """The audit rows at ``positions``: looked up in the histories of ``txids``, then among the
    newest chain events. Returns (found rows in order, positions not found)."""
    wanted = set(positions)
    found: dict[int, AuditEntry] = {}
    for txid in dict.fromkeys(txids):
        try:
            found.update({e.position: e for e in led.history(txid) if e.position in wanted})
        except LedgerError:
            continue
    for event in CHAIN_EVENTS:
        if wanted - found.keys():
            found.update({e.position: e for e in led.audit_tail(limit=MAX_LIMIT, event=event)
                          if e.position in wanted})
    rest = wanted - found.keys()
    if rest and isinstance(led, Ledger) and led.head_position() - min(rest) < MAX_LIMIT:
        recent = led.audit_tail(limit=led.head_position() - min(rest) + 1)
        found.update({e.position: e for e in recent if e.position in rest})
    return [found[p] for p in sorted(found)], sorted(wanted - found.keys())


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


# --- demo ------------------------------------------------------------------------------------

def _fresh_target(db: str, reset: bool) -> None:
    """The demo writes only to an empty database (a SQLite file is deleted with --reset)."""
    path = sqlite_path(db)
    if path is None:
        if reset:
            fail("--reset deletes SQLite files only; give an empty database instead")
        return
    if path.is_file() and path.stat().st_size > 0:
        if not reset:
            fail(f"{path} is not empty; pass --reset to start over, or --db sqlite:///OTHER.db")
        for extra in ("", "-wal", "-shm", "-journal"):
            Path(f"{path}{extra}").unlink(missing_ok=True)


def prog() -> str:
    """This program as the user can type it again (``./dev wallet-ledger`` under ``./dev``)."""
    return os.environ.get(PROG_ENV, "").strip() or "wallet-ledger"


def _hints(out: Console, db: str, facts: DemoFacts) -> None:
    out.print()
    out.rule(Text("Inspect what it did", style="bold"), align="left")
    if _scheme(db) == "memory":
        out.print("  a memory:// ledger is gone when the demo exits; give --db sqlite:///FILE "
                  "to keep one to inspect")
        return
    flag = "" if db == DEFAULT_DB else f" --db {db}"
    me = prog()
    lines = [
        ("the rent payment's timeline: outage, proofs, reorg",
         f"history {facts.rent_txid}"),
        ("why carol's coinbase output is spendable, with event positions",
         f"audit explain {facts.coinbase_txid}:0 --user carol"),
        ("what the wallet believed right after the reorg",
         f"audit replay --at {facts.reorg_position} --user bob"),
        ("the rejected payment", f"history {facts.rejected_txid}"),
        ("outputs, actions and a balance", "outputs --user carol"),
        ("", "actions --user alice"),
        ("", "balance --user bob"),
        ("rebuild-from-zero equals the live tables", "projections verify"),
        ("every command, with what it is for", "--help"),
    ]
    for text, command in lines:
        if text:
            out.print(f"  # {text}", style="dim")
        out.print(f"  {me} {command}{flag if command != '--help' else ''}", soft_wrap=True)


@app.command()
def demo(db: Db = DEFAULT_DB,
         reset: Annotated[bool, typer.Option(
             "--reset", help="Delete an existing SQLite file first.")] = False) -> None:
    """Play the demo wallet story on a fresh SQLite file.

    Three users, payments, a provider outage, a rejected transaction, proofs, a 2-block reorg
    and a coinbase maturing, narrated step by step; ends with the commands to inspect it.
    """
    _fresh_target(db, reset)
    out = console()
    started = time.perf_counter()
    with session(db, create=True) as led:
        if led.head_position() > 0:
            fail(f"{led.url} already holds a ledger; the demo needs an empty database")
        path = sqlite_path(db)
        where = f"{led.url} ({path.resolve()})" if path else led.url
        out.print(Text.assemble(("wallet-ledger demo", "bold"), f" -> {where}"), soft_wrap=True)
        facts = run_demo(led, out)
    out.print(f"\n  {facts.events} events in {time.perf_counter() - started:.1f} s.")
    _hints(out, db, facts)


# --- read commands ---------------------------------------------------------------------------

@app.command()
def outputs(user: User, db: Db = DEFAULT_DB,
            basket: Annotated[str | None, typer.Option(
                help="Only this basket (default: every basket).")] = None,
            all_: Annotated[bool, typer.Option(
                "--all", help="Also listed outputs that are not spendable now.")] = False,
            limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
            as_json: Json = False) -> None:
    """A user's spendable outputs (all listed ones with --all).

    Largest first. Outputs of queued, invalid, doubleSpend, frozen and nonfinal transactions
    are never listed.
    """
    with session(db) as led:
        page = led.list_outputs(user, basket=basket, spendable=None if all_ else True,
                                limit=_limit(limit))
    if as_json:
        emit_json(page)
        return
    kind = "listed" if all_ else "spendable"
    console().print(outputs_table(page.items, f"{user}: {kind} outputs "
                                              f"({len(page.items)} of {page.total})"))


@app.command()
def actions(user: User, db: Db = DEFAULT_DB,
            label: Annotated[list[str] | None, typer.Option(
                help="Only actions with this label (repeatable: any of them).")] = None,
            limit: Annotated[int, typer.Option(help="At most this many rows.")] = 100,
            as_json: Json = False) -> None:
    """A user's actions: payments made and received, newest first."""
    with session(db) as led:
        page = led.list_actions(user, labels=label or [], limit=_limit(limit))
    if as_json:
        emit_json(page)
        return
    t = table(f"{user}: actions, newest first ({len(page.items)} of {page.total})")
    t.add_column("txid", no_wrap=True)
    t.add_column("reference", overflow="fold", max_width=16)
    t.add_column("status", no_wrap=True)
    t.add_column("satoshis", justify="right", no_wrap=True)
    t.add_column("description", ratio=2)
    t.add_column("labels", overflow="fold", ratio=1)
    for a in page.items:
        ref = short_txid(a.reference) if a.reference == a.txid else a.reference
        t.add_row(short_txid(a.txid) if a.txid else "-", ref, a.status,
                  f"{a.satoshis_delta:+,}", a.description, ",".join(a.labels))
    console().print(t)


@app.command()
def tx(txid: Txid, db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """One transaction: state, attempts, proof."""
    with session(db) as led:
        view = led.get_transaction(resolve_txid(db, txid))
    if as_json:
        emit_json(view)
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    rows = [("txid", view.txid), ("state", str(view.state)), ("attempts", str(view.attempts)),
            ("was broadcast", _yes(view.was_broadcast)), ("coinbase", _yes(view.is_coinbase)),
            ("block height", _opt(view.height)), ("block hash", _opt(view.block_hash)),
            ("merkle root", _opt(view.merkle_root)),
            ("raw size", f"{len(view.raw_tx)} bytes" if view.raw_tx else "-"),
            ("last change", f"log position {view.position}")]
    for row in rows:
        grid.add_row(*row)
    console().print(grid)
    console().print(f"timeline: {prog()} history {view.txid}", soft_wrap=True, style="dim")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


@app.command()
def balance(user: User, db: Db = DEFAULT_DB,
            basket: Annotated[str | None, typer.Option(
                help="Only this basket (default: every basket).")] = None,
            as_json: Json = False) -> None:
    """A user's balance in satoshis, by category.

    spendable, reserved (by unsigned actions), pending (visible, not yet spendable), immature
    (coinbase), quarantined (inputs held after a double spend).
    """
    with session(db) as led:
        b = led.balance(user, basket=basket)
    if as_json:
        emit_json({"user": user, "basket": basket, **b.model_dump()})
        return
    console().print(balance_table([(user, b)], f"balance of {user}"
                                               + (f" (basket {basket})" if basket else "")))


@app.command()
def history(txid: Txid, db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """A transaction's timeline, with log positions.

    Every event: position, time, event, from → to, details (provider answers, proofs, reorgs,
    operator reasons).
    """
    with session(db) as led:
        txid = resolve_txid(db, txid)
        entries = led.history(txid)
    if as_json:
        emit_json(entries)
        return
    console().print(audit_table(entries, f"history of {txid}"))


# --- audit -----------------------------------------------------------------------------------

def parse_at(text: str) -> int | datetime:
    """A log position (whole number), an ISO 8601 time (UTC unless it says otherwise), or a
    bare ``HH:MM[:SS]`` meaning that time today, UTC."""
    value = text.strip()
    if value.isascii() and value.isdigit():  # not "²": str.isdigit() takes every digit sign
        return int(value)
    try:
        if len(value) <= 8 and value.count(":") in (1, 2):
            clock = datetime.strptime(value, "%H:%M:%S" if value.count(":") == 2 else "%H:%M")
            return datetime.now(UTC).replace(hour=clock.hour, minute=clock.minute,
                                             second=clock.second, microsecond=0)
        at = datetime.fromisoformat(value)
        return at if at.tzinfo is not None else at.replace(tzinfo=UTC)  # the CLI's UTC default
    except ValueError:
        fail(f"--at takes a log position (e.g. 120), an ISO time (e.g. 2025-01-31T14:03:00Z) "
             f"or a time today (e.g. 14:03), got {text[:60]!r}")


def _replay_txids(view: LedgerView, user: str | None) -> list[str]:
    if user is not None:
        found = view.list_actions(user, limit=MAX_LIMIT).items
        return list(dict.fromkeys(a.txid for a in found if a.txid))
    tail = view.audit_tail(limit=REPLAY_SCAN_EVENTS)
    return list(dict.fromkeys(e.txid for e in tail if e.txid))


def _replay_users(view: LedgerView, user: str | None) -> list[str]:
    if user is not None:
        return [user]
    tail = view.audit_tail(limit=REPLAY_SCAN_EVENTS)
    return sorted({e.user for e in tail if e.user})


def _replay(led: Ledger, at: int | datetime, user: str | None) -> dict[str, Any]:
    view = led.as_of(at)
    tip = view.chain_tip()
    txs = []
    for txid in _replay_txids(view, user):
        then = view.get_transaction(txid)
        txs.append({"txid": txid, "state_then": str(then.state),
                    "state_now": str(led.get_transaction(txid).state)})
    users = _replay_users(view, user)
    return {
        "at": at.isoformat() if isinstance(at, datetime) else at,
        "position": view.position,
        "head_position": led.head_position(),
        "chain_tip": None if tip is None else tip.model_dump(),
        "transactions": txs,
        "balances": {u: {"then": view.balance(u).model_dump(),
                         "now": led.balance(u).model_dump()} for u in users},
        "spendable_outputs": [o.model_dump() for u in users
                              for o in view.list_outputs(u, basket=None, limit=MAX_LIMIT).items],
    }


def _print_replay(report: dict[str, Any], user: str | None) -> None:
    out = console()
    tip = report["chain_tip"]
    asked = report["at"]
    head = report["head_position"]
    point = f"at {asked}: log position" if isinstance(asked, str) else "as of log position"
    out.print(Text.assemble((f"Replay {point} {report['position']}", "bold"),
                            f" (the log is now at {head})"), soft_wrap=True)
    if isinstance(asked, int) and asked > head:
        out.print(f"  position {asked} is beyond the log head: this is the ledger as it is now")
    out.print("  chain tip then: "
              + (f"height {tip['height']} {_short(tip['hash'])}" if tip else "none"))
    scope = f"of {user}" if user else f"in the last {REPLAY_SCAN_EVENTS} audit rows"
    t = table(f"Transactions {scope}")
    t.add_column("txid", no_wrap=True)
    t.add_column("state then", no_wrap=True)
    t.add_column("state now", no_wrap=True)
    for row in report["transactions"]:
        changed = row["state_then"] != row["state_now"]
        then = Text(row["state_then"], style="bold" if changed else "")
        t.add_row(short_txid(row["txid"]), then, row["state_now"] + (" *" if changed else ""))
    out.print(t)
    if any(row["state_then"] != row["state_now"] for row in report["transactions"]):
        out.print("  * changed since then")
    rows = [(f"{u} {k}", Balance(**v[k])) for u, v in report["balances"].items()
            for k in ("then", "now")]
    out.print(balance_table(rows, "Balances then and now"))
    spendable = [OutputView(**o) for o in report["spendable_outputs"]]
    out.print(outputs_table(spendable, "Spendable outputs then"))


@audit_app.command("replay")
def audit_replay(at: Annotated[str, typer.Option(
                     "--at", metavar="POSITION|TIME",
                     help="A log position, or an ISO time such as 2025-01-31T14:03:00Z (UTC).")],
                 db: Db = DEFAULT_DB,
                 user: Annotated[str | None, typer.Option(
                     "--user", "-u", help="Focus on one user's actions and outputs.")] = None,
                 as_json: Json = False) -> None:
    """What the wallet believed at a log position or time.

    Transaction states then and now, balances then and now, spendable outputs then.
    """
    point = parse_at(at)
    with session(db) as led:
        report = _replay(led, point, user)
    if as_json:
        emit_json(report)
        return
    _print_replay(report, user)


AtOption = Annotated[str | None, typer.Option(
    "--at", metavar="POSITION|TIME",
    help="As the ledger believed it then: a log position, an ISO time (UTC) or HH:MM today.")]


@audit_app.command("explain")
def audit_explain(outpoint: Annotated[str, typer.Argument(metavar="TXID:VOUT",
                                                          help="The output to explain.")],
                  user: User, db: Db = DEFAULT_DB, at: AtOption = None,
                  as_json: Json = False) -> None:
    """Why an output is (or was) spendable, with evidence.

    The spendability rule's inputs, now or --at a past moment, and the events (log positions)
    that set them.
    """
    point = None if at is None else parse_at(at)
    with session(db) as led:
        op = resolve_outpoint(db, outpoint)
        view: LedgerView = led if point is None else led.as_of(point)
        position = led.head_position() if view.position is None else view.position
        try:
            why = view.explain_output(user, op)
        except InvalidInput as err:
            fail(f"{err}" + ("" if point is None else f" at log position {position}"))
        related = [op.txid, *(m for r in why.reasons for m in TXID_IN_TEXT.findall(r))]
        evidence, unseen = evidence_entries(led, related, why.positions)
    if as_json:
        emit_json({**why.model_dump(), "outpoint": str(op), "user": user,
                   "position": position, "evidence": evidence})
        return
    out = console()
    verdict = Text("SPENDABLE", style="green") if why.spendable else \
        Text("NOT SPENDABLE", style="red")
    out.print(f"{user}'s output {op}", soft_wrap=True)
    if point is None:
        out.print(Text.assemble("is ", verdict, f" (category {why.category}) because:"))
    else:
        then = "" if isinstance(point, int) else f"at {at}, "
        out.print(Text.assemble("was ", verdict, f" {then}at log position {position} "
                                f"(category {why.category}) because:"))
    for reason in why.reasons:
        out.print(f"  • {reason}", soft_wrap=True)
    out.print(f"evidence at log positions: {', '.join(map(str, why.positions)) or '-'}")
    if evidence:
        out.print(audit_table(evidence, "Evidence"))
    for missing in unseen:
        out.print(f"  position {missing}: not among the rows looked up; "
                  f"see {prog()} audit replay --at {missing}", soft_wrap=True)


@audit_app.command("tail")
def audit_tail(db: Db = DEFAULT_DB,
               limit: Annotated[int, typer.Option(help="How many rows.")] = 20,
               event: Annotated[str | None, typer.Option(
                   help="Only this event, e.g. processing.rejected.")] = None,
               as_json: Json = False) -> None:
    """The newest audit rows, optionally of one event type."""
    with session(db) as led:
        entries = led.audit_tail(limit=_limit(limit), event=event)
    if as_json:
        emit_json(entries)
        return
    if not entries:
        console().print("no audit rows" + (f" with event {event}" if event else ""))
        return
    title = f"last {len(entries)} audit rows, newest first" + (f", {event}" if event else "")
    console().print(audit_table(entries, title, with_txid=True))


# --- projections -----------------------------------------------------------------------------

@projections_app.command("rebuild")
def projections_rebuild(db: Db = DEFAULT_DB) -> None:
    """Rebuild every projection from the log (blue/green).

    Fresh tables are built beside the live ones and swapped in in one transaction; readers
    never see a half-built projection. Progress (events/s) goes to stderr.
    """
    columns = (TextColumn("rebuilding"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn())
    with session(db) as led, Progress(*columns, console=err_console()) as bar:
        task = bar.add_task("rebuild", total=None, rate="-")
        started = time.perf_counter()

        def progress(done: int, total: int) -> None:
            rate = done / max(time.perf_counter() - started, 1e-9)
            bar.update(task, completed=done, total=max(total, done), rate=f"{rate:,.0f}")

        report = led.rebuild_projections(progress=progress)
    rate = report.events / max(report.seconds, 1e-9)
    console().print(f"rebuilt {report.events:,} events in {report.seconds:.2f} s "
                    f"({rate:,.0f} events/s); live at position {report.position}")


@projections_app.command("verify")
def projections_verify(db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """Diff the live projections against a rebuild; exit 1 on drift."""
    with session(db) as led:
        report = led.verify_projections()
    if as_json:
        emit_json(report)
    elif report.ok:
        console().print(f"projections match a rebuild from the log (position {report.position})")
    else:
        console().print(_drift_table(report.differences))
    if not report.ok:
        n = len(report.differences)
        typer.echo(f"error: projections drifted from the log: {_rows(n)} "
                   f"{'differs' if n == 1 else 'differ'} from a rebuild", err=True)
        raise typer.Exit(EXIT_REFUSED)


def _drift_table(differences: Sequence[dict[str, Any]]) -> Table:
    t = table(f"Drift: {_rows(len(differences))}")
    t.add_column("table", no_wrap=True)
    t.add_column("key", overflow="fold", ratio=1)
    t.add_column("live", overflow="fold", ratio=1)
    t.add_column("rebuilt", overflow="fold", ratio=1)
    for d in differences:
        cols = d.get("columns", [])
        live, rebuilt = d.get("live"), d.get("rebuilt")
        key = ":".join(short_txid(k) if isinstance(k, str) and FULL_TXID.fullmatch(k) else str(k)
                       for k in d.get("key", []))
        t.add_row(str(d.get("table")), key,
                  _cells(live, cols) if live else "(missing)",
                  _cells(rebuilt, cols) if rebuilt else "(missing)")
    return t


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _cells(row: dict[str, Any], cols: Sequence[str]) -> str:
    return " ".join(f"{c}={_short(row.get(c))}" for c in cols)


class _Stop(Exception):
    """SIGTERM: stop the catch-up loop as Ctrl-C does."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Stop


@projections_app.command("run")
def projections_run(db: Db = DEFAULT_DB,
                    once: Annotated[bool, typer.Option(
                        "--once", help="One catch-up pass, then exit.")] = False,
                    idle: Annotated[float, typer.Option(
                        help="Seconds to wait when nothing is pending.")] = IDLE_WAIT_S) -> None:
    """The catch-up projection process, until Ctrl-C.

    Projects new events page by page (exactly once). Ctrl-C or SIGTERM stops it cleanly; a
    ledger that was inline is switched back to inline on exit.
    """
    if not 0 < idle <= 60:
        fail(f"--idle must be more than 0 and at most 60 seconds, got {idle}")
    out = console()
    check_target(db, create=False)
    found = stored_mode(db) or "inline"
    started, done = time.perf_counter(), [0]
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    position = 0
    try:
        with session(db, projections="catchup") as led:
            try:
                if found == "inline":
                    out.print("the ledger was in inline mode: catch-up while this runs, inline "
                              "again on exit", soft_wrap=True)
                if not once:
                    out.print(f"catch-up projections on {led.url}; Ctrl-C stops",
                              soft_wrap=True)
                _catch_up_loop(led, out, done, once=once, idle=idle)
            except (KeyboardInterrupt, _Stop):
                out.print("stopping")
            position = led.head_position()
        if found == "inline":
            with session(db, projections="inline"):
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    out.print(f"projected {done[0]:,} events in {time.perf_counter() - started:.1f} s; "
              f"log head at position {position}; projections {found}")


def _catch_up_loop(led: Ledger, out: Console, done: list[int], *, once: bool,
                   idle: float) -> None:
    while True:
        n = led.run_projections()
        done[0] += n
        if once:
            return
        if n:
            out.print(f"projected {n:,} events (log head {led.head_position()})")
        else:
            time.sleep(idle)


@projections_app.command("mode")
def projections_mode(
        db: Db = DEFAULT_DB,
        mode: Annotated[str | None, typer.Argument(
            metavar="[inline|catchup]", help="Switch to this mode (default: show the mode).")
        ] = None, as_json: Json = False) -> None:
    """Show or switch the projection mode (inline or catchup).

    inline: rows written with each command; catchup: a `projections run` process writes them.
    """
    if mode is not None and mode not in ("inline", "catchup"):
        fail(f"the projection mode is inline or catchup, got {mode[:40]!r}")
    check_target(db, create=False)
    with session(db, projections=mode) as led:
        current = led.projection_mode
    if as_json:
        emit_json({"mode": current})
        return
    console().print(f"projections: {current}"
                    + (f" (a catch-up process must run: {prog()} projections run)"
                       if current == "catchup" else ""))


# --- chain and operator commands -------------------------------------------------------------

def read_headers(path: Path) -> list[BlockHeader]:
    """JSON lines of ``{height, hash, prev_hash, merkle_root}`` (blank lines skipped), every
    line checked, and the whole file checked to be one linked sequence, before any is applied:
    a bad line anywhere applies nothing."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        fail(f"cannot read {path}: {getattr(err, 'strerror', None) or err}")
    headers = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            header = json.loads(line)
        except json.JSONDecodeError as err:
            fail(f"{path} line {number}: not JSON ({err.msg})")
        except (ValueError, RecursionError) as err:  # a 5,000-digit number, deep nesting
            fail(f"{path} line {number}: not a header ({type(err).__name__}: {str(err)[:80]})")
        if not isinstance(header, dict):
            fail(f"{path} line {number}: expected an object {{height, hash, prev_hash, "
                 "merkle_root}")
        try:
            headers.append(coerce(BlockHeader, header, "header"))
        except InvalidInput as err:
            fail(f"{path} line {number}: {err}")
        if len(headers) > 1 and not follows(dict(headers[-1]), dict(headers[-2])):
            fail(f"{path} line {number}: header {headers[-1].hash} at height "
                 f"{headers[-1].height} does not follow the line before it; the file must "
                 "be one linked sequence")
    if not headers:
        fail(f"{path} holds no headers")
    return headers


@headers_app.command("apply")
def headers_apply(file: Annotated[Path, typer.Argument(
                      metavar="FILE", help="JSON lines: {height, hash, prev_hash, merkle_root}.")],
                  db: Db = DEFAULT_DB) -> None:
    """Apply block headers from a JSON-lines file (may reorg).

    One {height, hash, prev_hash, merkle_root} object per line. Headers that connect below the
    tip reorganise the chain; headers that connect to nothing known are refused (exit 1).
    """
    headers = read_headers(file)
    connected = disconnected = 0
    affected: list[str] = []
    with session(db) as led:
        for start in range(0, len(headers), MAX_HEADERS_PER_CALL):
            update = led.apply_headers(headers[start:start + MAX_HEADERS_PER_CALL])
            connected += len(update.connected)
            disconnected += len(update.disconnected)
            affected += update.affected_txids
        tip = led.chain_tip()
    out = console()
    out.print(f"connected {connected}, disconnected {disconnected}; tip "
              + (f"{tip.height} {tip.hash}" if tip else "none"), soft_wrap=True)
    for txid in affected:
        out.print(f"  affected: {txid}", soft_wrap=True)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    try:
        return getpass.getuser() or "operator"
    except (OSError, KeyError):
        return "operator"


@app.command()
def transition(txid: Txid,
               state: Annotated[str, typer.Argument(
                   metavar="STATE", help="Target processing state, e.g. frozen or unfail.")],
               reason: Reason, db: Db = DEFAULT_DB, actor: Actor = None) -> None:
    """Move a transaction to another state (FSM-checked).

    e.g. frozen, or unfail for an invalid/doubleSpend one. unconfirmed, confirmed and reorging
    follow proofs and blocks only. A refused move is recorded (processing.rejected).
    """
    with session(db) as led:
        txid = resolve_txid(db, txid)
        before = led.get_transaction(txid).state
        try:
            after = led.transition(txid, state, reason=reason, actor=_actor(actor))
        except IllegalTransition as err:
            fail(f"{err} (the refusal is recorded: {prog()} audit tail --event "
                 "processing.rejected)", EXIT_REFUSED)
    console().print(f"{after.txid}: {before} → {after.state} (position {after.position})",
                    soft_wrap=True)


@app.command("confirm-unspent")
def confirm_unspent(outpoints: Annotated[list[str], typer.Argument(
                        metavar="TXID:VOUT...", help="Outputs known to be unspent.")],
                    reason: Reason, db: Db = DEFAULT_DB, actor: Actor = None) -> None:
    """Release quarantined inputs known to be unspent.

    Inputs of a transaction that lost a double-spend race stay quarantined until a UTXO check
    (or an operator) confirms they are unspent.
    """
    with session(db) as led:
        ops = [resolve_outpoint(db, o) for o in outpoints]
        led.confirm_unspent(ops, reason=reason, actor=_actor(actor))
    console().print(f"released {len(ops)} outpoint(s) from quarantine")


def main() -> None:
    """Console-script entry point (``wallet-ledger``)."""
    app()


if __name__ == "__main__":
    main()
