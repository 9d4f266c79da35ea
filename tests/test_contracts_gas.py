"""The gas report script runs end to end (small sizes here; the full 3-vs-30 run is `scripts/gas_report`)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedchain.contracts.anvil import AnvilError, find_anvil

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gas_report"


@pytest.mark.anvil
def test_gas_report_passes_and_bounds_commitment():
    try:
        find_anvil()
    except AnvilError as exc:
        pytest.skip(str(exc))
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "3", "--large", "5"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    worst = int(re.search(r"update commitment: max ([\d,]+) gas", proc.stdout).group(1).replace(",", ""))
    assert 50_000 < worst <= 100_000
    rows = [line for line in proc.stdout.splitlines() if line.startswith("commit_update")]
    assert len(rows) == 2 and "GROWS" not in proc.stdout
    assert re.search(r"size independence: (\d+)/\1 operations", proc.stdout)
