"""Every kind of bad input gets a clear error, loses nothing and leaves the worker serving."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from nodeenv import wait_for

BAD_FILES = {
    "malformed.json": (b'{"type": "galaxy_order", "payload": ', "malformed JSON"),
    "array.json": (b"[1, 2, 3]", "must be a JSON object, got list"),
    "nopayload.json": (b'{"type": "galaxy_order", "from": "x"}', "'payload' is required"),
    "wrongtype.json": (b'{"payload": "hi", "timeout": "soon"}', "'timeout' must be a positive number"),
    "priority.json": (b'{"payload": "hi", "priority": "high"}', "'priority' must be an integer"),
    "payloadtype.json": (b'{"payload": 42}', "'payload' must be a string, got int"),
    "control.json": (b'{"payload": "rm\\u0000 -rf"}', "control characters"),
    "traversal.json": (b'{"id": "../../etc/passwd", "payload": "hi"}', "order id '../../etc/passwd' is not valid"),
    "target.json": (b'{"target": "../web1", "payload": "hi"}', "target '../web1' is not valid"),
    "latin1.json": ('{"payload": "caf\u00e9"}'.encode("latin-1"), "not valid UTF-8"),
    "othertype.json": (b'{"type": "something_else", "payload": "hi"}', "'type' must be 'galaxy_order'"),
    "huge.json": (json.dumps({"payload": "x" * 70000}).encode(), "over the limit of 65536"),
}


def test_bad_order_files_are_quarantined_with_reasons(node):
    worker = node.start_worker()
    for name, (data, _) in BAD_FILES.items():
        tmp = node.spool / "tmp" / name
        tmp.write_bytes(data)
        tmp.rename(node.spool / "orders" / name)  # atomic drop, as a careful writer would
    good = node.submit("still serving")
    assert node.wait_done(good)["state"] == "done"
    quarantine = node.spool / "quarantine"
    wait_for(lambda: len(list(quarantine.glob("*.reason.json"))) == len(BAD_FILES), timeout=15,
             what="every bad file quarantined")
    for name, (data, reason) in BAD_FILES.items():
        assert (quarantine / name).read_bytes() == data  # kept byte for byte: nothing lost
        note = json.loads((quarantine / f"{name}.reason.json").read_text())
        assert reason in note["reason"], (name, note)
    events = [e for e in node.audit_events() if e["type"] == "order_quarantined"]
    assert len(events) == len(BAD_FILES) and all(e["severity"] == "error" for e in events)
    alerts = [a for a in node.outbox() if a["kind"] == "order_quarantined"]
    assert len(alerts) == len(BAD_FILES)
    assert worker.poll() is None
    assert not list((node.spool / "orders").iterdir())


@pytest.mark.parametrize("args,message", [
    (["--executor", "nope"], "unknown executor 'nope'; this node has:"),
    (["--id", "../../etc/passwd"], "order id '../../etc/passwd' is not valid"),
    (["--target", "a/b"], "target 'a/b' is not valid"),
    (["--timeout", "-1"], "'timeout' must be a positive number"),
    (["--priority", "1000"], "'priority' must be an integer from -100 to 100"),
    (["--option", "novalue"], "--option expects KEY=VALUE"),
])
def test_submit_rejects_bad_fields(node, args, message):
    proc = node.galaxy("order", "submit", *args, "payload")
    assert proc.returncode == 2
    assert message in proc.stderr
    assert not list((node.spool / "orders").iterdir())


def test_submit_rejects_oversized_and_control_payloads(node):
    proc = node.galaxy("order", "submit", "-", input=b"x" * 70000)
    assert proc.returncode == 2 and "over the limit of 65536" in proc.stderr
    proc = node.galaxy("order", "submit", "-", input=b"bell\x07")
    assert proc.returncode == 2 and "control characters" in proc.stderr
    proc = node.galaxy("order", "submit", "-", input=b"\xff\xfe")
    assert proc.returncode == 2 and "not valid UTF-8" in proc.stderr
    rejected = [e for e in node.audit_events() if e["type"] == "order_rejected"]
    assert len(rejected) == 2 and all(e["severity"] == "error" for e in rejected)


def test_unknown_executor_in_dropped_file_fails_with_response(node):
    node.start_worker()
    (node.spool / "orders" / "x.json").write_text(json.dumps({"id": "ord-x", "payload": "hi", "executor": "ghost"}))
    side = node.wait_done("ord-x")
    assert side["state"] == "failed" and "unknown executor 'ghost'" in side["error"]
    assert "unknown executor" in (node.spool / "responses" / "ord-x.md").read_text()


def test_missing_executor_binary_fails_cleanly(node):
    node.write_config(executors={"ghostcmd": {"type": "command", "argv": ["/nonexistent/claude", "{payload}"]}})
    node.start_worker()
    oid = node.submit("hi", "--executor", "ghostcmd")
    side = node.wait_done(oid)
    assert side["state"] == "failed" and side["error"] == "command not found: /nonexistent/claude"


def test_shell_allow_list(node):
    node.start_worker()
    ok = node.submit("uptime", "--executor", "shell")
    assert node.wait_done(ok)["state"] == "done"
    assert "load average" in (node.spool / "responses" / f"{ok}.md").read_text()
    bad = node.submit("rm -rf /", "--executor", "shell")
    side = node.wait_done(bad)
    assert side["state"] == "failed" and "not an allowed command" in side["error"]


def test_duplicate_id_is_queued_once(node):
    first = node.submit("once", "--id", "dup-1")
    again = node.submit("once", "--id", "dup-1")
    assert first == again == "dup-1"
    node.start_worker()
    node.wait_done("dup-1")
    assert [e["type"] for e in node.audit_events("dup-1")].count("order_running") == 1


@pytest.fixture
def small_spool(node):
    """The spool on its own 2 MiB tmpfs, so it can really fill up."""
    mnt = node.spool
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0750", f"galaxy-test-{uuid.uuid4().hex[:6]}",
                    str(mnt)], check=True)
    try:
        yield mnt
    finally:
        node.stop_workers()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_loses_nothing(node, small_spool):
    worker = node.start_worker()
    before = node.submit("before the disk filled")
    assert node.wait_done(before)["state"] == "done"
    filler = small_spool / "filler"
    with open(filler, "wb") as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    proc = node.galaxy("order", "submit", "no room")
    assert proc.returncode != 0
    assert "no space" in proc.stderr.lower()
    assert worker.poll() is None  # still serving
    filler.unlink()
    after = node.submit("after the disk was freed")
    assert node.wait_done(after)["state"] == "done"
    # the earlier answer is intact
    assert "before the disk filled" in (small_spool / "responses" / f"{before}.md").read_text()
    assert worker.poll() is None
