"""Read queries over the projection views (SQLAlchemy Core). The same functions serve the live
database and as-of scratch databases, so an incident replay answers with the same code."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, false, func, select, text, true

from ledger.rules import LISTED_CATEGORIES, OutputCategory
from ledger.status import ProcessingStatus
from ledger.views import (
    ActionView,
    AuditEntry,
    Balance,
    Explanation,
    OutputView,
    Page,
    TransactionView,
)
from projections.schema import (
    FREQUENT_AUDIT_EVENTS,
    RARE_AUDIT_EVENT,
    balance_columns,
    build_schema,
)
from projections.stores import decode_row

VIEWS = build_schema("")
"""Table objects named like the reader views (``outputs``, ``tx_audit``, ...)."""
MAX_PAGE_ITEMS = 1_000
MAX_HISTORY_ROWS = 100_000

_OUT, _TX, _ACT = VIEWS.table("outputs"), VIEWS.table("transactions"), VIEWS.table("actions")
_LABELS, _AUDIT = VIEWS.table("action_labels"), VIEWS.table("tx_audit")
_HEADERS, _META = VIEWS.table("headers"), VIEWS.table("meta")
_BAL, _TAGS = VIEWS.table("balances"), VIEWS.table("output_tags")
_LISTED = sorted(c.value for c in LISTED_CATEGORIES)


def _decode(row: Any, table: Any) -> dict[str, Any]:
    cols = [c.name for c in table.columns]
    return decode_row(tuple(row), cols)


_OUTPUT_VIEW_COLS = ("user", "txid", "vout", "satoshis", "basket", "tags", "spendable", "change",
                     "is_coinbase", "locking_script", "custom_instructions", "category")
_ACTION_VIEW_COLS = ("user", "reference", "txid", "status", "description", "satoshis_delta",
                     "is_outgoing", "labels")
"""What the views show: a page reads these columns only (not the evidence, the declared
outputs, ... a row also holds), and builds views from values the database already typed."""


def meta(conn: Connection, name: str) -> int | None:
    value = conn.execute(select(_META.c.value).where(_META.c.name == name)).scalar()
    return None if value is None else int(value)


def get_transaction(conn: Connection, txid: str) -> TransactionView | None:
    row = conn.execute(select(_TX).where(_TX.c.txid == txid)).first()
    if row is None:
        return None
    r = _decode(row, _TX)
    return TransactionView(
        txid=r["txid"], state=ProcessingStatus(r["state"]), attempts=r["attempts"],
        was_broadcast=r["was_broadcast"], is_coinbase=r["is_coinbase"], height=r["height"],
        block_hash=r["block_hash"], merkle_root=r["merkle_root"], raw_tx=r["raw_tx"],
        position=r["position"])


def _output_view(r: dict[str, Any], include_script: bool) -> OutputView:
    return OutputView.from_stored({
        "user": r["user"], "txid": r["txid"], "vout": r["vout"], "satoshis": r["satoshis"],
        "basket": r["basket"], "tags": r["tags"], "spendable": r["spendable"],
        "change": r["change"], "is_coinbase": r["is_coinbase"],
        "locking_script": r["locking_script"] if include_script else None,
        "custom_instructions": r["custom_instructions"], "category": r["category"]})


def outputs_where(user: str, *, basket: str | None, tags: Sequence[str] = (),
                  tag_mode: str = "any", spendable: bool | None = True) -> ColumnElement[bool]:
    """The filter of :func:`list_outputs` (also used to EXPLAIN the hot query)."""
    cond = [_OUT.c.user == user]
    if basket is not None:
        cond.append(_OUT.c.basket == basket)
    if spendable is True:
        cond.append(_OUT.c.spendable == true())
    else:
        cond.append(_OUT.c.category.in_(_LISTED))
        if spendable is False:
            cond.append(_OUT.c.spendable == false())
    if tags:
        wanted = sorted(set(tags))
        tagged = (select(func.count()).select_from(_TAGS)
                  .where(and_(_TAGS.c.user == _OUT.c.user, _TAGS.c.txid == _OUT.c.txid,
                              _TAGS.c.vout == _OUT.c.vout, _TAGS.c.tag.in_(wanted)))
                  .scalar_subquery())
        cond.append(tagged == len(wanted) if tag_mode == "all" else tagged > 0)
    return and_(*cond)


def outputs_page(where: ColumnElement[bool], *, limit: int, offset: int) -> Select[Any]:
    """Largest first; the order matches the hot index so no sort step is needed."""
    return (select(*(_OUT.c[c] for c in _OUTPUT_VIEW_COLS)).where(where)
            .order_by(_OUT.c.satoshis.desc(), _OUT.c.txid.desc(), _OUT.c.vout.desc())
            .limit(limit).offset(offset))


def list_outputs(conn: Connection, user: str, *, basket: str | None, tags: Sequence[str],
                 tag_mode: str, spendable: bool | None, include_locking_scripts: bool,
                 limit: int, offset: int) -> Page[OutputView]:
    """Outputs of a user; ``spendable=True`` is the hot path: an index range scan by satoshis."""
    where = outputs_where(user, basket=basket, tags=tags, tag_mode=tag_mode, spendable=spendable)
    if tags:
        total = int(conn.execute(select(func.count()).select_from(_OUT).where(where)).scalar() or 0)
    else:
        total = _counted(conn, user, basket, spendable)
    rows = [decode_row(tuple(r), _OUTPUT_VIEW_COLS)
            for r in conn.execute(outputs_page(where, limit=limit, offset=offset)).all()]
    return Page[OutputView].model_construct(
        items=[_output_view(r, include_locking_scripts) for r in rows], total=total)


def _counted(conn: Connection, user: str, basket: str | None, spendable: bool | None) -> int:
    """How many outputs :func:`outputs_where` (without tags) matches, from ``balances``."""
    if spendable is True:
        wanted = [OutputCategory.SPENDABLE.value]
    else:
        wanted = [c for c in _LISTED if spendable is None or c != OutputCategory.SPENDABLE.value]
    cond = [_BAL.c.user == user]
    if basket is not None:
        cond.append(_BAL.c.basket == basket)
    count = sum((_BAL.c[balance_columns(c)[1]] for c in wanted[1:]), _BAL.c[balance_columns(wanted[0])[1]])
    return int(conn.execute(select(func.sum(count)).where(and_(*cond))).scalar() or 0)


def _action_view(r: dict[str, Any]) -> ActionView:
    return ActionView.from_stored({
        "user": r["user"], "reference": r["reference"], "txid": r["txid"],
        "status": r["status"], "description": r["description"],
        "satoshis_delta": r["satoshis_delta"], "is_outgoing": r["is_outgoing"],
        "labels": r["labels"]})


def _action_page(conn: Connection, query: Select[Any], total: int) -> Page[ActionView]:
    items = [_action_view(decode_row(tuple(r), _ACTION_VIEW_COLS))
             for r in conn.execute(query).all()]
    return Page[ActionView].model_construct(items=items, total=total)


_ACTION_SELECT = tuple(_ACT.c[c] for c in _ACTION_VIEW_COLS)


def get_action(conn: Connection, user: str, reference: str) -> ActionView | None:
    row = conn.execute(select(*_ACTION_SELECT).where(and_(
        _ACT.c.user == user, _ACT.c.reference == reference))).first()
    return None if row is None else _action_view(decode_row(tuple(row), _ACTION_VIEW_COLS))


def list_actions(conn: Connection, user: str, *, labels: list[str], label_mode: str,
                 statuses: list[str], limit: int, offset: int) -> Page[ActionView]:
    """Actions of a user, newest first; label filters go through the ``action_labels`` index."""
    if len(set(labels)) == 1:
        return _labelled_actions(conn, user, labels[0], statuses=statuses, limit=limit,
                                 offset=offset)
    cond = [_ACT.c.user == user]
    if statuses:
        cond.append(_ACT.c.status.in_(statuses))
    if labels:
        refs = (select(_LABELS.c.reference)
                .where(and_(_LABELS.c.user == user, _LABELS.c.label.in_(labels)))
                .group_by(_LABELS.c.reference))
        if label_mode == "all":
            refs = refs.having(func.count(func.distinct(_LABELS.c.label)) == len(set(labels)))
        cond.append(_ACT.c.reference.in_(refs))
    where = and_(*cond)
    total = int(conn.execute(select(func.count()).select_from(_ACT).where(where)).scalar() or 0)
    query = (select(*_ACTION_SELECT).where(where).order_by(_ACT.c.created_position.desc())
             .limit(limit).offset(offset))
    return _action_page(conn, query, total)


def _labelled_actions(conn: Connection, user: str, label: str, *, statuses: list[str],
                      limit: int, offset: int) -> Page[ActionView]:
    """One label (the common filter): walk the label's index newest first, join each action by
    its key, stop after the page."""
    joined = _LABELS.join(_ACT, and_(_ACT.c.user == _LABELS.c.user,
                                     _ACT.c.reference == _LABELS.c.reference))
    cond = [_LABELS.c.user == user, _LABELS.c.label == label]
    if statuses:
        cond.append(_ACT.c.status.in_(statuses))
    where = and_(*cond)
    counted = (select(func.count()).select_from(joined) if statuses
               else select(func.count()).select_from(_LABELS))
    total = int(conn.execute(counted.where(where)).scalar() or 0)
    query = (select(*_ACTION_SELECT).select_from(joined).where(where)
             .order_by(_LABELS.c.created_position.desc()).limit(limit).offset(offset))
    return _action_page(conn, query, total)


def balance(conn: Connection, user: str, *, basket: str | None) -> Balance:
    """Satoshis per category; spent, hidden and toxic outputs count nowhere."""
    cond = [_BAL.c.user == user]
    if basket is not None:
        cond.append(_BAL.c.basket == basket)
    buckets = [OutputCategory(field) for field in Balance.model_fields]  # one bucket a field
    query = select(*(func.sum(_BAL.c[balance_columns(c.value)[0]]) for c in buckets)
                   ).where(and_(*cond))
    sums = conn.execute(query).one()
    return Balance(**{c.value: int(v or 0) for c, v in zip(buckets, sums, strict=True)})


def _audit_entry(r: dict[str, Any]) -> AuditEntry:
    return AuditEntry(position=r["audit_id"], event=r["event"], txid=r["txid"], user=r["user"],
                      reference=r["reference"], from_state=r["from_state"],
                      to_state=r["to_state"], details=r["details_json"],
                      at=datetime.fromisoformat(r["created_at"]))


def history(conn: Connection, txid: str) -> list[AuditEntry]:
    """Every audit row of a transaction, ordered by position."""
    query = (select(_AUDIT).where(_AUDIT.c.txid == txid).order_by(_AUDIT.c.audit_id)
             .limit(MAX_HISTORY_ROWS))
    return [_audit_entry(_decode(r, _AUDIT)) for r in conn.execute(query)]


def audit_tail(conn: Connection, *, limit: int, event: str | None = None) -> list[AuditEntry]:
    """The newest audit rows, newest first."""
    query = select(_AUDIT)
    if event:
        query = query.where(_AUDIT.c.event == event)
        if event not in FREQUENT_AUDIT_EVENTS:  # the rare-event index serves it
            query = query.where(text(RARE_AUDIT_EVENT))
    query = query.order_by(_AUDIT.c.audit_id.desc()).limit(limit)
    return [_audit_entry(_decode(r, _AUDIT)) for r in conn.execute(query)]


def active_header(conn: Connection, height: int) -> dict[str, Any] | None:
    row = conn.execute(select(_HEADERS).where(and_(
        _HEADERS.c.height == height, _HEADERS.c.active == true()))).first()
    return None if row is None else _decode(row, _HEADERS)


def chain_tip(conn: Connection) -> dict[str, Any] | None:
    tip = meta(conn, "tip_height")
    return None if tip is None else active_header(conn, tip)


def explain_output(conn: Connection, user: str, txid: str, vout: int) -> Explanation | None:
    """The rule's inputs for one output and the positions of the events that set them."""
    row = conn.execute(select(_OUT).where(and_(
        _OUT.c.user == user, _OUT.c.txid == txid, _OUT.c.vout == vout))).first()
    if row is None:
        return None
    r = _decode(row, _OUT)
    tx = conn.execute(select(_TX.c.state, _TX.c.state_position).where(_TX.c.txid == txid)).one()
    ev: dict[str, int] = {**r["evidence"], "state": tx.state_position}
    tip = meta(conn, "tip_height")
    reasons = [f"category {r['category']}: the output is "
               f"{'spendable' if r['spendable'] else 'not spendable'}",
               f"transaction {txid} is {tx.state} (since position {tx.state_position})"]
    if r["preserved"] is not None:
        reasons.append(f"spendable value preserved while {tx.state}: {r['preserved']}")
    action = f"action {r['spender_reference']!r}"
    if r["spender_user"] not in (None, r["user"]):  # an outpoint two users hold
        action += f" of user {r['spender_user']!r}"
    if r["spender_txid"]:
        reasons.append(f"spent by {r['spender_txid']} ({action}, position {ev.get('spender')})")
    elif r["spender_reference"]:
        reasons.append(f"reserved by {action} (position {ev.get('spender')})")
    else:
        reasons.append("no live spender")
    if r["quarantined"]:
        reasons.append(f"quarantined after a double spend (position {ev.get('quarantine')})")
    reasons.append("locking script known" if r["locking_script"] is not None
                   else "locking script unknown")
    if r["is_coinbase"]:
        reasons.append(f"coinbase: matures at height {r['matures_at_height']}, tip {tip}")
    positions = sorted({int(p) for p in ev.values() if p is not None})
    return Explanation(spendable=r["spendable"], category=r["category"], reasons=reasons,
                       positions=positions)
