"""Failure detection and recovery on the lab, against the targets.

A lab of its own (2 nodes, opencode serve on each, the scripted LLM on this
host's lab address), deployed with playbooks/site.yml; the control side is a
Fleet on this host with the control machine's routing key (as in the lab
tests, tests/lab_e2e). Rounds alternate between the nodes:

- kill -9 of galaxy-worker: time until the first alert about it (worker_died
  from the restarted worker, or worker_silent from the heartbeat watch)
  reaches the control side, and until the worker has answered an order sent
  right after the kill (healthy again);
- the node's network cut (eth0 down in its namespace): time until the control
  side's node_down.

Targets: detection < 10 s, recovery < 30 s; a 60 s health timer and a 5 min restart check would give 60 s and 5 min.

    .venv/bin/python bench/bench_detect.py [--rounds 6] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lab_e2e"))

from galaxy_fleet.control.router import RouterSettings  # noqa: E402
from e2e import CONTROL_SETTINGS, E2ELab, boot_lab, control_config, deploy  # noqa: E402
from support.llm_server import ScriptedLLM  # noqa: E402

TARGET_DETECT, TARGET_RECOVER = 10.0, 30.0
SEED_DETECT, SEED_RECOVER = 60.0, 300.0
LAB_IDS = ["20", "21", "22", "23"]


def first_seen(lab: E2ELab, kinds: tuple[str, ...], host: str, after: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with lab._lock:
            hits = [s.t for s in lab.seen if s.kind in kinds and s.host == host and s.t >= after]
        if hits:
            return min(hits)
        time.sleep(0.02)
    raise SystemExit(f"no {'/'.join(kinds)} from {host} within {timeout} s")


def kill_round(lab: E2ELab, node: str) -> tuple[float, float]:
    pid = lab.must(node, "systemctl show --property=MainPID --value galaxy-worker").strip()
    lab.llm.script()  # the order gets the default reply
    t0 = time.monotonic()
    lab.must(node, f"kill -9 {pid}")
    rec = lab.fleet.submit(node, "are you back?", sender="bench")[0]
    detect = first_seen(lab, ("worker_died", "worker_silent"), node, t0, 60) - t0
    done = lab.fleet.wait([rec.id], timeout=120)
    if not done or done[0].state != "done":
        raise SystemExit(f"the order after the kill did not succeed: {done}")
    recover = time.monotonic() - t0
    first_seen(lab, ("worker_recovered", "worker_heard"), node, t0, 60)
    return detect, recover


def cut_round(lab: E2ELab, node: str) -> float:
    t0 = time.monotonic()
    lab.link(node, up=False)
    try:
        down = first_seen(lab, ("node_down",), node, t0, 60) - t0
    finally:
        lab.link(node, up=True)
    first_seen(lab, ("node_up",), node, t0, 60)
    return down


def line(name: str, values: list[float], target: float, baseline: float) -> None:
    p50, worst = statistics.median(values), max(values)
    print(f"{name:34s} p50 {p50:5.1f} s  max {worst:5.1f} s  | target {target:4.0f} s: p50/target "
          f"{p50 / target:.2f}, max/target {worst / target:.2f} | timer baseline {baseline:4.0f} s: p50/baseline {p50 / baseline:.3f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6, help="rounds of each drill (alternating web1/web2)")
    ap.add_argument("--keep", action="store_true", help="reuse a running bench lab and leave it running")
    args = ap.parse_args()
    state = REPO / "artifacts" / "bench-detect-lab"
    lab: E2ELab | None = None
    llm: ScriptedLLM | None = None
    try:
        t = time.monotonic()
        lab = boot_lab(state, LAB_IDS, keep=args.keep)
        llm = ScriptedLLM(host=lab.root_addr).start()
        lab.llm = llm
        deploy(lab, llm)
        with tempfile.TemporaryDirectory(prefix="bench-detect-") as root:
            # The control link as shipped (the router's defaults), not the tests' quicker settings.
            settings = {k: v for k, v in CONTROL_SETTINGS.items() if k not in ("ping_interval", "dead_after")}
            lab.start_fleet(control_config(lab, Path(root), settings))
            link = RouterSettings()
            print(f"lab {lab.lab_id} deployed in {time.monotonic() - t:.0f} s; control link (defaults): "
                  f"ping every {link.ping_interval} s, dead after {link.dead_after} s; "
                  f"worker heartbeat 2 s, RestartSec=5")
            detects, recovers, cuts = [], [], []
            for i in range(args.rounds):
                node = ("web1", "web2")[i % 2]
                d, r = kill_round(lab, node)
                c = cut_round(lab, node)
                detects.append(d)
                recovers.append(r)
                cuts.append(c)
                print(f"round {i + 1} {node}: kill -9 -> alert {d:.1f} s, -> order answered {r:.1f} s; "
                      f"network cut -> node_down {c:.1f} s", flush=True)
                time.sleep(1)
            print()
            line("kill -9 -> alert at control", detects, TARGET_DETECT, SEED_DETECT)
            line("kill -9 -> healthy (order done)", recovers, TARGET_RECOVER, SEED_RECOVER)
            line("network cut -> node_down", cuts, TARGET_DETECT, SEED_DETECT)
            lab.stop_fleet()
        return 0
    finally:
        if lab is not None:
            lab.stop_fleet()
        if llm is not None:
            llm.stop()
        if lab is not None and lab.up and not args.keep:
            lab.lab("down", check=False)


if __name__ == "__main__":
    raise SystemExit(main())
