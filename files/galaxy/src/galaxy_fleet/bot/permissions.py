"""An agent's permission prompts, relayed to the chat of the order that asks.

An order placed from a chat is interactive (submit.py): when its agent wants a
tool the node's policy guards, the node audits ``permission_asked`` and waits
(node/permissions.py). The control plane hands that event to the bot as
``FleetEvent("permission")``; ``PermissionRelay`` sends it to the order's chat,
as a reply to the order's status message, with three buttons: Allow once,
Allow for this order, Deny (buttons.py).

A button carries a short token (``p:TOKEN:A``), mapped here to the order and
the prompt; the mapping lives in memory, so after a restart of the bot an old
prompt's buttons answer "no longer waiting" and the prompt expires on the node.
A press goes to ``Fleet.answer_permission``, which lets only the order's sender
or an admin (``bot.admins``) answer: anyone else gets a refusal pop-up, the
control node audits ``permission_answer_refused`` and the node is not asked.

The message is edited to say who decided what when the answer is taken (or the
node's ``permission_answered`` event arrives), and to "expired — denied" on the
node's ``permission_expired`` event, or a few seconds after the prompt's
timeout if that event never comes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from telegram import CallbackQuery, User
from telegram.ext import ContextTypes, JobQueue

from galaxy_fleet.bot import buttons, render
from galaxy_fleet.bot.access import BotSettings, user_name
from galaxy_fleet.bot.messenger import Messenger
from galaxy_fleet.control.fleet import Fleet, FleetEvent, NodeError, NodeUnavailable, PermissionRefused

log = logging.getLogger("galaxy.bot")

# After a prompt's timeout, how long to wait for the node's permission_expired before saying so anyway.
EXPIRY_GRACE = 5.0


@dataclass
class Prompt:
    """One relayed prompt and the message that shows it."""

    token: str
    order_id: str
    permission: str
    host: str
    chat_id: int
    tool: str
    detail: str
    timeout: float | None
    message_id: int | None = None
    done: bool = False

    def head(self) -> tuple[str, str, str, str]:
        return self.host, self.order_id, self.tool, self.detail


class PermissionRelay:
    """The prompts waiting in chats (token → Prompt)."""

    def __init__(self, fleet: Fleet, settings: BotSettings, tg: Messenger, jobs: JobQueue[Any]):
        self.fleet = fleet
        self.settings = settings
        self.tg = tg
        self.jobs = jobs
        self.prompts: dict[str, Prompt] = {}
        self.tokens: dict[tuple[str, str], str] = {}  # (order id, permission id) -> token

    # -- from the fleet (on the bot's loop, in the order the node wrote them) ----------------------
    async def on_event(self, ev: FleetEvent) -> None:
        event, rec = ev.event or {}, ev.record
        etype, pid = event.get("type"), event.get("permission")
        if not isinstance(pid, str) or not event.get("order_id"):
            return
        key = (str(event["order_id"]), pid)
        if etype == "permission_asked":
            if rec is None or rec.chat_id is None or rec.terminal or not event.get("interactive"):
                return  # not from a chat, over already, or nobody can answer (the node's policy decided)
            if key not in self.tokens:
                await self._ask(rec, pid, event)
            return
        prompt = self.prompts.get(self.tokens.get(key, ""))
        if prompt is None or prompt.done:
            return
        if etype == "permission_expired":
            await self._close(prompt, render.permission_expired_text(*prompt.head()))
        elif etype == "permission_answered":
            await self._close(
                prompt,
                render.permission_decided_text(
                    *prompt.head(), answer=str(event.get("answer") or "?"), by=str(event.get("by") or "?")
                ),
            )

    async def _ask(self, rec: Any, pid: str, event: dict[str, Any]) -> None:
        token = secrets.token_urlsafe(6)  # 8 characters: "p:" + token + ":o" is 12 bytes of callback data
        timeout = event.get("timeout")
        timeout = float(timeout) if isinstance(timeout, (int, float)) and timeout > 0 else None
        prompt = Prompt(
            token,
            rec.id,
            pid,
            rec.host,
            rec.chat_id,
            str(event.get("tool") or "?"),
            str(event.get("detail") or ""),
            timeout,
        )
        self.prompts[token] = prompt
        self.tokens[(rec.id, pid)] = token
        sent = await self.tg.send(
            rec.chat_id,
            render.permission_text(*prompt.head(), timeout),
            reply_to=rec.message_id,
            reply_markup=buttons.permission(token),
        )
        prompt.message_id = sent.message_id
        if timeout is not None:
            self.jobs.run_once(self._expire, timeout + EXPIRY_GRACE, data=token, name=f"permission:{token}")

    async def _expire(self, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The prompt's time ran out and the node's permission_expired never came (the node denies it)."""
        prompt = self.prompts.get(str(context.job.data if context.job else ""))
        if prompt is not None and not prompt.done:
            await self._close(prompt, render.permission_expired_text(*prompt.head(), "no answer in time"))

    async def _close(self, prompt: Prompt, text: str) -> None:
        """The prompt is decided: its message says how, without buttons, and the token is forgotten."""
        prompt.done = True
        self.prompts.pop(prompt.token, None)
        self.tokens.pop((prompt.order_id, prompt.permission), None)
        for job in self.jobs.get_jobs_by_name(f"permission:{prompt.token}"):
            job.schedule_removal()
        if prompt.message_id is not None:
            await self.tg.edit(prompt.chat_id, prompt.message_id, text, None)

    # -- a button pressed -------------------------------------------------------------------------
    async def press(self, query: CallbackQuery, user: User, rest: str) -> None:
        """``rest``: ``TOKEN:A`` of the callback data ``p:TOKEN:A``."""
        token, _, code = rest.partition(":")
        answer = buttons.PERMISSION_ANSWERS.get(code)
        prompt = self.prompts.get(token)
        if answer is None:
            await query.answer("Unknown button.")
            return
        if prompt is None or prompt.done:
            await query.answer(render.PERMISSION_GONE)
            return
        by = user_name(user)
        try:
            decision = await asyncio.to_thread(
                self.fleet.answer_permission,
                prompt.order_id,
                prompt.permission,
                answer,
                by,
                is_admin=user.id in self.settings.admins,
            )
        except PermissionRefused:
            await query.answer(render.PERMISSION_NOT_YOURS, show_alert=True)
            return
        except KeyError:
            await query.answer(render.PERMISSION_GONE)
            return
        except (NodeError, NodeUnavailable) as exc:
            log.info("permission answer for order %s not taken: %s", prompt.order_id, exc)
            await query.answer(render.permission_failed(exc), show_alert=True)
            return
        taken = str(decision.get("answer") or answer)
        await query.answer(render.PERMISSION_VERBS.get(taken, taken))
        if not prompt.done:
            await self._close(prompt, render.permission_decided_text(*prompt.head(), answer=taken, by=by))
