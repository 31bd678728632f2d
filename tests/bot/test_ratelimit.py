"""Telegram's flood limits: the bot paces what it sends and waits out 429 answers.

The real bot process, real workers, the emulator behind its proxy; the proxy answers 429 with
``retry_after`` when told to (``emulator.flood``) and records when each call arrived. Time is only
ever checked as a lower bound (the limiter's spacing, the wait Telegram asked for): a slow machine
makes gaps longer, never shorter.
"""

from __future__ import annotations

import re
import time
from typing import Callable

import pytest

from botlab import CAROL, BotLab, final_status, wait_for
from support.telegram_emulator import Call

RATE, BURST = 1.0, 3  # the defaults: one message a second per chat after a burst of three
JITTER = 0.05  # two calls leave the bot at least this close to their spacing when they reach the proxy


def assert_paced(calls: list[Call], rate: float = RATE, burst: int = BURST) -> None:
    """A leaky bucket of ``burst`` leaking ``rate``/s: any k calls span at least (k - burst)/rate s."""
    times = [c.time for c in calls]
    for i in range(len(times)):
        for j in range(i + burst, len(times)):
            least = (j - i + 1 - burst) / rate
            assert times[j] - times[i] >= least - JITTER, \
                f"calls {i} and {j} only {times[j] - times[i]:.3f} s apart (at least {least:.2f} s expected)"


def assert_waited_out(calls: list[Call], retry_after: float) -> int:
    """After each 429 the next call to the chat came no sooner than Telegram asked; the number of 429s."""
    refused = 0
    for k, c in enumerate(calls):
        if c.status == 429:
            refused += 1
            assert k + 1 < len(calls), "a refused call was never sent again"
            assert calls[k + 1].time - c.time >= retry_after - JITTER
    return refused


def test_alert_burst_arrives_once_in_order_despite_429(make_lab: Callable[..., BotLab]) -> None:
    from galaxy_fleet.node import outbox
    from galaxy_fleet.node.spool import Spool

    lab = make_lab(ghost=False, alert_chats=[CAROL])
    emu = lab.emulator
    n, floods = 20, 3
    emu.flood(floods, retry_after=1, methods=("sendMessage",), chat_id=CAROL)
    spool = Spool(lab.nodes["web1"].spool)
    for i in range(n):
        outbox.post(spool, "web1", "burst_check", f"burst {i:02d}", severity="warning")

    def burst() -> list[str]:
        return [m.text for m in emu.bot_messages(CAROL) if "burst_check" in m.text]

    wait_for(lambda: len(burst()) >= n, 120, what=f"{n} alerts in the chat")
    time.sleep(1.5)  # nothing more comes
    texts = burst()
    assert [re.search(r"burst \d\d", t).group(0) for t in texts] == [f"burst {i:02d}" for i in range(n)]
    calls = emu.requests("sendMessage", CAROL)
    assert [c.status for c in calls].count(429) == floods and [c.status for c in calls].count(200) == n
    assert assert_waited_out(calls, 1.0) == floods
    assert_paced(calls)
    # Every alert is marked delivered once Telegram took it.
    wait_for(lambda: all(a["delivered"] for a in lab.store().alerts()), 10, what="alerts marked delivered")
    # The flood waits are logged, the token is not.
    log = lab.bot_log()
    waits = re.findall(r"WARNING galaxy.bot: Telegram flood limit: sendMessage to chat 1004 refused, "
                       r"waiting 1 s as asked \(retry (\d) of 5\)", log)
    assert waits == ["1", "2", "3"]  # the same alert refused three times in a row, then taken
    assert lab.token not in log and lab.token.split(":")[1] not in log
    ok = [c.time for c in calls if c.status == 200]
    print(f"\n{n} alerts to one chat with {floods} injected 429 (retry_after 1 s): "
          f"{ok[-1] - calls[0].time:.1f} s from the first call to the last answer")


def test_answers_and_edits_in_one_chat_survive_429(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab(ghost=False)
    emu = lab.emulator
    carol = lab.user(CAROL)
    start = carol.last_id()
    # Statuses, their edits and split answers all compete for the one chat; Telegram refuses every
    # other call, six times in all (so the 429s fall on statuses, edits and answer parts alike).
    emu.flood(6, retry_after=1, methods=("sendMessage", "editMessageText"), chat_id=CAROL, every=2)
    orders = 3
    for k in range(orders):
        carol.send(f"/order web{1 + k % 2} for i in $(seq 1 600); do echo ans{k}-line-$i; done")
    answers: dict[int, list[str]] = {}

    def collected() -> bool:
        for k in range(orders):  # the status message shows the payload (`-line-$i`), not the output
            answers[k] = [m.text for m in carol.messages()
                          if m.message_id > start and re.search(rf"ans{k}-line-\d", m.text)]
        return all(len(v) >= 3 for v in answers.values())

    wait_for(collected, 180, what="every part of every answer")
    time.sleep(1.5)
    collected()
    for k in range(orders):
        # Split into parts (max_parts 3 in the lab), each sent once, in order.
        assert [re.search(r"\((\d/\d)\)</i>$", t).group(1) for t in answers[k]] == ["1/3", "2/3", "3/3"]
        assert f"ans{k}-line-1\n" in answers[k][0] and f"ans{k}-line-600" in answers[k][-1]
    # Each status message ends done (its last edit went through after the 429s).
    recs = [r for r in lab.orders() if "ans" in r.payload]
    assert len(recs) == orders and all(r.state == "done" for r in recs)
    for rec in recs:
        assert final_status(carol, rec.message_id).text.startswith("✅")
    wait_for(lambda: all(r.delivered for r in lab.orders() if "ans" in r.payload), 10, what="answers delivered")
    calls = emu.requests(chat_id=CAROL)
    limited = [c for c in calls if c.method in ("sendMessage", "editMessageText")]
    assert [c.status for c in limited].count(429) == 6
    assert_waited_out(limited, 1.0)
    assert_paced(limited)
    # Typing actions are not held back by the flood limit (they are not counted).
    assert [c for c in calls if c.method == "sendChatAction"]
    sent = [c for c in limited if c.method == "sendMessage" and c.status == 200]
    print(f"\n{orders} orders, {len(sent)} messages and "
          f"{len([c for c in limited if c.method == 'editMessageText' and c.status == 200])} edits in one chat, "
          f"6 injected 429: {sent[-1].time - limited[0].time:.1f} s")


# -- the limiter itself, in this process (PTB's real RetryAfter, aiolimiter's real buckets) ----------
@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter(int) itself warns
def test_flood_limiter_orders_retries_and_gives_up() -> None:
    import asyncio

    from telegram.error import RetryAfter

    from galaxy_fleet.bot.access import FloodPolicy
    from galaxy_fleet.bot.flood import flood_limiter

    async def go() -> None:
        from telegram.ext import BaseRateLimiter

        limiter = flood_limiter(FloodPolicy(max_retries=2))
        assert isinstance(limiter, BaseRateLimiter)
        loop = asyncio.get_running_loop()
        log: list[tuple[str, float]] = []
        refuse = {"m2": 1, "never": 99}  # how many times Telegram says 429 to each

        async def call(endpoint: str, data: dict) -> str:
            key = data.get("text", endpoint)
            log.append((key, loop.time()))
            if refuse.get(key, 0) > 0:
                refuse[key] -= 1
                raise RetryAfter(1)
            return key

        def request(endpoint: str, **data: object) -> "asyncio.Task[object]":
            return asyncio.ensure_future(limiter.process_request(call, (endpoint, data), {}, endpoint, data, None))

        sends = [request("sendMessage", chat_id=7, text=f"m{i}") for i in range(6)]
        await asyncio.sleep(0)
        typing = request("sendChatAction", chat_id=7)  # not counted, not queued behind the chat
        other = request("sendMessage", chat_id=8, text="other chat")
        assert await typing == "sendChatAction" and await other == "other chat"
        assert await asyncio.gather(*sends) == [f"m{i}" for i in range(6)]
        sent = [k for k, _ in log if k.startswith("m")]
        assert sent == ["m0", "m1", "m2", "m2", "m3", "m4", "m5"]  # m2 again after its 429; nothing overtook it
        # Typing and the other chat went out while m2 was still waiting for its retry.
        keys = [k for k, _ in log]
        assert keys.index("sendChatAction") < len(keys) - 1 - keys[::-1].index("m2")
        assert keys.index("other chat") < len(keys) - 1 - keys[::-1].index("m2")
        times = [t for k, t in log if k.startswith("m")]
        first_m2, again_m2 = times[2], times[3]
        assert again_m2 - first_m2 >= 1.0  # the wait Telegram asked for
        assert times[-1] - times[0] >= (len(times) - BURST) / RATE - 0.01  # the chat's pace
        assert limiter.flood_waits == 1
        # Refused more often than max_retries: the error reaches the caller (who may try later).
        try:
            await request("sendMessage", chat_id=9, text="never")
        except RetryAfter:
            pass
        else:
            raise AssertionError("RetryAfter expected")
        assert [k for k, _ in log].count("never") == 3

    asyncio.run(go())
