"""The control node anchors each node's audit trail: a log that was truncated, rewritten and
re-sealed, or replaced wholesale is an alert, recorded in the control node's own trail, and
the new log is streamed from its start (nothing of it dropped). Real workers, real `galaxy
remote` processes, a real SQLite store; the attacks are done on the node's files, live (the
control node connected) and while the control node is down."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from galaxy_fleet import audit
from galaxy_fleet.audit import chain
from galaxy_fleet.config import load
from nodeenv import wait_for


def log_path(lf: Any, name: str = "web1") -> Path:
    return lf.nodes[name].spool / "audit" / "audit.jsonl"


def newest_seq(path: Path) -> int:
    return audit.query(path, limit=1)[-1]["seq"]


def run_orders(fleet: Any, n: int, text: str) -> list[str]:
    recs = [fleet.submit("web1", f"{text} {i}", sender="alice", chat_id=7)[0] for i in range(n)]
    finals = fleet.wait([r.id for r in recs], timeout=30)
    assert [r.state for r in finals] == ["done"] * n, [(r.error, r.details) for r in finals]
    return [r.id for r in recs]


def streamed_up(fleet: Any, path: Path) -> None:
    """Wait until the control node has stored every event of the node's log."""
    wait_for(lambda: fleet.store.cursor("web1")[0] == newest_seq(path), 20, what="control caught up")


def write_lines(path: Path, lines: list[bytes]) -> None:
    """Replace the log the way an intruder would: a new file renamed over it."""
    tmp = path.with_name(".tampered")
    tmp.write_bytes(b"".join(line + b"\n" for line in lines))
    os.rename(tmp, path)


def truncate(path: Path) -> None:
    lines = path.read_bytes().splitlines()
    write_lines(path, lines[:3])


def rewrite_and_reseal(path: Path) -> None:
    """Change an old event's message and re-seal it and every later event with a fresh sha256."""
    events = [json.loads(line) for line in path.read_bytes().splitlines()]
    victim = next(i for i, e in enumerate(events) if e["type"] == "order_done")
    events[victim]["message"] = "nothing happened here"
    out = path.read_bytes().splitlines()[:victim]
    prev = events[victim - 1]["hash"]
    for e in events[victim:]:
        data = {k: v for k, v in e.items() if k not in chain.RESERVED}
        line, prev = chain._seal(chain._fields(e["ts"], e["seq"], e["host"], e["type"], e["severity"],
                                               e["order_id"], e["user"], e["message"], data), prev)
        out.append(line.rstrip(b"\n"))
    write_lines(path, out)
    assert audit.verify(path).ok  # the node's own check cannot tell


def replace_wholesale(path: Path) -> None:
    fresh = path.with_name("fresh.jsonl")
    log = audit.AuditLog(fresh, "web1")
    for i in range(3):
        log.append("order_progress", message=f"innocent {i}")
    log.close()
    os.rename(fresh, path)
    os.unlink(path.with_name("fresh.jsonl.lock"))


ATTACKS = {"truncated": truncate, "rewritten": rewrite_and_reseal, "replaced": replace_wholesale}


def resets(fleet: Any) -> list[dict[str, Any]]:
    return [a for a in fleet.store.alerts() if a["kind"] == "audit_reset"]


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("when", ["live", "offline"])
def test_reset_or_rewrite_is_an_alert_and_streaming_goes_on(local_fleet, attack: str, when: str) -> None:
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    path = log_path(lf)
    old_log = audit.log_identity(path)
    assert fleet.router.links["web1"].hello["log_id"] == old_log and old_log
    run_orders(fleet, 2, "before")
    streamed_up(fleet, path)
    stored_before = len(fleet.audit("web1", limit=None))

    if when == "offline":
        fleet.stop()
    ATTACKS[attack](path)
    if when == "offline":
        fleet = lf.fleet()  # a restarted control node: same store
        assert fleet.wait_connected(20)
    elif attack == "rewritten":
        # Same identity, same length: the node's next event shows it (its prev is not what was streamed).
        run_orders(fleet, 1, "during")
    # else a log that shrank or changed identity under the stream is reported by the node at once

    [alert] = wait_for(lambda: resets(fleet), 20, what="audit_reset alert")
    assert alert["host"] == "web1" and alert["severity"] == "critical" and alert["origin"] == "control"
    assert "web1" in alert["message"] and "reset or rewritten" in alert["message"]
    # the bot's path: the alert waits for delivery like node and worker alerts
    assert [ev.alert["id"] for ev in fleet.pending() if ev.kind == "alert"
            and ev.alert["kind"] == "audit_reset"] == [alert["id"]]
    # recorded in the control node's own hash-chained trail, and in the central one
    control_log = load(lf.control_config).control.audit_path
    [own] = audit.query(control_log, type="audit_reset")
    assert own["node"] == "web1" and own["severity"] == "critical" and own["old_log"] == old_log
    assert own["new_log"] == audit.log_identity(path)
    assert audit.verify(control_log).ok
    assert [e["seq"] for e in fleet.audit(None, type="audit_reset")] == [own["seq"]]
    # what the control node had received of the old log is kept aside, not lost
    db = sqlite3.connect(fleet.store.path)
    try:
        kept = db.execute("SELECT count(*) FROM events_superseded WHERE host = 'web1'").fetchone()[0]
    finally:
        db.close()
    assert kept >= stored_before

    # streaming resumes from the start of the new log: new orders are followed to the end
    [after] = run_orders(fleet, 1, "after")
    types = [e["type"] for e in fleet.audit("web1", order_id=after) if e["type"] != "order_progress"]
    assert types == ["order_received", "order_queued", "order_delivered", "order_running", "order_done"]
    streamed_up(fleet, path)
    assert [e["seq"] for e in fleet.audit("web1", limit=None)] == list(range(1, newest_seq(path) + 1))
    assert len(resets(fleet)) == 1  # one alert, no reconnect loop


def test_an_untouched_log_is_no_reset(local_fleet) -> None:
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    path = log_path(lf)
    run_orders(fleet, 2, "one")
    streamed_up(fleet, path)
    link = fleet.router.links["web1"]
    first = link.attempts
    link.drop("test: cut the connection")
    wait_for(lambda: link.attempts > first and link.connected, 20, what="reconnected")
    fleet.stop()
    run_orders_offline = lf.nodes["web1"].submit("written while control was down")
    lf.nodes["web1"].wait_done(run_orders_offline)
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    streamed_up(fleet, path)
    assert resets(fleet) == [] and not [a for a in fleet.store.alerts() if a["kind"] == "audit_chain_broken"]
    assert [e["seq"] for e in fleet.audit("web1", limit=None)] == list(range(1, newest_seq(path) + 1))


def test_events_deleted_after_the_cursor_are_a_broken_chain_not_a_reset(local_fleet) -> None:
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    path = log_path(lf)
    run_orders(fleet, 1, "one")
    streamed_up(fleet, path)
    cursor = fleet.store.cursor("web1")[0]
    fleet.stop()
    node = lf.nodes["web1"]
    node.wait_done(node.submit("written while control was down"))
    lines = path.read_bytes().splitlines()
    del lines[cursor + 1]  # an event the control node has not seen yet
    write_lines(path, lines)
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [broken] = wait_for(lambda: [a for a in fleet.store.alerts() if a["kind"] == "audit_chain_broken"], 20,
                        what="audit_chain_broken alert")
    assert broken["host"] == "web1" and f"audit event {cursor + 3}" in broken["message"]
    assert resets(fleet) == []
    [after] = run_orders(fleet, 1, "after")
    assert fleet.order(after).state == "done"
    streamed_up(fleet, path)


def test_segments_removed_before_control_read_them_are_a_gap_not_a_reset(local_fleet) -> None:
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    path = log_path(lf)
    run_orders(fleet, 1, "one")
    streamed_up(fleet, path)
    cursor = fleet.store.cursor("web1")[0]
    held = len(fleet.audit("web1", limit=None))
    fleet.stop()
    # the node goes on writing while the control node is down, and its log rotates
    log = audit.AuditLog(path, "web1", rotate_bytes=4096)
    for i in range(60):
        log.append("health_check", message="z" * 200, i=i)
    log.close()
    segments = sorted(p for p in path.parent.iterdir() if p.name.startswith("audit.jsonl.0"))
    removed = [p for p in segments if int(p.name.split(".")[2].split("-")[0]) <= cursor + 1]
    assert removed and len(removed) < len(segments)
    for p in removed:
        p.unlink()  # what retention does to old segments
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [gap] = wait_for(lambda: [a for a in fleet.store.alerts() if a["kind"] == "audit_chain_broken"], 20,
                     what="audit_chain_broken alert")
    assert f"events {cursor + 1} to" in gap["message"] and "removed by retention" in gap["message"]
    assert resets(fleet) == []
    run_orders(fleet, 1, "after")
    streamed_up(fleet, path)
    # nothing the control node held was set aside; the events still on the node followed
    seqs = [e["seq"] for e in fleet.audit("web1", limit=None)]
    assert seqs[:held] == list(range(1, held + 1)) and seqs[-1] == newest_seq(path)
    assert len([a for a in fleet.store.alerts() if a["kind"] == "audit_chain_broken"]) == 1
