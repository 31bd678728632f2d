"""What the bot answers: one table of commands (``COMMANDS``, at the end) and their handlers.

The table gives each command's name, handler, arguments and texts; the
application's handlers, ``/help`` and Telegram's command menu
(``setMyCommands``) are all made from it. Besides the commands: plain text in
a private chat (an order to the default machine), unknown commands, and the
inline buttons (buttons.py).

Every update is admitted first (``Commands.admit``): someone not authorized
gets a short refusal (a few a minute at most) and an audit event
``bot_refused``. Orders go through submit.py; the replies' texts come from
render.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from types import MethodType
from typing import Any

from telegram import Update
from telegram.ext import ContextTypes

from galaxy_fleet.audit import SEVERITIES, AuditError, parse_time
from galaxy_fleet.bot import buttons, render
from galaxy_fleet.bot.access import BotSettings, RateLimiter, may_touch, user_name
from galaxy_fleet.bot.follow import Follower
from galaxy_fleet.bot.messenger import Messenger
from galaxy_fleet.bot.submit import Submitter
from galaxy_fleet.control.fleet import Fleet, TargetError

log = logging.getLogger("galaxy.bot")

Handler = Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]

# /audit's filters: the word a user types -> Fleet.audit's argument
AUDIT_KEYS = {
    "severity": "severity",
    "type": "type",
    "order": "order_id",
    "order_id": "order_id",
    "since": "since",
    "until": "until",
    "limit": "limit",
    "host": "host",
    "target": "host",
}


def audit_filters(text: str) -> dict[str, Any]:
    """``severity=error since=2h`` (or ``--severity error``) as Fleet.audit's arguments; ValueError if wrong."""
    filters: dict[str, Any] = {}
    tokens = text.split()
    i = 0
    while i < len(tokens):
        tok = tokens[i].lstrip("-")
        if "=" in tok:
            key, value = tok.split("=", 1)
        elif i + 1 < len(tokens):
            key, value = tok, tokens[i + 1]
            i += 1
        else:
            raise ValueError(f"{tokens[i]!r} needs a value, e.g. severity=error")
        i += 1
        if key not in AUDIT_KEYS:
            raise ValueError(f"unknown filter {key!r}; use severity, type, order, since, until, host, limit")
        filters[AUDIT_KEYS[key]] = value
    if "limit" in filters:
        if not str(filters["limit"]).isdigit():
            raise ValueError("limit must be a number")
        filters["limit"] = max(1, min(int(filters["limit"]), 50))
    else:
        filters["limit"] = 15
    sev = filters.get("severity")
    if sev:
        if sev.endswith("+") and sev[:-1] in SEVERITIES:
            filters["severity"] = ",".join(SEVERITIES[SEVERITIES.index(sev[:-1]) :])
        elif any(s not in SEVERITIES for s in sev.split(",")):
            raise ValueError(f"severity must be one of {', '.join(SEVERITIES)} (or S+ for S and above)")
    for key in ("since", "until"):
        if key in filters:
            try:
                filters[key] = parse_time(filters[key])
            except AuditError as exc:
                raise ValueError(str(exc)) from None
    return filters


def command_text(update: Update) -> str:
    """The text after the /command (newlines kept)."""
    msg = update.effective_message
    text = (msg.text or "") if msg else ""
    parts = text.split(maxsplit=1)
    return parts[1].strip() if len(parts) > 1 else ""


class Commands:
    """The handlers of the commands, of plain text and of the buttons (``audit``: records a bot event)."""

    def __init__(
        self,
        fleet: Fleet,
        settings: BotSettings,
        tg: Messenger,
        follow: Follower,
        submit: Submitter,
        audit: Callable[..., None],
    ):
        self.fleet = fleet
        self.settings = settings
        self.tg = tg
        self.follow = follow
        self.submit = submit
        self.audit = audit
        self.refusal_rates = RateLimiter()

    def handlers(self) -> list[tuple[str, Handler]]:
        """(name, handler) of every command in the table."""
        return [(c.name, MethodType(c.handler, self)) for c in COMMANDS]

    def tick(self) -> None:
        self.refusal_rates.prune()

    # -- who may ------------------------------------------------------------------------------
    async def admit(self, update: Update, what: str) -> bool:
        """Whether the update's sender may use the bot; if not, refused (``what``: for the audit trail)."""
        user = update.effective_user
        if user is not None and self.settings.is_authorized(user.id):
            return True
        await self.refuse(update, "unauthorized", what)
        return False

    async def refuse(self, update: Update, reason: str, what: str, text: str = render.NOT_AUTHORIZED) -> None:
        """Audited always; ``text`` (plain) as a reply at most ``refusal_replies_per_minute``, or as
        a button's pop-up."""
        user = update.effective_user
        chat = update.effective_chat
        uid = user.id if user else None
        self.audit(
            "bot_refused",
            message=f"{reason}: {what}",
            user=user_name(user) if user else None,
            reason=reason,
            request=what,
            chat_id=chat.id if chat else None,
            chat_type=chat.type if chat else None,
        )
        log.info("refused %s from user %s in chat %s: %s", what, uid, chat.id if chat else None, reason)
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=False)
            return
        if self.refusal_rates.check(uid, self.settings.refusal_replies_per_minute) == 0:
            await self.tg.reply(update, render.esc(text))

    # -- the commands ---------------------------------------------------------------------------
    async def start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        user = update.effective_user
        if user is None:
            return
        if not self.settings.is_authorized(user.id):
            await self.refuse(update, "unauthorized", "/start", render.not_authorized_start(user.id))
            return
        await self.tg.reply(update, render.start_text(user.first_name, user.id, self.submit.default_target()))

    async def help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/help"):
            return
        await self.tg.reply(update, render.help_text(COMMANDS, self.submit.default_target()))

    async def order(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/order"):
            return
        spec, payload = self.submit.split_target(command_text(update))
        if not payload:
            await self.tg.reply(update, render.ORDER_USAGE)
            return
        await self._order(update, spec, payload)

    async def text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Plain text in a private chat: an order to the default machine."""
        if not await self.admit(update, "text"):
            return
        msg = update.effective_message
        text = (msg.text or "").strip() if msg else ""
        if text:
            await self._order(update, None, text)

    async def unknown(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "unknown command"):
            return
        await self.tg.reply(update, render.UNKNOWN_COMMAND)

    async def _order(self, update: Update, spec: str | None, payload: str) -> None:
        user, chat, msg = update.effective_user, update.effective_chat, update.effective_message
        assert user is not None and chat is not None and msg is not None
        await self.submit.order(user.id, user_name(user), chat.id, msg.message_id, spec, payload)

    def _visible(self, update: Update, machines: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The machines this user may see (a user limited to some targets sees only those)."""
        user = update.effective_user
        names = self.settings.visible_hosts(user.id if user else 0, [m["name"] for m in machines], self.fleet.resolve)
        return [m for m in machines if m["name"] in names]

    async def machines(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/machines"):
            return
        machines = self._visible(update, await asyncio.to_thread(self.fleet.machines))
        await self.tg.reply_long(update, render.machines_text(machines))

    async def status(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/status"):
            return
        machines = self._visible(update, await asyncio.to_thread(self.fleet.machines))
        names = {m["name"] for m in machines}
        recent = [r for r in await asyncio.to_thread(self.fleet.orders, 1000) if r.host in names]
        await self.tg.reply(update, render.fleet_status_text(machines, recent, len(self.follow.active_alerts)))

    async def orders(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/orders"):
            return
        chat = update.effective_chat
        assert chat is not None
        limit = 10
        arg = command_text(update)
        if arg.isdigit():
            limit = max(1, min(int(arg), 30))
        records = await asyncio.to_thread(self.fleet.orders, limit, chat.id)
        await self.tg.reply_long(update, render.orders_text(records))

    async def _own_order(self, update: Update, command: str) -> Any:
        """The order named after /cancel or /retry if the sender may touch it; else None, replied."""
        ref = command_text(update)
        if not ref:
            await self.tg.reply(update, render.usage(command, "ORDER_ID", " (see /orders)"))
            return None
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        rec = await asyncio.to_thread(self.submit.find_order, chat.id, ref)
        if rec is None or not may_touch(self.settings, user.id, chat.id, rec, self.submit.resolve):
            await self.tg.reply(update, render.no_such_order(ref))
            return None
        return rec

    async def cancel(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/cancel"):
            return
        rec = await self._own_order(update, "cancel")
        if rec is None:
            return
        assert update.effective_user is not None
        text, _ = await self.submit.cancel([rec], user_name(update.effective_user))
        await self.tg.reply(update, text)

    async def retry(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/retry"):
            return
        rec = await self._own_order(update, "retry")
        if rec is None:
            return
        user, chat, msg = update.effective_user, update.effective_chat, update.effective_message
        assert user is not None and chat is not None and msg is not None
        await self.submit.retry(user.id, user_name(user), chat.id, rec, reply_to=msg.message_id)

    async def health(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/health"):
            return
        user = update.effective_user
        assert user is not None
        spec = command_text(update) or None
        allowed = self.submit.allowed_hosts(user.id)
        try:
            hosts = self.submit.resolve(spec) if spec else (allowed if allowed is not None else None)
        except TargetError as exc:
            await self.tg.reply(update, render.not_understood(exc))
            return
        if hosts is not None and allowed is not None and set(hosts) - set(allowed):
            await self.tg.reply(update, render.may_not("query", sorted(set(hosts) - set(allowed))))
            return
        await self.tg.typing(update.effective_chat.id if update.effective_chat else user.id)
        results = await asyncio.to_thread(self.fleet.health, ",".join(hosts) if hosts is not None else None)
        await self.tg.reply_long(update, render.health_text(results))

    async def audit_trail(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/audit"):
            return
        user = update.effective_user
        assert user is not None
        try:
            filters = audit_filters(command_text(update))
        except ValueError as exc:
            await self.tg.reply(update, render.not_understood(exc))
            return
        spec = filters.pop("host", None)
        allowed = self.submit.allowed_hosts(user.id)
        try:
            hosts = self.submit.resolve(spec) if spec else None
        except TargetError as exc:
            await self.tg.reply(update, render.not_understood(exc))
            return
        if allowed is not None:
            hosts = [h for h in (hosts or allowed) if h in allowed]
            if not hosts:
                await self.tg.reply(update, render.may_not("read the audit trail of those machines"))
                return
        events = await asyncio.to_thread(self.fleet.audit, ",".join(hosts) if hosts else None, **filters)
        await self.tg.reply(update, render.audit_text(events))

    async def new(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if not await self.admit(update, "/new"):
            return
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        spec = command_text(update) or self.submit.default_target() or "all"
        try:
            hosts = self.submit.resolve(spec)
        except TargetError as exc:
            await self.tg.reply(update, render.not_understood(exc))
            return
        forbidden = self.settings.forbidden_hosts(user.id, hosts, self.submit.resolve)
        if forbidden:
            if spec == "all":
                hosts = [h for h in hosts if h not in forbidden]
            else:
                await self.tg.reply(update, render.may_not("use", forbidden))
                return
        for host in hosts:
            await asyncio.to_thread(self.fleet.sessions.new, chat.id, host)
        self.audit("bot_new_session", severity="info", message=", ".join(hosts), user=user_name(user), chat_id=chat.id)
        await self.tg.reply(update, render.new_session_text(hosts))

    # -- buttons ----------------------------------------------------------------------------------
    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        if query is None:
            return
        if not await self.admit(update, f"button {query.data}"):
            return
        user = query.from_user
        chat_id = query.message.chat.id if query.message else user.id
        reply_to = query.message.message_id if query.message else None
        kind, rest = buttons.parse(query.data)
        if kind == buttons.PERMISSION:
            await self.follow.permissions.press(query, user, rest)
            return
        if kind in (buttons.CHOOSE, buttons.CONFIRM, buttons.DROP):
            token, _, index = rest.partition(":")
            pending = self.submit.waiting(token)
            if pending is None:
                await query.answer("This request has expired.")
                return
            if pending.user_id != user.id:
                await query.answer("Only the person who sent the order can answer this.")
                return
            if kind == buttons.DROP:
                await query.answer("Not sent.")
                await self.submit.drop(pending, chat_id)
                return
            if kind == buttons.CONFIRM:
                await query.answer("Confirmed.")
                await self.submit.confirm(pending, chat_id)
                return
            spec = self.submit.choice(pending, index)
            if spec is None:
                await query.answer("Unknown choice.")
                return
            await query.answer(f"Sending to {spec}")
            await self.submit.checked_submit(
                pending.user_id, pending.user, chat_id, spec, pending.payload, status_message_id=pending.message_id
            )
            return
        if kind in (buttons.CANCEL, buttons.RETRY):
            rec = await asyncio.to_thread(self.fleet.order, rest)
            if rec is None or not may_touch(self.settings, user.id, chat_id, rec, self.submit.resolve):
                await query.answer("Not your order.")
                return
            if kind == buttons.CANCEL:
                await query.answer("Cancelling…")
                text, failed = await self.submit.cancel(
                    [r for r in self.follow.parts(rec) if not r.terminal] or [rec], user_name(user)
                )
                if failed:  # say so under the status message (it shows the orders still running)
                    await self.tg.send(chat_id, text, reply_to=reply_to)
                return
            await query.answer("Sending again…")
            await self.submit.retry(user.id, user_name(user), chat_id, rec, reply_to=reply_to)
            return
        await query.answer("Unknown button.")


@dataclass(frozen=True)
class Command:
    """One command of the bot: its name, its handler, a ``summary`` for Telegram's command menu
    (followed there by the usage when it takes ``args``), and ``details`` for its line in /help
    (Markdown; ``{default}`` is where orders without a target go; more lines after a newline;
    the summary when empty)."""

    name: str
    handler: Callable[[Commands, Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]
    summary: str
    args: str = ""
    details: str = ""

    @property
    def menu(self) -> str:
        return f"{self.summary}: /{self.name} {self.args}" if self.args else self.summary

    @property
    def help(self) -> str:
        return self.details or self.summary


COMMANDS: tuple[Command, ...] = (
    Command(
        "order",
        Commands.order,
        "send an order",
        "[target] text",
        "send an order (target: a machine, a group or `all`; without one it goes to {default})\n"
        "Plain text in this chat is an order to {default} too.",
    ),
    Command("machines", Commands.machines, "machines and their live status"),
    Command("status", Commands.status, "fleet summary"),
    Command("orders", Commands.orders, "recent orders from this chat", "[N]"),
    Command("cancel", Commands.cancel, "cancel an order", "ID", "cancel an order (or press Cancel under it)"),
    Command("retry", Commands.retry, "send an order again", "ID"),
    Command("health", Commands.health, "health checks", "[target]", "run the health checks"),
    Command(
        "audit",
        Commands.audit_trail,
        "audit trail",
        "[severity=error] [type=T] [order=ID] [since=2h] [host=H] [limit=N]",
        "the audit trail",
    ),
    Command(
        "new", Commands.new, "start a fresh agent session", "[target]", "the next order starts a fresh agent session"
    ),
    Command("start", Commands.start, "your user id and whether you are authorized", "", "your Telegram user id"),
    Command("help", Commands.help, "what this bot does", "", "the commands"),
)
