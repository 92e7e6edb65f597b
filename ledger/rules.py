"""Pure rules (SPEC §4): output spendability, coinbase maturity, broadcast outcome.

Nothing here does I/O. The projector and the command handlers both call these functions, so each
rule lives in exactly one place.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ledger.errors import InvalidInput
from ledger.status import (
    HIDDEN_STATES,
    PRESERVING_STATES,
    SPENDABLE_STATES,
    TOXIC_STATES,
    ProcessingStatus,
    can_transition,
)

S = ProcessingStatus

COINBASE_MATURITY_BLOCKS = 100


# --- coinbase maturity ----------------------------------------------------------------------

def matures_at_height(block_height: int) -> int:
    """The first chain-tip height at which a coinbase mined at ``block_height`` may be spent."""
    assert block_height >= 0
    return block_height + COINBASE_MATURITY_BLOCKS


def is_mature(matures_at: int | None, tip_height: int | None) -> bool:
    """``tip_height >= matures_at`` (inclusive). Unknown maturity or unknown tip: not mature."""
    if matures_at is None or tip_height is None:
        return False
    return tip_height >= matures_at


# --- output spendability --------------------------------------------------------------------

class OutputCategory(StrEnum):
    """Where an output's value counts. Exactly one category per output at any time."""

    SPENDABLE = "spendable"
    RESERVED = "reserved"
    SPENT = "spent"
    QUARANTINED = "quarantined"
    IMMATURE = "immature"
    PENDING = "pending"
    HIDDEN = "hidden"
    TOXIC = "toxic"


LISTED_CATEGORIES: frozenset[OutputCategory] = frozenset(OutputCategory) - {
    OutputCategory.HIDDEN, OutputCategory.TOXIC
}


@dataclass(frozen=True, slots=True)
class OutputFacts:
    """The inputs of the spendability rule for one (user, outpoint)."""

    state: ProcessingStatus
    is_coinbase: bool = False
    matures_at_height: int | None = None
    script_known: bool = True
    reserved: bool = False
    """A live, not yet signed action holds it."""
    spent: bool = False
    """A live, signed action spends it."""
    quarantined: bool = False
    preserved_spendable: bool | None = None
    """Its spendable value when the transaction entered ``reorging`` or ``unfail``."""


def base_spendable(facts: OutputFacts, tip_height: int | None) -> bool:
    """Spendable as far as its own transaction is concerned (spenders ignored)."""
    if facts.state in PRESERVING_STATES:
        return bool(facts.preserved_spendable)
    if facts.state not in SPENDABLE_STATES or not facts.script_known:
        return False
    return not facts.is_coinbase or is_mature(facts.matures_at_height, tip_height)


def preserved_on_entry(
    before: OutputFacts, entering: ProcessingStatus, tip_height: int | None
) -> bool:
    """The spendable value kept while the transaction is ``reorging``/``unfail``.

    A coinbase output loses it at once on a reorg: a coinbase can never re-confirm elsewhere.
    """
    assert entering in PRESERVING_STATES
    if entering == S.REORGING and before.is_coinbase:
        return False
    return base_spendable(before, tip_height)


_STANDING: dict[ProcessingStatus, tuple[bool, bool, bool, bool]] = {
    state: (state in TOXIC_STATES, state in HIDDEN_STATES, state in PRESERVING_STATES,
            state in SPENDABLE_STATES) for state in ProcessingStatus}
"""All the spendability rule reads of a state: :func:`classify` and :func:`preserved_on_entry`
only test membership of these four sets."""


def outputs_unaffected(before: ProcessingStatus, after: ProcessingStatus) -> bool:
    """A move ``before -> after`` changes neither the category nor the preserved value of any
    output of the transaction, whatever the output's other facts (e.g. ``unconfirmed ->
    confirmed``, ``queued -> sending``): the rule treats both states alike, and neither keeps a
    preserved value."""
    return (_STANDING[before] == _STANDING[after] and before not in PRESERVING_STATES
            and after not in PRESERVING_STATES)


def classify(facts: OutputFacts, tip_height: int | None) -> OutputCategory:
    """The one category of an output: the spendability rule of SPEC §4."""
    if facts.state in TOXIC_STATES:
        return OutputCategory.TOXIC
    if facts.state in HIDDEN_STATES:
        return OutputCategory.HIDDEN
    if facts.quarantined:
        return OutputCategory.QUARANTINED
    if facts.spent:
        return OutputCategory.SPENT
    if facts.reserved:
        return OutputCategory.RESERVED
    if base_spendable(facts, tip_height):
        return OutputCategory.SPENDABLE
    if (facts.is_coinbase and facts.state in SPENDABLE_STATES and facts.script_known
            and not is_mature(facts.matures_at_height, tip_height)):
        return OutputCategory.IMMATURE
    return OutputCategory.PENDING


def is_spendable(facts: OutputFacts, tip_height: int | None) -> bool:
    """``classify(...) is SPENDABLE``."""
    return classify(facts, tip_height) is OutputCategory.SPENDABLE


# --- broadcast outcome ----------------------------------------------------------------------

class ProviderStatus(StrEnum):
    """What one provider said about one broadcast."""

    SUCCESS = "success"
    SEEN = "seen"
    DOUBLE_SPEND = "double_spend"
    INVALID = "invalid"
    SERVICE_ERROR = "service_error"


@dataclass(frozen=True, slots=True)
class BroadcastOutcome:
    """The aggregate verdict of one broadcast attempt over its provider results."""

    target: ProcessingStatus
    count_attempt: bool = False
    """Service errors only: the attempt is counted (``attempts += 1``)."""
    discrepancy: bool = False
    """An acceptance came together with a rejection: worth a ``broadcast.discrepancy`` note."""
    accepted: bool = False


def broadcast_outcome(statuses: Sequence[ProviderStatus | str]) -> BroadcastOutcome:
    """SPEC §4 "Broadcast outcome", rules 1-4 in order."""
    if not statuses:
        raise InvalidInput("a broadcast outcome needs at least one provider result")
    try:
        got = [ProviderStatus(s) for s in statuses]
    except ValueError:
        valid = ", ".join(s.value for s in ProviderStatus)
        shown = [str(x)[:40] for x in statuses][:5]
        raise InvalidInput(f"unknown provider status in {shown}; valid: {valid}") from None
    if ProviderStatus.DOUBLE_SPEND in got:
        return BroadcastOutcome(S.DOUBLE_SPEND)
    seen = got.count(ProviderStatus.SEEN)
    if seen or ProviderStatus.SUCCESS in got:
        target = S.SEEN_MULTI if seen >= 2 else S.SEEN if seen == 1 else S.SENT
        return BroadcastOutcome(target, discrepancy=ProviderStatus.INVALID in got, accepted=True)
    if all(s is ProviderStatus.INVALID for s in got):
        return BroadcastOutcome(S.INVALID)
    return BroadcastOutcome(S.SENDING, count_attempt=True)


_PROGRESS: tuple[ProcessingStatus, ...] = (
    S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED,
)


_KEEPS_STATE_ON_BROADCAST: frozenset[ProcessingStatus] = frozenset(
    {S.UNCONFIRMED, S.CONFIRMED, S.REORGING, S.FROZEN})
"""A mined (or reorging) transaction's proof outranks a provider's late verdict, and an
operator's freeze outranks any broadcast: their results are recorded, the state is kept."""


def _rank(state: ProcessingStatus) -> int | None:
    return _PROGRESS.index(state) if state in _PROGRESS else None


def broadcast_path(current: ProcessingStatus, target: ProcessingStatus) -> tuple[ProcessingStatus, ...]:
    """The legal moves that take ``current`` to a broadcast outcome ``target``; () keeps it.

    A transaction already past the outcome keeps its state (a late ``success`` for a confirmed
    transaction), and so does a mined, reorging or frozen one, whatever the verdict. A move the
    table lacks may go through ``sending`` (``queued -> sending -> seen``). A move that is
    illegal either way keeps the state: the result is still recorded.
    """
    if current == target or current in _KEEPS_STATE_ON_BROADCAST:
        return ()
    cur_rank, tgt_rank = _rank(current), _rank(target)
    if cur_rank is not None and tgt_rank is not None and cur_rank >= tgt_rank:
        return ()
    if target == S.SENDING and current not in (S.QUEUED, S.NOSEND, S.NONFINAL):
        return ()
    if can_transition(current, target):
        return (target,)
    if can_transition(current, S.SENDING) and can_transition(S.SENDING, target):
        return (S.SENDING, target)
    return ()


# --- proofs ---------------------------------------------------------------------------------

def proof_state(proof_height: int, tip_height: int) -> ProcessingStatus:
    """``unconfirmed`` at the tip, ``confirmed`` below it. Above the tip is the caller's refusal."""
    assert proof_height <= tip_height
    return S.UNCONFIRMED if proof_height == tip_height else S.CONFIRMED


def tracker_depth_tip(proof_height: int, ledger_tip: int | None,
                      tracker_tip: int | None) -> int | None:
    """The tip that decides the depth of a proof the chain tracker validated (ADR 0008).

    The ledger's own tip while the proof is at or below it (the ledger's chain is what promotes
    and reorganises); the tracker's ``current_height()`` when the ledger has no tip or the
    proof is above it. None: the tip that decides is not known (the caller refuses the proof).
    """
    if ledger_tip is not None and proof_height <= ledger_tip:
        return ledger_tip
    return tracker_tip


def tracker_needs_height(proof_height: int, ledger_tip: int | None) -> bool:
    """Whether :func:`tracker_depth_tip` will need the tracker's ``current_height()``."""
    return ledger_tip is None or proof_height > ledger_tip
