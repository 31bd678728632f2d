"""An order on its way from a chat to the fleet, and cancel and retry.

``Submitter.order`` is where ``/order``, plain text and the buttons meet:

1. the sender's rate limit (``bot.rate_per_minute``, per user);
2. no target and no default machine: a keyboard to choose one (``Pending``);
3. the target resolved to machines, each one the sender may use (``bot.users.ID.targets``);
4. a dangerous order (``bot.dangerous``) waits for Confirm within ``confirm_seconds``;
5. the status message first (its id is part of the order record), then ``Fleet.submit``,
   then follow.py follows it to the answer.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from telegram.ext import ContextTypes, JobQueue

from galaxy_fleet.bot import buttons, render
from galaxy_fleet.bot.access import BotSettings, RateLimiter, allowed_hosts
from galaxy_fleet.bot.follow import Follower
from galaxy_fleet.bot.messenger import Messenger
from galaxy_fleet.control.fleet import Fleet, NodeUnavailable, TargetError

log = logging.getLogger("galaxy.bot")

CHOICE_SECONDS = 600.0  # how long a machine keyboard stays valid


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


class Submitter:
    """Sends orders from chats to the fleet (``audit``: records a bot event, see ``GalaxyBot.audit_event``)."""

    def __init__(
        self,
        fleet: Fleet,
        settings: BotSettings,
        tg: Messenger,
        follow: Follower,
        jobs: JobQueue[Any],
        audit: Callable[..., None],
    ):
        self.fleet = fleet
        self.settings = settings
        self.tg = tg
        self.follow = follow
        self.jobs = jobs
        self.audit = audit
        self.pending: dict[str, Pending] = {}
        self.rates = RateLimiter()

    # -- the fleet's machines ----------------------------------------------------------------
    def resolve(self, spec: str) -> list[str]:
        return self.fleet.resolve(spec)

    def machine_names(self) -> list[str]:
        return [m["name"] for m in self.fleet.machines()]

    def default_target(self) -> str | None:
        """Where an order without a target goes: ``bot.default_machine``, or the only machine."""
        if self.settings.default_machine:
            return self.settings.default_machine
        names = self.machine_names()
        return names[0] if len(names) == 1 else None

    def allowed_hosts(self, user_id: int) -> list[str] | None:
        return allowed_hosts(self.settings, user_id, self.machine_names(), self.resolve)

    def split_target(self, text: str) -> tuple[str | None, str]:
        """``web1 fix it`` → ("web1", "fix it") when web1 is a target; else (None, text)."""
        parts = text.split(maxsplit=1)
        if not parts:
            return None, ""
        try:
            self.resolve(parts[0])
        except ValueError:
            return None, text
        return parts[0], parts[1].strip() if len(parts) > 1 else ""

    # -- sending ---------------------------------------------------------------------------------
    async def order(
        self, user_id: int, user: str, chat_id: int, message_id: int, spec: str | None, payload: str
    ) -> None:
        """An order typed in a chat (``message_id``: the message it came in, replied to)."""
        wait = self.rates.check(user_id, self.settings.rate_for(user_id))
        if wait:
            self.audit(
                "bot_refused",
                message=f"rate limited: {render.preview(payload, 80)}",
                user=user,
                reason="rate_limited",
                chat_id=chat_id,
            )
            await self.tg.send(chat_id, render.slow_down(wait, self.settings.rate_for(user_id)), reply_to=message_id)
            return
        if spec is None:
            spec = self.default_target()
        if spec is None:
            allowed = self.allowed_hosts(user_id)
            names = allowed if allowed is not None else self.machine_names()
            options = names + ([] if allowed is not None or len(names) < 2 else ["all"])
            token = secrets.token_hex(4)
            self.pending[token] = Pending(
                token, user_id, user, chat_id, payload, time.monotonic() + CHOICE_SECONDS, options=options
            )
            sent = await self.tg.send(
                chat_id,
                render.choose_machine_text(payload),
                reply_to=message_id,
                reply_markup=buttons.choose_target(token, options),
            )
            self.pending[token].message_id = sent.message_id
            return
        await self.checked_submit(user_id, user, chat_id, spec, payload, reply_to=message_id)

    async def checked_submit(
        self,
        user_id: int,
        user: str,
        chat_id: int,
        spec: str,
        payload: str,
        *,
        reply_to: int | None = None,
        status_message_id: int | None = None,
        confirmed: bool = False,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Submit after the checks of targets and danger (``status_message_id``: a message of the bot's
        to edit, e.g. the keyboard that chose the target, instead of a new one)."""

        async def say(text: str) -> None:
            if status_message_id is not None:
                await self.tg.edit(chat_id, status_message_id, text, None)
            else:
                await self.tg.send(chat_id, text, reply_to=reply_to)

        try:
            hosts = self.resolve(spec)
        except TargetError as exc:
            await say(render.not_understood(exc))
            return
        forbidden = self.settings.forbidden_hosts(user_id, hosts, self.resolve)
        if forbidden:
            self.audit(
                "bot_refused",
                message=f"target not allowed: {', '.join(forbidden)}",
                user=user,
                reason="target_not_allowed",
                target=spec,
                chat_id=chat_id,
            )
            await say(render.may_not("send orders to", forbidden))
            return
        reason = None if confirmed else self.settings.danger(hosts, payload, self.resolve)
        if reason:
            await self._ask_confirmation(
                user_id,
                user,
                chat_id,
                spec,
                hosts,
                payload,
                reason,
                reply_to=reply_to,
                status_message_id=status_message_id,
                extra=extra,
            )
            return
        await self._submit(
            user, chat_id, spec, payload, reply_to=reply_to, status_message_id=status_message_id, extra=extra
        )

    async def _submit(
        self,
        user: str,
        chat_id: int,
        spec: str,
        payload: str,
        *,
        reply_to: int | None = None,
        status_message_id: int | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if status_message_id is None:
            status = await self.tg.send(chat_id, render.sending_text(spec, payload), reply_to=reply_to)
            status_message_id = status.message_id
        else:
            await self.tg.edit(chat_id, status_message_id, render.sending_text(spec, payload), None)
        extra = dict(extra or {})
        # Someone in this chat can answer the agent's permission prompts (follow.py relays them as
        # buttons). Only the opencode executor reads the option; the others ignore options they do not know.
        extra["options"] = {**(extra.get("options") or {}), "interactive": True}
        try:
            records = await asyncio.to_thread(
                self.fleet.submit, spec, payload, sender=user, chat_id=chat_id, message_id=status_message_id, **extra
            )
        except (TargetError, ValueError) as exc:
            await self.tg.edit(chat_id, status_message_id, render.not_sent_text(exc), None)
            return
        except Exception as exc:
            log.exception("submit to %s failed", spec)
            await self.tg.edit(chat_id, status_message_id, render.not_sent_text(exc), None)
            return
        await self.follow.follow(records, chat_id, status_message_id, spec)

    # -- waiting orders: a machine to choose, a confirmation ---------------------------------------
    async def _ask_confirmation(
        self,
        user_id: int,
        user: str,
        chat_id: int,
        spec: str,
        hosts: list[str],
        payload: str,
        reason: str,
        *,
        reply_to: int | None,
        status_message_id: int | None,
        extra: dict[str, Any] | None,
    ) -> None:
        seconds = self.settings.dangerous.confirm_seconds
        token = secrets.token_hex(4)
        pending = Pending(
            token,
            user_id,
            user,
            chat_id,
            payload,
            time.monotonic() + seconds,
            spec=spec,
            hosts=hosts,
            reason=reason,
            extra=dict(extra or {}),
        )
        text = render.confirm_text(spec, reason, payload, seconds)
        markup = buttons.confirm(token)
        if status_message_id is not None:
            await self.tg.edit(chat_id, status_message_id, text, markup)
            pending.message_id = status_message_id
        else:
            sent = await self.tg.send(chat_id, text, reply_to=reply_to, reply_markup=markup)
            pending.message_id = sent.message_id
        self.pending[token] = pending
        self.audit("bot_confirm_asked", severity="info", message=reason, user=user, target=spec, chat_id=chat_id)
        self.jobs.run_once(self._expire_confirmation, seconds, data=token, name=f"confirm:{token}")

    async def _expire_confirmation(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        token = context.job.data if context.job else None
        pending = self.pending.pop(str(token), None)
        if pending is None or pending.message_id is None:
            return
        self.audit(
            "bot_confirm_expired",
            severity="info",
            message=f"not confirmed: {pending.reason}",
            user=pending.user,
            target=pending.spec,
            chat_id=pending.chat_id,
        )
        await self.tg.edit(
            pending.chat_id, pending.message_id, render.confirm_expired_text(pending.spec, pending.payload), None
        )

    def waiting(self, token: str) -> Pending | None:
        """The waiting order ``token``, if it has not expired."""
        pending = self.pending.get(token)
        if pending is None or pending.expires < time.monotonic():
            self.pending.pop(token, None)
            return None
        return pending

    async def drop(self, pending: Pending, chat_id: int) -> None:
        """Its sender pressed Cancel: the order is not sent."""
        self.pending.pop(pending.token, None)
        self._cancel_job(f"confirm:{pending.token}")
        await self.tg.edit(chat_id, pending.message_id or 0, render.dropped_text(pending.payload), None)

    async def confirm(self, pending: Pending, chat_id: int) -> None:
        """Its sender pressed Confirm: the dangerous order goes out."""
        self.pending.pop(pending.token, None)
        self._cancel_job(f"confirm:{pending.token}")
        self.audit(
            "bot_confirmed",
            severity="info",
            message=pending.reason,
            user=pending.user,
            target=pending.spec,
            chat_id=chat_id,
        )
        await self.checked_submit(
            pending.user_id,
            pending.user,
            chat_id,
            pending.spec or "",
            pending.payload,
            status_message_id=pending.message_id,
            confirmed=True,
            extra=pending.extra,
        )

    def choice(self, pending: Pending, index: str) -> str | None:
        """The machine its sender chose on the keyboard (the order then goes through ``checked_submit``);
        None for a button that is not on it."""
        self.pending.pop(pending.token, None)
        try:
            return pending.options[int(index)]
        except (ValueError, IndexError):
            return None

    def _cancel_job(self, name: str) -> None:
        for job in self.jobs.get_jobs_by_name(name):
            job.schedule_removal()

    def tick(self) -> None:
        """Forget unanswered machine choices and old rate-limit entries."""
        now = time.monotonic()
        for token in [t for t, p in self.pending.items() if p.expires < now and not p.reason]:
            self.pending.pop(token, None)
        self.rates.prune()

    # -- orders already sent -------------------------------------------------------------------
    def find_order(self, chat_id: int, ref: str) -> Any:
        """An order by id, or by a unique prefix/suffix of the id among this chat's recent orders."""
        rec = self.fleet.order(ref)
        if rec is not None:
            return rec
        matches = [r for r in self.fleet.orders(200, chat_id) if r.id.startswith(ref) or r.id.endswith(ref)]
        return matches[0] if len(matches) == 1 else None

    async def cancel(self, records: list[Any], user: str) -> tuple[str, bool]:
        """Cancel each of ``records``: the reply (HTML, one line per machine), and whether a machine
        could not be asked."""
        lines = []
        failed = False
        for rec in records:
            if rec.terminal:
                lines.append(render.cancel_line(rec.host, state=rec.state))
                continue
            try:
                await asyncio.to_thread(self.fleet.cancel, rec.id, user=user)
                lines.append(render.cancel_line(rec.host))
            except NodeUnavailable as exc:
                lines.append(render.cancel_line(rec.host, error=exc, unreachable=True))
                failed = True
            except Exception as exc:
                lines.append(render.cancel_line(rec.host, error=exc))
                failed = True
        self.audit(
            "bot_cancel",
            severity="info",
            message="; ".join(render.html_to_text(x) for x in lines),
            user=user,
            order_ids=[r.id for r in records],
        )
        return "\n".join(lines) or render.NOTHING_TO_CANCEL, failed

    async def retry(self, user_id: int, user: str, chat_id: int, rec: Any, reply_to: int | None) -> None:
        wait = self.rates.check(user_id, self.settings.rate_for(user_id))
        if wait:
            self.audit("bot_refused", message="rate limited: retry", user=user, reason="rate_limited", chat_id=chat_id)
            await self.tg.send(chat_id, render.slow_down(wait), reply_to=reply_to)
            return
        # A retry is a new order with the same host, payload, executor, options and session
        # (it goes through the same checks: a dangerous order is confirmed again).
        extra = {
            "executor": rec.executor,
            "options": rec.options or None,
            "session": rec.session,
            "timeout": rec.timeout,
        }
        await self.checked_submit(
            user_id,
            user,
            chat_id,
            rec.host,
            rec.payload,
            reply_to=reply_to,
            extra={k: v for k, v in extra.items() if v is not None},
        )
