"""The Molecule scenario molecule/default on lab machines of its own:
create -> converge -> idempotence -> verify -> destroy."""

from __future__ import annotations

import re

import pytest

from collection import ansible_env, collections_path, run, tool


@pytest.mark.timeout(2700)
def test_molecule_default_scenario():
    collections_path()
    cp = run([tool("molecule"), "test", "--scenario-name", "default"], env=ansible_env(NO_COLOR="1", PY_COLORS="0"),
             timeout=2400)
    output = re.sub(r"\x1b\[[0-9;]*m", "", cp.stdout + cp.stderr)
    assert cp.returncode == 0, output[-12000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(rf"{step}: Executed: Successful", output), f"{step} did not succeed:\n{output[-6000:]}"
    assert "Idempotence test failed" not in output
