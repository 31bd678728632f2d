"""Talking to Telegram: messages, edits, documents and typing actions, in the bot's HTML.

Every text is Telegram HTML made by render.py. When Telegram refuses the
markup, the same text goes again as plain text. Every request passes the
flood limiter (flood.py) that the application is built with.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from telegram import Bot, Message, ReplyParameters, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, RetryAfter, TelegramError

from galaxy_fleet.bot import render
from galaxy_fleet.bot.flood import retry_seconds

log = logging.getLogger("galaxy.bot")


def _reply_to(message_id: int | None) -> ReplyParameters | None:
    return ReplyParameters(message_id, allow_sending_without_reply=True) if message_id else None


class Messenger:
    """Sends for the bot (``bot``: the application's Bot)."""

    def __init__(self, bot: Bot):
        self.bot = bot

    async def send(
        self, chat_id: int, text: str, *, reply_to: int | None = None, parse_mode: str | None = "HTML", **kwargs: Any
    ) -> Message:
        reply = _reply_to(reply_to)
        try:
            return await self.bot.send_message(chat_id, text, parse_mode=parse_mode, reply_parameters=reply, **kwargs)
        except BadRequest as exc:
            if parse_mode and "parse" in str(exc).lower():  # our HTML was refused: send it plain
                return await self.bot.send_message(chat_id, render.html_to_text(text), reply_parameters=reply, **kwargs)
            raise

    async def reply(self, update: Update, text: str, **kwargs: Any) -> Message | None:
        """A reply to the message that ``update`` brought."""
        msg = update.effective_message
        if msg is None:
            return None
        return await self.send(msg.chat_id, text, reply_to=msg.message_id, parse_mode=ParseMode.HTML, **kwargs)

    async def reply_long(self, update: Update, html_text: str) -> None:
        """A reply split between lines into messages that fit (machine lists, health results)."""
        if update.effective_message is None:
            return
        if render.tg_len(html_text) <= render.TELEGRAM_LIMIT:
            await self.reply(update, html_text)
            return
        chunk: list[str] = []
        for line in html_text.split("\n"):
            if chunk and render.tg_len("\n".join([*chunk, line])) > render.TELEGRAM_LIMIT:
                await self.reply(update, "\n".join(chunk))
                chunk = []
            chunk.append(line)
        if chunk:
            await self.reply(update, "\n".join(chunk))

    async def edit(self, chat_id: int, message_id: int, text: str, markup: Any) -> bool:
        """Replace a message's text and buttons; False if Telegram would not."""
        for _ in range(3):
            try:
                await self.bot.edit_message_text(
                    text, chat_id=chat_id, message_id=message_id, parse_mode=ParseMode.HTML, reply_markup=markup
                )
                return True
            except RetryAfter as exc:  # the flood limiter gave up: wait once more, then try again
                await asyncio.sleep(retry_seconds(exc))
            except BadRequest as exc:
                if "not modified" in str(exc).lower():
                    return True
                if "parse" in str(exc).lower():
                    text = render.html_to_text(text)
                    try:
                        await self.bot.edit_message_text(
                            text, chat_id=chat_id, message_id=message_id, reply_markup=markup
                        )
                        return True
                    except TelegramError:
                        pass
                log.warning("cannot edit message %s in chat %s: %s", message_id, chat_id, exc)
                return False
            except TelegramError as exc:
                log.warning("cannot edit message %s in chat %s: %s", message_id, chat_id, exc)
                return False
        return False

    async def send_document(
        self, chat_id: int, content: bytes, filename: str, caption: str, reply_to: int | None = None
    ) -> Message:
        return await self.bot.send_document(
            chat_id,
            content,
            filename=filename,
            caption=caption,
            parse_mode=ParseMode.HTML,
            reply_parameters=_reply_to(reply_to),
        )

    async def typing(self, chat_id: int) -> None:
        """The chat shows "typing…" for a few seconds."""
        try:
            await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.debug("typing action in %s failed: %s", chat_id, exc)
