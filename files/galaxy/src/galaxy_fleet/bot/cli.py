"""`galaxy bot` and ``python -m galaxy_fleet.bot``: the flags, the secrets, logging, and the bot's start.

The token is read from $GALAXY_TELEGRAM_TOKEN or the systemd credential
``telegram_token``, removed from the environment (child processes never see
it), and redacted from every log line: PTB and httpx put it in URLs. The
webhook secret (from $GALAXY_TELEGRAM_WEBHOOK_SECRET or the credential
``telegram_webhook_secret``, else random for each run) is handled the same way.

The flags are the package's ``add_arguments`` (__init__.py, light, for `galaxy`'s parser).
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys

from galaxy_fleet.bot import add_arguments
from galaxy_fleet.bot.access import WEBHOOK_SECRET_CREDENTIAL, WEBHOOK_SECRET_ENV, BotSettings, check_webhook_secret
from galaxy_fleet.config import Config, ConfigError, secret, standalone_main
from galaxy_fleet.control.fleet import Fleet

log = logging.getLogger("galaxy.bot")

TOKEN_ENV = "GALAXY_TELEGRAM_TOKEN"
TOKEN_CREDENTIAL = "telegram_token"


class TokenMissing(RuntimeError):
    pass


def read_token() -> str:
    """The bot token from $GALAXY_TELEGRAM_TOKEN or the systemd credential; removed from the environment."""
    token = secret(TOKEN_CREDENTIAL, TOKEN_ENV)
    os.environ.pop(TOKEN_ENV, None)
    if not token:
        raise TokenMissing(
            f"no bot token: set ${TOKEN_ENV} or hand over the systemd credential {TOKEN_CREDENTIAL!r} (LoadCredential=)"
        )
    return token.strip()


def read_webhook_secret() -> tuple[str, bool]:
    """The webhook's secret token and whether it was configured; removed from the environment.

    Without $GALAXY_TELEGRAM_WEBHOOK_SECRET or the credential, a random one for this run: the bot
    hands it to Telegram itself (setWebhook) at every start."""
    value = secret(WEBHOOK_SECRET_CREDENTIAL, WEBHOOK_SECRET_ENV)
    os.environ.pop(WEBHOOK_SECRET_ENV, None)
    if not value or not value.strip():
        return secrets.token_urlsafe(32), False
    return check_webhook_secret(value), True


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then blanks out secrets (the token sits in every Bot API URL)."""

    def __init__(self, fmt: str, secrets_: list[str], named: dict[str, str] | None = None):
        super().__init__(fmt)
        # secret -> what is shown instead; the longest first, so that no part of one is left
        pairs = {s: "<token>" for s in secrets_ if s}
        pairs.update({s: f"<{name}>" for s, name in (named or {}).items() if s})
        self.secrets = sorted(pairs.items(), key=lambda kv: -len(kv[0]))

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for s, shown in self.secrets:
            text = text.replace(s, shown)
        return text


def setup_logging(token: str, verbose: bool = False, webhook_secret: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(
            "%(levelname)s %(name)s: %(message)s",
            [token],
            {webhook_secret: "webhook secret"} if webhook_secret else None,
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # httpx logs every request URL at INFO; PTB's own loggers are chatty at DEBUG only.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("tornado.access").setLevel(logging.WARNING)  # the webhook server's request log


def run(args: argparse.Namespace, config: Config) -> int:
    """`galaxy bot`: 0 after a clean stop, 2 for a bad config or a missing token."""
    webhook_secret: str | None = None
    configured = False
    try:
        settings = BotSettings.from_config(config)
        token = read_token()
        if settings.mode == "webhook":
            webhook_secret, configured = read_webhook_secret()
            for key in ("cert", "key"):
                path = getattr(settings.webhook, key)
                if path and not os.access(path, os.R_OK):
                    raise ConfigError(f"bot.webhook.{key}: cannot read {path}")
    except (ConfigError, TokenMissing) as exc:
        print(f"galaxy bot: {exc}", file=sys.stderr)
        return 2
    setup_logging(token, verbose=bool(getattr(args, "verbose", False)), webhook_secret=webhook_secret)
    if not settings.authorized_users:
        log.warning("bot.authorized_users is empty: the bot will refuse everyone")
    if settings.mode == "webhook":
        if not configured:
            log.info(
                "webhook: no secret in $%s or the credential %s: a random one for this run",
                WEBHOOK_SECRET_ENV,
                WEBHOOK_SECRET_CREDENTIAL,
            )
        if not settings.webhook.public_url.startswith("https://"):
            log.warning(
                "bot.webhook.public_url is not https: Telegram only calls https URLs (ports 443, 80, 88 or 8443)"
            )
    try:
        fleet = Fleet(config)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"galaxy bot: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "check", False):
        mode = f", webhook {settings.webhook.public_url}" if settings.mode == "webhook" else ""
        print(
            f"galaxy bot: OK ({len(fleet.inventory.hosts)} machines, {len(settings.authorized_users)} "
            f"authorized users{mode})"
        )
        return 0
    # Deferred: python-telegram-bot takes seconds to load, and --check does without it.
    from galaxy_fleet.bot.app import GalaxyBot

    GalaxyBot(fleet, settings, token, webhook_secret=webhook_secret).run()
    return 0


def main(argv: list[str] | None = None) -> int:
    return standalone_main("galaxy bot", "Run the fleet's Telegram bot.", add_arguments, run, argv)


if __name__ == "__main__":
    sys.exit(main())
