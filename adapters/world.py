"""A synthetic, deterministic blockchain driving a ledger through its public API.

Used by the demo, the scenario tests and the benchmarks: it mines blocks whose merkle roots and
BUMPs are real (``adapters.chainkit``), funds users with proven third-party payments, and builds
the raw transactions a wallet would sign. Nothing here reaches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters import chainkit
from ledger.facade import Ledger
from ledger.values import InternalizeOutput, NewOutput, Outpoint


@dataclass
class Block:
    """A mined block: its header and a BUMP for each transaction in it."""

    height: int
    hash: str
    prev_hash: str
    merkle_root: str
    bumps: dict[str, bytes]

    def header(self) -> dict[str, Any]:
        return {"height": self.height, "hash": self.hash, "prev_hash": self.prev_hash,
                "merkle_root": self.merkle_root}


@dataclass
class World:
    """One ledger, one synthetic chain, counters for unique scripts and references."""

    ledger: Ledger
    chain: list[Block] = field(default_factory=list)
    salt: str = ""
    _seed: int = 0

    # --- chain -------------------------------------------------------------------------------

    @property
    def tip_height(self) -> int:
        return self.chain[-1].height if self.chain else -1

    def _block(self, height: int, prev_hash: str, txids: Sequence[str], salt: str) -> Block:
        filler = chainkit.txid_of(chainkit.make_coinbase(height, [(1, b"\x51")],
                                                         tag=f"filler{salt}".encode()))
        leaves = list(txids) or [filler]
        root, bumps = chainkit.make_block(leaves, height=height)
        header = chainkit.make_headers(1, start_height=height, prev_hash=prev_hash,
                                       roots={height: root}, salt=salt)[0]
        return Block(height, header["hash"], prev_hash, root, bumps)

    def mine(self, txids: Sequence[str] = (), *, apply: bool = True) -> Block:
        """A new block on the tip holding ``txids``; its header is applied to the ledger."""
        prev = self.chain[-1].hash if self.chain else "00" * 32
        block = self._block(self.tip_height + 1, prev, txids, self.salt)
        self.chain.append(block)
        if apply:
            self.ledger.apply_headers([block.header()])
        return block

    def mine_empty(self, count: int) -> list[Block]:
        """``count`` empty blocks applied in one call."""
        blocks = [self.mine(apply=False) for _ in range(count)]
        self.ledger.apply_headers([b.header() for b in blocks])
        return blocks

    def reorg(self, depth_blocks: int, replacement: Sequence[Sequence[str]], *,
              salt: str) -> tuple[list[Block], Any]:
        """Replace the top ``depth_blocks`` with ``len(replacement)`` new blocks (one list of txids
        each) on a fork; returns the new blocks and the ledger's ChainUpdate."""
        assert 0 < depth_blocks <= len(self.chain) and len(replacement) > depth_blocks
        del self.chain[-depth_blocks:]
        new = []
        for txids in replacement:
            prev = self.chain[-1].hash if self.chain else "00" * 32
            block = self._block(self.tip_height + 1, prev, txids, salt)
            self.chain.append(block)
            new.append(block)
        update = self.ledger.apply_headers([b.header() for b in new])
        return new, update

    # --- transactions ------------------------------------------------------------------------

    def script(self) -> bytes:
        self._seed += 1
        return chainkit.p2pkh_script(self._seed)

    def external_payment(self, amounts: Sequence[int]) -> bytes:
        """A raw transaction from outside the ledger paying ``amounts``."""
        self._seed += 1
        source = chainkit.txid_of(chainkit.make_coinbase(10_000 + self._seed, [(1, b"\x51")]))
        return chainkit.make_tx([(source, 0)], [(a, self.script()) for a in amounts])

    def fund(self, user: str, amounts: Sequence[int], *, basket: str = "default",
             labels: Sequence[str] = (), mine: bool = True) -> list[Outpoint]:
        """A proven third-party payment to ``user`` (mined in a new block, then internalized)."""
        raw = self.external_payment(amounts)
        txid = chainkit.txid_of(raw)
        block = self.mine([txid]) if mine else None
        beef = chainkit.make_beef("V1", raw, bump=block.bumps[txid] if block else None)
        self.ledger.internalize_action(
            user, beef=beef, description=f"payment to {user}", labels=list(labels),
            outputs=[InternalizeOutput(vout=i, basket=basket) for i in range(len(amounts))])
        return [Outpoint(txid=txid, vout=i) for i in range(len(amounts))]

    def spend(self, user: str, reference: str, inputs: Sequence[Outpoint],
              pay: Sequence[tuple[int, bytes | None]], *, labels: Sequence[str] = (),
              description: str = "payment") -> tuple[bytes, list[NewOutput]]:
        """Create the action for a payment and return the raw transaction that matches it.

        ``pay`` lists (satoshis, script); a ``None`` script is change back to ``user``.
        """
        outputs = []
        for vout, (satoshis, script) in enumerate(pay):
            change = script is None
            outputs.append(NewOutput(vout=vout, satoshis=satoshis,
                                     locking_script=script or self.script(),
                                     basket="default" if change else None, change=change))
        self.ledger.create_action(user, reference, description=description, outputs=outputs,
                                  inputs=list(inputs), labels=list(labels))
        raw = chainkit.make_tx([(i.txid, i.vout) for i in inputs],
                               [(o.satoshis, o.locking_script) for o in outputs])
        return raw, outputs

    def prove(self, txids: Sequence[str]) -> Block:
        """Mine ``txids`` into a new block and record their proofs."""
        block = self.mine(txids)
        for txid in txids:
            self.ledger.record_proof(txid, block.bumps[txid])
        return block
