"""Value conservation under random reorgs (after Bitcoin Core's wallet notifications fuzz target).

Two users pay each other with zero-fee transactions while blocks connect and disconnect at
random. After every step the sum over both users of spendable + pending + immature + reserved is
constant, and the incremental projections equal a rebuild from zero.
"""

from __future__ import annotations

import itertools
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger, NewOutput, ProcessingStatus, ProviderResult

USERS = ("alice", "bob")
FUNDING_SATS = 100_000


class Conservation(RuleBasedStateMachine):
    """Random payments, proofs, blocks and reorgs over one ledger."""

    def __init__(self) -> None:
        super().__init__()
        self._dir = tempfile.TemporaryDirectory()
        self.led = Ledger.open(f"sqlite:///{Path(self._dir.name) / 'c.db'}")
        self.world = World(self.led)
        self.refs = itertools.count()
        self.unproven: list[str] = []
        self.forks = itertools.count()

    def teardown(self) -> None:
        self.led.close()
        self._dir.cleanup()

    @initialize()
    def fund(self) -> None:
        self.world.mine_empty(3)
        for user in USERS:
            self.world.fund(user, [FUNDING_SATS // 2, FUNDING_SATS // 2])
        self.total = self._total()
        assert self.total == FUNDING_SATS * len(USERS)

    def _total(self) -> int:
        sums = [self.led.balance(u) for u in USERS]
        return sum(b.spendable + b.pending + b.immature + b.reserved for b in sums)

    @rule(payer=st.sampled_from(USERS), share=st.integers(1, 99))
    def pay(self, payer: str, share: int) -> None:
        coins = self.led.list_outputs(payer, limit=1).items
        if not coins:
            return
        coin = coins[0]
        payee = USERS[1 - USERS.index(payer)]
        to_payee = max(1, coin.satoshis * share // 100)
        change = coin.satoshis - to_payee
        ref = f"p{next(self.refs)}"
        payee_script, change_script = self.world.script(), self.world.script()
        outputs = [NewOutput(vout=0, satoshis=to_payee, locking_script=payee_script, basket=None)]
        if change:
            outputs.append(NewOutput(vout=1, satoshis=change, locking_script=change_script))
        self.led.create_action(payer, ref, description="zero-fee payment", outputs=outputs,
                               inputs=[f"{coin.txid}:{coin.vout}"])
        raw = chainkit.make_tx([(coin.txid, coin.vout)],
                               [(o.satoshis, o.locking_script) for o in outputs])
        txid = self.led.sign_action(payer, ref, raw_tx=raw).txid
        self.led.record_broadcast(txid, [ProviderResult(provider="arc", status="success")])
        self.led.internalize_action(payee, beef=chainkit.make_beef("V2", raw),
                                    description="received", outputs=[InternalizeOutput(vout=0)])
        self.unproven.append(txid)

    @precondition(lambda self: bool(self.unproven))
    @rule(count=st.integers(1, 3))
    def mine_with_proofs(self, count: int) -> None:
        txids, self.unproven = self.unproven[:count], self.unproven[count:]
        self.world.prove(txids)

    @rule(blocks=st.integers(1, 3))
    def mine_empty(self, blocks: int) -> None:
        self.world.mine_empty(blocks)

    @rule(depth=st.integers(1, 3))
    def reorg(self, depth: int) -> None:
        depth = min(depth, len(self.world.chain) - 1)
        self.world.reorg(depth, [[]] * (depth + 1), salt=f"fork-{next(self.forks)}")
        for user in USERS:
            for action in self.led.list_actions(user, limit=1000).items:
                if action.txid and action.txid not in self.unproven and \
                        self.led.get_transaction(action.txid).state == ProcessingStatus.REORGING:
                    self.unproven.append(action.txid)

    @invariant()
    def value_is_conserved(self) -> None:
        if hasattr(self, "total"):
            assert self._total() == self.total

    @invariant()
    def projections_equal_a_rebuild(self) -> None:
        assert self.led.verify_projections().ok


TestConservation = Conservation.TestCase
TestConservation.settings = settings(
    max_examples=12, stateful_step_count=15, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
