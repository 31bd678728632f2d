"""pytest plugin: the lab fleet as a session fixture.

Load it with ``pytest_plugins = ["labfixture"]`` (tests/ on sys.path) and ask
for ``lab``::

    def test_uptime(lab):
        cp = lab.ssh("web1", "uptime")
        assert cp.returncode == 0

The fixture boots the lab (``lab/galaxy_lab.py up``) if it is not up and
holds it for the session. At the end of the session, even a failed one, it
releases its hold: the lab is torn down if this session (or another test
session that has finished since) started it and nobody else holds it. A lab
started by hand (``make lab-up``) is left running for the person who started it.
``LAB_NODES`` chooses the number of nodes when the fixture has to boot the lab.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import pytest

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "lab" / "galaxy_lab.py"


def control_files_config(fetch: Callable[[str], bytes], root: Path, host: str,
                         settings: dict[str, Any] | None = None) -> Path:
    """A control config for this host that routes like the lab's control machine: its
    routing key (kept 0600), known_hosts and inventory, fetched with ``fetch(path)``."""
    import yaml

    key = root / "routing_key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(fetch("/etc/galaxy/routing_ed25519"))
    (root / "known_hosts").write_bytes(fetch("/etc/galaxy/known_hosts"))
    (root / "inventory.yml").write_bytes(fetch("/etc/galaxy/inventory.yml"))
    cfg = root / "control.yml"
    cfg.write_text(yaml.safe_dump({"host": host, "spool_dir": str(root / "spool"), "control": {
        "inventory": str(root / "inventory.yml"), "store": str(root / "galaxy.db"),
        "known_hosts": str(root / "known_hosts"), "ssh_key": str(key),
        "remote_command": "/opt/galaxy/bin/galaxy remote", **(settings or {})}}))
    return cfg


def lab_tool(*args: str, timeout: float = 900, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run lab/galaxy_lab.py with the system Python (it needs only the standard library)."""
    cp = subprocess.run(
        [sys.executable, str(TOOL), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and cp.returncode != 0:
        raise RuntimeError(f"galaxy_lab.py {' '.join(args)} failed ({cp.returncode}):\n{cp.stderr}{cp.stdout}")
    return cp


@dataclass
class LabFleet:
    """A running lab: its inventory, machines and SSH credentials."""

    inventory: Path
    hosts: dict[str, str]
    key: Path
    known_hosts: Path
    ssh_options: list[str] = field(default_factory=list)

    def ssh_argv(self, name: str) -> list[str]:
        """The ssh command line (without the remote command) that reaches machine `name` as root."""
        if name not in self.hosts:
            raise KeyError(f"no machine {name!r} in the lab (machines: {', '.join(self.hosts)})")
        return ["ssh", "-F", "none", *self.ssh_options, f"root@{self.hosts[name]}"]

    def ssh(
        self, name: str, cmd: str | Sequence[str], *, timeout: float = 120, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` on machine `name` (a shell string, or an argv that is quoted for you)."""
        remote = cmd if isinstance(cmd, str) else shlex.join(cmd)
        return subprocess.run(
            [*self.ssh_argv(name), remote],
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )


def lab_status() -> dict:
    return json.loads(lab_tool("status", "--json", check=False).stdout)


def _fleet(info: dict) -> LabFleet:
    key, known_hosts = Path(info["key"]), Path(info["known_hosts"])
    options = [
        "-i", str(key),
        "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=10",
        "-o", "LogLevel=ERROR",
    ]
    return LabFleet(Path(info["inventory"]), dict(info["hosts"]), key, known_hosts, options)


@pytest.fixture(scope="session")
def lab() -> Iterator[LabFleet]:
    """The lab fleet (control + web1..webN), booted if needed and released at the end of the session."""
    args = ["up", "--hold", str(os.getpid())]
    if os.environ.get("LAB_NODES", "").strip():
        args += ["--nodes", os.environ["LAB_NODES"].strip()]
    try:
        lab_tool(*args)
        info = lab_status()
        if not info["up"]:
            raise RuntimeError(f"the lab came up but is not healthy: {json.dumps(info['machines'])}")
        yield _fleet(info)
    finally:
        lab_tool("release", str(os.getpid()))
