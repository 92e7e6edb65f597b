"""The aggregates a ledger process saved or loaded last, and the rule for trusting them.

Loading an aggregate means reading and decoding its whole stream; most commands touch a stream
the same process touched a moment ago. The cache keeps those aggregates, but another process
may have appended to a stream since, so the cache is trusted only by a command's first attempt,
under this rule (enforced by ``LedgerApplication.retrying``):

- a first attempt that *saves* is safe: the save is refused unless every cached aggregate the
  attempt read is one it appends to (:meth:`Attempt.check_appends`), and the event store refuses
  the append if the stream moved meanwhile (the attempt is then retried from fresh reads);
- a first attempt that ends any other way -- a refusal, or nothing to append -- is decided again
  from fresh reads, so neither an error nor a no-op answer ever rests on a stale copy.

A command that fails evicts what it loaded (its copies may hold half-applied changes).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

MAX_CACHED_STREAMS = 20_000
"""About 1.5 KB each for typical transactions: some 30 MB when full."""


class Recheck(Exception):
    """An optimistic attempt read a cached aggregate it does not append to: decide again."""


@dataclass
class Attempt:
    """What one attempt of one command did with the cache."""

    trust_cache: bool
    cached: dict[UUID, Any] = field(default_factory=dict)
    saved: bool = False
    skipped_reads: bool = False
    """The attempt created streams without reading them first (an optimistic create)."""
    held: dict[UUID, Any] = field(default_factory=dict)
    """Every aggregate the attempt read: a stream read twice is the same object, so two
    changes to it in one command are one sequence of events, not two colliding copies. A
    failed attempt evicts these from the cache."""

    def hold(self, aggregate: Any) -> None:
        self.held[aggregate.id] = aggregate

    @property
    def optimistic(self) -> bool:
        """It decided on trusted cache entries or unread streams: only a save confirms it."""
        return self.trust_cache and (bool(self.cached) or self.skipped_reads)

    def check_appends(self) -> None:
        """Before saving: every aggregate taken from the cache must be appended to."""
        if any(not aggregate.pending_events for aggregate in self.cached.values()):
            raise Recheck


class StreamCache:
    """A bounded LRU of aggregates by stream id. Not thread-safe: callers hold the command lock."""

    def __init__(self, max_streams: int = MAX_CACHED_STREAMS) -> None:
        assert max_streams > 0
        self._max_streams = max_streams
        self._items: OrderedDict[UUID, Any] = OrderedDict()

    def get(self, stream: UUID) -> Any | None:
        aggregate = self._items.get(stream)
        if aggregate is not None:
            self._items.move_to_end(stream)
        return aggregate

    def put(self, aggregate: Any) -> None:
        assert not aggregate.pending_events, "only saved state is cached"
        self._items[aggregate.id] = aggregate
        self._items.move_to_end(aggregate.id)
        while len(self._items) > self._max_streams:
            self._items.popitem(last=False)

    def evict(self, streams: Iterable[UUID]) -> None:
        for stream in streams:
            self._items.pop(stream, None)

    def __len__(self) -> int:
        return len(self._items)
