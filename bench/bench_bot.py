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
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "tests" / "bot"))

from botlab import ALICE, BotLab, is_answer, new_token, wait_for  # noqa: E402
from benchlib import pct, rss_mb  # noqa: E402






def bot_orders(user: Any, proxy: Any, text_of: Callable[[int], str], n: int, warmup: int,
               answered: str = "· done in") -> tuple[list[float], list[float]]:
    """Send n (+ warmup) orders one after the other; per order the bot's part (update handed
    to the bot -> answer sent, both seen at the proxy) and the phone's view."""
    overhead, end_to_end = [], []
    for i in range(warmup + n):
        text = text_of(i)
        answers_before = sum(1 for _, chat, t in proxy.outgoing if chat == ALICE and answered in t)
        t_user = time.time()
        user.send(text)
        wait_for(lambda: sum(1 for _, chat, t in proxy.outgoing if chat == ALICE and answered in t)
                 > answers_before, 60, interval=0.001, what=f"the answer to order {i}")
        t_sent = next(ts for ts, chat, t in reversed(proxy.outgoing) if chat == ALICE and answered in t)
        t_recv = max((uid, ts) for uid, (ts, u) in list(proxy.first_delivery.items())
                     if (u.get("message") or {}).get("text") == text)[1]
        # The chat shows it once the emulator has it (history is read over HTTP).
        wait_for(lambda: any(is_answer(m) for m in user.messages()[-1:]), 30, interval=0.001)
        t_seen = time.time()
        if i >= warmup:
            overhead.append(t_sent - t_recv)
            end_to_end.append(t_seen - t_user)
    return overhead, end_to_end


def fleet_orders(lab: BotLab, root: Path, n: int, warmup: int) -> list[float]:
    from galaxy_fleet.config import from_dict
    from galaxy_fleet.control.fleet import Fleet

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
            recs = fleet.submit("web1", "noop", sender="bench")
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
    parser.add_argument("--lab", action="store_true",
                        help="the bot as deployed on the lab's control machine (needs `make demo` first)")
    args = parser.parse_args()
    if args.lab:
        return lab_main(args)
    with tempfile.TemporaryDirectory(prefix="bench-bot-") as tmp:
        root = Path(tmp)
        # The flood limiter is off (see lab_main).
        lab = BotLab(root / "lab", new_token(), nodes={"web1": ["web"]}, ghost=False, verbose=False,
                     default_executor="noop", rate_per_minute=0, progress_interval=5, min_edit_interval=1.0,
                     flood={"chat_per_second": 0, "overall_per_second": 0})
        try:
            lab.start()
            assert lab.emulator.proxy is not None
            overhead, e2e = bot_orders(lab.user(ALICE), lab.emulator.proxy, lambda i: f"noop order {i}",
                                       args.orders, args.warmup)
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


def lab_main(args: argparse.Namespace) -> int:
    """The bot deployed by site.yml on the lab's control machine (GALAXY_LAB_ID, default 0),
    Telegram's emulator on this host's lab address; the nodes' default executor is the shell
    executor for the run, so the trivial order `hostname` is the no-op. Restored at the end."""
    import json
    import os
    import shutil
    import subprocess

    sys.path.insert(0, str(REPO / "tests" / "collection"))
    from botlab import bot_settings
    from collection import failures, playbook
    from lab_bench import LAB
    from support.telegram_emulator import TelegramEmulator

    inventory = Path(os.environ.get("GALAXY_LAB_INVENTORY", REPO / "inventory" / "lab" / "hosts.yml"))
    if not inventory.exists():
        raise SystemExit(f"{inventory} is missing: deploy the lab first (make demo)")
    lab_id = os.environ.get("GALAXY_LAB_ID", "0") or "0"
    root = Path(tempfile.mkdtemp(prefix="bench-bot-lab-"))
    token = new_token()
    emulator = TelegramEmulator(token, proxy_host=f"198.18.{lab_id}.1")

    def deploy(*extra: str) -> None:
        cp = playbook(inventory, "site.yml", *extra)
        if cp.returncode != 0:
            raise SystemExit(f"site.yml failed:\n{failures(cp.stdout + cp.stderr)}")

    def on_control(command: str) -> str:
        return subprocess.run([*LAB, "ssh", "control", "--", command], capture_output=True, text=True,
                              timeout=60, check=True).stdout

    try:
        emulator.start(root)
        # The flood limiter is off (per chat 1 message/s, overall 30/s): orders back to back from
        # one chat would be paced by it, by design; the bench measures the bot's routing.
        settings = bot_settings(emulator.api_base_url, default_machine="web1", rate_per_minute=0,
                                progress_interval=5, min_edit_interval=1.0,
                                flood={"chat_per_second": 0, "overall_per_second": 0})
        secret = root / "bot-vars.json"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({"galaxy_control_bot_enabled": True, "galaxy_control_bot_token": token,
                       "galaxy_control_bot_authorized_users": settings.pop("authorized_users"),
                       "galaxy_control_bot_settings": settings,
                       "galaxy_node_worker_default_executor": "shell"}, fh)
        t0 = time.monotonic()
        deploy("-e", f"@{secret}")
        secret.unlink()
        print(f"deployed the bot on the lab's control machine in {time.monotonic() - t0:.0f} s")
        assert emulator.proxy is not None
        proxy = emulator.proxy
        wait_for(lambda: proxy.commands, 60, what="the deployed bot to start")
        alice = emulator.user(ALICE)
        overhead, phone = bot_orders(alice, proxy, lambda i: "hostname", args.orders, args.warmup)
        n_fan = max(20, args.orders // 5)
        fan, _ = bot_orders(alice, proxy, lambda i: "/order all hostname", n_fan, 3, answered="2/2 done")
        one, _ = bot_orders(alice, proxy, lambda i: "/order web1 hostname", n_fan, 3)
        rss_kb = int(on_control("ps -o rss= -p $(systemctl show -p MainPID --value galaxy-bot)").strip())
        ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
        base = []
        for _ in range(5):
            t = time.perf_counter()
            subprocess.run([ansible, "web1", "-i", str(inventory), "-m", "ansible.builtin.command", "-a", "hostname"],
                           check=True, capture_output=True, timeout=120,
                           env={**os.environ, "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1"})
            base.append(time.perf_counter() - t)
    finally:
        emulator.stop()
        print("restoring the lab's deployment (bot off, default executor back) ...")
        deploy()
        shutil.rmtree(root, ignore_errors=True)
    ms = 1000.0
    p50, p99 = pct(overhead, 50), pct(overhead, 99)
    print(f"bench_bot --lab: {args.orders} sequential trivial orders (`hostname`, shell executor) through the bot "
          f"on the lab's control machine, over SSH to web1")
    print(f"bot: update received -> answer sent : p50 {p50*ms:7.2f} ms  p99 {p99*ms:7.2f} ms"
          f"  | target p50 < 20 ms: {'met' if p50 < 0.020 else 'NOT met'}, p99 < 100 ms: "
          f"{'met' if p99 < 0.100 else 'NOT met'}")
    print(f"baseline `ansible web1 -m command`  : median {statistics.median(base)*ms:7.1f} ms"
          f"  (ratio ansible / bot p50: {statistics.median(base) / p50:.0f}x; target >= 50x)")
    print(f"fan-out /order all (2 nodes) p50    : {pct(fan, 50)*ms:7.2f} ms vs one node {pct(one, 50)*ms:7.2f} ms"
          f"  (ratio {pct(fan, 50) / pct(one, 50):.2f}x; target < 2x)")
    print(f"phone view, message -> answer shown : p50 {pct(phone, 50)*ms:7.2f} ms  p99 {pct(phone, 99)*ms:7.2f} ms")
    print(f"bot process RSS (lab connected)     : {rss_kb / 1024:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
