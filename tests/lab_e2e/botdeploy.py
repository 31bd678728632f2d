"""The Telegram bot as the collection deploys it on the lab's control machine.

``bot_vars`` are the control role's variables for it: the users and chats of
the bot tests (tests/bot/botlab.py), the Bot API of the emulator on this
host's lab address, and the token (a secret: ``deploy`` hands it to
ansible-playbook in a private file). ``ControlBot`` reaches what the deployed
bot leaves on the control machine: its unit, its journal, the fleet's trail.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "bot") not in sys.path:
    sys.path.insert(0, str(TESTS / "bot"))

from botlab import bot_settings, new_token  # noqa: E402

GALAXY = "runuser -u galaxy-control -- /opt/galaxy/bin/galaxy --config /etc/galaxy/config.yml"
LOST_AFTER = 8  # seconds: running orders of a machine gone this long are reported lost


def bot_vars(api_base_url: str, token: str, webhook_secret: str) -> dict[str, Any]:
    """The bot polls (the emulator cannot call a webhook on the lab); the webhook secret is
    handed over all the same, to check that it is treated like the token."""
    settings = bot_settings(api_base_url, default_machine="web1", progress_interval=1, min_edit_interval=0.3,
                            dangerous={"targets": [], "patterns": [r"\brm\s+-rf\b"], "confirm_seconds": 3})
    return {
        "galaxy_control_bot_enabled": True,
        "galaxy_control_bot_token": token,
        "galaxy_control_bot_webhook_secret": webhook_secret,
        "galaxy_control_bot_authorized_users": settings.pop("authorized_users"),
        "galaxy_control_bot_settings": settings,
        "galaxy_control_settings": {"lost_after": LOST_AFTER},
    }


class ControlBot:
    def __init__(self, lab: Any) -> None:
        self.lab = lab

    def sh(self, command: str, timeout: float = 60) -> str:
        return self.lab.must("control", command, timeout)

    def unit(self, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show galaxy-bot -p {','.join(props)}")
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> str:
        return self.sh("journalctl -u galaxy-bot --no-pager -o cat")

    def audit(self, *args: str) -> list[dict[str, Any]]:
        """The fleet's trail on the control node, through `galaxy audit` as the galaxy user."""
        out = self.sh(f"{GALAXY} audit --json --limit 0 {' '.join(shlex.quote(a) for a in args)}")
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def restarts(self) -> int:
        return int(self.unit("NRestarts")["NRestarts"])


def order_ids(text: str) -> list[str]:
    return re.findall(r"<code>(\d{8}T[\d.]+Z-[0-9a-f]+)</code>", text)


__all__ = ["GALAXY", "LOST_AFTER", "ControlBot", "bot_vars", "new_token", "order_ids"]
