"""The inline buttons under the bot's messages, and what each one carries back (callback data).

=================  ====================================================
``t:TOKEN:I``      send the waiting order TOKEN to the I-th machine offered
``ok:TOKEN``       confirm the dangerous order TOKEN
``no:TOKEN``       drop the waiting order TOKEN (not sent)
``c:ORDER_ID``     cancel an order (every unfinished part of a fan-out)
``r:ORDER_ID``     send an order again
``p:TOKEN:A``      answer the permission prompt TOKEN (permissions.py maps it to order and prompt):
                   A is ``o`` allow once, ``a`` allow for this order, ``d`` deny
=================  ====================================================

``commands.Commands.on_button`` answers them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

CHOOSE, CONFIRM, DROP, CANCEL, RETRY, PERMISSION = "t", "ok", "no", "c", "r", "p"
# The answers of a permission prompt's buttons (node/permissions.py's names).
PERMISSION_ANSWERS = {"o": "once", "a": "always", "d": "deny"}


def parse(data: str | None) -> tuple[str, str]:
    """``(kind, rest)`` of a button's callback data."""
    kind, _, rest = (data or "").partition(":")
    return kind, rest


def choose_target(token: str, options: Sequence[str]) -> InlineKeyboardMarkup:
    """One button per machine (three a row), then Cancel."""
    buttons = [InlineKeyboardButton(o, callback_data=f"{CHOOSE}:{token}:{i}") for i, o in enumerate(options)]
    rows = [buttons[j : j + 3] for j in range(0, len(buttons), 3)]
    rows.append([InlineKeyboardButton("✖ Cancel", callback_data=f"{DROP}:{token}")])
    return InlineKeyboardMarkup(rows)


def confirm(token: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Confirm", callback_data=f"{CONFIRM}:{token}"),
                InlineKeyboardButton("✖ Cancel", callback_data=f"{DROP}:{token}"),
            ]
        ]
    )


def cancel(order_id: str, *, several: bool) -> InlineKeyboardMarkup:
    """Under a running order's status message; for a fan-out it cancels every part."""
    label = "🚫 Cancel all" if several else "🚫 Cancel"
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=f"{CANCEL}:{order_id}")]])


def retry(records: Sequence[Any], *, with_host: bool) -> InlineKeyboardMarkup:
    """One Retry button per order (``records``: OrderRecord-like, ``id`` and ``host``)."""
    return InlineKeyboardMarkup(
        [
            [InlineKeyboardButton("🔁 Retry" + (f" {r.host}" if with_host else ""), callback_data=f"{RETRY}:{r.id}")]
            for r in records
        ]
    )


def permission(token: str) -> InlineKeyboardMarkup:
    """Under an agent's permission prompt (callback data stays far below Telegram's 64 bytes)."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton("✅ Allow once", callback_data=f"{PERMISSION}:{token}:o"),
                InlineKeyboardButton("✅ Allow for this order", callback_data=f"{PERMISSION}:{token}:a"),
            ],
            [InlineKeyboardButton("⛔ Deny", callback_data=f"{PERMISSION}:{token}:d")],
        ]
    )
