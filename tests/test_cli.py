"""The ``wallet-ledger`` command line: every command through typer's CliRunner, the installed
console script in a subprocess, bad input for each command, drift detection, PostgreSQL reads.

Most tests share one demo database (played once per module) and copy it when they write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from adapters import chainkit
from adapters.cli import app
from adapters.world import World
from ledger import Ledger, Outpoint, ProviderResult
from tests.conftest import new_pg_schema

WIDTH = 80
FULL_TXID = re.compile(r"[0-9a-f]{64}")
SCRIPT = Path(sys.executable).with_name("wallet-ledger")
"""The console script installed into the venv that runs the tests."""


# --- helpers ---------------------------------------------------------------------------------

def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run ``wallet-ledger ARGS`` in-process on an 80-column terminal."""
    base = {"COLUMNS": str(WIDTH), "WALLET_LEDGER_DB": None, "WALLET_LEDGER_PROG": None}
    return CliRunner().invoke(app, list(args), env={**base, **(env or {})})


def ok(result: Result) -> str:
    """stdout of a command that must succeed; the failure shows what it printed."""
    assert result.exit_code == 0, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    return result.stdout


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def refused(result: Result, code: int, *fragments: str) -> str:
    """A user mistake: exit ``code``, exactly one ``error:`` line on stderr, nothing on
    stdout, no traceback. Returns the message."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def fits(text: str) -> None:
    """Tables fit an 80-column terminal: a longer line must be something to copy whole (a
    command to run, a full txid, a database URL), printed unwrapped on purpose."""
    for line in text.splitlines():
        if len(line) > WIDTH:
            assert FULL_TXID.search(line) or "wallet-ledger " in line or "sqlite:///" in line, \
                f"line of {len(line)} columns: {line!r}"


def copy_ledger(src: Path, dst_dir: Path) -> str:
    dst = dst_dir / "copy.db"
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            shutil.copyfile(f"{src}{suffix}", f"{dst}{suffix}")
    return f"sqlite:///{dst}"


@dataclass(frozen=True)
class Demo:
    url: str
    path: Path
    output: str
    rent: str
    lunch: str
    gift: str
    coinbase: str
    reorg_position: int

    def db(self) -> list[str]:
        return ["--db", self.url]


def _action_txid(url: str, user: str, label: str) -> str:
    page = as_json(cli("actions", "--user", user, "--label", label, "--json", "--db", url))
    (item,) = page["items"]
    txid: str = item["txid"]
    return txid


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    url = f"sqlite:///{path}"
    output = ok(cli("demo", "--db", url))
    position = int(re.search(r"audit replay --at (\d+)", output).group(1))  # type: ignore[union-attr]
    return Demo(url, path, output, rent=_action_txid(url, "alice", "rent"),
                lunch=_action_txid(url, "bob", "lunch"), gift=_action_txid(url, "carol", "gift"),
                coinbase=_action_txid(url, "carol", "mining"), reorg_position=position)


@pytest.fixture
def scratch(demo: Demo, tmp_path: Path) -> str:
    """A private copy of the demo ledger, for commands that write."""
    return copy_ledger(demo.path, tmp_path)


# --- help and the demo -----------------------------------------------------------------------

COMMANDS = ["demo", "outputs", "actions", "tx", "balance", "history", "transition",
            "confirm-unspent", "audit", "projections", "headers"]
SUBCOMMANDS = [["audit", "replay"], ["audit", "explain"], ["audit", "tail"],
               ["projections", "rebuild"], ["projections", "verify"], ["projections", "run"],
               ["projections", "mode"], ["headers", "apply"]]


def test_help_lists_every_command_with_a_one_line_purpose() -> None:
    text = ok(cli("--help"))
    fits(text)
    for name in COMMANDS:
        line = next((ln for ln in text.splitlines() if re.search(rf"│ {name}\s{{2,}}\S", ln)),
                    None)
        assert line is not None, f"{name} has no purpose line in --help"
    box = [ln for ln in text.split("Commands")[1].splitlines() if ln.startswith("│")]
    assert len(box) == len(COMMANDS), "one line per command:\n" + "\n".join(box)
    groups = {"audit": 3, "projections": 4, "headers": 1}
    for group, count in groups.items():
        sub = [ln for ln in ok(cli(group, "--help")).split("Commands")[1].splitlines()
               if ln.startswith("│")]
        assert len(sub) == count, "one line per command:\n" + "\n".join(sub)


@pytest.mark.parametrize("command", [[c] for c in COMMANDS if c not in ("audit", "projections",
                                                                           "headers")]
                         + SUBCOMMANDS, ids=" ".join)
def test_every_command_has_help_with_db_option(command: list[str]) -> None:
    text = ok(cli(*command, "--help"))
    assert "--db" in text
    fits(text)


def test_demo_tells_the_whole_story_and_shows_how_to_inspect(demo: Demo) -> None:
    out = demo.output
    fits(out)
    for fact in ("header chain", "alice receives", "bob receives", "carol receives",
                 "arc: service_error, woc: seen", "-> seen",  # first provider down, second ok
                 "arc: invalid, woc: invalid -> invalid", "input is released",
                 "proofs recorded -> unconfirmed", "-> reorging", "-> confirmed",
                 "never invalid", "coinbase", "mature and spendable", "no drift",
                 "Balances", "Spendable outputs"):
        assert fact in out, fact
    assert f"wallet-ledger history {demo.rent} --db {demo.url}" in out
    assert f"wallet-ledger audit explain {demo.coinbase}:0 --user carol --db {demo.url}" in out


def test_demo_is_deterministic(demo: Demo, tmp_path: Path) -> None:
    again = ok(cli("demo", "--db", f"sqlite:///{tmp_path / 'again.db'}"))
    assert _action_txid(f"sqlite:///{tmp_path / 'again.db'}", "alice", "rent") == demo.rent
    assert f"audit replay --at {demo.reorg_position} " in again


def test_demo_refuses_a_non_empty_database_unless_reset(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'd.db'}"
    ok(cli("demo", "--db", url))
    refused(cli("demo", "--db", url), 2, "not empty", "--reset")
    assert "Inspect what it did" in ok(cli("demo", "--db", url, "--reset"))
    assert ok(cli("projections", "verify", "--db", url))


def test_demo_writes_wallet_ledger_db_in_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    out = ok(cli("demo"))
    assert (tmp_path / "wallet-ledger.db").stat().st_size > 0
    assert "--db" not in out.split("Inspect what it did")[1], "default database: no --db hint"
    assert "wallet-ledger history" in out


def test_demo_hints_use_the_program_as_invoked(tmp_path: Path) -> None:
    out = ok(cli("demo", "--db", f"sqlite:///{tmp_path / 'h.db'}",
                 env={"WALLET_LEDGER_PROG": "./dev wallet-ledger"}))
    assert "  ./dev wallet-ledger history " in out


# --- read commands ---------------------------------------------------------------------------

def test_outputs_spendable_all_and_basket(demo: Demo) -> None:
    text = ok(cli("outputs", "--user", "carol", *demo.db()))
    fits(text)
    assert f"{demo.coinbase[:12]}…:0" in text and "312,500,000" in text and "coinbase" in text
    page = as_json(cli("outputs", "--user", "carol", "--json", *demo.db()))
    assert page["total"] == 3 and all(o["spendable"] for o in page["items"])
    assert [o["satoshis"] for o in page["items"]] == sorted(
        (o["satoshis"] for o in page["items"]), reverse=True)
    every = as_json(cli("outputs", "--user", "carol", "--all", "--json", *demo.db()))
    assert every["total"] >= page["total"]
    none = as_json(cli("outputs", "--user", "carol", "--basket", "savings", "--json", *demo.db()))
    assert none == {"items": [], "total": 0}


def test_actions_with_label_filter(demo: Demo) -> None:
    text = ok(cli("actions", "--user", "alice", *demo.db()))
    fits(text)
    assert "rent to bob" in text and "completed" in text and "-12,500" in text
    page = as_json(cli("actions", "--user", "alice", "--label", "salary", "--json", *demo.db()))
    assert [a["labels"] for a in page["items"]] == [["salary"]]


def test_tx_accepts_a_full_txid_or_a_unique_prefix(demo: Demo) -> None:
    view = as_json(cli("tx", demo.rent, "--json", *demo.db()))
    assert view["txid"] == demo.rent and view["state"] == "confirmed"
    assert as_json(cli("tx", demo.rent[:8], "--json", *demo.db())) == view
    assert as_json(cli("tx", demo.rent[:12] + "…", "--json", *demo.db())) == view
    text = ok(cli("tx", demo.gift, *demo.db()))
    fits(text)
    assert "invalid" in text and f"history {demo.gift}" in text


def test_balance(demo: Demo) -> None:
    text = ok(cli("balance", "--user", "carol", *demo.db()))
    fits(text)
    assert "312,518,000" in text
    b = as_json(cli("balance", "--user", "carol", "--json", *demo.db()))
    assert b == {"user": "carol", "basket": None, "spendable": 312_518_000, "reserved": 0,
                 "pending": 0, "immature": 0, "quarantined": 0}


def test_history_is_a_timeline(demo: Demo) -> None:
    text = ok(cli("history", demo.rent, *demo.db()))
    fits(text)
    header = next(ln for ln in text.splitlines() if ln.startswith("pos"))
    assert re.match(r"pos\s+time\s+event\s+from → to\s+details", header), header
    assert "reorging" in text and "proof.invalidated" in text and "tip-advanced" in text
    entries = as_json(cli("history", demo.rent, "--json", *demo.db()))
    positions = [e["position"] for e in entries]
    assert positions == sorted(positions)
    events = [e["event"] for e in entries]
    assert events.count("broadcast.result") == 2
    assert ("reorging", "unconfirmed") in [(e["from_state"], e["to_state"]) for e in entries]


def test_audit_replay_at_a_position_and_at_a_time(demo: Demo) -> None:
    text = ok(cli("audit", "replay", "--at", str(demo.reorg_position), "--user", "bob",
                  *demo.db()))
    fits(text)
    assert f"log position {demo.reorg_position}" in text and "reorging" in text
    report = as_json(cli("audit", "replay", "--at", str(demo.reorg_position), "--user", "bob",
                         "--json", *demo.db()))
    states = {t["txid"]: (t["state_then"], t["state_now"]) for t in report["transactions"]}
    assert states[demo.rent] == ("reorging", "confirmed")
    assert report["balances"]["bob"]["then"]["spendable"] == 33_800, "spendability preserved"
    # by time: the moment of the first broadcast answer of the rent payment
    answer = next(e for e in as_json(cli("history", demo.rent, "--json", *demo.db()))
                  if e["event"] == "broadcast.result")
    at_time = as_json(cli("audit", "replay", "--at", answer["at"], "--json", *demo.db()))
    assert at_time["position"] >= answer["position"]
    before = as_json(cli("audit", "replay", "--at", "2000-01-01T00:00:00Z", "--json",
                         *demo.db()))
    assert before["position"] == 0 and before["transactions"] == []
    assert ok(cli("audit", "replay", "--at", "00:00", *demo.db()))


def test_audit_explain_shows_rule_inputs_and_event_positions(demo: Demo) -> None:
    text = ok(cli("audit", "explain", f"{demo.coinbase}:0", "--user", "carol", *demo.db()))
    fits(text)
    assert "SPENDABLE" in text and "coinbase: matures at height" in text
    why = as_json(cli("audit", "explain", f"{demo.coinbase[:10]}:0", "--user", "carol",
                      "--json", *demo.db()))
    assert why["spendable"] is True and why["outpoint"] == f"{demo.coinbase}:0"
    assert [e["position"] for e in why["evidence"]] == why["positions"], "every position shown"
    assert "chain.block_connected" in {e["event"] for e in why["evidence"]}
    spent = as_json(cli("audit", "explain", f"{demo.rent}:0", "--user", "bob", "--json",
                        *demo.db()))
    assert spent["spendable"] is False and spent["category"] == "spent"
    assert "action.signed" in {e["event"] for e in spent["evidence"]}, "the spender's event"


def test_audit_tail_and_event_filter(demo: Demo, scratch: str) -> None:
    text = ok(cli("audit", "tail", "--limit", "5", *demo.db()))
    fits(text)
    rows = as_json(cli("audit", "tail", "--limit", "5", "--json", *demo.db()))
    assert len(rows) == 5 and rows[0]["position"] > rows[-1]["position"]
    assert "no audit rows" in ok(cli("audit", "tail", "--event", "processing.rejected",
                                     "--db", scratch))
    refused(cli("transition", demo.gift, "sent", "--reason", "retry", "--db", scratch), 1,
            "invalid -> sent is not allowed", "audit tail --event processing.rejected")
    (row,) = as_json(cli("audit", "tail", "--event", "processing.rejected", "--json",
                         "--db", scratch))
    assert row["txid"] == demo.gift and row["to_state"] == "sent"


def test_json_output_is_pure_json_for_every_read_command(demo: Demo) -> None:
    for args in (["outputs", "-u", "bob"], ["actions", "-u", "bob"], ["tx", demo.lunch],
                 ["balance", "-u", "bob"], ["history", demo.lunch],
                 ["audit", "replay", "--at", "50"], ["audit", "explain", f"{demo.lunch}:1",
                                                     "-u", "bob"],
                 ["audit", "tail"], ["projections", "verify"], ["projections", "mode"]):
        result = cli(*args, "--json", *demo.db())
        json.loads(ok(result))
        assert result.stderr == "", args


def test_db_from_the_environment_and_option_precedence(demo: Demo, tmp_path: Path) -> None:
    b = as_json(cli("balance", "-u", "bob", "--json", env={"WALLET_LEDGER_DB": demo.url}))
    assert b["spendable"] == 33_800
    missing = f"sqlite:///{tmp_path / 'nothing.db'}"
    refused(cli("balance", "-u", "bob", "--db", missing, env={"WALLET_LEDGER_DB": demo.url}),
            2, "no ledger at")
    assert not (tmp_path / "nothing.db").exists(), "a read never creates a database"


# --- write and maintenance commands ----------------------------------------------------------

def test_transition_by_an_operator(demo: Demo, scratch: str) -> None:
    out = ok(cli("transition", demo.gift[:10], "unfail", "--reason", "provider was wrong",
                 "--actor", "ops-anna", "--db", scratch))
    assert "invalid → unfail" in out
    last = as_json(cli("history", demo.gift, "--json", "--db", scratch))[-1]
    assert (last["from_state"], last["to_state"]) == ("invalid", "unfail")
    assert "ops-anna" in json.dumps(last["details"]) and "provider was wrong" in json.dumps(
        last["details"])


def test_headers_apply_extends_and_reorganises(demo: Demo, scratch: str, tmp_path: Path) -> None:
    with Ledger.open(scratch) as led:
        tip = led.chain_tip()
        assert tip is not None
        parent = next(e for e in led.audit_tail(limit=1000, event="chain.block_connected")
                      if e.details["height"] == tip.height - 1)
    ahead = chainkit.make_headers(3, start_height=tip.height + 1, prev_hash=tip.hash)
    file = tmp_path / "headers.jsonl"
    file.write_text("\n".join(json.dumps(h) for h in ahead) + "\n\n")
    out = ok(cli("headers", "apply", str(file), "--db", scratch))
    assert f"connected 3, disconnected 0; tip {tip.height + 3}" in out
    fork = chainkit.make_headers(5, start_height=tip.height, prev_hash=parent.details["hash"],
                                 salt="cli-fork")
    file.write_text("\n".join(json.dumps(h) for h in fork))
    out = ok(cli("headers", "apply", str(file), "--db", scratch))
    assert f"connected 5, disconnected 4; tip {tip.height + 4}" in out
    assert ok(cli("projections", "verify", "--db", scratch))


def test_confirm_unspent_releases_a_quarantined_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    with Ledger.open(url) as led:
        world = World(led)
        world.mine_empty(3)
        (coin,) = world.fund("dave", [40_000])
        raw, _ = world.spend("dave", "pay", [coin], [(39_000, world.script())])
        txid = led.sign_action("dave", "pay", raw_tx=raw).txid
        led.record_broadcast(txid, [ProviderResult(provider="arc", status="double_spend")])
        assert led.balance("dave").quarantined == 40_000
    assert as_json(cli("balance", "-u", "dave", "--json", "--db", url))["quarantined"] == 40_000
    out = ok(cli("confirm-unspent", f"{coin.txid[:8]}:0", "--reason", "utxo check: unspent",
                 "--db", url))
    assert "released 1" in out
    b = as_json(cli("balance", "-u", "dave", "--json", "--db", url))
    assert (b["spendable"], b["quarantined"]) == (40_000, 0)
    refused(cli("confirm-unspent", str(coin), "--reason", "again", "--db", url), 1,
            "not quarantined")


def _tamper(url: str) -> None:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as conn:
        (prefix,) = conn.execute("SELECT active FROM ledger_projection_pointer").fetchone()
        conn.execute(f"UPDATE {prefix}outputs SET satoshis = satoshis + 1 "
                     "WHERE user = 'carol' AND vout = 0 AND is_coinbase")
        conn.execute(f"DELETE FROM {prefix}tx_audit WHERE audit_id = 3")


def test_projections_verify_reports_drift_and_rebuild_repairs_it(scratch: str) -> None:
    assert "match" in ok(cli("projections", "verify", "--db", scratch))
    _tamper(scratch)
    result = cli("projections", "verify", "--db", scratch)
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert result.stderr == "error: projections drifted from the log: 2 rows differ from a rebuild\n"
    fits(result.stdout)
    assert "Drift: 2 rows" in result.stdout
    assert "satoshis=312500001" in result.stdout and "satoshis=312500000" in result.stdout
    assert "(missing)" in result.stdout
    report = json.loads(cli("projections", "verify", "--json", "--db", scratch).stdout)
    assert report["ok"] is False and {d["table"] for d in report["differences"]} == {
        "outputs", "tx_audit"}
    rebuilt = cli("projections", "rebuild", "--db", scratch)
    assert "rebuilt" in ok(rebuilt) and "events/s" in rebuilt.stdout
    assert "events/s" in rebuilt.stderr, "the progress bar (on stderr)"
    assert as_json(cli("projections", "verify", "--json", "--db", scratch))["ok"] is True


def test_projections_run_once_and_mode(scratch: str) -> None:
    assert "projections: inline" in ok(cli("projections", "mode", "--db", scratch))
    out = ok(cli("projections", "run", "--once", "--db", scratch))
    assert "projected 0 events" in out and "projections inline" in out
    assert "projections: inline" in ok(cli("projections", "mode", "--db", scratch)), "restored"


def test_read_commands_keep_a_catch_up_ledger_in_catch_up_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    with Ledger.open(url, projections="catchup") as led:
        World(led).mine_empty(4)
    assert "projections: catchup" in ok(cli("projections", "mode", "--db", url))
    ok(cli("audit", "tail", "--db", url))
    assert "projections: catchup" in ok(cli("projections", "mode", "--db", url))
    assert as_json(cli("audit", "tail", "--json", "--db", url)) == [], "nothing projected yet"
    out = ok(cli("projections", "run", "--once", "--db", url))
    projected = int(re.search(r"projected (\d+) events", out).group(1))  # type: ignore[union-attr]
    assert projected > 0 and "projections catchup" in out, "a catch-up ledger stays catch-up"
    assert len(as_json(cli("audit", "tail", "--json", "--db", url))) == projected
    assert "projections: inline" in ok(cli("projections", "mode", "inline", "--db", url))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_projections_run_stops_cleanly(scratch: str, sig: signal.Signals) -> None:
    proc = subprocess.Popen([str(SCRIPT), "projections", "run", "--idle", "0.05", "--db", scratch],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        while "Ctrl-C stops" not in (line := proc.stdout.readline()):
            assert line, "the process ended before it was ready"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, (out, err)
    assert "Traceback" not in err and "stopping" in out and "projected 0 events" in out
    assert "projections: inline" in ok(cli("projections", "mode", "--db", scratch))


# --- bad input -------------------------------------------------------------------------------

ZERO = "0" * 64


def _bad_cases(demo: Demo) -> list[tuple[list[str], int, str]]:
    return [
        (["tx", "abc"], 2, "64 hex digits"),
        (["tx", ZERO], 1, "unknown transaction"),
        (["tx", "ffffff"], 1, "no transaction id starts with ffffff"),
        (["history", ZERO], 1, "unknown transaction"),
        (["history", "not-a-txid"], 2, "64 hex digits"),
        (["audit", "explain", "xyz", "-u", "alice"], 2, "TXID:VOUT"),
        (["audit", "explain", f"{demo.rent}:x", "-u", "alice"], 2, "vout"),
        (["audit", "explain", f"{demo.rent}:0", "-u", "nobody"], 2, "has no output"),
        (["audit", "explain", f"{ZERO}:0", "-u", "alice"], 2, "has no output"),
        (["audit", "replay", "--at", "yesterday"], 2, "--at takes"),
        (["audit", "replay", "--at", "-3"], 2, "--at takes"),
        (["audit", "tail", "--limit", "0"], 2, "--limit"),
        (["outputs", "-u", "carol", "--limit", "5000"], 2, "--limit"),
        (["outputs"], 2, "--user"),
        (["balance", "-u", " "], 2, "user"),
        (["transition", demo.gift, "bogus", "--reason", "x"], 2, "unknown processing state"),
        (["transition", demo.gift, "confirmed", "--reason", "x"], 1, "merkle proof"),
        (["transition", demo.gift, "unfail"], 2, "--reason"),
        (["confirm-unspent", "abc:1", "--reason", "x"], 2, "64 hex digits"),
        (["confirm-unspent", "nocolon", "--reason", "x"], 2, "TXID:VOUT"),
        (["projections", "run", "--idle", "0"], 2, "--idle"),
        (["projections", "mode", "sideways"], 2, "inline or catchup"),
        (["headers", "apply", "/nonexistent/headers.jsonl"], 2, "cannot read"),
        (["no-such-command"], 2, "No such command"),
    ]


def test_bad_input_gets_one_line_and_the_right_exit_code(demo: Demo) -> None:
    before = _log_head(demo.path)
    for args, code, fragment in _bad_cases(demo):
        refused(cli(*args, *demo.db()), code, fragment)
    assert _log_head(demo.path) == before, "a refused command appends nothing"


def _log_head(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        (head,) = conn.execute("SELECT count(*) FROM stored_events").fetchone()
    return int(head)


BAD_URLS = [
    ("nope", "unsupported database URL"),
    ("ftp://host/x", "unsupported database URL"),
    ("sqlite:///", "names a file"),
    ("sqlite:////nonexistent-dir/x.db", "no ledger at"),
    ("postgresql://", "postgresql://USER@HOST:PORT/DBNAME"),
    ("postgresql://postgres@127.0.0.1:notaport/db", "PostgreSQL URL"),
    ("postgresql://postgres@127.0.0.1:1/x", "cannot reach PostgreSQL at 127.0.0.1:1"),
]


@pytest.mark.parametrize(("url", "fragment"), BAD_URLS, ids=[u for u, _ in BAD_URLS])
@pytest.mark.parametrize("command", [["balance", "-u", "bob"], ["history", ZERO],
                                     ["projections", "verify"]], ids=" ".join)
def test_bad_database_url(url: str, fragment: str, command: list[str]) -> None:
    refused(cli(*command, "--db", url), 2, fragment)


def test_bad_database_url_for_the_demo(tmp_path: Path) -> None:
    refused(cli("demo", "--db", "postgresql://postgres@127.0.0.1:1/x"), 2, "cannot reach")
    refused(cli("demo", "--db", f"sqlite:///{tmp_path}/no/such/dir/x.db"), 2, "does not exist")
    refused(cli("demo", "--db", "memory://", "--reset"), 2, "--reset")


def test_a_database_that_is_not_a_ledger_is_left_alone(tmp_path: Path) -> None:
    garbage = tmp_path / "notes.db"
    garbage.write_text("not a database")
    refused(cli("balance", "-u", "bob", "--db", f"sqlite:///{garbage}"), 2,
            "cannot open", "file is not a database")
    other = tmp_path / "other-app.db"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    refused(cli("history", ZERO, "--db", f"sqlite:///{other}"), 2, "holds no wallet-ledger")
    with sqlite3.connect(other) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert tables == {"invoices"}, "a read added nothing to somebody else's database"


@pytest.mark.postgres
def test_postgres_without_a_ledger_or_without_the_database(pg_database: str) -> None:
    empty = new_pg_schema(pg_database)
    refused(cli("balance", "-u", "bob", "--db", empty), 2, "holds no wallet-ledger")
    missing = pg_database.rsplit("/", 1)[0] + "/wl_no_such_database"
    refused(cli("balance", "-u", "bob", "--db", missing), 2, "cannot open",
            'database "wl_no_such_database" does not exist')


@pytest.mark.parametrize(("content", "fragment"), [
    ('{"height": 1, "hash": "' + "ab" * 32 + '", "prev_hash": "' + "cd" * 32
     + '", "merkle_root": "' + "ef" * 32 + '"}\n{not json\n', "line 2: not JSON"),
    ("[1, 2]\n", "line 1: expected an object"),
    ("\n\n", "holds no headers"),
    ('{"height": 200, "hash": "zz", "prev_hash": "00", "merkle_root": "00"}', "hash"),
    ('{"height": ' + "9" * 5_000 + "}", "line 1: not a header"),
    ("[" * 100_000, "line 1: not a header"),
    ('{"height": 1, "hash": "' + "ab" * 32 + '", "prev_hash": "' + "ab" * 32
     + '", "merkle_root": "' + "ab" * 32 + '", "extra": 1}', "extra"),
], ids=["malformed-json", "not-an-object", "empty", "bad-hash", "huge-number", "deep-nesting",
        "unknown-field"])
def test_headers_apply_bad_files(demo: Demo, tmp_path: Path, content: str, fragment: str) -> None:
    file = tmp_path / "h.jsonl"
    file.write_text(content)
    refused(cli("headers", "apply", str(file), *demo.db()), 2, fragment)


def test_headers_apply_checks_the_whole_file_before_applying_any(scratch: str,
                                                                 tmp_path: Path) -> None:
    """A bad line anywhere, even after a full call's worth of good ones, applies nothing."""
    with Ledger.open(scratch) as led:
        tip = led.chain_tip()
    assert tip is not None
    good = chainkit.make_headers(3, start_height=tip.height + 1, prev_hash=tip.hash, salt="ok")
    bad_line = json.dumps({**good[-1], "hash": "zz"})
    unlinked = chainkit.make_headers(1, start_height=tip.height + 9, prev_hash=tip.hash)
    file = tmp_path / "h.jsonl"
    for last, fragment in ((bad_line, "line 4"), (json.dumps(unlinked[0]), "does not follow")):
        file.write_text("\n".join([*(json.dumps(h) for h in good), last]))
        refused(cli("headers", "apply", str(file), "--db", scratch), 2, fragment)
        with Ledger.open(scratch) as led:
            assert led.chain_tip() == tip


def test_stored_text_is_printed_as_written_not_read_as_markup(tmp_path: Path) -> None:
    """Users, labels and details are the wallet's text: ``[/]`` once crashed the table
    renderer and ``[red]vip`` was shown as ``vip``; ``:thumbs_up:`` is not an emoji code."""
    scratch = f"sqlite:///{tmp_path / 'markup.db'}"
    with Ledger.open(scratch) as led:
        world = World(led, salt="markup")
        world.fund("[red]bob", [1_000], labels=["[red]vip"])
        (tx,) = led.list_actions("[red]bob").items
        assert tx.txid is not None
        led.note(tx.txid, "call", ticket="[/] :thumbs_up: [bold]")
    history = ok(cli("history", tx.txid, "--db", scratch))
    assert "ticket=[/] :thumbs_up: [bold]" in " ".join(history.split())
    tail = ok(cli("audit", "tail", "--db", scratch))
    assert "[/]" in tail
    assert "[red]vip" in ok(cli("actions", "--user", "[red]bob", "--db", scratch))
    assert "[red]bob" in ok(cli("balance", "--user", "[red]bob", "--db", scratch))
    assert "[/]" in ok(cli("outputs", "--user", "[/]", "--db", scratch))


def test_positions_are_ascii_digits(demo: Demo) -> None:
    for at in ("²", "\u0661\u0662", "12٣"):
        refused(cli("audit", "replay", "--at", at, *demo.db()), 2, "--at takes")


def test_headers_apply_in_a_new_process_reads_the_chain_snapshot(demo: Demo,
                                                                 tmp_path: Path) -> None:
    """The demo's chain has over 100 events, so it is read from a snapshot: a process that
    did not write that snapshot itself must read it (it once failed with a traceback)."""
    url = copy_ledger(demo.path, tmp_path)
    with Ledger.open(url) as led:
        tip = led.chain_tip()
    assert tip is not None
    file = tmp_path / "next.jsonl"
    file.write_text("\n".join(json.dumps(h) for h in chainkit.make_headers(
        2, start_height=tip.height + 1, prev_hash=tip.hash)))
    done = run_script("headers", "apply", str(file), "--db", url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"connected 2, disconnected 0; tip {tip.height + 2}" in done.stdout


def test_headers_apply_that_connects_to_nothing_is_refused(scratch: str, tmp_path: Path) -> None:
    file = tmp_path / "h.jsonl"
    orphan = chainkit.make_headers(2, start_height=500, prev_hash="ab" * 32)
    file.write_text("\n".join(json.dumps(h) for h in orphan))
    refused(cli("headers", "apply", str(file), "--db", scratch), 1)


def test_an_ambiguous_prefix_asks_for_more_digits(scratch: str, demo: Demo) -> None:
    twin = demo.rent[:10] + "0" * 54
    with sqlite3.connect(scratch.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO a_transactions (txid, state, attempts, was_broadcast, "
                     "is_coinbase, inputs, position, state_position, created_at, updated_at) "
                     "VALUES (?, 'queued', 0, 0, 0, '[]', 1, 1, '', '')", (twin,))
    refused(cli("tx", demo.rent[:6], "--db", scratch), 2, "ambiguous", "more hex digits")
    assert as_json(cli("tx", demo.rent[:11], "--json", "--db", scratch))["txid"] == demo.rent


# --- the installed console script ------------------------------------------------------------

def run_script(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("WALLET_LEDGER_DB",
                                                            "WALLET_LEDGER_PROG")}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True,
                          env={**env, "COLUMNS": str(WIDTH)}, timeout=120, check=False)


def test_console_script_end_to_end(tmp_path: Path) -> None:
    assert SCRIPT.is_file(), f"console script missing at {SCRIPT}"
    demo = run_script("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "wallet-ledger.db").is_file()
    verify = run_script("projections", "verify", cwd=tmp_path)
    assert verify.returncode == 0 and "match" in verify.stdout, verify.stderr
    actions = run_script("actions", "--user", "alice", "--json", cwd=tmp_path)
    rent = next(a for a in json.loads(actions.stdout)["items"] if a["reference"] == "rent")
    history = run_script("history", rent["txid"], cwd=tmp_path)
    assert history.returncode == 0 and "proof.invalidated" in history.stdout
    bad = run_script("tx", "abc", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stdout == "" and len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith("error: ")


# --- PostgreSQL ------------------------------------------------------------------------------

@pytest.fixture
def pg_ledger(pg_database: str) -> Iterator[tuple[str, dict[str, Any]]]:
    url = new_pg_schema(pg_database)
    with Ledger.open(url) as led:
        world = World(led)
        world.mine_empty(5)
        coins = world.fund("erin", [25_000, 5_000])
        raw, _ = world.spend("erin", "coffee", [coins[0]], [(4_000, world.script()),
                                                           (20_500, None)])
        txid = led.sign_action("erin", "coffee", raw_tx=raw).txid
        led.record_broadcast(txid, [ProviderResult(provider="arc", status="seen")])
        world.prove([txid])
        world.mine()
        yield url, {"coffee": txid, "change": Outpoint(txid=txid, vout=1)}


@pytest.mark.postgres
def test_read_commands_on_postgresql(pg_ledger: tuple[str, dict[str, Any]]) -> None:
    url, facts = pg_ledger
    db = ["--db", url]
    page = as_json(cli("outputs", "--user", "erin", "--json", *db))
    assert {(o["txid"], o["vout"]) for o in page["items"]} >= {(facts["coffee"], 1)}
    fits(ok(cli("outputs", "--user", "erin", *db)))
    b = as_json(cli("balance", "--user", "erin", "--json", *db))
    assert b["spendable"] == 5_000 + 20_500
    entries = as_json(cli("history", facts["coffee"][:10], "--json", *db))
    assert [e["to_state"] for e in entries if e["event"] == "processing.changed"] == [
        "sending", "seen", "unconfirmed", "confirmed"]
    assert "match" in ok(cli("projections", "verify", *db))
    why = as_json(cli("audit", "explain", str(facts["change"]), "-u", "erin", "--json", *db))
    assert why["spendable"] is True
    assert "projections: inline" in ok(cli("projections", "mode", *db))
    refused(cli("tx", "0" * 64, *db), 1, "unknown transaction")


# --- library findings (the lead owns ledger/; see the report) ---------------------------------

def test_opening_a_catch_up_ledger_for_reading_keeps_it_in_catch_up_mode(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with Ledger.open(url, projections="catchup") as writer:
        world = World(writer)
        world.mine_empty(2)
        with Ledger.open(url) as reader:  # e.g. an operator's read
            reader.audit_tail()
        world.mine_empty(1)
        pending = writer.head_position()
        assert writer.run_projections() == pending, "the writer's deployment is still catch-up"


def test_broadcast_hands_broadcasters_a_beef(tmp_path: Path) -> None:
    received: list[bytes] = []

    class Recorder:
        name = "recorder"

        def broadcast(self, beef: bytes, txid: str) -> ProviderResult:
            received.append(beef)
            return ProviderResult(provider=self.name, status="success")

    with Ledger.open(f"sqlite:///{tmp_path / 'b.db'}") as led:
        world = World(led)
        world.mine_empty(3)
        (coin,) = world.fund("frank", [9_000])
        raw, _ = world.spend("frank", "pay", [coin], [(8_500, world.script())])
        parent = led.get_transaction(coin.txid).raw_tx
        assert parent is not None
        led.sign_action("frank", "pay", raw_tx=raw, input_beef=chainkit.make_beef("V1", parent))
        led.broadcast(chainkit.txid_of(raw), [Recorder()])
    assert received[0][:4] in (chainkit.BEEF_V1_MAGIC, chainkit.BEEF_V2_MAGIC,
                               chainkit.ATOMIC_BEEF_MAGIC), "a BEEF, not a bare raw tx"


def test_opening_a_file_that_is_not_a_database_raises_storage_error(tmp_path: Path) -> None:
    from ledger import StorageError
    garbage = tmp_path / "garbage.db"
    garbage.write_text("not a database")
    with pytest.raises(StorageError):
        Ledger.open(f"sqlite:///{garbage}")
