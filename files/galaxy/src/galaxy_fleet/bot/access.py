"""Who may do what through the bot: the ``bot:`` config section, rate limits, dangerous orders.

The section (in /etc/galaxy/config.yml; never the token, which comes from
$GALAXY_TELEGRAM_TOKEN or the systemd credential ``telegram_token``)::

    bot:
      authorized_users: [123456789]          # Telegram user ids allowed to use the bot
      users:                                 # optional per-user limits (listed users are authorized too)
        123456789: {targets: [web, db1], rate_per_minute: 10}
      default_machine: web1                  # where /order without a target and plain text go
      alert_chats: [123456789]               # default: the authorized users' private chats
      rate_per_minute: 20                    # orders a user may send per minute (0: no limit)
      dangerous:
        targets: [prod]                      # hosts or groups whose orders need a confirmation
        patterns: ['\\brm\\s+-rf\\b', '(?i)drop\\s+table']
        confirm_seconds: 60
      api_base_url: https://api.telegram.org/bot   # the Bot API (tests point it at an emulator)
      progress_interval: 5                   # seconds between "running" refreshes and typing actions
      max_parts: 4                           # a longer answer is sent as a Markdown document
      node_down_alert_after: 30              # an unreachable machine is reported after this long
      flood:                                 # Telegram's flood limits, kept by the bot (FloodLimiter)
        overall_per_second: 30               # messages and edits a second, all chats together (0: off)
        chat_per_second: 1                   # ... to any one chat (0: off)
        chat_burst: 3                        # a chat may get this many at once before the spacing applies
        group_per_minute: 20                 # ... to any one group chat (0: off)
        max_retries: 5                       # a 429 answer is waited out (retry_after) and retried this often
      mode: polling                          # or webhook: Telegram pushes updates to the bot
      webhook:                               # only with mode: webhook
        public_url: https://bot.example.org/galaxy-hook   # what Telegram calls (https, port 443/80/88/8443)
        listen: 127.0.0.1                    # where the bot's own web server listens (behind a reverse proxy)
        port: 8443
        url_path: galaxy-hook                # default: the path of public_url
        cert: /etc/galaxy/webhook.pem        # optional: a self-signed certificate to hand to Telegram ...
        key: /etc/galaxy/webhook.key         # ... and its key, when the bot terminates TLS itself
        max_connections: 40
      # The webhook's secret token comes from $GALAXY_TELEGRAM_WEBHOOK_SECRET or the systemd credential
      # telegram_webhook_secret; without one the bot makes a random one at each start.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from galaxy_fleet import config as config_mod
from galaxy_fleet.config import (
    WEBHOOK_SECRET_CREDENTIAL,
    WEBHOOK_SECRET_ENV,
    BotConfig,
    ConfigError,
    DangerPolicy,
    FloodPolicy,
    UserPolicy,
    WebhookSettings,
)
from galaxy_fleet.control import policy
from galaxy_fleet.control.policy import RateLimiter

__all__ = [
    "WEBHOOK_SECRET_CREDENTIAL",
    "WEBHOOK_SECRET_ENV",
    "BotSettings",
    "DangerPolicy",
    "FloodPolicy",
    "RateLimiter",
    "UserPolicy",
    "WebhookSettings",
    "check_webhook_secret",
]


WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as secret_token


class BotSettings(BotConfig):
    """The ``bot:`` section (``galaxy_fleet.config.BotConfig``) with the decisions it drives."""

    @classmethod
    def of(cls, bot: BotConfig) -> BotSettings:
        return cls(**{f.name: getattr(bot, f.name) for f in dataclasses.fields(BotConfig)})

    @classmethod
    def from_config(cls, config: config_mod.Config) -> BotSettings:
        return cls.of(config.bot)

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> BotSettings:
        """A ``bot:`` section on its own, checked by the config loader."""
        return cls.of(config_mod.section(BotConfig, section, "bot"))

    # -- decisions ---------------------------------------------------------------------
    def is_authorized(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.authorized_users

    def rate_for(self, user_id: int) -> int:
        policy = self.users.get(user_id)
        if policy and policy.rate_per_minute is not None:
            return policy.rate_per_minute
        return self.rate_per_minute

    def forbidden_hosts(self, user_id: int, hosts: list[str], resolve: Callable[[str], list[str]]) -> list[str]:
        """The hosts among ``hosts`` that this user may not send orders to (control/policy.py's rule)."""
        return policy.forbidden_hosts(self.users.get(user_id), hosts, resolve)

    def visible_hosts(self, chat_id: int, hosts: list[str], resolve: Callable[[str], list[str]]) -> list[str]:
        """The hosts a user (or the private chat with one) may see: machines, status, alerts.
        A group chat sees what the fleet has."""
        return policy.visible_hosts(self.users.get(chat_id), hosts, resolve)

    def danger(self, hosts: list[str], payload: str, resolve: Callable[[str], list[str]]) -> str | None:
        """Why this order needs a confirmation, or None (control/policy.py's rule)."""
        return policy.danger(self.dangerous, hosts, payload, resolve)


def check_webhook_secret(value: str) -> str:
    """The webhook secret token as Telegram accepts it (the value itself is never shown)."""
    value = value.strip()
    if not WEBHOOK_SECRET_RE.match(value):
        raise ConfigError(
            f"the webhook secret (${WEBHOOK_SECRET_ENV} or the credential {WEBHOOK_SECRET_CREDENTIAL})"
            f" must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (it has {len(value)} "
            "characters)"
        )
    return value


# -- decisions about one Telegram user ----------------------------------------------------------
def user_name(user: Any) -> str:
    """How a Telegram user appears in orders and the audit trail: ``telegram:ID(@name)``."""
    return f"telegram:{user.id}" + (f"(@{user.username})" if getattr(user, "username", None) else "")


def allowed_hosts(
    settings: BotSettings, user_id: int, machines: list[str], resolve: Callable[[str], list[str]]
) -> list[str] | None:
    """The machines among ``machines`` this user may use; None: every one."""
    limits = settings.users.get(user_id)
    if limits is None or limits.targets is None:
        return None
    return settings.visible_hosts(user_id, machines, resolve)  # one pass, not one resolution per machine


def may_touch(settings: BotSettings, user_id: int, chat_id: int, rec: Any, resolve: Callable[[str], list[str]]) -> bool:
    """Whether this user may cancel or retry the order ``rec``: one of the same chat or the same
    user, on a machine they may use."""
    if settings.forbidden_hosts(user_id, [rec.host], resolve):
        return False
    own = f"telegram:{user_id}"
    return rec.chat_id == chat_id or rec.sender == own or (rec.sender or "").startswith(own + "(")
