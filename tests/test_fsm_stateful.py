"""A hypothesis state machine drives a real ledger with random commands, legal and illegal.

Each run opens one private SQLite ledger (a temp file, on tmpfs when available), funds two users
with proven payments, then
interleaves: payments signed through ``sign_action`` (some ``nosend``), random ``transition``
requests to any of the fourteen states (with and without ``expected_from``), ``record_broadcast``
with random provider answers, proofs mined by the synthetic chain, empty blocks, small reorgs
(sometimes re-mining the orphaned transactions), aborts, ``confirm_unspent`` and malformed or
unknown-target commands.

Each command is checked against an oracle written from SPEC §3/§4, and after every step:
(a) each transaction's state (projection and write model) is the fold of its
``processing.changed`` audit rows, starting at the ``transaction.created`` state;
(b) every ``processing.changed`` row is a legal, non-identity edge of the FSM table;
(c) every ``IllegalTransition`` appended exactly one ``processing.rejected`` row (the per-txid
count of those rows equals the count of refusals seen) and left the state alone;
(d) ``PreconditionFailed`` and the other typed errors appended nothing;
(e) an ``unconfirmed`` transaction's proof block is the chain tip and a proof state's block is on
the active chain; and every few steps and at teardown ``verify_projections().ok``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from adapters.world import World
from ledger import (
    IllegalTransition,
    InvalidInput,
    InvalidProof,
    Ledger,
    LedgerError,
    Outpoint,
    PreconditionFailed,
    ProcessingStatus,
    ProviderResult,
    UnknownAction,
    UnknownTransaction,
    can_transition,
)

S = ProcessingStatus
STATES = list(ProcessingStatus)
PROOF_ONLY = {S.UNCONFIRMED, S.CONFIRMED, S.REORGING}
NEVER_BROADCAST = {S.QUEUED, S.NOSEND, S.NONFINAL}
PROGRESS = [S.QUEUED, S.SENDING, S.SENT, S.SEEN, S.SEEN_MULTI, S.UNCONFIRMED, S.CONFIRMED]
PROVIDER_STATUSES = ["success", "seen", "double_spend", "invalid", "service_error"]
USERS = ["alice", "bob"]
REASONS = ["operator", "Zahlung für Café ☕", "retry after timeout"]
VERIFY_EVERY_STEPS = 8

FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
"""A RAM-backed directory for the run's SQLite file when there is one (no fsync cost)."""

picks = st.integers(min_value=0, max_value=2**16)


def spec_outcome(statuses: list[str]) -> tuple[S, bool]:
    """SPEC §4 broadcast outcome, rules 1-4: (target state, counts an attempt)."""
    if "double_spend" in statuses:
        return S.DOUBLE_SPEND, False
    seen = statuses.count("seen")
    if seen or "success" in statuses:
        return (S.SEEN_MULTI if seen >= 2 else S.SEEN if seen else S.SENT), False
    if all(s == "invalid" for s in statuses):
        return S.INVALID, False
    return S.SENDING, True


class LedgerMachine(RuleBasedStateMachine):
    """One ledger per run; ``self.txids`` lists every stored transaction."""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.mkdtemp(prefix="wl-fsm-", dir=FAST_TMP)
        self.led = Ledger.open(f"sqlite:///{self.tmp}/ledger.db")
        self.world = World(self.led)
        self.world.mine_empty(3)
        self.txids: list[str] = []
        self.actions: list[tuple[str, str]] = []
        self.aborted: set[tuple[str, str]] = set()
        self.rejected: dict[str, int] = {}
        self.counter = 0
        self.steps = 0

    def teardown(self) -> None:
        try:
            report = self.led.verify_projections()
            assert report.ok, report.differences[:3]
        finally:
            self.led.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- helpers -------------------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _pick(self, pick: int) -> str:
        return self.txids[pick % len(self.txids)]

    def _state(self, txid: str) -> S:
        return self.led.get_transaction(txid).state

    def _count(self, txid: str, event: str) -> int:
        return sum(1 for e in self.led.history(txid) if e.event == event)

    def _refused(self, txid: str, before_head: int, before: S, to: S,
                 err: IllegalTransition) -> None:
        """(c): exactly one new event, a processing.rejected row, state unchanged."""
        assert (err.txid, err.from_state, err.to_state) == (txid, before, to)
        assert self.led.head_position() == before_head + 1
        last = self.led.history(txid)[-1]
        assert (last.position, last.event, last.from_state, last.to_state) == (
            before_head + 1, "processing.rejected", before.value, to.value)
        assert self._state(txid) == before
        self.rejected[txid] = self.rejected.get(txid, 0) + 1

    def _nothing_appended(self, error: type[LedgerError], before_head: int, fn: Any,
                          *args: Any, **kwargs: Any) -> None:
        """(d): the typed error, and the log is untouched."""
        with pytest.raises(error):
            fn(*args, **kwargs)
        assert self.led.head_position() == before_head

    # --- rules ---------------------------------------------------------------------------------

    @initialize()
    def funded(self) -> None:
        for user in USERS:
            funds = self.world.fund(user, [60_000, 40_000])
            self.txids.append(funds[0].txid)

    @rule(user=st.sampled_from(USERS),
          amounts=st.lists(st.integers(min_value=2_000, max_value=90_000), min_size=1, max_size=3))
    def fund(self, user: str, amounts: list[int]) -> None:
        funds = self.world.fund(user, amounts)
        self.txids.append(funds[0].txid)
        assert self._state(funds[0].txid) == S.UNCONFIRMED

    @rule(user=st.sampled_from(USERS), pick=picks, nosend=st.booleans(), change=st.booleans())
    def spend(self, user: str, pick: int, nosend: bool, change: bool) -> None:
        spendable = self.led.list_outputs(user, limit=1000).items
        if not spendable:
            return
        out = spendable[pick % len(spendable)]
        ref = self._next("pay")
        pay: list[tuple[int, bytes | None]] = [(out.satoshis // 2, self.world.script())]
        if change:
            pay.append((out.satoshis - out.satoshis // 2 - 100, None))
        raw, _ = self.world.spend(user, ref, [Outpoint(txid=out.txid, vout=out.vout)], pay)
        self.actions.append((user, ref))
        tx = self.led.sign_action(user, ref, raw_tx=raw, nosend=nosend)
        assert tx.state == (S.NOSEND if nosend else S.QUEUED)
        self.txids.append(tx.txid)

    @precondition(lambda self: self.txids)
    @rule(pick=picks, to=st.sampled_from(STATES), reason=st.sampled_from(REASONS),
          expected=st.none() | st.sampled_from(STATES))
    def transition(self, pick: int, to: S, reason: str, expected: S | None) -> None:
        txid = self._pick(pick)
        before, head = self._state(txid), self.led.head_position()
        if expected is not None and expected != before:
            self._nothing_appended(PreconditionFailed, head, self.led.transition, txid, to,
                                   reason=reason, expected_from=expected)
            return
        if to == before:
            assert self.led.transition(txid, to, reason=reason).state == before
            assert self.led.head_position() == head, "the identity move is a no-op"
            return
        if to in PROOF_ONLY:
            self._nothing_appended(PreconditionFailed, head, self.led.transition, txid, to,
                                   reason=reason, expected_from=expected)
            return
        if not can_transition(before, to):
            with pytest.raises(IllegalTransition) as info:
                self.led.transition(txid, to, reason=reason, expected_from=expected)
            self._refused(txid, head, before, to, info.value)
            return
        assert self.led.transition(txid, to, reason=reason, expected_from=expected).state == to
        moved = [e for e in self.led.history(txid) if e.position > head]
        assert [(e.event, e.from_state, e.to_state) for e in moved
                if e.event.startswith("processing.")] == [("processing.changed", before, to)]

    @precondition(lambda self: self.txids)
    @rule(pick=picks, statuses=st.lists(st.sampled_from(PROVIDER_STATUSES), min_size=1,
                                        max_size=4))
    def broadcast(self, pick: int, statuses: list[str]) -> None:
        txid = self._pick(pick)
        before_tx = self.led.get_transaction(txid)
        before, results_before = before_tx.state, self._count(txid, "broadcast.result")
        after_tx = self.led.record_broadcast(
            txid, [ProviderResult(provider=f"p{i}", status=s) for i, s in enumerate(statuses)])
        after = after_tx.state
        target, counts_attempt = spec_outcome(statuses)
        assert self._count(txid, "broadcast.result") == results_before + len(statuses)
        assert after_tx.attempts == before_tx.attempts + (1 if counts_attempt else 0)
        assert after in (before, target), (before, statuses, after)
        if before in PROGRESS and target in PROGRESS:
            ahead = PROGRESS.index(before) >= PROGRESS.index(target)
            assert after == (before if ahead else target), (before, statuses, after)
        if "success" in statuses or "seen" in statuses:
            assert after_tx.was_broadcast

    @precondition(lambda self: self.txids)
    @rule(pick=picks)
    def prove(self, pick: int) -> None:
        txid = self._pick(pick)
        block = self.world.mine([txid])
        before, head = self._state(txid), self.led.head_position()
        try:
            tx = self.led.record_proof(txid, block.bumps[txid])
        except IllegalTransition as err:
            assert not can_transition(before, S.UNCONFIRMED), before
            self._refused(txid, head, before, S.UNCONFIRMED, err)
            assert before not in (S.UNCONFIRMED, S.CONFIRMED, S.REORGING)
            return
        assert before not in (S.INVALID, S.DOUBLE_SPEND), "a toxic transaction took a proof"
        assert tx.height == block.height and tx.block_hash == block.hash
        assert tx.state == (S.CONFIRMED if before == S.CONFIRMED else S.UNCONFIRMED)

    @rule(blocks=st.integers(min_value=1, max_value=2))
    def mine(self, blocks: int) -> None:
        waiting = [t for t in self.txids if self._state(t) == S.UNCONFIRMED]
        self.world.mine_empty(blocks)
        for txid in waiting:
            assert self._state(txid) == S.CONFIRMED, "the tip advance promotes"

    @rule(depth=st.integers(min_value=1, max_value=2), remine=st.booleans())
    def reorg(self, depth: int, remine: bool) -> None:
        orphaned = {b.hash for b in self.world.chain[-depth:]}
        on_orphans = [t for t in self.txids if self.led.get_transaction(t).block_hash in orphaned]
        before = {t: self._state(t) for t in on_orphans}
        replacement: list[list[str]] = [[] for _ in range(depth + 1)]
        if remine:
            replacement[0] = list(on_orphans)
        new, update = self.world.reorg(depth, replacement, salt=self._next("fork"))
        assert {h.hash for h in update.disconnected} == orphaned
        for txid in on_orphans:
            tx = self.led.get_transaction(txid)
            assert tx.block_hash is None and tx.height is None
            if before[txid] in (S.UNCONFIRMED, S.CONFIRMED):
                assert tx.state == S.REORGING, "a lost block sends its transactions to reorging"
                assert txid in update.affected_txids
            else:
                assert tx.state == before[txid]
        if remine:
            for txid in on_orphans:
                state = self._state(txid)
                if state == S.REORGING:
                    proven = self.led.record_proof(txid, new[0].bumps[txid])
                    assert proven.state == S.CONFIRMED and proven.height == new[0].height

    @precondition(lambda self: self.actions)
    @rule(pick=picks, reason=st.sampled_from(REASONS))
    def abort(self, pick: int, reason: str) -> None:
        user, ref = self.actions[pick % len(self.actions)]
        action = self.led.get_action(user, ref)
        head = self.led.head_position()
        assert action.txid is not None
        state = self._state(action.txid)
        if (user, ref) in self.aborted:
            assert self.led.abort_action(user, ref, reason=reason).status == "failed"
            assert self.led.head_position() == head, "a repeated abort is a no-op"
        elif state in NEVER_BROADCAST:
            assert self.led.abort_action(user, ref, reason=reason).status == "failed"
            assert self._state(action.txid) == S.INVALID
            self.aborted.add((user, ref))
        else:
            self._nothing_appended(PreconditionFailed, head, self.led.abort_action, user, ref,
                                   reason=reason)

    @rule(user=st.sampled_from(USERS))
    def confirm_unspent(self, user: str) -> None:
        held = [o for o in self.led.list_outputs(user, spendable=None, limit=1000).items
                if o.category == "quarantined"]
        head = self.led.head_position()
        if not held:
            mine = self.led.list_outputs(user, spendable=None, limit=1).items
            if mine:
                op = Outpoint(txid=mine[0].txid, vout=mine[0].vout)
                self._nothing_appended(PreconditionFailed, head, self.led.confirm_unspent, [op],
                                       reason="utxo check")
            return
        ops = [Outpoint(txid=o.txid, vout=o.vout) for o in held]
        self.led.confirm_unspent(ops, reason="utxo check")
        assert self.led.head_position() > head
        after = {(o.txid, o.vout): o.category
                 for o in self.led.list_outputs(user, spendable=None, limit=1000).items}
        assert all(after.get((o.txid, o.vout)) != "quarantined" for o in held)

    @rule(kind=st.sampled_from(["unknown-txid", "bad-txid", "bad-state", "bad-bump",
                                "unknown-action", "foreign-bump"]), pick=picks)
    def bad_command(self, kind: str, pick: int) -> None:
        head = self.led.head_position()
        led = self.led
        if kind == "unknown-txid":
            self._nothing_appended(UnknownTransaction, head, led.transition, "ee" * 32, "sending",
                                   reason="x")
        elif kind == "bad-txid":
            self._nothing_appended(InvalidInput, head, led.record_broadcast, "xyz",
                                   [ProviderResult(provider="p", status="seen")])
        elif kind == "bad-state" and self.txids:
            self._nothing_appended(InvalidInput, head, led.transition, self._pick(pick), "done",
                                   reason="x")
        elif kind == "bad-bump" and self.txids:
            self._nothing_appended(InvalidProof, head, led.record_proof, self._pick(pick),
                                   b"\x01\x02garbage")
        elif kind == "foreign-bump" and len(self.txids) > 1:
            txid = self._pick(pick)
            other = next(t for t in self.txids if t != txid)
            bump = self.world.chain[-1].bumps.get(other)
            if bump is not None:
                self._nothing_appended(InvalidProof, head, led.record_proof, txid, bump)
        elif kind == "unknown-action":
            self._nothing_appended(UnknownAction, head, led.abort_action, "carol", "none",
                                   reason="x")

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def states_are_the_fold_of_their_history(self) -> None:
        self.steps += 1
        tip = self.world.tip_height
        active = {b.hash for b in self.world.chain}
        for txid in self.txids:
            history = self.led.history(txid)
            assert history[0].event == "transaction.created", history[0]
            assert history[0].to_state is not None
            state = S(history[0].to_state)
            rejected = 0
            for entry in history[1:]:
                if entry.event == "processing.changed":
                    src, dst = S(entry.from_state), S(entry.to_state)
                    assert src == state, f"{txid}: change from {src} while in {state}"
                    assert src != dst and can_transition(src, dst), f"illegal edge {src}->{dst}"
                    state = dst
                elif entry.event == "processing.rejected":
                    rejected += 1
                    assert not can_transition(S(entry.from_state), S(entry.to_state))
                    assert S(entry.from_state) == state
            tx = self.led.get_transaction(txid)
            assert tx.state == state, f"{txid}: stored {tx.state}, history folds to {state}"
            assert self.led._app._tx(txid).state == state, "write model agrees"
            assert rejected == self.rejected.get(txid, 0), "one rejection row per refusal"
            if tx.state == S.UNCONFIRMED:
                assert tx.height == tip, f"unconfirmed at {tx.height}, tip {tip}"
            if tx.state in (S.UNCONFIRMED, S.CONFIRMED):
                assert tx.block_hash in active, "a proof state needs an active block"

    @invariant()
    def projections_match_a_rebuild(self) -> None:
        if self.steps % VERIFY_EVERY_STEPS == 0:
            report = self.led.verify_projections()
            assert report.ok, report.differences[:3]


LedgerMachine.TestCase.settings = settings(
    max_examples=25, stateful_step_count=30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TestLedgerStateMachine = LedgerMachine.TestCase
