"""The header chain (single stream) and per-block proof anchors.

Guarantees: the active chain is always a linked sequence of headers; ``apply_headers`` either
extends the tip, or disconnects the blocks above a known fork point (at most
``max_reorg_depth_blocks``) and connects the new ones, or raises
:class:`~ledger.errors.ChainDiscontinuity` having changed nothing. Facts are never deleted: a
disconnected block is a ``BlockDisconnected`` event.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.domain import Aggregate
from eventsourcing.domain import Snapshot as BaseSnapshot
from eventsourcing.utils import register_topic

from ledger.clock import utc_now
from ledger.errors import ChainDiscontinuity, InvalidInput
from ledger.identity import chain_id

DEFAULT_MAX_REORG_DEPTH_BLOCKS = 1000
WINDOW_BLOCKS = 2048
"""Active headers the chain stream keeps in its state: enough to find any allowed fork point."""
MAX_HEADERS_PER_CALL = 10_000


@dataclass(frozen=True, slots=True)
class ChainPlan:
    """What applying a batch of headers would do: blocks to disconnect (tip first), to connect."""

    disconnect: tuple[dict[str, Any], ...]
    connect: tuple[dict[str, Any], ...]


class ChainAggregate(Aggregate):
    """The active chain's most recent headers and its tip."""

    TOPIC = "ledger.chain"

    class Event(Aggregate.Event):
        TOPIC = "ledger.chain.Event"
        create_timestamp = staticmethod(utc_now)

    class Snapshot(BaseSnapshot):
        TOPIC = "ledger.chain.Snapshot"
        create_timestamp = staticmethod(utc_now)

    class ChainStarted(Event, Aggregate.Created):
        TOPIC = "ledger.chain.ChainStarted"

    class BlockConnected(Event):
        TOPIC = "ledger.chain.BlockConnected"
        height: int
        hash: str
        prev_hash: str
        merkle_root: str

        def apply(self, agg: ChainAggregate) -> None:
            header = {"height": self.height, "hash": self.hash, "prev_hash": self.prev_hash,
                      "merkle_root": self.merkle_root}
            assert not agg.active or agg.active[-1]["hash"] == self.prev_hash
            agg.active.append(header)
            del agg.active[:-WINDOW_BLOCKS]

    class BlockDisconnected(Event):
        TOPIC = "ledger.chain.BlockDisconnected"
        height: int
        hash: str
        prev_hash: str
        merkle_root: str

        def apply(self, agg: ChainAggregate) -> None:
            assert agg.active and agg.active[-1]["hash"] == self.hash
            agg.active.pop()

    def __init__(self) -> None:
        self.active: list[dict[str, Any]] = []

    @classmethod
    def start(cls) -> ChainAggregate:
        """The empty chain stream."""
        return cls._create(cls.ChainStarted, id=chain_id())

    @property
    def tip(self) -> dict[str, Any] | None:
        return self.active[-1] if self.active else None

    def _index_of(self, height: int) -> int | None:
        if not self.active:
            return None
        i = height - int(self.active[0]["height"])
        return i if 0 <= i < len(self.active) else None

    def header_at(self, height: int) -> dict[str, Any] | None:
        """The active header at ``height`` if it is inside the kept window."""
        i = self._index_of(height)
        return self.active[i] if i is not None else None

    def plan(self, headers: Sequence[dict[str, Any]], *, max_reorg_depth_blocks: int,
             seen: Mapping[str, dict[str, Any]] | None = None) -> ChainPlan:
        """Decide what ``headers`` do to the chain, changing nothing. ``seen``: headers the
        ledger connected before (active or not, below this stream's window too), by hash."""
        _check_linked(headers)
        new = _skip_known(self, list(headers))
        if not new:
            return ChainPlan((), ())
        _check_unique_hashes(self, new, seen or {})
        tip = self.tip
        first = new[0]
        if tip is None:
            return ChainPlan((), tuple(new))
        if first["prev_hash"] == tip["hash"] and first["height"] == tip["height"] + 1:
            return ChainPlan((), tuple(new))
        fork = self.header_at(first["height"] - 1)
        if fork is None or fork["hash"] != first["prev_hash"]:
            raise ChainDiscontinuity(
                f"header {first['hash']} at height {first['height']} connects to "
                f"{first['prev_hash']}, which is not on the active chain (tip {tip['height']}); "
                "send headers starting at a known block")
        depth = int(tip["height"]) - int(fork["height"])
        if depth > max_reorg_depth_blocks:
            raise ChainDiscontinuity(
                f"a reorg of {depth} blocks exceeds the limit of {max_reorg_depth_blocks}; "
                "raise max_reorg_depth_blocks deliberately or investigate the header source")
        if int(new[-1]["height"]) <= int(tip["height"]):
            raise ChainDiscontinuity(
                f"the fork ends at height {new[-1]['height']}, not above the tip at "
                f"{tip['height']}; a reorg needs a longer chain")
        start = self._index_of(int(fork["height"]) + 1)
        assert start is not None
        return ChainPlan(tuple(reversed(self.active[start:])), tuple(new))

    def execute(self, plan: ChainPlan) -> None:
        """Emit the events of a plan made by :meth:`plan` on this same version."""
        for header in plan.disconnect:
            self.trigger_event(self.BlockDisconnected, **_fields(header))
        for header in plan.connect:
            self.trigger_event(self.BlockConnected, **_fields(header))


# ``eventsourcing`` registers the explicit topics of an aggregate's events when the class is made,
# but not of its snapshot class: until this process wrote a snapshot itself, a stored one could
# not be read (a process that opened a ledger with 100 or more chain events could not apply
# headers at all).
register_topic(ChainAggregate.Snapshot.TOPIC, ChainAggregate.Snapshot)


def _fields(header: dict[str, Any]) -> dict[str, Any]:
    return {k: header[k] for k in ("height", "hash", "prev_hash", "merkle_root")}


def _check_linked(headers: Sequence[dict[str, Any]]) -> None:
    if len(headers) > MAX_HEADERS_PER_CALL:
        raise InvalidInput(f"at most {MAX_HEADERS_PER_CALL} headers per call, got {len(headers)}")
    for prev, cur in itertools.pairwise(headers):
        if not follows(cur, prev):
            raise ChainDiscontinuity(
                f"headers are not a linked sequence: {cur['hash']} at {cur['height']} does not "
                f"follow {prev['hash']} at {prev['height']}")


def follows(header: Mapping[str, Any], parent: Mapping[str, Any]) -> bool:
    """``header`` is the block right after ``parent``: it names it and is one block higher."""
    return bool(header["prev_hash"] == parent["hash"]
                and header["height"] == parent["height"] + 1)


def _check_unique_hashes(chain: ChainAggregate, new: Sequence[dict[str, Any]],
                         seen: Mapping[str, dict[str, Any]]) -> None:
    """A block hash names one block. A new header may not reuse the hash of an active block (a
    later reorg would disconnect that hash, and with it the proofs anchored in the real block),
    of its own parent, or of another header of the same call; a block seen before may come back
    only as it was (the same height, parent and root)."""
    active = {str(h["hash"]): int(h["height"]) for h in chain.active}
    named: set[str] = set()
    for header in new:
        block = str(header["hash"])
        if block in named or block == header["prev_hash"]:
            raise ChainDiscontinuity(f"the headers name block {block} twice")
        before = seen.get(block)
        if block in active:
            height = active[block]
        elif before is not None and any(before[k] != header[k]
                                        for k in ("height", "prev_hash", "merkle_root")):
            height = int(before["height"])
        else:
            named.add(block)
            continue
        raise ChainDiscontinuity(
            f"header at height {header['height']} has the hash {block} of the block seen at "
            f"height {height}; a block hash names one block (check the header source)")


def _skip_known(chain: ChainAggregate, headers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the leading headers the active chain already has (re-sent headers are harmless)."""
    while headers:
        known = chain.header_at(int(headers[0]["height"]))
        if known is None or known["hash"] != headers[0]["hash"]:
            break
        headers.pop(0)
    return headers
