"""The transaction aggregate: one stream per txid, the processing FSM in its command handlers.

Guarantee: every ``ProcessingChanged`` this aggregate emits is an edge of
:data:`ledger.status.TRANSITIONS`; an illegal request emits ``TransitionRejected`` and leaves the
state unchanged. Events carry only JSON-native values (hex strings for bytes).
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from ledger.clock import utc_now
from ledger.errors import IllegalTransition, PreconditionFailed
from ledger.identity import transaction_id
from ledger.rules import BroadcastOutcome, broadcast_path
from ledger.status import (
    NEVER_BROADCAST_STATES,
    PROOF_STATES,
    ProcessingStatus,
    can_transition,
    legal_next,
)

S = ProcessingStatus

VERIFIED_BY_HEADERS = "headers"
VERIFIED_BY_TRACKER = "chain_tracker"


class TransactionAggregate(Aggregate):
    """State of one transaction: processing state, attempts, proof, notes count."""

    TOPIC = "ledger.transaction"

    class Event(Aggregate.Event):
        TOPIC = "ledger.transaction.Event"
        create_timestamp = staticmethod(utc_now)
        txid: str


    class TransactionCreated(Event, Aggregate.Created):
        """``input_beef`` (hex, v2): the BEEF the wallet or the sender gave with the
        transaction -- its inputs' ancestry, which a broadcast hands on."""

        TOPIC = "ledger.transaction.TransactionCreated"
        class_version = 2
        txid: str
        raw_tx: str
        state: str
        is_coinbase: bool
        inputs: list[str]
        output_count: int
        origin_user: str | None
        origin_reference: str | None
        idempotency_key: str | None
        input_beef: str | None

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["input_beef"] = None

    class ProcessingChanged(Event):
        TOPIC = "ledger.transaction.ProcessingChanged"
        from_state: str
        to_state: str
        reason: str
        actor: str | None
        provider: str | None
        provider_status: str | None
        details: dict[str, Any]

        def apply(self, agg: TransactionAggregate) -> None:
            assert agg.state == self.from_state, (agg.state, self.from_state)
            agg.state = S(self.to_state)

    class TransitionRejected(Event):
        TOPIC = "ledger.transaction.TransitionRejected"
        from_state: str
        to_state: str
        reason: str
        actor: str | None

    class ProviderResultRecorded(Event):
        TOPIC = "ledger.transaction.ProviderResultRecorded"
        provider: str
        status: str
        provider_status: str | None
        competing_txids: list[str]
        details: dict[str, Any]

        def apply(self, agg: TransactionAggregate) -> None:
            if self.status in ("success", "seen"):
                agg.was_broadcast = True

    class AttemptsIncremented(Event):
        TOPIC = "ledger.transaction.AttemptsIncremented"
        attempts: int

        def apply(self, agg: TransactionAggregate) -> None:
            agg.attempts = self.attempts

    class ProofRecorded(Event):
        """``verified_by`` (v2): ``"headers"`` when the root matched the ledger's own active
        header (``block_hash`` is that block's), ``"chain_tracker"`` when the injected chain
        tracker vouched for it (``block_hash`` is None: the ledger never knew the block, see
        ADR 0008)."""

        TOPIC = "ledger.transaction.ProofRecorded"
        class_version = 2
        height: int
        block_hash: str | None
        merkle_root: str
        leaf_offset: int
        bump: str
        verified_by: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["verified_by"] = VERIFIED_BY_HEADERS

        def apply(self, agg: TransactionAggregate) -> None:
            agg.proof = {"height": self.height, "block_hash": self.block_hash,
                         "merkle_root": self.merkle_root, "leaf_offset": self.leaf_offset,
                         "bump": self.bump, "verified_by": self.verified_by}

    class ProofInvalidated(Event):
        TOPIC = "ledger.transaction.ProofInvalidated"
        height: int
        block_hash: str
        reason: str

        def apply(self, agg: TransactionAggregate) -> None:
            agg.proof = None

    class NoteRecorded(Event):
        TOPIC = "ledger.transaction.NoteRecorded"
        what: str
        details: dict[str, Any]

    def __init__(self, txid: str, raw_tx: str, state: str, is_coinbase: bool, inputs: list[str],
                 output_count: int, origin_user: str | None, origin_reference: str | None,
                 idempotency_key: str | None, input_beef: str | None) -> None:
        self.txid = txid
        self.raw_tx = raw_tx
        self.input_beef = input_beef
        self.state = S(state)
        self.is_coinbase = is_coinbase
        self.inputs = list(inputs)
        self.output_count = output_count
        self.origin_user = origin_user
        self.origin_reference = origin_reference
        self.attempts = 0
        self.was_broadcast = False
        self.proof: dict[str, Any] | None = None

    # -- construction ---------------------------------------------------------------------------

    @classmethod
    def create(cls, *, txid: str, raw_tx: bytes, state: ProcessingStatus, is_coinbase: bool,
               inputs: list[str], output_count: int, origin: tuple[str, str] | None = None,
               idempotency_key: str | None = None,
               input_beef: bytes | None = None) -> TransactionAggregate:
        """A new stream for ``txid`` in its initial state."""
        assert len(txid) == 64 and output_count > 0
        return cls._create(
            cls.TransactionCreated, id=transaction_id(txid), txid=txid, raw_tx=raw_tx.hex(),
            state=state.value, is_coinbase=is_coinbase, inputs=inputs, output_count=output_count,
            origin_user=origin[0] if origin else None,
            origin_reference=origin[1] if origin else None, idempotency_key=idempotency_key,
            input_beef=None if input_beef is None else input_beef.hex(),
        )

    # -- command handlers ---------------------------------------------------------------------------

    def _emit(self, event_class: type[Aggregate.Event], **kwargs: Any) -> None:
        self.trigger_event(event_class, txid=self.txid, **kwargs)

    def _move(self, to: ProcessingStatus, *, reason: str, actor: str | None = None,
              provider: str | None = None, provider_status: str | None = None,
              details: dict[str, Any] | None = None) -> None:
        assert to != self.state and can_transition(self.state, to), (self.state, to)
        self._emit(
            self.ProcessingChanged, from_state=self.state.value, to_state=to.value, reason=reason,
            actor=actor, provider=provider, provider_status=provider_status, details=details or {},
        )

    def request_transition(self, to: ProcessingStatus, *, reason: str,
                           expected_from: ProcessingStatus | None = None, actor: str | None = None,
                           details: dict[str, Any] | None = None) -> IllegalTransition | None:
        """An operator's or wallet's explicit move.

        Raises :class:`PreconditionFailed` (nothing emitted) for proof-only and reorg-only
        targets or a stale ``expected_from``. Returns the :class:`IllegalTransition` to raise
        after saving the emitted ``TransitionRejected`` when the table forbids the move.
        """
        if expected_from is not None and expected_from != self.state:
            raise PreconditionFailed(
                f"transaction {self.txid} is {self.state}, not {expected_from} as expected; "
                "re-read it and decide again"
            )
        if to == self.state:
            return None
        if to in PROOF_STATES:
            raise PreconditionFailed(
                f"{to} is reached only through a validated merkle proof: use record_proof()"
            )
        if to == S.REORGING:
            raise PreconditionFailed(
                "reorging is reached only when the proof's block is disconnected: "
                "use apply_headers()"
            )
        if not can_transition(self.state, to):
            self._emit(self.TransitionRejected, from_state=self.state.value,
                               to_state=to.value, reason=reason, actor=actor)
            return IllegalTransition(self.txid, self.state, to, legal_next(self.state))
        self._move(to, reason=reason, actor=actor, details=details)
        return None

    def record_broadcast(self, results: list[dict[str, Any]], outcome: BroadcastOutcome) -> None:
        """Record every provider answer, then apply the aggregated outcome (SPEC §4)."""
        assert results
        for result in results:
            self._emit(self.ProviderResultRecorded, **result)
        if outcome.discrepancy:
            rejected = [r["provider"] for r in results if r["status"] == "invalid"]
            self._emit(self.NoteRecorded, what="broadcast.discrepancy",
                               details={"rejected_by": rejected, "outcome": outcome.target.value})
        if outcome.count_attempt:
            self._emit(self.AttemptsIncremented, attempts=self.attempts + 1)
        deciding = _deciding_result(results, outcome)
        for step in broadcast_path(self.state, outcome.target):
            self._move(step, reason="broadcast", provider=deciding.get("provider"),
                       provider_status=deciding.get("provider_status"))

    def takes_proof(self, target: ProcessingStatus) -> bool:
        """A proof deciding ``target`` is a legal move from the current state."""
        return _proof_path(self.state, target) is not None

    def record_proof(self, *, height: int, block_hash: str | None, merkle_root: str,
                     leaf_offset: int, bump: bytes, target: ProcessingStatus,
                     depth_tip: int | None = None) -> IllegalTransition | None:
        """Store a validated proof and move to ``target`` (``unconfirmed``/``confirmed``).

        ``block_hash`` None: the chain tracker validated the root (no block the ledger knows);
        ``depth_tip`` is then the tip that decided ``target``, kept in the move's details.
        """
        assert target in PROOF_STATES
        assert (block_hash is None) == (depth_tip is not None)
        path = _proof_path(self.state, target)
        if path is None:
            self._emit(self.TransitionRejected, from_state=self.state.value,
                               to_state=target.value, reason="proof", actor=None)
            return IllegalTransition(self.txid, self.state, target, legal_next(self.state))
        if self.proof is not None and self.proof["block_hash"] == block_hash and not path and (
                block_hash is not None or self.proof["merkle_root"] == merkle_root):
            return None
        verified_by = VERIFIED_BY_HEADERS if block_hash is not None else VERIFIED_BY_TRACKER
        self._emit(self.ProofRecorded, height=height, block_hash=block_hash,
                   merkle_root=merkle_root, leaf_offset=leaf_offset, bump=bump.hex(),
                   verified_by=verified_by)
        details: dict[str, Any] = {"height": height, "block_hash": block_hash}
        if depth_tip is not None:
            details |= {"verified_by": verified_by, "tip_height": depth_tip}
        for step in path:
            self._move(step, reason="proof", details=details)
        return None

    def invalidate_proof(self, *, block_hash: str, reason: str) -> bool:
        """The proof's block left the active chain: ``ProofInvalidated`` and ``reorging``."""
        if self.proof is None or self.proof["block_hash"] != block_hash:
            return False
        height = int(self.proof["height"])
        self._emit(self.ProofInvalidated, height=height, block_hash=block_hash,
                           reason=reason)
        if self.state in PROOF_STATES:
            self._move(S.REORGING, reason=reason, details={"height": height,
                                                           "block_hash": block_hash})
        return True

    def promote(self, *, tip_height: int) -> bool:
        """The tip moved above the proof's block: ``unconfirmed -> confirmed``."""
        if self.state != S.UNCONFIRMED or self.proof is None:
            return False
        if int(self.proof["height"]) >= tip_height:
            return False
        self._move(S.CONFIRMED, reason="tip-advanced", details={"tip_height": tip_height})
        return True

    @property
    def never_broadcast(self) -> bool:
        """No provider ever accepted it and it is in a state before any broadcast (an operator
        can requeue an accepted transaction, which does not make it unbroadcast)."""
        return self.state in NEVER_BROADCAST_STATES and not self.was_broadcast

    def note(self, what: str, details: dict[str, Any]) -> None:
        """Attach a free-form note to the transaction's history."""
        self._emit(self.NoteRecorded, what=what, details=details)


def _deciding_result(results: list[dict[str, Any]], outcome: BroadcastOutcome) -> dict[str, Any]:
    wanted = {S.DOUBLE_SPEND: ("double_spend",), S.INVALID: ("invalid",),
              S.SENDING: ("service_error", "invalid")}.get(outcome.target, ("seen", "success"))
    for result in results:
        if result["status"] in wanted:
            return result
    return results[-1]


def _proof_path(current: ProcessingStatus, target: ProcessingStatus
                ) -> tuple[ProcessingStatus, ...] | None:
    """Moves that take ``current`` to a proof state; None when no legal path exists."""
    if current == target:
        return ()
    if current == S.CONFIRMED and target == S.UNCONFIRMED:
        return ()
    if can_transition(current, target):
        return (target,)
    for via in (S.SENT, S.SENDING):
        if can_transition(current, via) and can_transition(via, target):
            return (via, target)
    return None
