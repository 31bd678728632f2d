#!/usr/bin/env python3
"""A soak through the control plane: many orders into real node workers, with a
worker killed (SIGKILL) at random moments and started again, as systemd would.

Two local nodes (`ansible_connection: local`: the same `galaxy remote` protocol
without SSH), each with a real `galaxy worker`; the control plane is
control.fleet.Fleet (router, SQLite store) in this process. Orders go to web1
and web2 at a steady rate (one in ten sleeps 0.3 s, so kills also land mid-run); web1's worker is killed -9 several times and
restarted after a random pause; web2's is never killed (its memory is the
steady-state figure).

At the end every order must have reached exactly one terminal state, agreed
by the control store and the node's answer, with its answer files and a
complete audit life cycle (received, queued, delivered, [running,] one
terminal event), and nothing left in orders/ or processing/. Prints the
problems found (none expected), the figures, and the RSS of the control
process, web2's worker and the remote sessions from minute 2 (or a quarter
of a short run) to the end.

    python bench/soak.py                       # 10,000 orders, 10 minutes, 6 kills
    python bench/soak.py --orders 1000 --minutes 1 --kills 2
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from nodeenv import NodeEnv  # noqa: E402
from benchlib import rss_mb  # noqa: E402

from galaxy_fleet.order import TERMINAL  # noqa: E402

MAX_IN_FLIGHT = 200


def setup(root: Path) -> tuple[Path, dict[str, NodeEnv]]:
    nodes: dict[str, NodeEnv] = {}
    hosts = {}
    for name in ("web1", "web2"):
        (root / name).mkdir()
        env = NodeEnv(root / name)
        env.write_config(host=name, worker={"runners": 2, "heartbeat_interval": 1, "default_executor": "echo"},
                         health={"opencode": False})
        nodes[name] = env
        hosts[name] = {"ansible_connection": "local", "galaxy_config_path": str(env.config_path)}
    inv = root / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"galaxy_nodes": {"hosts": hosts}}}}))
    (root / "known_hosts").touch()
    cfg = root / "control.yml"
    cfg.write_text(yaml.safe_dump({
        "host": "control", "spool_dir": str(root / "cspool"),
        "executors": {"echo": {"type": "command", "argv": ["/bin/echo", "{payload}"]},
                      "sleep": {"type": "command", "argv": ["/bin/sleep", "{payload}"]}},
        "worker": {"default_executor": "echo"},
        "control": {"inventory": str(inv), "store": str(root / "galaxy.db"), "known_hosts": str(root / "known_hosts"),
                    "connect_timeout": 10},
    }))
    return cfg, nodes


def remote_pids() -> list[int]:
    """The `galaxy remote` sessions this process started."""
    me, found = os.getpid(), []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_bytes()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            if ppid == me and b"remote" in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(int(pid))
        except (OSError, ValueError):
            continue
    return found


def check(nodes: dict[str, NodeEnv], records: dict[str, Any], terminal_seen: dict[str, set[str]]) -> list[str]:
    """Every way an order could have gone wrong, one line each."""
    from galaxy_fleet.audit import query

    problems: list[str] = []
    audit: dict[str, dict[str, list[str]]] = {}
    for name, env in nodes.items():
        per: dict[str, list[str]] = defaultdict(list)
        for event in query(env.spool / "audit" / "audit.jsonl", limit=None):
            if event.get("order_id") and event["type"] != "order_progress":
                per[event["order_id"]].append(event["type"])
        audit[name] = per
        for sub in ("orders", "processing"):
            left = [p.name for p in (env.spool / sub).iterdir()]
            if left:
                problems.append(f"{name}: {len(left)} file(s) left in {sub}/: {left[:3]}")
    for oid, rec in records.items():
        env = nodes[rec.host]
        if rec.state not in TERMINAL:
            problems.append(f"{oid} on {rec.host}: still {rec.state}")
            continue
        seen = terminal_seen.get(oid, set())
        if len(seen) > 1:
            problems.append(f"{oid}: reached several terminal states {sorted(seen)}")
        side = env.spool / "responses" / f"{oid}.json"
        try:
            import json

            node_state = json.loads(side.read_text())["state"]
        except (OSError, ValueError, KeyError):
            problems.append(f"{oid} on {rec.host}: no answer sidecar")
            continue
        if node_state != rec.state:
            problems.append(f"{oid}: control says {rec.state}, the node's answer {node_state}")
        md = env.spool / "responses" / f"{oid}.md"
        if not md.exists():
            problems.append(f"{oid}: no Markdown answer")
        elif node_state == "done" and rec.payload not in md.read_text():
            problems.append(f"{oid}: the answer lacks the payload")
        events = audit[rec.host].get(oid, [])
        terminal = [e for e in events if e.startswith("order_") and e[6:] in TERMINAL]
        if terminal != [f"order_{node_state}"]:
            problems.append(f"{oid}: terminal audit events {terminal}, answer {node_state}")
        need = ["order_received", "order_queued", "order_delivered"]
        if node_state in ("done", "failed"):
            need.append("order_running")
        missing = [e for e in need if e not in events]
        if missing:
            problems.append(f"{oid}: audit life cycle lacks {missing} (has {events})")
    return problems


def run(orders: int = 10_000, minutes: float = 10.0, kills: int = 6, seed: int | None = None,
        quiet: bool = False) -> dict[str, Any]:
    from galaxy_fleet.config import load
    from galaxy_fleet.control.fleet import Fleet

    rng = random.Random(seed)
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    with tempfile.TemporaryDirectory(prefix="galaxy-soak-") as tmp:
        cfg, nodes = setup(Path(tmp))
        for env in nodes.values():
            env.start_worker()
        fleet = Fleet(load(cfg))
        terminal_seen: dict[str, set[str]] = defaultdict(set)
        done_count = [0]
        lock = threading.Lock()

        def on_event(ev: Any) -> None:
            rec = getattr(ev, "record", None)
            if rec is not None and rec.state in TERMINAL:
                with lock:
                    if not terminal_seen[rec.id]:
                        done_count[0] += 1
                    terminal_seen[rec.id].add(rec.state)

        fleet.subscribe(on_event)
        fleet.start()
        assert fleet.wait_connected(60), "the nodes did not connect"
        duration = minutes * 60
        t0 = time.monotonic()
        kill_at = sorted(rng.uniform(0.1, 0.85) * duration for _ in range(kills))
        killed: list[float] = []
        samples: list[tuple[float, float, float, float]] = []  # t, control, web2 worker, remote sessions
        stop = threading.Event()

        def killer() -> None:
            for at in kill_at:
                if stop.wait(max(0.0, t0 + at - time.monotonic())):
                    return
                worker = nodes["web1"].workers[-1]
                worker.kill()
                worker.wait()
                killed.append(time.monotonic() - t0)
                say(f"[{time.monotonic() - t0:6.1f}s] killed web1's worker (pid {worker.pid})")
                time.sleep(rng.uniform(0.2, 2.0))  # systemd's RestartSec, roughly
                nodes["web1"].start_worker()

        def sampler() -> None:
            while not stop.wait(2.0):
                web2 = nodes["web2"].workers[-1].pid
                samples.append((time.monotonic() - t0, rss_mb(os.getpid()), rss_mb(web2),
                                sum(rss_mb(p) for p in remote_pids())))

        threads = [threading.Thread(target=killer, daemon=True), threading.Thread(target=sampler, daemon=True)]
        for t in threads:
            t.start()
        ids: list[str] = []
        refused = 0
        try:
            for i in range(orders):
                due = t0 + duration * i / orders
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                while len(ids) - done_count[0] > MAX_IN_FLIGHT:
                    time.sleep(0.01)
                host = "web1" if i % 2 == 0 else "web2"
                if i % 10 == 5:  # some orders run a while, so kills also land mid-run
                    recs = fleet.submit(host, "0.3", sender="soak", executor="sleep")
                else:
                    recs = fleet.submit(host, f"soak order {i} for {host}", sender="soak", executor="echo")
                ids.extend(r.id for r in recs)
                refused += sum(1 for r in recs if r.details.get("busy"))
                if not quiet and i and i % 1000 == 0:
                    say(f"[{time.monotonic() - t0:6.1f}s] {i} orders sent, {done_count[0]} finished")
            deadline = time.monotonic() + 180
            while done_count[0] < len(ids) and time.monotonic() < deadline:
                time.sleep(0.2)
            elapsed = time.monotonic() - t0
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        records = {oid: fleet.order(oid) for oid in ids}
        fleet.stop()
        for env in nodes.values():
            env.stop_workers()
        problems = check(nodes, records, terminal_seen)
        states = Counter(r.state for r in records.values())
        from_t = 120.0 if duration >= 240 else duration / 4
        start = next((s for s in samples if s[0] >= from_t), samples[0] if samples else None)
        end = samples[-1] if samples else None
        result = {"orders": len(ids), "elapsed_s": elapsed, "kills": len(killed), "states": dict(states),
                  "problems": problems, "refused": refused, "rss_from_s": start[0] if start else None,
                  "rss": {k: (start[i], end[i]) for i, k in ((1, "control"), (2, "web2 worker"), (3, "remote sessions"))}
                  if start and end else {}}
        return result


def report(r: dict[str, Any]) -> None:
    print(f"soak: {r['orders']} orders in {r['elapsed_s']:.0f} s ({r['orders'] / r['elapsed_s']:.1f}/s), "
          f"web1's worker killed -9 {r['kills']} times; end states {r['states']}; refused busy: {r['refused']}")
    for name, (a, b) in r["rss"].items():
        print(f"RSS {name:16s}: {a:6.1f} MB at {r['rss_from_s']:.0f} s -> {b:6.1f} MB at the end "
              f"({(b - a) / a * 100 if a else 0:+.1f}%)")
    print(f"problems: {len(r['problems'])}")
    for line in r["problems"][:30]:
        print("  " + line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--orders", type=int, default=10_000)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--kills", type=int, default=6)
    ap.add_argument("--seed", type=int)
    args = ap.parse_args()
    r = run(args.orders, args.minutes, args.kills, args.seed)
    report(r)
    return 1 if r["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
