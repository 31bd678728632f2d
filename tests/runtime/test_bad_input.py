"""Every kind of bad input gets a clear error, loses nothing and leaves the worker serving."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid

import pytest

from nodeenv import GALAXY as GALAXY_CMD, wait_for

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


# -- entries that are not plain order files ---------------------------------------

def _restart_clean(node, worker) -> None:
    """Stop the worker, start a fresh one on the same spool: it comes up and serves."""
    worker.send_signal(subprocess.signal.SIGTERM)
    assert worker.wait(30) == 0
    again = node.start_worker()
    oid = node.submit("after the restart")
    assert node.wait_done(oid)["state"] == "done"
    assert again.poll() is None


def _reason(node, name: str) -> str:
    path = node.spool / "quarantine" / f"{name}.reason.json"
    wait_for(path.exists, what=f"{name} quarantined")
    return json.loads(path.read_text())["reason"]


def test_fifo_never_stalls_intake(node):
    worker = node.start_worker()
    os.mkfifo(node.spool / "orders" / "live.json")  # dropped while it runs
    assert "a FIFO" in _reason(node, "live.json")
    oid = node.submit("still serving")
    assert node.wait_done(oid)["state"] == "done"
    _restart_clean(node, worker)


def test_fifo_present_at_start_up(node):
    (node.spool / "orders").mkdir(parents=True)
    os.mkfifo(node.spool / "orders" / "early.json")
    worker = node.start_worker()
    assert "a FIFO" in _reason(node, "early.json")
    _restart_clean(node, worker)


def test_deep_nesting_at_start_up_is_quarantined(node):
    (node.spool / "orders").mkdir(parents=True)
    deep = b'{"payload": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    (node.spool / "orders" / "deep.json").write_bytes(deep)
    opts = {"payload": "hi", "options": {"a": json.loads("[" * 40 + "]" * 40)}}
    (node.spool / "orders" / "deepopts.json").write_text(json.dumps(opts))
    worker = node.start_worker()
    assert "nested too deeply" in _reason(node, "deep.json")
    assert "nested more than 16 levels" in _reason(node, "deepopts.json")
    assert (node.spool / "quarantine" / "deep.json").read_bytes() == deep
    _restart_clean(node, worker)
    proc = node.galaxy("order", "submit", "--json", "--option", "k=v", "fine")
    assert proc.returncode == 0


def test_symlink_is_not_followed(node, tmp_path):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"payload": "secret contents"}))
    secret.chmod(0o600)
    worker = node.start_worker()
    (node.spool / "orders" / "link.json").symlink_to(secret)
    (node.spool / "orders" / "zero.json").symlink_to("/dev/zero")
    assert "symbolic link" in _reason(node, "link.json")
    assert "symbolic link" in _reason(node, "zero.json")
    assert (node.spool / "quarantine" / "link.json").is_symlink()  # the link moved, its target untouched
    assert secret.read_text() == json.dumps({"payload": "secret contents"})
    assert "secret contents" not in json.dumps(node.audit_events())
    _restart_clean(node, worker)


def test_directory_is_moved_aside(node):
    worker = node.start_worker()
    (node.spool / "orders" / "dir.json").mkdir()
    node.galaxy("order", "submit", "wake the scan")  # a directory sends no file event; the scan finds it
    worker.send_signal(subprocess.signal.SIGTERM)
    worker.wait(30)
    worker = node.start_worker()
    assert "a directory, not a regular file" in _reason(node, "dir.json")
    assert not (node.spool / "orders" / "dir.json").exists()
    _restart_clean(node, worker)


def test_unmovable_entry_is_reported_once_and_left_alone(node):
    """A mount point in orders/ cannot be renamed: it is reported once, not retried in a loop."""
    mnt = node.spool / "orders" / "mounted.json"
    mnt.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "galaxy-test-mnt", str(mnt)], check=True)
    try:
        worker = node.start_worker()
        for _ in range(3):  # every scan (start-up, overflow) sees it again
            oid = node.submit("serving around it")
            assert node.wait_done(oid)["state"] == "done"
        wait_for(lambda: [e for e in node.audit_events() if e["type"] == "order_quarantined"], what="report")
        time.sleep(1.5)  # three heartbeats: nothing reported again
        events = [e for e in node.audit_events() if e["type"] == "order_quarantined"]
        assert len(events) == 1 and "cannot be moved to quarantine" in events[0]["message"]
        assert len([a for a in node.outbox() if a["kind"] == "order_quarantined"]) == 1
        _restart_clean(node, worker)  # a new worker reports it once more, and serves
    finally:
        node.stop_workers()
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_oversized_file_is_not_read_whole(node):
    worker = node.start_worker()
    big = node.spool / "tmp" / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: 64 MiB of nothing, never read
    big.rename(node.spool / "orders" / "big.json")
    assert "over the limit of" in _reason(node, "big.json")
    _restart_clean(node, worker)


# -- names and ids ------------------------------------------------------------------

@pytest.mark.parametrize("field", ["id", "target", "session"])
def test_trailing_newline_in_names_is_refused(node, field):
    worker = node.start_worker()
    data = {"payload": "hi", field: "nl-1\n"}
    (node.spool / "tmp" / "nl.json").write_text(json.dumps(data))
    (node.spool / "tmp" / "nl.json").rename(node.spool / "orders" / "nl.json")
    assert "'nl-1\\n' is not valid" in _reason(node, "nl.json")
    assert not [p for p in node.spool.rglob("*") if "\n" in p.name]
    flag = {"id": "--id", "target": "--target", "session": "--session"}[field]
    proc = node.galaxy("order", "submit", flag, "nl-2\n", "hi")
    assert proc.returncode == 2 and "is not valid" in proc.stderr
    _restart_clean(node, worker)


@pytest.mark.parametrize("oid", ["heartbeat", "health", "cancel", "executors", "orders"])
def test_reserved_looking_ids_are_ordinary_orders(node, oid):
    worker = node.start_worker()
    assert node.submit("hello", "--id", oid) == oid
    side = node.wait_done(oid)
    assert side["state"] == "done" and side["id"] == oid
    assert node.lifecycle(oid)[-1] == "order_done"
    hb = json.loads((node.spool / "state" / "heartbeat.json").read_text())
    assert hb["pid"] == worker.pid  # the worker's file is untouched by the order's state
    _restart_clean(node, worker)


def test_duplicate_id_in_dropped_files_runs_once(node):
    worker = node.start_worker()
    first = node.submit("first", "--id", "dup-file")
    assert node.wait_done(first)["state"] == "done"
    answer = (node.spool / "responses" / "dup-file.md").read_text()
    for name in ("again.json", "dup-file.json"):
        (node.spool / "tmp" / name).write_text(json.dumps({"id": "dup-file", "payload": "second"}))
        (node.spool / "tmp" / name).rename(node.spool / "orders" / name)
        assert "order id 'dup-file' is already known on this node" in _reason(node, name)
    assert (node.spool / "responses" / "dup-file.md").read_text() == answer  # never overwritten
    assert node.lifecycle("dup-file").count("order_running") == 1
    # two files with one new id dropped together: one runs, the other is quarantined
    for name in ("twin-a.json", "twin-b.json"):
        (node.spool / "tmp" / name).write_text(json.dumps({"id": "twin", "payload": "twin"}))
    worker.send_signal(subprocess.signal.SIGSTOP)
    for name in ("twin-a.json", "twin-b.json"):
        (node.spool / "tmp" / name).rename(node.spool / "orders" / name)
    worker.send_signal(subprocess.signal.SIGCONT)
    node.wait_done("twin")
    wait_for(lambda: len(list((node.spool / "quarantine").glob("twin-*.reason.json"))) == 1, what="twin")
    assert node.lifecycle("twin").count("order_running") == 1
    _restart_clean(node, worker)


# -- no orphans ---------------------------------------------------------------------

def _procs_with(arg: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmd = fh.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmd:
            found.append(int(pid))
    return found


def test_background_children_end_with_their_order(node):
    tag = f"30.{uuid.uuid4().int % 10**9:09d}"  # a unique argument, to find the process by
    node.write_config(executors={**node.config["executors"],
                                 "bg": {"type": "command", "argv": ["/bin/sh", "-c", f"sleep {tag} & echo started"]}})
    node.start_worker()
    oid = node.submit("x", "--executor", "bg")
    side = node.wait_done(oid)
    assert side["state"] == "done"
    wait_for(lambda: not _procs_with(tag), timeout=5, what="the background sleep killed with its order")
    assert not (node.spool / "processing" / f"{oid}.pgid").exists()


def test_worker_killed_mid_order_leaves_no_orphans_and_no_second_run(node, tmp_path):
    marker = tmp_path / "ran"
    tag = f"4.{uuid.uuid4().int % 10**9:09d}"
    script = f"sleep {tag}; echo ran >> {marker}"
    node.write_config(executors={**node.config["executors"],
                                 "late": {"type": "command", "argv": ["/bin/sh", "-c", script]}})
    worker = node.start_worker()
    oid = node.submit("x", "--executor", "late")
    pgid_file = node.spool / "processing" / f"{oid}.pgid"
    wait_for(pgid_file.exists, what="the order's process group recorded")
    wait_for(lambda: _procs_with(tag), what="the sleep running")
    pgid = json.loads(pgid_file.read_text())["pgid"]
    worker.kill()  # -9: no clean-up of its own
    worker.wait()
    assert _procs_with(tag)  # outside systemd nothing else would end them
    node.start_worker()
    side = node.wait_done(oid)
    assert side["state"] == "interrupted"
    assert not _procs_with(tag)
    killed = [e for e in node.audit_events(oid) if e["type"] == "order_processes_killed"]
    assert len(killed) == 1 and killed[0]["pgid"] == pgid
    # the retry runs it once; the interrupted run never finishes it a second time
    retry = node.submit("x", "--executor", "late", "--timeout", "60")
    wait_for(lambda: _procs_with(tag), what="the retry running")
    assert node.wait_done(retry, timeout=float(tag) + 20)["state"] == "done"
    assert marker.read_text() == "ran\n"


# -- galaxy remote --------------------------------------------------------------------

def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _fill_audit(node, events: int) -> None:
    from galaxy_fleet.config import load
    from galaxy_fleet.node.worker import open_audit

    audit = open_audit(load(node.config_path))
    for i in range(events):
        audit.append("test_event", message=f"event {i} " + "x" * 100, sync=False)
    audit.close()


def test_remote_malformed_frames_answered_and_session_kept(node):
    worker = node.start_worker()
    _fill_audit(node, 1100)
    frames = [
        b"[" * 100000 + b"]" * 100000,  # nested past the parser's depth
        b'{"id": 1, "op": "submit", "order": {"payload": "x", "options": {"a": ' + b"[" * 50 + b"]" * 50 + b"}}}",
        b'{"id": 2, "op": "ping", "pad": "' + b"y" * (2 << 20) + b'"}',  # over the line limit
        b"\xff\xfe not utf-8",
        b'{"id": {"deep": [[[[1]]]]}, "op": "ping"}',
        b'{"id": 3, "op": ["list"]}',
        b'{"id": 4, "op": "audit", "limit": null}',
        b'{"id": 5, "op": "audit", "limit": 1000000000}',
        b'{"id": 6, "op": "audit", "limit": "all"}',
        b'{"id": 7, "op": "cancel", "order_id": "nope", "wait": 1e300}',
        b'{"id": 8, "op": "list", "limit": -1}',
        b'{"id": 9, "op": "ping"}',
    ]
    proc = subprocess.run([*GALAXY_CMD, "remote"], env=node.env, input=b"\n".join(frames) + b"\n",
                          capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert b"Traceback" not in proc.stderr
    msgs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert msgs[0]["type"] == "hello"
    results = msgs[1:]
    assert len(results) == len(frames)  # every frame got exactly one answer
    by_id = {m["id"]: m for m in results if m["id"] is not None}
    anonymous = [m["error"] for m in results if m["id"] is None]
    assert "bad request: JSON nested too deeply" in anonymous
    assert any("over 1048576 bytes" in e for e in anonymous)
    assert any("'id' must be an integer or a string" in e for e in anonymous)
    assert len(anonymous) == 4
    assert "nested" in by_id[1]["error"]
    assert "'op' must be a string" in by_id[3]["error"]
    assert len(by_id[4]["data"]["events"]) == 100  # no limit: the default, not everything
    assert len(by_id[5]["data"]["events"]) == 1000  # capped
    assert "'limit' must be a positive integer" in by_id[6]["error"]
    assert "'wait' must be a number from 0 to 60" in by_id[7]["error"]
    assert "'limit' must be a positive integer" in by_id[8]["error"]
    assert by_id[9]["ok"] is True
    _restart_clean(node, worker)


def test_remote_flood_is_bounded(node):
    """A client that writes 100 requests of 1 MB and reads no answer: the session stops
    reading (the writer is held back) and stays small; then every request is answered."""
    worker = node.start_worker()
    _fill_audit(node, 200)
    proc = subprocess.Popen([*GALAXY_CMD, "remote"], env=node.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        json.loads(proc.stdout.readline())
        pad = "x" * 1_000_000
        written = [0]

        def writer() -> None:
            for i in range(100):
                proc.stdin.write(json.dumps({"id": i, "op": "audit", "limit": 50, "pad": pad}).encode() + b"\n")
                written[0] = i + 1
            proc.stdin.close()

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        peak, last, since = 0.0, -1, time.monotonic()
        while time.monotonic() - since < 3:  # until the writer has made no progress for 3 s
            peak = max(peak, _rss_mb(proc.pid))
            if written[0] != last:
                last, since = written[0], time.monotonic()
            time.sleep(0.05)
        assert written[0] < 30, "the session kept reading while its answers were blocked"
        assert peak < 120, f"session RSS {peak:.0f} MB"
        ids = set()
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["type"] == "result":
                assert msg["ok"] is True
                ids.add(msg["id"])
        assert ids == set(range(100))
        t.join(30)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _restart_clean(node, worker)


# -- backpressure -------------------------------------------------------------------

def test_full_queue_refuses_as_busy_and_backlog_alerts(node):
    node.write_config(worker={"max_queued": 4}, health={"backlog_max": 2, "opencode": False})
    worker = node.start_worker()
    blocker = node.submit("30", "--executor", "sleep")
    wait_for(lambda: (node.spool / "processing" / f"{blocker}.json").exists(), what="the runner busy")
    queued = [node.submit(f"q{i}") for i in range(4)]
    proc = node.galaxy("order", "submit", "--json", "one too many")
    assert proc.returncode == 5
    assert "testnode is busy: 4 orders queued (limit 4)" in proc.stderr and "try again later" in proc.stderr
    assert len(list((node.spool / "orders").glob("*.json"))) == 4  # nothing was added
    refused = [e for e in node.audit_events() if e["type"] == "order_refused"]
    assert len(refused) == 1 and refused[0]["queued"] == 4
    assert node.galaxy("order", "submit", "--id", queued[0], "q0").returncode == 0  # a resend is still fine
    # the backlog check flags it, and alerts once
    code, out = node.galaxy("health").returncode, node.galaxy("health").stdout
    assert code == 1 and "✗ Queue backlog HIGH (4 waiting)" in out
    assert [a["kind"] for a in node.outbox()] == ["health_failing"]
    assert "Queue backlog HIGH" in node.outbox()[0]["message"]
    # over the remote protocol the refusal is marked busy, with the figures
    reqs = json.dumps({"id": 1, "op": "submit", "order": {"payload": "via remote"}}).encode() + b"\n"
    out = subprocess.run([*GALAXY_CMD, "remote"], env=node.env, input=reqs, capture_output=True, timeout=30,
                         check=False).stdout
    answer = json.loads(out.splitlines()[1])
    assert answer["ok"] is False and answer["busy"] is True and answer["queued"] == 4 and answer["limit"] == 4
    # once the queue drains, orders are taken again and the health recovers
    node.galaxy("order", "cancel", blocker, check=True)
    for oid in queued:
        assert node.wait_done(oid)["state"] == "done"
    assert node.galaxy("health").returncode == 0
    assert "health_recovered" in [a["kind"] for a in node.outbox()]
    assert node.wait_done(node.submit("taken again"))["state"] == "done"
    assert worker.poll() is None


def test_recovery_completes_a_final_audit_event_lost_to_a_crash(node):
    """A worker killed between an order's answer and its final audit event: the next one adds the event."""
    oid = node.submit("answered, then the worker died", "--id", "half-done")
    (node.spool / "orders" / f"{oid}.json").rename(node.spool / "processing" / f"{oid}.json")  # claimed
    sidecar = {"id": oid, "state": "done", "host": "testnode", "executor": "echo", "exit_code": 0,
               "error": None, "timings": {}}
    (node.spool / "responses" / f"{oid}.md").write_text("# answer\n")
    (node.spool / "responses" / f"{oid}.json").write_text(json.dumps(sidecar))
    node.start_worker()
    wait_for((node.spool / "archive" / f"{oid}.json").exists, what="recovered to the archive")
    done = [e for e in node.audit_events(oid) if e["type"] == "order_done"]
    assert len(done) == 1 and done[0]["recovered"] is True
    assert node.sidecar(oid)["state"] == "done"  # the answer is kept as it was


def test_recovery_records_the_delivery_a_crash_left_out(node):
    """A worker killed between its claim and the order_delivered event: the life cycle is completed."""
    oid = node.submit("claimed, then the worker died", "--id", "half-claimed")
    (node.spool / "orders" / f"{oid}.json").rename(node.spool / "processing" / f"{oid}.json")
    node.start_worker()
    assert node.wait_done(oid)["state"] == "interrupted"
    assert node.lifecycle(oid) == ["order_received", "order_queued", "order_delivered", "order_interrupted"]
    assert next(e for e in node.audit_events(oid) if e["type"] == "order_delivered")["recovered"] is True
