"""``wallet-ledger``: the command line over the public :class:`ledger.Ledger` API (SPEC §8).

Exit codes: 0 ok; 1 the ledger refused (a domain rule: illegal transition, failed precondition,
unknown transaction, projection drift); 2 bad input (malformed argument, database URL or file).
A user mistake is one line on stderr prefixed ``error:``, never a traceback. Every read command
takes ``--json`` (plain JSON on stdout, nothing else) and never creates a database.
"""

from __future__ import annotations

import getpass
import json
import socket
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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

from adapters.demo import DemoFacts, run_demo
from ledger import (
    AuditEntry,
    Balance,
    InvalidInput,
    Ledger,
    LedgerError,
    LedgerView,
    Outpoint,
    OutputView,
    StorageError,
)
from ledger.chain import MAX_HEADERS_PER_CALL

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
    pretty_exceptions_enable=False, rich_markup_mode="rich",
    help="An event-sourced transaction ledger for BSV wallets: play the demo, read actions, "
         "outputs and balances, audit what the wallet believed and why, maintain projections.")
audit_app = typer.Typer(no_args_is_help=True,
                        help="Incident audits: replay the past, explain an output, tail the log.")
projections_app = typer.Typer(no_args_is_help=True,
                              help="Projection maintenance: rebuild, verify, catch-up process.")
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
Actor = Annotated[str | None, typer.Option(
    "--actor", help="Who is acting (recorded in the event); default: your login name.")]


def console() -> Console:
    return Console(highlight=False)


def err_console() -> Console:
    return Console(stderr=True, highlight=False)


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
    """Refuse (exit 2) a read of a database that does not exist, or an unreachable server."""
    path = sqlite_path(url)
    if path is not None and not create and (not path.is_file() or path.stat().st_size == 0):
        fail(f"no ledger at {path}; run `wallet-ledger demo` or give --db")
    if _scheme(url) in PG_SCHEMES:
        _probe_postgres(url)


@contextmanager
def session(db: str, *, create: bool = False, projections: str = "inline") -> Iterator[Ledger]:
    """The ledger at ``db``, with its errors reported as one line and an exit code."""
    check_target(db, create=create)
    with reporting():
        led = Ledger.open(db, projections=projections)
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


def _short(value: Any) -> str:
    if isinstance(value, str) and len(value) >= 64 and value[:64].isalnum():
        return value[:8] + "…" + value[64:]  # a txid or hash, with any ":vout" kept
    if isinstance(value, list):
        if len(value) <= 2 and all(not isinstance(v, dict | list) for v in value):
            return ",".join(_short(v) for v in value)
        return f"{len(value)} entries"
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
    table = Table(title=f"{title} — {days.pop()} UTC" if one_day else title,
                  title_justify="left")
    table.add_column("pos", justify="right", no_wrap=True)
    table.add_column("time" if one_day else "time (UTC)", no_wrap=one_day)
    table.add_column("event", no_wrap=True)
    if with_txid:
        table.add_column("txid", no_wrap=True)
    table.add_column("from → to")
    table.add_column("details", overflow="fold", ratio=1)
    for e in entries:
        at = when(e.at)[11:-1] if one_day else when(e.at)
        txid = [_short(e.txid) if e.txid else ""] if with_txid else []
        table.add_row(str(e.position), at, e.event, *txid, _arrow(e), details_text(e))
    return table


def outputs_table(outputs: Iterable[OutputView], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("outpoint", overflow="fold", ratio=3)
    table.add_column("satoshis", justify="right", no_wrap=True)
    table.add_column("basket", overflow="fold", ratio=1)
    table.add_column("category")
    table.add_column("flags")
    for o in outputs:
        flags = ", ".join(f for f, on in (("change", o.change), ("coinbase", o.is_coinbase))
                          if on)
        table.add_row(f"{o.txid}:{o.vout}", f"{o.satoshis:,}", o.basket, o.category, flags)
    return table


def balance_table(balances: Sequence[tuple[str, Balance]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("")
    for bucket in ("spendable", "reserved", "pending", "immature", "quarantined"):
        table.add_column(bucket, justify="right")
    for name, b in balances:
        table.add_row(name, *(f"{v:,}" for v in (b.spendable, b.reserved, b.pending,
                                                  b.immature, b.quarantined)))
    return table


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be from 1 to {MAX_LIMIT}, got {limit}")
    return limit


def parse_outpoint(text: str) -> Outpoint:
    with reporting():
        return Outpoint.parse(text)


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


def _hints(out: Console, db: str, facts: DemoFacts) -> None:
    flag = "" if db == DEFAULT_DB else f" --db {db}"
    out.print()
    out.rule("[bold]Inspect what it did", align="left")
    lines = [
        ("the rent payment's timeline: outage, proofs, reorg",
         f"wallet-ledger history {facts.rent_txid}{flag}"),
        ("why carol's coinbase output is spendable, with event positions",
         f"wallet-ledger audit explain {facts.coinbase_txid}:0 --user carol{flag}"),
        ("what the wallet believed right after the reorg",
         f"wallet-ledger audit replay --at {facts.reorg_position} --user bob{flag}"),
        ("the rejected payment", f"wallet-ledger history {facts.rejected_txid}{flag}"),
        ("outputs, actions and a balance", f"wallet-ledger outputs --user carol{flag}"),
        ("", f"wallet-ledger actions --user alice{flag}"),
        ("", f"wallet-ledger balance --user bob{flag}"),
        ("rebuild-from-zero equals the live tables", f"wallet-ledger projections verify{flag}"),
    ]
    for text, command in lines:
        if text:
            out.print(f"  [dim]# {text}[/dim]")
        out.print(f"  {command}", soft_wrap=True)


@app.command()
def demo(db: Db = DEFAULT_DB,
         reset: Annotated[bool, typer.Option(
             "--reset", help="Delete an existing SQLite file first.")] = False) -> None:
    """Play a realistic wallet story on a fresh SQLite file and show what happened."""
    _fresh_target(db, reset)
    out = console()
    started = time.perf_counter()
    with session(db, create=True) as led:
        if led.head_position() > 0:
            fail(f"{led.url} already holds a ledger; the demo needs an empty database")
        out.print(f"[bold]wallet-ledger demo[/bold] -> {led.url}", soft_wrap=True)
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
    """A user's outputs: spendable ones (largest first), or all listed ones with --all."""
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
    """A user's actions (payments made and received), newest first."""
    with session(db) as led:
        page = led.list_actions(user, labels=label or [], limit=_limit(limit))
    if as_json:
        emit_json(page)
        return
    table = Table(title=f"{user}: actions ({len(page.items)} of {page.total})",
                  title_justify="left")
    table.add_column("reference", overflow="fold")
    table.add_column("txid", overflow="fold", ratio=2)
    table.add_column("status")
    table.add_column("satoshis", justify="right", no_wrap=True)
    table.add_column("description", overflow="fold", ratio=1)
    table.add_column("labels", overflow="fold")
    for a in page.items:
        table.add_row(_short(a.reference), a.txid or "", a.status, f"{a.satoshis_delta:+,}",
                      a.description, ", ".join(a.labels))
    console().print(table)


@app.command()
def tx(txid: Annotated[str, typer.Argument(help="The transaction id (64 hex).")],
       db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """One transaction: processing state, attempts, proof."""
    with session(db) as led:
        view = led.get_transaction(txid)
    if as_json:
        emit_json(view)
        return
    table = Table(title=f"transaction {view.txid}", title_justify="left", show_header=False)
    table.add_column("field")
    table.add_column("value", overflow="fold")
    rows = [("state", str(view.state)), ("attempts", str(view.attempts)),
            ("was broadcast", _yes(view.was_broadcast)), ("coinbase", _yes(view.is_coinbase)),
            ("block height", _opt(view.height)), ("block hash", _opt(view.block_hash)),
            ("merkle root", _opt(view.merkle_root)),
            ("raw size", f"{len(view.raw_tx)} bytes" if view.raw_tx else "-"),
            ("last change at position", str(view.position))]
    for row in rows:
        table.add_row(*row)
    console().print(table)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


@app.command()
def balance(user: User, db: Db = DEFAULT_DB,
            basket: Annotated[str | None, typer.Option(
                help="Only this basket (default: every basket).")] = None,
            as_json: Json = False) -> None:
    """A user's satoshis: spendable, reserved, pending, immature, quarantined."""
    with session(db) as led:
        b = led.balance(user, basket=basket)
    if as_json:
        emit_json({"user": user, "basket": basket, **b.model_dump()})
        return
    console().print(balance_table([(user, b)], f"balance of {user}"
                                               + (f" (basket {basket})" if basket else "")))


@app.command()
def history(txid: Annotated[str, typer.Argument(help="The transaction id (64 hex).")],
            db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """A transaction's timeline: every event with its log position."""
    with session(db) as led:
        entries = led.history(txid)
    if as_json:
        emit_json(entries)
        return
    console().print(audit_table(entries, f"history of {txid}"))


# --- audit -----------------------------------------------------------------------------------

def parse_at(text: str) -> int | datetime:
    """A log position (whole number) or an ISO 8601 time (UTC unless it says otherwise)."""
    value = text.strip()
    if value.isdigit():
        return int(value)
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"--at takes a log position (e.g. 120) or an ISO time "
             f"(e.g. 2025-01-31T14:03:00Z), got {text[:60]!r}")


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
    out.print(f"[bold]Replay as of log position {report['position']}[/bold] "
              f"(the log is now at {report['head_position']}); chain tip then: "
              + (f"height {tip['height']} {tip['hash'][:16]}…" if tip else "none"))
    scope = f"of {user}" if user else f"active in the last {REPLAY_SCAN_EVENTS} events"
    table = Table(title=f"Transactions {scope}", title_justify="left")
    table.add_column("txid", overflow="fold")
    table.add_column("state then")
    table.add_column("state now")
    for t in report["transactions"]:
        changed = t["state_then"] != t["state_now"]
        table.add_row(t["txid"], f"[bold]{t['state_then']}[/bold]" if changed else t["state_then"],
                      t["state_now"])
    out.print(table)
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
    """What the wallet believed at a position or time: states and spendable outputs then."""
    point = parse_at(at)
    with session(db) as led:
        report = _replay(led, point, user)
    if as_json:
        emit_json(report)
        return
    _print_replay(report, user)


@audit_app.command("explain")
def audit_explain(outpoint: Annotated[str, typer.Argument(metavar="TXID:VOUT",
                                                          help="The output to explain.")],
                  user: User, db: Db = DEFAULT_DB, as_json: Json = False) -> None:
    """Why an output is (not) spendable: the rule's inputs and the events behind them."""
    op = parse_outpoint(outpoint)
    with session(db) as led:
        why = led.explain_output(user, op)
        evidence = [e for e in led.history(op.txid) if e.position in set(why.positions)]
    if as_json:
        emit_json({**why.model_dump(), "outpoint": str(op), "user": user,
                   "evidence": evidence})
        return
    out = console()
    verdict = "[green]SPENDABLE[/green]" if why.spendable else "[red]NOT SPENDABLE[/red]"
    out.print(f"{user}'s output {op}", soft_wrap=True)
    out.print(f"is {verdict} (category {why.category})")
    for reason in why.reasons:
        out.print(f"  • {reason}", soft_wrap=True)
    out.print(f"  evidence at log positions: {', '.join(map(str, why.positions)) or '-'}")
    if evidence:
        out.print(audit_table(evidence, "Evidence"))


@audit_app.command("tail")
def audit_tail(db: Db = DEFAULT_DB,
               limit: Annotated[int, typer.Option(help="How many rows.")] = 20,
               event: Annotated[str | None, typer.Option(
                   help="Only this event, e.g. processing.rejected.")] = None,
               as_json: Json = False) -> None:
    """The newest audit rows (newest first), optionally of one event type."""
    with session(db) as led:
        entries = led.audit_tail(limit=_limit(limit), event=event)
    if as_json:
        emit_json(entries)
        return
    title = f"last {len(entries)} audit rows" + (f" ({event})" if event else "")
    console().print(audit_table(entries, title, with_txid=True))


# --- projections -----------------------------------------------------------------------------

@projections_app.command("rebuild")
def projections_rebuild(db: Db = DEFAULT_DB) -> None:
    """Rebuild every projection from the log beside the live tables, then swap them in."""
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
    """Diff the live projections against a rebuild from the log; exit 1 on drift."""
    with session(db) as led:
        report = led.verify_projections()
    if as_json:
        emit_json(report)
    elif report.ok:
        console().print(f"projections match a rebuild from the log (position {report.position})")
    else:
        console().print(_drift_table(report.differences))
    if not report.ok:
        typer.echo(f"error: projections drifted: {len(report.differences)} differing rows",
                   err=True)
        raise typer.Exit(EXIT_REFUSED)


def _drift_table(differences: Sequence[dict[str, Any]]) -> Table:
    table = Table(title=f"Drift: {len(differences)} differing rows", title_justify="left")
    for name in ("table", "key", "columns", "live", "rebuilt"):
        table.add_column(name, overflow="fold")
    for d in differences:
        cols = d.get("columns", [])
        live, rebuilt = d.get("live") or {}, d.get("rebuilt") or {}
        table.add_row(str(d.get("table")), ":".join(map(str, d.get("key", []))), ", ".join(cols),
                      _cells(live, cols) if d.get("live") else "(missing)",
                      _cells(rebuilt, cols) if d.get("rebuilt") else "(missing)")
    return table


def _cells(row: dict[str, Any], cols: Sequence[str]) -> str:
    return ", ".join(f"{c}={_short(row.get(c))}" for c in cols)


@projections_app.command("run")
def projections_run(db: Db = DEFAULT_DB,
                    once: Annotated[bool, typer.Option(
                        "--once", help="One catch-up pass, then exit.")] = False,
                    idle: Annotated[float, typer.Option(
                        help="Seconds to wait when nothing is pending.")] = IDLE_WAIT_S) -> None:
    """The catch-up projection process: projects new events until Ctrl-C."""
    if not 0 < idle <= 60:
        fail(f"--idle must be more than 0 and at most 60 seconds, got {idle}")
    out = console()
    started, done = time.perf_counter(), 0
    with session(db, projections="catchup") as led:
        if not once:
            out.print(f"catch-up projections on {led.url}; Ctrl-C stops", soft_wrap=True)
        try:
            done = _catch_up_loop(led, out, once=once, idle=idle)
        except KeyboardInterrupt:
            done = -1
        position = led.head_position()
    stopped = "stopped: " if done < 0 or not once else ""
    out.print(f"{stopped}projected {max(done, 0):,} events in {time.perf_counter() - started:.1f} s; "
              f"log head at position {position}")


def _catch_up_loop(led: Ledger, out: Console, *, once: bool, idle: float) -> int:
    done = 0
    while True:
        n = led.run_projections()
        done += n
        if once:
            return done
        if n:
            out.print(f"projected {n:,} events (log head {led.head_position()})")
        else:
            time.sleep(idle)


# --- chain and operator commands -------------------------------------------------------------

def read_headers(path: Path) -> list[dict[str, Any]]:
    """JSON lines of ``{height, hash, prev_hash, merkle_root}`` (blank lines skipped)."""
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
        if not isinstance(header, dict):
            fail(f"{path} line {number}: expected an object {{height, hash, prev_hash, "
                 "merkle_root}")
        headers.append(header)
    if not headers:
        fail(f"{path} holds no headers")
    return headers


@headers_app.command("apply")
def headers_apply(file: Annotated[Path, typer.Argument(
                      metavar="FILE", help="JSON lines: {height, hash, prev_hash, merkle_root}.")],
                  db: Db = DEFAULT_DB) -> None:
    """Extend the ledger's header chain, or reorganise it at a known fork point."""
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
def transition(txid: Annotated[str, typer.Argument(help="The transaction id (64 hex).")],
               state: Annotated[str, typer.Argument(
                   metavar="STATE", help="Target processing state, e.g. frozen or unfail.")],
               reason: Reason, db: Db = DEFAULT_DB, actor: Actor = None) -> None:
    """An operator's move of a transaction's processing state (FSM-checked)."""
    with session(db) as led:
        before = led.get_transaction(txid).state
        after = led.transition(txid, state, reason=reason, actor=_actor(actor))
    console().print(f"{after.txid}: {before} → {after.state} (position {after.position})",
                    soft_wrap=True)


@app.command("confirm-unspent")
def confirm_unspent(outpoints: Annotated[list[str], typer.Argument(
                        metavar="TXID:VOUT...", help="Outputs known to be unspent.")],
                    reason: Reason, db: Db = DEFAULT_DB, actor: Actor = None) -> None:
    """Release inputs quarantined after a double spend, once known to be unspent."""
    ops = [parse_outpoint(o) for o in outpoints]
    with session(db) as led:
        led.confirm_unspent(ops, reason=reason, actor=_actor(actor))
    console().print(f"released {len(ops)} outpoint(s) from quarantine")


def main() -> None:
    """Console-script entry point (``wallet-ledger``)."""
    app()


if __name__ == "__main__":
    main()
