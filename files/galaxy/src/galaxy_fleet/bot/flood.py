"""Telegram's flood limits: ``FloodLimiter``, the rate limiter every request of the bot goes through.

Telegram refuses a bot that sends too fast (HTTP 429 with ``retry_after``):
roughly 30 messages a second overall, one a second in a chat (short bursts
tolerated) and 20 a minute in a group. The limits are ``bot.flood``
(``access.FloodPolicy``).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import RetryAfter
from telegram.ext import BaseRateLimiter

from galaxy_fleet.bot.access import FloodPolicy

log = logging.getLogger("galaxy.bot")

# Requests that put something into a chat (messages, documents, edits); typing actions, callback
# answers and the bot's own settings are not counted.
LIMITED_EXTRA = {"copyMessage", "copyMessages", "forwardMessage", "forwardMessages", "stopPoll"}


def is_limited(endpoint: str) -> bool:
    return (
        (endpoint.startswith("send") and endpoint != "sendChatAction")
        or endpoint.startswith("edit")
        or endpoint in LIMITED_EXTRA
    )


def retry_seconds(exc: Any) -> float:
    """How long Telegram asked to wait (RetryAfter): an int or a timedelta, depending on the PTB
    version and settings; read without PTB 22's deprecation warning about its type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return float(value.total_seconds()) if hasattr(value, "total_seconds") else float(value)


@dataclass
class _ChatQueue:
    lock: asyncio.Lock
    limiters: list[AsyncLimiter]


class FloodLimiter(BaseRateLimiter[int]):
    """PTB rate limiter (``ApplicationBuilder.rate_limiter``) that keeps Telegram's flood limits.

    PTB's own ``AIORateLimiter`` limits all chats together and groups, but not a single private
    chat, and a 429 there halts every request; this one is built on the same aiolimiter buckets:

    - all chats together: ``overall_per_second`` (a bucket of that size, refilled every second);
    - each chat: ``chat_per_second`` after a burst of ``chat_burst``; each group chat (negative
      id or @name) also ``group_per_minute``;
    - the requests of one chat go one at a time, in the order they were made. When Telegram
      answers 429 (``RetryAfter``), that chat waits ``retry_after`` (+0.1 s) and the same request
      is sent again, up to ``max_retries`` times: a 429 means the message was not taken, so
      nothing is lost or sent twice, and nothing later in the chat overtakes it. Other chats go on.
    """

    MAX_CHATS = 1024  # idle chats beyond this are forgotten

    def __init__(self, policy: FloodPolicy):
        self.policy = policy
        self.overall = AsyncLimiter(policy.overall_per_second, 1) if policy.overall_per_second else None
        self.chats: dict[Any, _ChatQueue] = {}
        self.flood_waits = 0  # 429 answers waited out

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _queue(self, chat_id: Any) -> _ChatQueue:
        queue = self.chats.get(chat_id)
        if queue is not None:
            return queue
        if len(self.chats) >= self.MAX_CHATS:
            for key, q in list(self.chats.items()):
                if not q.lock.locked() and all(lim.has_capacity(lim.max_rate) for lim in q.limiters):
                    del self.chats[key]
        p = self.policy
        limiters = []
        if p.chat_per_second:
            limiters.append(AsyncLimiter(p.chat_burst, p.chat_burst / p.chat_per_second))
        if p.group_per_minute and (isinstance(chat_id, str) or chat_id < 0):
            limiters.append(AsyncLimiter(p.group_per_minute, 60))
        queue = self.chats[chat_id] = _ChatQueue(asyncio.Lock(), limiters)
        return queue

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        chat_id = data.get("chat_id")
        if chat_id is None or not is_limited(endpoint):
            return await callback(*args, **kwargs)
        try:
            chat_id = int(chat_id)
        except (TypeError, ValueError):
            chat_id = str(chat_id)
        max_retries = self.policy.max_retries if rate_limit_args is None else rate_limit_args
        queue = self._queue(chat_id)
        async with queue.lock:
            attempt = 0
            while True:
                for limiter in queue.limiters:
                    await limiter.acquire()
                if self.overall is not None:
                    await self.overall.acquire()
                try:
                    return await callback(*args, **kwargs)
                except RetryAfter as exc:
                    wait = retry_seconds(exc)
                    if attempt >= max_retries:
                        log.error(
                            "Telegram flood limit: %s to chat %s refused again (retry after %g s); "
                            "gave up after %d retries",
                            endpoint,
                            chat_id,
                            wait,
                            max_retries,
                        )
                        raise
                    attempt += 1
                    self.flood_waits += 1
                    log.warning(
                        "Telegram flood limit: %s to chat %s refused, waiting %g s as asked (retry %d of %d)",
                        endpoint,
                        chat_id,
                        wait,
                        attempt,
                        max_retries,
                    )
                    await asyncio.sleep(wait + 0.1)


def flood_limiter(policy: FloodPolicy) -> FloodLimiter:
    """The rate limiter for ``ApplicationBuilder.rate_limiter``."""
    return FloodLimiter(policy)
