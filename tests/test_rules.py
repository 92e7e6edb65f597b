"""Table and property tests of the pure rules of SPEC §4 (``ledger.rules``)."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import InvalidInput
from ledger.rules import (
    BroadcastOutcome,
    OutputCategory,
    OutputFacts,
    ProviderStatus,
    base_spendable,
    broadcast_outcome,
    broadcast_path,
    classify,
    is_mature,
    is_spendable,
    matures_at_height,
    outputs_unaffected,
    preserved_on_entry,
    proof_state,
)
from ledger.status import (
    ACTION_STATUS,
    ProcessingStatus,
    action_status,
    actions_unaffected,
    can_transition,
)

S = ProcessingStatus
C = OutputCategory
P = ProviderStatus

ALL_STATES = list(S)
SPEC_SPENDABLE = {S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED}
SPEC_PRESERVING = {S.REORGING, S.UNFAIL}
SPEC_HIDDEN = {S.QUEUED, S.INVALID, S.DOUBLE_SPEND, S.FROZEN, S.NONFINAL}
SPEC_TOXIC = {S.INVALID, S.DOUBLE_SPEND}
PROGRESS = [S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED]

TIP = 1_000


# --- coinbase maturity ------------------------------------------------------------------------

@pytest.mark.parametrize("h", [0, 1, 99, 100, 500, 824_000])
def test_matures_at_height(h: int) -> None:
    assert matures_at_height(h) == h + 100


@pytest.mark.parametrize("h", [0, 1, 500, 824_000])
@pytest.mark.parametrize(
    ("offset", "mature"),
    [(0, False), (1, False), (98, False), (99, False), (100, True), (101, True), (10_000, True)],
)
def test_coinbase_maturity_boundary(h: int, offset: int, mature: bool) -> None:
    tip = h + offset
    assert is_mature(matures_at_height(h), tip) is mature
    facts = OutputFacts(S.CONFIRMED, is_coinbase=True, matures_at_height=matures_at_height(h))
    assert classify(facts, tip) is (C.SPENDABLE if mature else C.IMMATURE)
    assert is_spendable(facts, tip) is mature


@pytest.mark.parametrize("h", [0, 500])
def test_unknown_tip_is_not_mature(h: int) -> None:
    assert is_mature(matures_at_height(h), None) is False
    facts = OutputFacts(S.CONFIRMED, is_coinbase=True, matures_at_height=matures_at_height(h))
    assert classify(facts, None) is C.IMMATURE


def test_unknown_maturity_is_not_mature() -> None:
    assert is_mature(None, 10**9) is False
    facts = OutputFacts(S.CONFIRMED, is_coinbase=True, matures_at_height=None)
    assert classify(facts, 10**9) is C.IMMATURE


def test_unknown_tip_does_not_matter_for_non_coinbase() -> None:
    assert classify(OutputFacts(S.CONFIRMED), None) is C.SPENDABLE


# --- classify: every state with default facts ------------------------------------------------

STATE_DEFAULT_CATEGORY = {
    S.QUEUED: C.HIDDEN,
    S.SENDING: C.PENDING,
    S.SENT: C.SPENDABLE,
    S.SEEN: C.SPENDABLE,
    S.SEEN_MULTI: C.SPENDABLE,
    S.UNCONFIRMED: C.SPENDABLE,
    S.CONFIRMED: C.SPENDABLE,
    S.REORGING: C.PENDING,  # no preserved value recorded
    S.INVALID: C.TOXIC,
    S.DOUBLE_SPEND: C.TOXIC,
    S.UNFAIL: C.PENDING,  # no preserved value recorded
    S.FROZEN: C.HIDDEN,
    S.NOSEND: C.PENDING,
    S.NONFINAL: C.HIDDEN,
}


def test_state_default_table_covers_every_state() -> None:
    assert set(STATE_DEFAULT_CATEGORY) == set(S)


@pytest.mark.parametrize("state", ALL_STATES)
def test_classify_every_state_default_facts(state: ProcessingStatus) -> None:
    expected = STATE_DEFAULT_CATEGORY[state]
    assert classify(OutputFacts(state), TIP) is expected
    assert is_spendable(OutputFacts(state), TIP) is (expected is C.SPENDABLE)


# --- classify: flags -------------------------------------------------------------------------

F = OutputFacts
CB_MATURE = TIP - 10  # matures_at below the tip
CB_IMMATURE = TIP + 10

CLASSIFY_CASES: list[tuple[str, OutputFacts, int | None, OutputCategory]] = [
    # toxic beats everything
    ("invalid", F(S.INVALID), TIP, C.TOXIC),
    ("doubleSpend", F(S.DOUBLE_SPEND), TIP, C.TOXIC),
    ("invalid+preserved", F(S.INVALID, preserved_spendable=True), TIP, C.TOXIC),
    ("doubleSpend+quarantined", F(S.DOUBLE_SPEND, quarantined=True), TIP, C.TOXIC),
    ("invalid+reserved", F(S.INVALID, reserved=True), TIP, C.TOXIC),
    # hidden
    ("queued", F(S.QUEUED), TIP, C.HIDDEN),
    ("frozen", F(S.FROZEN), TIP, C.HIDDEN),
    ("nonfinal", F(S.NONFINAL), TIP, C.HIDDEN),
    ("frozen+reserved", F(S.FROZEN, reserved=True), TIP, C.HIDDEN),
    ("queued+coinbase", F(S.QUEUED, is_coinbase=True, matures_at_height=CB_IMMATURE), TIP, C.HIDDEN),
    # quarantined
    ("seen+quarantined", F(S.SEEN, quarantined=True), TIP, C.QUARANTINED),
    ("confirmed+quarantined", F(S.CONFIRMED, quarantined=True), TIP, C.QUARANTINED),
    ("confirmed+quarantined+spent", F(S.CONFIRMED, quarantined=True, spent=True), TIP, C.QUARANTINED),
    ("reorging+quarantined", F(S.REORGING, quarantined=True, preserved_spendable=True), TIP,
     C.QUARANTINED),
    # spent
    ("confirmed+spent", F(S.CONFIRMED, spent=True), TIP, C.SPENT),
    ("sent+spent", F(S.SENT, spent=True), TIP, C.SPENT),
    ("confirmed+spent+reserved", F(S.CONFIRMED, spent=True, reserved=True), TIP, C.SPENT),
    # reserved
    ("confirmed+reserved", F(S.CONFIRMED, reserved=True), TIP, C.RESERVED),
    ("seen_multi+reserved", F(S.SEEN_MULTI, reserved=True), TIP, C.RESERVED),
    ("unfail+preserved+reserved", F(S.UNFAIL, reserved=True, preserved_spendable=True), TIP,
     C.RESERVED),
    # immature coinbase
    ("coinbase immature", F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_IMMATURE), TIP,
     C.IMMATURE),
    ("coinbase unconfirmed immature", F(S.UNCONFIRMED, is_coinbase=True, matures_at_height=CB_IMMATURE),
     TIP, C.IMMATURE),
    ("coinbase tip unknown", F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_MATURE), None,
     C.IMMATURE),
    ("coinbase exactly mature", F(S.CONFIRMED, is_coinbase=True, matures_at_height=TIP), TIP,
     C.SPENDABLE),
    ("coinbase mature", F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_MATURE), TIP, C.SPENDABLE),
    ("coinbase script unknown", F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_IMMATURE,
                                  script_known=False), TIP, C.PENDING),
    ("coinbase sending", F(S.SENDING, is_coinbase=True, matures_at_height=CB_IMMATURE), TIP, C.PENDING),
    # spendable
    ("sent", F(S.SENT), TIP, C.SPENDABLE),
    ("seen", F(S.SEEN), TIP, C.SPENDABLE),
    ("seen_multi", F(S.SEEN_MULTI), TIP, C.SPENDABLE),
    ("unconfirmed", F(S.UNCONFIRMED), TIP, C.SPENDABLE),
    ("confirmed", F(S.CONFIRMED), TIP, C.SPENDABLE),
    # pending
    ("sending", F(S.SENDING), TIP, C.PENDING),
    ("nosend", F(S.NOSEND), TIP, C.PENDING),
    ("confirmed script unknown", F(S.CONFIRMED, script_known=False), TIP, C.PENDING),
    ("sent script unknown", F(S.SENT, script_known=False), TIP, C.PENDING),
    # preserving states
    ("reorging preserved True", F(S.REORGING, preserved_spendable=True), TIP, C.SPENDABLE),
    ("unfail preserved True", F(S.UNFAIL, preserved_spendable=True), TIP, C.SPENDABLE),
    ("reorging preserved False", F(S.REORGING, preserved_spendable=False), TIP, C.PENDING),
    ("unfail preserved False", F(S.UNFAIL, preserved_spendable=False), TIP, C.PENDING),
    ("reorging preserved None", F(S.REORGING, preserved_spendable=None), TIP, C.PENDING),
    ("unfail preserved None", F(S.UNFAIL, preserved_spendable=None), TIP, C.PENDING),
    ("reorging preserved True tip unknown", F(S.REORGING, preserved_spendable=True), None, C.SPENDABLE),
    ("reorging preserved True + spent", F(S.REORGING, preserved_spendable=True, spent=True), TIP, C.SPENT),
]


@pytest.mark.parametrize(("facts", "tip", "expected"), [c[1:] for c in CLASSIFY_CASES],
                         ids=[c[0] for c in CLASSIFY_CASES])
def test_classify_table(facts: OutputFacts, tip: int | None, expected: OutputCategory) -> None:
    assert classify(facts, tip) is expected
    assert is_spendable(facts, tip) is (expected is C.SPENDABLE)


def test_classify_table_covers_every_category() -> None:
    assert {c[3] for c in CLASSIFY_CASES} == set(C)


# --- preserved_on_entry ----------------------------------------------------------------------

def test_coinbase_entering_reorging_loses_spendability() -> None:
    before = F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_MATURE)
    assert is_spendable(before, TIP)  # it was spendable...
    assert preserved_on_entry(before, S.REORGING, TIP) is False  # ...and is not preserved
    after = F(S.REORGING, is_coinbase=True, matures_at_height=CB_MATURE,
              preserved_spendable=preserved_on_entry(before, S.REORGING, TIP))
    assert classify(after, TIP) is C.PENDING


@pytest.mark.parametrize("state", [S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED])
@pytest.mark.parametrize("script_known", [True, False])
@pytest.mark.parametrize("flags", [{}, {"reserved": True}, {"spent": True}, {"quarantined": True}],
                         ids=["free", "reserved", "spent", "quarantined"])
def test_non_coinbase_entering_reorging_keeps_base_spendability(
    state: ProcessingStatus, script_known: bool, flags: dict[str, bool]
) -> None:
    before = F(state, script_known=script_known, **flags)
    kept = preserved_on_entry(before, S.REORGING, TIP)
    assert kept is base_spendable(before, TIP)
    assert kept is script_known  # spenders do not matter; an unknown script does
    after = F(S.REORGING, script_known=script_known, preserved_spendable=kept, **flags)
    assert is_spendable(after, TIP) is is_spendable(before, TIP)


@pytest.mark.parametrize("state", [S.INVALID, S.DOUBLE_SPEND])
@pytest.mark.parametrize("is_coinbase", [False, True])
def test_entering_unfail_from_failed_state_is_not_spendable(
    state: ProcessingStatus, is_coinbase: bool
) -> None:
    before = F(state, is_coinbase=is_coinbase, matures_at_height=CB_MATURE if is_coinbase else None)
    assert preserved_on_entry(before, S.UNFAIL, TIP) is False
    after = F(S.UNFAIL, preserved_spendable=False)
    assert classify(after, TIP) is C.PENDING


def test_mature_coinbase_entering_unfail_keeps_value() -> None:
    # only a reorg drops a coinbase's value at once; unfail preserves like any other output
    before = F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_MATURE)
    assert preserved_on_entry(before, S.UNFAIL, TIP) is True
    before_immature = F(S.CONFIRMED, is_coinbase=True, matures_at_height=CB_IMMATURE)
    assert preserved_on_entry(before_immature, S.UNFAIL, TIP) is False


@pytest.mark.parametrize("state", [S.REORGING, S.UNFAIL])
@pytest.mark.parametrize("preserved", [True, False, None])
def test_reentering_a_preserving_state_keeps_preserved_value(
    state: ProcessingStatus, preserved: bool | None
) -> None:
    before = F(S.REORGING, preserved_spendable=preserved)
    assert preserved_on_entry(before, state, TIP) is bool(preserved)


# --- properties of classify ------------------------------------------------------------------

facts_strategy = st.builds(
    OutputFacts,
    state=st.sampled_from(ALL_STATES),
    is_coinbase=st.booleans(),
    matures_at_height=st.none() | st.integers(0, 1_200),
    script_known=st.booleans(),
    reserved=st.booleans(),
    spent=st.booleans(),
    quarantined=st.booleans(),
    preserved_spendable=st.none() | st.booleans(),
)
tip_strategy = st.none() | st.integers(0, 1_200)


def _spec_base_spendable(f: OutputFacts, tip: int | None) -> bool:
    """SPEC §4 spendability of the output's own transaction, written independently."""
    if f.state in SPEC_PRESERVING:
        return f.preserved_spendable is True
    mature = (not f.is_coinbase) or (
        f.matures_at_height is not None and tip is not None and tip >= f.matures_at_height
    )
    return f.state in SPEC_SPENDABLE and f.script_known and mature


@settings(max_examples=300, deadline=None)
@given(facts_strategy, tip_strategy)
def test_exactly_one_category(facts: OutputFacts, tip: int | None) -> None:
    category = classify(facts, tip)
    assert isinstance(category, OutputCategory)
    assert sum(category is c for c in C) == 1
    assert classify(facts, tip) is category  # deterministic
    assert is_spendable(facts, tip) is (category is C.SPENDABLE)
    # listing visibility is decided by the state alone
    assert (category in {C.HIDDEN, C.TOXIC}) is (facts.state in SPEC_HIDDEN)
    assert (category is C.TOXIC) is (facts.state in SPEC_TOXIC)


@settings(max_examples=300, deadline=None)
@given(facts_strategy, tip_strategy)
def test_spendable_matches_spec_formula(facts: OutputFacts, tip: int | None) -> None:
    spendable = is_spendable(facts, tip)
    if spendable:
        assert facts.state in SPEC_SPENDABLE | SPEC_PRESERVING
        assert not facts.reserved
        assert not facts.spent
        assert not facts.quarantined
    free = not (facts.reserved or facts.spent or facts.quarantined)
    assert spendable is (free and _spec_base_spendable(facts, tip))


@settings(max_examples=300, deadline=None)
@given(facts_strategy, tip_strategy)
def test_immature_only_for_unmatured_coinbase(facts: OutputFacts, tip: int | None) -> None:
    if classify(facts, tip) is C.IMMATURE:
        assert facts.is_coinbase
        assert facts.state in SPEC_SPENDABLE
        assert not is_mature(facts.matures_at_height, tip)


# --- broadcast outcome -----------------------------------------------------------------------

def _o(target: ProcessingStatus, *, count: bool = False, discrepancy: bool = False,
       accepted: bool = False) -> BroadcastOutcome:
    return BroadcastOutcome(target, count_attempt=count, discrepancy=discrepancy, accepted=accepted)


OUTCOME_CASES: list[tuple[list[str], BroadcastOutcome]] = [
    # 1. any double_spend wins, even over acceptances
    (["double_spend"], _o(S.DOUBLE_SPEND)),
    (["success", "double_spend"], _o(S.DOUBLE_SPEND)),
    (["double_spend", "success"], _o(S.DOUBLE_SPEND)),
    (["seen", "seen", "double_spend"], _o(S.DOUBLE_SPEND)),
    (["seen", "double_spend", "success"], _o(S.DOUBLE_SPEND)),
    (["invalid", "double_spend"], _o(S.DOUBLE_SPEND)),
    (["service_error", "double_spend"], _o(S.DOUBLE_SPEND)),
    (["double_spend", "double_spend"], _o(S.DOUBLE_SPEND)),
    # 2. acceptances
    (["success"], _o(S.SENT, accepted=True)),
    (["success", "success"], _o(S.SENT, accepted=True)),
    (["service_error", "success"], _o(S.SENT, accepted=True)),
    (["seen"], _o(S.SEEN, accepted=True)),
    (["success", "seen"], _o(S.SEEN, accepted=True)),
    (["seen", "service_error"], _o(S.SEEN, accepted=True)),
    (["seen", "seen"], _o(S.SEEN_MULTI, accepted=True)),
    (["seen", "success", "seen"], _o(S.SEEN_MULTI, accepted=True)),
    (["seen", "seen", "seen"], _o(S.SEEN_MULTI, accepted=True)),
    # 2b. acceptance plus rejection: discrepancy note
    (["success", "invalid"], _o(S.SENT, accepted=True, discrepancy=True)),
    (["invalid", "success"], _o(S.SENT, accepted=True, discrepancy=True)),
    (["invalid", "seen"], _o(S.SEEN, accepted=True, discrepancy=True)),
    (["seen", "invalid", "seen"], _o(S.SEEN_MULTI, accepted=True, discrepancy=True)),
    (["invalid", "service_error", "success"], _o(S.SENT, accepted=True, discrepancy=True)),
    # 3. all invalid
    (["invalid"], _o(S.INVALID)),
    (["invalid", "invalid"], _o(S.INVALID)),
    (["invalid", "invalid", "invalid"], _o(S.INVALID)),
    # 4. service errors, possibly with rejections
    (["service_error"], _o(S.SENDING, count=True)),
    (["service_error", "service_error"], _o(S.SENDING, count=True)),
    (["service_error", "invalid"], _o(S.SENDING, count=True)),
    (["invalid", "service_error"], _o(S.SENDING, count=True)),
    (["invalid", "service_error", "invalid"], _o(S.SENDING, count=True)),
]


@pytest.mark.parametrize(("statuses", "expected"), OUTCOME_CASES,
                         ids=["+".join(c[0]) for c in OUTCOME_CASES])
def test_broadcast_outcome_table(statuses: list[str], expected: BroadcastOutcome) -> None:
    assert broadcast_outcome(statuses) == expected
    assert broadcast_outcome([P(s) for s in statuses]) == expected
    assert broadcast_outcome(tuple(statuses)) == expected


@pytest.mark.parametrize("empty", [[], ()], ids=["list", "tuple"])
def test_broadcast_outcome_needs_a_result(empty: list[str]) -> None:
    with pytest.raises(InvalidInput):
        broadcast_outcome(empty)


@pytest.mark.parametrize(
    "statuses",
    [["bogus"], ["success", "bogus"], ["SUCCESS"], ["doubleSpend"], ["sent"], [""]],
    ids=repr,
)
def test_broadcast_outcome_unknown_status(statuses: list[str]) -> None:
    with pytest.raises(InvalidInput, match="unknown provider status"):
        broadcast_outcome(statuses)


def _spec_outcome(got: list[ProviderStatus]) -> tuple[ProcessingStatus, bool, bool]:
    """SPEC §4 rules 1-4, written independently: (target, count_attempt, discrepancy)."""
    if P.DOUBLE_SPEND in got:
        return S.DOUBLE_SPEND, False, False
    n_seen = sum(1 for s in got if s == P.SEEN)
    if n_seen or P.SUCCESS in got:
        target = S.SEEN_MULTI if n_seen >= 2 else (S.SEEN if n_seen == 1 else S.SENT)
        return target, False, P.INVALID in got
    if all(s == P.INVALID for s in got):
        return S.INVALID, False, False
    return S.SENDING, True, False


results_strategy = st.lists(st.sampled_from(list(P)), min_size=1, max_size=6)


@settings(max_examples=400, deadline=None)
@given(results_strategy, st.randoms(use_true_random=False))
def test_broadcast_outcome_matches_spec_and_ignores_order(
    got: list[ProviderStatus], rnd: random.Random
) -> None:
    outcome = broadcast_outcome(got)
    target, count, discrepancy = _spec_outcome(got)
    assert outcome.target is target
    assert outcome.count_attempt is count
    if target is not S.DOUBLE_SPEND:
        assert outcome.discrepancy is discrepancy
    shuffled = list(got)
    rnd.shuffle(shuffled)
    assert broadcast_outcome(shuffled) == outcome


# --- broadcast path --------------------------------------------------------------------------

PATH_CASES: list[tuple[ProcessingStatus, ProcessingStatus, tuple[ProcessingStatus, ...]]] = [
    (S.QUEUED, S.SEEN, (S.SENDING, S.SEEN)),
    (S.QUEUED, S.SEEN_MULTI, (S.SENDING, S.SEEN_MULTI)),
    (S.QUEUED, S.SENT, (S.SENT,)),
    (S.QUEUED, S.SENDING, (S.SENDING,)),
    (S.QUEUED, S.INVALID, (S.INVALID,)),
    (S.QUEUED, S.DOUBLE_SPEND, (S.DOUBLE_SPEND,)),
    (S.SENDING, S.SENT, (S.SENT,)),
    (S.SENDING, S.SEEN, (S.SEEN,)),
    (S.SENDING, S.SENDING, ()),
    (S.SENT, S.SEEN, (S.SEEN,)),
    (S.SEEN, S.SEEN_MULTI, (S.SEEN_MULTI,)),
    # already past the outcome: keep the state
    (S.CONFIRMED, S.SENT, ()),
    (S.CONFIRMED, S.SEEN, ()),
    (S.UNCONFIRMED, S.SEEN, ()),
    (S.SEEN, S.SENT, ()),
    (S.SEEN_MULTI, S.SEEN, ()),
    # service errors never downgrade
    (S.SENT, S.SENDING, ()),
    (S.SEEN, S.SENDING, ()),
    (S.CONFIRMED, S.SENDING, ()),
    # double spend
    (S.UNCONFIRMED, S.DOUBLE_SPEND, ()),  # a proof outranks a late provider verdict
    (S.SEEN, S.DOUBLE_SPEND, (S.DOUBLE_SPEND,)),
    (S.FROZEN, S.SENT, ()),  # an operator freeze outranks any broadcast
    (S.SEEN, S.DOUBLE_SPEND, (S.DOUBLE_SPEND,)),
    (S.CONFIRMED, S.DOUBLE_SPEND, ()),  # illegal either way
    (S.CONFIRMED, S.INVALID, ()),
    # a reorg never invalidates, not even through a broadcast
    (S.REORGING, S.DOUBLE_SPEND, ()),
    (S.REORGING, S.INVALID, ()),
    # failed states only leave through unfail
    (S.INVALID, S.SENT, ()),
    (S.DOUBLE_SPEND, S.SEEN, ()),
    (S.INVALID, S.DOUBLE_SPEND, ()),
]


@pytest.mark.parametrize(("current", "target", "expected"), PATH_CASES,
                         ids=[f"{c}+{t}" for c, t, _ in PATH_CASES])
def test_broadcast_path_table(current: ProcessingStatus, target: ProcessingStatus,
                              expected: tuple[ProcessingStatus, ...]) -> None:
    assert broadcast_path(current, target) == expected


ALL_PAIRS = list(itertools.product(ALL_STATES, ALL_STATES))


@pytest.mark.parametrize(("current", "target"), ALL_PAIRS, ids=[f"{c}+{t}" for c, t in ALL_PAIRS])
def test_broadcast_path_is_a_chain_of_legal_edges(current: ProcessingStatus,
                                                  target: ProcessingStatus) -> None:
    path = broadcast_path(current, target)
    assert isinstance(path, tuple)
    if not path:
        return
    assert path[-1] == target
    assert len(path) <= 2
    assert current not in path
    for a, b in itertools.pairwise((current, *path)):
        assert a != b
        assert can_transition(a, b), f"{a} -> {b} is not in the table"
    # a broadcast never moves a transaction backwards along the progress line
    if current in PROGRESS and target in PROGRESS:
        assert PROGRESS.index(target) > PROGRESS.index(current)


OUTCOME_TARGETS = [S.DOUBLE_SPEND, S.SENT, S.SEEN, S.SEEN_MULTI, S.INVALID, S.SENDING]


@pytest.mark.parametrize("target", OUTCOME_TARGETS)
def test_broadcast_outcome_never_moves_confirmed_or_failed(target: ProcessingStatus) -> None:
    for current in (S.CONFIRMED, S.INVALID, S.DOUBLE_SPEND):
        assert broadcast_path(current, target) == ()
    if target in SPEC_TOXIC:
        assert broadcast_path(S.REORGING, target) == ()


# --- proof state -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("height", "tip", "expected"),
    [
        (0, 0, S.UNCONFIRMED),
        (100, 100, S.UNCONFIRMED),
        (824_000, 824_000, S.UNCONFIRMED),
        (99, 100, S.CONFIRMED),
        (0, 1, S.CONFIRMED),
        (1, 824_000, S.CONFIRMED),
    ],
)
def test_proof_state(height: int, tip: int, expected: ProcessingStatus) -> None:
    assert proof_state(height, tip) is expected


# --- which state changes leave every output alone (the projector skips their output rows) ---

def _fact_grid(state: ProcessingStatus) -> list[OutputFacts]:
    return [OutputFacts(state=state, is_coinbase=cb, matures_at_height=mat, script_known=known,
                        reserved=res, spent=spent, quarantined=q, preserved_spendable=pres)
            for cb, mat, known, res, spent, q, pres in itertools.product(
                (False, True), (None, 150), (True, False), (False, True), (False, True),
                (False, True), (None, False, True))]


@pytest.mark.parametrize(("before", "after"), list(itertools.permutations(ALL_STATES, 2)))
def test_outputs_unaffected_means_no_output_can_change(before: S, after: S) -> None:
    """Positive space: a move the projector treats as touching no output row classifies every
    possible output alike before and after, at every tip around a maturity boundary. Negative
    space: any other move between two non-preserving states changes some output's category."""
    differs = False
    for facts, moved in zip(_fact_grid(before), _fact_grid(after), strict=True):
        for tip in (None, 149, 150):
            if classify(facts, tip) != classify(moved, tip):
                differs = True
    if outputs_unaffected(before, after):
        assert not differs, (before, after)
        assert before not in SPEC_PRESERVING and after not in SPEC_PRESERVING
    elif before not in SPEC_PRESERVING and after not in SPEC_PRESERVING:
        assert differs, f"{before} -> {after} could skip output rows"


@pytest.mark.parametrize(("before", "after"), list(itertools.permutations(ALL_STATES, 2)))
def test_actions_unaffected_means_no_action_status_can_change(before: S, after: S) -> None:
    """Positive space: a move the projector treats as touching no action row gives every action,
    aborted or not, the same status. Negative space: any other move changes the status of an
    action that is not aborted."""
    same = [action_status(before, aborted=a) == action_status(after, aborted=a)
            for a in (False, True)]
    if actions_unaffected(before, after):
        assert all(same), (before, after)
    else:
        assert not same[0], f"{before} -> {after} could skip action rows"


def test_seen_reports_and_reorgs_of_the_tip_touch_no_action_but_burying_a_block_does() -> None:
    assert actions_unaffected(S.SENT, S.SEEN) and actions_unaffected(S.UNCONFIRMED, S.REORGING)
    assert ACTION_STATUS[S.UNCONFIRMED] != ACTION_STATUS[S.CONFIRMED]
    assert not actions_unaffected(S.UNCONFIRMED, S.CONFIRMED)
    assert not actions_unaffected(S.CONFIRMED, S.REORGING)


def test_the_moves_a_block_and_a_broadcast_make_touch_no_output() -> None:
    assert outputs_unaffected(S.UNCONFIRMED, S.CONFIRMED)
    assert outputs_unaffected(S.SENT, S.SEEN)
    assert not outputs_unaffected(S.CONFIRMED, S.REORGING)
    assert not outputs_unaffected(S.SENDING, S.INVALID)
