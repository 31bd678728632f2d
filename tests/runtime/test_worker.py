"""The worker as a real process on a real spool: life cycle, recovery, races."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter

from nodeenv import wait_for


def test_life_cycle_through_cli(node):
    node.start_worker()
    proc = node.galaxy("order", "submit", "--wait", "--json", "--from", "alice", "hello fleet")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["state"] == "done"
    assert status["exit_code"] == 0
    assert "hello fleet" in status["response"]
    oid = status["id"]
    types = node.lifecycle(oid)
    assert types == ["order_received", "order_queued", "order_delivered", "order_running", "order_done"]
    assert all(e["user"] == "alice" for e in node.audit_events(oid))
    # the order file moved through to the archive; nothing is left behind
    assert (node.spool / "archive" / f"{oid}.json").exists()
    assert not list((node.spool / "orders").iterdir())
    assert not list((node.spool / "processing").iterdir())
    md = (node.spool / "responses" / f"{oid}.md").read_text()
    assert md.startswith(f"# Order {oid}: done") and "hello fleet" in md
    side = node.sidecar(oid)
    assert side["executor"] == "echo" and side["bytes_out"] == len("hello fleet\n")
    assert side["timings"]["run_s"] >= 0
    assert node.outbox() == []  # success raises no alert
    st = json.loads(node.galaxy("order", "status", "--json", oid, check=True).stdout)
    assert st["state"] == "done"
    listed = json.loads(node.galaxy("order", "list", "--json", check=True).stdout)
    assert listed[0]["id"] == oid


def test_classic_order_without_id_dropped_into_spool(node):
    """The deployment guide's `cat > orders/test-....json` (no id, written in place) is picked up."""
    node.start_worker()
    classic = {"type": "galaxy_order", "from": "test", "target": "production", "command": "general",
            "payload": "Test: Echo hello world", "timestamp": "2026-02-02T12:00:00+00:00",
            "acknowledged": False, "custom_field": 7}
    path = node.spool / "orders" / "test-20260202-120000.json"
    with open(path, "w") as fh:  # written non-atomically, like a shell heredoc
        text = json.dumps(classic)
        fh.write(text[:10])
        fh.flush()
        time.sleep(0.3)
        fh.write(text[10:])
    archived = wait_for(lambda: list((node.spool / "archive").glob("*.json")), what="an archived order")
    side = node.sidecar(archived[0].stem)
    assert side["state"] == "done" and side["from"] == "test"
    oid = side["id"]
    assert "Test: Echo hello world" in (node.spool / "responses" / f"{oid}.md").read_text()
    types = node.lifecycle(oid)
    assert types == ["order_received", "order_queued", "order_delivered", "order_running", "order_done"]
    assert json.loads((node.spool / "archive" / f"{oid}.json").read_text())["custom_field"] == 7
    assert not list((node.spool / "quarantine").iterdir())


def test_priority_then_fifo(node):
    ids = [node.submit("low-1"), node.submit("low-2"), node.submit("high", "--priority", "5"),
           node.submit("low-3")]
    node.start_worker()
    for oid in ids:
        node.wait_done(oid)
    delivered = [e["order_id"] for e in node.audit_events() if e["type"] == "order_delivered"]
    assert delivered == [ids[2], ids[0], ids[1], ids[3]]


def test_timeout_marks_timed_out_and_alerts(node):
    node.start_worker()
    oid = node.submit("30", "--executor", "sleep", "--timeout", "0.5")
    side = node.wait_done(oid, timeout=10)
    assert side["state"] == "timed_out"
    assert side["timings"]["run_s"] < 5
    alerts = node.outbox()
    assert [a["kind"] for a in alerts] == ["order_timed_out"] and alerts[0]["order_id"] == oid
    assert node.audit_events(oid)[-1]["severity"] == "error"


def test_cancel_running_order_within_two_seconds(node):
    node.start_worker()
    oid = node.submit("60", "--executor", "sleep")
    wait_for(lambda: json.loads(node.galaxy("order", "status", "--json", oid).stdout)["state"] == "running",
             what="order running")
    t0 = time.monotonic()
    proc = node.galaxy("order", "cancel", "--json", "--from", "bob", oid)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "cancelled"
    assert elapsed < 5  # the 2 s figure itself is measured in bench/, not asserted here
    types = node.lifecycle(oid)
    assert "order_cancel_requested" in types and types[-1] == "order_cancelled"


def test_progress_lines_are_batched_not_dropped(node):
    """Lines faster than one event a second go out together; a held line is flushed
    while the order still runs, not only at its end."""
    node.start_worker()
    script = ("import sys, time\n"
              "for i in range(30):\n"
              "    print(f'[tool] step {i}', flush=True)\n"
              "print('held back', flush=True)\n"
              "time.sleep(60)\n")
    oid = node.submit(script, "--executor", "py")

    def lines() -> list[str]:
        out = []
        for e in node.audit_events(oid):
            if e["type"] == "order_progress":
                assert e["message"] == (e.get("lines") or [e["message"]])[-1], e
                out += e.get("lines") or [e["message"]]
        return out

    wait_for(lambda: "held back" in lines(), 20, what="the held line to be flushed")
    assert json.loads(node.galaxy("order", "status", "--json", oid).stdout)["state"] == "running"
    assert lines() == [f"[tool] step {i}" for i in range(30)] + ["held back"]
    events = [e for e in node.audit_events(oid) if e["type"] == "order_progress"]
    assert len(events) < 31, "the lines were not batched"
    assert node.galaxy("order", "cancel", "--json", oid).returncode == 0
    node.wait_done(oid)
    assert [e.get("message") for e in node.audit_events(oid) if e["type"] == "order_progress"][-1] == "held back"


def test_cancel_queued_order_never_runs(node):
    oid = node.submit("should not run")
    proc = node.galaxy("order", "cancel", "--json", oid)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "cancelled"
    node.start_worker()
    later = node.submit("after")
    node.wait_done(later)
    assert "order_running" not in [e["type"] for e in node.audit_events(oid)]


def test_concurrent_runners(node):
    node.write_config(worker={"runners": 2})
    node.start_worker()
    a = node.submit("1", "--executor", "sleep")
    b = node.submit("1", "--executor", "sleep")
    t0 = time.monotonic()
    node.wait_done(a)
    node.wait_done(b)
    assert time.monotonic() - t0 < 1.9  # two one-second orders overlapped


def test_kill_9_mid_order_becomes_interrupted(node):
    worker = node.start_worker()
    oid = node.submit("60", "--executor", "sleep", "--from", "carol")
    wait_for(lambda: any(e["type"] == "order_running" for e in node.audit_events(oid)), what="running")
    worker.kill()
    worker.wait()
    assert (node.spool / "processing" / f"{oid}.json").exists()
    node.start_worker()  # recovery happens at start
    side = node.wait_done(oid)
    assert side["state"] == "interrupted"
    assert side["details"]["retry"] is True
    assert "not re-run" in (node.spool / "responses" / f"{oid}.md").read_text()
    types = node.lifecycle(oid)
    assert types[-1] == "order_interrupted" and types.count("order_running") == 1  # not re-run
    alerts = [a for a in node.outbox() if a["order_id"] == oid]
    assert alerts and alerts[0]["kind"] == "order_interrupted" and alerts[0]["retry"] is True
    assert alerts[0]["user"] == "carol"
    # the crash itself is reported, and so is the recovery
    kinds = [a["kind"] for a in node.outbox()]
    assert kinds.index("worker_died") < kinds.index("worker_recovered")
    assert [e["type"] for e in node.audit_events() if e["type"] == "worker_died"] == ["worker_died"]
    assert (node.spool / "archive" / f"{oid}.json").exists()
    assert not list((node.spool / "processing").iterdir())


def test_sigterm_lets_running_order_finish(node):
    worker = node.start_worker()
    oid = node.submit("1", "--executor", "sleep")
    wait_for(lambda: any(e["type"] == "order_running" for e in node.audit_events(oid)), what="running")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert node.sidecar(oid)["state"] == "done"
    assert node.audit_events()[-1]["type"] == "worker_stopped"
    node.start_worker()  # a clean stop is not reported as a crash
    assert "worker_died" not in [a["kind"] for a in node.outbox()]


def test_sigterm_past_grace_marks_interrupted(node):
    node.write_config(worker={"shutdown_grace": 0.5})
    worker = node.start_worker()
    oid = node.submit("60", "--executor", "sleep")
    wait_for(lambda: any(e["type"] == "order_running" for e in node.audit_events(oid)), what="running")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert node.sidecar(oid)["state"] == "interrupted"
    assert not list((node.spool / "processing").iterdir())


def test_two_workers_never_run_an_order_twice(node, tmp_path):
    ran = tmp_path / "ran.log"
    node.write_config(executors={"record": {"type": "command",
                                            "argv": ["/bin/sh", "-c", 'echo "$1" >> "$2"', "sh",
                                                     "{order_id}", str(ran)]}},
                      worker={"default_executor": "record", "runners": 2})
    ids = [node.submit(f"order {i}") for i in range(40)]
    node.start_worker()
    node.start_worker()
    ids += [node.submit(f"order {i}") for i in range(40, 120)]
    for oid in ids:
        assert node.wait_done(oid)["state"] == "done"
    counts = Counter(ran.read_text().split())
    assert set(counts) == set(ids)
    assert max(counts.values()) == 1
    delivered = Counter(e["order_id"] for e in node.audit_events() if e["type"] == "order_delivered")
    assert max(delivered.values()) == 1 and len(delivered) == len(ids)


def test_sd_notify_ready_and_watchdog(node, tmp_path):
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(10)
    node.start_worker(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "400000"})
    messages = set()
    deadline = time.monotonic() + 10
    while not {"READY=1", "WATCHDOG=1"} <= messages and time.monotonic() < deadline:
        messages.update(sock.recv(4096).decode().split("\n"))
    sock.close()
    assert "READY=1" in messages and "WATCHDOG=1" in messages


def test_output_cap_and_invalid_utf8(node):
    node.write_config(worker={"max_output_bytes": 2048})
    node.start_worker()
    big = node.submit("import sys; sys.stdout.buffer.write(b'x' * 100000)", "--executor", "py")
    side = node.wait_done(big)
    assert side["state"] == "done" and side["truncated"] is True and side["bytes_out"] == 100000
    md = (node.spool / "responses" / f"{big}.md").read_text()
    assert "[output truncated at 2048 bytes]" in md and len(md) < 4096
    bad = node.submit(r"import sys; sys.stdout.buffer.write(b'ok \xff\xfe bytes\n')", "--executor", "py")
    side = node.wait_done(bad)
    assert side["state"] == "done"
    assert "ok \ufffd\ufffd bytes" in (node.spool / "responses" / f"{bad}.md").read_text()


def test_executor_failure_is_reported(node):
    node.start_worker()
    oid = node.submit("import sys; print('partial'); sys.exit('boom')", "--executor", "py")
    side = node.wait_done(oid)
    assert side["state"] == "failed" and side["exit_code"] == 1
    assert "boom" in side["error"]
    assert node.outbox()[0]["kind"] == "order_failed"


def test_worker_keeps_running_after_everything(node):
    """A final check that the worker from a run of bad inputs is still serving."""
    worker = node.start_worker()
    for payload in ("1", "2"):
        node.submit(payload, "--executor", "sleep", "--timeout", "0.2")
    (node.spool / "orders" / "junk.json").write_text("{not json")
    ok = node.submit("still alive")
    assert node.wait_done(ok)["state"] == "done"
    assert worker.poll() is None
    assert os.path.exists(node.spool / "state" / "heartbeat.json")


def test_worker_start_fails_clearly_on_bad_config(node):
    node.config_path.write_text("worker: {runners: many}\n")
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.cli", "worker"], env=node.env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "worker.runners: expected a whole number, got 'many'" in proc.stderr
