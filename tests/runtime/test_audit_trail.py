"""The audit trail: real files, real processes, the real CLI."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import multiprocessing
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from galaxy_fleet import audit
from galaxy_fleet.audit import AuditError, AuditLog, chain, segments

SRC = Path(audit.__file__).resolve().parents[1]
TS_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def write_lines(path: Path, rows: list[bytes]) -> None:
    path.write_bytes(b"".join(r + b"\n" for r in rows))


def fill(path: Path, n: int, **kw) -> list[dict]:
    log = AuditLog(path, kw.pop("host", "web1"), durable=False, **kw)
    try:
        return [log.append("order_running", message=f"event {i}", order_id=f"o{i}", i=i) for i in range(n)]
    finally:
        log.close()


def cli(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.audit", *args], capture_output=True,
                          text=True, env=env, timeout=60)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


# ------------------------------------------------------------ format, append --

def test_append_writes_canonical_hash_chained_lines(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1")
    first = log.append("order_received", message="fix the test", order_id="o1", user="alice",
                       executor="opencode", payload={"b": 1, "a": "é"})
    second = log.append("order_running", severity="debug", order_id="o1")
    log.close()

    raw = lines(path)
    assert len(raw) == 2
    assert list(first) == ["ts", "seq", "host", "type", "severity", "order_id", "user", "message",
                           "executor", "log_id", "payload", "prev", "hash"]
    assert re.fullmatch(r"[0-9a-f]{32}", first["log_id"]) and "log_id" not in second
    assert json.loads(raw[0]) == first and json.loads(raw[1]) == second
    assert TS_RE.match(first["ts"])
    assert (first["seq"], second["seq"]) == (1, 2)
    assert first["host"] == "web1" and first["severity"] == "info" and second["user"] is None
    assert first["prev"] is None and second["prev"] == first["hash"]
    # canonical: ASCII, no spaces, nested keys sorted; hash = sha256 of the event without "hash"
    assert raw[0].isascii() and b'"payload":{"a":"\\u00e9","b":1}' in raw[0]
    body = dict(first)
    del body["hash"]
    canonical = json.dumps(body, separators=(",", ":"), ensure_ascii=True).encode()
    assert raw[0] == canonical[:-1] + b',"hash":"' + first["hash"].encode() + b'"}'
    assert hashlib.sha256(canonical).hexdigest() == first["hash"]


def test_append_rejects_bad_events_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", durable=False)
    log.append("ok")
    bad_calls = [
        lambda: log.append("x", severity="fatal"),
        lambda: log.append(""),
        lambda: log.append("x", order_id=42),
        lambda: log.append("x", seq=7),
        lambda: log.append("x", hash="forged"),
        lambda: log.append("x", ratio=float("nan")),
    ]
    for call in bad_calls:
        with pytest.raises(AuditError):
            call()
    event = log.append("after", message="x" * (audit.MAX_MESSAGE + 50), weird=object())
    log.close()
    assert event["seq"] == 2 and event["message"].endswith("[truncated]")
    assert event["weird"].startswith("<object object")
    assert [json.loads(x)["type"] for x in lines(path)] == ["ok", "after"]
    assert audit.verify(path).ok


# ------------------------------------------------------------------- query --

def test_query_filters_limit_and_ordering(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    web1, web2 = AuditLog(path, "web1", durable=False), AuditLog(path, "web2", durable=False)
    severities = ["info", "debug", "warning", "error", "info", "critical"]
    for i in range(120):
        log = web1 if i % 2 == 0 else web2
        log.append("order_failed" if i % 10 == 3 else "order_running", severity=severities[i % 6],
                   order_id=f"o{i % 7}", user="alice" if i % 4 == 0 else "bob", message=f"m{i}")
    web1.close()
    web2.close()
    everything = audit.query(path, limit=None)
    assert [e["seq"] for e in everything] == list(range(1, 121))

    newest = audit.query(path)  # default limit 20
    assert [e["seq"] for e in newest] == list(range(101, 121))

    errors = audit.query(path, severity="error", limit=5)
    all_errors = [e for e in everything if e["severity"] == "error"]
    assert errors == all_errors[-5:]

    def check(expected: list[dict], **kw: object) -> None:
        got = audit.query(path, limit=None, **kw)
        assert got == expected, kw
        assert got, kw

    check([e for e in everything if e["type"] == "order_failed"], type="order_failed")
    check([e for e in everything if e["order_id"] == "o3"], order_id="o3")
    check([e for e in everything if e["host"] == "web2"], host="web2")
    check([e for e in everything if e["user"] == "alice"], user="alice")
    check([e for e in everything if e["severity"] in ("error", "critical")], severity="error+")
    check([e for e in everything if e["severity"] in ("debug", "critical")], severity="debug,critical")
    check([e for e in everything if e["host"] == "web1" and e["severity"] == "warning"
           and e["order_id"] == "o2"], host="web1", severity="warning", order_id="o2")
    assert audit.query(path, type="no_such_type") == []
    assert audit.query(path, limit=0) == []
    with pytest.raises(AuditError):
        audit.query(path, severity="loud")


def test_query_prefilter_has_no_false_positives(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", durable=False)
    log.append("decoy", message='"severity":"error"', nested={"severity": "error", "type": "x"})
    log.append("decoy2", details='{"severity":"error"}')
    real = log.append("real", severity="error")
    log.close()
    assert audit.query(path, severity="error") == [real]
    assert audit.query(path, type="x") == []


def test_query_time_window(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", durable=False)
    events = []
    for i in range(6):
        events.append(log.append("tick", i=i))
        time.sleep(0.005)  # distinct milliseconds
    log.close()
    since, until = events[2]["ts"], events[4]["ts"]
    assert audit.query(path, since=since, limit=None) == events[2:]
    assert audit.query(path, until=until, limit=None) == events[:4]
    assert audit.query(path, since=since, until=until, limit=None) == events[2:4]
    assert audit.query(path, since="1h", limit=None) == events
    assert audit.query(path, since="2999-01-01", limit=None) == []
    assert audit.parse_time("2026-11-28T21:30+02:00") == "2026-11-28T19:30:00.000Z"
    assert audit.parse_time("2026-11-28") == "2026-11-28T00:00:00.000Z"
    with pytest.raises(AuditError):
        audit.parse_time("yesterday-ish")


def test_cursor_pages_forward_without_gaps(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 57)
    cursor, seen = 0, []
    while True:
        page = audit.query(path, after=cursor, limit=10)
        if not page:
            break
        assert len(page) <= 10
        seen += [e["seq"] for e in page]
        cursor = page[-1]["seq"]
    assert seen == list(range(1, 58))
    assert [e["seq"] for e in audit.query(path, after=50, limit=None)] == list(range(51, 58))
    assert audit.query(path, after=57) == []
    assert [e["order_id"] for e in audit.query(path, after=20, order_id="o33", limit=None)] == ["o33"]
    with pytest.raises(AuditError):
        audit.query(path, after="abc")


# ------------------------------------------------------------- concurrency --

def _writer_process(path: str, name: str, n: int, start: "multiprocessing.synchronize.Event") -> None:
    start.wait()
    log = AuditLog(Path(path), name, rotate_bytes=64 * 1024)  # durable, and rotating meanwhile
    for i in range(n):
        log.append("order_running", message=f"{name} {i}", writer=name, i=i)
    log.close()


def test_concurrent_appends_from_processes_and_threads(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer_process, args=(str(path), f"p{k}", 300, start)) for k in range(4)]
    for p in procs:
        p.start()
    shared = AuditLog(path, "threads", rotate_bytes=64 * 1024, durable=False)
    errors: list[BaseException] = []

    def thread_writer(k: int) -> None:
        try:
            for i in range(150):
                shared.append("order_running", writer=f"t{k}", i=i)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread_writer, args=(k,)) for k in range(3)]
    start.set()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    shared.close()
    assert not errors

    report = audit.verify(path)
    assert report.ok, report.broken
    events = audit.query(path, limit=None)
    assert report.count == len(events) == events[-1]["seq"]
    writes = [(e["writer"], e["i"]) for e in events if e["type"] == "order_running"]
    expected = {(f"p{k}", i) for k in range(4) for i in range(300)} | {(f"t{k}", i) for k in range(3)
                                                                       for i in range(150)}
    assert len(writes) == len(expected) and set(writes) == expected  # nothing lost, nothing twice
    assert report.segments >= 2  # the writers rotated while racing
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


def test_forked_child_reopens_instead_of_sharing_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", durable=False)
    log.append("parent")
    ctx = multiprocessing.get_context("fork")

    def child() -> None:
        for i in range(200):
            log.append("child", i=i)

    procs = [ctx.Process(target=child) for _ in range(2)]
    for p in procs:
        p.start()
    for i in range(200):
        log.append("parent", i=i)
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    log.close()
    report = audit.verify(path)
    assert report.ok, report.broken
    assert report.count == 601


# ------------------------------------------------------------------ verify --

def test_verify_ok_and_empty(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert audit.verify(path).ok and audit.verify(path).count == 0
    fill(path, 30)
    report = audit.verify(path)
    assert (report.ok, report.count, report.first_seq, report.last_seq, report.broken) == (True, 30, 1, 30, None)


def test_verify_catches_an_edited_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 20)
    rows = lines(path)
    rows[11] = rows[11].replace(b"event 11", b"event 99")
    write_lines(path, rows)
    report = audit.verify(path)
    assert not report.ok
    assert report.count == 11
    assert report.broken["segment"] == "audit.jsonl"
    assert (report.broken["line"], report.broken["seq"], report.broken["reason"]) == (12, 12, "edited")


def test_verify_catches_an_edited_and_rehashed_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 20)
    rows = lines(path)
    event = json.loads(rows[7])
    event["message"] = "nothing happened here"
    del event["hash"]
    body = json.dumps(event, separators=(",", ":")).encode()
    rows[7] = body[:-1] + b',"hash":"' + hashlib.sha256(body).hexdigest().encode() + b'"}'
    write_lines(path, rows)
    broken = audit.verify(path).broken
    assert (broken["line"], broken["seq"], broken["reason"]) == (8, 8, "edited")
    assert "re-hashed" in broken["detail"]


def test_verify_catches_a_deleted_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 20)
    rows = lines(path)
    del rows[5]
    write_lines(path, rows)
    report = audit.verify(path)
    assert (report.broken["line"], report.broken["seq"], report.broken["reason"]) == (6, 7, "deleted")
    assert report.count == 5

    fill(tmp_path / "head.jsonl", 5)
    rows = lines(tmp_path / "head.jsonl")
    write_lines(tmp_path / "head.jsonl", rows[1:])  # the first event removed
    broken = audit.verify(tmp_path / "head.jsonl").broken
    assert (broken["line"], broken["seq"], broken["reason"]) == (1, 2, "deleted")


def test_verify_catches_a_reordered_pair_and_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 20)
    rows = lines(path)
    rows[9], rows[10] = rows[10], rows[9]
    write_lines(path, rows)
    broken = audit.verify(path).broken
    assert (broken["line"], broken["seq"], broken["reason"]) == (10, 11, "reordered")

    dup = tmp_path / "dup.jsonl"
    fill(dup, 10)
    rows = lines(dup)
    rows.insert(4, rows[3])
    write_lines(dup, rows)
    broken = audit.verify(dup).broken
    assert (broken["line"], broken["seq"], broken["reason"]) == (5, 4, "duplicated")


def test_torn_last_line_is_reported_as_torn_and_repaired_by_the_next_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = fill(path, 10)
    whole = path.read_bytes()
    next_line = chain._seal(chain._fields(chain._now(), 11, "web1", "order_running", "info", None, None,
                                          "half written", {}), events[-1]["hash"])[0]
    with open(path, "ab") as f:  # what a writer killed in the middle of write() leaves
        f.write(next_line[:37])

    report = audit.verify(path)
    assert not report.ok
    assert report.broken["reason"] == "torn" and report.broken["line"] == 11 and report.broken["seq"] == 11
    assert report.count == 10
    # readers skip the partial line
    assert audit.query(path, limit=None) == events
    assert audit.query(path, limit=3) == events[-3:]
    assert audit.query(path, after=8, limit=None) == events[-2:]
    proc = cli("--file", str(path), "--verify")
    assert proc.returncode == 1 and "torn" in proc.stdout

    log = AuditLog(path, "web1")
    new = log.append("order_finished", order_id="o10")
    log.close()
    assert path.read_bytes().startswith(whole)
    repaired = audit.query(path, limit=None)
    assert [e["type"] for e in repaired[-2:]] == ["audit_repaired", "order_finished"]
    assert repaired[-2]["severity"] == "warning" and repaired[-2]["bytes"] == 37
    assert repaired[-2]["sha256"] == hashlib.sha256(next_line[:37]).hexdigest()
    assert new["seq"] == 12 and new["prev"] == repaired[-2]["hash"]
    assert audit.verify(path).ok


def _append_with_file_size_limit(path: str, limit: int) -> str:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    log = AuditLog(Path(path), "web1")
    try:
        log.append("order_finished", message="x" * 2000)
    except OSError as exc:
        return f"OSError {exc.errno}"
    return "written"


def test_failed_write_leaves_no_partial_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 5)
    size = path.stat().st_size
    # A real short write: the kernel stops the write at the file size limit (EFBIG),
    # as it would when the disk fills up.
    with multiprocessing.get_context("fork").Pool(1) as pool:
        outcome = pool.apply(_append_with_file_size_limit, (str(path), size + 300))
    assert outcome.startswith("OSError")
    assert path.stat().st_size == size
    assert audit.verify(path).ok
    assert fill(path, 1)[0]["seq"] == 6


# ---------------------------------------------------------------- rotation --

def test_rotation_into_compressed_segments(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", rotate_bytes=4096, durable=False)
    written = [log.append("order_failed" if i % 25 == 0 else "order_running",
                          severity="error" if i % 25 == 0 else "info", order_id=f"o{i}", i=i)
               for i in range(300)]
    log.close()  # waits for the background compression

    segs = sorted(p.name for p in tmp_path.glob("audit.jsonl.*") if not p.name.endswith(".lock"))
    assert len(segs) >= 5 and all(re.fullmatch(r"audit\.jsonl\.\d{12}-\d{12}\.gz", s) for s in segs)
    first_seg = gzip.decompress((tmp_path / segs[0]).read_bytes()).splitlines()
    assert json.loads(first_seg[0])["seq"] == 1
    assert (tmp_path / "audit.jsonl").stat().st_size <= 4096 + 1024

    everything = audit.query(path, limit=None)
    assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
    rotations = [e for e in everything if e["type"] == "audit_rotated"]
    assert len(rotations) == len(segs)
    assert [e for e in everything if e["type"] != "audit_rotated"] == written
    errors = audit.query(path, severity="error", limit=None)
    assert [e["i"] for e in errors] == list(range(0, 300, 25))  # found in every segment
    assert audit.query(path, severity="error", limit=3) == errors[-3:]
    assert audit.query(path, order_id="o3") == [written[3]]  # in the oldest segment
    page = audit.query(path, after=10, limit=5)
    assert [e["seq"] for e in page] == [11, 12, 13, 14, 15]

    report = audit.verify(path)
    assert report.ok and report.count == len(everything) and report.segments == len(segs)

    # The chain runs across segments: tampering inside a compressed one is caught there.
    victim = tmp_path / segs[1]
    rows = gzip.decompress(victim.read_bytes()).splitlines()
    rows[2] = rows[2].replace(b'"order_running"', b'"order_runninG"')
    victim.write_bytes(gzip.compress(b"".join(r + b"\n" for r in rows)))
    broken = audit.verify(path).broken
    assert (broken["segment"], broken["line"], broken["reason"]) == (segs[1], 3, "edited")

    # A whole segment removed: the next one no longer links to what precedes it.
    victim.unlink()
    broken = audit.verify(path).broken
    assert broken["segment"] == segs[2] and broken["line"] == 1 and broken["reason"] == "deleted"


def test_rotation_keeps_working_after_an_interrupted_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    events = fill(path, 12)
    # A rotator that died right after moving the live file away (before the new one appeared):
    os.rename(path, tmp_path / segments._segment_name(str(path), 1, 12))
    log = AuditLog(path, "web1")
    new = log.append("order_received")
    log.close()
    assert new["seq"] == 14 and new["type"] == "order_received"
    everything = audit.query(path, limit=None)
    assert everything[:12] == events
    assert everything[12]["type"] == "audit_rotated" and everything[12]["resumed"] is True
    assert everything[12]["prev"] == events[-1]["hash"]
    assert audit.verify(path).ok
    assert audit.compress_segments(path) and audit.verify(path).ok


def test_log_identity_is_made_with_the_log_and_survives_rotation(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    assert audit.log_identity(path) is None  # no log yet
    events = fill(path, 200, rotate_bytes=4096)
    log_id = events[0]["log_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", log_id) and not any("log_id" in e for e in events[1:]
                                                              if e["type"] != "audit_rotated")
    rotated = audit.query(path, type="audit_rotated", limit=None)
    assert len(rotated) > 3 and {e["log_id"] for e in rotated} == {log_id}
    assert audit.log_identity(path) == log_id
    audit.compress_segments(path)
    for seg in sorted(tmp_path.glob("audit.jsonl.*.gz"))[:2]:
        seg.unlink()  # retention removes the oldest segments, with the log's first event
    assert audit.log_identity(path) == log_id and audit.verify(path).ok
    # a live file lost in an interrupted rotation: the new one opens with the same identity
    last = sorted(tmp_path.glob("audit.jsonl.*.gz"))[-1]
    os.rename(path, tmp_path / f"{path.name}.{rotated[-1]['seq']:012d}-{newest(path):012d}")
    assert audit.log_identity(path) == log_id  # read from the newest segment
    log = AuditLog(path, "web1")
    log.append("order_received")
    log.close()
    assert audit.query(path, type="audit_rotated", limit=1)[0]["log_id"] == log_id and last.exists()
    assert audit.log_identity(path) == log_id and audit.verify(path).ok
    # another log is another identity; callers cannot forge one
    other = tmp_path / "other.jsonl"
    with AuditLog(other, "web1") as log2:
        assert log2.append("x")["log_id"] != log_id
        with pytest.raises(AuditError, match="log_id"):
            log2.append("y", log_id=log_id)


def newest(path: Path) -> int:
    return audit.query(path, limit=1)[-1]["seq"]


def test_old_segments_removed_by_retention_still_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 200, rotate_bytes=4096)
    segs = sorted(tmp_path.glob("audit.jsonl.*.gz"))
    for seg in segs[:2]:
        seg.unlink()  # what a retention policy does
    report = audit.verify(path)
    assert report.ok and report.first_seq > 1


# --------------------------------------------------------------------- CLI --

def _cost_log(path: Path) -> None:
    a, b = AuditLog(path, "web1", durable=False), AuditLog(path, "gpu1", durable=False)
    a.append("order_finished", order_id="o1", tokens_in=1000, tokens_out=200, cost=0.25)
    a.append("order_done", order_id="o2", tokens_in=500, tokens_out=100, cost=0.5)
    a.append("order_progress", order_id="o2", tokens_in=7777, cost=9.0)  # not a final event
    b.append("order_finished", order_id="o3", tokens_in=10, tokens_out=1, cost=1.0)
    b.append("order_failed", severity="error", order_id="o4", message="boom\x1b[31m\nsecond line",
             tokens_in=90, tokens_out=9, cost=0.125)
    a.close()
    b.close()


def test_cli_text_json_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _cost_log(path)
    text = cli("--file", str(path), check=True).stdout.splitlines()
    assert len(text) == 5
    assert text[-1].split()[1:5] == ["5", "error", "order_failed", "o4"]
    assert "\x1b" not in text[-1] and "boom\\x1b[31m\\nsecond line" in text[-1]  # one line, no escapes
    out = cli("--file", str(path), "--json", "--severity", "error", check=True).stdout.splitlines()
    assert [json.loads(x)["order_id"] for x in out] == ["o4"]
    out = cli("--file", str(path), "--json", "--limit", "2", "--host", "web1", check=True).stdout
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [2, 3]
    out = cli("--file", str(path), "--json", "--after", "2", "--limit", "1", check=True).stdout
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [3]
    out = cli("--file", str(path), "--json", "--order", "o2", "--since", "1h", "--until", "now",
              check=True).stdout
    assert [json.loads(x)["seq"] for x in out.splitlines()] == [2, 3]
    assert cli("--file", str(path), "--since", "2999-01-01", check=True).stdout == ""
    missing = cli("--file", str(tmp_path / "none.jsonl"))
    assert missing.returncode == 0 and missing.stdout == "" and "no audit log" in missing.stderr


def test_cli_sum_cost(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    _cost_log(path)
    rows = [json.loads(x) for x in cli("--file", str(path), "--sum-cost", "node", "--json",
                                       check=True).stdout.splitlines()]
    assert rows == [{"node": "gpu1", "orders": 2, "tokens_in": 100, "tokens_out": 10, "cost": 1.125},
                    {"node": "web1", "orders": 2, "tokens_in": 1500, "tokens_out": 300, "cost": 0.75}]
    text = cli("--file", str(path), "--sum-cost", "day", check=True).stdout.splitlines()
    assert text[0].split() == ["day", "orders", "tokens_in", "tokens_out", "cost"]
    assert text[-1].split() == ["TOTAL", "4", "1600", "310", "1.8750"]
    assert re.match(r"\d{4}-\d\d-\d\d +4 +1600 +310 +1\.8750$", text[1])
    only_web1 = cli("--file", str(path), "--sum-cost", "node", "--host", "web1", "--json", check=True).stdout
    assert [json.loads(x)["node"] for x in only_web1.splitlines()] == ["web1"]


def test_cli_verify(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 200, rotate_bytes=4096)
    ok = cli("--file", str(path), "--verify")
    assert ok.returncode == 0 and ok.stdout.startswith("OK: ") and " 2" in ok.stdout
    assert json.loads(cli("--file", str(path), "--verify", "--json").stdout)["ok"] is True
    rows = lines(path)
    del rows[1]
    write_lines(path, rows)
    bad = cli("--file", str(path), "--verify")
    assert bad.returncode == 1
    assert re.match(r"BROKEN: audit\.jsonl line 2 \(seq \d+\): deleted: ", bad.stdout)
    report = json.loads(cli("--file", str(path), "--verify", "--json").stdout)
    assert report["ok"] is False and report["broken"]["reason"] == "deleted"


@pytest.mark.parametrize("args, message", [
    (["--limit", "many"], "non-negative integer"),
    (["--limit", "-1"], "non-negative integer"),
    (["--since", "last tuesday"], "cannot read time"),
    (["--until", "2026-13-45"], "cannot read time"),
    (["--severity", "loud"], "unknown severity"),
    (["--after", "x1"], "non-negative integer"),
    (["--sum-cost", "week"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_cli_bad_flags_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    proc = cli("--file", str(tmp_path / "audit.jsonl"), *args)
    assert proc.returncode == 2
    assert message in proc.stderr and proc.stdout == ""


def test_run_uses_the_configured_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from galaxy_fleet import config as config_mod

    cfg = config_mod.from_dict({"spool_dir": str(tmp_path)})
    fill(cfg.audit.path, 3)
    parser = argparse.ArgumentParser()
    audit.add_arguments(parser)
    assert audit.run(parser.parse_args(["--json"]), cfg) == 0
    assert [json.loads(x)["seq"] for x in capsys.readouterr().out.splitlines()] == [1, 2, 3]
    # and through $GALAXY_CONFIG when run() is given no config
    conf = tmp_path / "config.yml"
    conf.write_text(f"spool_dir: {tmp_path}\n")
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.audit", "--limit", "1"], capture_output=True,
                          text=True, env=dict(os.environ, GALAXY_CONFIG=str(conf), PYTHONPATH=str(SRC)))
    assert proc.returncode == 0 and proc.stdout.split()[1] == "3"
    conf.write_text("audit: [not, a, mapping]\n")
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.audit"], capture_output=True, text=True,
                          env=dict(os.environ, GALAXY_CONFIG=str(conf), PYTHONPATH=str(SRC)))
    assert proc.returncode == 2 and "audit: expected a mapping" in proc.stderr


def _append_forever(path: str, rotate_bytes: int, durable: bool) -> None:
    log = AuditLog(Path(path), "web1", rotate_bytes=rotate_bytes, durable=durable)
    i = 0
    while True:
        log.append("order_progress", message="x" * (i % 300), i=i)
        i += 1


def test_readers_racing_rotating_writers_see_a_contiguous_history(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    fill(path, 1)
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_append_forever, args=(str(path), 8192, False)) for _ in range(2)]
    for w in writers:
        w.start()
    try:
        deadline = time.monotonic() + 3
        rounds = 0
        while time.monotonic() < deadline:
            seqs = [e["seq"] for e in audit.query(path, limit=None)]
            assert seqs == list(range(1, len(seqs) + 1))  # no gap, no duplicate
            newest = audit.query(path, limit=5)
            assert [e["seq"] for e in newest] == list(range(newest[0]["seq"], newest[0]["seq"] + len(newest)))
            report = audit.verify(path)
            assert report.ok, report.broken
            rounds += 1
        assert rounds >= 3 and len(list(tmp_path.glob("audit.jsonl.*-*"))) >= 3
    finally:
        for w in writers:
            w.kill()
            w.join()


def test_writers_killed_mid_append_never_break_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    ctx = multiprocessing.get_context("fork")
    for round_ in range(6):
        writers = [ctx.Process(target=_append_forever, args=(str(path), 32768, round_ % 2 == 0))
                   for _ in range(2)]
        for w in writers:
            w.start()
        time.sleep(0.15 + 0.05 * round_)
        for w in writers:
            os.kill(w.pid, signal.SIGKILL)
        for w in writers:
            w.join()
        report = audit.verify(path)
        # a write cut short may leave a torn last line; nothing else may look broken
        assert report.ok or report.broken["reason"] == "torn", report.broken
        assert audit.query(path, limit=1)  # readers work either way
        fill(path, 1)  # the next writer repairs whatever was torn
        report = audit.verify(path)
        assert report.ok, report.broken
    assert report.count > 100


def test_a_failing_rotation_never_fails_the_append(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    blocker = tmp_path / ".audit.jsonl.rotate.tmp"
    blocker.mkdir()  # the new live file cannot be written: EISDIR
    log = AuditLog(path, "web1", rotate_bytes=4096, durable=False)
    with caplog.at_level("WARNING", logger="galaxy.audit"):
        written = [log.append("order_running", i=i) for i in range(40)]
    assert caplog.text.count("cannot rotate") == 1  # then it waits before retrying
    assert not list(tmp_path.glob("audit.jsonl.*-*")) and path.stat().st_size > 4096
    blocker.rmdir()
    written.append(log.append("order_running", i=40))
    assert not list(tmp_path.glob("audit.jsonl.*-*"))  # still waiting
    log.rotate_retry_s = 0.0
    log._rotate_after = 0.0
    written.append(log.append("order_running", i=41))  # rotates now
    log.close()
    assert len(list(tmp_path.glob("audit.jsonl.*-*.gz"))) == 1
    assert [e for e in audit.query(path, limit=None) if e["type"] != "audit_rotated"] == written
    assert audit.verify(path).ok


def test_a_listing_that_misses_a_segment_being_compressed_is_taken_again(tmp_path: Path, monkeypatch) -> None:
    """readdir promises nothing about names renamed or removed while it lists: during a
    compression (S.gz renamed in, then S removed) a listing can show neither. Such a
    listing is not believed: the query still sees every event."""
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "web1", rotate_bytes=2048)
    for i in range(60):
        log.append("order_progress", message="y" * 100, i=i)
    log.close()
    audit.compress_segments(path)
    names = sorted(os.listdir(tmp_path))
    victim = next(n for n in names if n.endswith(".gz") and not n.startswith(f"{path.name}.000000000001-"))
    real_listdir = os.listdir
    calls = {"n": 0}

    def racy_listdir(directory: str = ".") -> list[str]:
        calls["n"] += 1
        found = real_listdir(directory)
        return [n for n in found if n != victim] if calls["n"] == 1 else found

    monkeypatch.setattr(segments.os, "listdir", racy_listdir)
    seqs = [e["seq"] for e in audit.query(path, limit=None)]
    assert seqs == list(range(1, len(seqs) + 1)) and calls["n"] >= 2
    calls["n"] = 0
    assert audit.verify(path).ok
