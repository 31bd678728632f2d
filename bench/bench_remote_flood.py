#!/usr/bin/env python3
"""Memory of one `galaxy remote` session under a flood: N requests of 1 MB each,
written by a client that does not read the answers (so the answers block).

Prints the session's peak RSS while the client writes without reading, whether
the writer was held back (the session stopped reading), and that every request
got its answer once the client reads. Run it against another source tree with
PYTHONPATH=/that/tree/files/galaxy/src to compare.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from nodeenv import GALAXY, NodeEnv  # noqa: E402
from benchlib import rss_mb  # noqa: E402


def seed_audit(env: NodeEnv, events: int) -> None:
    """Some audit events, so each audit answer is a few KB and the answers fill the pipe."""
    subprocess.run([*GALAXY, "order", "submit", "seed"], env=env.env, capture_output=True, check=True)
    from galaxy_fleet.config import load
    from galaxy_fleet.node.worker import open_audit

    audit = open_audit(load(env.config_path))
    for i in range(events):
        audit.append("bench_event", message=f"event {i} " + "x" * 200, sync=False)
    audit.close()


def flood(env: NodeEnv, n: int, size: int = 1_000_000, hold_s: float = 3.0) -> dict[str, float]:
    proc = subprocess.Popen([*GALAXY, "remote"], env=env.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    json.loads(proc.stdout.readline())  # hello
    base = rss_mb(proc.pid)
    pad = "x" * size
    written = [0]

    def writer() -> None:
        try:
            for i in range(n):
                proc.stdin.write(json.dumps({"id": i, "op": "audit", "limit": 50, "pad": pad}).encode() + b"\n")
                written[0] = i + 1
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    peak, last, still = base, -1, time.monotonic()
    while t.is_alive():  # not reading the answers: they block
        peak = max(peak, rss_mb(proc.pid))
        if written[0] != last:
            last, still = written[0], time.monotonic()
        elif time.monotonic() - still > hold_s:
            break  # the writer has been held back this long: the session stopped reading
        time.sleep(0.05)
    held = written[0]
    answers = 0
    for line in proc.stdout:  # now read everything
        msg = json.loads(line)
        if msg.get("type") == "result":
            answers += 1
            if answers == n:
                break
        peak = max(peak, rss_mb(proc.pid))
    t.join(60)
    proc.stdin.close() if not proc.stdin.closed else None
    proc.wait(60)
    return {"base_mb": base, "peak_mb": peak, "held_at": held, "answers": answers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-n", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = NodeEnv(Path(tmp))
        seed_audit(env, 200)
        t0 = time.monotonic()
        r = flood(env, args.n)
        print(f"galaxy remote flood: {args.n} x 1 MB requests, answers unread: RSS {r['base_mb']:.0f} MB at start, "
              f"peak {r['peak_mb']:.0f} MB; writer held back after {r['held_at']} of {args.n}; "
              f"{r['answers']} answers; {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
