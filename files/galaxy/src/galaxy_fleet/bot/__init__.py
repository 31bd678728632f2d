"""The Telegram bot (`galaxy bot`), module by module:

- ``cli``: `galaxy bot` / ``python -m galaxy_fleet.bot``: token, logging, ``--check``, start
  (its flags: ``add_arguments`` below);
- ``app``: ``GalaxyBot``, the python-telegram-bot application: wiring, start and stop, polling or webhook;
- ``commands``: the table of commands (handler, arguments, /help and menu texts) and their handlers;
- ``submit``: an order from a chat to the fleet: target choice, checks, confirmation; cancel, retry;
- ``follow``: ``Follower``: each order's status message and answer, alerts to the alert chats;
- ``render``: every text the bot shows, as Telegram HTML (answers, status messages, replies, alerts);
- ``buttons``: the inline buttons and their callback data;
- ``messenger``: sending, editing, documents, typing (HTML, plain text if Telegram refuses it);
- ``flood``: ``FloodLimiter``, Telegram's flood limits and 429 retries;
- ``access``: the ``bot:`` config section and who may do what.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `galaxy bot` and ``python -m galaxy_fleet.bot`` (here, with no imports, so that
    `galaxy` builds its parser without loading the bot)."""
    parser.add_argument(
        "--check", action="store_true", help="validate the bot section and that a token is available, then exit"
    )
