#!/usr/bin/env python3
"""Benchmark: `galaxy audit` queries on a 1,000,000-event log against jq.

Generates a realistic, correctly hash-chained audit log (mixed types,
severities and hosts; errors rare and spread through the whole file, so the
newest 20 are not all at the end) in a temporary directory, then times, as
subprocesses of the real CLI entry (`python -m galaxy_fleet.audit`), median of
several runs:

  * --severity error --limit 20     vs  jq -c 'select(.severity=="error")' | tail -20
  * --type order_cancelled --limit 20 vs jq -c 'select(.type=="order_cancelled")' | tail -20
  * --verify over the whole log (no jq equivalent: figure only)
  * appends per second (durable and not) for reference

Targets: a query under 0.1 s and at least 30x faster than jq. The file is
deleted at the end. Usage: bench/bench_audit.py [--events N] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "files" / "galaxy" / "src"))  # also without `make deps`

from galaxy_fleet import audit  # noqa: E402
from galaxy_fleet.audit import chain  # noqa: E402

HOSTS = ["web1", "web2", "db1", "build1", "gpu1", "ctl1"]
USERS = ["alice", "bob", "carol", None]
EXECUTORS = ["opencode", "command", "shell"]
# (type, weight, severity): life-cycle transitions dominate, as on a real node
TYPES = [
    ("order_received", 14, "info"), ("order_queued", 14, "info"), ("order_delivered", 14, "info"),
    ("order_running", 14, "info"), ("order_progress", 20, "debug"), ("order_finished", 12, "info"),
    ("order_failed", 0.5, "warning"), ("order_cancelled", 0.4, "info"), ("order_timed_out", 0.2, "warning"),
    ("order_interrupted", 0.05, "warning"), ("health_check", 8, "info"), ("alert_queued", 0.5, "warning"),
    ("worker_started", 0.05, "info"), ("quarantined", 0.1, "warning"), ("session_reused", 2, "debug"),
]
ERROR_RATE = 0.001  # 0.1 % of events are errors, anywhere in the file
ERROR_TYPES = ["order_failed", "executor_error", "health_check", "quarantined", "spool_full"]


def generate(path: Path, events: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    names = [t for t, _w, _s in TYPES]
    weights = [w for _t, w, _s in TYPES]
    severity_of = {t: s for t, _w, s in TYPES}
    t0 = time.time() - 30 * 86400
    step = 30 * 86400 / events
    prev = None
    orders = [f"20261101T000000.{i:06d}Z-{rnd.getrandbits(32):08x}" for i in range(2000)]
    kinds = rnd.choices(names, weights, k=events)
    with open(path, "wb") as f:
        buf = []
        for seq in range(1, events + 1):
            t = t0 + seq * step
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % int((t % 1) * 1000)
            kind = kinds[seq - 1]
            severity = severity_of[kind]
            order = orders[seq % len(orders)] if kind.startswith("order_") or kind == "quarantined" else None
            data: dict = {}
            message = ""
            if rnd.random() < ERROR_RATE:
                kind = rnd.choice(ERROR_TYPES)
                severity = "error" if rnd.random() < 0.9 else "critical"
                message = rnd.choice(["executor exited with status 1: Traceback (most recent call last)",
                                      "no space left on device while writing the response",
                                      "opencode serve unreachable: connection refused",
                                      "order payload is not valid JSON: Expecting value: line 1"])
                data = {"error": message.split(":")[0]}
            elif kind == "order_finished":
                tin, tout = rnd.randint(500, 40000), rnd.randint(50, 6000)
                data = {"duration": round(rnd.uniform(0.2, 600), 3), "exit_code": 0,
                        "executor": rnd.choice(EXECUTORS), "tokens_in": tin, "tokens_out": tout,
                        "cost": round(tin * 3e-6 + tout * 1.5e-5, 6), "bytes_out": rnd.randint(10, 90000)}
                message = f"finished in {data['duration']}s"
            elif kind == "order_progress":
                message = rnd.choice(["reading files", "running tests", "editing src/app.py",
                                      "thinking", "git diff --stat"])
            elif kind == "order_received":
                data = {"from": "telegram", "command": rnd.choice(["/order", "/status", "/ask"])}
                message = rnd.choice(["fix the failing test", "what is using the disk?",
                                      "update the README with the new flags", "restart nginx and check logs"])
            elif kind == "health_check":
                data = {"check": rnd.choice(["disk", "opencode", "worker", "load"]), "ok": True,
                        "value": round(rnd.uniform(0, 100), 1)}
                message = f"{data['check']} ok"
            else:
                message = kind.replace("_", " ")
            line, prev = chain._seal(chain._fields(ts, seq, rnd.choice(HOSTS), kind, severity, order,
                                                   rnd.choice(USERS), message, data), prev)
            buf.append(line)
            if len(buf) >= 20000:
                f.write(b"".join(buf))
                buf.clear()
        f.write(b"".join(buf))


SRC = str(HERE.parent / "files" / "galaxy" / "src")
ENV = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))


def timed(cmd: list[str], runs: int, warmup: bool = True) -> tuple[float, bytes]:
    if warmup:  # page cache and bytecode cache, as on a node that has run it before
        subprocess.run(cmd, stdout=subprocess.DEVNULL, check=True, env=ENV)
    times, out = [], b""
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, env=ENV)
        times.append(time.perf_counter() - start)
        out = proc.stdout
    return statistics.median(times), out


def seqs(output: bytes) -> list[int]:
    import json

    return [json.loads(line)["seq"] for line in output.splitlines() if line.strip()]


def appends_per_second(directory: Path, durable: bool, n: int) -> float:
    log = audit.AuditLog(directory / f"append-{durable}.jsonl", "bench", durable=durable)
    start = time.perf_counter()
    for i in range(n):
        log.append("order_running", order_id=f"o{i}", message="running", executor="command")
    elapsed = time.perf_counter() - start
    log.close()
    return n / elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=7, help="runs per galaxy audit query (median)")
    ap.add_argument("--jq-runs", type=int, default=3, help="runs per jq query (median)")
    args = ap.parse_args()
    if not shutil.which("jq"):
        print("bench_audit: jq is not installed (scripts/apt-packages.txt lists it; run make host-deps)",
              file=sys.stderr)
        return 1
    py = sys.executable
    tmp = Path(tempfile.mkdtemp(prefix="galaxy-bench-audit-"))
    ok = True
    try:
        log = tmp / "audit.jsonl"
        start = time.perf_counter()
        generate(log, args.events)
        size = log.stat().st_size
        print(f"generated {args.events} events, {size / 1e6:.0f} MB, in {time.perf_counter() - start:.1f} s")
        n_err = sum(1 for line in open(log, "rb") if b'"severity":"error"' in line)
        print(f"  {n_err} error events spread through the file")

        # An installed node has bytecode for the package (pip compiles it); this
        # environment may set PYTHONDONTWRITEBYTECODE, so compile it here.
        import compileall

        compileall.compile_dir(os.path.join(SRC, "galaxy_fleet"), quiet=1)
        base, _ = timed([py, "-c", "pass"], args.runs)
        imports, _ = timed([py, "-c", "import argparse, galaxy_fleet.audit"], args.runs)
        print(f"python start-up alone: {base * 1000:.1f} ms; with the audit module and argparse imported:"
              f" {imports * 1000:.1f} ms")

        cli = [py, "-m", "galaxy_fleet.audit", "--file", str(log), "--json", "--limit", "20"]
        queries = [("--severity error --limit 20", ["--severity", "error"], ".severity==\"error\""),
                   ("--type order_cancelled --limit 20", ["--type", "order_cancelled"],
                    ".type==\"order_cancelled\"")]
        for label, flags, jq_filter in queries:
            ours, out = timed(cli + flags, args.runs)
            theirs, jq_out = timed(["bash", "-c", f"jq -c 'select({jq_filter})' '{log}' | tail -20"],
                                   args.jq_runs, warmup=False)
            same = seqs(out) == seqs(jq_out) and len(seqs(out)) == 20
            ratio = theirs / ours
            first = seqs(out)[0] if seqs(out) else None
            print(f"galaxy audit {label}: {ours * 1000:.1f} ms (median of {args.runs});"
                  f" jq: {theirs * 1000:.0f} ms (median of {args.jq_runs}); {ratio:.0f}x faster;"
                  f" oldest of the 20 at seq {first}; same events as jq: {'yes' if same else 'NO'}")
            target = ours < 0.1 and ratio >= 30
            print(f"  target (< 100 ms, >= 30x jq): {'met' if target else 'MISSED'}")
            ok = ok and same

        start = time.perf_counter()
        report = audit.verify(log)
        in_process = time.perf_counter() - start
        verify_cli, out = timed([py, "-m", "galaxy_fleet.audit", "--file", str(log), "--verify"], 1,
                                warmup=False)
        print(f"verify of {report.count} events: {verify_cli:.2f} s via the CLI, {in_process:.2f} s in-process;"
              f" {out.decode().strip()}")
        ok = ok and report.ok and report.count == args.events

        start = time.perf_counter()
        hits = audit.query(log, severity="error", limit=20)
        print(f"in-process query --severity error --limit 20 (no start-up): "
              f"{(time.perf_counter() - start) * 1000:.1f} ms, {len(hits)} events")

        print(f"appends: {appends_per_second(tmp, True, 2000):.0f}/s durable (fdatasync each),"
              f" {appends_per_second(tmp, False, 20000):.0f}/s without fsync (one process)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if not ok:
        print("bench_audit: results were wrong (see above)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
