"""The control node's store: one SQLite file in WAL mode.

Holds orders (who, where, state, chat and message ids, timings, answers),
every node's audit events (the central audit trail), alerts, event-stream
cursors, chat sessions and node status, so that a restarted bot still
delivers every answer and alert that was pending.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galaxy_fleet.order import TERMINAL, is_terminal, rank

SCHEMA = """
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY, batch TEXT, host TEXT NOT NULL, target_spec TEXT, sender TEXT,
    chat_id INTEGER, message_id INTEGER, payload TEXT NOT NULL, executor TEXT, session TEXT,
    options TEXT, state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    started REAL, finished REAL, progress TEXT, error TEXT, response TEXT, details TEXT,
    delivered INTEGER NOT NULL DEFAULT 0, timeout REAL, answer TEXT
);
CREATE INDEX IF NOT EXISTS orders_created ON orders(created);
CREATE INDEX IF NOT EXISTS orders_undelivered ON orders(delivered, state);
-- per-node counts by state (dashboard, /metrics) and a node's open orders without a table scan
CREATE INDEX IF NOT EXISTS orders_host_state ON orders(host, state);
CREATE TABLE IF NOT EXISTS events (
    host TEXT NOT NULL, seq INTEGER NOT NULL, ts TEXT NOT NULL, type TEXT NOT NULL,
    severity TEXT NOT NULL, order_id TEXT, user TEXT, message TEXT, hash TEXT, prev TEXT,
    data TEXT NOT NULL, PRIMARY KEY (host, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE INDEX IF NOT EXISTS events_order ON events(order_id);
-- `galaxy audit --host/--type/--severity` and the dashboard: newest first without scanning the trail
CREATE INDEX IF NOT EXISTS events_host_ts ON events(host, ts);
CREATE INDEX IF NOT EXISTS events_type_ts ON events(type, ts);
CREATE INDEX IF NOT EXISTS events_severity_ts ON events(severity, ts);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY, host TEXT NOT NULL, kind TEXT NOT NULL, severity TEXT, message TEXT,
    ts TEXT, data TEXT, received REAL NOT NULL, delivered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS cursors (host TEXT PRIMARY KEY, seq INTEGER NOT NULL, hash TEXT);
CREATE TABLE IF NOT EXISTS sessions (
    chat_id INTEGER NOT NULL, host TEXT NOT NULL, session_key TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (chat_id, host)
);
CREATE TABLE IF NOT EXISTS nodes (
    name TEXT PRIMARY KEY, connected INTEGER NOT NULL DEFAULT 0, last_seen REAL, error TEXT,
    hello TEXT, health TEXT, health_ts REAL
);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT);
"""

# The layout of the store (PRAGMA user_version). 1: orders kept the order's sender as
# ``user``, its session as ``session_key``, its timeout in ``options._timeout`` and
# its answer only inside the Markdown ``response``. 2: each has its own column.
SCHEMA_VERSION = 2


def _answer_of_document(payload: str, document: str | None) -> str | None:
    """The answer inside a response document of layout 1, found by the exact text the
    node wrote before it (the payload it echoes), so a ``## Response`` line inside the
    payload or the answer cannot mislead it."""
    if not document:
        return None
    marker = f"\n## Order\n\n{payload}\n\n## Response\n\n"
    at = document.find(marker)
    if at < 0:
        return None
    answer = document[at + len(marker) :]
    answer = answer[:-1] if answer.endswith("\n") else answer
    return "" if answer == "(no output)" else answer


def migrate(db: sqlite3.Connection) -> None:
    """Bring a store file of an older layout to SCHEMA_VERSION, in one transaction."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    columns = {r[1] for r in db.execute("PRAGMA table_info(orders)")}
    if version >= SCHEMA_VERSION or "sender" in columns:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute("ALTER TABLE orders RENAME COLUMN user TO sender")
        db.execute("ALTER TABLE orders RENAME COLUMN session_key TO session")
        db.execute("ALTER TABLE orders ADD COLUMN timeout REAL")
        db.execute("ALTER TABLE orders ADD COLUMN answer TEXT")
        rows = db.execute("SELECT id, payload, options, response FROM orders").fetchall()
        for oid, payload, options, response in rows:
            opts = json.loads(options or "{}")
            timeout = opts.pop("_timeout", None)
            db.execute(
                "UPDATE orders SET timeout = ?, options = ?, answer = ? WHERE id = ?",
                (timeout, json.dumps(opts), _answer_of_document(payload, response), oid),
            )
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def events_query(
    *, limit: int | None, since: str | None = None, until: str | None = None, **filters: str | None
) -> tuple[str, list[Any]]:
    """SQL (newest first) for the central trail with `galaxy audit`'s filters.

    ``filters`` are columns (host, severity, type, order_id, user) with one value or
    several joined by commas. A list of hosts (or types, or severities) is asked one
    value at a time, each newest-first from its index and cut at ``limit``, and the
    parts merged: SQLite would otherwise read and sort every event of those hosts
    (150 ms for two of 20 nodes over 1M events, 5 ms this way).
    """
    values = {col: [v for v in str(val).split(",") if v] for col, val in filters.items() if val is not None}
    split = next((c for c in ("host", "type", "severity") if len(values.get(c, [])) > 1), None)
    if limit is None:
        split = None
    where, args = "1=1", []
    for col, vals in values.items():
        if col != split:
            where += f" AND {col} IN ({','.join('?' * len(vals))})"
            args += vals
    if since:
        where += " AND ts >= ?"
        args.append(since)
    if until:
        where += " AND ts < ?"
        args.append(until)
    order = "ORDER BY ts DESC, host, seq DESC" + (" LIMIT ?" if limit is not None else "")
    tail = [limit] if limit is not None else []
    if split is None:
        return f"SELECT data FROM events WHERE {where} {order}", [*args, *tail]
    part = f"SELECT * FROM (SELECT ts, host, seq, data FROM events WHERE {split} = ? AND {where} {order})"
    params: list[Any] = []
    for value in values[split]:
        params += [value, *args, *tail]
    return f"SELECT data FROM ({' UNION ALL '.join([part] * len(values[split]))}) {order}", [*params, *tail]


@dataclass
class OrderRecord:
    id: str
    host: str
    payload: str
    state: str
    batch: str | None = None
    target_spec: str | None = None
    sender: str | None = None  # the order's "from"
    chat_id: int | None = None
    message_id: int | None = None
    executor: str | None = None
    session: str | None = None
    timeout: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0
    started: float | None = None
    finished: float | None = None
    progress: str | None = None
    error: str | None = None
    answer: str | None = None  # the executor's answer, as the node's sidecar carries it
    response: str | None = None  # the node's Markdown document of the answer, for people
    details: dict[str, Any] = field(default_factory=dict)
    delivered: bool = False

    @property
    def terminal(self) -> bool:
        return is_terminal(self.state)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _record(row: sqlite3.Row) -> OrderRecord:
    d = dict(row)
    d["options"] = json.loads(d["options"] or "{}")
    d["details"] = json.loads(d["details"] or "{}")
    d["delivered"] = bool(d["delivered"])
    return OrderRecord(**d)


class Store:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'orders'").fetchone():
                migrate(self.db)
            self.db.executescript(SCHEMA)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        try:
            self.path.chmod(0o640)
        except OSError:
            pass

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _exec(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        with self._lock:
            return self.db.execute(sql, tuple(args))

    # -- orders ------------------------------------------------------------
    def add_order(self, rec: OrderRecord) -> OrderRecord:
        now = time.time()
        rec.created = rec.created or now
        rec.updated = now
        self._exec(
            "INSERT OR IGNORE INTO orders (id, batch, host, target_spec, sender, chat_id, message_id, payload,"
            " executor, session, timeout, options, state, created, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                rec.id,
                rec.batch,
                rec.host,
                rec.target_spec,
                rec.sender,
                rec.chat_id,
                rec.message_id,
                rec.payload,
                rec.executor,
                rec.session,
                rec.timeout,
                json.dumps(rec.options),
                rec.state,
                rec.created,
                rec.updated,
            ),
        )
        return rec

    def order(self, order_id: str) -> OrderRecord | None:
        row = self._exec("SELECT * FROM orders WHERE id = ?", (order_id,)).fetchone()
        return _record(row) if row else None

    def orders(
        self,
        *,
        limit: int = 20,
        chat_id: int | None = None,
        host: str | None = None,
        batch: str | None = None,
        states: Iterable[str] | None = None,
    ) -> list[OrderRecord]:
        sql, args = "SELECT * FROM orders WHERE 1=1", list[Any]()
        if chat_id is not None:
            sql += " AND chat_id = ?"
            args.append(chat_id)
        if host is not None:
            sql += " AND host = ?"
            args.append(host)
        if batch is not None:
            sql += " AND batch = ?"
            args.append(batch)
        if states is not None:
            states = list(states)
            sql += f" AND state IN ({','.join('?' * len(states))})"
            args += states
        sql += " ORDER BY created DESC, id DESC LIMIT ?"
        args.append(limit)
        return [_record(r) for r in self._exec(sql, args).fetchall()]

    def update_order(self, order_id: str, **fields: Any) -> OrderRecord | None:
        """Apply a state change or other fields; returns the record if anything changed.

        States only move forward, so a replayed or late event never takes an
        order back. A finished order keeps its result, unless it was only
        given up on ("lost": the node went away), in which case the node's own
        final report replaces it and is delivered again.
        """
        with self._lock:
            rec = self.order(order_id)
            if rec is None:
                return None
            new_state = fields.get("state")
            if rec.terminal and not (rec.details.get("lost") and is_terminal(new_state)):
                fields = {k: v for k, v in fields.items() if k in ("message_id", "chat_id")}
            elif rec.terminal:
                fields["delivered"] = False
            elif new_state is not None and not is_terminal(new_state) and rank(new_state) <= rank(rec.state):
                del fields["state"]
            changed = {k: v for k, v in fields.items() if getattr(rec, k) != v}
            if not changed:
                return None
            for key, value in changed.items():
                setattr(rec, key, value)
            rec.updated = time.time()
            cols = {**changed, "updated": rec.updated}
            for key in ("details", "options"):
                if key in cols:
                    cols[key] = json.dumps(cols[key])
            self._exec(
                f"UPDATE orders SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", [*cols.values(), order_id]
            )
            return rec

    def mark_delivered(self, order_id: str) -> None:
        self._exec("UPDATE orders SET delivered = 1 WHERE id = ?", (order_id,))

    def undelivered_orders(self) -> list[OrderRecord]:
        rows = self._exec(
            "SELECT * FROM orders WHERE delivered = 0 AND chat_id IS NOT NULL AND state IN "
            f"({','.join('?' * len(TERMINAL))}) ORDER BY created",
            TERMINAL,
        ).fetchall()
        return [_record(r) for r in rows]

    # -- events (central audit) ----------------------------------------------
    def add_events(self, host: str, events: list[dict[str, Any]], *, advance_cursor: bool = True) -> int:
        """Insert events (duplicates ignored); returns how many were new.

        ``advance_cursor``: the events came in order from the host's stream, so
        its resume point moves on (not for events written here, out of band)."""
        rows = [
            (
                host,
                e["seq"],
                e.get("ts", ""),
                e.get("type", ""),
                e.get("severity", "info"),
                e.get("order_id"),
                e.get("user"),
                e.get("message"),
                e.get("hash"),
                e.get("prev"),
                json.dumps(e, ensure_ascii=False, separators=(",", ":")),
            )
            for e in events
        ]
        with self._lock:
            before = self.db.total_changes
            self.db.execute("BEGIN")
            try:
                self.db.executemany("INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
                new = self.db.total_changes - before
                if events and advance_cursor:
                    last = max(events, key=lambda e: e["seq"])
                    self.db.execute(
                        "INSERT INTO cursors (host, seq, hash) VALUES (?, ?, ?) ON CONFLICT(host) DO UPDATE SET"
                        " seq = excluded.seq, hash = excluded.hash WHERE excluded.seq > cursors.seq",
                        (host, last["seq"], last.get("hash")),
                    )
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return new

    def event(self, host: str, seq: int) -> dict[str, Any] | None:
        """The stored copy of one event of a host."""
        row = self._exec("SELECT data FROM events WHERE host = ? AND seq = ?", (host, seq)).fetchone()
        return json.loads(row["data"]) if row else None

    def supersede_events(self, host: str, log_id: str | None) -> int:
        """Move the stored events of a host's audit log that was reset or rewritten into
        ``events_superseded`` (kept as evidence, out of the trail's queries) and clear its
        cursor, so that the new log is stored from its start; returns how many were moved."""
        with self._lock:
            self.db.execute("BEGIN")
            try:
                self.db.execute(
                    "CREATE TABLE IF NOT EXISTS events_superseded (host TEXT NOT NULL, log_id TEXT,"
                    " seq INTEGER NOT NULL, superseded REAL NOT NULL, data TEXT NOT NULL)"
                )
                moved = self.db.execute(
                    "INSERT INTO events_superseded SELECT host, ?, seq, ?, data FROM events WHERE host = ?",
                    (log_id, time.time(), host),
                ).rowcount
                self.db.execute("DELETE FROM events WHERE host = ?", (host,))
                self.db.execute("DELETE FROM cursors WHERE host = ?", (host,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return moved

    def cursor(self, host: str) -> tuple[int, str | None]:
        row = self._exec("SELECT seq, hash FROM cursors WHERE host = ?", (host,)).fetchone()
        return (row["seq"], row["hash"]) if row else (0, None)

    def events(
        self,
        *,
        host: str | None = None,
        limit: int | None = 100,
        severity: str | None = None,
        type: str | None = None,
        order_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest matching events across the fleet, returned oldest first."""
        sql, args = events_query(
            host=host, severity=severity, type=type, order_id=order_id, since=since, until=until, limit=limit
        )
        return [json.loads(r["data"]) for r in reversed(self._exec(sql, args).fetchall())]

    # -- alerts --------------------------------------------------------------
    def add_alert(self, alert: dict[str, Any]) -> bool:
        cur = self._exec(
            "INSERT OR IGNORE INTO alerts (id, host, kind, severity, message, ts, data, received)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (
                alert["id"],
                alert.get("host", "?"),
                alert.get("kind", "alert"),
                alert.get("severity"),
                alert.get("message"),
                alert.get("ts"),
                json.dumps(alert, ensure_ascii=False),
                time.time(),
            ),
        )
        return cur.rowcount > 0

    def undelivered_alerts(self) -> list[dict[str, Any]]:
        rows = self._exec("SELECT data FROM alerts WHERE delivered = 0 ORDER BY received").fetchall()
        return [json.loads(r["data"]) for r in rows]

    def mark_alert_delivered(self, alert_id: str) -> None:
        self._exec("UPDATE alerts SET delivered = 1 WHERE id = ?", (alert_id,))

    def alerts(self, limit: int = 50) -> list[dict[str, Any]]:
        rows = self._exec("SELECT data, delivered FROM alerts ORDER BY received DESC LIMIT ?", (limit,)).fetchall()
        return [{**json.loads(r["data"]), "delivered": bool(r["delivered"])} for r in rows]

    # -- sessions --------------------------------------------------------------
    def session(self, chat_id: int, host: str) -> str | None:
        row = self._exec("SELECT session_key FROM sessions WHERE chat_id = ? AND host = ?", (chat_id, host)).fetchone()
        return row["session_key"] if row else None

    def set_session(self, chat_id: int, host: str, key: str) -> None:
        self._exec(
            "INSERT INTO sessions VALUES (?,?,?,?) ON CONFLICT(chat_id, host) DO UPDATE SET"
            " session_key = excluded.session_key, created = excluded.created",
            (chat_id, host, key, time.time()),
        )

    # -- nodes -------------------------------------------------------------------
    def set_node(self, name: str, **fields: Any) -> None:
        for key in ("hello", "health"):
            if key in fields and not isinstance(fields[key], (str, type(None))):
                fields[key] = json.dumps(fields[key])
        with self._lock:
            self._exec("INSERT OR IGNORE INTO nodes (name) VALUES (?)", (name,))
            if fields:
                self._exec(
                    f"UPDATE nodes SET {', '.join(f'{k} = ?' for k in fields)} WHERE name = ?", [*fields.values(), name]
                )

    def nodes(self) -> dict[str, dict[str, Any]]:
        out = {}
        for r in self._exec("SELECT * FROM nodes").fetchall():
            d = dict(r)
            for key in ("hello", "health"):
                d[key] = json.loads(d[key]) if d[key] else None
            d["connected"] = bool(d["connected"])
            out[d["name"]] = d
        return out

    def get(self, key: str) -> str | None:
        row = self._exec("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return row["value"] if row else None

    def put(self, key: str, value: str) -> None:
        self._exec("INSERT INTO kv VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value", (key, value))
