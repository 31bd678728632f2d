#!/usr/bin/env python3
"""Benchmark: the dashboard under load, and the central audit query.

Builds a control-node store with the real schema (store.SCHEMA, through
``Store``) and realistic contents, fast, with executemany: 20 nodes with their
health reports, 50,000 orders over a week (a daily rhythm, mostly done, some
failed, timed out, cancelled, a few still running), 1,000,000 audit events
from the 20 nodes (each order's life cycle and progress, a health check per
node per minute with failing spells, worker starts) and the alerts they
raised. Then:

  * starts the real `galaxy dashboard` process on it (127.0.0.1, a free port)
    and runs `wrk -c 64 -d 10s --latency` against the trivial route /healthz
    and against /api/status in the same run, three rounds taking turns (the
    median round counts: other work on the host makes single runs noisy):
    requests/s and p99 of each, and the ratio (targets: /api/status p99
    < 50 ms and at least half the trivial route's throughput);
  * times the central audit query, ``Store.events(...)``, over the 1,000,000
    events with the filters of `galaxy audit` (target: each < 0.2 s);
  * times one uncached computation of the summary (what the 1 s cache saves);
  * saves a screenshot of the page over this store (headless Chromium) to
    artifacts/dashboard/dashboard-bench.png.

Usage: bench/bench_dashboard.py [--orders N] [--events N] [--nodes N] [--duration S]
       [--connections N] [--rounds N] [--no-screenshot] [--keep DIR] [--store PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "files" / "galaxy" / "src"))  # also without `make deps`

from galaxy_fleet.control.store import Store  # noqa: E402

DAY = 86400.0
USERS = ["alice", "bob", "carol", "dave", "erin"]
PAYLOADS = ["run the test suite", "deploy the docs", "why is the build red?", "summarise today's logs",
            "rotate the TLS certificates", "upgrade the python dependencies", "check disk usage",
            "restart the queue consumer", "fix the failing test in tests/test_api.py", "uptime"]
# final state, weight, event severity
OUTCOMES = [("done", 91.0, "info"), ("failed", 4.5, "warning"), ("timed_out", 1.5, "warning"),
            ("cancelled", 2.0, "info"), ("interrupted", 1.0, "warning")]


# -- the store ------------------------------------------------------------------------------
def iso(ts: float) -> str:
    ms = int(ts * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + ".%03dZ" % (ms % 1000)


def order_id(ts: float, rnd: random.Random) -> str:
    return time.strftime("%Y%m%dT%H%M%S", time.gmtime(ts)) + f".{int(ts * 1e6) % 1000000:06d}Z-{rnd.getrandbits(32):08x}"


def daily_rhythm(rnd: random.Random, start: float, end: float) -> float:
    """A moment in [start, end) with more orders in the working day (UTC)."""
    while True:
        t = rnd.uniform(start, end)
        hour = (t % DAY) / 3600
        if rnd.random() < 0.25 + 0.75 * max(0.0, math.sin((hour - 6) / 14 * math.pi)):
            return t


def health_report(name: str, now: float, rnd: random.Random, *, failing: str | None) -> dict[str, Any]:
    disk = rnd.uniform(18, 71) if failing != "disk" else 93.4
    checks = [
        {"name": "worker", "ok": True, "message": f"worker is running (pid {rnd.randint(900, 60000)}, heartbeat 2s ago)",
         "data": {"pid": rnd.randint(900, 60000), "heartbeat_age_s": round(rnd.uniform(0, 4), 1),
                  "running": [f"o{i}" for i in range(rnd.choice((0, 0, 0, 1)))], "queued": rnd.choice((0, 0, 1))}},
        {"name": "opencode", "ok": True, "message": "opencode serve is healthy (12 ms)",
         "data": {"url": "http://127.0.0.1:4096", "ms": round(rnd.uniform(3, 40), 1)}},
        {"name": "disk_spool", "ok": disk < 90, "message": f"Disk space {'OK' if disk < 90 else 'LOW'} for spool"
         f" ({disk:.0f}% used)", "data": {"path": "/var/lib/galaxy", "used_percent": round(disk, 1)}},
        {"name": "inodes_spool", "ok": True, "message": "Inodes OK for spool (3% used)",
         "data": {"path": "/var/lib/galaxy", "used_percent": 3.1}},
        {"name": "stuck", "ok": True, "message": "No orders stuck in processing", "data": {}},
        {"name": "backlog", "ok": True, "message": "Queue backlog OK (0 waiting)", "data": {"queued": 0}},
        {"name": "memory", "ok": True, "message": "Memory OK (2900 MB available)", "data": {"available_mb": 2900}},
    ]
    return {"host": name, "ts": iso(now - rnd.uniform(5, 60)), "healthy": all(c["ok"] for c in checks),
            "checks": checks}


def build_store(path: Path, *, nodes: int, orders: int, events: int, days: float, seed: int = 11) -> dict[str, Any]:
    rnd = random.Random(seed)
    now = time.time()
    start = now - days * DAY
    names = [f"node{i:02d}" for i in range(1, nodes + 1)]
    failing_now = names[12 % nodes]
    down_now = names[16 % nodes]
    Store(path).close()  # the real schema
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")

    # orders (and, per node, each order's audit events)
    per_node: dict[str, list[tuple[float, str, str, str | None, str | None, str, dict[str, Any]]]] = {
        n: [] for n in names}
    order_rows = []
    alerts = []
    weights = [w for _s, w, _v in OUTCOMES]
    for _ in range(orders):
        host = rnd.choice(names)
        created = daily_rhythm(rnd, start, now - 300)
        user = rnd.choice(USERS)
        oid = order_id(created, rnd)
        state, _w, severity = rnd.choices(OUTCOMES, weights)[0]
        started = created + rnd.uniform(0.02, 0.4)
        run = min(rnd.lognormvariate(math.log(25), 1.0), 1800)
        finished = started + (run if state != "timed_out" else 1800.0)
        error = None
        if state == "failed":
            error = "opencode: the model returned an error (HTTP 500)"
        elif state == "timed_out":
            error = "stopped (timeout)"
        elif state == "cancelled":
            error = "stopped (cancel)"
        elif state == "interrupted":
            error = "the worker restarted while the order ran"
        payload = rnd.choice(PAYLOADS)
        order_rows.append((oid, None, host, host, user, 1000 + USERS.index(user), None, payload, "opencode", None,
                           "{}", state, created, finished, started, finished, None, error,
                           "All done." if state == "done" else None,
                           json.dumps({"exit_code": 0 if state == "done" else 1}), 1))
        life = [(created, "order_received", "info", ""), (created + 0.001, "order_queued", "info", ""),
                (started - 0.01, "order_delivered", "info", ""), (started, "order_running", "info", "")]
        life.append((finished, f"order_{state}", severity, error or "done"))
        for ts, etype, sev, msg in life:
            per_node[host].append((ts, etype, sev, oid, user, msg, {"executor": "opencode"}))
        if state in ("failed", "timed_out", "interrupted"):
            alerts.append((f"a{len(alerts):07d}", host, f"order_{state}", "error",
                           f"Order {oid} {state}: {error}", iso(finished), finished))
    # pending orders in the last few minutes
    for i in range(12):
        host = rnd.choice(names)
        created = now - rnd.uniform(1, 280)
        state = "running" if i % 3 else "queued"
        oid = order_id(created, rnd)
        order_rows.append((oid, None, host, host, "alice", 1000, None, rnd.choice(PAYLOADS), "opencode", None, "{}",
                           state, created, created, created + 0.1 if state == "running" else None, None,
                           "thinking…" if state == "running" else None, None, None, "{}", 0))
    db.executemany("INSERT INTO orders (id, batch, host, target_spec, user, chat_id, message_id, payload, executor,"
                   " session_key, options, state, created, updated, started, finished, progress, error, response,"
                   " details, delivered) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", order_rows)

    # health checks: one per node per minute; failing spells (and the one failing now)
    spells: dict[str, list[tuple[float, float]]] = {n: [] for n in names}
    for n in names:
        for _ in range(rnd.choice((0, 0, 1, 2))):
            a = rnd.uniform(start, now - 3 * 3600)
            spells[n].append((a, a + rnd.uniform(300, 5400)))
    spells[failing_now].append((now - 2400, now + 60))
    for n in names:
        t = start + rnd.uniform(0, 60)
        end = now - 1800 if n == down_now else now
        was_ok = True
        while t < end:
            bad = any(a <= t < b for a, b in spells[n])
            failing = ["disk_spool"] if bad else []
            per_node[n].append((t, "health_check", "error" if bad else "info", None, None,
                                "failing: disk_spool" if bad else "healthy", {"healthy": not bad, "failing": failing}))
            if bad == was_ok:
                kind = "health_failing" if bad else "health_recovered"
                alerts.append((f"a{len(alerts):07d}", n, kind, "error" if bad else "info",
                               f"{n} health check failed: Disk space LOW for spool (93% used)" if bad
                               else f"{n} is healthy again", iso(t), t))
                was_ok = not bad
            t += 60
        per_node[n].append((start + 1, "worker_started", "info", None, None, "galaxy 0.1.0, 2 runner(s)", {}))
        if rnd.random() < 0.3:
            per_node[n].append((now - rnd.uniform(3600, 2 * DAY), "worker_started", "info", None, None,
                                "galaxy 0.1.0, 2 runner(s)", {}))
    # progress events fill the log up to the wanted size, spread over the orders
    have = sum(len(v) for v in per_node.values())
    finished_orders = [(r[2], r[0], r[4], r[14], r[15]) for r in order_rows if r[15] is not None]
    for _ in range(max(0, events - have)):
        host, oid, user, t0, t1 = rnd.choice(finished_orders)
        per_node[host].append((rnd.uniform(t0, t1), "order_progress", "debug", oid, user, "working…", {}))

    cursors = []
    for n in names:
        evs = sorted(per_node[n], key=lambda e: e[0])
        prev = None
        rows = []
        for seq, (ts, etype, sev, oid, user, msg, extra) in enumerate(evs, 1):
            body = {"ts": iso(ts), "seq": seq, "host": n, "type": etype, "severity": sev, "order_id": oid,
                    "user": user, "message": msg, **extra, "prev": prev}
            line = json.dumps(body, separators=(",", ":"))
            digest = hashlib.sha256(line.encode()).hexdigest()
            data = line[:-1] + f',"hash":"{digest}"}}'
            rows.append((n, seq, body["ts"], etype, sev, oid, user, msg, digest, prev, data))
            prev = digest
        db.executemany("INSERT INTO events VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)
        cursors.append((n, len(evs), prev))
        per_node[n] = []
    db.executemany("INSERT INTO cursors VALUES (?,?,?)", cursors)
    db.executemany("INSERT INTO alerts (id, host, kind, severity, message, ts, data, received, delivered)"
                   " VALUES (?,?,?,?,?,?,?,?,1)",
                   [(i, h, k, s, m, ts, json.dumps({"id": i, "host": h, "kind": k, "severity": s, "message": m,
                                                    "ts": ts}), rec) for i, h, k, s, m, ts, rec in alerts])
    for n in names:
        report = health_report(n, now, rnd, failing="disk" if n == failing_now else None)
        connected = n != down_now
        db.execute("INSERT INTO nodes (name, connected, last_seen, error, hello, health, health_ts)"
                   " VALUES (?,?,?,?,?,?,?)",
                   (n, int(connected), now - (rnd.uniform(0, 5) if connected else 1800),
                    None if connected else f"cannot connect to 198.18.0.{names.index(n) + 1}:22: timed out",
                    json.dumps({"type": "hello", "protocol": 1, "host": n, "version": "0.1.0"}),
                    json.dumps(report), now - rnd.uniform(5, 60)))
    db.execute("COMMIT")
    counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "events", "alerts",
                                                                                  "nodes")}
    db.close()
    return {"now": now, "counts": counts, "names": names, "sample_order": order_rows[len(order_rows) // 2][0]}


def describe_store(path: Path) -> dict[str, Any]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        counts = {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("orders", "events", "alerts",
                                                                                      "nodes")}
        names = [r[0] for r in db.execute("SELECT name FROM nodes ORDER BY name")]
        now = db.execute("SELECT MAX(created) FROM orders").fetchone()[0] or time.time()
        sample = db.execute("SELECT id FROM orders ORDER BY created LIMIT 1 OFFSET ?",
                            (counts["orders"] // 2,)).fetchone()[0]
    finally:
        db.close()
    return {"now": now, "counts": counts, "names": names, "sample_order": sample}


# -- the dashboard process and wrk ------------------------------------------------------------------
def start_dashboard(config: Path, workdir: Path, threads: int | None = None) -> tuple[subprocess.Popen[bytes], str, Path]:
    probe = subprocess.run([sys.executable, "-m", "galaxy_fleet.cli", "dashboard", "--help"], capture_output=True)
    cmd = [sys.executable, "-m", "galaxy_fleet.cli", "dashboard"] if probe.returncode == 0 else \
        [sys.executable, "-m", "galaxy_fleet.dashboard"]
    log = workdir / "dashboard.log"
    env = {k: v for k, v in os.environ.items() if k != "GALAXY_DASHBOARD_TOKEN"}
    env.update(GALAXY_CONFIG=str(config), PYTHONPATH=str(REPO / "files" / "galaxy" / "src"))
    extra = ["--threads", str(threads)] if threads else []
    proc = subprocess.Popen([*cmd, "--port", "0", *extra], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", log.read_text(errors="replace"))
        if m:
            return proc, m.group(1), log
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"the dashboard did not start:\n{log.read_text(errors='replace')}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"cannot read wrk's time {text!r}")
    return float(m.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(2)]


def wrk(url: str, *, connections: int, duration: float, threads: int) -> dict[str, Any]:
    exe = shutil.which("wrk")
    if exe is None:
        raise SystemExit("wrk is not installed: run `make host-deps` (scripts/apt-packages.txt lists it)")
    out = subprocess.run([exe, "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s", "--latency", url],
                         capture_output=True, text=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = {p: _seconds(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "requests": total,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(1) if errors else None}


# -- the audit query ---------------------------------------------------------------------------------
def time_query(query: Any, runs: int, **filters: Any) -> tuple[float, float, int]:
    times = []
    found = 0
    for _ in range(runs):
        t0 = time.perf_counter()
        found = len(query(**filters))
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times), found


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", type=int, default=20)
    ap.add_argument("--orders", type=int, default=50_000)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--days", type=float, default=7.0)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2, help="wrk threads")
    ap.add_argument("--rounds", type=int, default=3, help="wrk runs per route, taking turns (noise on a busy host)")
    ap.add_argument("--server-threads", type=int, help="the dashboard's WSGI threads (default: its own)")
    ap.add_argument("--runs", type=int, default=5, help="runs per audit query")
    ap.add_argument("--no-screenshot", action="store_true")
    ap.add_argument("--keep", type=Path, help="keep the generated store in this directory")
    ap.add_argument("--store", type=Path, help="use this store (e.g. one kept with --keep) instead of building one")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="galaxy-bench-dashboard-"))
    results: dict[str, Any] = {}
    try:
        if args.store:
            db_path = args.store.resolve()
            Store(db_path).close()  # the current schema (new indexes are built once, here)
            info = describe_store(db_path)
            built = 0.0
        else:
            db_path = work / "galaxy.db"
            t0 = time.perf_counter()
            info = build_store(db_path, nodes=args.nodes, orders=args.orders, events=args.events, days=args.days)
            built = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in db_path.parent.glob(db_path.name + "*"))
        c = info["counts"]
        print(f"store: {c['nodes']} nodes, {c['orders']:,} orders, {c['events']:,} events, {c['alerts']:,} alerts,"
              f" {size / 2**20:.0f} MiB" + (f", built in {built:.1f} s" if built else f" ({db_path})"))

        # the central audit query (Store.events, as `galaxy audit` on the control node)
        store = Store(db_path)
        names = info["names"]
        queries = [
            ("newest 100 (no filter)", {}),
            ("--host node07", {"host": names[6]}),
            ("--host node03,node11 --limit 1000", {"host": f"{names[2]},{names[10]}", "limit": 1000}),
            ("--host node01,node02,node03 --type health_check,order_done",
             {"host": ",".join(names[:3]), "type": "health_check,order_done"}),
            ("--severity error", {"severity": "error"}),
            ("--severity warning,error --limit 300", {"severity": "warning,error", "limit": 300}),
            ("--severity critical (none)", {"severity": "critical"}),
            ("--type order_failed", {"type": "order_failed"}),
            ("--type worker_started", {"type": "worker_started"}),
            ("--order-id X (no limit)", {"order_id": info["sample_order"], "limit": None}),
            ("--since 1h --limit 1000", {"since": iso(info["now"] - 3600), "limit": 1000}),
            ("--since 2d --until 1d --type health_check --severity error",
             {"since": iso(info["now"] - 2 * DAY), "until": iso(info["now"] - DAY), "type": "health_check",
              "severity": "error"}),
            ("--host node05 --type order_done --limit 20", {"host": names[4], "type": "order_done", "limit": 20}),
        ]
        from galaxy_fleet.dashboard.reader import StoreReader

        reader = StoreReader(db_path)
        print(f"\ncentral audit query over {c['events']:,} events, first run / median of {args.runs}:")
        print(f"  {'filters (as galaxy audit)':58s} {'Store.events':>19s}   {'dashboard /api/audit':>19s}")
        worst = worst_api = 0.0
        audit = []
        for label, filters in queries:
            first, med, found = time_query(store.events, args.runs, **filters)
            api_filters = {**filters, "limit": filters.get("limit", 100) or 10000}
            a_first, a_med, a_found = time_query(reader.events, args.runs, **api_filters)
            worst, worst_api = max(worst, first, med), max(worst_api, a_first, a_med)
            audit.append({"query": label, "first_s": first, "median_s": med, "events": found,
                          "api_first_s": a_first, "api_median_s": a_med})
            print(f"  {label:58s} {first * 1000:8.1f} {med * 1000:8.1f} ms   {a_first * 1000:8.1f}"
                  f" {a_med * 1000:8.1f} ms  ({found} events)")
        store.close()
        print(f"  slowest: Store.events {worst * 1000:.1f} ms (target < 200 ms) {'OK' if worst < 0.2 else 'MISSED'};"
              f" /api/audit {worst_api * 1000:.1f} ms")
        results["audit"] = {"queries": audit, "slowest_s": worst, "slowest_api_s": worst_api}

        # one uncached summary (what the cache saves per request)
        from galaxy_fleet.dashboard.summary import Summary

        summary = Summary(StoreReader(db_path), ttl=0, history_ttl=0)
        times = []
        for _ in range(5):
            t1 = time.perf_counter()
            summary.encoded()
            times.append(time.perf_counter() - t1)
        body = summary.encoded()[0]
        print(f"\nsummary computed without the cache: median {statistics.median(times) * 1000:.1f} ms"
              f" (first {times[0] * 1000:.1f} ms), {len(body) / 1024:.0f} KiB of JSON")
        results["summary_uncached_s"] = statistics.median(times)

        # the real process under wrk
        config = work / "config.yml"
        config.write_text(json.dumps({"control": {"store": str(db_path)}}))  # JSON is YAML
        proc, url, log = start_dashboard(config, work, args.server_threads)
        try:
            urllib.request.urlopen(url + "/api/status", timeout=30).read()  # warm the cache and the page
            for route in ("/healthz", "/api/status"):  # and the server's threads and connections (not counted)
                wrk(url + route, connections=args.connections, duration=2, threads=args.threads)
            print(f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration:g}s against {url},"
                  f" {args.rounds} round(s) taking turns (the median round counts):")
            rounds: dict[str, list[dict[str, Any]]] = {"trivial": [], "status": []}
            for i in range(args.rounds):
                for name, route in (("trivial", "/healthz"), ("status", "/api/status")):
                    r = wrk(url + route, connections=args.connections, duration=args.duration, threads=args.threads)
                    rounds[name].append(r)
                    print(f"  {i + 1}  {route:12s} {r['rps']:9.0f} req/s   p50 {r['p50'] * 1000:6.1f} ms   p99"
                          f" {r['p99'] * 1000:6.1f} ms   ({r['requests']:,} requests, non-2xx {r['non_2xx']},"
                          f" socket errors: {r['socket_errors'] or 'none'})")
            runs = {name: {"rps": statistics.median(r["rps"] for r in rs),
                           "p99": statistics.median(r["p99"] for r in rs),
                           "p50": statistics.median(r["p50"] for r in rs),
                           "non_2xx": sum(r["non_2xx"] for r in rs), "rounds": rs}
                    for name, rs in rounds.items()}
            for name, route in (("trivial", "/healthz"), ("status", "/api/status")):
                r = runs[name]
                print(f"  median {route:12s} {r['rps']:6.0f} req/s   p50 {r['p50'] * 1000:6.1f} ms   p99"
                      f" {r['p99'] * 1000:6.1f} ms")
            if not args.no_screenshot:
                shot = screenshot(url, work)
                print(f"\nscreenshot: {shot.relative_to(REPO)}")
        finally:
            stop(proc)
        ratio = runs["status"]["rps"] / runs["trivial"]["rps"]
        p99 = runs["status"]["p99"]
        ok_p99, ok_ratio = p99 < 0.05, ratio >= 0.5
        print(f"\n/api/status: p99 {p99 * 1000:.1f} ms (target < 50 ms) {'OK' if ok_p99 else 'MISSED'};"
              f" throughput {ratio:.2f}x the trivial route's (target >= 0.5) {'OK' if ok_ratio else 'MISSED'}")
        results["wrk"] = runs
        results["ratio"] = ratio
        out = REPO / "artifacts" / "bench" / "dashboard.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1))
        bad = runs["status"]["non_2xx"] or runs["trivial"]["non_2xx"]
        return 0 if ok_p99 and ok_ratio and worst < 0.2 and not bad else 1
    finally:
        if args.keep and not args.store:
            args.keep.mkdir(parents=True, exist_ok=True)
            for p in work.glob("galaxy.db*"):
                shutil.copy2(p, args.keep / p.name)
        shutil.rmtree(work, ignore_errors=True)


def screenshot(url: str, work: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "dashboard"))
    from chromium_cdp import Chromium

    browser = Chromium(work / "chromium")
    try:
        page = browser.new_page()
        page.viewport(1280, 900)
        page.navigate(url + "/")
        page.wait_for("document.documentElement.dataset.renders >= 1")
        path = page.screenshot(REPO / "artifacts" / "dashboard" / "dashboard-bench.png")
        page.viewport(390, 844, mobile=True, scale=2, dark=True)
        page.navigate(url + "/")
        page.wait_for("document.documentElement.dataset.renders >= 1")
        page.screenshot(REPO / "artifacts" / "dashboard" / "dashboard-bench-phone-dark.png", full_page=False)
        page.close()
        return path
    finally:
        browser.stop()


if __name__ == "__main__":
    sys.exit(main())
