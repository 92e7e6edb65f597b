"""The event -> row projector: one code path for inline, catch-up, rebuild and as-of replay.

:func:`apply_recorded` is a pure function of (rows it reads through a :class:`RowStore`, one
event as :data:`Recorded`: its position, topic, fields and ISO time): it decides row changes and
hands them back to the store. Replays read events in that shape straight from the log; the
inline hook makes it from its event objects (:func:`recorded`). Stores decide where rows live
(memory for rebuilds and replays, SQL for inline and catch-up). The spendability of every output row is
recomputed by :func:`ledger.rules.classify` whenever one of its inputs changes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ledger.action import own_outputs, satoshis_delta
from ledger.rules import (
    OutputCategory,
    OutputFacts,
    classify,
    matures_at_height,
    outputs_unaffected,
    preserved_on_entry,
)
from ledger.status import (
    PRESERVING_STATES,
    ProcessingStatus,
    action_status,
    actions_unaffected,
)
from projections.schema import balance_columns

Row = dict[str, Any]
Fields = Mapping[str, Any]
"""An event's fields, as ``vars(event)`` or as stored (:meth:`EventLog.read_fields`)."""
S = ProcessingStatus
_state: Callable[[str], ProcessingStatus] = {s.value: s for s in S}.__getitem__
"""A stored state's status (a dict lookup: ``S(value)`` goes through the enum machinery, a
microsecond a call on this path)."""

_BASE_FIELDS = frozenset({"originator_id", "originator_version", "timestamp", "originator_topic",
                          "txid", "user", "reference", "from_state", "to_state"})
"""Event fields an audit row holds in columns of its own, not again in ``details_json``."""
_BULKY_FIELDS = frozenset({"raw_tx", "bump", "input_beef"})


class RowStore(Protocol):
    """Where projected rows live. ``get`` returns a row the projector may change, then ``put``;
    ``add`` adds to the numeric columns of a summary row (created at zero if missing).

    The projector changes a row by assigning new values to its keys, never by mutating a value
    in place (``row["tags"] = [*row["tags"], t]``, not ``row["tags"].append(t)``): stores rely
    on it to see which columns changed."""

    def get(self, table: str, key: tuple[Any, ...]) -> Row | None: ...
    def put(self, table: str, row: Row) -> None: ...
    def append(self, table: str, row: Row) -> None: ...
    def add(self, table: str, key: tuple[Any, ...], deltas: dict[str, int]) -> None: ...
    def outputs_of_tx(self, txid: str) -> list[Row]: ...
    def outputs_at(self, txid: str, vout: int) -> list[Row]: ...
    def actions_of_tx(self, txid: str) -> list[Row]: ...
    def maturing_coinbase(self, lo_exclusive: int, hi_inclusive: int) -> list[Row]: ...


Handler = Callable[[RowStore, int, Fields, str], None]
"""``handler(store, position, fields, at)``: one event's row changes, from its fields and its
timestamp as ISO text."""


# --- helpers --------------------------------------------------------------------------------

def meta_value(store: RowStore, name: str) -> int | None:
    row = store.get("meta", (name,))
    return None if row is None or row["value"] is None else int(row["value"])


def _set_meta(store: RowStore, name: str, value: int | None) -> None:
    store.put("meta", {"name": name, "value": value})


def tip_height(store: RowStore) -> int | None:
    return meta_value(store, "tip_height")


def output_facts(row: Row, state: str) -> OutputFacts:
    """The spendability rule's inputs: an output row, and the state of its transaction (which
    the row does not hold: a state change that leaves an output's category alone writes no
    output row)."""
    return OutputFacts(
        state=_state(state),
        is_coinbase=bool(row["is_coinbase"]),
        matures_at_height=row["matures_at_height"],
        script_known=row["locking_script"] is not None,
        reserved=row["spender_reference"] is not None and row["spender_txid"] is None,
        spent=row["spender_txid"] is not None,
        quarantined=bool(row["quarantined"]),
        preserved_spendable=row["preserved"],
    )


def _tx_state(store: RowStore, txid: str) -> str:
    tx = store.get("transactions", (txid,))
    assert tx is not None, f"output of unknown transaction {txid}"
    return str(tx["state"])


def _refresh(store: RowStore, row: Row, position: int, tip: int | None, state: str) -> None:
    """Classify a changed output row (its transaction in ``state``) and write it."""
    _store_output(store, row, position, classify(output_facts(row, state), tip))


def _store_output(store: RowStore, row: Row, position: int, category: OutputCategory) -> None:
    """Write a changed output row in ``category``, moving its value between balance buckets."""
    before = row["category"]
    if before != category.value:
        satoshis, outputs = balance_columns(category.value)
        deltas = {satoshis: row["satoshis"], outputs: 1}
        if before:
            satoshis, outputs = balance_columns(before)
            deltas.update({satoshis: -row["satoshis"], outputs: -1})
        store.add("balances", (row["user"], row["basket"]), deltas)
    row["category"] = category.value
    row["spendable"] = category is OutputCategory.SPENDABLE
    row["position"] = position
    store.put("outputs", row)


def _evidence(row: Row, what: str, position: int) -> None:
    row["evidence"] = {**row["evidence"], what: position}


def _iso(event: Any) -> str:
    """The event's timestamp as ISO text."""
    return str(event.timestamp.isoformat())


_AUDIT_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
"""Per topic: the fields an audit row keeps in ``details_json``, and the bulky ones among them
it records by size only (every event of a topic has the same fields)."""


def _audit_fields(topic: str, fields: Mapping[str, Any]
                  ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    found = _AUDIT_FIELDS.get(topic)
    if found is None:
        kept = tuple(sorted(fields.keys() - _BASE_FIELDS))
        found = _AUDIT_FIELDS[topic] = (kept, tuple(f for f in kept if f in _BULKY_FIELDS))
    return found


def audit_row(position: int, topic: str, fields: Mapping[str, Any], at: str,
              action_txid: ActionTxid) -> Row:
    """The ``tx_audit`` row of one event, from its topic, its fields and its timestamp as ISO
    text: what it is, whom it concerns, and its fields (bulky ones by size only). A function
    of the event alone, except for the txid of an action's abort or retake, which
    ``action_txid`` answers from the action's earlier events. ``fields`` may leave out the
    originator's id and version and the timestamp (no audit column holds them)."""
    name, subject = AUDITS[topic]
    kept, bulky_fields = _audit_fields(topic, fields)
    details = {k: fields[k] for k in kept}
    for bulky in bulky_fields:
        value = details.pop(bulky)
        if value is not None:
            details[f"{bulky}_bytes"] = len(value) // 2
    return {"audit_id": position, "txid": None, "user": None, "reference": None, "event": name,
            "from_state": None, "to_state": None, **subject(fields, action_txid),
            "details_json": details, "created_at": at}


def _outpoint(text: str) -> tuple[str, int]:
    txid, _, vout = text.partition(":")
    return txid, int(vout)


# --- transaction events ---------------------------------------------------------------------

def _tx_created(store: RowStore, pos: int, e: Fields, at: str) -> None:
    store.put("transactions", {
        "txid": e["txid"], "state": e["state"], "attempts": 0, "was_broadcast": False,
        "is_coinbase": e["is_coinbase"], "height": None, "block_hash": None, "merkle_root": None,
        "raw_tx": bytes.fromhex(e["raw_tx"]), "inputs": list(e["inputs"]),
        "origin_user": e["origin_user"], "origin_reference": e["origin_reference"],
        "position": pos, "state_position": pos, "proof_position": None,
        "created_at": at, "updated_at": at,
    })


def _tx_row(store: RowStore, txid: str, pos: int, at: str) -> Row:
    row = store.get("transactions", (txid,))
    assert row is not None, f"event for unknown transaction {txid}"
    row["position"] = pos
    row["updated_at"] = at
    return row


def _processing_changed(store: RowStore, pos: int, e: Fields, at: str) -> None:
    tx = _tx_row(store, e["txid"], pos, at)
    assert tx["state"] == e["from_state"], (tx["state"], e["from_state"])
    tx["state"] = e["to_state"]
    tx["state_position"] = pos
    store.put("transactions", tx)
    to_state, tip = _state(e["to_state"]), tip_height(store)
    for row in ([] if outputs_unaffected(_state(e["from_state"]), to_state)
                else store.outputs_of_tx(e["txid"])):
        preserved = (preserved_on_entry(output_facts(row, e["from_state"]), to_state, tip)
                     if to_state in PRESERVING_STATES else None)
        moved = preserved != row["preserved"]
        if moved:
            row["preserved"] = preserved
        category = classify(output_facts(row, e["to_state"]), tip)
        if moved or category.value != row["category"]:  # else the row holds nothing it changes
            _store_output(store, row, pos, category)
    from_state = _state(e["from_state"])
    for action in ([] if actions_unaffected(from_state, to_state)
                   else store.actions_of_tx(e["txid"])):
        action["status"] = action_status(to_state, aborted=bool(action["aborted"]))
        action["position"] = pos
        store.put("actions", action)


def _transition_rejected(store: RowStore, pos: int, e: Fields, at: str) -> None:
    store.put("transactions", _tx_row(store, e["txid"], pos, at))


def _provider_result(store: RowStore, pos: int, e: Fields, at: str) -> None:
    tx = _tx_row(store, e["txid"], pos, at)
    if e["status"] in ("success", "seen"):
        tx["was_broadcast"] = True
    store.put("transactions", tx)


def _attempts(store: RowStore, pos: int, e: Fields, at: str) -> None:
    tx = _tx_row(store, e["txid"], pos, at)
    tx["attempts"] = e["attempts"]
    store.put("transactions", tx)


def _set_proof(store: RowStore, pos: int, e: Fields, at: str,
               proof: tuple[int, str | None, str] | None) -> None:
    tx = _tx_row(store, e["txid"], pos, at)
    tx["height"], tx["block_hash"], tx["merkle_root"] = proof or (None, None, None)
    tx["proof_position"] = pos
    store.put("transactions", tx)
    if not tx["is_coinbase"]:
        return
    tip = tip_height(store)
    for row in store.outputs_of_tx(e["txid"]):
        row["matures_at_height"] = matures_at_height(proof[0]) if proof else None
        _evidence(row, "proof", pos)
        _refresh(store, row, pos, tip, tx["state"])


def _proof_recorded(store: RowStore, pos: int, e: Fields, at: str) -> None:
    _set_proof(store, pos, e, at, (e["height"], e["block_hash"], e["merkle_root"]))


def _proof_invalidated(store: RowStore, pos: int, e: Fields, at: str) -> None:
    _set_proof(store, pos, e, at, None)


def _note(store: RowStore, pos: int, e: Fields, at: str) -> None:
    store.put("transactions", _tx_row(store, e["txid"], pos, at))


# --- action events --------------------------------------------------------------------------

def _action_row(store: RowStore, e: Fields, pos: int) -> Row:
    row = store.get("actions", (e["user"], e["reference"]))
    assert row is not None, f"event for unknown action {e['user']}/{e['reference']}"
    row["position"] = pos
    return row


def _action_created(store: RowStore, pos: int, e: Fields, at: str) -> None:
    own = satoshis_delta(e["outputs"], ())
    store.put("actions", {
        "user": e["user"], "reference": e["reference"], "txid": None,
        "status": action_status(None), "description": e["description"], "satoshis_delta": own,
        "is_outgoing": e["is_outgoing"], "aborted": False, "labels": list(e["labels"]),
        "inputs": [], "outputs": list(e["outputs"]), "position": pos, "created_position": pos,
    })
    for label in e["labels"]:
        store.append("action_labels", {"user": e["user"], "label": label,
                                       "reference": e["reference"], "created_position": pos})


def _spent_rows(store: RowStore, outpoints: Iterable[str]) -> list[Row]:
    """Every user's output rows of these outpoints: an outpoint two users hold is two rows,
    and its reservation, spend or quarantine shows on both (SPEC 4: any live spender)."""
    rows = []
    for text in outpoints:
        txid, vout = _outpoint(text)
        rows += store.outputs_at(txid, vout)
    return rows


def _spends(row: Row, e: Fields) -> bool:
    """The row's spender is this event's action."""
    return bool(row["spender_user"] == e["user"] and row["spender_reference"] == e["reference"])


def _inputs_reserved(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    action["inputs"] = [*action["inputs"], *(i["outpoint"] for i in e["inputs"])]
    action["satoshis_delta"] -= sum(int(i["satoshis"]) for i in e["inputs"])
    store.put("actions", action)
    tip = tip_height(store)
    for row in _spent_rows(store, (i["outpoint"] for i in e["inputs"])):
        row["spender_user"], row["spender_reference"] = e["user"], e["reference"]
        _evidence(row, "spender", pos)
        _refresh(store, row, pos, tip, _tx_state(store, row["txid"]))


def _new_output_row(user: str, txid: str, out: dict[str, Any], tx: Row, pos: int) -> Row:
    proof_height = tx["height"]
    script = out.get("locking_script")
    return {
        "user": user, "txid": txid, "vout": int(out["vout"]), "satoshis": int(out["satoshis"]),
        "locking_script": bytes.fromhex(script) if script is not None else None,
        "basket": out["basket"], "tags": list(out.get("tags", [])),
        "change": bool(out.get("change", False)), "description": out.get("description", ""),
        "custom_instructions": out.get("custom_instructions"),
        "is_coinbase": bool(tx["is_coinbase"]),
        "matures_at_height": (matures_at_height(proof_height)
                              if tx["is_coinbase"] and proof_height is not None else None),
        "preserved": None, "spender_user": None, "spender_reference": None,
        "spender_txid": None, "quarantined": False, "category": "", "spendable": False,
        "evidence": {"created": pos}, "position": pos,
    }


def _add_outputs(store: RowStore, pos: int, user: str, txid: str,
                 outputs: Iterable[dict[str, Any]]) -> None:
    tx = store.get("transactions", (txid,))
    assert tx is not None, f"outputs for unknown transaction {txid}"
    tip = tip_height(store)
    for out in outputs:
        vout = int(out["vout"])
        if store.get("outputs", (user, txid, vout)) is None:
            row = _new_output_row(user, txid, out, tx, pos)
            _inherit_spender(row, store.outputs_at(txid, vout))
            _refresh(store, row, pos, tip, tx["state"])
            for tag in dict.fromkeys(out.get("tags", ())):
                store.append("output_tags", {"user": user, "tag": tag, "txid": txid,
                                             "vout": vout})


def _inherit_spender(row: Row, others: list[Row]) -> None:
    """A user's new row of an outpoint other users already hold shows its spender too (the
    other rows agree on it: every change of it goes to all of them)."""
    for other in others:
        if other["spender_reference"] is not None or other["quarantined"]:
            for column in ("spender_user", "spender_reference", "spender_txid", "quarantined"):
                row[column] = other[column]
            for what in ("spender", "quarantine"):
                if what in other["evidence"]:
                    _evidence(row, what, other["evidence"][what])
            return


def _action_signed(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    tx = store.get("transactions", (e["txid"],))
    assert tx is not None
    action["txid"] = e["txid"]
    action["status"] = action_status(_state(tx["state"]))
    store.put("actions", action)
    _add_outputs(store, pos, e["user"], e["txid"], own_outputs(action["outputs"]))
    tip = tip_height(store)
    for row in _spent_rows(store, action["inputs"]):
        if _spends(row, e):
            row["spender_txid"] = e["txid"]
            _evidence(row, "spender", pos)
            _refresh(store, row, pos, tip, _tx_state(store, row["txid"]))


def _release(store: RowStore, pos: int, e: Fields, outpoints: Iterable[str]) -> None:
    tip = tip_height(store)
    for row in _spent_rows(store, outpoints):
        if _spends(row, e):
            row["spender_user"] = row["spender_reference"] = row["spender_txid"] = None
            row["quarantined"] = False
            _evidence(row, "spender", pos)
            _refresh(store, row, pos, tip, _tx_state(store, row["txid"]))


def _action_aborted(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    action["aborted"] = True
    action["status"] = action_status(None, aborted=True)
    store.put("actions", action)
    _release(store, pos, e, e["released"])


def _inputs_released(store: RowStore, pos: int, e: Fields, at: str) -> None:
    _release(store, pos, e, e["outpoints"])


def _inputs_quarantined(store: RowStore, pos: int, e: Fields, at: str) -> None:
    tip = tip_height(store)
    for row in _spent_rows(store, e["outpoints"]):
        row["quarantined"] = True
        _evidence(row, "quarantine", pos)
        _refresh(store, row, pos, tip, _tx_state(store, row["txid"]))


def _inputs_retaken(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    store.put("actions", action)
    tip = tip_height(store)
    for row in _spent_rows(store, e["outpoints"]):
        row["spender_user"], row["spender_reference"] = e["user"], e["reference"]
        row["spender_txid"] = action["txid"]
        row["quarantined"] = False
        _evidence(row, "spender", pos)
        _refresh(store, row, pos, tip, _tx_state(store, row["txid"]))


def _outputs_internalized(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    tx = store.get("transactions", (e["txid"],))
    assert tx is not None
    action["txid"] = e["txid"]
    action["status"] = action_status(_state(tx["state"]))
    action["satoshis_delta"] += satoshis_delta(e["outputs"], ())
    action["outputs"] = [*action["outputs"], *e["outputs"]]
    store.put("actions", action)
    _add_outputs(store, pos, e["user"], e["txid"], e["outputs"])


def _labels_added(store: RowStore, pos: int, e: Fields, at: str) -> None:
    action = _action_row(store, e, pos)
    action["labels"] = [*action["labels"], *e["labels"]]
    store.put("actions", action)
    for label in e["labels"]:
        store.append("action_labels", {"user": e["user"], "label": label,
                                       "reference": e["reference"],
                                       "created_position": action["created_position"]})


# --- chain events ---------------------------------------------------------------------------

def _move_tip(store: RowStore, pos: int, new_tip: int | None) -> None:
    old_tip = tip_height(store)
    _set_meta(store, "tip_height", new_tip)
    lo, hi = sorted((-1 if old_tip is None else old_tip, -1 if new_tip is None else new_tip))
    for row in store.maturing_coinbase(lo, hi):
        _evidence(row, "tip", pos)
        _refresh(store, row, pos, new_tip, _tx_state(store, row["txid"]))


def _block_connected(store: RowStore, pos: int, e: Fields, at: str) -> None:
    store.put("headers", {"hash": e["hash"], "height": e["height"], "prev_hash": e["prev_hash"],
                          "merkle_root": e["merkle_root"], "active": True, "position": pos})
    _move_tip(store, pos, e["height"])


def _block_disconnected(store: RowStore, pos: int, e: Fields, at: str) -> None:
    store.put("headers", {"hash": e["hash"], "height": e["height"], "prev_hash": e["prev_hash"],
                          "merkle_root": e["merkle_root"], "active": False, "position": pos})
    _move_tip(store, pos, e["height"] - 1)


def _no_rows(store: RowStore, pos: int, e: Fields, at: str) -> None:
    """Events only the audit table shows."""


HANDLERS: dict[str, Handler] = {
    "ledger.transaction.TransactionCreated": _tx_created,
    "ledger.transaction.ProcessingChanged": _processing_changed,
    "ledger.transaction.TransitionRejected": _transition_rejected,
    "ledger.transaction.ProviderResultRecorded": _provider_result,
    "ledger.transaction.AttemptsIncremented": _attempts,
    "ledger.transaction.ProofRecorded": _proof_recorded,
    "ledger.transaction.ProofInvalidated": _proof_invalidated,
    "ledger.transaction.NoteRecorded": _note,
    "ledger.action.ActionCreated": _action_created,
    "ledger.action.InputsReserved": _inputs_reserved,
    "ledger.action.ActionSigned": _action_signed,
    "ledger.action.ActionAborted": _action_aborted,
    "ledger.action.OutputsInternalized": _outputs_internalized,
    "ledger.action.InputsReleased": _inputs_released,
    "ledger.action.InputsQuarantined": _inputs_quarantined,
    "ledger.action.InputsRetaken": _inputs_retaken,
    "ledger.action.LabelsAdded": _labels_added,
    "ledger.chain.ChainStarted": _no_rows,
    "ledger.chain.BlockConnected": _block_connected,
    "ledger.chain.BlockDisconnected": _block_disconnected,
    "ledger.reservation.OutpointReserved": _no_rows,
    "ledger.reservation.OutpointRetaken": _no_rows,
    "ledger.reservation.OutpointReleased": _no_rows,
    "ledger.reservation.OutpointQuarantined": _no_rows,
    "ledger.idempotency.KeyUsed": _no_rows,
}


AUDIT_ONLY_TOPICS = frozenset(t for t, handler in HANDLERS.items() if handler is _no_rows)
"""Events that change no table but ``tx_audit`` (a fold without audit rows need not decode them)."""

ActionTxid = Callable[[str, str], str | None]
"""``action_txid(user, reference)``: the txid an action signed or internalized, if any."""
Subject = Callable[[Fields, ActionTxid], dict[str, Any]]


def _tx(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"txid": f["txid"]}


def _tx_move(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"txid": f["txid"], "from_state": f["from_state"], "to_state": f["to_state"]}


def _tx_created_subject(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"txid": f["txid"], "user": f["origin_user"], "reference": f["origin_reference"],
            "to_state": f["state"]}


def _action(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"user": f["user"], "reference": f["reference"]}


def _action_tx(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"txid": f["txid"], "user": f["user"], "reference": f["reference"]}


def _action_earlier_tx(f: Fields, action_txid: ActionTxid) -> dict[str, Any]:
    return {"txid": action_txid(f["user"], f["reference"]), "user": f["user"],
            "reference": f["reference"]}


def _nobody(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {}


def _outpoint_tx(f: Fields, _: ActionTxid) -> dict[str, Any]:
    return {"txid": _outpoint(f["outpoint"])[0]}


AUDITS: dict[str, tuple[str, Subject]] = {
    "ledger.transaction.TransactionCreated": ("transaction.created", _tx_created_subject),
    "ledger.transaction.ProcessingChanged": ("processing.changed", _tx_move),
    "ledger.transaction.TransitionRejected": ("processing.rejected", _tx_move),
    "ledger.transaction.ProviderResultRecorded": ("broadcast.result", _tx),
    "ledger.transaction.AttemptsIncremented": ("attempts.incremented", _tx),
    "ledger.transaction.ProofRecorded": ("proof.recorded", _tx),
    "ledger.transaction.ProofInvalidated": ("proof.invalidated", _tx),
    "ledger.transaction.NoteRecorded": ("history.note", _tx),
    "ledger.action.ActionCreated": ("action.created", _action),
    "ledger.action.InputsReserved": ("action.inputs_reserved", _action),
    "ledger.action.ActionSigned": ("action.signed", _action_tx),
    "ledger.action.ActionAborted": ("action.aborted", _action_earlier_tx),
    "ledger.action.OutputsInternalized": ("action.internalized", _action_tx),
    "ledger.action.InputsReleased": ("action.inputs_released", _action),
    "ledger.action.InputsQuarantined": ("action.inputs_quarantined", _action),
    "ledger.action.InputsRetaken": ("action.inputs_retaken", _action_earlier_tx),
    "ledger.action.LabelsAdded": ("action.labels_added", _action),
    "ledger.chain.ChainStarted": ("chain.started", _nobody),
    "ledger.chain.BlockConnected": ("chain.block_connected", _nobody),
    "ledger.chain.BlockDisconnected": ("chain.block_disconnected", _nobody),
    "ledger.reservation.OutpointReserved": ("reservation.reserved", _outpoint_tx),
    "ledger.reservation.OutpointRetaken": ("reservation.reserved", _outpoint_tx),
    "ledger.reservation.OutpointReleased": ("reservation.released", _outpoint_tx),
    "ledger.reservation.OutpointQuarantined": ("reservation.quarantined", _outpoint_tx),
    "ledger.idempotency.KeyUsed": ("idempotency.key_used", _nobody),
}
"""Per topic: the audit row's event name, and whom the event concerns."""
assert AUDITS.keys() == HANDLERS.keys(), "every projected event has an audit row"

ACTION_TXID_TOPICS = frozenset({"ledger.action.ActionSigned", "ledger.action.OutputsInternalized"})
"""Events whose ``txid`` becomes their action's txid (their handlers set ``actions.txid``)."""


class AuditFold:
    """Audit rows of a log read in order, without the other tables: the one fact an audit row
    takes from earlier events (an action's txid) is kept here. Used to load ``tx_audit`` beside
    the rest of a rebuild, from the events' stored fields; :func:`apply_recorded` makes the same
    rows, taking that txid from the action rows."""

    def __init__(self) -> None:
        self._txids: dict[tuple[str, str], str] = {}

    def row(self, position: int, topic: str, fields: Fields, at: str) -> Row:
        if topic in ACTION_TXID_TOPICS:
            self._txids[(fields["user"], fields["reference"])] = fields["txid"]
        return audit_row(position, topic, fields, at, self._action_txid)

    def _action_txid(self, user: str, reference: str) -> str | None:
        return self._txids.get((user, reference))


def _stored_action_txid(store: RowStore) -> ActionTxid:
    def action_txid(user: str, reference: str) -> str | None:
        row = store.get("actions", (user, reference))
        return None if row is None else row["txid"]
    return action_txid


Recorded = tuple[int, str, Fields, str]
"""One event as the projector reads it: ``(position, topic, fields, timestamp as ISO text)``.
Replays read it straight from the stored state (no event object); the inline hook makes it
from the event objects it was given (:func:`recorded`)."""


def recorded(position: int, event: Any) -> Recorded:
    """An event object as the projector reads it."""
    return position, type(event).TOPIC, vars(event), _iso(event)


def apply_recorded(store: RowStore, item: Recorded, *, audit: bool = True) -> None:
    """Apply one event at its log position, without recording the position (a batch records
    its last one, see :func:`project_batch`). Unknown topics are an error, never skipped.
    ``audit=False`` leaves out its ``tx_audit`` row (a rebuild loads those beside the rest,
    see :class:`AuditFold`)."""
    position, topic, fields, at = item
    handler = HANDLERS.get(topic)
    if handler is None:
        raise KeyError(f"no projection for event topic {topic!r}")
    handler(store, position, fields, at)
    if audit:
        store.append("tx_audit", audit_row(position, topic, fields, at,
                                           _stored_action_txid(store)))


def project_batch(store: RowStore, items: Iterable[Recorded], *, audit: bool = True) -> int:
    """Apply events in log order; returns how many. The tracked position is the newest audit
    row (every event has one, at its position: ADR 0012), so nothing else records it."""
    count = 0
    for item in items:
        apply_recorded(store, item, audit=audit)
        count += 1
    return count


@dataclass
class ReadPlan:
    """The rows a batch of events will read, known before projecting it, so that a SQL store can
    fetch them in a few round trips. A plan may miss rows (the store then reads them one by one)
    or name rows that do not exist (the store then knows they are new)."""

    keys: dict[str, set[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(set))
    """Exact primary keys per table."""
    txids: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    """Per table (``outputs``, ``actions``): transactions whose rows of it are wanted."""
    new_keys: dict[str, set[tuple[Any, ...]]] = field(default_factory=lambda: defaultdict(set))
    """Rows that cannot exist yet: their stream starts in this batch."""
    new_txids: set[str] = field(default_factory=set)
    """Transactions created in this batch: no output or action row names them yet."""
    outpoint_rows: set[tuple[str, int]] = field(default_factory=set)
    """Outpoints whose output rows of every user are wanted (a spender shows on all of them)."""

    def outpoints(self, outpoints: Iterable[str]) -> None:
        """Every user's output rows of these outpoints, and the rows of their transactions
        (whose state classifies them)."""
        for text in outpoints:
            txid, vout = _outpoint(text)
            self.outpoint_rows.add((txid, vout))
            self.keys["transactions"].add((txid,))


_OUTPUTS_WANTED = frozenset({"ledger.transaction.ProofRecorded",
                             "ledger.transaction.ProofInvalidated",
                             "ledger.action.ActionSigned"})
"""Events whose handler reads the output rows of their transaction (besides state changes
that may affect outputs, see :func:`ledger.rules.outputs_unaffected`)."""


def read_plan(items: Sequence[Recorded]) -> ReadPlan:
    """What :func:`apply_recorded` will read for ``items`` (the handlers' reads, listed
    ahead)."""
    plan = ReadPlan()
    plan.keys["meta"].add(("tip_height",))
    created_inputs = {e["txid"]: e["inputs"] for _, topic, e, _ in items
                      if topic == "ledger.transaction.TransactionCreated"}
    for _, topic, e, _ in items:
        txid = e.get("txid")
        if topic.startswith("ledger.transaction."):
            plan.keys["transactions"].add((txid,))
        elif topic.startswith("ledger.action."):
            plan.keys["actions"].add((e["user"], e["reference"]))
            if txid is not None:
                plan.keys["transactions"].add((txid,))
        if topic == "ledger.transaction.ProcessingChanged":
            before, after = _state(e["from_state"]), _state(e["to_state"])
            if not actions_unaffected(before, after):
                plan.txids["actions"].add(str(txid))
            if not outputs_unaffected(before, after):
                plan.txids["outputs"].add(str(txid))
        elif topic in _OUTPUTS_WANTED:
            plan.txids["outputs"].add(str(txid))
        if topic == "ledger.transaction.TransactionCreated":
            plan.new_txids.add(e["txid"])
            plan.new_keys["transactions"].add((e["txid"],))
        elif topic == "ledger.action.ActionCreated":
            plan.new_keys["actions"].add((e["user"], e["reference"]))
        if topic == "ledger.transaction.ProofRecorded":
            if e["block_hash"] is not None:  # None: a chain tracker's proof (ADR 0008)
                plan.keys["headers"].add((e["block_hash"],))
        elif topic == "ledger.action.InputsReserved":
            plan.outpoints(i["outpoint"] for i in e["inputs"])
        elif topic == "ledger.action.ActionSigned":
            plan.outpoints(created_inputs.get(e["txid"], ()))
        elif topic == "ledger.action.ActionAborted":
            plan.outpoints(e["released"])
        elif topic in ("ledger.action.InputsReleased", "ledger.action.InputsQuarantined",
                       "ledger.action.InputsRetaken"):
            plan.outpoints(e["outpoints"])
        elif topic == "ledger.action.OutputsInternalized":
            plan.outpoint_rows.update((e["txid"], int(o["vout"])) for o in e["outputs"])
    return plan


