"""Support for the dashboard tests: a store filled by a real local fleet, and the real
`galaxy dashboard` process on it.

The fleet: web1, web2 and db1 run real `galaxy worker` processes reached through
`galaxy remote` (tests/control's LocalFleet); "ghost" is an SSH node on a
loopback port nobody listens on. Orders run (done, failed, cancelled, timed
out), health checks are recorded, web2's worker is stopped so that it turns
unhealthy and alerts, db1's connection is cut (down); ghost never connected.
The fleet keeps running while the tests read the store.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeenv import GALAXY, wait_for

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
ARTIFACTS = REPO / "artifacts" / "dashboard"
# An order text that must show up as text, never as markup or script.
HOSTILE_PAYLOAD = 'say </script><script>document.title="pwned"</script> & <b>bold</b>'


def local_fleet_class() -> Any:
    spec = importlib.util.spec_from_file_location("control_local_fleet", TESTS / "control" / "conftest.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LocalFleet


@dataclass
class FilledFleet:
    lf: Any
    fleet: Any
    store_path: Path
    config_path: Path
    orders: dict[str, Any]


def fill(lf: Any, fleet: Any) -> dict[str, Any]:
    assert fleet.wait_connected(30, ["web1", "web2", "db1"]), "the local workers did not connect"
    web1, web2 = lf.nodes["web1"], lf.nodes["web2"]
    # a health check on each node while all is well (health_check events stream into the store)
    for env in lf.nodes.values():
        env.galaxy("health", "--json", check=True)
    orders: dict[str, Any] = {}
    done = fleet.submit("db1", "vacuum the database", sender="erin", chat_id=4)
    done += fleet.submit("web1", "deploy the docs", sender="alice", chat_id=1)
    done += fleet.submit("web1", HOSTILE_PAYLOAD, sender="mallory", chat_id=5)
    done += fleet.submit("web1", "run the test suite", sender="alice", chat_id=1)
    done += fleet.submit("web", "uptime on every web node", sender="bob", chat_id=2)
    failed = fleet.submit("web2", "import sys; print('migration failed'); sys.exit(3)", sender="carol",
                          chat_id=3, executor="py")
    timed_out = fleet.submit("web2", "30", sender="bob", executor="sleep", timeout=1)
    cancelled = fleet.submit("web1", "60", sender="alice", executor="sleep")
    wait_for(lambda: fleet.order(cancelled[0].id).state == "running", 20, what="the long order running")
    fleet.cancel(cancelled[0].id, user="alice")
    everything = done + failed + timed_out + cancelled
    final = {r.id: r for r in fleet.wait([r.id for r in everything], timeout=60)}
    assert {final[r.id].state for r in done} == {"done"}
    assert final[failed[0].id].state == "failed" and final[timed_out[0].id].state == "timed_out"
    assert final[cancelled[0].id].state == "cancelled"
    # one order still waiting: web1's single runner is busy with a long one
    running = fleet.submit("web1", "300", sender="dave", executor="sleep")
    wait_for(lambda: fleet.order(running[0].id).state == "running", 20, what="a running order")
    queued = fleet.submit("web1", "a queued order", sender="dave")
    wait_for(lambda: fleet.order(queued[0].id).state == "queued", 20, what="a queued order")
    orders.update(done=done, failed=failed, timed_out=timed_out, cancelled=cancelled, running=running,
                  queued=queued)
    # web2's worker stops: its next health check fails and alerts (state change healthy -> failing)
    web2.stop_workers()
    web2.galaxy("health", "--json")
    web1.galaxy("health", "--json", check=True)
    # the full reports, as the bot's /health stores them (web1's worker has reported its running order)
    beat = web1.spool / "state" / "heartbeat.json"
    wait_for(lambda: json.loads(beat.read_text()).get("running"), 20, what="web1's heartbeat with the running order")
    reports = fleet.health("web1,web2")
    assert reports["web1"]["healthy"] is True and reports["web2"]["healthy"] is False
    store = fleet.store
    wait_for(lambda: len(store.events(type="health_check")) == 5, 20, what="5 health_check events in the store")
    wait_for(lambda: any(a["kind"] == "health_failing" for a in store.alerts()), 20, what="web2's health alert")
    # ... and the control node notices the silent worker itself (then the alerts stay as they are)
    wait_for(lambda: any(a["kind"] == "worker_silent" and a["host"] == "web2" for a in store.alerts()), 20,
             what="the control node's alert about web2's silent worker")
    fleet.health("db1")
    # db1 goes away: its `galaxy remote` can no longer start (config gone), the link drops
    db1 = lf.nodes["db1"]
    db1.config_path.rename(db1.config_path.with_suffix(".gone"))
    fleet.router.links["db1"].drop("test: db1 was cut off")
    wait_for(lambda: not store.nodes()["db1"]["connected"], 20, what="db1 marked down")
    return orders


def dashboard_command() -> list[str]:
    """`galaxy dashboard` once cli.py registers it; until then the same code through
    ``python -m galaxy_fleet.dashboard``."""
    probe = subprocess.run([*GALAXY, "dashboard", "--help"], capture_output=True, text=True, timeout=60)
    if probe.returncode == 0:
        return [*GALAXY, "dashboard"]
    return [sys.executable, "-m", "galaxy_fleet.dashboard"]


class DashboardProcess:
    def __init__(self, config_path: Path, workdir: Path, *args: str, env: dict[str, str] | None = None):
        self.log_path = workdir / f"dashboard-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")
        full_env = {k: v for k, v in os.environ.items() if k != "GALAXY_DASHBOARD_TOKEN"}
        full_env.update({"GALAXY_CONFIG": str(config_path), "PYTHONUNBUFFERED": "1", **(env or {})})
        self.proc = subprocess.Popen([*dashboard_command(), "--port", "0", *args], env=full_env,
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.url = wait_for(self._url, 30, 0.05, what="the dashboard to listen")
        if self.url is None:
            raise AssertionError(f"dashboard did not start: {self.output()}")

    def _url(self) -> str | None:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", self.log_path.read_text(errors="replace"))
        if m:
            return m.group(1)
        if self.proc.poll() is not None:
            raise AssertionError(f"dashboard exited {self.proc.returncode}: {self.output()}")
        return None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
