"""Helpers of the end-to-end lab tests and bench/bench_detect.py: the lab and the
control side (a Fleet) on this host; the scripted LLM listens on the lab network
(``ScriptedLLM(host=lab.root_addr)``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

if str(TESTS / "collection") not in sys.path:
    sys.path.insert(0, str(TESTS / "collection"))

from labfixture import REPO, control_files_config, lab_tool  # noqa: E402
from nodeenv import wait_for  # noqa: E402
from support.llm_server import ScriptedLLM  # noqa: E402

OPENCODE_START_GRACE = 10  # seconds the health check leaves a starting opencode serve alone (lab setting)
# The control side notices a dead link within a few seconds (quicker than the
# router's defaults, 2 s pings and 6 s, which bench_detect.py measures).
CONTROL_SETTINGS = {"ping_interval": 1.0, "dead_after": 4.0, "connect_timeout": 5.0, "backoff_max": 2.0,
                    "health_every": 0}


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
    telegram: Any = None  # the Telegram emulator the deployed bot talks to (its proxy on root_addr)
    webhook_secret: str = ""  # handed to the deployed bot like its token
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
        from galaxy_fleet.control.fleet import Fleet

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
        rec = self.fleet.submit(host, payload, sender="e2e", **kw)[0]
        done = self.fleet.wait([rec.id], timeout=timeout)
        assert done and done[0].terminal, f"order {rec.id} on {host} did not finish in {timeout} s: {done}"
        return done[0]


def control_config(lab: E2ELab, root: Path, settings: dict[str, Any] | None = None) -> Path:
    """A control config for this host: the control machine's routing key, known_hosts and inventory
    (``settings``: the control section's timings, CONTROL_SETTINGS by default)."""
    return control_files_config(lambda path: lab.must("control", f"cat {path}").encode(), root, "e2e-control",
                                CONTROL_SETTINGS if settings is None else settings)


def boot_lab(state: Path, ids: list[str], keep: bool = False) -> E2ELab:
    """A fresh lab on the first free id (an id held by another checkout's run is skipped)."""
    state.mkdir(parents=True, exist_ok=True)
    lab = E2ELab(ids[0], state)
    for lab_id in ids:
        lab.lab_id = lab_id
        if not keep:
            lab.lab("down", check=False)  # machines left by an interrupted run of this checkout: start fresh
        booted = lab.lab("up", "--nodes", "2", check=False)
        if booted.returncode == 0:
            lab.up = True
            break
        if "already running from another state directory" not in booted.stderr:
            raise RuntimeError(f"lab up failed:\n{booted.stderr}{booted.stdout}")
    else:
        raise RuntimeError(f"no free lab id among {ids}")
    lab.hosts = dict(json.loads(lab.lab("status", "--json", check=False).stdout)["hosts"])
    return lab


def deploy(lab: E2ELab, llm: ScriptedLLM, start_grace: float = OPENCODE_START_GRACE,
           control_vars: dict[str, Any] | None = None) -> None:
    """site.yml with opencode on the nodes, its only provider the scripted LLM.

    ``control_vars``: more variables (the bot's, with its token): they reach
    ansible-playbook in a file of mode 0600 that is removed after the run.
    The nodes are also in a group ``web``, so orders can target a group."""
    source = lab.state / "galaxy-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO / "files" / "galaxy", source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    extra = lab.state / "opencode-vars.json"
    extra.write_text(json.dumps({
        "galaxy_node_source_dir": str(source),
        "galaxy_control_source_dir": str(source),
        "galaxy_node_opencode_enabled": True,
        "galaxy_node_opencode_providers": {"scripted": {
            "npm": "@ai-sdk/openai-compatible", "name": "Scripted LLM",
            "options": {"baseURL": llm.url, "apiKey": "scripted-lab-key"},
            "models": {"echo": {"name": "Echo", "cost": {"input": 1.0, "output": 2.0},
                                "limit": {"context": 100000, "output": 4096}}}}},
        "galaxy_node_opencode_model": "scripted/echo",
        "galaxy_node_worker_heartbeat_interval": 2,
        "galaxy_node_health": {"opencode_start_grace": start_grace},
    }))
    groups = lab.state / "groups.yml"
    groups.write_text("all:\n  children:\n    web:\n      hosts:\n        web1:\n        web2:\n")
    from collection import failures, playbook  # tests/collection: the playbook runner of the deploy tests

    args = ["-e", f"@{extra}"]
    secret = lab.state / "control-vars.json"
    if control_vars:
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(control_vars, fh)
        args += ["-e", f"@{secret}"]
    try:
        cp = playbook([lab.inventory, groups], "site.yml", *args)
    finally:
        secret.unlink(missing_ok=True)
    if cp.returncode != 0:
        raise RuntimeError(f"site.yml failed:\n{failures(cp.stdout + cp.stderr)}")
    # A changed config restarts opencode serve at the end of the play: wait until it listens.
    for node in ("web1", "web2"):
        lab.must(node, "for i in $(seq 120); do ss -Hltn 'sport = :4096' | grep -q . && exit 0; sleep 0.5; done; "
                       "systemctl status opencode-serve --no-pager; exit 1")


def poll(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    return wait_for(predicate, timeout, interval, what)


__all__ = ["OPENCODE_START_GRACE", "REPO", "E2ELab", "boot_lab", "control_config", "deploy", "poll"]
