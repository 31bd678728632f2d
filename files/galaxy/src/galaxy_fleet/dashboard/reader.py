"""Read-only queries over the control node's store for the dashboard.

The bot's Fleet owns the store and writes it; the dashboard only reads, through
its own SQLite connections opened ``mode=ro`` (one per server thread), so a
bug here can never change an order or an audit event.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from datetime import UTC
from pathlib import Path
from typing import Any
from urllib.parse import quote

from galaxy_fleet.order import CANCELLED, DONE, FAILED, TIMED_OUT, UNSUCCESSFUL

# Finished orders whose time to the answer counts in the latency figures: those that ran
# to their end (not cancelled, nor interrupted by a dying worker).
RAN_TO_END = (DONE, FAILED, TIMED_OUT)
# Upper bounds (seconds) of the order duration histogram in /metrics.
DURATION_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# An order as the dashboard lists it: the order's own field names ("from"), long texts shortened.
ORDER_COLUMNS = (
    'id, batch, host, target_spec, sender AS "from", executor, state, created, updated, started,'
    " finished, substr(payload, 1, 200) AS payload, length(payload) AS payload_len,"
    " substr(progress, 1, 200) AS progress, substr(error, 1, 300) AS error,"
    " substr(answer, 1, 500) AS answer, length(answer) AS answer_len, delivered"
)


class StoreUnavailable(RuntimeError):
    """The store file is missing or unreadable (the bot has not created it yet?)."""


def iso(ts: float) -> str:
    """Epoch seconds as the audit trail's UTC form (``2026-01-02T03:04:05.678Z``)."""
    ms = round(ts * 1000)
    secs, rest = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest:03d}Z"


def epoch(ts: str | None) -> float | None:
    """The audit trail's UTC form as epoch seconds (None when unreadable)."""
    if not ts:
        return None
    from datetime import datetime

    try:
        moment = datetime.fromisoformat(ts.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def window_start(now: float, span: float, step: float) -> float:
    """The start of a window of ``span`` seconds cut into ``step``-second buckets aligned to
    the clock, the newest bucket being the current one."""
    return (now // step + 1) * step - span


def _in(column: str, value: Any, args: list[Any]) -> str:
    """``column IN (...)`` for a comma-separated filter value, like `galaxy audit`."""
    values = [v for v in str(value).split(",") if v]
    args += values
    return f" AND {column} IN ({','.join('?' * len(values))})"


class StoreReader:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._local = threading.local()

    # -- connections ---------------------------------------------------------
    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            if not self.path.exists():
                raise StoreUnavailable(f"{self.path}: no store yet (is galaxy-bot running?)")
            try:
                db = sqlite3.connect(
                    f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True, timeout=5, check_same_thread=False
                )
                db.execute("PRAGMA query_only = 1")
                db.execute("SELECT 1 FROM orders LIMIT 1")
                if "sender" not in {r[1] for r in db.execute("PRAGMA table_info(orders)")}:
                    db.close()
                    raise StoreUnavailable(
                        f"{self.path}: the store has an older layout; galaxy-bot brings it up to date when it starts"
                    )
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"{self.path}: cannot read the store: {exc}") from None
            db.row_factory = sqlite3.Row
            self._local.db = db
        return db

    def _rows(self, sql: str, args: Iterable[Any] = ()) -> list[sqlite3.Row]:
        try:
            return self._db().execute(sql, tuple(args)).fetchall()
        except sqlite3.OperationalError as exc:
            # A locked or replaced file: drop this thread's connection, try once more.
            self.close_thread()
            try:
                return self._db().execute(sql, tuple(args)).fetchall()
            except sqlite3.OperationalError:
                raise StoreUnavailable(f"{self.path}: {exc}") from None

    def close_thread(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            self._local.db = None
            db.close()

    # -- nodes -----------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for row in self._rows("SELECT * FROM nodes ORDER BY name"):
            d = dict(row)
            for key in ("hello", "health"):
                try:
                    d[key] = json.loads(d[key]) if d[key] else None
                except ValueError:
                    d[key] = None
            d["connected"] = bool(d["connected"])
            out.append(d)
        return out

    def cursors(self) -> dict[str, int]:
        return {r["host"]: r["seq"] for r in self._rows("SELECT host, seq FROM cursors")}

    def worker_starts(self) -> dict[str, str]:
        """When each node's running worker started: its newest ``worker_started`` event,
        unless a ``worker_stopped`` came after it."""
        newest: dict[str, dict[str, str]] = {}
        for r in self._rows(
            "SELECT host, type, MAX(ts) AS ts FROM events"
            " WHERE type IN ('worker_started', 'worker_stopped') GROUP BY host, type"
        ):
            newest.setdefault(r["host"], {})[r["type"]] = r["ts"]
        return {
            host: t["worker_started"]
            for host, t in newest.items()
            if "worker_started" in t and t["worker_started"] > t.get("worker_stopped", "")
        }

    # -- orders ------------------------------------------------------------------
    def order_counts(self) -> dict[str, dict[str, int]]:
        """{host: {state: number of orders}} over every order in the store."""
        out: dict[str, dict[str, int]] = {}
        for r in self._rows("SELECT host, state, COUNT(*) AS n FROM orders GROUP BY host, state"):
            out.setdefault(r["host"], {})[r["state"]] = r["n"]
        return out

    def orders(
        self,
        *,
        limit: int = 25,
        host: str | None = None,
        state: str | None = None,
        since: float | None = None,
        until: float | None = None,
        sender: str | None = None,
        batch: str | None = None,
        order_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest orders first, with their payload, progress, error and answer shortened."""
        sql, args = f"SELECT {ORDER_COLUMNS} FROM orders WHERE 1=1", list[Any]()
        for col, val in (("host", host), ("state", state), ("sender", sender), ("batch", batch), ("id", order_id)):
            if val:
                sql += _in(col, val, args)
        if since is not None:
            sql += " AND created >= ?"
            args.append(since)
        if until is not None:
            sql += " AND created < ?"
            args.append(until)
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self._rows(sql, args):
            d = dict(r)
            d["delivered"] = bool(d["delivered"])
            out.append(d)
        return out

    def orders_per_hour(self, now: float, hours: int = 24) -> list[dict[str, Any]]:
        """Orders received in each of the last ``hours`` clock hours (the newest is the current,
        partial one), by outcome, oldest hour first."""
        start = window_start(now, hours * 3600, 3600)
        buckets = [{"start": start + i * 3600, DONE: 0, FAILED: 0, CANCELLED: 0, "pending": 0} for i in range(hours)]
        rows = self._rows(
            "SELECT CAST((created - ?) / 3600 AS INTEGER) AS b, state, COUNT(*) AS n FROM orders"
            " WHERE created >= ? GROUP BY b, state",
            (start, start),
        )
        for r in rows:
            if 0 <= r["b"] < hours:
                bucket = buckets[r["b"]]
                key = (
                    r["state"]
                    if r["state"] in (DONE, CANCELLED)
                    else FAILED
                    if r["state"] in UNSUCCESSFUL
                    else "pending"
                )
                bucket[key] += r["n"]
        return buckets

    def latencies(self, now: float, hours: int = 24) -> list[tuple[float, float, float | None]]:
        """(received, seconds to the answer, seconds running) of orders finished in the window."""
        rows = self._rows(
            "SELECT created, finished - created AS total, finished - started AS run FROM orders"
            f" WHERE created >= ? AND finished IS NOT NULL AND state IN ({','.join('?' * len(RAN_TO_END))})",
            (window_start(now, hours * 3600, 3600), *RAN_TO_END),
        )
        return [(r["created"], max(0.0, r["total"]), r["run"]) for r in rows]

    def duration_histogram(self) -> dict[str, dict[str, Any]]:
        """{host: {"buckets": [cumulative counts per DURATION_BUCKETS], "count": n, "sum": s}}
        over finished orders (time from receipt to the answer)."""
        cols = ", ".join(f"SUM(d <= {b})" for b in DURATION_BUCKETS)
        rows = self._rows(
            f"SELECT host, COUNT(*), TOTAL(d), {cols} FROM (SELECT host, MAX(finished - created, 0) AS d"
            " FROM orders WHERE finished IS NOT NULL) GROUP BY host"
        )
        return {
            r[0]: {"count": r[1], "sum": r[2], "buckets": [r[3 + i] or 0 for i in range(len(DURATION_BUCKETS))]}
            for r in rows
        }

    # -- alerts --------------------------------------------------------------------
    def alerts(self, limit: int = 20, host: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT data, delivered, received FROM alerts WHERE 1=1", list[Any]()
        if host:
            sql += _in("host", host, args)
        sql += " ORDER BY received DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self._rows(sql, args):
            try:
                alert = json.loads(r["data"])
            except ValueError:
                alert = {}
            out.append({**alert, "delivered": bool(r["delivered"]), "received": r["received"]})
        return out

    def alert_counts(self) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT host, kind, COALESCE(severity, 'error') AS severity, COUNT(*) AS n,"
            " SUM(delivered = 0) AS undelivered FROM alerts GROUP BY host, kind, severity"
        )
        return [dict(r) for r in rows]

    def silent_workers(self) -> set[str]:
        """Nodes whose worker the bot reported silent and not heard from since (its newest
        worker_silent / worker_heard alert), as the Fleet keeps them."""
        last: dict[str, str] = {}
        for r in self._rows(
            "SELECT host, kind FROM alerts WHERE kind IN ('worker_silent', 'worker_heard') ORDER BY received"
        ):
            last[r["host"]] = r["kind"]
        return {host for host, kind in last.items() if kind == "worker_silent"}

    def alerts_since(self, since: float) -> int:
        return self._rows("SELECT COUNT(*) FROM alerts WHERE received >= ?", (since,))[0][0]

    # -- health (from the nodes' health_check audit events) -------------------------
    def health_history(self, now: float, hours: int = 24, slots: int = 96) -> dict[str, list[int]]:
        """Per node, one value per time slot of the window: -1 no check ran, 0 every check
        passed, 1 at least one failed (oldest slot first).

        SQLite does the grouping (it runs without Python's GIL, so the server's other
        threads keep answering): the checks per node and quarter hour come from the
        events_type_ts index alone, the failed ones through events_severity_ts
        (``+type`` keeps SQLite on that index). Slots are quarter hours of the clock."""
        width = hours * 3600 / slots
        start = window_start(now, hours * 3600, width)
        quarter = "substr(ts, 1, 14) || (CAST(substr(ts, 15, 2) AS INTEGER) / 15)"
        slot_of = {}
        for i in range(slots):
            t = iso(start + i * width)
            slot_of[t[:14] + str(int(t[14:16]) // 15)] = i
        out: dict[str, list[int]] = {}
        ran = self._rows(
            f"SELECT DISTINCT host, {quarter} FROM events WHERE type = 'health_check' AND ts >= ?", (iso(start),)
        )
        failed = self._rows(
            f"SELECT DISTINCT host, {quarter} FROM events WHERE severity IN ('warning', 'error',"
            " 'critical') AND +type = 'health_check' AND ts >= ?",
            (iso(start),),
        )
        for rows, value in ((ran, 0), (failed, 1)):
            for host, key in rows:
                slot = slot_of.get(key)
                if slot is not None:
                    per = out.get(host)
                    if per is None:
                        per = out[host] = [-1] * slots
                    per[slot] = max(per[slot], value)
        return out

    def health_checks(self, limit: int = 20, host: str | None = None) -> list[dict[str, Any]]:
        """The newest health_check events (the page's "recent health check logs")."""
        sql, args = "SELECT host, ts, severity, message, data FROM events WHERE type = 'health_check'", list[Any]()
        if host:
            sql += _in("host", host, args)
        sql += " ORDER BY ts DESC LIMIT ?"
        args.append(limit)
        out = []
        for r in self._rows(sql, args):
            try:
                data = json.loads(r["data"])
            except ValueError:
                data = {}
            healthy = data.get("healthy")
            out.append(
                {
                    "host": r["host"],
                    "ts": r["ts"],
                    "severity": r["severity"],
                    "message": r["message"],
                    "healthy": bool(healthy) if healthy is not None else r["severity"] in ("debug", "info"),
                    "failing": data.get("failing") or [],
                    **{k: data[k] for k in ("disk_percent", "opencode", "uptime_s") if k in data},
                }
            )
        return out

    def latest_health_checks(self, hosts: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Each node's newest health_check event."""
        out = {}
        for host in hosts:
            found = self.health_checks(1, host=host)
            if found:
                out[host] = found[0]
        return out

    # -- central audit -------------------------------------------------------------
    def events(
        self,
        *,
        host: str | None = None,
        severity: str | None = None,
        type: str | None = None,
        order_id: str | None = None,
        user: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """The newest matching events across the fleet, oldest first: the same filters
        and order as ``Store.events`` and `galaxy audit` on the control node.

        (store.events_query builds the SQL for both.)"""
        from galaxy_fleet.control.store import events_query

        sql, args = events_query(
            host=host, severity=severity, type=type, order_id=order_id, user=user, since=since, until=until, limit=limit
        )
        rows = self._rows(sql, args)
        return [json.loads(r["data"]) for r in reversed(rows)]
