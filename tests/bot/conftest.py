"""Fixtures for the bot tests: the Telegram emulator, and BotLab (botlab.py) started per module or per test."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from botlab import BotLab, new_token  # noqa: E402
from support.telegram_emulator import TelegramEmulator  # noqa: E402


@pytest.fixture
def bot_token() -> str:
    return new_token()


@pytest.fixture
def emulator(tmp_path: Path, bot_token: str) -> Iterator[TelegramEmulator]:
    emu = TelegramEmulator(bot_token)
    emu.start(tmp_path)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BotLab]:
    """One fleet and bot shared by a module's tests (users and chats keep them apart)."""
    lab = BotLab(tmp_path_factory.mktemp("botlab"), new_token())
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[Callable[..., BotLab]]:
    """A started lab of its own (bot settings overridable), for tests that kill or restart things."""
    labs: list[BotLab] = []

    def make(**overrides: Any) -> BotLab:
        lab = BotLab(tmp_path / f"lab{len(labs)}", new_token(), **overrides)
        labs.append(lab)
        return lab.start()

    try:
        yield make
    finally:
        for lab in labs:
            lab.stop()
