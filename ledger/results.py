"""What a command answers: views of the write model right after the command saved.

Commands never read their answer back from the projections: in catch-up mode those lag behind
the log, and in inline mode a read-back is a second round trip for data the command already
holds. The projector derives the same fields from the same events (``projections.projector``);
the test suite checks that a command's answer equals the next query's answer in inline mode.
"""

from __future__ import annotations

from ledger.action import ActionAggregate
from ledger.status import ProcessingStatus, action_status
from ledger.transaction import TransactionAggregate
from ledger.views import ActionView, TransactionView


def transaction_view(tx: TransactionAggregate, position: int) -> TransactionView:
    """The transaction as its stream says; ``position`` is its newest event's log position."""
    assert position > 0, "a stored transaction has a position"
    proof = tx.proof or {}
    return TransactionView(
        txid=tx.txid, state=tx.state, attempts=tx.attempts, was_broadcast=tx.was_broadcast,
        is_coinbase=tx.is_coinbase, height=proof.get("height"),
        block_hash=proof.get("block_hash"), merkle_root=proof.get("merkle_root"),
        raw_tx=bytes.fromhex(tx.raw_tx), position=position)


def action_view(action: ActionAggregate, tx_state: ProcessingStatus | None) -> ActionView:
    """The action as its stream says; ``tx_state`` is its transaction's state (None: unsigned)."""
    assert (tx_state is None) == (action.txid is None), (tx_state, action.txid)
    return ActionView(
        user=action.user, reference=action.reference, txid=action.txid,
        status=action_status(tx_state, aborted=action.aborted),
        description=action.description, satoshis_delta=action.satoshis_delta,
        is_outgoing=action.is_outgoing, labels=list(action.labels))
