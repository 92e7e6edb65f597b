"""Random command histories on both backends: the projections always equal a rebuild from zero
and an independent fold of the log.

A hypothesis state machine drives one fresh ledger per example (a new SQLite file, or a new
PostgreSQL schema) with: proven third-party receipts (``World.fund``) into several baskets with
labels, coinbase receipts, payments created -> signed -> broadcast with random provider answers
(``success``, ``seen``, ``double_spend``, ``invalid``, ``service_error``), some signed ``nosend``
or left ``queued``, some taken by a payee (tagged), drafts that only reserve, late signing of those
drafts, aborts, random ``transition`` requests (``invalid``, ``frozen``, ``unfail``, ...),
attempts to reserve an already reserved/spent/quarantined output, ``confirm_unspent``, proofs,
empty blocks (also 100 at once, so coinbases mature), small reorgs (sometimes re-mining the
orphaned transactions), notes, and blue/green rebuilds in the middle of the history.

Checked (each guards against projections that drift from the log):
- after every step, each user's balance and each touched transaction's state equal what the
  independent fold (``tests/fold_oracle.py``, no ``projections`` code) derives from the log;
- at checkpoints and at the end, every query result equals the fold, and
  ``verify_projections().ok``;
- a rebuild (mid-history and at the end) reproduces every query result exactly
  (``tests/query_capture.py``: outputs for spendable True/False/None per basket and per tag
  filter, actions with and without label/status filters, balances per user and basket,
  ``get_transaction``/``history`` of every txid, ``explain_output`` of every output row), and the
  inline projections keep matching after the swap;
- ``as_of(head)`` answers exactly what the live tables answer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import new_pg_schema
from fold_oracle import Fold, read_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from query_capture import assert_matches_fold, capture, capture_differences

from adapters import chainkit
from adapters.world import World
from ledger import (
    IllegalTransition,
    InternalizeOutput,
    InvalidInput,
    Ledger,
    NewOutput,
    Outpoint,
    OutputAlreadyReserved,
    OutputNotSpendable,
    PreconditionFailed,
    ProcessingStatus,
    ProviderResult,
)
from projections import replay, stores

S = ProcessingStatus
USERS = ("alice", "bob", "carol")
BASKETS = ("default", "savings")
TAGS = ("gift", "rent", "travel")
LABELS = ("salary", "rent", "coffee")
PROVIDER_STATUSES = ("success", "seen", "double_spend", "invalid", "service_error")
NEVER_BROADCAST = {S.QUEUED, S.NOSEND, S.NONFINAL}
REBUILD_EVERY_STEPS = 10
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None

picks = st.integers(min_value=0, max_value=2**16)
UrlFactory = Callable[[], str]


@pytest.fixture
def new_ledger_url(ledger_url: str, tmp_path: Path) -> Iterator[UrlFactory]:
    """A factory of empty-ledger URLs on the backend of ``ledger_url``: one per hypothesis example
    (a fresh SQLite file, or a fresh PostgreSQL schema), so examples never share state."""
    made: list[str] = []

    def make() -> str:
        if ledger_url.startswith("sqlite"):
            folder = tempfile.mkdtemp(prefix="wl-prop-", dir=FAST_TMP)
            made.append(folder)
            return f"sqlite:///{folder}/ledger.db"
        return new_pg_schema(ledger_url.split("?", 1)[0])

    yield make
    for folder in made:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def parallel_audit(on: bool) -> Iterator[None]:
    """Rebuilds in the body load ``tx_audit`` in a second process whatever the log's length."""
    saved = replay.PARALLEL_AUDIT_MIN_EVENTS
    replay.PARALLEL_AUDIT_MIN_EVENTS = 0 if on else saved
    try:
        yield
    finally:
        replay.PARALLEL_AUDIT_MIN_EVENTS = saved


class ProjectionMachine(RuleBasedStateMachine):
    """One ledger per example; ``self.fold`` follows the log incrementally."""

    def __init__(self, new_url: UrlFactory) -> None:
        super().__init__()
        self.led = Ledger.open(new_url())
        self.world = World(self.led)
        self.world.mine_empty(3)
        self.fold = Fold()
        self.txids: list[str] = []
        self.own: list[str] = []
        """Transactions our users signed (the ones operators and broadcasts mostly act on)."""
        self.coinbases: set[str] = set()
        self.received: list[str] = []
        """Third-party payments, which another user may take outputs of too (a shared output)."""
        self.drafts: dict[tuple[str, str], bytes] = {}
        self.outgoing: list[tuple[str, str]] = []
        self.counter = 0
        self.steps = 0
        self.rebuilt_at = 0

    # --- helpers -------------------------------------------------------------------------------

    def _next(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    @staticmethod
    def _pick(pick: int, *, pool: list[str]) -> str:
        assert pool
        return pool[pick % len(pool)]

    def _coins(self, user: str) -> list[Outpoint]:
        found = self.led.list_outputs(user, basket=None, limit=1000).items
        return [Outpoint(txid=o.txid, vout=o.vout) for o in found]

    def _sync(self) -> set[str]:
        """Feed the fold the new events; returns the txids they touch."""
        touched: set[str] = set()
        for position, event in read_log(self.led, after=self.fold.position):
            self.fold.apply(position, event)
            txid = getattr(event, "txid", None)
            if isinstance(txid, str):
                touched.add(txid)
        return touched

    def _unchanged(self, error: type[Exception], fn: Callable[..., object], *args: object,
                   **kwargs: object) -> None:
        head = self.led.head_position()
        with pytest.raises(error):
            fn(*args, **kwargs)
        assert self.led.head_position() == head, "a refused command appended nothing"

    def _full_check(self, where: str, *, final: bool) -> None:
        """Every query equals the fold; a rebuild changes no query result; verify is clean.
        Mid-history checkpoints ask the oracle's queries only, and rebuild with the audit table
        loaded by a second process (as long logs are), which verify then holds to the one-pass
        fold; the final one rebuilds in one pass, asks every query and compares ``as_of(head)``."""
        self._sync()
        report = self.led.verify_projections()
        assert report.ok, (where, report.differences[:3])
        before = capture(self.led, self.fold, full=final)
        assert_matches_fold(before, self.fold, where=f"live, {where}")
        with parallel_audit(not final):
            rebuilt = self.led.rebuild_projections()
        assert rebuilt.position == self.led.head_position() == self.fold.position
        if not final:
            report = self.led.verify_projections()
            assert report.ok, (f"audit loaded beside the rebuild, {where}", report.differences[:3])
        after = capture(self.led, self.fold, full=final)
        diff = capture_differences(before, after)
        assert not diff, f"{where}: the rebuild changed {len(diff)} results:\n" + "\n".join(diff[:5])
        if final:
            replay = capture(self.led.as_of(self.led.head_position()), self.fold)
            diff = capture_differences(before, replay)
            assert not diff, f"{where}: as_of(head) differs from live:\n" + "\n".join(diff[:5])
        self.rebuilt_at = self.steps

    # --- rules ---------------------------------------------------------------------------------

    @initialize(user=st.sampled_from(USERS), basket=st.sampled_from(BASKETS))
    def first_funds(self, user: str, basket: str) -> None:
        for who in USERS:
            self.txids.append(self.world.fund(who, [40_000, 25_000], labels=["salary"])[0].txid)
        self.txids.append(self.world.fund(user, [12_000], basket=basket)[0].txid)

    @rule(kind=st.sampled_from(["payment", "payment", "coinbase"]), user=st.sampled_from(USERS),
          basket=st.sampled_from(BASKETS),
          amounts=st.lists(st.integers(min_value=1_000, max_value=50_000), min_size=1, max_size=3),
          label=st.none() | st.sampled_from(LABELS))
    def receive(self, kind: str, user: str, basket: str, amounts: list[int],
                label: str | None) -> None:
        """A proven third-party payment (``World.fund``) or a block reward of ours."""
        if kind == "payment":
            funds = self.world.fund(user, amounts, basket=basket, labels=[label] if label else [])
            self.txids.append(funds[0].txid)
            self.received.append(funds[0].txid)
            return
        raw = chainkit.make_coinbase(self.world.tip_height + 1,
                                     [(amounts[0] * 10_000, self.world.script())])
        txid = chainkit.txid_of(raw)
        block = self.world.mine([txid])
        self.led.internalize_action(
            user, beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
            description="block reward", outputs=[InternalizeOutput(vout=0, basket="mining")])
        assert self.led.get_transaction(txid).is_coinbase
        self.txids.append(txid)
        self.coinbases.add(txid)

    @precondition(lambda self: self.received)
    @rule(user=st.sampled_from(USERS), pick=picks, basket=st.sampled_from(BASKETS))
    def share(self, user: str, pick: int, basket: str) -> None:
        """Another user takes output 0 of a payment someone received: an outpoint two users
        hold, whose spender (reservation, spend, quarantine) shows on both rows."""
        txid = self._pick(pick, pool=self.received)
        bump = next((b.bumps[txid] for b in self.world.chain if txid in b.bumps), None)
        raw = self.led.get_transaction(txid).raw_tx
        if bump is None or raw is None or self.led.get_transaction(txid).state not in (
                S.UNCONFIRMED, S.CONFIRMED):
            return  # its block was reorged away: nothing to prove it with
        self.led.internalize_action(
            user, beef=chainkit.make_beef("V1", raw, bump=bump), description="shared",
            outputs=[InternalizeOutput(vout=0, basket=basket)])

    def _pay(self, user: str, pick: int, two: bool, share: int, basket: str, tags: list[str],
             labels: list[str], how: str, results: list[str], payee: str | None) -> None:
        """create -> sign (queued or nosend) -> record_broadcast; the payee may take output 0."""
        coins = self._coins(user)
        if not coins:
            return
        inputs = list(dict.fromkeys([coins[pick % len(coins)], coins[(pick + 1) % len(coins)]
                                     if two else coins[pick % len(coins)]]))
        total = sum(self.fold.outputs[(user, i.txid, i.vout)].satoshis for i in inputs)
        paid = max(1, total * share // 100)
        outputs = [NewOutput(vout=0, satoshis=paid, locking_script=self.world.script(),
                             basket=None)]
        if total - paid:
            outputs.append(NewOutput(vout=1, satoshis=total - paid,
                                     locking_script=self.world.script(), basket=basket,
                                     tags=tags, change=True))
        ref = self._next("pay")
        self.led.create_action(user, ref, description="payment", outputs=outputs,
                               inputs=inputs, labels=labels)
        raw = chainkit.make_tx([(i.txid, i.vout) for i in inputs],
                               [(o.satoshis, o.locking_script) for o in outputs])
        tx = self.led.sign_action(user, ref, raw_tx=raw, nosend=how == "nosend")
        self.outgoing.append((user, ref))
        self.txids.append(tx.txid)
        self.own.append(tx.txid)
        if how == "broadcast":
            self.led.record_broadcast(tx.txid, [ProviderResult(provider=f"p{i}", status=s)
                                                for i, s in enumerate(results)])
        if payee is not None:
            self.led.internalize_action(
                payee, beef=chainkit.make_beef("V2", raw), description="received",
                outputs=[InternalizeOutput(vout=0, basket="default", tags=["gift"])],
                labels=["incoming"])

    @rule(user=st.sampled_from(USERS), pick=picks, two=st.booleans(),
          share=st.integers(min_value=0, max_value=100), basket=st.sampled_from(BASKETS),
          tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
          labels=st.lists(st.sampled_from(LABELS), max_size=2, unique=True),
          how=st.sampled_from(["broadcast", "broadcast", "nosend", "queued"]),
          results=st.lists(st.sampled_from(PROVIDER_STATUSES), min_size=1, max_size=3))
    def pay_outsider(self, user: str, pick: int, two: bool, share: int, basket: str,
                     tags: list[str], labels: list[str], how: str, results: list[str]) -> None:
        self._pay(user, pick, two, share, basket, tags, labels, how, results, None)

    @rule(user=st.sampled_from(USERS), payee=st.sampled_from(USERS), pick=picks,
          two=st.booleans(), share=st.integers(min_value=0, max_value=100),
          basket=st.sampled_from(BASKETS),
          tags=st.lists(st.sampled_from(TAGS), max_size=2, unique=True),
          how=st.sampled_from(["broadcast", "broadcast", "nosend"]),
          results=st.lists(st.sampled_from(PROVIDER_STATUSES), min_size=1, max_size=3))
    def pay_user(self, user: str, payee: str, pick: int, two: bool, share: int, basket: str,
                 tags: list[str], how: str, results: list[str]) -> None:
        self._pay(user, pick, two, share, basket, tags, ["rent"], how, results, payee)

    @rule(user=st.sampled_from(USERS), pick=picks, twice=st.booleans())
    def reserve_only(self, user: str, pick: int, twice: bool) -> None:
        """A draft that holds one input; with ``twice``, first try an already held input (a
        local double spend), which must be refused with nothing appended."""
        listed = self.led.list_outputs(user, basket=None, spendable=None, limit=1000).items
        held = [o for o in listed if o.category in ("reserved", "spent", "quarantined")]
        if twice and held:
            coin = held[pick % len(held)]
            error = OutputNotSpendable if coin.category == "quarantined" else \
                OutputAlreadyReserved
            out = NewOutput(vout=0, satoshis=coin.satoshis, locking_script=self.world.script(),
                            basket=None)
            self._unchanged(error, self.led.create_action, user, self._next("twice"),
                            description="double spend attempt", outputs=[out],
                            inputs=[Outpoint(txid=coin.txid, vout=coin.vout)])
        coins = [o for o in listed if o.spendable]
        if not coins:
            return
        coin = coins[pick % len(coins)]
        out = NewOutput(vout=0, satoshis=coin.satoshis, locking_script=self.world.script(),
                        basket=None)
        ref = self._next("draft")
        self.led.create_action(user, ref, description="draft", outputs=[out],
                               inputs=[Outpoint(txid=coin.txid, vout=coin.vout)],
                               labels=["coffee"])
        self.drafts[(user, ref)] = chainkit.make_tx([(coin.txid, coin.vout)],
                                                    [(coin.satoshis, out.locking_script)])
        self.outgoing.append((user, ref))

    @precondition(lambda self: self.drafts)
    @rule(pick=picks, nosend=st.booleans())
    def sign_draft(self, pick: int, nosend: bool) -> None:
        key = sorted(self.drafts)[pick % len(self.drafts)]
        raw = self.drafts.pop(key)
        tx = self.led.sign_action(*key, raw_tx=raw, nosend=nosend)
        assert tx.state == (S.NOSEND if nosend else S.QUEUED)
        self.txids.append(tx.txid)
        self.own.append(tx.txid)

    @precondition(lambda self: self.outgoing)
    @rule(pick=picks)
    def abort(self, pick: int) -> None:
        user, ref = self.outgoing[pick % len(self.outgoing)]
        action = self.led.get_action(user, ref)
        state = None if action.txid is None else self.led.get_transaction(action.txid).state
        if self.fold.actions[(user, ref)].aborted:
            head = self.led.head_position()
            assert self.led.abort_action(user, ref, reason="again").status == "failed"
            assert self.led.head_position() == head, "a repeated abort is a no-op"
        elif state is not None and state in NEVER_BROADCAST and \
                self.fold.txs[str(action.txid)].was_broadcast:
            # requeued after a provider accepted it: see the xfail test below; either answer
            # keeps the projections consistent, which is what this machine checks
            with contextlib.suppress(PreconditionFailed):
                self.led.abort_action(user, ref, reason="requeued")
                self.drafts.pop((user, ref), None)
        elif state is None or state in NEVER_BROADCAST:
            assert self.led.abort_action(user, ref, reason="changed my mind").status == "failed"
            self.drafts.pop((user, ref), None)
        else:
            self._unchanged(PreconditionFailed, self.led.abort_action, user, ref, reason="late")

    @precondition(lambda self: self.own)
    @rule(pick=picks, anyone=st.booleans(),
          to=st.sampled_from([S.INVALID, S.FROZEN, S.UNFAIL, S.UNFAIL, S.QUEUED, S.SENDING,
                              S.SENT, S.SEEN, S.SEEN_MULTI, S.DOUBLE_SPEND, S.NOSEND, None]))
    def operate(self, pick: int, anyone: bool, to: S | None) -> None:
        """An operator's ``transition`` (legal or not), or a note (``to`` None)."""
        txid = self._pick(pick, pool=self.txids if anyone else self.own)
        if to is None:
            self.led.note(txid, "operator.comment", text="looked at it", ticket=pick)
            return
        with contextlib.suppress(IllegalTransition, PreconditionFailed):
            self.led.transition(txid, to, reason="operator", actor="ops")

    @precondition(lambda self: self.own)
    @rule(pick=picks, anyone=st.booleans(),
          results=st.lists(st.sampled_from(PROVIDER_STATUSES), min_size=1, max_size=3))
    def broadcast(self, pick: int, anyone: bool, results: list[str]) -> None:
        txid = self._pick(pick, pool=self.txids if anyone else self.own)
        self.led.record_broadcast(txid, [ProviderResult(provider=f"p{i}", status=s)
                                         for i, s in enumerate(results)])

    @precondition(lambda self: any(o.quarantined for o in self.fold.outputs.values()))
    @rule(user=st.sampled_from(USERS))
    def confirm_unspent(self, user: str) -> None:
        """Release every quarantined input of ``user``: one call per round with at most one
        input of each holding action (two of one action in one call: see the xfail test)."""
        held = [o for o in self.led.list_outputs(user, basket=None, spendable=None,
                                                 limit=1000).items if o.category == "quarantined"]
        rounds: dict[str, list[Outpoint]] = {}
        for o in held:
            holder = self.fold.outputs[(user, o.txid, o.vout)].spender_reference
            assert holder is not None, "a quarantined input names the action that held it"
            rounds.setdefault(holder, []).append(Outpoint(txid=o.txid, vout=o.vout))
        while any(rounds.values()):
            batch = [ops.pop() for ops in rounds.values() if ops]
            self.led.confirm_unspent(batch, reason="utxo check: unspent", actor="monitor")
        assert self.led.balance(user).quarantined == 0

    @rule(pick=picks, also=picks, anyone=st.booleans(), two=st.booleans())
    def prove(self, pick: int, also: int, anyone: bool, two: bool) -> None:
        pool = [t for t in (self.txids if anyone or not self.own else self.own)
                if t not in self.coinbases]
        txids = list(dict.fromkeys([self._pick(pick, pool=pool), self._pick(also, pool=pool)]
                                   if two else [self._pick(pick, pool=pool)]))
        block = self.world.mine(txids)
        for txid in txids:
            with contextlib.suppress(IllegalTransition):
                self.led.record_proof(txid, block.bumps[txid])

    @rule(blocks=st.sampled_from([1, 1, 2, 100]))
    def mine(self, blocks: int) -> None:
        self.world.mine_empty(blocks)

    @rule(depth=st.integers(min_value=1, max_value=3), remine=st.booleans())
    def reorg(self, depth: int, remine: bool) -> None:
        depth = min(depth, len(self.world.chain) - 1)
        orphaned = {b.hash for b in self.world.chain[-depth:]}
        replacement: list[list[str]] = [[] for _ in range(depth + 1)]
        if remine:
            replacement[0] = [t for t in self.txids if t not in self.coinbases
                              and self.led.get_transaction(t).block_hash in orphaned]
        new, _ = self.world.reorg(depth, replacement, salt=self._next("fork"))
        for txid in replacement[0]:
            if self.led.get_transaction(txid).state == S.REORGING:
                self.led.record_proof(txid, new[0].bumps[txid])

    @precondition(lambda self: self.steps - self.rebuilt_at >= REBUILD_EVERY_STEPS)
    @rule()
    def rebuild_in_the_middle(self) -> None:
        self._full_check(f"rebuild after step {self.steps}", final=False)

    # --- invariants ----------------------------------------------------------------------------

    @invariant()
    def balances_and_states_follow_the_log(self) -> None:
        self.steps += 1
        touched = self._sync()
        for user in self.fold.users:
            want = self.fold.balance(user)
            got = self.led.balance(user).model_dump()
            assert got == want, f"balance of {user}: projection {got}, fold {want}"
        for txid in touched & self.fold.txs.keys():
            got_state = self.led.get_transaction(txid).state.value
            assert got_state == self.fold.txs[txid].state, (txid, got_state)

    def teardown(self) -> None:
        try:
            self._full_check("end of history", final=True)
            self.world.fund("alice", [1_000], basket="after-swap")
            self.balances_and_states_follow_the_log()
            report = self.led.verify_projections()
            assert report.ok, ("inline writes into the swapped-in tables", report.differences[:3])
        finally:
            self.led.close()


SETTINGS = settings(max_examples=10, stateful_step_count=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
PG_EXAMPLES = 6
"""PostgreSQL runs the same projector code through its own SQL store; fewer examples keep the
suite's wall time in budget (each PostgreSQL query costs ~3x a SQLite one here)."""


def test_projections_equal_a_rebuild_and_the_fold_after_random_histories(
        new_ledger_url: UrlFactory, ledger_url: str) -> None:
    """Guards against incremental (inline) projections drifting from a rebuild from zero or
    from the log's meaning, for any interleaving of commands, on SQLite and on PostgreSQL."""
    chosen = SETTINGS if ledger_url.startswith("sqlite") else \
        settings(SETTINGS, max_examples=PG_EXAMPLES)
    run_state_machine_as_test(lambda: ProjectionMachine(new_ledger_url), settings=chosen)


# --- found by the property ------------------------------------------------------------------

def test_confirm_unspent_releases_two_inputs_of_one_action_in_one_call(
        led: Ledger, world: World) -> None:
    """Guards against a UTXO check that can never release a lost double spend's inputs: a
    payment with two inputs that is double-spent quarantines both, and the monitor's natural
    call names both outpoints. Today it raises ConcurrencyConflict ("safe to retry") forever."""
    funds = world.fund("bob", [5_000, 6_000])
    raw, _ = world.spend("bob", "both", funds, [(11_000, world.script())])
    txid = led.sign_action("bob", "both", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="double_spend")])
    assert led.balance("bob").quarantined == 11_000
    led.confirm_unspent(funds, reason="utxo check: both unspent")
    assert (led.balance("bob").quarantined, led.balance("bob").spendable) == (0, 11_000)
    assert led.verify_projections().ok


def test_confirm_unspent_with_a_repeated_outpoint_is_refused_or_released_once(
        led: Ledger, world: World) -> None:
    """Guards against a duplicate in a monitor's batch turning into ConcurrencyConflict ("safe
    to retry", though no retry can ever succeed) instead of a typed answer."""
    funds = world.fund("bob", [5_000])
    raw, _ = world.spend("bob", "lost", funds, [(5_000, world.script())])
    txid = led.sign_action("bob", "lost", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="double_spend")])
    head = led.head_position()
    try:
        led.confirm_unspent([funds[0], funds[0]], reason="utxo check")
    except InvalidInput:
        assert led.head_position() == head
        return
    assert led.balance("bob").spendable == 5_000


@pytest.mark.parametrize("verdict", ["invalid", "double_spend"])
def test_inputs_of_an_unfailed_spender_that_is_broadcast_again_are_not_spendable(
        led: Ledger, world: World, verdict: str) -> None:
    """Guards against the wallet building a second transaction on an input its own re-broadcast
    transaction already spends (a self-inflicted double spend after an operator's unfail)."""
    funds = world.fund("bob", [5_000])
    raw, _ = world.spend("bob", "retry", funds, [(5_000, world.script())])
    txid = led.sign_action("bob", "retry", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status=verdict)])
    if verdict == "double_spend":
        led.confirm_unspent(funds, reason="utxo check: unspent")
    assert led.balance("bob").spendable == 5_000, "released while the spender is toxic"
    led.transition(txid, S.UNFAIL, reason="operator re-review", actor="ops")
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="success")])
    assert led.get_transaction(txid).state == S.SENT
    assert led.explain_output("bob", funds[0]).category == "spent"
    assert led.balance("bob").spendable == 0
    with pytest.raises(OutputAlreadyReserved):
        led.create_action("bob", "again", description="second spend", inputs=funds,
                          outputs=[NewOutput(vout=0, satoshis=5_000,
                                             locking_script=world.script(), basket=None)])


def test_a_transaction_the_network_accepted_cannot_be_aborted_after_a_requeue(
        led: Ledger, world: World) -> None:
    """Guards against releasing the inputs of a transaction that may be mined any moment: the
    wallet would then spend them again (a self-inflicted double spend)."""
    funds = world.fund("bob", [5_000])
    raw, _ = world.spend("bob", "seen", funds, [(5_000, world.script())])
    txid = led.sign_action("bob", "seen", raw_tx=raw).txid
    led.record_broadcast(txid, [ProviderResult(provider="arc", status="seen")])
    led.transition(txid, S.SENDING, reason="retry", actor="ops")
    led.transition(txid, S.QUEUED, reason="requeue", actor="ops")
    assert led.get_transaction(txid).was_broadcast
    head = led.head_position()
    with pytest.raises(PreconditionFailed):
        led.abort_action("bob", "seen", reason="changed my mind")
    assert led.head_position() == head
    assert led.balance("bob").spendable == 0


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(_JSON_VALUES)
@settings(max_examples=300, deadline=None)
def test_row_json_reads_back_as_the_value_and_is_one_text_per_value(value: object) -> None:
    """JSON columns are written by ``msgspec``: ``json`` reads back the value written, and
    equal values are written as the same compact, key-sorted text whatever their dicts'
    insertion order (the inline path and a rebuild write the same bytes)."""
    text = stores._to_json(value)
    assert json.loads(text) == value
    assert text == stores._to_json(json.loads(json.dumps(value, sort_keys=True)))
    assert json.dumps(json.loads(text), separators=(",", ":"), sort_keys=True) == json.dumps(
        value, separators=(",", ":"), sort_keys=True)
