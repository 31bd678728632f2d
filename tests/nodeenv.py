"""A real node on the local machine for tests: a spool in a temp dir, a config
file, and `galaxy worker` running as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

GALAXY = [sys.executable, "-m", "galaxy_fleet.cli"]
PY = sys.executable

# A command executor that echoes its payload; "sleep" sleeps for the payload's seconds.
EXECUTORS: dict[str, Any] = {
    "echo": {"type": "command", "argv": ["/bin/echo", "{payload}"]},
    "sleep": {"type": "command", "argv": ["/bin/sleep", "{payload}"]},
    "cat": {"type": "command", "argv": ["/bin/cat"], "stdin": True},
    "py": {"type": "command", "argv": [PY, "-c", "{payload}"]},
}


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.02, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class NodeEnv:
    def __init__(self, root: Path, **overrides: Any):
        self.root = root
        self.spool = root / "spool"
        self.config_path = root / "config.yml"
        self.workers: list[subprocess.Popen[bytes]] = []
        self.write_config(**overrides)

    def write_config(self, **overrides: Any) -> None:
        cfg: dict[str, Any] = {
            "host": "testnode",
            "spool_dir": str(self.spool),
            "worker": {"runners": 1, "default_timeout": 60, "heartbeat_interval": 0.5,
                       "default_executor": "echo"},
            "executors": dict(EXECUTORS),
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        self.config = cfg
        self.config_path.write_text(yaml.safe_dump(cfg))

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GALAXY_CONFIG": str(self.config_path), "PYTHONUNBUFFERED": "1"}

    def galaxy(self, *args: str, input: bytes | None = None, check: bool = False,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
        raw = subprocess.run([*GALAXY, *args], env=self.env, input=input, capture_output=True, timeout=timeout)
        proc = subprocess.CompletedProcess(raw.args, raw.returncode, raw.stdout.decode(errors="replace"),
                                           raw.stderr.decode(errors="replace"))
        if check and proc.returncode != 0:
            raise AssertionError(f"galaxy {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def submit(self, payload: str, *args: str) -> str:
        out = self.galaxy("order", "submit", "--json", *args, payload, check=True).stdout
        return json.loads(out)["id"]

    def start_worker(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.root / f"worker-{len(self.workers)}.log", "wb")
        proc = subprocess.Popen([*GALAXY, "worker", *args], env={**self.env, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT)
        self.workers.append(proc)
        hb = self.spool / "state" / "heartbeat.json"
        wait_for(lambda: hb.exists() and self._hb_pid(hb) == proc.pid or proc.poll() is not None,
                 what="worker heartbeat")
        if proc.poll() is not None:
            raise AssertionError(f"worker exited {proc.returncode}: {self.worker_log(proc)}")
        return proc

    def _hb_pid(self, hb: Path) -> int | None:
        try:
            return json.loads(hb.read_text())["pid"]
        except (OSError, ValueError, KeyError):
            return None

    def worker_log(self, proc: subprocess.Popen[bytes]) -> str:
        idx = self.workers.index(proc)
        return (self.root / f"worker-{idx}.log").read_text(errors="replace")

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def sidecar(self, order_id: str) -> dict[str, Any]:
        return json.loads((self.spool / "responses" / f"{order_id}.json").read_text())

    def wait_done(self, order_id: str, timeout: float = 20) -> dict[str, Any]:
        # The order file reaches archive/ last, after response, audit event and alert.
        path = self.spool / "archive" / f"{order_id}.json"
        wait_for(path.exists, timeout, what=f"order {order_id} archived")
        return self.sidecar(order_id)

    def audit_events(self, order_id: str | None = None) -> list[dict[str, Any]]:
        path = self.spool / "audit" / "audit.jsonl"
        events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in events if order_id is None or e.get("order_id") == order_id]

    def lifecycle(self, order_id: str) -> list[str]:
        """The order's audit event types, progress lines left out."""
        return [e["type"] for e in self.audit_events(order_id) if e["type"] != "order_progress"]

    def outbox(self) -> list[dict[str, Any]]:
        return [json.loads(p.read_text()) for p in sorted((self.spool / "outbox").glob("*.json"))]
