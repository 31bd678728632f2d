"""Helpers of the end-to-end lab tests and bench/bench_detect.py: the lab, the
scripted LLM on the lab network, and the control side (a Fleet) on this host."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from labfixture import REPO, lab_tool  # noqa: E402
from support.llm_server import ScriptedLLM, _Handler  # noqa: E402

# The control side notices a dead link within a few seconds (the defaults, 5 s
# pings and 12 s, are gentler on slow links).
CONTROL_SETTINGS = {"ping_interval": 1.0, "dead_after": 4.0, "connect_timeout": 5.0, "backoff_max": 2.0,
                    "health_every": 0}


class LabLLM(ScriptedLLM):
    """The scripted LLM listening on this host's lab address (198.18.N.1), which the nodes reach."""

    def __init__(self, host: str, default_reply: str = "ok") -> None:
        super().__init__(default_reply)
        self.host = host

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "LabLLM":
        llm = self

        class Handler(_Handler):
            owner = llm

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="lab-llm", daemon=True)
        self._thread.start()
        return self


@dataclass
class Seen:
    kind: str  # FleetEvent.kind, or the alert's kind for alerts
    host: str
    t: float  # time.monotonic() when the control side got it
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class E2ELab:
    lab_id: str
    state: Path
    hosts: dict[str, str] = field(default_factory=dict)
    up: bool = False
    llm: Any = None
    fleet: Any = None
    seen: list[Seen] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def inventory(self) -> Path:
        return self.state / "hosts.yml"

    @property
    def root_addr(self) -> str:
        return f"198.18.{self.lab_id}.1"

    def netns(self, name: str) -> str:
        return f"glab{self.lab_id}-{name}"

    def lab(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        return lab_tool("--lab-id", self.lab_id, "--state-dir", str(self.state), "--inventory",
                        str(self.inventory), *args, check=check, timeout=timeout)

    def ssh(self, name: str, command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """A shell command line as root on machine ``name`` (over the lab's own SSH key)."""
        return subprocess.run(
            ["ssh", "-F", "none", "-i", str(self.state / "id_ed25519"), "-o", "IdentitiesOnly=yes",
             "-o", f"UserKnownHostsFile={self.state / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR",
             f"root@{self.hosts[name]}", command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def must(self, name: str, command: str, timeout: float = 120) -> str:
        cp = self.ssh(name, command, timeout)
        if cp.returncode != 0:
            raise AssertionError(f"{name}: {command!r} failed ({cp.returncode}): {cp.stderr}{cp.stdout}")
        return cp.stdout

    def link(self, name: str, up: bool) -> None:
        """Cut (or restore) machine ``name``'s network: its eth0 inside its namespace."""
        subprocess.run(["ip", "-n", self.netns(name), "link", "set", "eth0", "up" if up else "down"],
                       check=True, capture_output=True, timeout=10)

    # -- the control side ----------------------------------------------------------
    def start_fleet(self, config_path: Path) -> None:
        from galaxy_fleet.config import load
        from galaxy_fleet.control import Fleet

        self.fleet = Fleet(load(config_path))
        self.fleet.subscribe(self._record)
        self.fleet.start()
        if not self.fleet.wait_connected(60):
            raise RuntimeError(f"the control side did not connect to every node: "
                               f"{ {n: link.error for n, link in self.fleet.router.links.items()} }")

    def stop_fleet(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
            self.fleet = None

    def _record(self, ev: Any) -> None:
        kind = (ev.alert or {}).get("kind", "alert") if ev.kind == "alert" else ev.kind
        with self._lock:
            self.seen.append(Seen(kind, ev.host, time.monotonic(), dict(ev.alert or {})))

    def wait_seen(self, kind: str, host: str, after: float, timeout: float) -> Seen:
        """The first ``kind`` event about ``host`` the control side got after ``after`` (monotonic)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for s in self.seen:
                    if s.kind == kind and s.host == host and s.t >= after:
                        return s
            if time.monotonic() > deadline:
                with self._lock:
                    got = [(s.kind, s.host) for s in self.seen if s.t >= after]
                raise AssertionError(f"no {kind} from {host} within {timeout} s (got {got})")
            time.sleep(0.05)

    def order(self, host: str, payload: str, timeout: float = 90, **kw: Any) -> Any:
        """Submit an order over the real routing path and wait for its end; returns the record."""
        rec = self.fleet.submit(host, payload, user="e2e", **kw)[0]
        done = self.fleet.wait([rec.id], timeout=timeout)
        assert done and done[0].terminal, f"order {rec.id} on {host} did not finish in {timeout} s: {done}"
        return done[0]


def control_config(lab: E2ELab, root: Path) -> Path:
    """A control config for this host: the control machine's routing key, known_hosts and inventory."""
    import os

    import yaml

    def fetch(path: str) -> str:
        return lab.must("control", f"cat {path}")

    key = root / "routing_key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(fetch("/etc/galaxy/routing_ed25519"))
    (root / "known_hosts").write_text(fetch("/etc/galaxy/known_hosts"))
    (root / "inventory.yml").write_text(fetch("/etc/galaxy/inventory.yml"))
    cfg = root / "control.yml"
    cfg.write_text(yaml.safe_dump({"host": "e2e-control", "spool_dir": str(root / "spool"), "control": {
        "inventory": str(root / "inventory.yml"), "store": str(root / "galaxy.db"),
        "known_hosts": str(root / "known_hosts"), "ssh_key": str(key),
        "remote_command": "/opt/galaxy/bin/galaxy remote", **CONTROL_SETTINGS}}))
    return cfg


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


__all__ = ["REPO", "E2ELab", "LabLLM", "control_config", "poll"]
