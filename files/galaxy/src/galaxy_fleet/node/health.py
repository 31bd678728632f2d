"""`galaxy health`: is this node able to take orders?

Checks: the worker (process alive, heartbeat fresh), `opencode serve` (when the
node uses it), disk space and inodes of the spool and audit file systems,
orders stuck in processing/, queue backlog, the audit trail writable, memory.
Each run is an audit event; a change between healthy and failing puts one
alert into the outbox (not one per run).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from galaxy_fleet.config import Config, HealthConfig, OpenCodeSpec
from galaxy_fleet.node.spool import Spool, read_json
from galaxy_fleet.node_status import node_status
from galaxy_fleet.order import utcnow


@dataclass
class Check:
    name: str
    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    host: str
    ts: str
    checks: list[Check]

    @property
    def healthy(self) -> bool:
        return all(c.ok for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        report = {
            "host": self.host,
            "ts": self.ts,
            "healthy": self.healthy,
            "uptime_s": _uptime(),
            "checks": [asdict(c) for c in self.checks],
        }
        # asked on the node itself, so it is reachable: the shared rule gives status and reason
        verdict = node_status(connected=None, health=report)
        return {**report, "status": verdict.status, "reason": verdict.reason}

    def text(self) -> str:
        stamp = f"[{self.ts}]"
        lines = [f"{stamp} === Galaxy Health Check ({self.host}) ==="]
        lines += [f"{stamp} {'✓' if c.ok else '✗'} {c.message}" for c in self.checks]
        lines.append(f"{stamp} === Health Check {'PASSED' if self.healthy else 'FAILED'} ===")
        return "\n".join(lines)


def _uptime() -> float | None:
    try:
        return round(float(Path("/proc/uptime").read_text().split()[0]), 1)
    except (OSError, ValueError, IndexError):
        return None


def check_worker(config: Config, spool: Spool, s: HealthConfig) -> Check:
    max_age = s.heartbeat_max_age or max(15.0, 3 * config.worker.heartbeat_interval)
    try:
        hb = read_json(spool.state / "heartbeat.json")
    except (OSError, ValueError):
        return Check("worker", False, "worker has never reported (no heartbeat)")
    age = time.time() - float(hb.get("time", 0))
    pid = int(hb.get("pid", 0))
    alive = pid > 0 and Path(f"/proc/{pid}").exists()
    data = {
        "pid": pid,
        "heartbeat_age_s": round(age, 1),
        "running": hb.get("running", []),
        "queued": hb.get("queued", 0),
    }
    if not alive:
        return Check("worker", False, f"worker is not running (pid {pid} gone)", data)
    if age > max_age:
        return Check("worker", False, f"worker heartbeat is stale ({age:.0f}s old, limit {max_age:.0f}s)", data)
    return Check("worker", True, f"worker is running (pid {pid}, heartbeat {age:.0f}s ago)", data)


def check_opencode(config: Config, s: HealthConfig) -> Check | None:
    enabled = s.opencode
    if enabled is None:
        enabled = config.worker.default_executor == "opencode"
    if not enabled:
        return None
    import base64
    import urllib.error
    import urllib.request

    from galaxy_fleet.config import secret

    spec = config.executors.get("opencode")
    if not isinstance(spec, OpenCodeSpec):
        spec = OpenCodeSpec()
    url = spec.url.rstrip("/")
    req = urllib.request.Request(url + "/global/health")  # noqa: S310 - http(s) only (config)
    # The same credential as the executor's (executors/opencode.py).
    password = secret(spec.password_credential, "OPENCODE_SERVER_PASSWORD")
    if password:
        token = base64.b64encode(f"opencode:{password}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    t0 = time.monotonic()
    try:
        with urllib.request.urlopen(req, timeout=s.opencode_timeout) as resp:  # noqa: S310 - http(s) only (config)
            body = resp.read(4096)
    except urllib.error.HTTPError as exc:
        ms = (time.monotonic() - t0) * 1000
        if exc.code == 401 and not password:
            # Run without the credential (by hand, or `galaxy remote` for the control node): the
            # server answered, so it is alive and not wedged; only its own report is out of reach.
            return Check(
                "opencode",
                True,
                f"opencode serve is answering ({ms:.0f} ms; no credential here to read its health report)",
                {"url": url, "ms": round(ms, 1), "authenticated": False},
            )
        return Check("opencode", False, f"opencode serve is not healthy: HTTP {exc.code} {exc.reason}", {"url": url})
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check("opencode", False, f"opencode serve is not healthy: {reason}", {"url": url})
    ms = (time.monotonic() - t0) * 1000
    try:
        healthy = bool(json.loads(body).get("healthy", True))
    except ValueError:
        healthy = False
    if not healthy:
        return Check("opencode", False, "opencode serve reports unhealthy", {"url": url})
    return Check("opencode", True, f"opencode serve is healthy ({ms:.0f} ms)", {"url": url, "ms": round(ms, 1)})


def check_disk(paths: dict[str, Path], s: HealthConfig) -> list[Check]:
    checks = []
    seen: set[int] = set()
    for label, path in paths.items():
        while not path.exists() and path != path.parent:
            path = path.parent
        st = os.statvfs(path)
        dev = os.stat(path).st_dev
        if dev in seen:
            continue
        seen.add(dev)
        used = 100.0 * (1 - st.f_bavail / st.f_blocks) if st.f_blocks else 0.0
        ok = used < s.disk_max_percent
        checks.append(
            Check(
                f"disk_{label}",
                ok,
                f"Disk space {'OK' if ok else 'LOW'} for {label} ({used:.0f}% used)",
                {"path": str(path), "used_percent": round(used, 1)},
            )
        )
        if st.f_files:
            iused = 100.0 * (1 - st.f_favail / st.f_files)
            iok = iused < s.inodes_max_percent
            checks.append(
                Check(
                    f"inodes_{label}",
                    iok,
                    f"Inodes {'OK' if iok else 'LOW'} for {label} ({iused:.0f}% used)",
                    {"path": str(path), "used_percent": round(iused, 1)},
                )
            )
    return checks


def check_stuck(config: Config, spool: Spool) -> Check:
    now = time.time()
    stuck = []
    for path in spool.processing.glob("*.json"):
        try:
            order = read_json(path)
            limit = float(order.get("timeout") or config.worker.default_timeout)
            age = now - path.stat().st_mtime
        except (OSError, ValueError, TypeError):
            continue
        # The claim keeps the file's mtime, so its age is at least the run time.
        if age > limit + 60:
            stuck.append(path.stem)
    if stuck:
        return Check(
            "stuck", False, f"{len(stuck)} order(s) stuck past their timeout: {', '.join(stuck[:5])}", {"orders": stuck}
        )
    return Check("stuck", True, "No orders stuck in processing")


def check_backlog(spool: Spool, s: HealthConfig) -> Check:
    n = sum(1 for _ in spool.pending())
    ok = n <= s.backlog_max
    return Check("backlog", ok, f"Queue backlog {'OK' if ok else 'HIGH'} ({n} waiting)", {"queued": n})


def check_memory(s: HealthConfig) -> Check:
    avail = None
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) // 1024
                break
    if avail is None:
        return Check("memory", True, "Memory: MemAvailable unknown")
    ok = avail >= s.memory_min_mb
    return Check("memory", ok, f"Memory {'OK' if ok else 'LOW'} ({avail} MB available)", {"available_mb": avail})


def check_audit_chain(config: Config, spool: Spool, s: HealthConfig) -> Check:
    """The audit chain is intact since the last check (only new events are read), and
    as a whole every ``audit_full_verify_every`` seconds."""
    from galaxy_fleet.audit import verify, verify_since

    every = s.audit_full_verify_every
    try:
        last = read_json(spool.state / "health.json")
    except (OSError, ValueError):
        last = {}
    seq, digest = int(last.get("audit_seq") or 0), last.get("audit_hash")
    full_ts = float(last.get("audit_full_ts") or 0)
    if not config.audit.path.exists():
        return Check("audit_chain", True, "Audit trail is empty", {"audit_seq": 0, "audit_hash": None})
    try:
        ok, seq2, digest2, reason = verify_since(config.audit.path, seq, digest)
        data = {"audit_seq": seq2, "audit_hash": digest2, "audit_full_ts": full_ts}
        if not ok:
            return Check("audit_chain", False, f"Audit chain BROKEN: {reason}", data)
        if time.time() - full_ts >= every:
            report = verify(config.audit.path)
            if not report.ok:
                b = report.broken or {}
                return Check(
                    "audit_chain",
                    False,
                    f"Audit chain BROKEN: event {b.get('seq')} "
                    f"({b.get('segment')}, line {b.get('line')}) {b.get('reason')}: {b.get('detail')}",
                    data,
                )
            data["audit_full_ts"] = time.time()
            return Check("audit_chain", True, f"Audit chain intact (all {report.count} events checked)", data)
    except (OSError, ValueError) as exc:
        return Check(
            "audit_chain",
            False,
            f"Audit trail unreadable: {exc}",
            {"audit_seq": seq, "audit_hash": digest, "audit_full_ts": full_ts},
        )
    return Check("audit_chain", True, f"Audit chain intact ({seq2 - seq} new events checked)", data)


def run_checks(config: Config) -> Report:
    s = config.health
    spool = Spool(config.spool_dir)
    checks = [check_worker(config, spool, s)]
    oc = check_opencode(config, s)
    if oc is not None:
        checks.append(oc)
    checks += check_disk({"spool": config.spool_dir, "audit": config.audit.path.parent}, s)
    checks += [
        check_stuck(config, spool),
        check_backlog(spool, s),
        check_audit_chain(config, spool, s),
        check_memory(s),
    ]
    return Report(config.host, utcnow(), checks)


def record(config: Config, report: Report) -> Check:
    """Audit the run, and alert when the node's state changed since the last run."""
    from galaxy_fleet.audit import open_audit
    from galaxy_fleet.node import outbox

    spool = Spool(config.spool_dir)
    failing = [c.name for c in report.checks if not c.ok]
    try:
        audit = open_audit(config)
        figures = {c.name: c.ok for c in report.checks}
        disks = [c.data["used_percent"] for c in report.checks if c.name.startswith("disk_")]
        opencode = next((c.ok for c in report.checks if c.name == "opencode"), None)
        audit.append(
            "health_check",
            severity="info" if report.healthy else "error",
            message="healthy" if report.healthy else f"failing: {', '.join(failing)}",
            healthy=report.healthy,
            failing=failing,
            checks=figures,
            disk_percent=max(disks) if disks else None,
            opencode=opencode,
            uptime_s=_uptime(),
        )
        audit.close()
    except OSError as exc:
        return Check("audit", False, f"Audit trail is not writable: {exc.strerror or exc}")
    state_file = spool.state / "health.json"
    try:
        before = read_json(state_file)
    except (OSError, ValueError):
        before = {"healthy": True, "failing": []}
    if bool(before.get("healthy")) != report.healthy:
        if report.healthy:
            outbox.post(
                spool,
                config.host,
                "health_recovered",
                f"{config.host} is healthy again",
                severity="info",
                recovered=before.get("failing", []),
            )
        else:
            msgs = "; ".join(c.message for c in report.checks if not c.ok)
            outbox.post(
                spool,
                config.host,
                "health_failing",
                f"{config.host} health check failed: {msgs}",
                severity="error",
                failing=failing,
            )
    chain = next((c.data for c in report.checks if c.name == "audit_chain"), {})
    spool.write_json(
        state_file,
        {
            "healthy": report.healthy,
            "failing": failing,
            "ts": report.ts,
            "audit_seq": chain.get("audit_seq"),
            "audit_hash": chain.get("audit_hash"),
            "audit_full_ts": chain.get("audit_full_ts"),
        },
    )
    return Check("audit", True, "Audit trail is writable")


def _unit_pid(unit: str) -> int | None:
    import subprocess

    try:
        out = subprocess.run(
            ["systemctl", "show", "--property=MainPID", "--value", unit],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return int(out) if out.isdigit() and int(out) > 0 else None


def _age_s(pid: int) -> float | None:
    """Seconds since process ``pid`` started (its start time and the uptime share the boot clock)."""
    try:
        start_ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None
    uptime = _uptime()
    return None if uptime is None else uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def recover(config: Config, report: Report) -> list[Check]:
    """Recovery actions: restart a wedged, dead or bloated opencode server.

    The server runs under systemd with Restart=always; killing its main process
    (same user as us) is the restart. Each action is an audit event and an alert.
    """
    import signal

    s = config.health
    oc = next((c for c in report.checks if c.name == "opencode"), None)
    if oc is None or not s.opencode_restart:
        return []
    pid = _unit_pid(s.opencode_unit)
    reason = None
    if not oc.ok:
        reason = oc.message
    elif pid is not None:
        rss = _rss_mb(pid)
        worker = next((c for c in report.checks if c.name == "worker"), None)
        idle = worker is not None and not worker.data.get("running")
        if rss is not None and rss > s.opencode_max_rss_mb and idle:
            reason = f"opencode serve uses {rss:.0f} MB (limit {s.opencode_max_rss_mb:g} MB), restarted between orders"
    if reason is None:
        return []
    age = _age_s(pid) if pid is not None else None
    if not oc.ok and age is not None and age < s.opencode_start_grace:
        # Just (re)started, still loading: killing it now would only start it over.
        return [
            Check(
                "opencode_restart",
                True,
                f"opencode serve (pid {pid}) started {age:.0f}s ago; not restarted while it starts",
            )
        ]
    if pid is None:
        return [Check("opencode_restart", False, f"cannot restart opencode serve: no running {s.opencode_unit}")]
    try:
        if config.worker.agent_socket:  # opencode serve runs as the agent's account: it signals its own
            from galaxy_fleet.node.executors.sandbox import signal_as_agent

            signal_as_agent(config.worker.agent_socket, pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
    except OSError as exc:
        return [Check("opencode_restart", False, f"cannot restart opencode serve (pid {pid}): {exc.strerror or exc}")]
    from galaxy_fleet.audit import open_audit
    from galaxy_fleet.node import outbox

    audit = open_audit(config)
    audit.append("opencode_restarted", severity="warning", message=reason, pid=pid)
    audit.close()
    outbox.post(
        Spool(config.spool_dir),
        config.host,
        "opencode_restarted",
        f"{config.host}: restarted opencode serve: {reason}",
        severity="warning",
        pid=pid,
    )
    return [Check("opencode_restart", True, f"Restarted opencode serve (pid {pid}): {reason}")]


def main_health(config: Config, *, as_json: bool, record_run: bool = True) -> int:
    report = run_checks(config)
    if record_run:
        report.checks.append(record(config, report))
        report.checks += recover(config, report)
    print(json.dumps(report.to_dict(), ensure_ascii=False) if as_json else report.text())
    return 0 if report.healthy else 1
