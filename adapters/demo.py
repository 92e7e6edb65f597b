"""The ``wallet-ledger demo`` story: a realistic, deterministic wallet life on a synthetic chain.

Everything goes through the public :class:`ledger.Ledger` API, driven by
:class:`adapters.world.World` (real merkle roots and BUMPs, nothing reaches the network). The
same inputs always give the same txids and log positions; only the wall-clock times differ.

The story: a header chain; alice, bob and carol receive proven third-party payments; alice pays
bob (the first broadcast provider is down, the second accepts) and bob pays carol on top of that
unconfirmed output; carol's next payment is rejected by every provider, which releases her
input; a block proves both payments, a 2-block reorg sends them to ``reorging`` and back to
``confirmed``; carol's coinbase output matures after 100 blocks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from adapters import chainkit
from adapters.world import World
from ledger import InternalizeOutput, Ledger, Outpoint, ProviderResult, ProviderStatus

USERS = ("alice", "bob", "carol")
CHAIN_START_BLOCKS = 10
COINBASE_SATOSHIS = 312_500_000
COINBASE_MATURITY_BLOCKS = 100
REORG_DEPTH_BLOCKS = 2


@dataclass
class ScriptedBroadcaster:
    """A broadcast provider answering from a script: a fixed status, or an outage
    (``status=None`` raises, as a provider that cannot be reached does)."""

    name: str
    status: str | None
    calls: list[str] = field(default_factory=list)

    def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
        self.calls.append(txid)
        if self.status is None:
            raise ConnectionError(f"{self.name}: connection refused")
        return ProviderResult(provider=self.name, status=ProviderStatus(self.status))


@dataclass
class DemoFacts:
    """What the demo did: the txids and positions worth inspecting afterwards."""

    rent_txid: str = ""
    lunch_txid: str = ""
    rejected_txid: str = ""
    coinbase_txid: str = ""
    reorg_position: int = 0
    events: int = 0


def short(txid: str) -> str:
    """A txid abbreviated for narration (the closing hints print them in full)."""
    return f"{txid[:8]}…"


def sat(amount: int) -> str:
    return f"{amount:,} sat"


class DemoStory:
    """Plays the story step by step, narrating to ``console``."""

    def __init__(self, led: Ledger, console: Console) -> None:
        self.led = led
        self.world = World(led)
        self.out = console
        self.facts = DemoFacts()
        self._step = 0

    # --- narration -----------------------------------------------------------------------

    def step(self, title: str) -> None:
        self._step += 1
        self.out.print()
        self.out.rule(Text(f"{self._step}. {title}", style="bold"), align="left")

    def say(self, text: str) -> None:
        self.out.print(Padding(Text.from_markup(text), (0, 0, 0, 2), expand=False))

    def state(self, txid: str) -> str:
        return str(self.led.get_transaction(txid).state)

    # --- the story -----------------------------------------------------------------------

    def run(self) -> DemoFacts:
        self.chain()
        funding = self.funding()
        self.payments(funding)
        self.rejected(funding["carol"][0])
        self.proofs()
        self.reorg()
        self.coinbase()
        self.summary()
        self.facts.events = self.led.head_position()
        return self.facts

    def chain(self) -> None:
        self.step("A header chain")
        self.world.mine_empty(CHAIN_START_BLOCKS)
        tip = self.led.chain_tip()
        assert tip is not None
        self.say(f"{CHAIN_START_BLOCKS} block headers applied (heights 0-{tip.height}); "
                 f"tip {short(tip.hash)}")
        self.say("proofs are checked against these headers' merkle roots")

    def funding(self) -> dict[str, list[Outpoint]]:
        self.step("Three users receive proven payments")
        plan = {"alice": [50_000, 20_000], "bob": [30_000], "carol": [10_000]}
        funding = {}
        for user, amounts in plan.items():
            funding[user] = self.world.fund(user, amounts, labels=["salary"])
            txid = funding[user][0].txid
            self.say(f"{user} receives {' + '.join(f'{a:,}' for a in amounts)} sat "
                     f"(tx {short(txid)}, mined in block {self.world.tip_height})")
        self.say("each is internalized from a BEEF carrying its merkle proof (BUMP)")
        self.world.mine()
        self.say("every funding transaction now has a block on top: confirmed")
        self.out.print(balances_table(self.led, USERS, "Balances after funding"))
        return funding

    def payments(self, funding: dict[str, list[Outpoint]]) -> None:
        self.step("Payments between users, with a provider outage")
        rent = self.pay("alice", "rent", funding["alice"][0], 12_000, to="bob", fee=500,
                        providers=[ScriptedBroadcaster("arc", None),
                                   ScriptedBroadcaster("woc", "seen")])
        lunch = self.pay("bob", "lunch", Outpoint(txid=rent, vout=0), 8_000, to="carol", fee=200,
                         providers=[ScriptedBroadcaster("arc", "success")])
        self.facts.rent_txid, self.facts.lunch_txid = rent, lunch
        self.say("bob paid from the rent output while it was still unconfirmed")

    def pay(self, payer: str, what: str, source: Outpoint, amount: int, *, to: str, fee: int,
            providers: Sequence[ScriptedBroadcaster]) -> str:
        """payer -> payee: create, sign, broadcast; the payee internalizes the BEEF."""
        value = self._value(payer, source)
        raw, _ = self.world.spend(payer, what, [source],
                                  [(amount, self.world.script()), (value - amount - fee, None)],
                                  labels=[what], description=f"{what} to {to}")
        txid = self.led.sign_action(payer, what, raw_tx=raw).txid
        self.say(f"{payer} pays {to} {sat(amount)} for {what} (tx {short(txid)})")
        self.say(f"  input {short(source.txid)}:{source.vout} reserved, transaction signed -> "
                 f"{self.state(txid)}")
        before = self.led.head_position()
        tx = self.led.broadcast(txid, providers)
        answers = [e for e in self.led.history(txid)
                   if e.event == "broadcast.result" and e.position > before]
        told = ", ".join(f"{e.details['provider']}: {e.details['status']}" for e in answers)
        self.say(f"  broadcast: {told} -> [bold]{tx.state}[/bold]")
        self.led.internalize_action(
            to, beef=chainkit.make_beef("V1", raw), description=f"{what} from {payer}",
            labels=[what], outputs=[InternalizeOutput(vout=0)])
        self.say(f"  {to} internalizes output 0 from the BEEF {payer} hands over")
        return txid

    def _value(self, user: str, outpoint: Outpoint) -> int:
        outputs = self.led.list_outputs(user, basket=None, spendable=None, limit=1000).items
        return next(o.satoshis for o in outputs
                    if o.txid == outpoint.txid and o.vout == outpoint.vout)

    def rejected(self, source: Outpoint) -> None:
        self.step("A transaction every provider rejects")
        raw, _ = self.world.spend("carol", "gift", [source],
                                  [(9_000, self.world.script()), (800, None)],
                                  description="gift to dave", labels=["gift"])
        txid = self.led.sign_action("carol", "gift", raw_tx=raw).txid
        self.facts.rejected_txid = txid
        before = self.led.balance("carol").spendable
        self.say(f"carol signs a 9,000 sat gift (tx {short(txid)})")
        self.say(f"  her 10,000 sat input now counts as spent: spendable {sat(before)}")
        tx = self.led.broadcast(txid, [ScriptedBroadcaster("arc", "invalid"),
                                       ScriptedBroadcaster("woc", "invalid")])
        self.say(f"  broadcast: arc: invalid, woc: invalid -> [bold]{tx.state}[/bold]")
        self.say(f"  the input is released: spendable "
                 f"{sat(self.led.balance('carol').spendable)}")

    def proofs(self) -> None:
        self.step("Merkle proofs")
        rent, lunch = self.facts.rent_txid, self.facts.lunch_txid
        block = self.world.prove([rent, lunch])
        self.say(f"block {block.height} holds rent and lunch; proofs recorded -> "
                 f"{self.state(rent)} (at the tip)")
        self.world.mine()
        self.say(f"block {self.world.tip_height} on top -> {self.state(rent)}")

    def reorg(self) -> None:
        self.step(f"A {REORG_DEPTH_BLOCKS}-block reorg")
        before = self.led.balance("carol")
        _, update = self.world.reorg(REORG_DEPTH_BLOCKS, [[], [], []], salt="fork")
        self.facts.reorg_position = self.led.head_position()
        heights = sorted(h.height for h in update.disconnected)
        self.say(f"blocks {heights[0]}-{heights[-1]} orphaned, {len(update.connected)} fork "
                 f"blocks connected; tip {self.world.tip_height}")
        for txid in update.affected_txids:
            self.say(f"{short(txid)} lost its block -> [bold]{self.state(txid)}[/bold]")
        kept = "unchanged" if self.led.balance("carol") == before else "CHANGED"
        self.say(f"spendability is preserved while reorging: carol's balance is {kept}")
        rent, lunch = self.facts.rent_txid, self.facts.lunch_txid
        block = self.world.prove([rent, lunch])
        self.say(f"re-proven in fork block {block.height} -> {self.state(rent)}")
        self.world.mine()
        self.say(f"block {self.world.tip_height} on top -> [bold]{self.state(rent)}[/bold]; "
                 "never invalid along the way")

    def coinbase(self) -> None:
        self.step("A coinbase output matures")
        raw = chainkit.make_coinbase(self.world.tip_height + 1,
                                     [(COINBASE_SATOSHIS, self.world.script())])
        txid = chainkit.txid_of(raw)
        block = self.world.mine([txid])
        self.led.internalize_action(
            "carol", beef=chainkit.make_beef("V1", raw, bump=block.bumps[txid]),
            description="block reward", labels=["mining"], outputs=[InternalizeOutput(vout=0)])
        self.facts.coinbase_txid = txid
        balance = self.led.balance("carol")
        self.say(f"carol mines block {block.height}: coinbase {short(txid)} pays her "
                 f"{sat(COINBASE_SATOSHIS)}")
        self.say(f"immature until the tip reaches {block.height + COINBASE_MATURITY_BLOCKS}: "
                 f"immature balance {sat(balance.immature)}")
        self.world.mine_empty(COINBASE_MATURITY_BLOCKS)
        balance = self.led.balance("carol")
        self.say(f"{COINBASE_MATURITY_BLOCKS} blocks later (tip {self.world.tip_height}) the "
                 f"coinbase is mature and spendable")
        self.say(f"carol: immature {sat(balance.immature)}, spendable {sat(balance.spendable)}")

    def summary(self) -> None:
        self.step("Where everyone stands")
        self.out.print(balances_table(self.led, USERS, "Balances"))
        self.out.print(spendable_table(self.led, USERS))
        report = self.led.verify_projections()
        drift = "no drift" if report.ok else f"{len(report.differences)} differing rows"
        self.say(f"live projections vs a rebuild from the log ({report.position} events): "
                 f"{drift}")


def balances_table(led: Ledger, users: Sequence[str], title: str) -> Table:
    """One row per user: satoshis per balance bucket."""
    table = Table(title=title, title_justify="left")
    table.add_column("user")
    for bucket in ("spendable", "reserved", "pending", "immature", "quarantined"):
        table.add_column(bucket, justify="right")
    for user in users:
        b = led.balance(user)
        table.add_row(user, *(f"{v:,}" for v in (b.spendable, b.reserved, b.pending,
                                                  b.immature, b.quarantined)))
    return table


def spendable_table(led: Ledger, users: Sequence[str]) -> Table:
    """Every spendable output of ``users``, largest first per user."""
    table = Table(title="Spendable outputs", title_justify="left")
    table.add_column("user")
    table.add_column("outpoint")
    table.add_column("satoshis", justify="right")
    table.add_column("basket")
    table.add_column("kind")
    for user in users:
        for o in led.list_outputs(user, basket=None, limit=1000).items:
            kind = "coinbase" if o.is_coinbase else "change" if o.change else "received"
            table.add_row(user, f"{short(o.txid)}:{o.vout}", f"{o.satoshis:,}", o.basket, kind)
    return table


def run_demo(led: Ledger, console: Console) -> DemoFacts:
    """Play the whole story on an empty ledger; returns what is worth inspecting."""
    return DemoStory(led, console).run()
