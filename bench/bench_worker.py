#!/usr/bin/env python3
"""Throughput, latency and memory of one node's worker, against a polling design.

Galaxy: `galaxy worker` (inotify, durable writes on) with a no-op `command`
executor (/bin/true), 1 and 2 runners.
Baseline, same run: the classic single-host design, a loop that lists the orders directory
every 5 s and runs what it finds, with the same executor and the same
response files.

Prints orders/s, submit-to-response and pickup latency (p50/p99), cancel
latency and the worker's resident memory idle and under load.
Targets: pickup p50 < 10 ms, >= 300 orders/s, RSS < 50 MB.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from galaxy_fleet.config import load
from galaxy_fleet.node.api import Node, new_order
from benchlib import pct, rss_mb  # noqa: E402

N_THROUGHPUT = int(os.environ.get("BENCH_ORDERS", "2000"))
N_LATENCY = int(os.environ.get("BENCH_LATENCY_ORDERS", "300"))
N_BASELINE = int(os.environ.get("BENCH_BASELINE_ORDERS", "12"))
# Another source tree (its files/galaxy/src) whose worker's pickup latency is measured in the same
# run, after this tree's, to compare two versions on the same machine and load.
COMPARE_SRC = os.environ.get("BENCH_COMPARE_SRC")






class Env:
    def __init__(self, runners: int, src: str | None = None):
        self.src = src
        self.root = Path(tempfile.mkdtemp(prefix="galaxy-bench-"))
        self.cfg_path = self.root / "config.yml"
        self.cfg_path.write_text(yaml.safe_dump({
            "host": "bench", "spool_dir": str(self.root / "spool"),
            "worker": {"runners": runners, "default_executor": "noop", "heartbeat_interval": 5},
            "executors": {"noop": {"type": "command", "argv": ["/bin/true"]},
                          "sleep": {"type": "command", "argv": ["/bin/sleep", "{payload}"]}},
        }))
        self.node = Node(load(self.cfg_path))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, "GALAXY_CONFIG": str(self.cfg_path)}
        if self.src:
            env["PYTHONPATH"] = self.src
        self.proc = subprocess.Popen([sys.executable, "-m", "galaxy_fleet.cli", "worker"], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        hb = self.node.spool.state / "heartbeat.json"
        while not hb.exists():
            time.sleep(0.01)

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait(30)
        shutil.rmtree(self.root, ignore_errors=True)

    def responses(self) -> int:
        return sum(1 for n in os.listdir(self.node.spool.responses) if n.endswith(".json"))


def throughput(runners: int) -> dict[str, float]:
    env = Env(runners)
    try:
        ids = [env.node.submit(new_order(f"o{i}", {"executor": "noop"})).id for i in range(N_THROUGHPUT)]
        t0 = time.perf_counter()
        env.start()
        peak = 0.0
        while env.responses() < len(ids):
            peak = max(peak, rss_mb(env.proc.pid))  # type: ignore[union-attr]
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        states = {env.node.status(i)["state"] for i in ids}
        assert states == {"done"}, states
        return {"orders_per_s": len(ids) / elapsed, "elapsed_s": elapsed, "rss_load_mb": peak}
    finally:
        env.stop()


def latency(src: str | None = None) -> dict[str, float]:
    """One order at a time: submit, wait for the answer (inotify), record both latencies."""
    env = Env(1, src)
    try:
        env.start()
        idle = rss_mb(env.proc.pid)  # type: ignore[union-attr]
        e2e, pickup = [], []
        for i in range(N_LATENCY):
            t0 = time.perf_counter()
            order = env.node.submit(new_order(f"l{i}", {"executor": "noop"}))
            status = env.node.wait(order.id, timeout=30)
            e2e.append(time.perf_counter() - t0)
            pickup.append(status["timings"]["pickup_s"])
        # cancel latency: a running order, then `galaxy order cancel`
        cancels = []
        for _ in range(5):
            order = env.node.submit(new_order("60", {"executor": "sleep"}))
            while env.node.status(order.id).get("state") != "running":
                time.sleep(0.005)
            t0 = time.perf_counter()
            status = env.node.cancel(order.id, wait=10)
            cancels.append(time.perf_counter() - t0)
            assert status["state"] == "cancelled", status
        return {"e2e_p50_ms": pct(e2e, 50) * 1000, "e2e_p99_ms": pct(e2e, 99) * 1000,
                "pickup_p50_ms": pct(pickup, 50) * 1000, "pickup_p99_ms": pct(pickup, 99) * 1000,
                "cancel_max_s": max(cancels), "rss_idle_mb": idle}
    finally:
        env.stop()


def polling_baseline() -> dict[str, float]:
    """The classic single-host design: poll the orders directory every 5 s, same executor and files."""
    env = Env(1)
    spool = env.node.spool
    stop = threading.Event()
    picked: dict[str, float] = {}

    def poller() -> None:
        while not stop.is_set():
            for name in sorted(os.listdir(spool.orders)):
                src = spool.orders / name
                picked[name[:-5]] = time.time()
                order = json.loads(src.read_bytes())
                subprocess.run(["/bin/true"], check=True)
                spool.write(spool.responses / f"{order['id']}.md", b"ok\n")
                spool.write_json(spool.responses / f"{order['id']}.json", {"id": order["id"], "state": "done"})
                os.rename(src, spool.archive / name)
            stop.wait(5.0)

    thread = threading.Thread(target=poller, daemon=True)
    try:
        thread.start()
        time.sleep(0.1)
        # latency: orders arriving at random moments over ~10 s
        submitted: dict[str, float] = {}
        for i in range(N_BASELINE):
            time.sleep(random.uniform(0, 10 / N_BASELINE))
            oid = env.node.submit(new_order(f"b{i}", {"executor": "noop"})).id
            submitted[oid] = time.time()
        while len(picked) < len(submitted):
            time.sleep(0.05)
        pickups = [picked[o] - submitted[o] for o in submitted]
        # throughput: a burst of orders, timed until the last answer
        burst = [env.node.submit(new_order(f"t{i}", {"executor": "noop"})).id for i in range(N_THROUGHPUT // 4)]
        t0 = time.perf_counter()
        while env.responses() < len(submitted) + len(burst):
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        return {"pickup_p50_ms": pct(pickups, 50) * 1000, "pickup_p99_ms": pct(pickups, 99) * 1000,
                "orders_per_s": len(burst) / elapsed}
    finally:
        stop.set()
        thread.join(10)
        env.stop()


def main() -> int:
    print(f"bench_worker: {N_THROUGHPUT} orders for throughput, {N_LATENCY} for latency, "
          f"no-op executor /bin/true, durable writes on")
    t1 = throughput(1)
    t2 = throughput(2)
    lat = latency()
    base = polling_baseline()
    print(f"throughput, 1 runner : {t1['orders_per_s']:8.1f} orders/s  (peak RSS {t1['rss_load_mb']:.1f} MB)")
    print(f"throughput, 2 runners: {t2['orders_per_s']:8.1f} orders/s  (peak RSS {t2['rss_load_mb']:.1f} MB)")
    print(f"submit->response     : p50 {lat['e2e_p50_ms']:.2f} ms  p99 {lat['e2e_p99_ms']:.2f} ms")
    print(f"pickup (file->claim) : p50 {lat['pickup_p50_ms']:.2f} ms  p99 {lat['pickup_p99_ms']:.2f} ms")
    print(f"cancel running order : max {lat['cancel_max_s']:.3f} s over 5")
    print(f"worker RSS idle      : {lat['rss_idle_mb']:.1f} MB")
    if COMPARE_SRC:
        other = latency(COMPARE_SRC)
        print(f"pickup, worker of {COMPARE_SRC}: p50 {other['pickup_p50_ms']:.2f} ms  "
              f"p99 {other['pickup_p99_ms']:.2f} ms  (submit->response p50 {other['e2e_p50_ms']:.2f} ms)")
    print(f"baseline (5 s poll): pickup p50 {base['pickup_p50_ms']:.0f} ms  p99 {base['pickup_p99_ms']:.0f} ms,"
          f" burst {base['orders_per_s']:.1f} orders/s")
    print(f"ratio pickup p50 baseline/galaxy: {base['pickup_p50_ms'] / max(lat['pickup_p50_ms'], 1e-3):.0f}x")
    print(f"ratio throughput galaxy(1 runner)/baseline: {t1['orders_per_s'] / base['orders_per_s']:.1f}x")
    best = max(t1["orders_per_s"], t2["orders_per_s"])
    ok = (lat["pickup_p50_ms"] < 10 and best >= 300 and lat["rss_idle_mb"] < 50
          and max(t1["rss_load_mb"], t2["rss_load_mb"]) < 50 and lat["cancel_max_s"] < 2)
    print(f"targets (pickup p50 < 10 ms, >= 300 orders/s with 1 or 2 runners [best {best:.0f}], RSS < 50 MB,"
          f" cancel < 2 s):", "MET" if ok else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
