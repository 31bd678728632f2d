"""Fixtures for the bot tests: the Telegram emulator (tests/support/telegram_emulator.py)."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Iterator

import pytest

from support.telegram_emulator import TelegramEmulator


@pytest.fixture
def bot_token() -> str:
    # Looks like a real token; tests grep logs and files for it.
    return f"{secrets.randbelow(10**9) + 10**9}:AA{secrets.token_urlsafe(24)}"


@pytest.fixture
def emulator(tmp_path: Path, bot_token: str) -> Iterator[TelegramEmulator]:
    with TelegramEmulator(bot_token).start(tmp_path) as emu:
        yield emu
