"""The fleet at a glance: the figures behind the page and /api/status.

``Summary`` caches what it computes: the live part (nodes, counts, recent
orders and alerts) for ``ttl`` seconds, the charts of the last day for
``history_ttl``. Under load every request gets the cached, already encoded
answer; one request at a time recomputes it while the others keep serving
the previous one.
"""

from __future__ import annotations

import json
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from galaxy_fleet.dashboard.reader import StoreReader, epoch, iso, window_start
from galaxy_fleet.node_status import DEGRADED, DOWN, HEALTHY, UNKNOWN, node_status
from galaxy_fleet.order import ACTIVE, CANCELLED, DONE, FAILED, RUNNING, UNSUCCESSFUL

HISTORY_HOURS = 24
HEALTH_SLOTS = 96  # 15-minute slots over the day


def _ms(ts: float | None) -> float | None:
    """Seconds to the millisecond: all the page needs, and a smaller summary."""
    return round(ts, 3) if ts is not None else None


def _check(health: dict[str, Any] | None, name: str) -> dict[str, Any] | None:
    for check in (health or {}).get("checks") or []:
        if check.get("name") == name:
            return check
    return None


def status_report(report: dict[str, Any], healthy: bool | None, failing: list[str]) -> dict[str, Any] | None:
    """The newest health verdict in the node's report form, for ``node_status``: the full
    report, or a newer health_check event's verdict (which names the failing checks)."""
    if healthy is None:
        return report or None
    if (
        report
        and healthy == report.get("healthy")
        and failing == [c.get("name") for c in report.get("checks") or [] if not c.get("ok")]
    ):
        return report
    return {"healthy": healthy, "checks": [{"name": name, "ok": False} for name in failing]}


def order_figures(states: dict[str, int]) -> dict[str, int]:
    """The classic pending/processed/failed figures, plus the states behind them."""
    return {
        "pending": sum(states.get(s, 0) for s in ACTIVE),
        "running": states.get(RUNNING, 0),
        "processed": sum(n for s, n in states.items() if s not in ACTIVE),
        "done": states.get(DONE, 0),
        "failed": sum(states.get(s, 0) for s in UNSUCCESSFUL),
        "cancelled": states.get(CANCELLED, 0),
        "total": sum(states.values()),
    }


def node_figures(
    node: dict[str, Any],
    states: dict[str, int],
    last_check: dict[str, Any] | None,
    worker_start: str | None,
    now: float,
    worker_silent: bool = False,
) -> dict[str, Any]:
    """One node as the page shows it: the classic figures from the newest full health
    report the Fleet stored, and the newest health_check event when that is newer."""
    report = node.get("health") or {}
    report_ts = node.get("health_ts") or epoch(report.get("ts"))
    check_ts = epoch(last_check.get("ts")) if last_check else None
    last_check = last_check or {}
    healthy: bool | None = report.get("healthy") if report else None
    failing = [c.get("name") for c in report.get("checks") or [] if not c.get("ok")]
    health_ts = report_ts
    if check_ts is not None and (report_ts is None or check_ts > report_ts):
        healthy, failing, health_ts = last_check["healthy"], list(last_check.get("failing") or []), check_ts

    worker = _check(report, "worker")
    wdata = (worker or {}).get("data") or {}
    opencode = _check(report, "opencode")
    disks = [
        {"label": c["name"][5:], "used_percent": (c.get("data") or {}).get("used_percent"), "ok": c.get("ok")}
        for c in report.get("checks") or []
        if str(c.get("name", "")).startswith("disk_")
    ]
    memory = _check(report, "memory")
    disk_percent = max((d["used_percent"] for d in disks if d["used_percent"] is not None), default=None)
    opencode_ok = opencode.get("ok") if opencode else None
    uptime = report.get("uptime_s")
    if last_check and check_ts is not None and (report_ts is None or check_ts > report_ts):
        # richer health_check events (if the node writes them) win over an older report
        disk_percent = last_check.get("disk_percent", disk_percent)
        opencode_ok = last_check.get("opencode", opencode_ok)
        uptime = last_check.get("uptime_s", uptime)
        uptime_ts: float | None = check_ts
    else:
        uptime_ts = report_ts
    if uptime is not None and uptime_ts is not None:
        uptime = float(uptime) + max(0.0, now - uptime_ts)
    started = epoch(worker_start)

    connected = bool(node.get("connected"))
    verdict = node_status(
        connected=connected,
        health=status_report(report, healthy, failing),
        error=node.get("error"),
        seen=node.get("last_seen") is not None,
        worker_silent=worker_silent,
    )
    hello = node.get("hello") or {}
    return {
        "name": node["name"],
        "status": verdict.status,
        "reason": verdict.reason,
        "connected": connected,
        "healthy": healthy,
        "failing": failing,
        "error": node.get("error"),
        "last_seen": _ms(node.get("last_seen")),
        "health_ts": _ms(health_ts),
        "version": hello.get("version") or wdata.get("version"),
        "uptime_s": round(uptime, 1) if uptime is not None else None,
        "worker": {
            "ok": worker.get("ok") if worker else None,
            "message": worker.get("message") if worker else None,
            "pid": wdata.get("pid"),
            "heartbeat_age_s": wdata.get("heartbeat_age_s"),
            "running": len(wdata.get("running") or []),
            "queued": wdata.get("queued"),
            "started": started,
            "uptime_s": round(now - started, 1) if started is not None and connected else None,
        },
        "opencode": {
            "ok": opencode_ok,
            "message": opencode.get("message") if opencode else None,
            "ms": ((opencode or {}).get("data") or {}).get("ms"),
        },
        "disk": disks,
        "disk_percent": disk_percent,
        "memory_mb": ((memory or {}).get("data") or {}).get("available_mb"),
        "orders": order_figures(states),
    }


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def latency_per_hour(
    samples: list[tuple[float, float, float | None]], now: float, hours: int = HISTORY_HOURS
) -> list[dict[str, Any]]:
    start = window_start(now, hours * 3600, 3600)
    per: list[list[float]] = [[] for _ in range(hours)]
    for created, total, _run in samples:
        b = int((created - start) // 3600)
        if 0 <= b < hours:
            per[b].append(total)
    return [
        {
            "start": start + i * 3600,
            "count": len(v),
            "p50": _ms(_percentile(v, 50)),
            "p95": _ms(_percentile(v, 95)),
            "max": _ms(max(v) if v else None),
        }
        for i, v in enumerate(per)
    ]


def order_row(o: dict[str, Any]) -> dict[str, Any]:
    """An order with its duration (receipt to answer) and run time, in seconds."""
    duration = None
    if o.get("finished") is not None:
        duration = max(0.0, o["finished"] - o["created"])
    return {
        **o,
        **{k: _ms(o.get(k)) for k in ("created", "updated", "started", "finished")},
        "duration_s": _ms(duration),
        "run_s": _ms(o["finished"] - o["started"]) if o.get("finished") and o.get("started") else None,
    }


BRIEF_ORDER = (
    "id",
    "host",
    "from",
    "executor",
    "state",
    "created",
    "started",
    "finished",
    "payload",
    "progress",
    "error",
    "duration_s",
)


def brief_order(o: dict[str, Any]) -> dict[str, Any]:
    """What the page's order table shows (the summary stays small; /api/orders has it all)."""
    row = order_row(o)
    return {k: row.get(k) for k in BRIEF_ORDER}


BRIEF_ALERT = ("id", "host", "kind", "severity", "message", "ts", "received", "delivered", "order_id")

HEALTH_MARK = {-1: "-", 0: "0", 1: "1"}


class Summary:
    def __init__(
        self,
        reader: StoreReader,
        *,
        ttl: float = 1.0,
        history_ttl: float = 15.0,
        clock: Callable[[], float] = time.time,
        recent_orders: int = 25,
        recent_alerts: int = 15,
    ):
        self.reader = reader
        self.ttl = ttl
        self.history_ttl = history_ttl
        self.clock = clock
        self.recent_orders = recent_orders
        self.recent_alerts = recent_alerts
        self.started = clock()
        self._lock = threading.Lock()
        self._history: tuple[float, dict[str, Any]] | None = None
        self._encoded: tuple[float, bytes, str] | None = None
        self._gzipped: tuple[str, bytes] | None = None

    # -- the pieces ------------------------------------------------------------------
    def nodes(self, now: float | None = None, counts: dict[str, dict[str, int]] | None = None) -> list[dict[str, Any]]:
        """Every node the Fleet knows (the inventory's), with its figures."""
        now = self.clock() if now is None else now
        r = self.reader
        nodes = r.nodes()
        counts = r.order_counts() if counts is None else counts
        checks = r.latest_health_checks(n["name"] for n in nodes)
        starts = r.worker_starts()
        silent = r.silent_workers()
        # orders for hosts the store knows only from orders (removed from the inventory) are left out
        return [
            node_figures(
                n, counts.get(n["name"], {}), checks.get(n["name"]), starts.get(n["name"]), now, n["name"] in silent
            )
            for n in nodes
        ]

    def live(self, now: float) -> dict[str, Any]:
        r = self.reader
        counts = r.order_counts()
        nodes = self.nodes(now, counts)
        totals = order_figures(_sum_states(counts))
        by_status = {k: sum(1 for n in nodes if n["status"] == k) for k in (HEALTHY, DEGRADED, DOWN, UNKNOWN)}
        disks = [n["disk_percent"] for n in nodes if n["disk_percent"] is not None]
        day = now - 86400
        return {
            "generated": iso(now),
            "control": {"host": socket.gethostname(), "uptime_s": _host_uptime()},
            "fleet": {
                "nodes": len(nodes),
                "connected": sum(1 for n in nodes if n["connected"]),
                **by_status,
                "disk_percent_max": max(disks) if disks else None,
            },
            "orders": totals,
            "alerts": {"last_day": r.alerts_since(day)},
            "nodes": nodes,
            "recent_orders": [brief_order(o) for o in r.orders(limit=self.recent_orders)],
            "recent_alerts": [{k: a.get(k) for k in BRIEF_ALERT} for a in r.alerts(self.recent_alerts)],
            "health_checks": r.health_checks(20),
        }

    def history(self, now: float) -> dict[str, Any]:
        r = self.reader
        slot = HISTORY_HOURS * 3600 / HEALTH_SLOTS
        per_hour = r.orders_per_hour(now, HISTORY_HOURS)
        samples = r.latencies(now, HISTORY_HOURS)
        latency = latency_per_hour(samples, now)
        totals = [t for _c, t, _r in samples]
        return {
            "window": {
                "hours": HISTORY_HOURS,
                "end": now,
                "health_slots": HEALTH_SLOTS,
                "health_slot_s": slot,
                "health_start": window_start(now, HISTORY_HOURS * 3600, slot),
            },
            "orders_per_hour": per_hour,
            "latency": latency,
            "latency_day": {
                "count": len(totals),
                "p50": _ms(_percentile(totals, 50)),
                "p95": _ms(_percentile(totals, 95)),
            },
            # one character per 15-minute slot: "-" no check ran, "0" all passed, "1" one failed
            "health": {
                host: "".join(HEALTH_MARK[v] for v in slots)
                for host, slots in r.health_history(now, HISTORY_HOURS, HEALTH_SLOTS).items()
            },
            "last_day": {k: sum(b[k] for b in per_hour) for k in (DONE, FAILED, CANCELLED, "pending")},
        }

    # -- cached ----------------------------------------------------------------------
    def gzipped(self) -> tuple[bytes, str]:
        """The cached summary gzip-compressed (once per refresh), for clients that accept it."""
        data, etag = self.encoded()
        cached = self._gzipped
        if cached is None or cached[0] != etag:
            import gzip

            cached = (etag, gzip.compress(data, compresslevel=5, mtime=0))
            self._gzipped = cached
        return cached[1], etag[:-1] + '-gz"'  # another representation, another ETag

    def encoded(self) -> tuple[bytes, str]:
        """The summary as JSON bytes and an ETag, recomputed at most every ``ttl`` seconds."""
        now = self.clock()
        cached = self._encoded
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1], cached[2]
        # One request refreshes; the others keep serving what is there (if anything).
        if not self._lock.acquire(blocking=cached is None):
            return cached[1], cached[2]  # type: ignore[index]
        try:
            cached = self._encoded
            now = self.clock()
            if cached is not None and now - cached[0] < self.ttl:
                return cached[1], cached[2]
            if self._history is None or now - self._history[0] >= self.history_ttl:
                self._history = (now, self.history(now))
            body = {
                **self.live(now),
                "history": self._history[1],
                "dashboard": {"uptime_s": round(now - self.started, 1), "ttl": self.ttl},
            }
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str).encode()
            import hashlib

            etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
            self._encoded = (now, data, etag)
            return data, etag
        finally:
            self._lock.release()


def _sum_states(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for per in counts.values():
        for state, n in per.items():
            total[state] = total.get(state, 0) + n
    return total


def _host_uptime() -> float | None:
    try:
        with open("/proc/uptime") as fh:
            return float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
