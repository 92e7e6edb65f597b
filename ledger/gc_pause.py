"""Batch work without cyclic-garbage-collector pauses.

A reorg, a block promoting thousands of transactions or a rebuild allocates hundreds of
thousands of short-lived objects while the process holds many long-lived ones (cached
aggregates, rows); CPython's collector then keeps walking the long-lived heap, which measured
25-40% of such batches. The batches create no reference cycles worth collecting mid-way, so the
collector is paused for their duration and resumed afterwards -- unless the host process had
it disabled already, in which case it is left alone.
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0
_paused_by_us = False


def _forget_in_child() -> None:
    """A forked child (a rebuild's audit load) starts with its own, unheld lock: another thread
    of the parent may have held this one at the fork, and no thread of the child would free it.
    The child keeps the parent's pause count, and so its collector setting."""
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


@contextmanager
def paused() -> Iterator[None]:
    """Pause the collector while the body runs. Nested and concurrent pauses resume it once,
    when the last one ends."""
    global _holders, _paused_by_us
    with _lock:
        if _holders == 0:
            _paused_by_us = gc.isenabled()
            if _paused_by_us:
                gc.disable()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0 and _paused_by_us:
                _paused_by_us = False
                gc.enable()
