"""The bot's application: python-telegram-bot 22 wired to the fleet, started and stopped.

``GalaxyBot`` builds one PTB ``Application`` (with the flood limiter of
flood.py), registers a handler per command of commands.COMMANDS, plain text,
unknown commands and the buttons, an error handler that logs ``exc_info``,
and the periodic work on PTB's ``JobQueue``. It holds the parts:

- ``tg`` (messenger.py): sends messages, edits, documents, typing actions;
- ``follow`` (follow.py): follows each order to its answer, tells the alerts;
- ``submit`` (submit.py): sends orders from chats (checks, confirmation, cancel, retry);
- ``commands`` (commands.py): the handlers.

It reaches the machines only through ``galaxy_fleet.control.fleet.Fleet``.
Long polling by default (PTB deletes a webhook left from an earlier run
first); ``bot.mode: webhook`` runs PTB's own web server (tornado) and
registers ``webhook.public_url`` with Telegram (``setWebhook``, with a secret
token that Telegram sends back in the ``X-Telegram-Bot-Api-Secret-Token``
header; requests without it get 403). cli.py starts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar

from telegram import BotCommand
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from galaxy_fleet.bot.access import BotSettings
from galaxy_fleet.bot.commands import COMMANDS, Commands
from galaxy_fleet.bot.flood import flood_limiter
from galaxy_fleet.bot.follow import Follower
from galaxy_fleet.bot.messenger import Messenger
from galaxy_fleet.bot.submit import Submitter
from galaxy_fleet.control.fleet import Fleet
from galaxy_fleet.sdnotify import notify

log = logging.getLogger("galaxy.bot")


class GalaxyBot:
    """The Telegram application and its parts (``audit``: the control node's own audit writer;
    None: events go through the fleet's store)."""

    ALLOWED_UPDATES: ClassVar[list[str]] = ["message", "callback_query"]

    def __init__(
        self,
        fleet: Fleet,
        settings: BotSettings,
        token: str,
        *,
        audit: Any = None,
        manage_fleet: bool = True,
        webhook_secret: str | None = None,
    ):
        self.fleet = fleet
        self.settings = settings
        self.webhook_secret = webhook_secret  # webhook mode: what Telegram must send back
        self.audit = audit
        self.manage_fleet = manage_fleet
        self.ready_hook: Callable[[], None] | None = None  # called once updates arrive (tests, embedding)
        self.app = (
            Application.builder()
            .token(token)
            .base_url(settings.api_base_url)
            .base_file_url(settings.api_base_url.replace("/bot", "/file/bot", 1))
            .concurrent_updates(True)
            .rate_limiter(flood_limiter(settings.flood))
            .get_updates_read_timeout(settings.poll_timeout + 10)
            .post_init(self._post_init)
            .post_stop(self._post_stop)
            .post_shutdown(self._post_shutdown)
            .build()
        )
        if self.app.job_queue is None:
            raise RuntimeError('the bot needs PTB\'s JobQueue: install "python-telegram-bot[job-queue]"')
        jobs = self.app.job_queue
        self.tg = Messenger(self.app.bot)
        self.follow = Follower(fleet, settings, self.tg, jobs)
        self.submit = Submitter(fleet, settings, self.tg, self.follow, jobs, self.audit_event)
        self.commands = Commands(fleet, settings, self.tg, self.follow, self.submit, self.audit_event)
        for name, handler in self.commands.handlers():
            self.app.add_handler(CommandHandler(name, handler))
        self.app.add_handler(
            MessageHandler(filters.TEXT & ~filters.COMMAND & filters.ChatType.PRIVATE, self.commands.text)
        )
        # In groups, commands for other bots are none of our business.
        self.app.add_handler(MessageHandler(filters.COMMAND & filters.ChatType.PRIVATE, self.commands.unknown))
        self.app.add_handler(CallbackQueryHandler(self.commands.on_button))
        self.app.add_error_handler(self.on_error)

    def run(self) -> None:
        """Until SIGINT or SIGTERM."""
        if self.settings.mode != "webhook":
            # PTB deletes a webhook left from an earlier webhook run first (getUpdates is refused while one is set).
            self.app.run_polling(
                allowed_updates=self.ALLOWED_UPDATES,
                timeout=self.settings.poll_timeout,
                drop_pending_updates=False,
                close_loop=True,
            )
            return
        wh = self.settings.webhook
        if not self.webhook_secret:
            raise RuntimeError("webhook mode needs a secret token")
        log.info("webhook mode: listening on %s:%d/%s for %s", wh.listen, wh.port, wh.url_path, wh.public_url)
        # setWebhook at start (URL, secret, certificate); updates Telegram keeps while the bot is
        # down are delivered when it is back (drop_pending_updates=False), so nothing is deleted at stop.
        self.app.run_webhook(
            listen=wh.listen,
            port=wh.port,
            url_path=wh.url_path,
            cert=wh.cert,
            key=wh.key,
            webhook_url=wh.public_url,
            allowed_updates=self.ALLOWED_UPDATES,
            drop_pending_updates=False,
            max_connections=wh.max_connections,
            secret_token=self.webhook_secret,
            close_loop=True,
        )

    # -- start and stop -----------------------------------------------------------------------
    async def _post_init(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        if self.manage_fleet:
            await asyncio.to_thread(self.fleet.start)
        try:  # the command menu in Telegram's apps
            await app.bot.set_my_commands([BotCommand(c.name, c.menu) for c in COMMANDS])
        except Exception:
            log.warning("setMyCommands failed", exc_info=True)
        await self.follow.start()
        assert app.job_queue is not None
        app.job_queue.run_repeating(
            self._tick, interval=self.settings.progress_interval, first=self.settings.progress_interval, name="progress"
        )
        # Jobs run once the application has started, i.e. once updates are being polled.
        app.job_queue.run_once(self._ready, 0, name="ready")

    async def _ready(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.info(
            "bot ready: %d machines, %d orders followed, %d authorized users",
            len(self.fleet.machines()),
            len(self.follow.trackers),
            len(self.settings.authorized_users),
        )
        notify("READY=1")
        if self.ready_hook:
            self.ready_hook()

    async def _post_stop(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        await self.follow.stop()

    async def _post_shutdown(self, app: Application[Any, Any, Any, Any, Any, Any]) -> None:
        notify("STOPPING=1")
        if self.manage_fleet:
            await asyncio.to_thread(self.fleet.stop)
        if self.audit is not None:
            try:
                self.audit.close()
            except OSError:
                pass

    # -- what every part shares -------------------------------------------------------------
    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("error while handling an update: %s", context.error, exc_info=context.error)

    async def _tick(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Every progress_interval: status messages and deliveries, then expired choices and rate windows."""
        await self.follow.tick()
        self.submit.tick()
        self.commands.tick()

    def audit_event(
        self, type_: str, *, severity: str = "warning", message: str = "", user: str | None = None, **data: Any
    ) -> None:
        """An event in the control node's own trail, and through the store in the fleet's."""
        fields = {k: v for k, v in data.items() if v is not None}
        try:
            if self.audit is not None:
                self.audit.append(type_, severity=severity, message=message, user=user, **fields)
            else:
                self.fleet.audit_event(type_, severity=severity, message=message, user=user, **fields)
        except Exception:  # the audit trail must not take the bot down
            log.warning("could not write audit event %s", type_, exc_info=True)
