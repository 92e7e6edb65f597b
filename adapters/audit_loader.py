"""A rebuild's ``tx_audit`` table, loaded by a second process while the rebuild folds the rest.

The audit table holds one row per event, about half the rows of a rebuild, and its rows follow
from the events alone (:class:`projections.projector.AuditFold`). :class:`ForkedAuditLoader`
forks a child that opens connections of its own, reads the log and runs
:func:`projections.replay.load_audit`, so a second core does that half.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from projections.db import Database
from projections.replay import AuditLoadFailed, EventLog, load_audit

Opener = Callable[[], tuple[Database, EventLog, Callable[[], None]]]
"""Opens the ledger's database afresh: (database, log, close)."""

AUDIT_LOAD_TIMEOUT_S = 6 * 3600
"""How long a rebuild waits for its audit load (a log of 10 million events loads in minutes)."""
_STOP = "stop"


def forking_available() -> bool:
    """Whether a child can be forked cheaply and safely here (Linux; elsewhere the rebuild
    loads the audit table itself)."""
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


class ForkedAuditLoader:
    """Starts :func:`~projections.replay.load_audit` in a forked child.

    Guarantees: the child uses nothing of the parent's connections, pools or locks; it opens
    its own through ``opener``. It writes only while its rebuild wants it: it asks inside every
    write transaction whether the parent has cancelled or gone (a closed pipe), so a rebuild that
    failed, or a parent killed mid-way, leaves at most already committed audit pages in the idle
    set, which the next rebuild empties before it loads anything."""

    def __init__(self, opener: Opener) -> None:
        self._opener = opener

    def start(self, prefix: str, upto: int) -> ForkedAuditLoad:
        assert forking_available(), "a forked audit load needs fork (Linux)"
        ctx = multiprocessing.get_context("fork")
        ours, theirs = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_child, args=(self._opener, prefix, upto, theirs, ours),
                              name=f"wallet-ledger audit load {prefix}", daemon=True)
        try:
            process.start()
        except OSError as err:  # no process to be had now (EAGAIN, ENOMEM)
            ours.close()
            theirs.close()
            raise AuditLoadFailed(f"cannot fork the audit load: {err}") from err
        theirs.close()
        return ForkedAuditLoad(process, ours)


class ForkedAuditLoad:
    """A running forked audit load: :meth:`wait` for its row count, or :meth:`cancel` it."""

    def __init__(self, process: Any, pipe: Connection) -> None:
        self._process = process
        self._pipe = pipe

    def wait(self) -> int:
        try:
            if not self._pipe.poll(AUDIT_LOAD_TIMEOUT_S):
                raise AuditLoadFailed(f"the audit load took over {AUDIT_LOAD_TIMEOUT_S} s")
            outcome, value = self._pipe.recv()
        except (EOFError, OSError):
            outcome, value = "error", "its process ended without an answer"
        finally:
            self.cancel()
        if outcome != "ok":
            raise AuditLoadFailed(f"the audit table could not be loaded: {value}")
        return int(value)

    def cancel(self) -> None:
        with contextlib.suppress(OSError):  # the child has gone already
            self._pipe.send((_STOP, None))
        self._pipe.close()
        self._process.join(timeout=AUDIT_LOAD_TIMEOUT_S)


def _child(opener: Opener, prefix: str, upto: int, pipe: Connection, parents_end: Connection
           ) -> None:
    parents_end.close()  # so that the parent going away reads as end-of-file here
    try:
        db, log, close = opener()
        try:
            count = load_audit(db, log, prefix, upto, wanted=lambda: not pipe.poll())
        finally:
            close()
        pipe.send(("ok", count))
    except BaseException as err:  # reported to the parent, which raises it
        detail = "".join(traceback.format_exception_only(err)).strip()
        with contextlib.suppress(OSError):
            pipe.send(("error", detail))
        os._exit(1)
