"""How the bot follows orders and alerts: status messages, answers, delivery bookkeeping.

``Follower`` is one object the application holds (``GalaxyBot.follow``). The
fleet calls back on router threads; ``Follower._from_router`` hands each
event to the bot's event loop, where one task (``_pump``) applies them in
order. Everything here runs on that loop; the texts come from render.py, the
buttons from buttons.py, and messenger.py sends them.

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
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from telegram.error import TelegramError
from telegram.ext import ContextTypes, JobQueue

from galaxy_fleet.bot import buttons, render
from galaxy_fleet.bot.access import BotSettings
from galaxy_fleet.bot.messenger import Messenger
from galaxy_fleet.bot.permissions import PermissionRelay
from galaxy_fleet.control.fleet import Fleet, FleetEvent
from galaxy_fleet.order import DONE, RETRYABLE, TERMINAL, event_type

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
    """Follows the orders sent from chats (one status message each, then the answer) and tells
    the alert chats about alerts and unreachable machines."""

    def __init__(self, fleet: Fleet, settings: BotSettings, tg: Messenger, jobs: JobQueue[Any]):
        self.fleet = fleet
        self.settings = settings
        self.tg = tg
        self.jobs = jobs
        self.trackers: dict[tuple[int, int], Tracker] = {}
        self.sent_alerts: set[str] = set()
        self.active_alerts: dict[str, dict[str, Any]] = {}
        self.recent_alerts: dict[str, float] = {}  # host, kind, message -> when it was last told
        self.events: asyncio.Queue[Any] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.pump: asyncio.Task[None] | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.permissions = PermissionRelay(fleet, settings, tg, jobs)  # the agents' prompts (permissions.py)

    # -- start and stop -----------------------------------------------------------------------
    async def start(self) -> None:
        """Once the application runs: hear the fleet's events, follow again the orders still moving
        when the bot last stopped, deliver the answers and alerts that were pending."""
        self.loop = asyncio.get_running_loop()
        self.events = asyncio.Queue()
        self.active_alerts = self._load_active_alerts()
        self.fleet.subscribe(self._from_router)
        cutoff = time.time() - 86400
        for rec in await asyncio.to_thread(self.fleet.orders, 500):
            if not rec.terminal and rec.chat_id is not None and rec.message_id is not None and rec.created > cutoff:
                self._track(rec)
        for ev in await asyncio.to_thread(self.fleet.pending):
            self.events.put_nowait(ev)
        self.pump = asyncio.create_task(self._pump(), name="galaxy-bot-events")
        # A machine that is unreachable from the start never goes "down": check each once.
        connect = float(getattr(getattr(self.fleet, "settings", None), "connect_timeout", 10.0))
        for m in await asyncio.to_thread(self.fleet.machines):
            self.jobs.run_once(
                self._node_down_alert,
                max(self.settings.node_down_alert_after, connect),
                data={"host": m["name"], "message": "", "since": time.time()},
                name=f"node_down:{m['name']}",
            )

    async def stop(self) -> None:
        for task in list(self.tasks):  # deliveries held back by the flood limits: done after a restart
            task.cancel()
        if self.pump:
            self.pump.cancel()
            try:
                await self.pump
            except (asyncio.CancelledError, Exception):
                pass

    async def follow(self, records: list[Any], chat_id: int, message_id: int, spec: str) -> None:
        """Orders just submitted from a chat, all with the status message ``message_id``."""
        for rec in records:
            self._track(rec)
        tracker = self.trackers.get((chat_id, message_id))
        if tracker is not None:
            tracker.spec = spec
            if tracker.finished:
                await self._finish(tracker)
            else:
                self._schedule_edit(tracker)
                await self.tg.typing(chat_id)

    def parts(self, rec: Any) -> list[Any]:
        """The orders that share ``rec``'s status message (a fan-out's parts), as last heard."""
        tracker = self.trackers.get((rec.chat_id, rec.message_id)) if rec.message_id else None
        return list(tracker.records.values()) if tracker else [rec]

    # -- following orders -------------------------------------------------------------------
    def _from_router(self, ev: FleetEvent) -> None:
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

    async def _handle(self, ev: FleetEvent) -> None:
        if ev.kind == "order" and ev.record is not None:
            rec = ev.record
            if rec.chat_id is None:
                return  # not from Telegram (galaxy send, MCP, Ansible)
            if rec.message_id is None:
                if rec.terminal and not rec.delivered:
                    status = await self.tg.send(rec.chat_id, render.status_text([rec]))
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
        elif ev.kind == "permission":
            await self.permissions.on_event(ev)

    def _track(self, rec: Any) -> Tracker:
        key = (rec.chat_id, rec.message_id)
        tracker = self.trackers.get(key)
        if tracker is None:
            siblings = [rec]
            if rec.batch:
                siblings = [
                    r for r in self.fleet.orders(100000, None, rec.batch) if (r.chat_id, r.message_id) == key
                ] or [rec]
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
        recs = tracker.ordered()
        if not tracker.finished:
            first_active = next(r for r in recs if not r.terminal)
            return buttons.cancel(first_active.id, several=len(recs) > 1)
        retry = [r for r in recs if r.state in RETRYABLE][:6]
        if not retry:
            return None
        return buttons.retry(retry, with_host=len(recs) > 1)

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
            if await self.tg.edit(tracker.chat_id, tracker.message_id, text, markup):
                tracker.last_text, tracker.last_markup = text, mkey
                tracker.last_edit = time.monotonic()

    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)  # a reference until it is done (the loop keeps only weak ones)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background delivery failed", exc_info=task.exception())

    async def _finish(self, tracker: Tracker) -> None:
        async with tracker.finish_lock:
            await self._finish_locked(tracker)

    async def _finish_locked(self, tracker: Tracker) -> None:
        """All parts finished: final status, the answer, then mark them delivered."""
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
        for rec in todo:
            tracker.delivered[rec.id] = (rec.state, rec.finished)
            await asyncio.to_thread(self.fleet.delivered, FleetEvent("order", rec.host, record=rec))
        self.trackers.pop(tracker.key, None)

    async def _send_answer(self, tracker: Tracker, records: list[Any]) -> None:
        md = render.answer_markdown(records, tracker.spec)
        parts = render.split_markdown(md, limit=render.TELEGRAM_LIMIT - 16, max_parts=self.settings.max_parts)
        if parts is not None:
            for part in render.number_parts(parts):
                await self.tg.send(tracker.chat_id, part, reply_to=tracker.message_id)
            return
        content = render.answer_document(records)
        name = f"order-{records[0].id}.md" if len(records) == 1 else f"orders-{records[0].batch or records[0].id}.md"
        caption = render.document_summary(records, tracker.spec, name, len(content))
        await self.tg.send_document(
            tracker.chat_id, content.encode("utf-8"), name, caption, reply_to=tracker.message_id
        )

    async def tick(self) -> None:
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
            await self.tg.typing(chat_id)

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

    async def _broadcast(self, text: str, skip: set[int] | None = None, host: str | None = None) -> None:
        for chat_id in self.settings.alert_chats:
            if skip and chat_id in skip:
                continue
            if host is not None and not self.settings.visible_hosts(chat_id, [host], self.fleet.resolve):
                continue  # a user limited to some machines hears only of those
            await self.tg.send(chat_id, text)

    async def _alert(self, ev: FleetEvent) -> None:
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
                text = render.recovered_text(host, message, opened.get("since"))
        elif kind in PROBLEMS:
            family = f"{kind}:{host}"
            text = None
            if family not in self.active_alerts:
                self.active_alerts[family] = {"since": time.time(), "id": alert_id, "message": message}
                text = render.problem_text(host, message)
        else:
            text = render.alert_text(host, kind, message, alert.get("severity"))
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
            await self._broadcast(text, host=host)
        self._save_active_alerts()
        self.sent_alerts.add(alert_id)
        await asyncio.to_thread(self.fleet.delivered, ev)

    async def _node_state(self, ev: FleetEvent) -> None:
        family = f"node_down:{ev.host}"
        if ev.kind == "node_up":
            for job in self.jobs.get_jobs_by_name(family):
                job.schedule_removal()
            opened = self.active_alerts.pop(family, None)
            if opened is not None:
                self._save_active_alerts()
                await self._broadcast(render.node_up_text(ev.host, opened.get("since")), host=ev.host)
            return
        if family in self.active_alerts or self.jobs.get_jobs_by_name(family):
            return
        self.jobs.run_once(
            self._node_down_alert,
            self.settings.node_down_alert_after,
            data={"host": ev.host, "message": ev.message, "since": time.time()},
            name=family,
        )

    async def _node_down_alert(self, context: ContextTypes.DEFAULT_TYPE) -> None:
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
        await self._broadcast(render.node_down_text(host, machine.get("error") or data.get("message")), host=host)
