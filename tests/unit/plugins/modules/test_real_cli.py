"""The modules against the real galaxy CLI and a real worker process.

No lab needed: the worker runs here with a throw-away config and spool, and
the shell executor answers (no LLM). The lab and Molecule tests do the same
over SSH on systemd machines.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ansible_collections.galaxy_protocol.fleet.plugins.modules import audit, health, order

GALAXY = Path(sys.executable).parent / "galaxy"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    assert GALAXY.exists(), f"{GALAXY} missing: install files/galaxy into this venv (make deps)"
    root = tmp_path_factory.mktemp("node")
    config = root / "config.yml"
    config.write_text(
        f"host: web9\nspool_dir: {root / 'spool'}\n"
        "worker: {default_executor: shell, max_payload_bytes: 1000, heartbeat_interval: 0.5}\n"
    )
    env = dict(os.environ)
    env.pop("NOTIFY_SOCKET", None)
    worker = subprocess.Popen([str(GALAXY), "--config", str(config), "worker"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while subprocess.run([str(GALAXY), "--config", str(config), "health", "--json", "--no-record"],
                             capture_output=True, check=False).returncode != 0:
            assert worker.poll() is None, worker.stderr.read().decode()
            assert time.monotonic() < deadline, "worker never became healthy"
            time.sleep(0.2)
        yield {"path": str(GALAXY), "config": str(config)}
    finally:
        worker.terminate()
        worker.wait(timeout=20)


def test_order_runs_through_the_real_worker(node, run_module):
    kind, result = run_module(order, {**node, "payload": "uptime", "executor": "shell", "wait_timeout": 30})
    assert kind == "exit", result
    assert result["state"] == "done" and result["exit_code"] == 0 and result["changed"] is True
    assert "load average" in result["answer"] and result["answer"] in result["response"]
    assert result["host"] == "web9"


def test_unknown_executor_is_rejected_by_the_node(node, run_module):
    kind, result = run_module(order, {**node, "payload": "uptime", "executor": "nope"})
    assert kind == "fail"
    assert result["rc"] == 2
    assert "unknown executor 'nope'" in result["msg"]


def test_oversized_payload_is_rejected_by_the_node(node, run_module):
    kind, result = run_module(order, {**node, "payload": "x" * 2000, "executor": "shell"})
    assert kind == "fail"
    assert result["rc"] == 2
    assert "over the limit of 1000" in result["msg"]


def test_shell_command_outside_the_allow_list_ends_failed(node, run_module):
    kind, result = run_module(order, {**node, "payload": "rm -rf /", "executor": "shell", "wait_timeout": 30})
    assert kind == "fail"
    assert result.get("state") in ("failed", None), result
    assert result["rc"] in (1, 2)


def test_health_of_a_running_worker(node, run_module):
    kind, result = run_module(health, {**node, "fail_on_unhealthy": True})
    assert kind == "exit", result
    assert result["healthy"] is True and result["changed"] is False
    assert result["status"] == "healthy" and result["reason"].endswith("checks passed")  # decided by the node
    assert "worker" in [check["name"] for check in result["checks"]]


def test_audit_pages_with_the_cursor_and_verifies(node, run_module):
    kind, first = run_module(audit, {**node, "limit": 2, "verify": True})
    assert kind == "exit", first
    assert first["verification"]["ok"] is True
    assert [e["seq"] for e in first["events"]] == [1, 2] and first["cursor"] == 2
    kind, rest = run_module(audit, {**node, "after": first["cursor"]})
    assert kind == "exit"
    assert rest["events"] and rest["events"][0]["seq"] == 3
    assert rest["cursor"] == rest["events"][-1]["seq"]
    assert any(e["type"] == "order_rejected" for e in first["events"] + rest["events"])
