"""The chain stream is snapshotted every 100 events: a process that never wrote a snapshot
itself must still read one (regression: a restarted process could not apply headers to a
ledger whose chain had reached 100 events)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from adapters.world import World
from ledger import Ledger
from ledger.identity import chain_id

ROOT = Path(__file__).resolve().parent.parent


def _snapshots(led: Ledger) -> int:
    app: Any = led._app
    assert app.snapshots is not None
    return len(list(app.snapshots.get(chain_id())))


def test_a_new_process_extends_a_chain_read_from_its_snapshot(ledger_url: str) -> None:
    with Ledger.open(ledger_url) as led:
        world = World(led, salt="snap")
        world.mine_empty(60)
        world.mine_empty(60)  # 1 + 120 chain events: a snapshot at version 100
        tip = led.chain_tip()
        assert tip is not None
        blocks = [world.mine(apply=False) for _ in range(2)]
        assert _snapshots(led) >= 1
    script = textwrap.dedent(f"""
        import json, sys
        from ledger import Ledger
        headers = json.loads(sys.stdin.read())
        with Ledger.open({ledger_url!r}) as led:
            change = led.apply_headers(headers)
            print(len(change.connected), led.chain_tip().height)
    """)
    headers = [b.header() for b in blocks]
    done = subprocess.run([sys.executable, "-c", script], input=json.dumps(headers), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", str(tip.height + 2)]
