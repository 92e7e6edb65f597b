"""Per-outpoint reservation locks.

Guarantee: an outpoint is held by at most one action at a time. Two writers that both read the
lock at version N and both try to take it write version N+1; the event store's unique
``(originator_id, originator_version)`` lets one commit and rolls the other back, together with
everything else in its save (the action included). This holds across processes and on PostgreSQL.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate

from ledger.clock import utc_now
from ledger.errors import OutputAlreadyReserved, OutputNotSpendable, PreconditionFailed
from ledger.identity import reservation_id


class ReservationAggregate(Aggregate):
    """Who holds one outpoint, and whether it is quarantined after a lost double-spend race."""

    TOPIC = "ledger.reservation"

    class Event(Aggregate.Event):
        TOPIC = "ledger.reservation.Event"
        create_timestamp = staticmethod(utc_now)
        outpoint: str


    class OutpointReserved(Event, Aggregate.Created):
        TOPIC = "ledger.reservation.OutpointReserved"
        outpoint: str
        user: str
        reference: str

    class OutpointRetaken(Event):
        """Held by (user, reference) again, and not quarantined."""

        TOPIC = "ledger.reservation.OutpointRetaken"
        user: str
        reference: str

        def apply(self, agg: ReservationAggregate) -> None:
            agg.holder = (self.user, self.reference)
            agg.quarantined = False

    class OutpointReleased(Event):
        TOPIC = "ledger.reservation.OutpointReleased"
        reason: str

        def apply(self, agg: ReservationAggregate) -> None:
            agg.holder = None
            agg.quarantined = False

    class OutpointQuarantined(Event):
        TOPIC = "ledger.reservation.OutpointQuarantined"
        reason: str

        def apply(self, agg: ReservationAggregate) -> None:
            agg.quarantined = True

    def __init__(self, outpoint: str, user: str, reference: str) -> None:
        self.outpoint = outpoint
        self.holder: tuple[str, str] | None = (user, reference)
        self.quarantined = False

    @classmethod
    def take_new(cls, *, txid: str, vout: int, user: str, reference: str) -> ReservationAggregate:
        """The first reservation of an outpoint."""
        return cls._create(cls.OutpointReserved, id=reservation_id(txid, vout),
                           outpoint=f"{txid}:{vout}", user=user, reference=reference)

    def _emit(self, event_class: type[Aggregate.Event], **kwargs: Any) -> None:
        self.trigger_event(event_class, outpoint=self.outpoint, **kwargs)

    def take(self, *, user: str, reference: str) -> None:
        """Reserve a previously released outpoint; refuses a held or quarantined one."""
        if self.quarantined:
            raise OutputNotSpendable(
                f"output {self.outpoint} is quarantined after a double spend; "
                "call confirm_unspent() once a UTXO check shows it unspent")
        if self.holder is not None:
            raise OutputAlreadyReserved(
                f"output {self.outpoint} is already reserved by action {self.holder[1]!r} "
                f"of user {self.holder[0]!r}")
        self._emit(self.OutpointRetaken, user=user, reference=reference)

    def reclaim(self, *, user: str, reference: str, txid: str) -> bool:
        """The spender ``txid`` of (user, reference) is live again (it left ``unfail``): hold the
        outpoint for it again. Refused if another action took it meanwhile."""
        if self.holder not in (None, (user, reference)):
            assert self.holder is not None
            raise PreconditionFailed(
                f"transaction {txid} cannot be revived: its input {self.outpoint} is now "
                f"reserved by action {self.holder[1]!r} of user {self.holder[0]!r}; abort that "
                "action first, or send this transaction to invalid")
        if self.holder is None or self.quarantined:
            self._emit(self.OutpointRetaken, user=user, reference=reference)
            return True
        return False

    def release(self, reason: str) -> None:
        """Free the outpoint (abort, spender invalid, confirmed unspent)."""
        if self.holder is not None or self.quarantined:
            self._emit(self.OutpointReleased, reason=reason)

    def quarantine(self, reason: str) -> None:
        """Hold the outpoint until a UTXO check confirms it unspent."""
        if not self.quarantined:
            self._emit(self.OutpointQuarantined, reason=reason)
