"""The control store: a store file written by the earlier layout opens, and keeps its orders."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from galaxy_fleet.control.store import SCHEMA_VERSION, Store
from galaxy_fleet.dashboard.reader import StoreReader, StoreUnavailable

# The orders table as stores of layout 1 have it (sender as "user", session as
# "session_key", the timeout inside options, the answer only inside the document).
OLD_ORDERS = """
CREATE TABLE orders (
    id TEXT PRIMARY KEY, batch TEXT, host TEXT NOT NULL, target_spec TEXT, user TEXT,
    chat_id INTEGER, message_id INTEGER, payload TEXT NOT NULL, executor TEXT, session_key TEXT,
    options TEXT, state TEXT NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    started REAL, finished REAL, progress TEXT, error TEXT, response TEXT, details TEXT,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX orders_created ON orders(created);
CREATE INDEX orders_host_state ON orders(host, state);
"""

PAYLOAD = "summarise\n\n## Response\n\nthis line is part of the order"
ANSWER = "First part.\n\n## Response\n\nSecond part."
DOCUMENT = (f"# Order a1: done\n\n- **Host:** web1\n- **From:** alice\n\n## Order\n\n{PAYLOAD}\n\n"
            f"## Response\n\n{ANSWER}\n")


def old_store(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(OLD_ORDERS)
    rows = [
        ("a1", "web1", "telegram:1(@alice)", 7, PAYLOAD, "chat7-web1-abc", {"project": "api", "_timeout": 90},
         "done", DOCUMENT),
        ("a2", "web2", "cli", None, "uptime", None, {}, "running", None),
        ("a3", "web2", "cli", None, "true", None, {}, "done",
         "# Order a3: done\n\n## Order\n\ntrue\n\n## Response\n\n(no output)\n"),
    ]
    for oid, host, user, chat, payload, session, options, state, response in rows:
        db.execute("INSERT INTO orders (id, host, user, chat_id, payload, session_key, options, state, created,"
                   " updated, response, details) VALUES (?,?,?,?,?,?,?,?,1,1,?,'{}')",
                   (oid, host, user, chat, payload, session, json.dumps(options), state, response))
    db.commit()
    db.close()


def test_an_older_store_file_is_brought_up_to_date(tmp_path: Path) -> None:
    path = tmp_path / "galaxy.db"
    old_store(path)
    # the dashboard (read-only) says what to do rather than failing on a missing column
    with pytest.raises(StoreUnavailable, match="older layout"):
        StoreReader(path).orders()
    store = Store(path)
    a1 = store.order("a1")
    assert a1 is not None
    assert a1.sender == "telegram:1(@alice)" and a1.session == "chat7-web1-abc" and a1.chat_id == 7
    assert a1.timeout == 90 and a1.options == {"project": "api"}
    assert a1.answer == ANSWER and a1.response == DOCUMENT  # found by the payload, not by the last heading
    a2 = store.order("a2")
    assert a2 is not None and a2.answer is None and a2.state == "running" and a2.timeout is None
    assert store.order("a3").answer == ""  # type: ignore[union-attr]
    # it goes on working: a state change, a new order
    assert store.update_order("a2", state="done", answer="up 3 days") is not None
    assert store.order("a2").answer == "up 3 days"  # type: ignore[union-attr]
    store.close()
    # opening again changes nothing; the dashboard reads the new layout
    store = Store(path)
    assert store.order("a1").answer == ANSWER  # type: ignore[union-attr]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
    rows = {o["id"]: o for o in StoreReader(path).orders()}
    assert rows["a1"]["from"] == "telegram:1(@alice)" and rows["a1"]["answer"] == ANSWER
    assert [o["id"] for o in StoreReader(path).orders(sender="cli")] == ["a3", "a2"]  # same time: id order


def test_a_new_store_has_the_current_layout(tmp_path: Path) -> None:
    store = Store(tmp_path / "new.db")
    columns = {r[1] for r in store.db.execute("PRAGMA table_info(orders)")}
    assert {"sender", "session", "timeout", "answer"} <= columns and not {"user", "session_key"} & columns
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()
