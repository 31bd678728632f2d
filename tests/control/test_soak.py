"""A short soak through the control plane (bench/soak.py): 1,000 orders into two real
workers while one worker is killed -9 twice; every order ends exactly once, answered and audited."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import soak  # noqa: E402


def test_short_soak_loses_nothing_and_runs_nothing_twice():
    result = soak.run(orders=1000, minutes=1.0, kills=2, seed=12, quiet=True)
    assert result["problems"] == []
    assert result["orders"] == 1000 and result["kills"] == 2
    assert sum(result["states"].values()) == 1000
    assert set(result["states"]) <= {"done", "interrupted"}
    assert result["states"].get("done", 0) >= 900
