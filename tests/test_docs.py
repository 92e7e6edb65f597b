"""The code in README.md and docs/*.md runs, and says what the code does.

Convention (the info string after the opening fence: a language, then an optional mark):

- ```` ```python ````: executed. A file's python blocks share one namespace, in order, with the
  current directory a fresh temporary one. ```` ```python norun ```` is shown only.
- ```` ```sh ```` and ```` ```console ````: executed against the demo ledger. Each command
  (a ``sh`` line, or a ``console`` line after ``$ ``) must be ``wallet-ledger ARGS`` or
  ``./dev wallet-ledger ARGS`` (run in-process, in the file's directory, whose
  ``wallet-ledger.db`` is the demo, played first unless the first command is the demo itself),
  or ``./dev test ...`` (this suite: not re-entered). A command must exit 0 unless the line ends
  with ``# exit N``. In ``console`` blocks the lines after a command are its expected output:
  ``...`` inside a line matches any text, a line of just ``...`` any lines.
  ```` ```sh norun ```` / ```` ```console norun ```` are shown only (e.g. a production URL).
- ```` ```LANG file=NAME ````: the block's text is written to NAME first (e.g. headers to apply).
- ```` ```text ````, ```` ```json ````, ```` ```jsonl ````, ```` ```ini ````: never executed.

A block without a language, or with an unknown one, fails: every block says what it is.
Blocks run in document order, so a python block can prepare a file a shell block uses.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ledger
from adapters.cli import app
from ledger import Ledger, LedgerView

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", ROOT / "docs" / "api.md", ROOT / "docs" / "operations.md"]
RUNNABLE = {"python", "sh", "console"}
SHOWN_ONLY = {"text", "json", "jsonl", "ini"}
FENCE = re.compile(r"^( *)```(.*)$")
"""A fence, at the margin or indented (a block inside a list item); the block's lines lose
the fence's indentation."""
EXIT_MARK = re.compile(r"\s+#\s*exit\s+(\d+)\s*$")


@dataclass
class Block:
    doc: Path
    line: int
    lang: str
    marks: list[str]
    text: str

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.lang in RUNNABLE and "norun" not in self.marks

    def file_target(self) -> str | None:
        return next((m.removeprefix("file=") for m in self.marks if m.startswith("file=")), None)


def blocks(doc: Path) -> list[Block]:
    found, current, start, body, indent = [], None, 0, [], ""
    for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if match is None or (current is not None and match.group(1) != indent):
            if current is not None:
                assert not line.strip() or line.startswith(indent), (
                    f"{doc}:{number}: a line of the block opened at line {start} is indented "
                    "less than its fence")
                body.append(line[len(indent):])
            continue
        if current is None:
            indent = match.group(1)
            current, start, body = match.group(2).split(), number, []
        else:
            lang, *marks = current or [""]
            found.append(Block(doc, start, lang, marks, "\n".join(body) + "\n"))
            current = None
    assert current is None, f"{doc}: a fenced block opened at line {start} never closes"
    return found


def _pattern(expected: str) -> re.Pattern[str]:
    parts = []
    for line in expected.rstrip("\n").splitlines():
        line = line.rstrip()
        if line == "...":
            parts.append(r"(?:.*\n)*?")
        else:
            parts.append(".*".join(re.escape(p) for p in line.split("...")) + r"\n")
    return re.compile("".join(parts))


class Shell:
    """Runs a doc's shell commands in-process against the demo ledger in ``cwd``."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.played = False

    def run(self, command: str, where: str) -> str:
        expect = 0
        mark = EXIT_MARK.search(command)
        if mark:
            expect, command = int(mark.group(1)), command[:mark.start()]
        argv = shlex.split(command, comments=True)
        if argv[:2] == ["./dev", "test"]:
            return ""  # the suite itself (CI runs it); not re-entered from inside it
        if argv[:1] == ["./dev"]:
            argv = argv[1:]
        assert argv[:1] == ["wallet-ledger"], (
            f"{where}: {command!r} is not a wallet-ledger command; mark the block norun")
        if not self.played and argv[1:2] != ["demo"]:
            self._invoke(["demo"], 0, f"{where} (the demo it runs against)")
        self.played = True
        return self._invoke(argv[1:], expect, f"{where}: {command}")

    def _invoke(self, args: list[str], expect: int, what: str) -> str:
        import os
        old = os.getcwd()
        os.chdir(self.cwd)
        try:
            result = CliRunner().invoke(app, args, env={
                "COLUMNS": "80", "WALLET_LEDGER_DB": None, "WALLET_LEDGER_PROG": None})
        finally:
            os.chdir(old)
        assert result.exit_code == expect, (
            f"{what}: exit {result.exit_code}, expected {expect}\n{result.stdout}{result.stderr}")
        assert "Traceback" not in result.stdout + result.stderr, what
        return result.stdout + result.stderr


def _run_console(shell: Shell, block: Block) -> None:
    command: str | None = None
    expected: list[str] = []

    def finish() -> None:
        if command is None:
            return
        output = shell.run(command, block.where)
        if expected:
            actual = "\n".join(ln.rstrip() for ln in output.splitlines()) + "\n"
            if not _pattern("\n".join(expected)).fullmatch(actual):
                pytest.fail(f"{block.where}: the output of {command!r} differs from the doc\n"
                            "--- doc ---\n" + "\n".join(expected) + f"\n--- actual ---\n{actual}",
                            pytrace=False)

    for line in block.text.splitlines():
        if line.startswith("$ "):
            finish()
            command, expected = line[2:], []
        elif command is not None:
            expected.append(line)
        else:
            assert not line.strip(), f"{block.where}: text before the first `$ ` command"
    finish()


def run_doc(doc: Path, cwd: Path) -> None:
    shell, namespace = Shell(cwd), {"__name__": f"doc:{doc.name}"}
    import os
    for block in blocks(doc):
        target = block.file_target()
        if target:
            (cwd / target).write_text(block.text, encoding="utf-8")
        if not block.runs:
            continue
        if block.lang == "python":
            old = os.getcwd()
            os.chdir(cwd)
            try:
                code = compile("\n" * block.line + block.text, str(block.doc), "exec")
                exec(code, namespace)
            finally:
                os.chdir(old)
        elif block.lang == "sh":
            for line in block.text.splitlines():
                if line.strip() and not line.lstrip().startswith("#"):
                    shell.run(line, block.where)
        else:
            _run_console(shell, block)


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_block_says_what_it_is(doc: Path) -> None:
    assert doc.is_file(), f"{doc} is missing"
    for block in blocks(doc):
        assert block.lang in RUNNABLE | SHOWN_ONLY, (
            f"{block.where}: fenced block with language {block.lang!r}; use one of "
            f"{sorted(RUNNABLE | SHOWN_ONLY)} (mark shown-only code `norun`)")
        unknown = [m for m in block.marks if m != "norun" and not m.startswith("file=")]
        assert not unknown, f"{block.where}: unknown marks {unknown}"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_doc_code_runs_and_matches_its_output(doc: Path, tmp_path: Path) -> None:
    run_doc(doc, tmp_path)


def test_readme_starts_with_the_two_commands() -> None:
    first = blocks(ROOT / "README.md")[0]
    assert (first.lang, first.text) == ("sh", "./dev wallet-ledger demo\n./dev test\n")
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# ") and lines[2:6] == [
        "```sh", "./dev wallet-ledger demo", "./dev test", "```"]


def test_readme_embedding_example_is_short_and_uses_the_public_api() -> None:
    python = [b for b in blocks(ROOT / "README.md") if b.lang == "python" and b.runs]
    assert python, "README needs an embedding example"
    example = python[0].text
    assert 12 <= len(example.strip().splitlines()) <= 30
    assert "from ledger import" in example and "Ledger.open(" in example


def _public_methods(cls: type) -> set[str]:
    return {n for n, v in vars(cls).items() if not n.startswith("_")
            and (callable(v) or isinstance(v, property | classmethod))}


def test_api_doc_covers_the_whole_public_api() -> None:
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    headings = set(re.findall(r"^#{2,4} .*?`([A-Za-z_][\w.]*)", text, flags=re.M))
    missing_names = [n for n in ledger.__all__ if f"`{n}" not in text]
    assert not missing_names, f"docs/api.md does not mention {missing_names}"
    methods = _public_methods(Ledger) | _public_methods(LedgerView)
    undocumented = sorted(m for m in methods
                          if not any(h.endswith(m) for h in headings) and f"led.{m}(" not in text
                          and f".{m}(" not in text and f"`{m}`" not in text)
    assert not undocumented, f"docs/api.md has no entry for Ledger.{undocumented}"


def _view_fields() -> dict[str, Any]:
    return {name: getattr(ledger, name).model_fields for name in (
        "TransactionView", "ActionView", "OutputView", "Balance", "AuditEntry", "ChainUpdate",
        "Explanation", "RebuildReport", "DriftReport")}


def test_api_doc_lists_every_view_field() -> None:
    """Each view is written once as ``View(field, field, ...)``, with exactly its fields."""
    text = " ".join((ROOT / "docs" / "api.md").read_text(encoding="utf-8").split())
    for view, fields in _view_fields().items():
        match = re.search(rf"`{view}\(([^)`]*)\)`", text)
        assert match, f"docs/api.md never lists the fields of {view} as `{view}(...)`"
        listed = [f.strip() for f in match.group(1).split(",")]
        assert listed == list(fields), f"docs/api.md: {view}{tuple(listed)} != {tuple(fields)}"
