"""The deployed lab as a bench target: the control node's router files, used from this host.

The Fleet runs here (in the root namespace, which reaches the lab's
198.18.0.0/24) with the control node's own routing key, inventory and
known_hosts, so orders take the real path: SSH to each node's galaxy user,
forced command `galaxy remote`. Needs `make demo` (or site.yml) to have run.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from labfixture import control_files_config  # noqa: E402

LAB = [sys.executable, str(REPO / "lab" / "galaxy_lab.py")]


def _fetch(path: str) -> bytes:
    proc = subprocess.run([*LAB, "ssh", "control", "--", "cat", path], capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise SystemExit(f"lab: cannot read {path} on control (deploy the lab first: make demo): "
                         f"{proc.stderr.decode(errors='replace').strip()}")
    return proc.stdout


def lab_control_config(root: Path) -> tuple[Path, str, str]:
    """A control config for this host pointing at the lab; returns (config, one node, deploy inventory)."""
    return control_files_config(_fetch, root, "bench"), "web1", str(REPO / "inventory" / "lab" / "hosts.yml")
