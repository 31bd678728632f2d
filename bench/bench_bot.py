#!/usr/bin/env python3
"""Order overhead through the Telegram bot, against the Fleet alone in the same run.

The real bot process (`python -m galaxy_fleet.bot`) polls the telegram-test-api
emulator through the tests' compatibility proxy (tests/support/telegram_emulator.py);
one local node runs a real `galaxy worker` with a no-op executor (`/bin/true`).
A user sends N plain-text orders, one after the other.

- bot overhead: from the moment the proxy hands the update to the bot (the
  bot receiving it) to the moment the bot sends the answer (the proxy gets
  the sendMessage request); it includes the status message sent before the
  order is stored, routing, the worker, and the answer's rendering;
- baseline: the same no-op order through ``Fleet.submit`` + ``Fleet.wait`` in
  this process (its own store, the same node), i.e. routing without Telegram;
  the difference is what the bot adds;
- end to end as the phone sees it: from the user's message reaching the
  emulator to the answer appearing in the chat (includes long-poll wake-up);
- the bot's resident memory after the run.

Run: `make bench-bot` (or .venv/bin/python bench/bench_bot.py [--orders 200]).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "bot"))

from botlab import ALICE, BotLab, is_answer, new_token, wait_for  # noqa: E402
from benchlib import pct, rss_mb  # noqa: E402






def bot_orders(lab: BotLab, n: int, warmup: int) -> tuple[list[float], list[float]]:
    user = lab.user(ALICE)
    proxy = lab.emulator.proxy
    assert proxy is not None
    overhead, end_to_end = [], []
    for i in range(warmup + n):
        text = f"noop order {i}"
        answers_before = sum(1 for _, chat, t in proxy.outgoing if chat == ALICE and "· done in" in t)
        t_user = time.time()
        user.send(text)
        wait_for(lambda: sum(1 for _, chat, t in proxy.outgoing if chat == ALICE and "· done in" in t)
                 > answers_before, 30, interval=0.001, what=f"the answer to order {i}")
        t_sent = next(ts for ts, chat, t in reversed(proxy.outgoing) if chat == ALICE and "· done in" in t)
        t_recv = next(ts for ts, u in proxy.first_delivery.values()
                      if (u.get("message") or {}).get("text") == text)
        # The chat shows it once the emulator has it (history is read over HTTP).
        wait_for(lambda: any(is_answer(m) for m in user.messages()[-1:]), 30, interval=0.001)
        t_seen = time.time()
        if i >= warmup:
            overhead.append(t_sent - t_recv)
            end_to_end.append(t_seen - t_user)
    return overhead, end_to_end


def fleet_orders(lab: BotLab, root: Path, n: int, warmup: int) -> list[float]:
    from galaxy_fleet.config import from_dict
    from galaxy_fleet.control import Fleet

    inventory = lab.control_dir / "inventory.yml"
    cfg = from_dict({"host": "bench", "spool_dir": str(root / "bench-spool"),
                     "control": {"inventory": str(inventory), "store": str(root / "bench.db")}})
    fleet = Fleet(cfg)
    fleet.start()
    try:
        assert fleet.wait_connected(30)
        out = []
        for i in range(warmup + n):
            t0 = time.perf_counter()
            recs = fleet.submit("web1", "noop", user="bench")
            done = fleet.wait([r.id for r in recs], timeout=30)
            if i >= warmup:
                out.append(time.perf_counter() - t0)
            assert all(r.state == "done" for r in done), [(r.state, r.error) for r in done]
        return out
    finally:
        fleet.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        root = Path(tmp)
        lab = BotLab(root / "lab", new_token(), nodes={"web1": ["web"]}, ghost=False, verbose=False,
                     default_executor="noop", rate_per_minute=0, progress_interval=5, min_edit_interval=1.0)
        try:
            lab.start()
            overhead, e2e = bot_orders(lab, args.orders, args.warmup)
            assert lab.bot is not None
            rss = rss_mb(lab.bot.pid)
            base = fleet_orders(lab, root, args.orders, args.warmup)
        finally:
            lab.stop()
    ms = 1000.0
    print(f"bench_bot: {args.orders} sequential no-op orders through the bot (one local node, /bin/true)")
    print(f"bot: update received -> answer sent : p50 {pct(overhead, 50)*ms:7.2f} ms  "
          f"p99 {pct(overhead, 99)*ms:7.2f} ms")
    print(f"baseline Fleet.submit -> answer     : p50 {pct(base, 50)*ms:7.2f} ms  p99 {pct(base, 99)*ms:7.2f} ms")
    print(f"added by the bot (p50 difference)   : {(pct(overhead, 50) - pct(base, 50))*ms:7.2f} ms"
          f"  (ratio bot / baseline p50: {pct(overhead, 50) / pct(base, 50):.2f}x)")
    print(f"phone view, message -> answer shown : p50 {pct(e2e, 50)*ms:7.2f} ms  p99 {pct(e2e, 99)*ms:7.2f} ms"
          f"  (mean {statistics.mean(e2e)*ms:.2f} ms)")
    print(f"bot process RSS after the run       : {rss:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
