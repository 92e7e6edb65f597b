"""The application service: command handlers orchestrating aggregates, one atomic save each.

Guarantees:
- every command either saves all of its events in one event-store transaction or none;
- optimistic-concurrency collisions are retried (``MAX_COMMAND_ATTEMPTS``) from a fresh read,
  then surface as :class:`~ledger.errors.ConcurrencyConflict`;
- configuration comes only from what the caller passes: the host's environment is ignored.

Inputs reaching this layer are already validated value types (see :mod:`ledger.facade`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import RecordConflictError
from eventsourcing.utils import Environment

from ledger import gc_pause
from ledger import tracker as tracker_calls
from ledger.action import ActionAggregate
from ledger.chain import DEFAULT_MAX_REORG_DEPTH_BLOCKS, ChainAggregate
from ledger.errors import (
    BroadcastFailed,
    ConcurrencyConflict,
    InvalidInput,
    InvalidProof,
    InvalidTransaction,
    LedgerError,
    OutputAlreadyReserved,
    OutputNotSpendable,
    PreconditionFailed,
    UnknownAction,
    UnknownTransaction,
)
from ledger.idempotency import IdempotencyRecord, payload_digest
from ledger.identity import (
    action_id,
    chain_id,
    idempotency_id,
    reservation_id,
    transaction_id,
)
from ledger.reservation import ReservationAggregate
from ledger.results import action_view, transaction_view
from ledger.rules import (
    ProviderStatus,
    broadcast_outcome,
    proof_state,
    tracker_depth_tip,
    tracker_needs_height,
)
from ledger.status import TOXIC_STATES, ProcessingStatus
from ledger.stream_cache import Attempt, Recheck, StreamCache
from ledger.tracker import CHAIN_TRACKER_TIMEOUT_S, ChainTracker, TrackerVerdict
from ledger.transaction import TransactionAggregate
from ledger.values import InternalizeOutput, NewOutput, Outpoint, ProviderResult, check_name
from ledger.views import ActionView, TransactionView

S = ProcessingStatus
A = TypeVar("A")
R = TypeVar("R")

MAX_COMMAND_ATTEMPTS = 8
MAX_BEEF_ANCESTORS = 1_000
NULL_TXID = "00" * 32
RETRY_BASE_DELAY_S = 0.002
RETRY_MAX_DELAY_S = 0.1
SEQUENCE_FINAL = 0xFFFF_FFFF
LOCKTIME_HEIGHT_LIMIT = 500_000_000


# --- ports ----------------------------------------------------------------------------------

class ParsedInput(Protocol):
    source_txid: str
    source_vout: int
    sequence: int


class ParsedOutput(Protocol):
    satoshis: int
    locking_script: bytes


class ParsedTx(Protocol):
    txid: str
    raw: bytes
    locktime: int

    @property
    def inputs(self) -> Sequence[ParsedInput]: ...
    @property
    def outputs(self) -> Sequence[ParsedOutput]: ...
    @property
    def is_coinbase(self) -> bool: ...


class ParsedProof(Protocol):
    block_height: int
    txid: str
    merkle_root: str
    leaf_offset: int
    bump: bytes


class ParsedBeef(Protocol):
    @property
    def subject(self) -> ParsedTx: ...
    @property
    def transactions(self) -> Mapping[str, ParsedTx]: ...
    @property
    def proofs(self) -> Mapping[str, ParsedProof]: ...


class Codec(Protocol):
    """Strict parsing of wire formats (implemented over bsv-sdk in ``adapters``)."""

    def parse_raw_tx(self, raw: bytes) -> ParsedTx: ...
    def parse_bump(self, bump: bytes, txid: str) -> ParsedProof: ...
    def parse_beef(self, beef: bytes) -> ParsedBeef: ...
    def encode_beef(self, subject_raw: bytes,
                    ancestors: list[tuple[bytes, bytes | None]]) -> bytes: ...


class ReadModel(Protocol):
    """What command handlers read from the projections."""

    def output_for_spend(self, user: str, txid: str, vout: int) -> tuple[str, int] | None:
        """(category, satoshis) of a user's output, None if the user has no such output."""

    def active_header(self, height: int) -> dict[str, Any] | None:
        """The active-chain header at ``height`` (hash, merkle_root, height), if known."""

    def tip_height(self) -> int | None:
        """The active chain's tip height, if any header is known."""

    def anchored_txids(self, block_hash: str) -> list[str]:
        """Transactions whose current proof is in block ``block_hash``."""

    def unconfirmed_below(self, height: int) -> list[str]:
        """``unconfirmed`` transactions whose proof height is below ``height``."""

    def known_headers(self, hashes: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The headers ever connected (active or not) among ``hashes``, by hash."""

    def output_owners(self, outpoints: Sequence[str]) -> dict[str, str]:
        """Among ``outpoints`` (``txid:vout``), those that are some user's output: outpoint ->
        a user holding it (the first by name)."""


class Broadcaster(Protocol):
    """Anything with a name that can hand a transaction to the network."""

    name: str

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult: ...


@dataclass(frozen=True)
class Settings:
    """Ledger behaviour the caller chooses at open time."""

    max_reorg_depth_blocks: int = DEFAULT_MAX_REORG_DEPTH_BLOCKS
    chain_tracker_timeout_s: float = CHAIN_TRACKER_TIMEOUT_S


@dataclass(frozen=True)
class ChainChange:
    """What ``apply_headers`` did."""

    connected: list[dict[str, Any]]
    disconnected: list[dict[str, Any]]
    affected_txids: list[str]


class LedgerApplication(Application[UUID]):
    """Command side of the ledger over an ``eventsourcing`` event store."""

    name = "WalletLedger"
    snapshotting_intervals = {ChainAggregate: 100}

    def __init__(self, env: Mapping[str, str], *, codec: Codec, read_model: ReadModel,
                 settings: Settings | None = None,
                 chain_tracker: ChainTracker | None = None) -> None:
        self.codec = codec
        self.chain_tracker = chain_tracker
        self.read_model = read_model
        self.settings = settings or Settings()
        self._streams = StreamCache()
        self._command_lock = threading.RLock()
        self._attempt: Attempt | None = None
        super().__init__(env=dict(env))

    def construct_env(self, name: str, env: Mapping[str, str] | None = None) -> Environment:
        """Sealed: only the class defaults and what the ledger passed. ``os.environ`` is ignored."""
        merged = dict(type(self).env)
        if type(self).snapshotting_intervals:
            merged["IS_SNAPSHOTTING_ENABLED"] = "y"
        merged.update(env or {})
        return Environment(name, merged)

    def save(self, *objs: Any, **kwargs: Any) -> Any:
        """As :meth:`Application.save`, for aggregates only, without its two checks of each
        object against ``typing`` runtime protocols: Python 3.11 derives a protocol's members
        again on every such ``isinstance`` (about 20 us per aggregate, 20 ms of a block that
        promotes 1,000 transactions)."""
        processing_event: ProcessingEvent[UUID] = ProcessingEvent()
        for obj in objs:
            if obj is None:
                continue
            assert isinstance(obj, Aggregate), f"only aggregates are saved, not {type(obj)}"
            processing_event.events.extend(obj.collect_events())
            processing_event.aggregates[obj.id] = obj
        processing_event.saved_kwargs.update(kwargs)
        recordings = self._record(processing_event)
        self._take_snapshots(processing_event)
        self._notify(recordings)
        return recordings

    def _record(self, processing_event: Any) -> Any:
        processing_event.saved_kwargs["ledger_events"] = list(processing_event.events)
        return super()._record(processing_event)

    # --- plumbing ----------------------------------------------------------------------------

    def _save(self, *objs: Any) -> dict[UUID, int]:
        """Save in one transaction; returns each changed stream's newest log position."""
        if self._attempt is not None:
            self._attempt.check_appends()
        positions: dict[UUID, int] = {}
        for recording in self.save(*objs):
            stream = recording.domain_event.originator_id
            positions[stream] = max(positions.get(stream, 0), recording.notification.id)
        if self._attempt is not None:
            self._attempt.saved = bool(positions)
            for obj in objs:
                if obj is not None:
                    self._streams.put(obj)
        return positions

    def _tx_view(self, tx: TransactionAggregate, saved: Mapping[UUID, int]) -> TransactionView:
        """The command's answer; a stream the command left alone is asked for its position."""
        position = saved.get(tx.id)
        if position is None:
            recorder: Any = self.recorder
            position = int(recorder.stream_position(tx.id))
        return transaction_view(tx, position)

    def _action_view(self, action: ActionAggregate,
                     tx: TransactionAggregate | None = None) -> ActionView:
        if action.txid is None:
            return action_view(action, None)
        if tx is None or tx.txid != action.txid:
            tx = self._tx(action.txid)
        return action_view(action, tx.state)

    def _load(self, aggregate_id: UUID, kind: type[A], *, fresh: bool = False) -> A | None:
        """The aggregate of one stream, None if the stream is empty. Inside a command's first
        attempt the stream cache is trusted (see :mod:`ledger.stream_cache`); ``fresh`` (and
        every later attempt, and any read outside a command) reads the event store."""
        attempt = self._attempt
        if attempt is not None:
            held = attempt.held.get(aggregate_id)  # one copy of each stream per attempt
            if held is not None:
                assert isinstance(held, kind), (type(held), kind)
                return held
            cached = None if fresh else self._from_cache(aggregate_id, kind)
            if cached is not None:
                return cached
        agg: Any
        if kind is ChainAggregate:  # the only snapshotted stream
            try:
                agg = self.repository.get(aggregate_id)
            except AggregateNotFoundError:
                agg = None
        else:
            agg = None
            event: Any
            for event in self.events.get(aggregate_id):
                agg = event.mutate(agg)
        if agg is None:
            return None
        assert isinstance(agg, kind), (type(agg), kind)
        if attempt is not None:
            attempt.hold(agg)
            if not fresh:
                self._streams.put(agg)
        return agg

    def _from_cache(self, aggregate_id: UUID, kind: type[A]) -> A | None:
        """The cached aggregate, if this attempt may trust the cache and has it."""
        attempt = self._attempt
        assert attempt is not None
        if not attempt.trust_cache:
            return None
        cached = self._streams.get(aggregate_id)
        if cached is None:
            return None
        assert isinstance(cached, kind), (type(cached), kind)
        attempt.cached[aggregate_id] = cached
        attempt.hold(cached)
        return cached

    def _load_many(self, aggregate_ids: Sequence[UUID], kind: type[A]) -> dict[UUID, A]:
        """Many streams in one round trip per chunk (reorgs and promotions touch thousands)."""
        select_many = getattr(self.recorder, "select_events_many", None)
        if select_many is None:
            found = {i: self._load(i, kind) for i in aggregate_ids}
            return {i: a for i, a in found.items() if a is not None}
        aggregates: dict[UUID, Any] = {}
        for stored in select_many(list(aggregate_ids)):
            event: Any = self.mapper.to_domain_event(stored)
            aggregates[event.originator_id] = event.mutate(aggregates.get(event.originator_id))
        assert all(isinstance(a, kind) for a in aggregates.values())
        return aggregates

    def _tx(self, txid: str) -> TransactionAggregate:
        tx = self._load(transaction_id(txid), TransactionAggregate)
        if tx is None:
            raise UnknownTransaction(txid)
        return tx

    def _action(self, user: str, reference: str) -> ActionAggregate:
        action = self._load(action_id(user, reference), ActionAggregate)
        if action is None:
            raise UnknownAction(user, reference)
        return action

    def retrying(self, command: Callable[[int], R]) -> R:
        """Run ``command(attempt)`` (which reads, decides and saves) until it saves without
        collision. Attempt 0 is optimistic: it trusts the stream cache and may create streams
        without first reading them (the event store refuses a duplicate version 1). Its
        outcome stands only if it saved; otherwise attempt 1 decides again from fresh reads.
        Commands of one ledger run one at a time (the lock covers no network calls)."""
        with self._command_lock:
            assert self._attempt is None, "commands do not nest"
            try:
                for attempt in range(MAX_COMMAND_ATTEMPTS):
                    state = self._attempt = Attempt(trust_cache=attempt == 0)
                    try:
                        result = command(attempt)
                    except BaseException as err:
                        self._streams.evict(state.held)  # copies may hold half-made changes
                        if isinstance(err, RecordConflictError):
                            delay = min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** attempt)
                            time.sleep(random.uniform(0, delay))
                            continue
                        if isinstance(err, Recheck) or (isinstance(err, LedgerError)
                                                        and _recheck(state)):
                            continue
                        raise
                    if _recheck(state):
                        continue
                    return result
            finally:
                self._attempt = None
        raise ConcurrencyConflict(
            f"gave up after {MAX_COMMAND_ATTEMPTS} attempts: other writers kept changing the "
            "same transaction, action or outputs; the command is safe to retry")

    # --- actions -----------------------------------------------------------------------------

    def create_action(self, *, user: str, reference: str, description: str,
                      outputs: list[NewOutput], inputs: list[Outpoint], labels: list[str],
                      is_outgoing: bool, idempotency_key: str | None) -> ActionView:
        payload: dict[str, Any] = {"user": user, "reference": reference, "description": description,
                   "outputs": [_declared(o) for o in outputs],
                   "inputs": [str(i) for i in inputs], "labels": labels,
                   "is_outgoing": is_outgoing}
        digest = payload_digest("create_action", payload)
        if len(set(inputs)) != len(inputs):
            raise InvalidInput("the same input is listed twice")

        def repeat() -> ActionView | None:
            """The answer to a repeat of an earlier request under the same key, if any."""
            if idempotency_key is None:
                return None
            used = self._load(idempotency_id(idempotency_key), IdempotencyRecord, fresh=True)
            if used is None:
                return None
            used.check_repeat(command="create_action", digest=digest)
            return self._action_view(self._action(user, reference))

        def command(attempt: int) -> ActionView:
            # Attempt 0 creates the action, its key and its locks without reading them first: a
            # stream that already exists makes the save collide, and attempt 1 reads and decides.
            optimistic = attempt == 0
            if optimistic:
                assert self._attempt is not None
                self._attempt.skipped_reads = True
            else:
                answer = repeat()
                if answer is not None:
                    return answer
            try:
                return decide(optimistic)
            except (PreconditionFailed, OutputAlreadyReserved, OutputNotSpendable):
                # The original request may have committed after the key was read: a retry
                # must answer as one, never refuse its own input.
                answer = None if optimistic else repeat()
                if answer is None:
                    raise
                return answer

        def decide(optimistic: bool) -> ActionView:
            if not optimistic and self._load(action_id(user, reference), ActionAggregate) is not None:
                raise PreconditionFailed(
                    f"action {reference!r} of user {user!r} already exists; "
                    "use a new reference (or an idempotency key to make retries safe)")
            # Triggered in the order they are saved, so the log's timestamps never go back.
            locks, held = self._reserve(user, reference, inputs, optimistic=optimistic)
            action = ActionAggregate.create(
                user=user, reference=reference, description=description,
                is_outgoing=is_outgoing, outputs=payload["outputs"], labels=labels,
                idempotency_key=idempotency_key)
            action.reserve([{"outpoint": str(op), "satoshis": sats} for op, sats in held])
            record = None
            if idempotency_key is not None:
                record = IdempotencyRecord.record(
                    key=idempotency_key, command="create_action", digest=digest,
                    result={"user": user, "reference": reference})
            self._save(*locks, action, record)
            return action_view(action, None)

        return self.retrying(command)

    def _reserve(self, user: str, reference: str, inputs: list[Outpoint], *, optimistic: bool
                 ) -> tuple[list[ReservationAggregate], list[tuple[Outpoint, int]]]:
        """Take each input's lock stream. Optimistic: assume none exists yet (the first
        reservation of an outpoint, by far the common case)."""
        locks: list[ReservationAggregate] = []
        held: list[tuple[Outpoint, int]] = []
        for op in inputs:
            satoshis = self._check_spendable(user, op)
            lock = None if optimistic else \
                self._load(reservation_id(op.txid, op.vout), ReservationAggregate)
            if lock is None:
                lock = ReservationAggregate.take_new(txid=op.txid, vout=op.vout, user=user,
                                                     reference=reference)
            else:
                lock.take(user=user, reference=reference)
            locks.append(lock)
            held.append((op, satoshis))
        return locks, held

    def _check_spendable(self, user: str, op: Outpoint) -> int:
        found = self.read_model.output_for_spend(user, op.txid, op.vout)
        if found is None:
            raise OutputNotSpendable(f"output {op} is not an output of user {user!r}")
        category, satoshis = found
        if category in ("reserved", "spent"):
            raise OutputAlreadyReserved(f"output {op} is already {category} by another action")
        if category != "spendable":
            raise OutputNotSpendable(f"output {op} of user {user!r} is {category}, not spendable")
        return satoshis

    def sign_action(self, *, user: str, reference: str, raw_tx: bytes, nosend: bool,
                    input_beef: bytes | None = None) -> TransactionView:
        parsed = self.codec.parse_raw_tx(raw_tx)
        if input_beef is not None:
            self.codec.parse_beef(input_beef)  # strictly, before anything is stored

        def command(attempt: int) -> TransactionView:
            action = self._action(user, reference)
            if action.txid == parsed.txid:
                return self._tx_view(self._tx(parsed.txid), {})
            _check_signable(action, parsed)
            self._check_unreserved_spends(action, parsed)
            if attempt > 0 and \
                    self._load(transaction_id(parsed.txid), TransactionAggregate) is not None:
                raise PreconditionFailed(
                    f"transaction {parsed.txid} is already stored for another action")
            tx = TransactionAggregate.create(
                txid=parsed.txid, raw_tx=parsed.raw, state=self._initial_state(parsed, nosend),
                is_coinbase=parsed.is_coinbase,
                inputs=[f"{i.source_txid}:{i.source_vout}" for i in parsed.inputs],
                output_count=len(parsed.outputs), origin=(user, reference),
                input_beef=input_beef)
            action.sign(txid=parsed.txid, nosend=nosend)
            return self._tx_view(tx, self._save(tx, action))

        return self.retrying(command)

    def _check_unreserved_spends(self, action: ActionAggregate, parsed: ParsedTx) -> None:
        """A signed transaction spends the ledger's outputs only through its draft's
        reservations: spending another of them (the user's own or another user's) would leave
        it listed as spendable while it is spent."""
        spends = {f"{i.source_txid}:{i.source_vout}" for i in parsed.inputs} - action.held
        if not spends:
            return
        owners = self.read_model.output_owners(sorted(spends))
        for outpoint in sorted(spends):
            if outpoint in owners:
                raise InvalidTransaction(
                    f"the transaction spends {outpoint}, an output of user "
                    f"{owners[outpoint]!r} that the draft of {action.reference!r} did not "
                    "reserve; list it in create_action's inputs")

    def _initial_state(self, parsed: ParsedTx, nosend: bool) -> ProcessingStatus:
        if nosend:
            return S.NOSEND
        if parsed.locktime and any(i.sequence != SEQUENCE_FINAL for i in parsed.inputs):
            if parsed.locktime >= LOCKTIME_HEIGHT_LIMIT:
                return S.NONFINAL if parsed.locktime > time.time() else S.QUEUED
            tip = self.read_model.tip_height()
            if tip is None or parsed.locktime > tip:
                return S.NONFINAL
        return S.QUEUED

    def abort_action(self, *, user: str, reference: str, reason: str) -> ActionView:
        def command(attempt: int) -> ActionView:
            action = self._action(user, reference)
            if action.aborted:
                return self._action_view(action)
            tx = self._load(transaction_id(action.txid), TransactionAggregate) \
                if action.txid else None
            if not action.is_outgoing:
                raise PreconditionFailed(
                    f"action {reference!r} internalized a received transaction; "
                    "only self-created actions can be aborted")
            if tx is not None:
                if not tx.never_broadcast:
                    said = "was accepted by a provider" if tx.was_broadcast else f"is {tx.state}"
                    raise PreconditionFailed(
                        f"action {reference!r} cannot be aborted: its transaction {tx.txid} "
                        f"{said} (abort is possible only before the first broadcast)")
                tx.request_transition(S.INVALID, reason="aborted", details={"why": reason})
            released = action.abort(reason)
            locks = self._locks(released)
            for lock in locks:
                lock.release("aborted")
            self._save(tx, action, *locks)
            return action_view(action, None if tx is None else tx.state)

        return self.retrying(command)

    def _locks(self, outpoints: Sequence[str]) -> list[ReservationAggregate]:
        locks = []
        for text in outpoints:
            op = Outpoint.parse(text)
            lock = self._load(reservation_id(op.txid, op.vout), ReservationAggregate)
            assert lock is not None, f"held outpoint {text} has no lock stream"
            locks.append(lock)
        return locks

    # --- processing --------------------------------------------------------------------------

    def _spender_effects(self, tx: TransactionAggregate, before: ProcessingStatus) -> list[Any]:
        """Invalid spender: release its inputs. Double-spent spender: quarantine them. A spender
        revived from ``unfail``: it spends its inputs again."""
        if tx.state == before or tx.origin_user is None or tx.origin_reference is None:
            return []
        if before == S.UNFAIL and tx.state not in TOXIC_STATES:
            return self._revive(tx)
        if tx.state not in TOXIC_STATES:
            return []
        action = self._action(tx.origin_user, tx.origin_reference)
        retaken = self._retake_free(tx, action) if tx.state == S.DOUBLE_SPEND else []
        held = sorted(action.held)
        if not held:
            return []
        locks = self._locks(held)
        if tx.state == S.INVALID:
            action.release(held, reason=f"spender {tx.txid} invalid")
            for lock in locks:
                lock.release(f"spender {tx.txid} invalid")
        else:
            action.quarantine(reason=f"spender {tx.txid} lost a double-spend race")
            for lock in locks:
                lock.quarantine(f"spender {tx.txid} double-spent")
        assert {lock.outpoint for lock in retaken} <= {lock.outpoint for lock in locks}
        return [action, *locks]

    def _retake_free(self, tx: TransactionAggregate, action: ActionAggregate) -> list[Any]:
        """A spender found double-spent after its inputs were released (it went ``invalid``,
        then ``unfail``): the inputs no other action took meanwhile are its own again, so that
        they are quarantined with the rest. SPEC §4: a double-spent spender's inputs are never
        silently restored."""
        assert tx.origin_user is not None and tx.origin_reference is not None
        released = sorted(op for op in action.inputs if op not in action.held)
        if action.aborted or not released:
            return []
        free = [lock for lock in self._locks(released) if lock.holder is None]
        for lock in free:
            lock.reclaim(user=action.user, reference=action.reference, txid=tx.txid)
        if free:
            action.retake([lock.outpoint for lock in free],
                          reason=f"spender {tx.txid} double-spent after it was released")
        return free

    def _revive(self, tx: TransactionAggregate) -> list[Any]:
        """Take back the inputs of a spender that left ``unfail`` for a live state."""
        assert tx.origin_user is not None and tx.origin_reference is not None
        action = self._action(tx.origin_user, tx.origin_reference)
        if action.aborted:
            raise PreconditionFailed(
                f"transaction {tx.txid} belongs to action {action.reference!r}, which was "
                "aborted; it can only go to invalid or doubleSpend")
        wanted = sorted(op for op in action.inputs
                        if op not in action.held or op in action.quarantined)
        locks = self._locks(wanted)
        retaken = [lock.outpoint for lock in locks
                   if lock.reclaim(user=action.user, reference=action.reference, txid=tx.txid)]
        action.retake(wanted, reason=f"spender {tx.txid} revived")
        return [action, *(lock for lock in locks if lock.outpoint in retaken)]

    def transition(self, *, txid: str, to: ProcessingStatus, reason: str,
                   expected_from: ProcessingStatus | None, actor: str | None,
                   details: dict[str, Any]) -> TransactionView:
        def command(attempt: int) -> TransactionView:
            tx = self._tx(txid)
            before = tx.state
            rejection = tx.request_transition(to, reason=reason, expected_from=expected_from,
                                              actor=actor, details=details)
            saved = self._save(tx, *self._spender_effects(tx, before))
            if rejection is not None:
                raise rejection
            return self._tx_view(tx, saved)

        return self.retrying(command)

    def record_broadcast(self, *, txid: str, results: list[ProviderResult]) -> TransactionView:
        outcome = broadcast_outcome([r.status for r in results])
        dumped = [r.model_dump(mode="json") for r in results]

        def command(attempt: int) -> TransactionView:
            tx = self._tx(txid)
            before = tx.state
            tx.record_broadcast(dumped, outcome)
            return self._tx_view(tx, self._save(tx, *self._spender_effects(tx, before)))

        return self.retrying(command)

    def broadcast(self, *, txid: str, broadcasters: Sequence[Broadcaster]) -> TransactionView:
        """Mark a queued transaction ``sending``, try the providers in order, record them all.
        The providers are called outside any command, so no lock is held across the network.
        Broadcasters are checked first: a bad list stores nothing."""
        if not broadcasters:
            raise InvalidInput("broadcast needs at least one broadcaster")
        check_broadcasters(broadcasters)
        beef = self.beef_for(self._mark_sending(txid))
        results = broadcast_sequentially(broadcasters, beef, txid)
        return self.record_broadcast(txid=txid, results=results)

    def beef_for(self, tx: TransactionAggregate) -> bytes:
        """An Atomic BEEF of ``tx`` and the ancestry a processor needs to check it: each input's
        transaction with its merkle proof, or, while unproven, with its own inputs' ancestry in
        turn -- from the ledger's own transactions and the BEEFs it was given with them. An
        ancestor found nowhere is left out (the network is assumed to know it)."""
        supplied: dict[str, tuple[bytes, bytes | None]] = {}
        ordered: dict[str, tuple[bytes, bytes | None]] = {}

        def learn(beef_hex: str | None) -> None:
            if beef_hex:
                parsed = self.codec.parse_beef(bytes.fromhex(beef_hex))
                for txid, found in parsed.transactions.items():
                    proof = parsed.proofs.get(txid)
                    supplied.setdefault(txid, (found.raw, None if proof is None else proof.bump))

        def source(txid: str) -> tuple[tuple[bytes, bytes | None], list[str]] | None:
            known = self._load(transaction_id(txid), TransactionAggregate, fresh=True)
            if known is not None:
                learn(known.input_beef)
                bump = known.proof["bump"] if known.proof else None
                entry = (bytes.fromhex(known.raw_tx), None if bump is None else bytes.fromhex(bump))
                return entry, [i.split(":")[0] for i in known.inputs]
            if txid in supplied:
                raw, bump = supplied[txid]
                return (raw, bump), [i.source_txid for i in self.codec.parse_raw_tx(raw).inputs]
            return None

        learn(tx.input_beef)
        stack = [(t, False) for t in reversed(dict.fromkeys(i.split(":")[0] for i in tx.inputs))]
        while stack:  # depth first, parents before children
            txid, expanded = stack.pop()
            if txid in ordered or txid == NULL_TXID:
                continue
            found = source(txid)
            if found is None:
                continue
            entry, parents = found
            if expanded or entry[1] is not None:
                ordered[txid] = entry
                continue
            if len(ordered) + len(stack) > MAX_BEEF_ANCESTORS:
                raise InvalidInput(f"transaction {tx.txid} has more than {MAX_BEEF_ANCESTORS} "
                                   "unproven ancestors; prove some before broadcasting")
            stack.append((txid, True))
            stack.extend((p, False) for p in reversed(dict.fromkeys(parents)) if p not in ordered)
        return self.codec.encode_beef(bytes.fromhex(tx.raw_tx), list(ordered.values()))

    def _mark_sending(self, txid: str) -> TransactionAggregate:
        def command(attempt: int) -> TransactionAggregate:
            tx = self._tx(txid)
            if tx.state == S.QUEUED:
                tx.request_transition(S.SENDING, reason="broadcast")
                self._save(tx)
            return tx

        return self.retrying(command)

    def confirm_unspent(self, *, outpoints: list[Outpoint], reason: str,
                        actor: str | None) -> None:
        if len(set(outpoints)) != len(outpoints):
            raise InvalidInput("the same outpoint is listed twice")

        def command(attempt: int) -> None:
            by_holder: dict[tuple[str, str], list[ReservationAggregate]] = {}
            for op in outpoints:
                lock = self._load(reservation_id(op.txid, op.vout), ReservationAggregate)
                if lock is None or not lock.quarantined or lock.holder is None:
                    raise PreconditionFailed(
                        f"output {op} is not quarantined; confirm_unspent releases only inputs "
                        "held after a double spend")
                by_holder.setdefault(lock.holder, []).append(lock)
            changed: list[Any] = []
            for holder, locks in by_holder.items():  # events in the order they are saved
                action = self._action(*holder)
                action.release([lock.outpoint for lock in locks], reason=reason, actor=actor)
                for lock in locks:
                    lock.release(reason)
                changed += [action, *locks]
            self._save(*changed)

        self.retrying(command)

    def note(self, *, txid: str, what: str, details: dict[str, Any]) -> None:
        def command(attempt: int) -> None:
            tx = self._tx(txid)
            tx.note(what, details)
            self._save(tx)

        self.retrying(command)

    # --- proofs and chain --------------------------------------------------------------------

    def _ask_tracker(self, txid: str, merkle_path: bytes, *,
                     must_exist: bool) -> TrackerVerdict | None:
        """The chain tracker's verdict on a proof whose height the ledger has no active header
        for, asked before the command runs (no lock is held across the network). None when the
        ledger's own chain decides: no tracker, a header at that height, or a proof the command
        refuses anyway (it does, with the errors it always gave). A tracker that rejects the
        root raises InvalidProof; one that fails, ChainTrackerUnavailable (ADR 0008)."""
        tracker = self.chain_tracker
        if tracker is None:
            return None
        try:
            proof = self.codec.parse_bump(merkle_path, txid)
        except LedgerError:
            return None
        height = proof.block_height
        if self.read_model.active_header(height) is not None:
            return None  # the ledger's own header always wins
        if must_exist and self._load(transaction_id(txid), TransactionAggregate,
                                     fresh=True) is None:
            return None  # UnknownTransaction, before anything asks the network
        timeout_s = self.settings.chain_tracker_timeout_s
        if not tracker_calls.is_valid_root(tracker, proof.merkle_root, height, timeout_s):
            raise InvalidProof(
                f"the proof's merkle root {proof.merkle_root} is not the root of the block at "
                f"height {height}, says the chain tracker (the ledger has no header there)")
        tracker_tip = None
        if tracker_needs_height(height, self.read_model.tip_height()):
            tracker_tip = tracker_calls.current_height(tracker, timeout_s)
        return TrackerVerdict(height=height, merkle_root=proof.merkle_root,
                              tracker_tip=tracker_tip)

    def _validated_proof(self, txid: str, merkle_path: bytes, tx: TransactionAggregate | None,
                         verdict: TrackerVerdict | None = None
                         ) -> tuple[ParsedProof, str | None, ProcessingStatus, int | None]:
        """(proof, block hash, target state, depth tip). The block hash is that of the ledger's
        active header at the proof's height; None when the chain tracker's ``verdict``
        validated the root instead, and then the depth tip is the tip that decided the state
        (else None)."""
        proof = self.codec.parse_bump(merkle_path, txid)
        height = proof.block_height
        header = self.read_model.active_header(height)
        tip = self.read_model.tip_height()
        block_hash: str | None = None
        depth_tip: int | None = None
        if header is not None and tip is not None:
            if height > tip:
                raise InvalidProof(f"proof height {height} is above the chain tip {tip}")
            if header["merkle_root"] != proof.merkle_root:
                raise InvalidProof(
                    f"the proof's merkle root {proof.merkle_root} is not the root of the active "
                    f"block {header['hash']} at height {height}")
            block_hash, decided_by = str(header["hash"]), tip
        elif verdict is not None and (verdict.height, verdict.merkle_root) == (
                height, proof.merkle_root):
            depth_tip = tracker_depth_tip(height, tip, verdict.tracker_tip)
            if depth_tip is None:
                raise InvalidProof(
                    f"the ledger's chain changed while the chain tracker checked the proof at "
                    f"height {height}; retry")
            if height > depth_tip:
                raise InvalidProof(
                    f"proof height {height} is above the chain tip {depth_tip} (the chain "
                    "tracker's current height; the ledger has no header there)")
            decided_by = depth_tip
        else:
            raise InvalidProof(
                f"no active header at height {height}: apply the headers "
                "up to that block first (apply_headers)")
        if tx is not None and tx.is_coinbase and proof.leaf_offset != 0:
            raise InvalidProof(f"coinbase {txid} must be at offset 0, proof says "
                               f"{proof.leaf_offset}")
        return proof, block_hash, proof_state(height, decided_by), depth_tip

    def record_proof(self, *, txid: str, merkle_path: bytes) -> TransactionView:
        verdict = self._ask_tracker(txid, merkle_path, must_exist=True)

        def command(attempt: int) -> TransactionView:
            tx = self._tx(txid)
            proof, block_hash, target, depth_tip = self._validated_proof(
                txid, merkle_path, tx, verdict)
            rejection = tx.record_proof(
                height=proof.block_height, block_hash=block_hash,
                merkle_root=proof.merkle_root, leaf_offset=proof.leaf_offset, bump=proof.bump,
                target=target, depth_tip=depth_tip)
            saved = self._save(tx)
            if rejection is not None:
                raise rejection
            return self._tx_view(tx, saved)

        return self.retrying(command)

    def apply_headers(self, headers: list[dict[str, Any]]) -> ChainChange:
        with gc_pause.paused():  # a block may touch thousands of transactions
            return self._apply_headers(headers)

    def _apply_headers(self, headers: list[dict[str, Any]]) -> ChainChange:
        seen = self.read_model.known_headers([str(h["hash"]) for h in headers])

        def command(attempt: int) -> ChainChange:
            chain = self._load(chain_id(), ChainAggregate) or ChainAggregate.start()
            plan = chain.plan(headers, max_reorg_depth_blocks=self.settings.max_reorg_depth_blocks,
                              seen=seen)
            if not plan.connect and not plan.disconnect:
                return ChainChange([], [], [])
            chain.execute(plan)
            tip = chain.tip
            assert tip is not None
            txs: dict[str, TransactionAggregate] = {}
            affected = self._disconnect(plan.disconnect, txs)
            affected += self._promote(int(tip["height"]), txs)
            self._save(chain, *txs.values())
            return ChainChange(list(plan.connect), list(plan.disconnect),
                               list(dict.fromkeys(affected)))

        return self.retrying(command)

    def _fetch_txs(self, txids: Sequence[str], into: dict[str, TransactionAggregate]) -> None:
        missing = []
        for txid in dict.fromkeys(txids):
            if txid not in into:
                cached = self._from_cache(transaction_id(txid), TransactionAggregate)
                if cached is not None:
                    into[txid] = cached
                else:
                    missing.append(txid)
        loaded = self._load_many([transaction_id(t) for t in missing], TransactionAggregate)
        for tx in loaded.values():
            into[tx.txid] = tx
            if self._attempt is not None:
                self._attempt.hold(tx)
        assert all(t in into for t in missing), "the read model names a transaction never stored"

    def _disconnect(self, blocks: Sequence[dict[str, Any]],
                    txs: dict[str, TransactionAggregate]) -> list[str]:
        """Every transaction proven in a disconnected block: ``ProofInvalidated``, ``reorging``."""
        affected = []
        for header in blocks:
            anchored = self.read_model.anchored_txids(header["hash"])
            self._fetch_txs(anchored, txs)
            affected += [t for t in anchored
                         if txs[t].invalidate_proof(block_hash=header["hash"], reason="reorg")]
        return affected

    def _promote(self, tip_height: int, txs: dict[str, TransactionAggregate]) -> list[str]:
        """Every ``unconfirmed`` transaction now below the tip becomes ``confirmed``."""
        below = self.read_model.unconfirmed_below(tip_height)
        self._fetch_txs(below, txs)
        return [t for t in below if txs[t].promote(tip_height=tip_height)]

    # --- third-party receipts ----------------------------------------------------------------

    def internalize_action(self, *, user: str, beef: bytes, outputs: list[InternalizeOutput],
                           description: str, labels: list[str], reference: str | None,
                           broadcasters: Sequence[Broadcaster]) -> ActionView:
        check_broadcasters(broadcasters)  # even when the BEEF's proof makes them unneeded
        parsed = self.codec.parse_beef(beef)
        subject = parsed.subject
        reference = reference or subject.txid
        taken = _internalized_outputs(subject, outputs)
        proof_bytes = parsed.proofs[subject.txid].bump if subject.txid in parsed.proofs else None
        known = self._load(transaction_id(subject.txid), TransactionAggregate, fresh=True)
        results: list[ProviderResult] = []
        verdict = None
        if proof_bytes is not None:
            verdict = self._ask_tracker(subject.txid, proof_bytes, must_exist=False)
        if known is None and proof_bytes is None:
            results = broadcast_sequentially(broadcasters, beef, subject.txid)
            if not any(r.status in (ProviderStatus.SUCCESS, ProviderStatus.SEEN) for r in results):
                raise BroadcastFailed(_broadcast_failure(subject.txid, results))

        def command(attempt: int) -> ActionView:
            # Fresh: a known transaction is appended to only when the BEEF proves it (the cache
            # could not be checked otherwise).
            tx = self._load(transaction_id(subject.txid), TransactionAggregate, fresh=True)
            if tx is None:
                tx = TransactionAggregate.create(
                    txid=subject.txid, raw_tx=subject.raw, state=S.SENT,
                    is_coinbase=subject.is_coinbase,
                    inputs=[f"{i.source_txid}:{i.source_vout}" for i in subject.inputs],
                    output_count=len(subject.outputs),
                    input_beef=beef if proof_bytes is None else None)  # a proof needs no ancestry
                if results:  # broadcast above: it had no proof
                    tx.record_broadcast([r.model_dump(mode="json") for r in results],
                                        broadcast_outcome([r.status for r in results]))
            if proof_bytes is not None:
                self._proof_from_beef(tx, proof_bytes, verdict)
            action = self._load(action_id(user, reference), ActionAggregate)
            if action is None:
                action = ActionAggregate.create(
                    user=user, reference=reference, description=description, is_outgoing=False,
                    outputs=[], labels=labels)
            elif action.txid not in (None, subject.txid):
                raise PreconditionFailed(
                    f"action {reference!r} of user {user!r} belongs to {action.txid}")
            action.internalize(txid=subject.txid, outputs=taken)
            action.add_labels(labels)
            self._save(tx, action)
            return action_view(action, tx.state)

        return self.retrying(command)

    def _proof_from_beef(self, tx: TransactionAggregate, bump: bytes,
                         verdict: TrackerVerdict | None) -> None:
        """A BEEF's proof: checked like any proof (a bad one raises InvalidProof and nothing is
        stored), and recorded where the processing state takes a proof. A transaction new to
        the ledger (``sent``) always does; a known one in a state that does not (frozen,
        invalid, ...) stays as it is, since an operator or the network put it there."""
        proof, block_hash, target, depth_tip = self._validated_proof(tx.txid, bump, tx, verdict)
        if tx.takes_proof(target):
            rejection = tx.record_proof(
                height=proof.block_height, block_hash=block_hash, merkle_root=proof.merkle_root,
                leaf_offset=proof.leaf_offset, bump=proof.bump, target=target,
                depth_tip=depth_tip)
            assert rejection is None, "takes_proof said the move is legal"


def _recheck(state: Attempt) -> bool:
    """An optimistic attempt that saved nothing is decided again from fresh reads (see
    :mod:`ledger.stream_cache`): neither a refusal nor a no-op may rest on what it assumed."""
    return state.optimistic and not state.saved


def _declared(output: NewOutput) -> dict[str, Any]:
    data = output.model_dump(mode="python")
    data["locking_script"] = output.locking_script.hex()
    return data


def _check_signable(action: ActionAggregate, parsed: ParsedTx) -> None:
    ref = action.reference
    if action.aborted:
        raise PreconditionFailed(f"action {ref!r} was aborted; create a new action")
    if action.txid is not None:
        raise PreconditionFailed(f"action {ref!r} is already signed as {action.txid}")
    if not action.is_outgoing:
        raise PreconditionFailed(f"action {ref!r} internalized a received transaction")
    if len(parsed.outputs) != len(action.outputs):
        raise InvalidTransaction(
            f"the transaction has {len(parsed.outputs)} outputs; the draft of {ref!r} declares "
            f"{len(action.outputs)}")
    for declared in action.outputs:
        vout = int(declared["vout"])
        if vout >= len(parsed.outputs):
            raise InvalidTransaction(f"the draft declares vout {vout}; the transaction lacks it")
        got = parsed.outputs[vout]
        if got.satoshis != declared["satoshis"] or got.locking_script.hex() != \
                declared["locking_script"]:
            raise InvalidTransaction(
                f"output {vout} pays {got.satoshis} sat to script {got.locking_script.hex()[:20]}"
                f"..., the draft declares {declared['satoshis']} sat to "
                f"{declared['locking_script'][:20]}...")
    spends = {f"{i.source_txid}:{i.source_vout}" for i in parsed.inputs}
    missing = sorted(action.held - spends)
    if missing:
        raise InvalidTransaction(f"the transaction does not spend reserved input {missing[0]}")


def _internalized_outputs(subject: ParsedTx, outputs: list[InternalizeOutput]
                          ) -> list[dict[str, Any]]:
    if not outputs:
        raise InvalidInput("internalize_action needs at least one output to take")
    taken = []
    for out in outputs:
        if out.vout >= len(subject.outputs):
            raise InvalidInput(f"transaction {subject.txid} has no output {out.vout}")
        tx_out = subject.outputs[out.vout]
        taken.append({"vout": out.vout, "satoshis": tx_out.satoshis,
                      "locking_script": tx_out.locking_script.hex(), "basket": out.basket,
                      "tags": list(out.tags), "custom_instructions": out.custom_instructions})
    if len({o["vout"] for o in taken}) != len(taken):
        raise InvalidInput("the same output is listed twice")
    return taken


MAX_BROADCASTERS = 16


def broadcast_sequentially(broadcasters: Sequence[Broadcaster], beef: bytes,
                           txid: str) -> list[ProviderResult]:
    """Try providers one after another; stop at the first acceptance. Exceptions count as
    ``service_error`` results."""
    if not broadcasters:
        raise BroadcastFailed(f"transaction {txid} has no proof and no broadcaster was given")
    results: list[ProviderResult] = []
    for broadcaster in broadcasters:  # checked by the caller before anything was stored
        name = _provider_name(broadcaster)
        try:
            result = broadcaster.broadcast(beef, txid)
            if not isinstance(result, ProviderResult):
                raise TypeError(f"returned {type(result).__name__}, not ProviderResult")
        except Exception as err:  # a provider failure is data, not a crash
            said = f"{type(err).__name__}: {err}"[:300]
            result = ProviderResult(provider=name, status=ProviderStatus.SERVICE_ERROR,
                                    details={"error": _valid_text(said)})
        results.append(result)
        if result.status in (ProviderStatus.SUCCESS, ProviderStatus.SEEN):
            break
    return results


def check_broadcasters(broadcasters: Sequence[Any]) -> None:
    """Broadcasters as the ledger will call them: each with a ``broadcast(beef, txid)`` method
    and a ``name`` fit to record as the provider of its answers (default: its class name).
    Checked before anything is stored, so a bad one never leaves a half-done broadcast."""
    if len(broadcasters) > MAX_BROADCASTERS:
        raise InvalidInput(f"at most {MAX_BROADCASTERS} broadcasters")
    for i, broadcaster in enumerate(broadcasters):
        if not callable(getattr(broadcaster, "broadcast", None)):
            raise InvalidInput(f"broadcasters[{i}] ({type(broadcaster).__name__}) has no "
                               "broadcast(beef, txid) method")
        check_name(f"broadcasters[{i}].name", _provider_name(broadcaster))


def _provider_name(broadcaster: Any) -> Any:
    return getattr(broadcaster, "name", type(broadcaster).__name__)


def _valid_text(text: str) -> str:
    """Text a provider's exception gave, with any lone surrogate written out as an escape (the
    log keeps valid Unicode only)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _broadcast_failure(txid: str, results: list[ProviderResult]) -> str:
    said = ", ".join(f"{r.provider}: {r.status}" for r in results)
    return f"no broadcaster accepted {txid} ({said}); nothing was stored"
