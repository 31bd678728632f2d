"""How the bot follows orders and alerts: status messages, answers, delivery bookkeeping.

The fleet calls back on router threads; ``Follower._from_router`` hands each
event to the bot's event loop, where one task (``_pump``) applies them in
order. Everything here runs on that loop.

- A ``Tracker`` is one status message and the orders it follows (one order,
  or the parts of a fan-out, which share the message id). Edits of a status
  message are serialized and rate-limited (``min_edit_interval``); the text
  is computed when the edit is made, so the last edit shows the latest state.
- When every part has finished, the answer goes out (as a reply to the
  status message), then the status message gets its final text, then each
  part is marked delivered in the store. A delivery that fails is retried
  by the periodic tick; a restarted bot gets the rest from ``Fleet.pending()``.
- Alerts go to ``bot.alert_chats``. A problem (failing health check, silent
  worker, unreachable machine) is announced once while it lasts and its
  recovery once; the open problems are kept in the store's key-value table.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Coroutine

from galaxy_fleet.bot import render
from galaxy_fleet.order import DONE, RETRYABLE, TERMINAL, event_type

if TYPE_CHECKING:
    from telegram import Message
    from telegram.ext import Application, ContextTypes

    from telegram.ext import BaseRateLimiter

    from galaxy_fleet.bot.access import BotSettings, FloodPolicy
    from galaxy_fleet.control.fleet import Fleet, FleetEvent

log = logging.getLogger("galaxy.bot")

ACTIVE_ALERTS_KEY = "bot.active_alerts"  # in the store's key-value table: open problems survive restarts
# Problems reported once while they last, and the alert kinds that say they cleared.
PROBLEMS = ("health_failing", "worker_silent")
RECOVERY_OF = {"health_recovered": "health_failing", "worker_heard": "worker_silent", "node_up": "node_down"}
# Any other alert: the same kind and message from the same host is told once in this long.
REPEAT_AFTER = 3600.0
# Order alerts the user already sees in the order's own chat.
ORDER_ALERTS = (*(event_type(s) for s in TERMINAL if s != DONE), "order_lost")


@dataclass
class Tracker:
    """One status message and the orders it follows (one, or a fan-out's parts)."""
    chat_id: int
    message_id: int
    spec: str | None
    records: dict[str, Any]
    last_text: str = ""
    last_markup: str = ""
    last_edit: float = 0.0
    edit_task: asyncio.Task[None] | None = None
    dirty: bool = False
    delivered: dict[str, tuple[str, float | None]] = field(default_factory=dict)
    retry_after: float = 0.0  # when a failed delivery may be tried again (monotonic)
    # Edits of one message are serialized (concurrent requests may land out of order) and
    # deliveries too (the event pump, a submit and the periodic tick may all try).
    edit_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    finish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def key(self) -> tuple[int, int]:
        return (self.chat_id, self.message_id)

    @property
    def finished(self) -> bool:
        return all(r.terminal for r in self.records.values())

    @property
    def undelivered(self) -> list[Any]:
        return [r for r in self.records.values() if self.delivered.get(r.id) != (r.state, r.finished)]

    def ordered(self) -> list[Any]:
        return sorted(self.records.values(), key=lambda r: (r.host, r.id))


class Follower:
    """The order-following and alerting half of GalaxyBot (see bot.py)."""

    fleet: "Fleet"
    settings: "BotSettings"
    app: "Application | None"

    def _init_follower(self) -> None:
        self.trackers: dict[tuple[int, int], Tracker] = {}
        self.sent_alerts: set[str] = set()
        self.active_alerts: dict[str, dict[str, Any]] = {}
        self.recent_alerts: dict[str, float] = {}  # host, kind, message -> when it was last told
        self.events: asyncio.Queue[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pump: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()

    @property
    def bot(self) -> Any:
        assert self.app is not None
        return self.app.bot

    async def _send(self, chat_id: int, text: str, *, reply_to: int | None = None, parse_mode: str | None = "HTML",
                    **kwargs: Any) -> "Message":
        from telegram import ReplyParameters
        from telegram.error import BadRequest

        reply = ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to else None
        try:
            return await self.bot.send_message(chat_id, text, parse_mode=parse_mode, reply_parameters=reply,
                                               **kwargs)
        except BadRequest as exc:
            if parse_mode and "parse" in str(exc).lower():  # our HTML was refused: send it plain
                return await self.bot.send_message(chat_id, render.html_to_text(text), reply_parameters=reply,
                                                   **kwargs)
            raise

    # -- following orders -------------------------------------------------------------------
    def _from_router(self, ev: "FleetEvent") -> None:
        """Fleet callback, on a router thread: hand the event to the bot's loop."""
        loop, queue = self.loop, self.events
        if loop is None or queue is None:
            return
        try:
            loop.call_soon_threadsafe(queue.put_nowait, ev)
        except RuntimeError:  # the loop is closed: the bot is stopping; pending() catches up next start
            pass

    async def _pump(self) -> None:
        assert self.events is not None
        while True:
            ev = await self.events.get()
            try:
                await self._handle(ev)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not handle a %s event from %s", ev.kind, ev.host)

    async def _handle(self, ev: "FleetEvent") -> None:
        if ev.kind == "order" and ev.record is not None:
            rec = ev.record
            if rec.chat_id is None:
                return  # not from Telegram (galaxy send, MCP, Ansible)
            if rec.message_id is None:
                if rec.terminal and not rec.delivered:
                    status = await self._send(rec.chat_id, render.status_text([rec]))
                    rec.message_id = status.message_id
                else:
                    return
            tracker = self._track(rec)
            if tracker.finished:
                await self._finish(tracker)
            else:
                self._schedule_edit(tracker)
        elif ev.kind == "alert" and ev.alert is not None:
            await self._alert(ev)
        elif ev.kind in ("node_down", "node_up"):
            await self._node_state(ev)

    def _track(self, rec: Any) -> Tracker:
        key = (rec.chat_id, rec.message_id)
        tracker = self.trackers.get(key)
        if tracker is None:
            siblings = [rec]
            if rec.batch:
                siblings = [r for r in self.fleet.orders(100000, None, rec.batch)
                            if (r.chat_id, r.message_id) == key] or [rec]
            tracker = Tracker(rec.chat_id, rec.message_id, rec.target_spec, {r.id: r for r in siblings})
            for r in siblings:
                if r.delivered:
                    tracker.delivered[r.id] = (r.state, r.finished)
            self.trackers[key] = tracker
        old = tracker.records.get(rec.id)
        if old is None or rec.updated >= old.updated:
            tracker.records[rec.id] = rec
        return tracker

    def _markup(self, tracker: Tracker) -> Any:
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        recs = tracker.ordered()
        if not tracker.finished:
            first_active = next(r for r in recs if not r.terminal)
            label = "🚫 Cancel" if len(recs) == 1 else "🚫 Cancel all"
            return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=f"c:{first_active.id}")]])
        retry = [r for r in recs if r.state in RETRYABLE][:6]
        if not retry:
            return None
        return InlineKeyboardMarkup([[InlineKeyboardButton("🔁 Retry" + (f" {r.host}" if len(recs) > 1 else ""),
                                                           callback_data=f"r:{r.id}")] for r in retry])

    def _schedule_edit(self, tracker: Tracker) -> None:
        tracker.dirty = True
        if tracker.edit_task is None or tracker.edit_task.done():
            tracker.edit_task = asyncio.create_task(self._edit_loop(tracker))

    async def _edit_loop(self, tracker: Tracker) -> None:
        while tracker.dirty:
            wait = tracker.last_edit + self.settings.min_edit_interval - time.monotonic()
            if wait > 0 and not tracker.finished:
                await asyncio.sleep(wait)
            tracker.dirty = False
            await self._refresh(tracker)

    async def _refresh(self, tracker: Tracker) -> None:
        async with tracker.edit_lock:  # the text is computed inside: the last edit shows the latest state
            text = render.status_text(tracker.ordered(), tracker.spec)
            markup = self._markup(tracker)
            mkey = repr(markup.to_dict()) if markup else ""
            if text == tracker.last_text and mkey == tracker.last_markup:
                return
            if await self._edit(tracker.chat_id, tracker.message_id, text, markup):
                tracker.last_text, tracker.last_markup = text, mkey
                tracker.last_edit = time.monotonic()

    async def _edit(self, chat_id: int, message_id: int, text: str, markup: Any) -> bool:
        from telegram.constants import ParseMode
        from telegram.error import BadRequest, RetryAfter, TelegramError

        for _ in range(3):
            try:
                await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id,
                                                 parse_mode=ParseMode.HTML, reply_markup=markup)
                return True
            except RetryAfter as exc:  # the flood limiter gave up: wait once more, then try again
                await asyncio.sleep(retry_seconds(exc))
            except BadRequest as exc:
                if "not modified" in str(exc).lower():
                    return True
                if "parse" in str(exc).lower():
                    text, markup = render.html_to_text(text), markup
                    try:
                        await self.bot.edit_message_text(text, chat_id=chat_id, message_id=message_id,
                                                         reply_markup=markup)
                        return True
                    except TelegramError:
                        pass
                log.warning("cannot edit message %s in chat %s: %s", message_id, chat_id, exc)
                return False
            except TelegramError as exc:
                log.warning("cannot edit message %s in chat %s: %s", message_id, chat_id, exc)
                return False
        return False

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)  # a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: "asyncio.Task[Any]") -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background delivery failed", exc_info=task.exception())

    async def _typing(self, chat_id: int) -> None:
        from telegram.constants import ChatAction
        from telegram.error import TelegramError

        try:
            await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.debug("typing action in %s failed: %s", chat_id, exc)

    async def _finish(self, tracker: Tracker) -> None:
        async with tracker.finish_lock:
            await self._finish_locked(tracker)

    async def _finish_locked(self, tracker: Tracker) -> None:
        """All parts finished: final status, the answer, then mark them delivered."""
        from telegram.error import TelegramError

        todo = tracker.undelivered
        if not todo:
            self.trackers.pop(tracker.key, None)
            return
        tracker.dirty = False
        records = tracker.ordered()
        # Parts delivered before (e.g. a node that was given up on and answered later) are sent alone.
        show = records if len(todo) == len(records) or not tracker.delivered else todo
        try:
            await self._send_answer(tracker, show)  # the answer first: it is what the user waits for
        except TelegramError as exc:
            log.warning("answer for %s not delivered yet (%s); will retry", [r.id for r in todo], exc)
            tracker.retry_after = time.monotonic() + 5
            await self._refresh(tracker)
            return
        await self._refresh(tracker)
        from galaxy_fleet.control.fleet import FleetEvent

        for rec in todo:
            tracker.delivered[rec.id] = (rec.state, rec.finished)
            await asyncio.to_thread(self.fleet.delivered, FleetEvent("order", rec.host, record=rec))
        self.trackers.pop(tracker.key, None)

    async def _send_answer(self, tracker: Tracker, records: list[Any]) -> None:
        from telegram import ReplyParameters
        from telegram.constants import ParseMode

        md = render.answer_markdown(records, tracker.spec)
        parts = render.split_markdown(md, limit=render.TELEGRAM_LIMIT - 16, max_parts=self.settings.max_parts)
        if parts is not None:
            for part in render.number_parts(parts):
                await self._send(tracker.chat_id, part, reply_to=tracker.message_id)
            return
        content = render.answer_document(records)
        name = f"order-{records[0].id}.md" if len(records) == 1 else f"orders-{records[0].batch or records[0].id}.md"
        caption = render.document_summary(records, tracker.spec, name, len(content))
        await self.bot.send_document(tracker.chat_id, content.encode("utf-8"), filename=name, caption=caption,
                                     parse_mode=ParseMode.HTML,
                                     reply_parameters=ReplyParameters(tracker.message_id,
                                                                      allow_sending_without_reply=True))

    async def _follow_tick(self) -> None:
        """Every progress_interval: elapsed times, typing actions, retried deliveries."""
        now = time.monotonic()
        typing: set[int] = set()
        for tracker in list(self.trackers.values()):
            if tracker.finished:
                if now >= tracker.retry_after and not tracker.finish_lock.locked():
                    # In a task: a chat held back by the flood limits must not hold up the others.
                    self._background(self._finish(tracker))
                continue
            if any(r.state == "running" for r in tracker.records.values()):
                typing.add(tracker.chat_id)
            self._schedule_edit(tracker)
        for chat_id in typing:
            await self._typing(chat_id)

    # -- alerts -------------------------------------------------------------------------------
    def _load_active_alerts(self) -> dict[str, dict[str, Any]]:
        store = getattr(self.fleet, "store", None)
        if store is None:
            return {}
        try:
            return json.loads(store.get(ACTIVE_ALERTS_KEY) or "{}")
        except ValueError:
            return {}

    def _save_active_alerts(self) -> None:
        store = getattr(self.fleet, "store", None)
        if store is not None:
            store.put(ACTIVE_ALERTS_KEY, json.dumps(self.active_alerts))

    async def _broadcast(self, text: str, skip: set[int] | None = None) -> None:
        for chat_id in self.settings.alert_chats:
            if skip and chat_id in skip:
                continue
            await self._send(chat_id, text)

    async def _alert(self, ev: "FleetEvent") -> None:
        alert = ev.alert or {}
        alert_id = str(alert.get("id"))
        if alert_id in self.sent_alerts:
            await asyncio.to_thread(self.fleet.delivered, ev)
            return
        kind = str(alert.get("kind", "alert"))
        host = str(alert.get("host") or ev.host)
        message = str(alert.get("message") or kind)
        text: str | None
        if kind in RECOVERY_OF:
            family = f"{RECOVERY_OF[kind]}:{host}"
            opened = self.active_alerts.pop(family, None)
            text = None
            if opened is not None:
                text = (f"✅ <b>{render.esc(host)}</b> recovered: {render.esc(message)}\n"
                        f"(problem reported {render.ago(opened.get('since'))})")
        elif kind in PROBLEMS:
            family = f"{kind}:{host}"
            text = None
            if family not in self.active_alerts:
                self.active_alerts[family] = {"since": time.time(), "id": alert_id, "message": message}
                text = f"🚨 <b>{render.esc(host)}</b>: {render.esc(message)}"
        else:
            text = f"{'🚨' if alert.get('severity') in ('error', 'critical') else '⚠️'} " \
                   f"<b>{render.esc(host)}</b> · {render.esc(kind)}\n{render.esc(message)}"
            now = time.time()
            self.recent_alerts = {k: t for k, t in self.recent_alerts.items() if now - t < REPEAT_AFTER}
            key = json.dumps([host, kind, message])
            if key in self.recent_alerts:
                text = None  # the same problem raised again: told already
            else:
                self.recent_alerts[key] = now
            if text and kind in ORDER_ALERTS and alert.get("order_id"):
                rec = await asyncio.to_thread(self.fleet.order, str(alert["order_id"]))
                if kind == "order_cancelled" or (rec is not None and rec.chat_id is not None):
                    # Sent from a chat: its status message shows it, with a Retry button. The alert
                    # chats hear of failed orders nobody is watching (galaxy send, MCP, Ansible).
                    text = None
        if text:
            await self._broadcast(text)
        self._save_active_alerts()
        self.sent_alerts.add(alert_id)
        await asyncio.to_thread(self.fleet.delivered, ev)

    async def _node_state(self, ev: "FleetEvent") -> None:
        family = f"node_down:{ev.host}"
        assert self.app is not None and self.app.job_queue is not None
        if ev.kind == "node_up":
            for job in self.app.job_queue.get_jobs_by_name(family):
                job.schedule_removal()
            opened = self.active_alerts.pop(family, None)
            if opened is not None:
                self._save_active_alerts()
                await self._broadcast(f"🟢 <b>{render.esc(ev.host)}</b> is reachable again "
                                      f"(unreachable since {render.ago(opened.get('since'))})")
            return
        if family in self.active_alerts or self.app.job_queue.get_jobs_by_name(family):
            return
        self.app.job_queue.run_once(self._node_down_alert, self.settings.node_down_alert_after,
                                    data={"host": ev.host, "message": ev.message, "since": time.time()},
                                    name=family)

    async def _node_down_alert(self, context: "ContextTypes.DEFAULT_TYPE") -> None:
        data = context.job.data if context.job else None
        if not isinstance(data, dict):
            return
        host = data["host"]
        machine = next((m for m in await asyncio.to_thread(self.fleet.machines) if m["name"] == host), None)
        if machine is None or machine.get("connected"):
            return
        family = f"node_down:{host}"
        if family in self.active_alerts:
            return
        self.active_alerts[family] = {"since": data["since"], "message": data.get("message")}
        self._save_active_alerts()
        await self._broadcast(f"🔴 <b>{render.esc(host)}</b> is unreachable: "
                              f"{render.esc(machine.get('error') or data.get('message') or 'no connection')}")


def retry_seconds(exc: Any) -> float:
    """How long Telegram asked to wait (RetryAfter): an int or a timedelta, depending on the PTB
    version and settings; read without PTB 22's deprecation warning about its type."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return float(value.total_seconds()) if hasattr(value, "total_seconds") else float(value)


# -- Telegram's flood limits -------------------------------------------------------------------
# Requests that put something into a chat (messages, documents, edits); typing actions, callback
# answers and the bot's own settings are not counted.
LIMITED_EXTRA = {"copyMessage", "copyMessages", "forwardMessage", "forwardMessages", "stopPoll"}


def is_limited(endpoint: str) -> bool:
    return ((endpoint.startswith("send") and endpoint != "sendChatAction") or endpoint.startswith("edit")
            or endpoint in LIMITED_EXTRA)


@dataclass
class _ChatQueue:
    lock: asyncio.Lock
    limiters: list[Any]


class FloodLimiter:
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

    def __init__(self, policy: "FloodPolicy"):
        from aiolimiter import AsyncLimiter

        self.policy = policy
        self.overall = AsyncLimiter(policy.overall_per_second, 1) if policy.overall_per_second else None
        self.chats: dict[Any, _ChatQueue] = {}
        self.flood_waits = 0  # 429 answers waited out

    async def initialize(self) -> None:
        return None

    async def shutdown(self) -> None:
        return None

    def _queue(self, chat_id: Any) -> _ChatQueue:
        from aiolimiter import AsyncLimiter

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

    async def process_request(self, callback: Callable[..., Coroutine[Any, Any, Any]], args: Any,
                              kwargs: dict[str, Any], endpoint: str, data: dict[str, Any],
                              rate_limit_args: int | None) -> Any:
        from telegram.error import RetryAfter

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
                        log.error("Telegram flood limit: %s to chat %s refused again (retry after %g s); "
                                  "gave up after %d retries", endpoint, chat_id, wait, max_retries)
                        raise
                    attempt += 1
                    self.flood_waits += 1
                    log.warning("Telegram flood limit: %s to chat %s refused, waiting %g s as asked "
                                "(retry %d of %d)", endpoint, chat_id, wait, attempt, max_retries)
                    await asyncio.sleep(wait + 0.1)


def flood_limiter(policy: "FloodPolicy") -> "BaseRateLimiter[int]":
    """A FloodLimiter that is also PTB's ``BaseRateLimiter`` (imported only when the bot is built)."""
    from telegram.ext import BaseRateLimiter

    cls = type("FloodLimiter", (FloodLimiter, BaseRateLimiter), {"__slots__": ()})
    return cls(policy)
