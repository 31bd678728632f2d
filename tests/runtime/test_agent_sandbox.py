"""The agent's sandbox protocol (galaxy_fleet.node.executors.sandbox) with real processes.

systemd's part (galaxy-agent.socket, Accept=yes: one instance per connection,
the connection as its stdin) is played by a thread that accepts on a Unix
socket and starts ``python -m galaxy_fleet.node.executors.sandbox`` with the
connection as stdin, as systemd does. The account switch itself is systemd's
and is tested on the lab (tests/lab_e2e/test_escape.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from galaxy_fleet.config import from_dict
from galaxy_fleet.node.executors import RunContext, build
from galaxy_fleet.node.executors.sandbox import SandboxError, signal_as_agent
from galaxy_fleet.order import CANCELLED, DONE, FAILED, Order, new_id


class FakeSocketUnit:
    def __init__(self, root: Path):
        self.path = str(root / "agent.sock")
        self.scratch = root / "scratch"
        self.scratch.mkdir()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(8)
        self.procs: list[subprocess.Popen[bytes]] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            env = {**os.environ, "GALAXY_SCRATCH_DIR": str(self.scratch)}
            self.procs.append(subprocess.Popen([sys.executable, "-m", "galaxy_fleet.node.executors.sandbox"],
                                               stdin=conn.fileno(), stdout=conn.fileno(), env=env))
            conn.close()

    def close(self) -> None:
        self.listener.close()
        for p in self.procs:
            p.wait(timeout=30)


@pytest.fixture
def unit(tmp_path: Path) -> Iterator[FakeSocketUnit]:
    u = FakeSocketUnit(tmp_path)
    yield u
    u.close()


def run(unit: FakeSocketUnit, payload: str, *, stdin: bool = False, cancel_after: float | None = None,
        env: dict[str, str] | None = None) -> tuple:
    config = from_dict({"worker": {"agent_socket": unit.path}})
    spec = {"type": "command", "argv": ["sh", "-c", "{payload}"], "stdin": stdin}
    if env:
        spec["env"] = env
    ex = build("hostile", spec, config)
    order = Order(id=new_id(), payload=payload, target="n1", sender="t")
    ctx = RunContext(order.id, deadline=time.monotonic() + 60, max_output_bytes=65536, state_dir=unit.scratch)
    if cancel_after is not None:
        threading.Timer(cancel_after, ctx.cancel, ("cancel",)).start()
    return ex.run(order, ctx), order


def test_a_program_runs_in_the_sandbox_with_its_own_scratch_home_removed_at_the_end(unit, monkeypatch):
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", "/run/credentials/galaxy-worker.service")
    monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "hunter2")
    result, order = run(unit, 'echo "home=$HOME"; pwd; env; echo oops >&2; exit 3', env={"KEEP_ME": "1"})
    assert result.status == FAILED and result.exit_code == 3
    scratch = unit.scratch / order.id
    assert f"home={scratch}" in result.output
    assert str(scratch) in result.output.splitlines()[1]
    assert "CREDENTIALS_DIRECTORY" not in result.output and "hunter2" not in result.output
    assert "KEEP_ME=1" in result.output
    assert "oops" in (result.error or "")
    assert not scratch.exists()


def test_stdin_reaches_the_program_and_a_zero_exit_is_done(unit):
    config = from_dict({"worker": {"agent_socket": unit.path}})
    ex = build("cat", {"type": "command", "argv": ["cat"], "stdin": True}, config)
    order = Order(id=new_id(), payload="through the pipe", target="n1", sender="t")
    ctx = RunContext(order.id, deadline=time.monotonic() + 60, max_output_bytes=65536, state_dir=unit.scratch)
    result = ex.run(order, ctx)
    assert result.status == DONE and result.output.strip() == "through the pipe"


def test_a_cancel_stops_the_program_and_what_it_started(unit, tmp_path):
    marker = tmp_path / "survivor"
    result, _ = run(unit, f"(sleep 3; touch {marker}) & sleep 30", cancel_after=0.5)
    assert result.status == CANCELLED
    time.sleep(3.5)
    assert not marker.exists()


def test_a_missing_program_and_a_missing_sandbox_are_clear_failures(unit, tmp_path):
    config = from_dict({"worker": {"agent_socket": unit.path}})
    ex = build("nope", {"type": "command", "argv": ["/nonexistent/prog"]}, config)
    order = Order(id=new_id(), payload="x", target="n1", sender="t")
    ctx = RunContext(order.id, deadline=time.monotonic() + 60, max_output_bytes=65536, state_dir=unit.scratch)
    result = ex.run(order, ctx)
    assert result.status == FAILED and "not found: /nonexistent/prog" in (result.error or "")

    config = from_dict({"worker": {"agent_socket": str(tmp_path / "absent.sock")}})
    ex = build("nope", {"type": "command", "argv": ["true"]}, config)
    result = ex.run(order, ctx)
    assert result.status == FAILED and "sandbox" in (result.error or "") and "not available" in result.error


def test_a_process_of_the_agent_is_signalled_through_the_sandbox(unit):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        signal_as_agent(unit.path, victim.pid, 9)
        assert victim.wait(timeout=10) == -9
    finally:
        victim.kill()
    with pytest.raises(SandboxError):
        signal_as_agent(unit.path, 2**22 + 12345, 9)  # no such process: the reason comes back
