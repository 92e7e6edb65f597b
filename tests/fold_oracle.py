"""An independent fold of the event log: what the ledger should answer, derived from SPEC §3-§5.

Nothing here imports ``projections``. The reducer reads decoded events (their fields as listed in
SPEC §5) and keeps its own transactions, actions, output rows and chain; the vocabularies (which
states are spendable, hidden, preserving; state -> listActions status) are written out again from
the SPEC text rather than imported, so a wrong table in ``ledger.status`` cannot hide behind
itself. The one rule borrowed is ``ledger.rules.classify`` over ``OutputFacts`` that this module
derives itself (the brief allows it: that function *is* SPEC §4's spendability rule).

:func:`expected` renders the oracle into plain data; ``query_capture.observed`` renders a view's
captured answers into the same shape, so a test compares them with ``==`` and reads a focused
diff (:func:`differences`) on failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ledger import Ledger, ProcessingStatus
from ledger.rules import OutputCategory, OutputFacts, classify

# --- SPEC §3/§4 vocabularies, restated ------------------------------------------------------

SPENDABLE_STATES = frozenset({"sent", "seen", "seen_multi", "unconfirmed", "confirmed"})
PRESERVING_STATES = frozenset({"reorging", "unfail"})
HIDDEN_STATES = frozenset({"queued", "invalid", "doubleSpend", "frozen", "nonfinal"})
COINBASE_MATURITY = 100
ACTION_STATUS = {
    "confirmed": "completed", "invalid": "failed", "doubleSpend": "failed",
    "queued": "unprocessed", "frozen": "unprocessed", "sending": "sending",
    "sent": "unproven", "seen": "unproven", "seen_multi": "unproven", "unconfirmed": "unproven",
    "reorging": "unproven", "nosend": "nosend", "nonfinal": "nonfinal", "unfail": "unfail",
}
ACTION_STATUSES = sorted({*ACTION_STATUS.values(), "unsigned"})
BUCKETS = ("spendable", "reserved", "pending", "immature", "quarantined")

AUDIT_ONLY_TOPICS = frozenset({
    "ledger.chain.ChainStarted", "ledger.transaction.TransitionRejected",
    "ledger.transaction.NoteRecorded", "ledger.reservation.OutpointReserved",
    "ledger.reservation.OutpointRetaken", "ledger.reservation.OutpointReleased",
    "ledger.reservation.OutpointQuarantined", "ledger.idempotency.KeyUsed",
})
"""Events that change no transaction, action, output or header (they are audit rows only)."""


# --- state ----------------------------------------------------------------------------------

@dataclass
class Tx:
    txid: str
    state: str
    raw_tx: bytes
    is_coinbase: bool
    position: int
    state_position: int
    attempts: int = 0
    was_broadcast: bool = False
    height: int | None = None
    block_hash: str | None = None
    merkle_root: str | None = None


@dataclass
class Action:
    user: str
    reference: str
    description: str
    is_outgoing: bool
    declared: list[dict[str, Any]]
    labels: list[str]
    created_position: int
    delta: int
    inputs: list[str] = field(default_factory=list)
    txid: str | None = None
    aborted: bool = False


@dataclass
class Output:
    user: str
    txid: str
    vout: int
    satoshis: int
    basket: str
    tags: list[str]
    change: bool
    custom_instructions: str | None
    script_known: bool
    created_position: int
    spender_user: str | None = None
    spender_reference: str | None = None
    spender_txid: str | None = None
    spender_position: int | None = None
    quarantined: bool = False
    quarantine_position: int | None = None
    preserved: bool | None = None


@dataclass
class Fold:
    """The reducer. Feed it ``(position, event)`` in log order with :meth:`apply`."""

    txs: dict[str, Tx] = field(default_factory=dict)
    actions: dict[tuple[str, str], Action] = field(default_factory=dict)
    outputs: dict[tuple[str, str, int], Output] = field(default_factory=dict)
    active: dict[int, str] = field(default_factory=dict)
    """Active chain: height -> block hash."""
    tip: int | None = None
    position: int = 0
    events: int = 0
    audit_positions: dict[str, list[int]] = field(default_factory=dict)
    """Per txid, positions of the events of its own stream (SPEC §5 transaction events)."""

    # -- derived facts ---------------------------------------------------------------------

    def matures_at(self, out: Output) -> int | None:
        tx = self.txs[out.txid]
        if not tx.is_coinbase or tx.height is None:
            return None
        return tx.height + COINBASE_MATURITY

    def _mature(self, out: Output) -> bool:
        at = self.matures_at(out)
        return at is not None and self.tip is not None and self.tip >= at

    def _base_spendable(self, out: Output, state: str) -> bool:
        """SPEC §4, the output's own transaction only (spenders ignored)."""
        if state in PRESERVING_STATES:
            return bool(out.preserved)
        if state not in SPENDABLE_STATES or not out.script_known:
            return False
        return not self.txs[out.txid].is_coinbase or self._mature(out)

    def facts(self, out: Output) -> OutputFacts:
        tx = self.txs[out.txid]
        return OutputFacts(
            state=ProcessingStatus(tx.state), is_coinbase=tx.is_coinbase,
            matures_at_height=self.matures_at(out), script_known=out.script_known,
            reserved=out.spender_reference is not None and out.spender_txid is None,
            spent=out.spender_txid is not None, quarantined=out.quarantined,
            preserved_spendable=out.preserved)

    def category(self, out: Output) -> str:
        return classify(self.facts(out), self.tip).value

    def listed(self, out: Output) -> bool:
        """SPEC §4 listing visibility: hidden states and toxic outputs are not listed."""
        return self.txs[out.txid].state not in HIDDEN_STATES

    def action_status(self, action: Action) -> str:
        if action.aborted:
            return "failed"
        if action.txid is None:
            return "unsigned"
        return ACTION_STATUS[self.txs[action.txid].state]

    # -- the reducer -----------------------------------------------------------------------

    def feed(self, items: Iterable[tuple[int, Any]]) -> Fold:
        for position, event in items:
            self.apply(position, event)
        return self

    def apply(self, position: int, event: Any) -> None:
        assert position > self.position, f"log out of order: {position} after {self.position}"
        topic: str = type(event).TOPIC
        self.position, self.events = position, self.events + 1
        txid = getattr(event, "txid", None)
        if topic.startswith("ledger.transaction.") and isinstance(txid, str):
            self.audit_positions.setdefault(txid, []).append(position)
            if topic != "ledger.transaction.TransactionCreated":
                # TransactionView.position: the newest event of the stream, notes and refusals too
                self._touch(txid, position)
        if topic in AUDIT_ONLY_TOPICS:
            return
        name = topic.rsplit(".", 1)[1]
        handler = getattr(self, f"_on_{name}", None)
        if handler is None:
            raise AssertionError(f"the oracle does not know event {topic}: teach it (SPEC §5)")
        handler(position, event)

    def _touch(self, txid: str, position: int) -> Tx:
        tx = self.txs[txid]
        tx.position = position
        return tx

    def _on_TransactionCreated(self, pos: int, e: Any) -> None:
        assert e.txid not in self.txs, f"{e.txid} created twice"
        self.txs[e.txid] = Tx(txid=e.txid, state=e.state, raw_tx=bytes.fromhex(e.raw_tx),
                              is_coinbase=bool(e.is_coinbase), position=pos, state_position=pos)

    def _on_ProcessingChanged(self, pos: int, e: Any) -> None:
        tx = self._touch(e.txid, pos)
        assert tx.state == e.from_state, (e.txid, tx.state, e.from_state)
        for out in self._outputs_of(e.txid):
            if e.to_state in PRESERVING_STATES:
                lost = e.to_state == "reorging" and tx.is_coinbase
                out.preserved = False if lost else self._base_spendable(out, tx.state)
            else:
                out.preserved = None
        tx.state, tx.state_position = e.to_state, pos

    def _on_ProviderResultRecorded(self, pos: int, e: Any) -> None:
        tx = self._touch(e.txid, pos)
        tx.was_broadcast = tx.was_broadcast or e.status in ("success", "seen")

    def _on_AttemptsIncremented(self, pos: int, e: Any) -> None:
        self._touch(e.txid, pos).attempts = int(e.attempts)

    def _on_ProofRecorded(self, pos: int, e: Any) -> None:
        tx = self._touch(e.txid, pos)
        tx.height, tx.block_hash, tx.merkle_root = int(e.height), e.block_hash, e.merkle_root

    def _on_ProofInvalidated(self, pos: int, e: Any) -> None:
        tx = self._touch(e.txid, pos)
        tx.height = tx.block_hash = tx.merkle_root = None

    def _on_ActionCreated(self, pos: int, e: Any) -> None:
        own = [o for o in e.outputs if o.get("basket") is not None]
        self.actions[(e.user, e.reference)] = Action(
            user=e.user, reference=e.reference, description=e.description,
            is_outgoing=bool(e.is_outgoing), declared=list(e.outputs), labels=list(e.labels),
            created_position=pos, delta=sum(int(o["satoshis"]) for o in own))

    def _on_InputsReserved(self, pos: int, e: Any) -> None:
        action = self.actions[(e.user, e.reference)]
        for item in e.inputs:
            action.inputs.append(item["outpoint"])
            action.delta -= int(item["satoshis"])
            for out in self._holders(item["outpoint"]):
                out.spender_user, out.spender_reference = e.user, e.reference
                out.spender_position = pos

    def _on_ActionSigned(self, pos: int, e: Any) -> None:
        action = self.actions[(e.user, e.reference)]
        action.txid = e.txid
        self._add_outputs(e.user, e.txid, [o for o in action.declared if o.get("basket")], pos)
        for text in action.inputs:
            for out in self._holders(text):
                if (out.spender_user, out.spender_reference) == (e.user, e.reference):
                    out.spender_txid, out.spender_position = e.txid, pos

    def _on_OutputsInternalized(self, pos: int, e: Any) -> None:
        action = self.actions[(e.user, e.reference)]
        action.txid = e.txid
        action.delta += sum(int(o["satoshis"]) for o in e.outputs)
        self._add_outputs(e.user, e.txid, e.outputs, pos)

    def _release(self, user: str, reference: str, outpoints: Iterable[str], pos: int) -> None:
        for text in outpoints:
            for out in self._holders(text):
                if (out.spender_user, out.spender_reference) == (user, reference):
                    out.spender_user = out.spender_reference = out.spender_txid = None
                    out.quarantined, out.spender_position = False, pos

    def _on_ActionAborted(self, pos: int, e: Any) -> None:
        self.actions[(e.user, e.reference)].aborted = True
        self._release(e.user, e.reference, e.released, pos)

    def _on_InputsReleased(self, pos: int, e: Any) -> None:
        self._release(e.user, e.reference, e.outpoints, pos)

    def _on_InputsQuarantined(self, pos: int, e: Any) -> None:
        for text in e.outpoints:
            for out in self._holders(text):
                if (out.spender_user, out.spender_reference) == (e.user, e.reference):
                    out.quarantined, out.quarantine_position = True, pos

    def _on_InputsRetaken(self, pos: int, e: Any) -> None:
        txid = self.actions[(e.user, e.reference)].txid
        for text in e.outpoints:
            for out in self._holders(text):
                out.spender_user, out.spender_reference, out.spender_txid = e.user, e.reference, txid
                out.quarantined, out.spender_position = False, pos

    def _on_LabelsAdded(self, pos: int, e: Any) -> None:
        self.actions[(e.user, e.reference)].labels.extend(e.labels)

    def _on_BlockConnected(self, pos: int, e: Any) -> None:
        assert self.tip is None or e.height == self.tip + 1, (self.tip, e.height)
        self.active[int(e.height)], self.tip = e.hash, int(e.height)

    def _on_BlockDisconnected(self, pos: int, e: Any) -> None:
        assert self.active.get(int(e.height)) == e.hash and e.height == self.tip
        del self.active[int(e.height)]
        self.tip = int(e.height) - 1

    # -- helpers ---------------------------------------------------------------------------

    def _row(self, user: str, outpoint: str) -> Output | None:
        txid, _, vout = outpoint.partition(":")
        return self.outputs.get((user, txid, int(vout)))

    def _holders(self, outpoint: str) -> list[Output]:
        """Every user's row of an outpoint: a spender shows on all of them (SPEC §4: any
        live spender)."""
        txid, _, vout = outpoint.partition(":")
        return [o for o in self.outputs.values() if (o.txid, o.vout) == (txid, int(vout))]

    def _outputs_of(self, txid: str) -> list[Output]:
        return [o for o in self.outputs.values() if o.txid == txid]

    def _add_outputs(self, user: str, txid: str, outputs: Iterable[dict[str, Any]],
                     pos: int) -> None:
        for o in outputs:
            key = (user, txid, int(o["vout"]))
            if key not in self.outputs:
                others = self._holders(f"{txid}:{int(o['vout'])}")
                row = self.outputs[key] = Output(
                    user=user, txid=txid, vout=int(o["vout"]), satoshis=int(o["satoshis"]),
                    basket=o["basket"], tags=list(o.get("tags") or []),
                    change=bool(o.get("change", False)),
                    custom_instructions=o.get("custom_instructions"),
                    script_known=o.get("locking_script") is not None, created_position=pos)
                for other in others:  # a later holder sees the spender the others see
                    if other.spender_reference is not None or other.quarantined:
                        row.spender_user, row.spender_reference = (other.spender_user,
                                                                   other.spender_reference)
                        row.spender_txid, row.quarantined = other.spender_txid, other.quarantined
                        row.spender_position = other.spender_position
                        row.quarantine_position = other.quarantine_position
                        break

    # -- queries ---------------------------------------------------------------------------

    @property
    def users(self) -> list[str]:
        return sorted({u for u, _ in self.actions} | {u for u, _, _ in self.outputs})

    def baskets_of(self, user: str) -> list[str]:
        return sorted({o.basket for o in self.outputs.values() if o.user == user})

    def balance(self, user: str, basket: str | None = None) -> dict[str, int]:
        sums = dict.fromkeys(BUCKETS, 0)
        for out in self.outputs.values():
            if out.user == user and (basket is None or out.basket == basket):
                category = self.category(out)
                if category in sums:
                    sums[category] += out.satoshis
        return sums


def fold_log(led: Ledger, upto: int | None = None) -> Fold:
    """The oracle over the stored log, up to and including ``upto`` (the whole log if None)."""
    return Fold().feed(read_log(led, upto))


def read_log(led: Ledger, upto: int | None = None, after: int = 0) -> Iterator[tuple[int, Any]]:
    """``(position, event)`` straight from the event store, through ``eventsourcing``'s own
    notifications and mapper (neither projection code nor the ledger's bulk decoder)."""
    recorder, mapper = led._app.recorder, led._app.mapper
    position = after
    while True:
        page = recorder.select_notifications(start=position, limit=500, inclusive_of_start=False)
        for note in page:
            if upto is not None and note.id > upto:
                return
            yield note.id, mapper.to_domain_event(note)
        if len(page) < 500:
            return
        position = page[-1].id


# --- what the queries should answer ----------------------------------------------------------

def output_tuple(txid: str, vout: int, satoshis: int, basket: str, tags: Iterable[str],
                 spendable: bool, change: bool, is_coinbase: bool, category: str,
                 custom_instructions: str | None) -> tuple[Any, ...]:
    """One listed output, in the shape both sides are rendered to."""
    return (txid, vout, satoshis, basket, tuple(sorted(tags)), spendable, change, is_coinbase,
            category, custom_instructions)


def expected(fold: Fold) -> dict[str, Any]:
    """Every answer the oracle can derive: tip, transactions, actions (newest first), outputs per
    user/basket/spendable filter, balances per user/basket, explain verdicts per output row."""
    tip = None if fold.tip is None else (fold.tip, fold.active[fold.tip])
    txs = {t.txid: (t.state, t.attempts, t.was_broadcast, t.is_coinbase, t.height, t.block_hash,
                    t.merkle_root, t.raw_tx, t.position) for t in fold.txs.values()}
    actions: dict[str, list[tuple[Any, ...]]] = {}
    outputs: dict[str, list[tuple[Any, ...]]] = {}
    balances: dict[str, dict[str, int]] = {}
    explain: dict[str, tuple[bool, str]] = {}
    for user in fold.users:
        mine = sorted((a for a in fold.actions.values() if a.user == user),
                      key=lambda a: -a.created_position)
        actions[user] = [(a.reference, a.txid, fold.action_status(a), a.delta, a.is_outgoing,
                          tuple(sorted(a.labels)), a.description) for a in mine]
        rows = [o for o in fold.outputs.values() if o.user == user]
        for o in rows:
            category = fold.category(o)
            explain[f"{user} {o.txid}:{o.vout}"] = (category == "spendable", category)
        for basket in [None, *fold.baskets_of(user)]:
            chosen = [o for o in rows if basket is None or o.basket == basket]
            for spendable in (True, False, None):
                listed = []
                for o in chosen:
                    category = fold.category(o)
                    is_spendable = category == OutputCategory.SPENDABLE.value
                    wanted = is_spendable if spendable is True else fold.listed(o) and (
                        spendable is None or not is_spendable)
                    if wanted:
                        listed.append(output_tuple(
                            o.txid, o.vout, o.satoshis, o.basket, o.tags, is_spendable, o.change,
                            fold.txs[o.txid].is_coinbase, category, o.custom_instructions))
                outputs[f"{user} {basket} {spendable}"] = sorted(listed)
            balances[f"{user} {basket}"] = fold.balance(user, basket)
    return {"tip": tip, "txs": txs, "actions": actions, "outputs": outputs,
            "balances": balances, "explain": explain}


def differences(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """A readable list of what differs (per section and key), for assertion messages."""
    out = []
    for section in sorted(want.keys() | got.keys()):
        a, b = want.get(section), got.get(section)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(a.keys() | b.keys(), key=repr):
                if a.get(key) != b.get(key):
                    out.append(f"{section}[{key}]: expected {a.get(key)!r}, got {b.get(key)!r}")
        else:
            out.append(f"{section}: expected {a!r}, got {b!r}")
    return out
