"""The chain-tracker port: an outside answer to "is this merkle root on the chain at height h?"
for heights the ledger has no header for (SPEC §4, ADR 0008).

A tracker is any object with ``is_valid_root_for_height(root, height)`` and
``current_height()``, either plain methods or coroutine functions: bsv-sdk's async
``ChainTracker`` fits as it is, and so does a synchronous client. The ledger never imports
bsv-sdk. Coroutines run on a private event loop with a timeout; a synchronous method is called
directly, in the caller's thread, so its own I/O needs a timeout of its own.

Every failure of the tracker -- an exception, a timeout, an answer of the wrong type -- becomes
:class:`~ledger.errors.ChainTrackerUnavailable`. The tracker is consulted outside any command
(no lock is held across the network, ADR 0004).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from ledger.errors import ChainTrackerUnavailable

T = TypeVar("T")

CHAIN_TRACKER_TIMEOUT_S = 10.0
"""How long one call of an async tracker may take before the proof is refused as unavailable."""
MAX_CHAIN_TRACKER_TIMEOUT_S = 300.0


class ChainTracker(Protocol):
    """What the ledger asks of a chain tracker (bsv-sdk's ``ChainTracker`` shape).

    ``root`` is the merkle root as lowercase display hex (the byte order of txids and of
    ``BlockHeader.merkle_root``); ``current_height()`` is the height of the tracker's chain tip.
    """

    def is_valid_root_for_height(self, root: str, height: int) -> bool | Awaitable[bool]: ...

    def current_height(self) -> int | Awaitable[int]: ...


@dataclass(frozen=True, slots=True)
class TrackerVerdict:
    """What the tracker said about one proof's root, asked before the command runs.

    ``tracker_tip`` is the tracker's ``current_height()``; None when the depth did not need it
    (the ledger's own tip was above the proof when the tracker was asked).
    """

    height: int
    merkle_root: str
    tracker_tip: int | None


def _tracker_name(tracker: object) -> str:
    return type(tracker).__name__


def _call(tracker: object, what: str, call: Callable[[], Any], timeout_s: float) -> Any:
    """Call one tracker method (sync or async); every failure is ChainTrackerUnavailable."""
    name = _tracker_name(tracker)
    try:
        answer = call()
        if inspect.isawaitable(answer):
            try:
                answer = _run(answer, timeout_s)
            except TimeoutError:
                raise ChainTrackerUnavailable(
                    f"chain tracker {name} did not answer {what} within {timeout_s:g} s; "
                    "nothing was stored: retry later, or apply the headers up to that block "
                    "(apply_headers)") from None
    except ChainTrackerUnavailable:
        raise
    except Exception as err:
        raise ChainTrackerUnavailable(
            f"chain tracker {name} failed on {what}: {type(err).__name__}: {err}"[:500]
            + "; nothing was stored: retry later, or apply the headers up to that block "
            "(apply_headers)"
        ) from err
    return answer


def _run(awaitable: Awaitable[T], timeout_s: float) -> T:
    """Run a coroutine to completion on a private event loop, bounded by ``timeout_s``. When
    the calling thread already runs a loop (an async host calling the synchronous ledger), that
    loop cannot be re-entered: the coroutine runs on a loop in a helper thread instead."""

    async def bounded() -> T:
        return await asyncio.wait_for(awaitable, timeout_s)

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(bounded())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="chain-tracker") as pool:
        return pool.submit(asyncio.run, bounded()).result()


def is_valid_root(tracker: ChainTracker, root: str, height: int, timeout_s: float) -> bool:
    """The tracker's verdict on ``root`` at ``height``; a non-bool answer counts as a failure."""
    answer = _call(tracker, f"is_valid_root_for_height(height={height})",
                   lambda: tracker.is_valid_root_for_height(root, height), timeout_s)
    if not isinstance(answer, bool):
        raise ChainTrackerUnavailable(
            f"chain tracker {_tracker_name(tracker)} answered is_valid_root_for_height with "
            f"{type(answer).__name__}, not bool; nothing was stored: fix the tracker")
    return answer


def current_height(tracker: ChainTracker, timeout_s: float) -> int:
    """The tracker's tip height; anything but a whole number >= 0 counts as a failure."""
    answer = _call(tracker, "current_height()", tracker.current_height, timeout_s)
    if not isinstance(answer, int) or isinstance(answer, bool) or answer < 0:
        raise ChainTrackerUnavailable(
            f"chain tracker {_tracker_name(tracker)} answered current_height() with "
            f"{answer!r}, not a height; nothing was stored: fix the tracker")
    return answer


def check_tracker(tracker: object) -> ChainTracker:
    """``tracker`` if it has both methods, else TypeError (the facade turns it into
    InvalidInput)."""
    missing = [m for m in ("is_valid_root_for_height", "current_height")
               if not callable(getattr(tracker, m, None))]
    if missing:
        raise TypeError(f"{_tracker_name(tracker)} has no method {', '.join(missing)}")
    return cast(ChainTracker, tracker)


__all__ = [
    "CHAIN_TRACKER_TIMEOUT_S",
    "ChainTracker",
    "TrackerVerdict",
    "check_tracker",
    "current_height",
    "is_valid_root",
]
