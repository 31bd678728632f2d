"""`galaxy bot`: the fleet's Telegram bot (python-telegram-bot 22, long polling or a webhook).

One ``Application``, one handler per command, an error handler that logs
``exc_info``, periodic work on the ``JobQueue``. The bot talks to the fleet
only through ``galaxy_fleet.control.fleet.Fleet``. This module holds the
application, the commands and the buttons; bot_follow.py follows the orders
(one status message each, edited as the order moves; the answer as a reply,
split or as a document; delivery bookkeeping across restarts) and the
alerts; bot_render.py makes the texts; bot_access.py reads the ``bot:``
config section and decides who may do what.

Access control (see bot_access.py): an allow-list of user ids, per-user
targets and rate limits, authorized users only in group chats, and an
expiring Confirm/Cancel step for dangerous targets or payloads. A refusal is
a short reply (a few per minute at most) and always an audit event
(``bot_refused`` in the control node's audit trail and the fleet's central one).

Every request goes through ``FloodLimiter`` (bot_follow.py), which keeps
Telegram's flood limits and waits out a 429 ``retry_after`` before sending
the same request again.

``bot.mode: webhook`` runs PTB's own web server (tornado) instead of long
polling: at start the bot registers ``webhook.public_url`` with Telegram
(``setWebhook``, with a secret token that Telegram sends back in the
``X-Telegram-Bot-Api-Secret-Token`` header; requests without it get 403).
Polling mode deletes any webhook at start (PTB's bootstrap).

The token is read from $GALAXY_TELEGRAM_TOKEN or the systemd credential
``telegram_token``, removed from the environment (child processes never see
it), and redacted from every log line: PTB and httpx put it in URLs. The
webhook secret (from $GALAXY_TELEGRAM_WEBHOOK_SECRET or the credential
``telegram_webhook_secret``, else random for each run) is handled the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from galaxy_fleet.bot import render
from galaxy_fleet.bot.access import (WEBHOOK_SECRET_CREDENTIAL, WEBHOOK_SECRET_ENV, BotSettings, RateLimiter,
                                     check_webhook_secret)
from galaxy_fleet.bot.follow import Follower, flood_limiter

if TYPE_CHECKING:
    import argparse

    from telegram import Message, Update
    from telegram.ext import Application, ContextTypes

    from galaxy_fleet.config import Config
    from galaxy_fleet.control.fleet import Fleet

log = logging.getLogger("galaxy.bot")

TOKEN_ENV = "GALAXY_TELEGRAM_TOKEN"
TOKEN_CREDENTIAL = "telegram_token"

COMMANDS: list[tuple[str, str]] = [
    ("order", "send an order: /order [target] text"),
    ("machines", "machines and their live status"),
    ("status", "fleet summary"),
    ("orders", "recent orders from this chat"),
    ("cancel", "cancel an order: /cancel ID"),
    ("retry", "send an order again: /retry ID"),
    ("health", "health checks: /health [target]"),
    ("audit", "audit trail: /audit [severity=error] [type=T] [order=ID] [since=2h] [limit=N]"),
    ("new", "start a fresh agent session: /new [target]"),
    ("start", "your user id and whether you are authorized"),
    ("help", "what this bot does"),
]

HELP = """<b>Galaxy</b> runs your orders on the fleet's machines.

<b>/order</b> [target] text — send an order (target: a machine, a group or <code>all</code>; \
without one it goes to {default})
Plain text in this chat is an order to {default} too.
<b>/machines</b> — machines and their live status
<b>/status</b> — fleet summary
<b>/orders</b> — recent orders from this chat
<b>/cancel</b> ID — cancel an order (or press Cancel under it)
<b>/retry</b> ID — send an order again
<b>/health</b> [target] — run the health checks
<b>/audit</b> [severity=error] [type=T] [order=ID] [since=2h] [host=H] [limit=N] — the audit trail
<b>/new</b> [target] — the next order starts a fresh agent session
<b>/start</b> — your Telegram user id"""

class TokenMissing(RuntimeError):
    pass


def read_token() -> str:
    """The bot token from $GALAXY_TELEGRAM_TOKEN or the systemd credential; removed from the environment."""
    from galaxy_fleet.config import secret

    token = secret(TOKEN_CREDENTIAL, TOKEN_ENV)
    os.environ.pop(TOKEN_ENV, None)
    if not token:
        raise TokenMissing(f"no bot token: set ${TOKEN_ENV} or hand over the systemd credential "
                           f"{TOKEN_CREDENTIAL!r} (LoadCredential=)")
    return token.strip()


def read_webhook_secret() -> tuple[str, bool]:
    """The webhook's secret token and whether it was configured; removed from the environment.

    Without $GALAXY_TELEGRAM_WEBHOOK_SECRET or the credential, a random one for this run: the bot
    hands it to Telegram itself (setWebhook) at every start."""
    from galaxy_fleet.config import secret

    value = secret(WEBHOOK_SECRET_CREDENTIAL, WEBHOOK_SECRET_ENV)
    os.environ.pop(WEBHOOK_SECRET_ENV, None)
    if not value or not value.strip():
        return secrets.token_urlsafe(32), False
    return check_webhook_secret(value), True


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then blanks out secrets (the token sits in every Bot API URL)."""

    def __init__(self, fmt: str, secrets_: list[str], named: dict[str, str] | None = None):
        super().__init__(fmt)
        # secret -> what is shown instead; the longest first, so that no part of one is left
        pairs = {s: "<token>" for s in secrets_ if s}
        pairs.update({s: f"<{name}>" for s, name in (named or {}).items() if s})
        self.secrets = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for s, shown in self.secrets:
            text = text.replace(s, shown)
        return text


def setup_logging(token: str, verbose: bool = False, webhook_secret: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s", [token],
                                            {webhook_secret: "webhook secret"} if webhook_secret else None))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # httpx logs every request URL at INFO; PTB's own loggers are chatty at DEBUG only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # the webhook server's request log


@dataclass
class Pending:
    """An order waiting for its target (keyboard) or for a confirmation."""
    token: str
    user_id: int
    user: str
    chat_id: int
    payload: str
    expires: float
    message_id: int | None = None
    spec: str | None = None
    hosts: list[str] = field(default_factory=list)
    options: list[str] = field(default_factory=list)  # the keyboard's targets
    reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)  # executor/options/session of a retry


class GalaxyBot(Follower):
    """The application and its commands; following orders and alerts is Follower's (bot_follow.py)."""

    def __init__(self, fleet: "Fleet", settings: BotSettings, token: str, *, audit: Any = None,
                 manage_fleet: bool = True, webhook_secret: str | None = None):
        self.fleet = fleet
        self.settings = settings
        self.token = token
        self.webhook_secret = webhook_secret  # webhook mode: what Telegram must send back
        self.audit = audit
        self.manage_fleet = manage_fleet
        self.app: Application | None = None
        self.pending: dict[str, Pending] = {}
        self.rates = RateLimiter()
        self.refusal_rates = RateLimiter()
        self.ready_hook: Callable[[], None] | None = None  # called once polling runs (tests, embedding)
        self._init_follower()

    # -- application -------------------------------------------------------------
    def build(self) -> "Application":
        from telegram.ext import (Application, CallbackQueryHandler, CommandHandler, MessageHandler,
                                  filters)

        builder = (Application.builder().token(self.token).base_url(self.settings.api_base_url)
                   .base_file_url(self.settings.api_base_url.replace("/bot", "/file/bot", 1))
                   .concurrent_updates(True)
                   .rate_limiter(flood_limiter(self.settings.flood))
                   .get_updates_read_timeout(self.settings.poll_timeout + 10)
                   .post_init(self._post_init).post_stop(self._post_stop).post_shutdown(self._post_shutdown))
        app = builder.build()
        if app.job_queue is None:
            raise RuntimeError('the bot needs PTB\'s JobQueue: install "python-telegram-bot[job-queue]"')
        for name, handler in (("start", self.cmd_start), ("help", self.cmd_help), ("order", self.cmd_order),
                              ("machines", self.cmd_machines), ("status", self.cmd_status),
                              ("orders", self.cmd_orders), ("cancel", self.cmd_cancel), ("retry", self.cmd_retry),
                              ("health", self.cmd_health), ("audit", self.cmd_audit), ("new", self.cmd_new)):
            app.add_handler(CommandHandler(name, handler))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, self.on_text))
        # In groups, commands for other bots are none of our business.
        app.add_handler(MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, self.on_unknown_command))
        app.add_handler(CallbackQueryHandler(self.on_callback))
        app.add_error_handler(self.on_error)
        self.app = app
        return app

    ALLOWED_UPDATES = ["message", "callback_query"]

    def run(self) -> None:
        app = self.app or self.build()
        if self.settings.mode != "webhook":
            # PTB deletes a webhook left from an earlier webhook run first (getUpdates is refused while one is set).
            app.run_polling(allowed_updates=self.ALLOWED_UPDATES, timeout=self.settings.poll_timeout,
                            drop_pending_updates=False, close_loop=True)
            return
        wh = self.settings.webhook
        if not self.webhook_secret:
            raise RuntimeError("webhook mode needs a secret token")
        log.info("webhook mode: listening on %s:%d/%s for %s", wh.listen, wh.port, wh.url_path, wh.public_url)
        # setWebhook at start (URL, secret, certificate); updates Telegram keeps while the bot is
        # down are delivered when it is back (drop_pending_updates=False), so nothing is deleted at stop.
        app.run_webhook(listen=wh.listen, port=wh.port, url_path=wh.url_path, cert=wh.cert, key=wh.key,
                        webhook_url=wh.public_url, allowed_updates=self.ALLOWED_UPDATES,
                        drop_pending_updates=False, max_connections=wh.max_connections,
                        secret_token=self.webhook_secret, close_loop=True)

    async def _post_init(self, app: "Application") -> None:
        from telegram import BotCommand

        self.loop = asyncio.get_running_loop()
        self.events = asyncio.Queue()
        self.active_alerts = self._load_active_alerts()
        if self.manage_fleet:
            await asyncio.to_thread(self.fleet.start)
        self.fleet.subscribe(self._from_router)
        try:
            await app.bot.set_my_commands([BotCommand(n, d) for n, d in COMMANDS])
        except Exception:
            log.warning("setMyCommands failed", exc_info=True)
        # Orders still moving when the bot last stopped: follow them again.
        cutoff = time.time() - 86400
        for rec in await asyncio.to_thread(self.fleet.orders, 500):
            if not rec.terminal and rec.chat_id is not None and rec.message_id is not None and rec.created > cutoff:
                self._track(rec)
        # Answers and alerts that were not delivered before the bot stopped.
        for ev in await asyncio.to_thread(self.fleet.pending):
            self.events.put_nowait(ev)
        self.pump = asyncio.create_task(self._pump(), name="galaxy-bot-events")
        assert app.job_queue is not None
        app.job_queue.run_repeating(self._tick, interval=self.settings.progress_interval,
                                    first=self.settings.progress_interval, name="progress")
        # A machine that is unreachable from the start never goes "down": check each once.
        connect = float(getattr(getattr(self.fleet, "settings", None), "connect_timeout", 10.0))
        for name in self._machine_names():
            app.job_queue.run_once(self._node_down_alert, max(self.settings.node_down_alert_after, connect),
                                   data={"host": name, "message": "", "since": time.time()},
                                   name=f"node_down:{name}")
        # Jobs run once the application has started, i.e. once updates are being polled.
        app.job_queue.run_once(self._ready, 0, name="ready")

    async def _ready(self, context: "ContextTypes.DEFAULT_TYPE") -> None:
        from galaxy_fleet.sdnotify import notify

        log.info("bot ready: %d machines, %d orders followed, %d authorized users", len(self.fleet.machines()),
                 len(self.trackers), len(self.settings.authorized_users))
        notify("READY=1")
        if self.ready_hook:
            self.ready_hook()

    async def _post_stop(self, app: "Application") -> None:
        for task in list(self.tasks):  # deliveries held back by the flood limits: done after a restart
            task.cancel()
        if self.pump:
            self.pump.cancel()
            try:
                await self.pump
            except (asyncio.CancelledError, Exception):
                pass

    async def _post_shutdown(self, app: "Application") -> None:
        from galaxy_fleet.sdnotify import notify

        notify("STOPPING=1")
        if self.manage_fleet:
            await asyncio.to_thread(self.fleet.stop)
        if self.audit is not None:
            try:
                self.audit.close()
            except OSError:
                pass

    async def on_error(self, update: object, context: "ContextTypes.DEFAULT_TYPE") -> None:
        log.error("error while handling an update: %s", context.error, exc_info=context.error)

    async def _tick(self, context: "ContextTypes.DEFAULT_TYPE") -> None:
        await self._follow_tick()
        now = time.monotonic()
        for token in [t for t, p in self.pending.items() if p.expires < now and not p.reason]:
            self.pending.pop(token, None)  # unanswered machine choices
        self.rates.prune()
        self.refusal_rates.prune()

    # -- small helpers ---------------------------------------------------------------
    @staticmethod
    def _user_name(user: Any) -> str:
        return f"telegram:{user.id}" + (f"(@{user.username})" if getattr(user, "username", None) else "")

    def _audit(self, type_: str, *, severity: str = "warning", message: str = "", user: str | None = None,
               **data: Any) -> None:
        """An event in the control node's own trail, and through the store in the fleet's."""
        fields = {k: v for k, v in data.items() if v is not None}
        try:
            if self.audit is not None:
                self.audit.append(type_, severity=severity, message=message, user=user, **fields)
            else:
                self.fleet.audit_event(type_, severity=severity, message=message, user=user, **fields)
        except Exception:  # the audit trail must not take the bot down
            log.warning("could not write audit event %s", type_, exc_info=True)

    async def _reply(self, update: "Update", text: str, **kwargs: Any) -> "Message | None":
        from telegram.constants import ParseMode

        msg = update.effective_message
        if msg is None:
            return None
        return await self._send(msg.chat_id, text, reply_to=msg.message_id, parse_mode=ParseMode.HTML, **kwargs)

    async def _admit(self, update: "Update", what: str) -> bool:
        user = update.effective_user
        if user is not None and self.settings.is_authorized(user.id):
            return True
        await self._refuse(update, "unauthorized", what)
        return False

    async def _refuse(self, update: "Update", reason: str, what: str, text: str = "⛔ Not authorized.") -> None:
        user = update.effective_user
        chat = update.effective_chat
        uid = user.id if user else None
        self._audit("bot_refused", message=f"{reason}: {what}", user=self._user_name(user) if user else None,
                    reason=reason, request=what, chat_id=chat.id if chat else None,
                    chat_type=chat.type if chat else None)
        log.info("refused %s from user %s in chat %s: %s", what, uid, chat.id if chat else None, reason)
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=False)
            return
        if self.refusal_rates.check(uid, self.settings.refusal_replies_per_minute) == 0:
            await self._reply(update, render.esc(text))

    def _command_text(self, update: "Update") -> str:
        """The text after the /command (newlines kept)."""
        msg = update.effective_message
        text = (msg.text or "") if msg else ""
        parts = text.split(maxsplit=1)
        return parts[1].strip() if len(parts) > 1 else ""

    def _resolve(self, spec: str) -> list[str]:
        return self.fleet.resolve(spec)

    def _machine_names(self) -> list[str]:
        return [m["name"] for m in self.fleet.machines()]

    def _default_target(self) -> str | None:
        if self.settings.default_machine:
            return self.settings.default_machine
        names = self._machine_names()
        return names[0] if len(names) == 1 else None

    def _allowed_hosts(self, user_id: int) -> list[str] | None:
        policy = self.settings.users.get(user_id)
        if policy is None or policy.targets is None:
            return None
        return [h for h in self._machine_names() if not self.settings.forbidden_hosts(user_id, [h], self._resolve)]

    # -- commands ------------------------------------------------------------------------
    async def cmd_start(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        user = update.effective_user
        if user is None:
            return
        if not self.settings.is_authorized(user.id):
            await self._refuse(update, "unauthorized", "/start",
                               f"Your Telegram user id is {user.id}. You are not authorized to use this bot.")
            return
        default = self._default_target()
        await self._reply(update, f"Hello {render.esc(user.first_name)}. Your Telegram user id is "
                                  f"<code>{user.id}</code>; you are <b>authorized</b>.\n"
                                  f"Orders without a target go to {render.esc(default or '(you choose)')}. "
                                  f"/help lists the commands.")

    async def cmd_help(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/help"):
            return
        default = self._default_target()
        await self._reply(update, HELP.format(default=f"<b>{render.esc(default)}</b>" if default
                                              else "the machine you pick"))

    async def cmd_order(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/order"):
            return
        text = self._command_text(update)
        spec, payload = self._split_target(text)
        if not payload:
            await self._reply(update, "Usage: <code>/order [target] what to do</code>\n"
                                      "target: a machine, a group or <code>all</code> (see /machines)")
            return
        await self._order(update, spec, payload)

    async def on_text(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "text"):
            return
        msg = update.effective_message
        if msg is None or not (msg.text or "").strip():
            return
        await self._order(update, None, msg.text.strip())

    async def on_unknown_command(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "unknown command"):
            return
        await self._reply(update, "Unknown command. /help lists what I understand.")

    def _split_target(self, text: str) -> tuple[str | None, str]:
        """``web1 fix it`` → ("web1", "fix it") when web1 is a target; else (None, text)."""
        parts = text.split(maxsplit=1)
        if not parts:
            return None, ""
        try:
            self._resolve(parts[0])
        except ValueError:
            return None, text
        return parts[0], parts[1].strip() if len(parts) > 1 else ""

    async def _order(self, update: "Update", spec: str | None, payload: str) -> None:
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        user, chat, msg = update.effective_user, update.effective_chat, update.effective_message
        assert user is not None and chat is not None and msg is not None
        wait = self.rates.check(user.id, self.settings.rate_for(user.id))
        if wait:
            self._audit("bot_refused", message=f"rate limited: {render.preview(payload, 80)}",
                        user=self._user_name(user), reason="rate_limited", chat_id=chat.id)
            await self._reply(update, f"🐢 Slow down: at most {self.settings.rate_for(user.id)} orders a minute. "
                                      f"Try again in {int(wait) + 1} s.")
            return
        if spec is None:
            spec = self._default_target()
        if spec is None:
            allowed = self._allowed_hosts(user.id)
            names = allowed if allowed is not None else self._machine_names()
            options = names + ([] if allowed is not None or len(names) < 2 else ["all"])
            token = secrets.token_hex(4)
            self.pending[token] = Pending(token, user.id, self._user_name(user), chat.id, payload,
                                          time.monotonic() + 600, options=options)
            rows = [[InlineKeyboardButton(o, callback_data=f"t:{token}:{i}")
                     for i, o in enumerate(options)][j:j + 3] for j in range(0, len(options), 3)]
            rows.append([InlineKeyboardButton("✖ Cancel", callback_data=f"no:{token}")])
            sent = await self._reply(update, f"Which machine should do this?\n<i>{render.esc(render.preview(payload))}"
                                             f"</i>", reply_markup=InlineKeyboardMarkup(rows))
            if sent is not None:
                self.pending[token].message_id = sent.message_id
            return
        await self._checked_submit(user.id, self._user_name(user), chat.id, spec, payload, reply_to=msg.message_id)

    async def _checked_submit(self, user_id: int, user: str, chat_id: int, spec: str, payload: str, *,
                              reply_to: int | None = None, status_message_id: int | None = None,
                              confirmed: bool = False, extra: dict[str, Any] | None = None) -> None:
        from galaxy_fleet.control.fleet import TargetError

        async def say(text: str) -> None:
            if status_message_id is not None:
                await self._edit(chat_id, status_message_id, text, None)
            else:
                await self._send(chat_id, text, reply_to=reply_to)

        try:
            hosts = self._resolve(spec)
        except TargetError as exc:
            await say(f"❓ {render.esc(exc)}")
            return
        forbidden = self.settings.forbidden_hosts(user_id, hosts, self._resolve)
        if forbidden:
            self._audit("bot_refused", message=f"target not allowed: {', '.join(forbidden)}", user=user,
                        reason="target_not_allowed", target=spec, chat_id=chat_id)
            await say(f"⛔ You may not send orders to {render.esc(', '.join(forbidden))}.")
            return
        reason = None if confirmed else self.settings.danger(hosts, payload, self._resolve)
        if reason:
            await self._ask_confirmation(user_id, user, chat_id, spec, hosts, payload, reason, reply_to=reply_to,
                                         status_message_id=status_message_id, extra=extra)
            return
        await self._submit(user, chat_id, spec, payload, reply_to=reply_to, status_message_id=status_message_id,
                           extra=extra)

    async def _submit(self, user: str, chat_id: int, spec: str, payload: str, *, reply_to: int | None = None,
                      status_message_id: int | None = None, extra: dict[str, Any] | None = None) -> None:
        from galaxy_fleet.control.fleet import TargetError

        if status_message_id is None:
            status = await self._send(chat_id, f"📨 Sending to <b>{render.esc(spec)}</b>…\n"
                                               f"<i>{render.esc(render.preview(payload))}</i>", reply_to=reply_to)
            status_message_id = status.message_id
        else:
            await self._edit(chat_id, status_message_id, f"📨 Sending to <b>{render.esc(spec)}</b>…\n"
                                                         f"<i>{render.esc(render.preview(payload))}</i>", None)
        extra = dict(extra or {})
        try:
            records = await asyncio.to_thread(self.fleet.submit, spec, payload, sender=user, chat_id=chat_id,
                                              message_id=status_message_id, **extra)
        except (TargetError, ValueError) as exc:
            await self._edit(chat_id, status_message_id, f"❌ Not sent: {render.esc(exc)}", None)
            return
        except Exception as exc:
            log.exception("submit to %s failed", spec)
            await self._edit(chat_id, status_message_id, f"❌ Not sent: {render.esc(exc)}", None)
            return
        for rec in records:
            self._track(rec)
        tracker = self.trackers.get((chat_id, status_message_id))
        if tracker is not None:
            tracker.spec = spec
            if tracker.finished:
                await self._finish(tracker)
            else:
                self._schedule_edit(tracker)
                await self._typing(chat_id)

    async def _ask_confirmation(self, user_id: int, user: str, chat_id: int, spec: str, hosts: list[str],
                                payload: str, reason: str, *, reply_to: int | None,
                                status_message_id: int | None, extra: dict[str, Any] | None) -> None:
        from telegram import InlineKeyboardButton, InlineKeyboardMarkup

        seconds = self.settings.dangerous.confirm_seconds
        token = secrets.token_hex(4)
        pending = Pending(token, user_id, user, chat_id, payload, time.monotonic() + seconds, spec=spec,
                          hosts=hosts, reason=reason, extra=dict(extra or {}))
        text = (f"⚠️ <b>Dangerous order</b> for <b>{render.esc(spec)}</b>: {render.esc(reason)}.\n"
                f"<i>{render.esc(render.preview(payload, 300))}</i>\n"
                f"Confirm within {int(seconds)} s, or it is not sent.")
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("✅ Confirm", callback_data=f"ok:{token}"),
                                        InlineKeyboardButton("✖ Cancel", callback_data=f"no:{token}")]])
        if status_message_id is not None:
            await self._edit(chat_id, status_message_id, text, markup)
            pending.message_id = status_message_id
        else:
            sent = await self._send(chat_id, text, reply_to=reply_to, reply_markup=markup)
            pending.message_id = sent.message_id
        self.pending[token] = pending
        self._audit("bot_confirm_asked", severity="info", message=reason, user=user, target=spec, chat_id=chat_id)
        assert self.app is not None and self.app.job_queue is not None
        self.app.job_queue.run_once(self._expire_confirmation, seconds, data=token, name=f"confirm:{token}")

    async def _expire_confirmation(self, context: "ContextTypes.DEFAULT_TYPE") -> None:
        token = context.job.data if context.job else None
        pending = self.pending.pop(str(token), None)
        if pending is None or pending.message_id is None:
            return
        self._audit("bot_confirm_expired", severity="info", message=f"not confirmed: {pending.reason}",
                    user=pending.user, target=pending.spec, chat_id=pending.chat_id)
        await self._edit(pending.chat_id, pending.message_id,
                         f"⌛ Not confirmed in time: the order to <b>{render.esc(pending.spec)}</b> was not sent.\n"
                         f"<i>{render.esc(render.preview(pending.payload))}</i>", None)

    async def cmd_machines(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/machines"):
            return
        await self._send_long(update, render.machines_text(await asyncio.to_thread(self.fleet.machines)))

    async def cmd_status(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/status"):
            return
        machines = await asyncio.to_thread(self.fleet.machines)
        recent = await asyncio.to_thread(self.fleet.orders, 1000)
        await self._reply(update, render.fleet_status_text(machines, recent, len(self.active_alerts)))

    async def cmd_orders(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/orders"):
            return
        chat = update.effective_chat
        assert chat is not None
        limit = 10
        arg = self._command_text(update)
        if arg.isdigit():
            limit = max(1, min(int(arg), 30))
        records = await asyncio.to_thread(self.fleet.orders, limit, chat.id)
        await self._send_long(update, render.orders_text(records))

    def _find_order(self, chat_id: int, ref: str) -> Any:
        """An order by id, or by a unique prefix/suffix of the id among this chat's recent orders."""
        rec = self.fleet.order(ref)
        if rec is not None:
            return rec
        matches = [r for r in self.fleet.orders(200, chat_id) if r.id.startswith(ref) or r.id.endswith(ref)]
        return matches[0] if len(matches) == 1 else None

    def _may_touch(self, user_id: int, chat_id: int, rec: Any) -> bool:
        if self.settings.forbidden_hosts(user_id, [rec.host], self._resolve):
            return False
        own = f"telegram:{user_id}"
        return rec.chat_id == chat_id or rec.sender == own or (rec.sender or "").startswith(own + "(")

    async def cmd_cancel(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/cancel"):
            return
        ref = self._command_text(update)
        if not ref:
            await self._reply(update, "Usage: <code>/cancel ORDER_ID</code> (see /orders)")
            return
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        rec = await asyncio.to_thread(self._find_order, chat.id, ref)
        if rec is None or not self._may_touch(user.id, chat.id, rec):
            await self._reply(update, f"No order <code>{render.esc(ref)}</code> of yours.")
            return
        await self._reply(update, await self._cancel([rec], self._user_name(user)))

    async def _cancel(self, records: list[Any], user: str) -> str:
        from galaxy_fleet.control.fleet import NodeUnavailable

        lines = []
        for rec in records:
            if rec.terminal:
                lines.append(f"{render.esc(rec.host)}: already {render.esc(render.state_label(rec.state))}")
                continue
            try:
                await asyncio.to_thread(self.fleet.cancel, rec.id, user=user)
                lines.append(f"🚫 Cancelling on {render.esc(rec.host)}…")
            except NodeUnavailable as exc:
                lines.append(f"❌ {render.esc(rec.host)} is unreachable: {render.esc(exc)}")
            except Exception as exc:
                lines.append(f"❌ {render.esc(rec.host)}: {render.esc(exc)}")
        self._audit("bot_cancel", severity="info", message="; ".join(render.html_to_text(x) for x in lines),
                    user=user, order_ids=[r.id for r in records])
        return "\n".join(lines) or "Nothing to cancel."

    async def cmd_retry(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        if not await self._admit(update, "/retry"):
            return
        ref = self._command_text(update)
        if not ref:
            await self._reply(update, "Usage: <code>/retry ORDER_ID</code> (see /orders)")
            return
        user, chat, msg = update.effective_user, update.effective_chat, update.effective_message
        assert user is not None and chat is not None and msg is not None
        rec = await asyncio.to_thread(self._find_order, chat.id, ref)
        if rec is None or not self._may_touch(user.id, chat.id, rec):
            await self._reply(update, f"No order <code>{render.esc(ref)}</code> of yours.")
            return
        await self._retry(user.id, self._user_name(user), chat.id, rec, reply_to=msg.message_id)

    async def _retry(self, user_id: int, user: str, chat_id: int, rec: Any, reply_to: int | None) -> None:
        wait = self.rates.check(user_id, self.settings.rate_for(user_id))
        if wait:
            self._audit("bot_refused", message="rate limited: retry", user=user, reason="rate_limited",
                        chat_id=chat_id)
            await self._send(chat_id, f"🐢 Slow down: try again in {int(wait) + 1} s.", reply_to=reply_to)
            return
        # A retry is a new order with the same host, payload, executor, options and session
        # (it goes through the same checks: a dangerous order is confirmed again).
        extra = {"executor": rec.executor, "options": rec.options or None, "session": rec.session,
                 "timeout": rec.timeout}
        await self._checked_submit(user_id, user, chat_id, rec.host, rec.payload, reply_to=reply_to,
                                   extra={k: v for k, v in extra.items() if v is not None})

    async def cmd_health(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        from galaxy_fleet.control.fleet import TargetError

        if not await self._admit(update, "/health"):
            return
        user = update.effective_user
        assert user is not None
        spec = self._command_text(update) or None
        allowed = self._allowed_hosts(user.id)
        try:
            hosts = self._resolve(spec) if spec else (allowed if allowed is not None else None)
        except TargetError as exc:
            await self._reply(update, f"❓ {render.esc(exc)}")
            return
        if hosts is not None and allowed is not None and set(hosts) - set(allowed):
            denied = ", ".join(sorted(set(hosts) - set(allowed)))
            await self._reply(update, f"⛔ You may not query {render.esc(denied)}")
            return
        await self._typing(update.effective_chat.id if update.effective_chat else user.id)
        results = await asyncio.to_thread(self.fleet.health, ",".join(hosts) if hosts is not None else None)
        await self._send_long(update, render.health_text(results))

    AUDIT_KEYS = {"severity": "severity", "type": "type", "order": "order_id", "order_id": "order_id",
                  "since": "since", "until": "until", "limit": "limit", "host": "host", "target": "host"}

    def _audit_filters(self, text: str) -> dict[str, Any]:
        from galaxy_fleet.audit import SEVERITIES, AuditError, parse_time

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
            if key not in self.AUDIT_KEYS:
                raise ValueError(f"unknown filter {key!r}; use severity, type, order, since, until, host, limit")
            filters[self.AUDIT_KEYS[key]] = value
        if "limit" in filters:
            if not str(filters["limit"]).isdigit():
                raise ValueError("limit must be a number")
            filters["limit"] = max(1, min(int(filters["limit"]), 50))
        else:
            filters["limit"] = 15
        sev = filters.get("severity")
        if sev:
            if sev.endswith("+") and sev[:-1] in SEVERITIES:
                filters["severity"] = ",".join(SEVERITIES[SEVERITIES.index(sev[:-1]):])
            elif any(s not in SEVERITIES for s in sev.split(",")):
                raise ValueError(f"severity must be one of {', '.join(SEVERITIES)} (or S+ for S and above)")
        for key in ("since", "until"):
            if key in filters:
                try:
                    filters[key] = parse_time(filters[key])
                except AuditError as exc:
                    raise ValueError(str(exc)) from None
        return filters

    async def cmd_audit(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        from galaxy_fleet.control.fleet import TargetError

        if not await self._admit(update, "/audit"):
            return
        user = update.effective_user
        assert user is not None
        try:
            filters = self._audit_filters(self._command_text(update))
        except ValueError as exc:
            await self._reply(update, f"❓ {render.esc(exc)}")
            return
        spec = filters.pop("host", None)
        allowed = self._allowed_hosts(user.id)
        try:
            hosts = self._resolve(spec) if spec else None
        except TargetError as exc:
            await self._reply(update, f"❓ {render.esc(exc)}")
            return
        if allowed is not None:
            hosts = [h for h in (hosts or allowed) if h in allowed]
            if not hosts:
                await self._reply(update, "⛔ You may not read the audit trail of those machines.")
                return
        events = await asyncio.to_thread(self.fleet.audit, ",".join(hosts) if hosts else None, **filters)
        await self._reply(update, render.audit_text(events))

    async def cmd_new(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        from galaxy_fleet.control.fleet import TargetError

        if not await self._admit(update, "/new"):
            return
        user, chat = update.effective_user, update.effective_chat
        assert user is not None and chat is not None
        spec = self._command_text(update) or self._default_target() or "all"
        try:
            hosts = self._resolve(spec)
        except TargetError as exc:
            await self._reply(update, f"❓ {render.esc(exc)}")
            return
        forbidden = self.settings.forbidden_hosts(user.id, hosts, self._resolve)
        if forbidden:
            if spec == "all":
                hosts = [h for h in hosts if h not in forbidden]
            else:
                await self._reply(update, f"⛔ You may not use {render.esc(', '.join(forbidden))}.")
                return
        for host in hosts:
            await asyncio.to_thread(self.fleet.sessions.new, chat.id, host)
        self._audit("bot_new_session", severity="info", message=", ".join(hosts), user=self._user_name(user),
                    chat_id=chat.id)
        await self._reply(update, f"🆕 Fresh agent session on <b>{render.esc(', '.join(hosts))}</b>: "
                                  "the next order from this chat starts without the earlier conversation.")

    async def _send_long(self, update: "Update", html_text: str) -> None:
        msg = update.effective_message
        if msg is None:
            return
        if render.tg_len(html_text) <= render.TELEGRAM_LIMIT:
            await self._reply(update, html_text)
            return
        chunk: list[str] = []
        for line in html_text.split("\n"):
            if chunk and render.tg_len("\n".join([*chunk, line])) > render.TELEGRAM_LIMIT:
                await self._reply(update, "\n".join(chunk))
                chunk = []
            chunk.append(line)
        if chunk:
            await self._reply(update, "\n".join(chunk))

    # -- buttons ------------------------------------------------------------------------
    async def on_callback(self, update: "Update", context: "ContextTypes.DEFAULT_TYPE") -> None:
        query = update.callback_query
        if query is None:
            return
        if not await self._admit(update, f"button {query.data}"):
            return
        user = query.from_user
        chat_id = query.message.chat.id if query.message else user.id
        kind, _, rest = (query.data or "").partition(":")
        if kind in ("t", "ok", "no"):
            token, _, index = rest.partition(":")
            pending = self.pending.get(token)
            if pending is None or pending.expires < time.monotonic():
                self.pending.pop(token, None)
                await query.answer("This request has expired.")
                return
            if pending.user_id != user.id:
                await query.answer("Only the person who sent the order can answer this.")
                return
            self.pending.pop(token, None)
            if kind == "no":
                await query.answer("Not sent.")
                self._cancel_job(f"confirm:{token}")
                await self._edit(chat_id, pending.message_id or 0,
                                 f"✖ Not sent.\n<i>{render.esc(render.preview(pending.payload))}</i>", None)
                return
            if kind == "ok":
                self._cancel_job(f"confirm:{token}")
                await query.answer("Confirmed.")
                self._audit("bot_confirmed", severity="info", message=pending.reason, user=pending.user,
                            target=pending.spec, chat_id=chat_id)
                await self._checked_submit(pending.user_id, pending.user, chat_id, pending.spec or "",
                                           pending.payload, status_message_id=pending.message_id, confirmed=True,
                                           extra=pending.extra)
                return
            try:
                spec = pending.options[int(index)]
            except (ValueError, IndexError):
                await query.answer("Unknown choice.")
                return
            await query.answer(f"Sending to {spec}")
            await self._checked_submit(pending.user_id, pending.user, chat_id, spec, pending.payload,
                                       status_message_id=pending.message_id)
            return
        if kind in ("c", "r"):
            rec = await asyncio.to_thread(self.fleet.order, rest)
            if rec is None or not self._may_touch(user.id, chat_id, rec):
                await query.answer("Not your order.")
                return
            if kind == "c":
                tracker = self.trackers.get((rec.chat_id, rec.message_id)) if rec.message_id else None
                targets = [r for r in tracker.records.values()] if tracker else [rec]
                await query.answer("Cancelling…")
                text = await self._cancel([r for r in targets if not r.terminal] or [rec], self._user_name(user))
                if "❌" in text:
                    await self._send(chat_id, text, reply_to=query.message.message_id if query.message else None)
                return
            await query.answer("Sending again…")
            await self._retry(user.id, self._user_name(user), chat_id, rec,
                              reply_to=query.message.message_id if query.message else None)
            return
        await query.answer("Unknown button.")

    def _cancel_job(self, name: str) -> None:
        if self.app and self.app.job_queue:
            for job in self.app.job_queue.get_jobs_by_name(name):
                job.schedule_removal()

# -- command line ----------------------------------------------------------------------------
def add_arguments(parser: "argparse.ArgumentParser") -> None:
    """The flags of `galaxy bot`."""
    parser.add_argument("--check", action="store_true",
                        help="validate the bot section and that a token is available, then exit")


def run(args: "argparse.Namespace", config: "Config") -> int:
    """`galaxy bot`: 0 after a clean stop, 2 for a bad config or a missing token."""
    from galaxy_fleet.config import ConfigError

    webhook_secret: str | None = None
    try:
        settings = BotSettings.from_section(config.section("bot"))
        token = read_token()
        if settings.mode == "webhook":
            webhook_secret, configured = read_webhook_secret()
            for key in ("cert", "key"):
                path = getattr(settings.webhook, key)
                if path and not os.access(path, os.R_OK):
                    raise ConfigError(f"bot.webhook.{key}: cannot read {path}")
    except (ConfigError, TokenMissing) as exc:
        print(f"galaxy bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(token, verbose=bool(getattr(args, "verbose", False)), webhook_secret=webhook_secret)
    if not settings.authorized_users:
        log.warning("bot.authorized_users is empty: the bot will refuse everyone")
    if settings.mode == "webhook":
        if not configured:
            log.info("webhook: no secret in $%s or the credential %s: a random one for this run",
                     WEBHOOK_SECRET_ENV, WEBHOOK_SECRET_CREDENTIAL)
        if not settings.webhook.public_url.startswith("https://"):
            log.warning("bot.webhook.public_url is not https: Telegram only calls https URLs "
                        "(ports 443, 80, 88 or 8443)")
    from galaxy_fleet.control.fleet import Fleet

    try:
        fleet = Fleet(config)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"galaxy bot: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "check", False):
        mode = f", webhook {settings.webhook.public_url}" if settings.mode == "webhook" else ""
        print(f"galaxy bot: OK ({len(fleet.inventory.hosts)} machines, {len(settings.authorized_users)} "
              f"authorized users{mode})")
        return 0
    GalaxyBot(fleet, settings, token, webhook_secret=webhook_secret).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    from galaxy_fleet.config import standalone_main

    return standalone_main("galaxy bot", "Run the fleet's Telegram bot.", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
