"""Every query result of a ledger view, captured as plain data (for before/after comparisons),
and the same answers rendered like :func:`fold_oracle.expected` (for oracle comparisons).

``capture`` asks each public query with the filters a wallet uses -- spendable True/False/None
per basket and across baskets, tag filters in both modes, label filters in both modes, every
action status, pagination -- plus ``get_transaction``/``history`` for every transaction and
``explain_output`` for every output row (hidden and toxic ones included). Which users, baskets,
tags, labels, transactions and outputs exist is taken from the independent fold, not the view.
"""

from __future__ import annotations

from typing import Any

from fold_oracle import ACTION_STATUSES, BUCKETS, Fold, differences, expected, output_tuple

from ledger import LedgerError, Outpoint
from ledger.facade import LedgerView

Capture = dict[str, Any]


def _dump(value: Any) -> Any:
    if isinstance(value, list):
        return [_dump(v) for v in value]
    dump = getattr(value, "model_dump", None)
    return dump() if dump is not None else value


def _ask(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """The result, or the error's type and message (an error is a result too)."""
    try:
        return _dump(fn(*args, **kwargs))
    except LedgerError as err:
        return ("error", type(err).__name__, str(err))


def capture(view: LedgerView, fold: Fold, *, absent_txids: tuple[str, ...] = (),
            full: bool = True) -> Capture:
    """All query results of ``view`` keyed by the query that produced them. ``full=False``
    asks only what :func:`observed` needs (no tag/label/status filters, pages or audit tail)."""
    got: Capture = {}
    tags = sorted({t for o in fold.outputs.values() for t in o.tags})
    labels = sorted({label for a in fold.actions.values() for label in a.labels})
    for user in fold.users:
        for basket in [None, *fold.baskets_of(user)]:
            for spendable in (True, False, None):
                got[f"outputs {user} {basket} {spendable}"] = _ask(
                    view.list_outputs, user, basket=basket, spendable=spendable, limit=1000)
            got[f"balance {user} {basket}"] = _ask(view.balance, user, basket=basket)
        got[f"actions {user}"] = _ask(view.list_actions, user, limit=1000)
        if not full:
            continue
        for basket in ("default", "no-such-basket"):
            got[f"outputs {user} {basket} any"] = _ask(view.list_outputs, user, basket=basket,
                                                       spendable=None)
        got[f"outputs {user} scripts page"] = _ask(
            view.list_outputs, user, basket=None, spendable=None, include_locking_scripts=True,
            limit=2, offset=1)
        for tag in tags:
            got[f"outputs {user} tag {tag}"] = _ask(view.list_outputs, user, basket=None,
                                                    spendable=None, tags=[tag])
        for mode in ("any", "all"):
            got[f"outputs {user} tags {mode}"] = _ask(view.list_outputs, user, basket=None,
                                                      spendable=None, tags=tags[:2],
                                                      tag_mode=mode)
            got[f"actions {user} labels {mode}"] = _ask(view.list_actions, user,
                                                        labels=labels[:2], label_mode=mode)
        got[f"actions {user} page"] = _ask(view.list_actions, user, limit=2, offset=1)
        for label in labels:
            got[f"actions {user} label {label}"] = _ask(view.list_actions, user, labels=[label])
        for status in ACTION_STATUSES:
            got[f"actions {user} status {status}"] = _ask(view.list_actions, user,
                                                          statuses=[status])
    if full:
        got["outputs nobody"] = _ask(view.list_outputs, "nobody", basket=None, spendable=None)
        got["balance nobody"] = _ask(view.balance, "nobody")
        for user, reference in fold.actions:
            got[f"action {user} {reference}"] = _ask(view.get_action, user, reference)
        got["audit tail"] = _ask(view.audit_tail, limit=40)
        got["audit tail changes"] = _ask(view.audit_tail, limit=40, event="processing.changed")
    for txid in [*fold.txs, *absent_txids]:
        got[f"tx {txid}"] = _ask(view.get_transaction, txid)
        got[f"history {txid}"] = _ask(view.history, txid)
    for user, txid, vout in fold.outputs:
        got[f"explain {user} {txid}:{vout}"] = _ask(view.explain_output, user,
                                                    Outpoint(txid=txid, vout=vout))
    got["tip"] = _ask(view.chain_tip)
    return got


def capture_differences(before: Capture, after: Capture) -> list[str]:
    """Queries whose results differ, with both results (shortened)."""
    out = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key) != after.get(key):
            out.append(f"{key}:\n  before {str(before.get(key))[:400]}\n"
                       f"  after  {str(after.get(key))[:400]}")
    return out


def _items(page: Any, what: str) -> list[dict[str, Any]]:
    assert isinstance(page, dict), f"{what} failed: {page}"
    items: list[dict[str, Any]] = page["items"]
    assert page["total"] == len(items), f"{what}: total {page['total']} for {len(items)} items"
    return items


def observed(got: Capture, fold: Fold) -> dict[str, Any]:
    """The captured answers in the shape of :func:`fold_oracle.expected`."""
    tip = None if got["tip"] is None else (got["tip"]["height"], got["tip"]["hash"])
    txs = {}
    for txid in fold.txs:
        t = got[f"tx {txid}"]
        assert isinstance(t, dict), f"get_transaction({txid}) failed: {t}"
        txs[txid] = (str(t["state"]), t["attempts"], t["was_broadcast"], t["is_coinbase"],
                     t["height"], t["block_hash"], t["merkle_root"], t["raw_tx"], t["position"])
    actions, outputs, balances, explain = {}, {}, {}, {}
    for user in fold.users:
        actions[user] = [(a["reference"], a["txid"], a["status"], a["satoshis_delta"],
                          a["is_outgoing"], tuple(sorted(a["labels"])), a["description"])
                         for a in _items(got[f"actions {user}"], f"actions of {user}")]
        for basket in [None, *fold.baskets_of(user)]:
            for spendable in (True, False, None):
                key = f"{user} {basket} {spendable}"
                outputs[key] = sorted(
                    output_tuple(o["txid"], o["vout"], o["satoshis"], o["basket"], o["tags"],
                                 o["spendable"], o["change"], o["is_coinbase"], o["category"],
                                 o["custom_instructions"])
                    for o in _items(got[f"outputs {key}"], f"outputs {key}"))
            b = got[f"balance {user} {basket}"]
            balances[f"{user} {basket}"] = {k: b[k] for k in BUCKETS}
    for user, txid, vout in fold.outputs:
        x = got[f"explain {user} {txid}:{vout}"]
        assert isinstance(x, dict), f"explain_output({user}, {txid}:{vout}) failed: {x}"
        explain[f"{user} {txid}:{vout}"] = (x["spendable"], x["category"])
    return {"tip": tip, "txs": txs, "actions": actions, "outputs": outputs,
            "balances": balances, "explain": explain}


def assert_matches_fold(got: Capture, fold: Fold, *, where: str) -> None:
    """The captured answers are exactly what the oracle derives from the same log prefix, and
    every explanation cites only positions of that prefix."""
    diff = differences(expected(fold), observed(got, fold))
    assert not diff, (f"{where}: {len(diff)} answers differ from the independent fold:\n"
                      + "\n".join(diff[:12]))
    for user, txid, vout in fold.outputs:
        x = got[f"explain {user} {txid}:{vout}"]
        out = fold.outputs[(user, txid, vout)]
        cited = set(x["positions"])
        assert out.created_position in cited, (where, "explain cites the row's creation", x)
        assert fold.txs[txid].state_position in cited, (where, "explain cites the state", x)
        if out.spender_position is not None:
            assert out.spender_position in cited, (where, "explain cites the spender", x)
        if out.quarantined:
            assert out.quarantine_position in cited, (where, "explain cites the quarantine", x)
        assert max(cited) <= fold.position, (where, "explain cites a later event", x)
