#!/usr/bin/env python3
"""Galaxy's overhead on top of opencode for a trivial scripted answer.

One scripted LLM, one `opencode serve`, one prompt, all in the same run:

  executor      the opencode executor against the running server (a fresh
                session per order, as an order without a session key)
  executor+key  the same, every order continuing one session (a chat)
  raw HTTP      the thinnest client of the same server: POST /session, then
                the blocking POST /session/{id}/message (one loopback round
                trip on top of opencode's own time)
  run --attach  `opencode run --attach URL "prompt"` (what a shell script would do)
  run           `opencode run "prompt"` standalone (starts its own server)

Phase 1 interleaves the three HTTP clients (they cost ~0.1 s each, so they
get more orders); phase 2 interleaves the two CLI runs with the executor.
Besides wall-clock p50/p90, it prints Galaxy's overhead per order: the
executor's wall time minus opencode's own time for the same prompt (user
message created -> reply completed, from the server's timestamps).

BENCH_OPENCODE_ORDERS sets the CLI orders (default 20; the HTTP clients get
three times as many).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.executor_harness import Harness  # noqa: E402
from support.llm_server import ScriptedLLM  # noqa: E402
from support.opencode_server import OPENCODE_BIN, OpenCodeServer, offline_env, prepare_root, request  # noqa: E402

PROMPT = "Reply with the single word pong."
ANSWER = "pong"
N = int(os.environ.get("BENCH_OPENCODE_ORDERS", "20"))


def pct(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main() -> int:
    times: dict[str, list[float]] = {}
    overhead: dict[str, list[float]] = {"executor": [], "executor+key": [], "raw HTTP": []}
    missing = {"run --attach": 0, "run": 0}
    with ScriptedLLM(default_reply=ANSWER) as llm, OpenCodeServer(llm.url) as server, \
            tempfile.TemporaryDirectory(prefix="bench-opencode-") as tmp:
        tmpdir = Path(tmp)
        project = server.project
        state = tmpdir / "state"
        state.mkdir()
        harness = Harness(state, server.url)
        executor = harness.executor()
        # `opencode run` standalone gets its own HOME/XDG dirs (its own database)
        # with the same offline config and the same scripted LLM.
        solo_root = prepare_root(tmpdir / "solo", llm.url)
        solo_env = offline_env(solo_root)
        q = "?directory=" + urllib.parse.quote(str(project))

        def executor_order(name: str, session: str | None) -> Callable[[], float]:
            def go() -> float:
                start = time.perf_counter()
                result = harness.run(PROMPT, executor=executor, workdir=project, session=session).result
                wall = time.perf_counter() - start
                assert result.status == "done" and result.output == ANSWER, (result.status, result.error)
                overhead[name].append(wall - result.details["opencode_ms"] / 1000)
                return wall
            return go

        def raw_http() -> float:
            start = time.perf_counter()
            sid = request(server, "POST", "/session" + q, {"title": "bench"})["id"]
            reply = request(server, "POST", f"/session/{sid}/message" + q,
                            {"parts": [{"type": "text", "text": PROMPT}]}, timeout=60)
            wall = time.perf_counter() - start
            assert [p.get("text") for p in reply["parts"] if p.get("type") == "text"] == [ANSWER], reply
            user = request(server, "GET", f"/session/{sid}/message/{reply['info']['parentID']}" + q)
            own = reply["info"]["time"]["completed"] - user["info"]["time"]["created"]
            overhead["raw HTTP"].append(wall - own / 1000)
            return wall

        # `opencode run` can exit 0 before the reply is printed (the race that
        # made Galaxy talk HTTP instead): count those runs rather than fail.
        def cli(name: str, argv: list[str], cwd: Path, env: dict[str, str]) -> Callable[[], float]:
            def go() -> float:
                start = time.perf_counter()
                out = subprocess.run([str(OPENCODE_BIN), "run", *argv, PROMPT], cwd=cwd, env=env,
                                     capture_output=True, text=True, timeout=180)
                wall = time.perf_counter() - start
                assert out.returncode == 0, (name, out.returncode, out.stderr[-500:])
                missing[name] += ANSWER not in out.stdout
                return wall
            return go

        phases: list[tuple[int, dict[str, Callable[[], float]]]] = [
            (3 * N, {"executor": executor_order("executor", None),
                     "executor+key": executor_order("executor+key", "bench-chat"),
                     "raw HTTP": raw_http}),
            (N, {"executor ": executor_order("executor", None),
                 "run --attach": cli("run --attach", ["--attach", server.url, "--dir", str(project)],
                                     project, server.env),
                 "run": cli("run", [], solo_root / "project", solo_env)}),
        ]
        for _, variants in phases:  # warm-up: instance bootstrap, first model load
            for fn in variants.values():
                fn()
        for series in overhead.values():
            series.clear()
        missing.update({name: 0 for name in missing})
        for rounds, variants in phases:
            for _ in range(rounds):
                for name, fn in variants.items():
                    times.setdefault(name.strip(), []).append(fn())

    version = subprocess.run([str(OPENCODE_BIN), "--version"], capture_output=True, text=True).stdout.strip()
    p50 = {name: statistics.median(v) for name, v in times.items()}
    print(f"opencode {version}; trivial scripted answer; {3 * N} HTTP-client orders and {N} CLI orders "
          "per variant, interleaved")
    print(f"{'variant':<14} {'orders':>6} {'p50 ms':>9} {'p90 ms':>9} {'min ms':>9}")
    for name, values in times.items():
        print(f"{name:<14} {len(values):>6} {p50[name] * 1000:9.1f} {pct(values, 90) * 1000:9.1f} "
              f"{min(values) * 1000:9.1f}")
    print("overhead per order = wall time - opencode's own time for the prompt:")
    for name, values in overhead.items():
        print(f"  {name:<12} p50 {statistics.median(values) * 1000:7.1f} ms   p90 {pct(values, 90) * 1000:7.1f} ms")
    ex = p50["executor"]
    print(f"executor / raw HTTP          = {ex / p50['raw HTTP']:.2f}")
    print(f"executor / run --attach      = {ex / p50['run --attach']:.3f}")
    print(f"executor / run (standalone)  = {ex / p50['run']:.3f}")
    for name, count in missing.items():
        print(f"{name}: exited 0 without the answer in {count} of {N} orders")
    print(json.dumps({"bench": "opencode", "p50_ms": {k: round(v * 1000, 1) for k, v in p50.items()},
                      "overhead_p50_ms": {k: round(statistics.median(v) * 1000, 1) for k, v in overhead.items()},
                      "answer_missing": missing}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
