"""Event time. Every event is stamped in UTC, whatever the host process's environment says
(``eventsourcing`` otherwise reads ``TZINFO_TOPIC`` from ``os.environ`` at import time)."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    """Now, timezone-aware, in UTC."""
    return datetime.now(UTC)
