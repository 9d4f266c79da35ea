"""``fedchain demo --mode secagg|he`` run end to end and the replay VERIFIES every round."""

from __future__ import annotations

import pytest

from fedchain.cli import main as cli_main
from fedchain.cli.demo import run_demo
from fedchain.coordinator.audit.replay import VERIFIED
from fedchain.errors import ConfigError


@pytest.mark.parametrize("mode", ["secagg", "he"])
def test_demo_in_each_private_mode_replays_verified(tmp_path, mode):
    result = run_demo(tmp_path / mode, rounds=2, quiet=True, mode=mode)
    assert result.mode == mode and result.replay == [VERIFIED, VERIFIED]
    assert result.federated_accuracy > 0.85
    assert [len(r.participants) for r in result.rounds] == [3, 3]  # hospital-d sits out by policy


def test_demo_refuses_an_unknown_mode(tmp_path, capsys):
    with pytest.raises(ConfigError, match="mode"):
        run_demo(tmp_path / "x", rounds=1, quiet=True, mode="magic")
    assert cli_main(["demo", "--mode", "magic", "--out", str(tmp_path / "y")]) != 0
