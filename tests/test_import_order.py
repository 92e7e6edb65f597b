"""Every module can be imported first, in a fresh interpreter.

The incident this prevents: a standalone projection process (``from projections import replay``)
or a tool that only needs the persistence adapter crashes at start-up with a circular-import
error, while everything works in the test suite (where ``ledger`` happens to be imported first).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from procs import ROOT


class ImportCycle(Exception):
    """Importing the module first fails on a partially initialised module."""


def _import_alone(module: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", f"import {module}"], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.slow
def test_the_pure_rules_import_alone() -> None:
    """The control: the same harness succeeds where there is no cycle."""
    done = _import_alone("ledger.rules")
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.parametrize("module", ["projections.replay", "adapters.persistence"])
def test_a_projection_or_adapter_module_imports_alone(module: str) -> None:
    done = _import_alone(module)
    if "partially initialized module" in done.stderr:
        raise ImportCycle(done.stderr.strip().splitlines()[-1])
    assert done.returncode == 0, done.stderr[-2000:]
