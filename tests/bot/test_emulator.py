"""The compatibility launcher itself: PTB 22's Bot against telegram-test-api through the proxy."""

from __future__ import annotations

import asyncio
import time

import pytest
from telegram import Bot, BotCommand, InlineKeyboardButton, InlineKeyboardMarkup

from support.telegram_emulator import TelegramEmulator


def run(coro):
    return asyncio.run(coro)


async def _bot(emu: TelegramEmulator) -> Bot:
    bot = Bot(emu.token, base_url=emu.api_base_url)
    await bot.initialize()
    return bot


def test_get_me_and_messages(emulator: TelegramEmulator) -> None:
    async def go():
        bot = await _bot(emulator)
        assert bot.bot.is_bot and bot.bot.username == "TestNameBot"
        sent = await bot.send_message(42, "hello", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("Go", callback_data="go")]]))
        assert sent.text == "hello" and abs(sent.date.timestamp() - time.time()) < 60
        edited = await bot.edit_message_text("hello again", chat_id=42, message_id=sent.message_id)
        assert edited.text == "hello again" and edited.message_id == sent.message_id
        await bot.edit_message_reply_markup(chat_id=42, message_id=sent.message_id, reply_markup=None)
        await bot.send_chat_action(42, "typing")
        await bot.set_my_commands([BotCommand("help", "show help")])
        assert [c.command for c in await bot.get_my_commands()] == ["help"]
        doc = await bot.send_document(42, b"# big\n" * 10, filename="answer.md", caption="the answer")
        assert doc.document.file_name == "answer.md"
        await bot.shutdown()
    run(go())
    msgs = emulator.bot_messages(42)
    assert [m.text for m in msgs] == ["hello again", "the answer"]
    assert msgs[0].buttons == []
    assert msgs[1].document["file_name"] == "answer.md"
    assert emulator.documents[0].content == b"# big\n" * 10
    assert [a.action for a in emulator.chat_actions] == ["typing"]
    assert emulator.commands == [{"command": "help", "description": "show help"}]


def test_updates_offset_and_long_poll(emulator: TelegramEmulator) -> None:
    user = emulator.user(7)

    async def go():
        bot = await _bot(emulator)
        t0 = time.monotonic()
        assert await bot.get_updates(timeout=0.3) == ()
        assert time.monotonic() - t0 >= 0.25  # the empty poll waited
        user.send("/start")
        user.send("plain text")
        ups = await bot.get_updates(timeout=5)
        assert [u.message.text for u in ups] == ["/start", "plain text"]
        assert ups[0].message.from_user.id == 7 and ups[0].message.chat.type == "private"
        assert ups[0].message.entities[0].type == "bot_command"
        # Not confirmed yet: delivered again, as Telegram does.
        again = await bot.get_updates(timeout=0)
        assert [u.update_id for u in again] == [u.update_id for u in ups]
        assert await bot.get_updates(offset=ups[-1].update_id + 1, timeout=0) == ()
        sent = await bot.send_message(7, "pick", reply_markup=InlineKeyboardMarkup(
            [[InlineKeyboardButton("Yes", callback_data="y")]]))
        user.press(emulator.wait_message(7, "pick"), "Yes")
        ups = await bot.get_updates(offset=ups[-1].update_id + 1, timeout=5)
        cq = ups[0].callback_query
        assert cq.data == "y" and cq.chat_instance and cq.message.message_id == sent.message_id
        assert await cq.answer("ok")
        await bot.shutdown()
    run(go())
    assert emulator.callback_answers[0]["text"] == "ok"


def test_unknown_method_is_an_error(emulator: TelegramEmulator) -> None:
    from telegram.error import TelegramError

    async def go():
        bot = await _bot(emulator)
        with pytest.raises(TelegramError):
            await bot.send_dice(1)
        await bot.shutdown()
    run(go())
