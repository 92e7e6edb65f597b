"""The action aggregate: one user's payment or receipt, one stream per (user, reference).

Guarantees: an action is signed at most once and only against its own draft; it can be aborted
only while unsigned or never broadcast; its reserved inputs are released or quarantined only by
explicit events, so the log alone says why an input became spendable again.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.clock import utc_now
from ledger.errors import PreconditionFailed
from ledger.identity import action_id


def own_outputs(outputs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The outputs that stay with the action's user (``basket=None`` declares one paid away)."""
    return [o for o in outputs if o.get("basket") is not None]


def satoshis_delta(outputs: Iterable[dict[str, Any]], input_satoshis: Iterable[int]) -> int:
    """What an action changes in its user's holdings: own outputs minus the inputs it spends."""
    return sum(int(o["satoshis"]) for o in own_outputs(outputs)) - sum(input_satoshis)


class ActionAggregate(Aggregate):
    """Draft, declared outputs, labels, reserved inputs, the signed txid, and abort."""

    TOPIC = "ledger.action"

    class Event(Aggregate.Event):
        TOPIC = "ledger.action.Event"
        create_timestamp = staticmethod(utc_now)
        user: str
        reference: str


    class ActionCreated(Event, Aggregate.Created):
        TOPIC = "ledger.action.ActionCreated"
        user: str
        reference: str
        description: str
        is_outgoing: bool
        outputs: list[dict[str, Any]]
        labels: list[str]
        idempotency_key: str | None

    class InputsReserved(Event):
        TOPIC = "ledger.action.InputsReserved"
        inputs: list[dict[str, Any]]
        """``{"outpoint": "txid:vout", "satoshis": int}`` per input."""

        def apply(self, agg: ActionAggregate) -> None:
            for item in self.inputs:
                agg.inputs[item["outpoint"]] = int(item["satoshis"])
                agg.held.add(item["outpoint"])

    class ActionSigned(Event):
        TOPIC = "ledger.action.ActionSigned"
        txid: str
        nosend: bool

        def apply(self, agg: ActionAggregate) -> None:
            agg.txid = self.txid

    class ActionAborted(Event):
        TOPIC = "ledger.action.ActionAborted"
        reason: str
        released: list[str]

        def apply(self, agg: ActionAggregate) -> None:
            agg.aborted = True
            agg.held.difference_update(self.released)

    class OutputsInternalized(Event):
        TOPIC = "ledger.action.OutputsInternalized"
        txid: str
        outputs: list[dict[str, Any]]

        def apply(self, agg: ActionAggregate) -> None:
            agg.txid = self.txid
            known = {o["vout"] for o in agg.outputs}
            agg.outputs.extend(o for o in self.outputs if o["vout"] not in known)

    class InputsReleased(Event):
        TOPIC = "ledger.action.InputsReleased"
        outpoints: list[str]
        reason: str
        actor: str | None

        def apply(self, agg: ActionAggregate) -> None:
            agg.held.difference_update(self.outpoints)
            agg.quarantined.difference_update(self.outpoints)

    class InputsQuarantined(Event):
        TOPIC = "ledger.action.InputsQuarantined"
        outpoints: list[str]
        reason: str

        def apply(self, agg: ActionAggregate) -> None:
            agg.quarantined.update(self.outpoints)

    class InputsRetaken(Event):
        """The action's transaction is live again (it left ``unfail``): it spends these again."""

        TOPIC = "ledger.action.InputsRetaken"
        outpoints: list[str]
        reason: str

        def apply(self, agg: ActionAggregate) -> None:
            agg.held.update(self.outpoints)
            agg.quarantined.difference_update(self.outpoints)

    class LabelsAdded(Event):
        TOPIC = "ledger.action.LabelsAdded"
        labels: list[str]

        def apply(self, agg: ActionAggregate) -> None:
            agg.labels.extend(label for label in self.labels if label not in agg.labels)

    def __init__(self, user: str, reference: str, description: str, is_outgoing: bool,
                 outputs: list[dict[str, Any]], labels: list[str],
                 idempotency_key: str | None) -> None:
        self.user = user
        self.reference = reference
        self.description = description
        self.is_outgoing = is_outgoing
        self.outputs = list(outputs)
        self.labels = list(labels)
        self.inputs: dict[str, int] = {}
        self.held: set[str] = set()
        self.quarantined: set[str] = set()
        self.txid: str | None = None
        self.aborted = False

    @classmethod
    def create(cls, *, user: str, reference: str, description: str, is_outgoing: bool,
               outputs: list[dict[str, Any]], labels: list[str],
               idempotency_key: str | None = None) -> ActionAggregate:
        """A new draft action."""
        return cls._create(cls.ActionCreated, id=action_id(user, reference), user=user,
                           reference=reference, description=description, is_outgoing=is_outgoing,
                           outputs=outputs, labels=labels, idempotency_key=idempotency_key)

    def _emit(self, event_class: type[Aggregate.Event], **kwargs: Any) -> None:
        self.trigger_event(event_class, user=self.user, reference=self.reference, **kwargs)

    @property
    def satoshis_delta(self) -> int:
        return satoshis_delta(self.outputs, self.inputs.values())

    @property
    def signed(self) -> bool:
        return self.txid is not None and self.is_outgoing

    def reserve(self, inputs: list[dict[str, Any]]) -> None:
        """Record the inputs this draft holds (their locks are saved in the same transaction)."""
        assert not self.signed and not self.aborted
        if inputs:
            self._emit(self.InputsReserved, inputs=inputs)

    def sign(self, *, txid: str, nosend: bool) -> None:
        """Bind the draft to its signed transaction."""
        if self.aborted:
            raise PreconditionFailed(f"action {self.reference!r} was aborted; create a new one")
        if self.txid is not None:
            raise PreconditionFailed(
                f"action {self.reference!r} is already signed as {self.txid}")
        self._emit(self.ActionSigned, txid=txid, nosend=nosend)

    def abort(self, reason: str) -> list[str]:
        """Abort and release every held input; returns the released outpoints."""
        assert not self.aborted
        released = sorted(self.held)
        self._emit(self.ActionAborted, reason=reason, released=released)
        return released

    def release(self, outpoints: list[str], *, reason: str, actor: str | None = None) -> None:
        """Give inputs back (spender invalid, or quarantine lifted)."""
        mine = sorted(set(outpoints) & self.held)
        if mine:
            self._emit(self.InputsReleased, outpoints=mine, reason=reason, actor=actor)

    def quarantine(self, *, reason: str) -> list[str]:
        """The spender lost a double-spend race: hold the inputs until confirmed unspent."""
        fresh = sorted(self.held - self.quarantined)
        if fresh:
            self._emit(self.InputsQuarantined, outpoints=fresh, reason=reason)
        return fresh

    def retake(self, outpoints: list[str], *, reason: str) -> None:
        """Spend released or quarantined inputs again (the transaction was revived)."""
        assert self.signed and not self.aborted
        if outpoints:
            self._emit(self.InputsRetaken, outpoints=sorted(outpoints), reason=reason)

    def internalize(self, *, txid: str, outputs: list[dict[str, Any]]) -> None:
        """Take outputs of a received transaction into this action (merge on repeat)."""
        known = {o["vout"] for o in self.outputs}
        fresh = [o for o in outputs if o["vout"] not in known]
        if fresh or self.txid is None:
            self._emit(self.OutputsInternalized, txid=txid, outputs=fresh)

    def add_labels(self, labels: list[str]) -> None:
        """Attach labels not yet on the action."""
        fresh = [label for label in labels if label not in self.labels]
        if fresh:
            self._emit(self.LabelsAdded, labels=fresh)
