"""``Ledger``: the public facade (SPEC §6). It validates every input, runs one command or query,
and answers with frozen views. It is the composition root: the only place that wires the write
model, the projections and the adapters together.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from eventsourcing.persistence import PersistenceError
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError

from adapters.audit_loader import ForkedAuditLoader, forking_available
from adapters.eventlog import BsvCodec, SqlReadModel, StoreLog
from adapters.persistence import (
    DRIVER_ERRORS,
    InlineHook,
    StorageConfig,
    first_line,
    parse_url,
    rebuild_lock,
    setup_lock,
)
from ledger import gc_pause
from ledger.application import (
    MAX_BROADCASTERS,
    Broadcaster,
    LedgerApplication,
    Settings,
)
from ledger.chain import DEFAULT_MAX_REORG_DEPTH_BLOCKS, MAX_HEADERS_PER_CALL
from ledger.errors import (
    ConcurrencyConflict,
    InvalidInput,
    InvalidProof,
    InvalidTransaction,
    LedgerError,
    StorageError,
    UnknownAction,
    UnknownTransaction,
)
from ledger.status import ACTION_STATUSES, ProcessingStatus, parse_status
from ledger.tracker import (
    CHAIN_TRACKER_TIMEOUT_S,
    MAX_CHAIN_TRACKER_TIMEOUT_S,
    ChainTracker,
    check_tracker,
)
from ledger.values import (
    MAX_INPUTS,
    MAX_OUTPUTS,
    MAX_SATOSHIS,
    BlockHeader,
    InternalizeOutput,
    NewOutput,
    Outpoint,
    ProviderResult,
    check_details,
    check_list,
    check_name,
    check_names,
    check_text,
    check_txid,
    coerce,
)
from ledger.views import (
    ActionView,
    AuditEntry,
    Balance,
    ChainUpdate,
    DriftReport,
    Explanation,
    OutputView,
    Page,
    RebuildReport,
    TransactionView,
)
from projections import queries, replay
from projections.db import Database, make_engine
from projections.inline import InlineProjection
from projections.schema import LAYOUT_VERSION
from projections.tables import ensure_tables, layout_version, read_pointer

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_URL = "sqlite:///wallet-ledger.db"
MAX_RAW_TX_BYTES = 10_000_000
MAX_PAGE_LIMIT = queries.MAX_PAGE_ITEMS
PROJECTION_MODES = ("inline", "catchup")
MAX_PAGE_OFFSET = 1_000_000_000_000
"""The furthest page start a listing accepts (past any real wallet's rows)."""
MAX_CATCH_UP_PAGES = 1_000_000
MAX_REORG_DEPTH_BLOCKS = 2_000
"""The deepest reorg a ledger may be opened to accept (``max_reorg_depth_blocks``)."""


_DATABASE_ERRORS: tuple[type[Exception], ...] = (PersistenceError, DBAPIError, *DRIVER_ERRORS)
_OPEN_ERRORS: tuple[type[Exception], ...] = (*_DATABASE_ERRORS, OSError)
"""What opening may meet beyond the database's own errors: the file system's (a lock file)."""


def _storage_errors(fn: Callable[P, T]) -> Callable[P, T]:
    """Database failures become :class:`StorageError`; ledger errors pass through."""
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except LedgerError:
            raise
        except _DATABASE_ERRORS as err:
            raise StorageError(f"database error: {first_line(err)}") from err
    return wrapper



def _bytes(what: str, value: Any, max_bytes: int = MAX_RAW_TX_BYTES, *,
           empty: type[LedgerError] = InvalidInput) -> bytes:
    """Type and size checks; ``empty`` is the error for zero bytes (the content's own error:
    an empty raw tx is an InvalidTransaction like a truncated one, an empty BUMP an
    InvalidProof)."""
    if isinstance(value, bytearray | memoryview):
        value = bytes(value)
    if not isinstance(value, bytes):
        raise InvalidInput(f"{what} must be bytes, got {type(value).__name__}")
    if not value:
        raise empty(f"{what} is empty")
    if len(value) > max_bytes:
        raise InvalidInput(f"{what} is {len(value)} bytes; at most {max_bytes}")
    return value


def _whole(what: str, value: Any, lo: int, hi: int, *, otherwise: str = "") -> int:
    """A whole-number argument within ``lo..hi`` (not a bool, not a float)."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise InvalidInput(f"{what} must be a whole number from {lo} to {hi}{otherwise}")
    return value


def _page(limit: Any, offset: Any) -> tuple[int, int]:
    return _whole("limit", limit, 1, MAX_PAGE_LIMIT), _whole("offset", offset, 0, MAX_PAGE_OFFSET)


def _flag(what: str, value: Any) -> bool:
    """A yes/no argument: True or False only (``bool("false")`` is True)."""
    if value is not True and value is not False:
        raise InvalidInput(f"{what} must be True or False, got {type(value).__name__}")
    return value


def _details(details: Any) -> dict[str, Any]:
    if details is None:
        return {}
    return check_details(details)


def _tracker(tracker: object) -> ChainTracker | None:
    if tracker is None:
        return None
    try:
        return check_tracker(tracker)
    except TypeError as err:
        raise InvalidInput(
            f"chain_tracker must have is_valid_root_for_height(root, height) and "
            f"current_height() (sync or async, like bsv-sdk's ChainTracker): {err}") from None


def _timeout(seconds: object) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or \
            not 0 < seconds <= MAX_CHAIN_TRACKER_TIMEOUT_S:
        raise InvalidInput("chain_tracker_timeout_s must be a number of seconds above 0 and at "
                           f"most {MAX_CHAIN_TRACKER_TIMEOUT_S:g}")
    return float(seconds)


def _mode(mode: str | None) -> str | None:
    if mode is not None and mode not in PROJECTION_MODES:
        raise InvalidInput(f"projections must be one of {', '.join(PROJECTION_MODES)} "
                           "(or None: keep the database's mode)")
    return mode


def _application(config: StorageConfig, reads: Engine, *, settings: Settings | None = None,
                 chain_tracker: ChainTracker | None = None) -> tuple[LedgerApplication, StoreLog]:
    """The write model over ``config``'s database, its commands consulting the projections
    through ``reads``, and its event log as the projections read it."""
    app = LedgerApplication(config.env, codec=BsvCodec(), read_model=SqlReadModel(reads),
                            settings=settings, chain_tracker=chain_tracker)
    return app, StoreLog(app.recorder, app.mapper, dialect=config.dialect)


class LedgerView:
    """Read-only queries over one set of projection tables (the live ones, or an as-of replay)."""

    def __init__(self, engine: Engine, *, position: int | None = None) -> None:
        self._engine = engine
        self.position = position

    def get_transaction(self, txid: str) -> TransactionView:
        txid = check_txid(txid)
        with self._engine.connect() as conn:
            view = queries.get_transaction(conn, txid)
        if view is None:
            raise UnknownTransaction(txid)
        return view

    def list_outputs(self, user: str, *, basket: str | None = "default",
                     tags: Sequence[str] = (), tag_mode: str = "any",
                     spendable: bool | None = True, include_locking_scripts: bool = False,
                     limit: int = 100, offset: int = 0) -> Page[OutputView]:
        user = check_name("user", user)
        basket = None if basket is None else check_name("basket", basket)
        wanted = check_names("tags", tags)
        if tag_mode not in ("any", "all"):
            raise InvalidInput("tag_mode must be 'any' or 'all'")
        if spendable is not None:
            spendable = _flag("spendable (or None: every output)", spendable)
        scripts = _flag("include_locking_scripts", include_locking_scripts)
        limit, offset = _page(limit, offset)
        with self._engine.connect() as conn:
            return queries.list_outputs(conn, user, basket=basket, tags=wanted,
                                        tag_mode=tag_mode, spendable=spendable,
                                        include_locking_scripts=scripts,
                                        limit=limit, offset=offset)

    def list_actions(self, user: str, *, labels: Sequence[str] = (), label_mode: str = "any",
                     statuses: Sequence[str] = (), limit: int = 100,
                     offset: int = 0) -> Page[ActionView]:
        user = check_name("user", user)
        wanted = check_names("labels", labels)
        if label_mode not in ("any", "all"):
            raise InvalidInput("label_mode must be 'any' or 'all'")
        statuses = check_list("statuses", statuses, len(ACTION_STATUSES))
        bad = [s for s in statuses if not isinstance(s, str) or s not in ACTION_STATUSES]
        if bad:
            raise InvalidInput(f"unknown action status {bad[0]!r:.80}; valid: "
                               f"{', '.join(sorted(ACTION_STATUSES))}")
        limit, offset = _page(limit, offset)
        with self._engine.connect() as conn:
            return queries.list_actions(conn, user, labels=wanted, label_mode=label_mode,
                                        statuses=list(statuses), limit=limit, offset=offset)

    def get_action(self, user: str, reference: str) -> ActionView:
        user, reference = check_name("user", user), check_name("reference", reference)
        with self._engine.connect() as conn:
            view = queries.get_action(conn, user, reference)
        if view is None:
            raise UnknownAction(user, reference)
        return view

    def balance(self, user: str, *, basket: str | None = None) -> Balance:
        user = check_name("user", user)
        basket = None if basket is None else check_name("basket", basket)
        with self._engine.connect() as conn:
            return queries.balance(conn, user, basket=basket)

    def history(self, txid: str) -> list[AuditEntry]:
        txid = check_txid(txid)
        with self._engine.connect() as conn:
            entries = queries.history(conn, txid)
            if not entries and queries.get_transaction(conn, txid) is None:
                raise UnknownTransaction(txid)
        return entries

    def explain_output(self, user: str, outpoint: Outpoint | str) -> Explanation:
        user = check_name("user", user)
        op = Outpoint.parse(outpoint) if isinstance(outpoint, str) else \
            coerce(Outpoint, outpoint, "outpoint")
        with self._engine.connect() as conn:
            found = queries.explain_output(conn, user, op.txid, op.vout)
        if found is None:
            raise InvalidInput(f"user {user!r} has no output {op}")
        return found

    def audit_tail(self, *, limit: int = 20, event: str | None = None) -> list[AuditEntry]:
        limit, _ = _page(limit, 0)
        event = None if event is None else check_name("event", event)
        with self._engine.connect() as conn:
            return queries.audit_tail(conn, limit=limit, event=event)

    def chain_tip(self) -> BlockHeader | None:
        with self._engine.connect() as conn:
            tip = queries.chain_tip(conn)
        return None if tip is None else BlockHeader(
            height=tip["height"], hash=tip["hash"], prev_hash=tip["prev_hash"],
            merkle_root=tip["merkle_root"])


class Ledger(LedgerView):
    """The embedded ledger. Every command validates its input, appends its events atomically
    (or nothing), and in inline mode updates the projections in the same transaction."""

    def __init__(self, config: StorageConfig, app: LedgerApplication, engine: Engine,
                 log: StoreLog, mode: str, reads: Engine) -> None:
        super().__init__(reads)
        self._maintenance = engine
        self._config = config
        self._app = app
        self._db = Database(engine)
        self._log = log
        self.projection_mode = mode
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    @_storage_errors
    def open(cls, url: str = DEFAULT_URL, *, projections: str | None = None,
             max_reorg_depth_blocks: int = DEFAULT_MAX_REORG_DEPTH_BLOCKS,
             chain_tracker: ChainTracker | None = None,
             chain_tracker_timeout_s: float = CHAIN_TRACKER_TIMEOUT_S) -> Ledger:
        """Open (creating if needed) the ledger at ``url``: ``sqlite:///PATH`` (default),
        ``memory://`` or ``postgresql://USER@HOST:PORT/DBNAME``. ``chain_tracker`` (sync or
        async, e.g. bsv-sdk's ``ChainTracker``) validates proofs at heights the ledger has no
        header for (ADR 0008)."""
        mode = _mode(projections)
        _whole("max_reorg_depth_blocks", max_reorg_depth_blocks, 1, MAX_REORG_DEPTH_BLOCKS)
        tracker = _tracker(chain_tracker)
        timeout_s = _timeout(chain_tracker_timeout_s)
        config = parse_url(url)
        engine = make_engine(config.sqlalchemy_url)
        reads = make_engine(config.sqlalchemy_url, reads=True)
        try:
            with setup_lock(config):  # first opens race to create tables, types, functions
                app, log = _application(config, reads,
                                        settings=Settings(max_reorg_depth_blocks, timeout_s),
                                        chain_tracker=tracker)
                db = Database(engine)
                _, stored_mode = ensure_tables(db)
                _relayout(config, db, log)
            ledger = cls(config, app, engine, log, mode or stored_mode, reads)
            schema = config.extra.get("schema")
            hook: InlineHook = InlineProjection(
                db.dialect, log.decode, pg_schema=str(schema) if schema else None)
            recorder: Any = app.recorder
            recorder.inline_hook = hook
            if mode is not None and mode != stored_mode:
                ledger._set_mode(mode)
            return ledger
        except _OPEN_ERRORS as err:
            engine.dispose()
            reads.dispose()
            config.cleanup()
            raise StorageError(f"cannot open {config.display}: {first_line(err)}") from err
        except Exception:
            engine.dispose()
            reads.dispose()
            config.cleanup()
            raise

    def _set_mode(self, mode: str) -> None:
        replay.switch_mode(self._db, self._log, mode)

    def close(self) -> None:
        """Release connections (a ``memory://`` ledger is gone afterwards)."""
        if self._closed:
            return
        self._closed = True
        self._app.close()
        self._engine.dispose()
        self._maintenance.dispose()
        self._config.cleanup()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def url(self) -> str:
        return self._config.display

    # --- actions -----------------------------------------------------------------------------

    @_storage_errors
    def create_action(self, user: str, reference: str, *, description: str,
                      outputs: Sequence[NewOutput | dict[str, Any]],
                      inputs: Sequence[Outpoint | str] = (), labels: Sequence[str] = (),
                      is_outgoing: bool = True, idempotency_key: str | None = None
                      ) -> ActionView:
        """Create a draft action and reserve its inputs atomically."""
        user, reference = check_name("user", user), check_name("reference", reference)
        description = check_text("description", description)
        outs = [coerce(NewOutput, o, "output") for o in check_list("outputs", outputs, MAX_OUTPUTS)]
        if not outs:
            raise InvalidInput("outputs: a transaction has at least one output; declare it")
        if len({o.vout for o in outs}) != len(outs):
            raise InvalidInput("two declared outputs share a vout")
        if max(o.vout for o in outs) >= len(outs):  # signing matches every output of the tx
            raise InvalidInput(f"declare every output of the transaction: vouts 0 to "
                               f"{len(outs) - 1}, one each (got vout "
                               f"{max(o.vout for o in outs)})")
        if sum(o.satoshis for o in outs) > MAX_SATOSHIS:
            raise InvalidInput(f"the declared outputs pay more than {MAX_SATOSHIS} satoshis, "
                               "every satoshi there will ever be")
        ins = [Outpoint.parse(i) if isinstance(i, str) else coerce(Outpoint, i, "input")
               for i in check_list("inputs", inputs, MAX_INPUTS)]
        key = None if idempotency_key is None else check_name("idempotency_key", idempotency_key)
        return self._app.create_action(
            user=user, reference=reference, description=description, outputs=outs, inputs=ins,
            labels=check_names("labels", labels), is_outgoing=_flag("is_outgoing", is_outgoing),
            idempotency_key=key)

    @_storage_errors
    def sign_action(self, user: str, reference: str, *, raw_tx: bytes,
                    input_beef: bytes | None = None, nosend: bool = False) -> TransactionView:
        """Bind the draft to its signed transaction, checked against the draft."""
        user, reference = check_name("user", user), check_name("reference", reference)
        raw = _bytes("raw_tx", raw_tx, empty=InvalidTransaction)
        beef = None if input_beef is None else \
            _bytes("input_beef", input_beef, 50_000_000, empty=InvalidTransaction)
        return self._app.sign_action(user=user, reference=reference, raw_tx=raw,
                                     nosend=_flag("nosend", nosend), input_beef=beef)

    @_storage_errors
    def abort_action(self, user: str, reference: str, *, reason: str) -> ActionView:
        """Abort an unsigned or never-broadcast action and release its inputs."""
        user, reference = check_name("user", user), check_name("reference", reference)
        return self._app.abort_action(user=user, reference=reference,
                                      reason=check_text("reason", reason))

    @_storage_errors
    def internalize_action(self, user: str, *, beef: bytes,
                           outputs: Sequence[InternalizeOutput | dict[str, Any]],
                           description: str, labels: Sequence[str] = (),
                           reference: str | None = None,
                           broadcasters: Sequence[Broadcaster] = ()) -> ActionView:
        """Take outputs of a received transaction (proven, or broadcast first)."""
        user = check_name("user", user)
        description = check_text("description", description)
        ref = None if reference is None else check_name("reference", reference)
        providers = check_list("broadcasters", broadcasters, MAX_BROADCASTERS)
        outs = [coerce(InternalizeOutput, o, "output")
                for o in check_list("outputs", outputs, MAX_OUTPUTS)]
        return self._app.internalize_action(
            user=user, beef=_bytes("beef", beef, 50_000_000, empty=InvalidTransaction),
            outputs=outs,
            description=description, labels=check_names("labels", labels),
            reference=ref, broadcasters=providers)

    # --- processing --------------------------------------------------------------------------

    @_storage_errors
    def transition(self, txid: str, to: ProcessingStatus | str, *, reason: str,
                   expected_from: ProcessingStatus | str | None = None, actor: str | None = None,
                   details: dict[str, Any] | None = None) -> TransactionView:
        """An explicit move of the processing state (FSM-checked)."""
        txid = check_txid(txid)
        return self._app.transition(
            txid=txid, to=parse_status(to), reason=check_text("reason", reason),
            expected_from=None if expected_from is None else parse_status(expected_from),
            actor=None if actor is None else check_name("actor", actor),
            details=_details(details))

    @_storage_errors
    def record_broadcast(self, txid: str, results: Sequence[ProviderResult | dict[str, Any]]
                         ) -> TransactionView:
        """Record every provider answer of one attempt and apply the outcome."""
        txid = check_txid(txid)
        answers = check_list("results", results, MAX_BROADCASTERS)
        if not answers:
            raise InvalidInput(f"results must list 1 to {MAX_BROADCASTERS} provider answers")
        return self._app.record_broadcast(
            txid=txid, results=[coerce(ProviderResult, r, "result") for r in answers])

    @_storage_errors
    def broadcast(self, txid: str, broadcasters: Sequence[Broadcaster]) -> TransactionView:
        """Hand the transaction to providers one after another; records every answer."""
        txid = check_txid(txid)
        providers = check_list("broadcasters", broadcasters, MAX_BROADCASTERS)
        return self._app.broadcast(txid=txid, broadcasters=providers)

    @_storage_errors
    def record_proof(self, txid: str, merkle_path: bytes) -> TransactionView:
        """Validate a BUMP against the active chain and move to unconfirmed/confirmed."""
        txid = check_txid(txid)
        bump = _bytes("merkle_path", merkle_path, empty=InvalidProof)
        return self._app.record_proof(txid=txid, merkle_path=bump)

    @_storage_errors
    def confirm_unspent(self, outpoints: Sequence[Outpoint | str], *, reason: str,
                        actor: str | None = None) -> None:
        """Release inputs quarantined after a double spend, once known to be unspent."""
        ops = [Outpoint.parse(o) if isinstance(o, str) else coerce(Outpoint, o, "outpoint")
               for o in check_list("outpoints", outpoints, MAX_INPUTS)]
        if not ops:
            raise InvalidInput("confirm_unspent needs at least one outpoint")
        self._app.confirm_unspent(outpoints=ops, reason=check_text("reason", reason),
                                  actor=None if actor is None else check_name("actor", actor))

    @_storage_errors
    def note(self, txid: str, what: str, **details: Any) -> None:
        """Attach a note to a transaction's history."""
        self._app.note(txid=check_txid(txid), what=check_name("what", what),
                       details=_details(details))

    # --- chain -------------------------------------------------------------------------------

    @_storage_errors
    def apply_headers(self, headers: Sequence[BlockHeader | dict[str, Any]]) -> ChainUpdate:
        """Extend the chain, or reorganise it at a known fork point."""
        parsed = [coerce(BlockHeader, h, "header").model_dump()
                  for h in check_list("headers", headers, MAX_HEADERS_PER_CALL)]
        change = self._app.apply_headers(parsed)
        return ChainUpdate(connected=[BlockHeader(**h) for h in change.connected],
                           disconnected=[BlockHeader(**h) for h in change.disconnected],
                           affected_txids=change.affected_txids)

    # --- audit and projections ---------------------------------------------------------------

    @_storage_errors
    def as_of(self, position_or_datetime: int | datetime) -> LedgerView:
        """A read-only view of what the ledger believed at a log position or a UTC time."""
        at = position_or_datetime
        if isinstance(at, bool) or not isinstance(at, int | datetime):
            raise InvalidInput("as_of takes a log position (int) or a datetime")
        if isinstance(at, int):
            if at < 0:
                raise InvalidInput("a log position is >= 0")
            store, _, last = replay.fold(self._log, upto=at)
        else:
            if at.tzinfo is None or at.utcoffset() is None:
                raise InvalidInput(
                    "as_of needs an aware datetime (e.g. datetime(2025, 1, 31, 14, 3, "
                    "tzinfo=UTC)): a naive one could be local time or UTC")
            store, _, last = replay.fold(self._log, until=at)
        return LedgerView(replay.scratch_engine(store), position=last)

    @_storage_errors
    def rebuild_projections(self, progress: replay.Progress | None = None) -> RebuildReport:
        """Rebuild every projection from zero beside the live tables, then swap them in."""
        if progress is not None and not callable(progress):
            raise InvalidInput("progress must be a callable (done, total) or None")
        try:
            with rebuild_lock(self._config, wait=False), gc_pause.paused():
                events, seconds, position = replay.rebuild(
                    self._db, self._log, progress, audit_loader=self._audit_loader())
        except replay.RebuildRaced as err:  # a rebuild by a process that took no lock
            raise ConcurrencyConflict(str(err)) from None
        except replay.AuditLoadFailed as err:
            raise StorageError(f"rebuild stopped, nothing swapped: {err}") from None
        return RebuildReport(events=events, seconds=seconds, position=position)

    def _audit_loader(self) -> replay.AuditLoader | None:
        """A second process for the audit table of a rebuild, where one can be forked."""
        if not forking_available():
            return None
        config = self._config

        def opener() -> tuple[Database, replay.EventLog, Callable[[], None]]:
            engine = make_engine(config.sqlalchemy_url)
            app, log = _application(config, engine)

            def close() -> None:
                app.close()
                engine.dispose()
            return Database(engine), log, close

        return ForkedAuditLoader(opener)

    @_storage_errors
    def verify_projections(self) -> DriftReport:
        """Rebuild into memory and diff against the live tables, row by row."""
        with gc_pause.paused():
            differences, position = replay.verify(self._db, self._log)
        return DriftReport(ok=not differences, differences=differences, position=position)

    @_storage_errors
    def run_projections(self, *, max_pages: int | None = None) -> int:
        """Catch-up step (catch-up mode): project pending events; returns how many."""
        if max_pages is not None:
            _whole("max_pages", max_pages, 1, MAX_CATCH_UP_PAGES,
                   otherwise=" (or None: until the log's head)")
        return replay.catch_up(self._db, self._log, max_pages=max_pages)

    def head_position(self) -> int:
        """The log's newest position."""
        return self._log.head()


def _relayout(config: StorageConfig, db: Database, log: StoreLog) -> None:
    """Projection tables laid out by another version of the ledger are rebuilt from the log
    before anything reads or writes them (the log itself is never changed). Processes opening
    the same old database at once rebuild it once: the others wait, then find it current."""
    if _live_layout(db) == LAYOUT_VERSION:
        return
    with rebuild_lock(config, wait=True):
        if _live_layout(db) != LAYOUT_VERSION:
            with gc_pause.paused():
                replay.rebuild(db, log)


def _live_layout(db: Database) -> int | None:
    with db.transaction(write=False) as cur:
        return layout_version(cur, db.dialect, read_pointer(cur)[0])
