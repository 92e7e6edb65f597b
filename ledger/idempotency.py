"""Idempotency keys, saved atomically with the command they guard.

Guarantee: the first command saved with a key wins; a repeat with the same payload returns the
original result without new events; a repeat with a different payload raises
:class:`~ledger.errors.IdempotencyConflict`. Two concurrent first uses collide on the key
stream's version 1, so exactly one of them commits.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from eventsourcing.domain import Aggregate

from ledger.clock import utc_now
from ledger.errors import IdempotencyConflict
from ledger.identity import idempotency_id


def payload_digest(command: str, payload: dict[str, Any]) -> str:
    """A stable digest of a command's arguments (JSON, sorted keys)."""
    text = json.dumps({"command": command, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class IdempotencyRecord(Aggregate):
    """The first use of one idempotency key: which command, which payload, which result."""

    TOPIC = "ledger.idempotency"

    class Event(Aggregate.Event):
        TOPIC = "ledger.idempotency.Event"
        create_timestamp = staticmethod(utc_now)


    class KeyUsed(Event, Aggregate.Created):
        TOPIC = "ledger.idempotency.KeyUsed"
        key: str
        command: str
        digest: str
        result: dict[str, Any]

    def __init__(self, key: str, command: str, digest: str, result: dict[str, Any]) -> None:
        self.key = key
        self.command = command
        self.digest = digest
        self.result = dict(result)

    @classmethod
    def record(cls, *, key: str, command: str, digest: str,
               result: dict[str, Any]) -> IdempotencyRecord:
        """Claim ``key`` for this command and payload."""
        return cls._create(cls.KeyUsed, id=idempotency_id(key), key=key, command=command,
                           digest=digest, result=result)

    def check_repeat(self, *, command: str, digest: str) -> dict[str, Any]:
        """The original result for an identical repeat; :class:`IdempotencyConflict` otherwise."""
        if command != self.command or digest != self.digest:
            raise IdempotencyConflict(
                f"idempotency key {self.key!r} was already used by a {self.command} with a "
                "different payload; use a new key for a different request")
        return self.result
