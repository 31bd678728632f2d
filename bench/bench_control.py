#!/usr/bin/env python3
"""Routing overhead of the control plane, against Ansible's ad-hoc command.

Galaxy: the Fleet (router + store) sends a no-op order (`/bin/true`) to a node
over the persistent connection to its `galaxy remote` and waits for the answer
event; p50/p99 over many orders. Also `galaxy send` end to end (a new process:
Python start-up, connect, order, answer), and fan-out to every node against
one node.

Where: the lab (real SSH into systemd machines deployed by the collection) when
`--lab` is given and the lab is deployed (`make demo` leaves it so); otherwise
local nodes (`ansible_connection: local`, same protocol without SSH).
Baseline, same run: `ansible NODE -m ansible.builtin.command -a true` for the
same trivial order (lab), or `ansible localhost -c local -m command -a true`.
Targets: routing p50 < 20 ms, p99 < 100 ms, >= 50x faster than the baseline;
fan-out to every node < 2x one node.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from nodeenv import NodeEnv  # noqa: E402
from benchlib import pct  # noqa: E402




PAYLOAD = {"executor": "noop", "payload": "noop"}


def time_orders(fleet, target: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        recs = fleet.submit(target, PAYLOAD["payload"], sender="bench", executor=PAYLOAD["executor"])
        done = fleet.wait([r.id for r in recs], timeout=60)
        out.append(time.perf_counter() - t0)
        assert all(r.state == "done" for r in done), [(r.host, r.state, r.error) for r in done]
    return out


def local_setup(root: Path, nodes: int) -> tuple[Path, list[NodeEnv]]:
    envs = []
    hosts = {}
    for i in range(1, nodes + 1):
        name = f"node{i}"
        (root / name).mkdir()
        env = NodeEnv(root / name)
        env.write_config(host=name, executors={"noop": {"type": "command", "argv": ["/bin/true"]}},
                         worker={"default_executor": "noop", "heartbeat_interval": 5})
        env.start_worker()
        envs.append(env)
        hosts[name] = {"ansible_connection": "local", "galaxy_config_path": str(env.config_path)}
    inv = root / "inventory.yml"
    inv.write_text(yaml.safe_dump({"all": {"children": {"galaxy_nodes": {"hosts": hosts}}}}))
    (root / "known_hosts").touch()
    cfg = root / "control.yml"
    cfg.write_text(yaml.safe_dump({"host": "control", "spool_dir": str(root / "cspool"),
                                   "control": {"inventory": str(inv), "store": str(root / "galaxy.db"),
                                               "known_hosts": str(root / "known_hosts")}}))
    return cfg, envs


def ansible_baseline(target: str, inventory: str | None, runs: int) -> list[float]:
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    if inventory:
        argv = [ansible, target, "-i", inventory, "-m", "ansible.builtin.command", "-a", "true"]
    else:
        argv = [ansible, "localhost", "-c", "local", "-m", "ansible.builtin.command", "-a", "true"]
    env = {**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"}
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True, timeout=120)
        out.append(time.perf_counter() - t0)
    return out


def galaxy_send(cfg: Path, target: str, runs: int) -> list[float]:
    env = {**os.environ, "GALAXY_CONFIG": str(cfg)}
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "galaxy_fleet.cli", "send", "-q", "--executor", PAYLOAD["executor"],
                        target, PAYLOAD["payload"]], env=env, check=True, capture_output=True, timeout=120)
        out.append(time.perf_counter() - t0)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--orders", type=int, default=int(os.environ.get("BENCH_ORDERS", "200")))
    ap.add_argument("--lab", action="store_true", help="route over SSH to the deployed lab (see module doc)")
    args = ap.parse_args()

    from galaxy_fleet.config import load
    from galaxy_fleet.control.fleet import Fleet

    root = Path(tempfile.mkdtemp(prefix="galaxy-bench-control-"))
    envs: list[NodeEnv] = []
    try:
        if args.lab:
            from lab_bench import lab_control_config  # bench/lab_bench.py: routing key from the lab

            cfg, one, inventory = lab_control_config(root)
            # the lab has no LLM: the shell executor's allow-listed `hostname` is the trivial order
            PAYLOAD.update(executor="shell", payload="hostname")
        else:
            cfg, envs = local_setup(root, 2)  # the lab's default: web1 and web2
            one, inventory = "node1", None
        fleet = Fleet(load(cfg))
        fleet.start()
        assert fleet.wait_connected(60), "nodes did not connect"
        names = fleet.resolve("all")
        time_orders(fleet, one, 10)  # warm up
        single = time_orders(fleet, one, args.orders)
        fan = time_orders(fleet, "all", max(20, args.orders // 5))
        alone = time_orders(fleet, one, max(20, args.orders // 5))
        rss = int(Path(f"/proc/{os.getpid()}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
        fleet.stop()
        send = galaxy_send(cfg, one, 10)
        base = ansible_baseline(one, inventory, 5)
    finally:
        for env in envs:
            env.stop_workers()
        shutil.rmtree(root, ignore_errors=True)

    where = "lab over SSH" if args.lab else "local nodes (no SSH)"
    print(f"bench_control ({where}), no-op executor, {args.orders} orders")
    print(f"fleet order -> answer, one node : p50 {pct(single, 50)*1000:7.2f} ms  p99 {pct(single, 99)*1000:7.2f} ms")
    print(f"fan-out to all {len(names)} nodes       : p50 {pct(fan, 50)*1000:7.2f} ms  "
          f"(one node p50 {pct(alone, 50)*1000:.2f} ms, ratio {pct(fan, 50)/pct(alone, 50):.2f}x)")
    print(f"galaxy send (new process)      : median {statistics.median(send)*1000:7.1f} ms")
    print(f"baseline ansible ad-hoc command: median {statistics.median(base)*1000:7.1f} ms")
    print(f"ratio baseline / fleet p50     : {statistics.median(base)/pct(single, 50):7.0f}x")
    print(f"ratio baseline / galaxy send   : {statistics.median(base)/statistics.median(send):7.1f}x")
    print(f"control process RSS with {len(names)} links: {rss:.1f} MB")
    ok = (pct(single, 50) < 0.020 and pct(single, 99) < 0.100 and statistics.median(base) / pct(single, 50) >= 50
          and pct(fan, 50) / pct(alone, 50) < 2)
    print("targets (p50 < 20 ms, p99 < 100 ms, >= 50x ansible, fan-out < 2x):", "MET" if ok else "NOT MET")
    return 0


if __name__ == "__main__":
    sys.exit(main())
