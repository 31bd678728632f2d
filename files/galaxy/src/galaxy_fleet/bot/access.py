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

import re
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from galaxy_fleet.config import ConfigError

DEFAULT_API = "https://api.telegram.org/bot"


@dataclass
class UserPolicy:
    targets: list[str] | None = None  # None: every machine
    rate_per_minute: int | None = None  # None: the section's default


@dataclass
class DangerPolicy:
    targets: list[str] = field(default_factory=list)
    patterns: list[re.Pattern[str]] = field(default_factory=list)
    confirm_seconds: float = 60.0


@dataclass
class FloodPolicy:
    """Telegram's flood limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this)."""
    overall_per_second: float = 30.0
    chat_per_second: float = 1.0
    chat_burst: int = 3
    group_per_minute: float = 20.0
    max_retries: int = 5


@dataclass
class WebhookSettings:
    public_url: str = ""
    listen: str = "127.0.0.1"
    port: int = 8443
    url_path: str = ""
    cert: str | None = None
    key: str | None = None
    max_connections: int = 40


MODES = ("polling", "webhook")
WEBHOOK_SECRET_ENV = "GALAXY_TELEGRAM_WEBHOOK_SECRET"
WEBHOOK_SECRET_CREDENTIAL = "telegram_webhook_secret"
WEBHOOK_SECRET_RE = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # what Telegram accepts as secret_token


@dataclass
class BotSettings:
    api_base_url: str = DEFAULT_API
    authorized_users: set[int] = field(default_factory=set)
    users: dict[int, UserPolicy] = field(default_factory=dict)
    default_machine: str | None = None
    alert_chats: list[int] = field(default_factory=list)
    rate_per_minute: int = 20
    dangerous: DangerPolicy = field(default_factory=DangerPolicy)
    progress_interval: float = 5.0
    max_parts: int = 4
    poll_timeout: int = 10
    min_edit_interval: float = 1.0
    node_down_alert_after: float = 30.0
    refusal_replies_per_minute: int = 3
    flood: FloodPolicy = field(default_factory=FloodPolicy)
    mode: str = "polling"
    webhook: WebhookSettings = field(default_factory=WebhookSettings)

    # -- parsing ------------------------------------------------------------------
    @classmethod
    def from_section(cls, section: dict[str, Any]) -> "BotSettings":
        s = cls()
        known = {"api_base_url", "authorized_users", "users", "default_machine", "alert_chats", "rate_per_minute",
                 "dangerous", "progress_interval", "max_parts", "poll_timeout", "min_edit_interval",
                 "node_down_alert_after", "refusal_replies_per_minute", "flood", "mode", "webhook"}
        for key in section:
            if key not in known:
                hint = " (the token never goes in the config: use $GALAXY_TELEGRAM_TOKEN or the systemd" \
                       " credential telegram_token)" if "token" in str(key) else ""
                raise ConfigError(f"bot.{key}: unknown setting{hint}")
        s.flood = _flood(section.get("flood"))
        mode = section.get("mode", "polling")
        if mode not in MODES:
            raise ConfigError(f"bot.mode: expected polling or webhook, got {mode!r}")
        s.mode = mode
        s.webhook = _webhook(section.get("webhook"), required=mode == "webhook")
        if section.get("api_base_url") is not None:
            url = section["api_base_url"]
            if not isinstance(url, str) or not re.match(r"^https?://", url):
                raise ConfigError(f"bot.api_base_url: expected an http(s) URL, got {url!r}")
            s.api_base_url = url
        s.authorized_users = set(_ids("bot.authorized_users", section.get("authorized_users") or []))
        users = section.get("users") or {}
        if not isinstance(users, dict):
            raise ConfigError("bot.users: expected a mapping of user id to settings")
        for raw_id, spec in users.items():
            uid = _id(f"bot.users key {raw_id!r}", raw_id)
            spec = spec or {}
            if not isinstance(spec, dict) or set(spec) - {"targets", "rate_per_minute"}:
                raise ConfigError(f"bot.users.{uid}: expected {{targets: [...], rate_per_minute: N}}")
            targets = spec.get("targets")
            if targets is not None and (not isinstance(targets, list)
                                        or not all(isinstance(t, str) and t for t in targets)):
                raise ConfigError(f"bot.users.{uid}.targets: expected a list of host or group names")
            rate = spec.get("rate_per_minute")
            if rate is not None:
                rate = _int(f"bot.users.{uid}.rate_per_minute", rate, 0)
            s.users[uid] = UserPolicy(targets, rate)
            s.authorized_users.add(uid)
        dm = section.get("default_machine")
        if dm is not None and (not isinstance(dm, str) or not dm):
            raise ConfigError(f"bot.default_machine: expected a host or group name, got {dm!r}")
        s.default_machine = dm
        if section.get("alert_chats") is not None:
            s.alert_chats = _ids("bot.alert_chats", section["alert_chats"])
        else:
            s.alert_chats = sorted(s.authorized_users)
        for key, minimum in (("rate_per_minute", 0), ("max_parts", 1), ("poll_timeout", 0),
                             ("refusal_replies_per_minute", 0)):
            if key in section:
                setattr(s, key, _int(f"bot.{key}", section[key], minimum))
        for key, minimum in (("progress_interval", 0.2), ("min_edit_interval", 0.0), ("node_down_alert_after", 0.0)):
            if key in section:
                setattr(s, key, _float(f"bot.{key}", section[key], minimum))
        danger = section.get("dangerous") or {}
        if not isinstance(danger, dict) or set(danger) - {"targets", "patterns", "confirm_seconds"}:
            raise ConfigError("bot.dangerous: expected {targets: [...], patterns: [...], confirm_seconds: N}")
        targets = danger.get("targets") or []
        if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
            raise ConfigError("bot.dangerous.targets: expected a list of host or group names")
        patterns = []
        for i, pat in enumerate(danger.get("patterns") or []):
            if not isinstance(pat, str):
                raise ConfigError(f"bot.dangerous.patterns[{i}]: expected a regular expression string")
            try:
                patterns.append(re.compile(pat))
            except re.error as exc:
                raise ConfigError(f"bot.dangerous.patterns[{i}]: invalid regular expression {pat!r}: {exc}") from None
        s.dangerous = DangerPolicy(list(targets), patterns,
                                   _float("bot.dangerous.confirm_seconds", danger.get("confirm_seconds", 60), 1))
        return s

    # -- decisions ---------------------------------------------------------------------
    def is_authorized(self, user_id: int | None) -> bool:
        return user_id is not None and user_id in self.authorized_users

    def rate_for(self, user_id: int) -> int:
        policy = self.users.get(user_id)
        if policy and policy.rate_per_minute is not None:
            return policy.rate_per_minute
        return self.rate_per_minute

    def forbidden_hosts(self, user_id: int, hosts: list[str], resolve: Callable[[str], list[str]]) -> list[str]:
        """The hosts among ``hosts`` that this user may not send orders to."""
        policy = self.users.get(user_id)
        if policy is None or policy.targets is None:
            return []
        allowed: set[str] = set()
        for spec in policy.targets:
            try:
                allowed.update(resolve(spec))
            except ValueError:
                continue  # a stale name in the config allows nothing
        return [h for h in hosts if h not in allowed]

    def danger(self, hosts: list[str], payload: str, resolve: Callable[[str], list[str]]) -> str | None:
        """Why this order needs a confirmation, or None."""
        marked: set[str] = set()
        for spec in self.dangerous.targets:
            try:
                marked.update(resolve(spec))
            except ValueError:
                continue
        hit = [h for h in hosts if h in marked]
        if hit:
            return f"{', '.join(hit)} {'is' if len(hit) == 1 else 'are'} marked dangerous"
        for pat in self.dangerous.patterns:
            m = pat.search(payload)
            if m:
                return f"the order matches the dangerous pattern {pat.pattern!r}"
        return None


def _flood(section: Any) -> FloodPolicy:
    if section is None:
        return FloodPolicy()
    fields = {"overall_per_second", "chat_per_second", "chat_burst", "group_per_minute", "max_retries"}
    if not isinstance(section, dict) or set(section) - fields:
        raise ConfigError("bot.flood: expected {overall_per_second: 30, chat_per_second: 1, chat_burst: 3, "
                          "group_per_minute: 20, max_retries: 5}" + _unknown(section, fields))
    p = FloodPolicy()
    for key in ("overall_per_second", "chat_per_second", "group_per_minute"):
        if key in section:
            setattr(p, key, _float(f"bot.flood.{key}", section[key], 0.0))
    if "chat_burst" in section:
        p.chat_burst = _int("bot.flood.chat_burst", section["chat_burst"], 1)
    if "max_retries" in section:
        p.max_retries = _int("bot.flood.max_retries", section["max_retries"], 0)
    if 0 < p.overall_per_second < 1 or 0 < p.group_per_minute < 1:
        raise ConfigError("bot.flood: overall_per_second and group_per_minute are at least 1 (or 0: no limit)")
    return p


def _webhook(section: Any, required: bool) -> WebhookSettings:
    w = WebhookSettings()
    if section is None:
        if required:
            raise ConfigError("bot.webhook: mode webhook needs at least {public_url: https://…}")
        return w
    fields = {"public_url", "listen", "port", "url_path", "cert", "key", "max_connections"}
    if not isinstance(section, dict) or set(section) - fields:
        secret_hint = (" (the secret token never goes in the config: use $" + WEBHOOK_SECRET_ENV +
                       " or the systemd credential " + WEBHOOK_SECRET_CREDENTIAL + ")"
                       if isinstance(section, dict) and any("secret" in str(k) for k in section) else "")
        raise ConfigError("bot.webhook: expected {public_url, listen, port, url_path, cert, key, max_connections}"
                          + _unknown(section, fields) + secret_hint)
    url = section.get("public_url")
    if url is not None or required:
        parsed = urllib.parse.urlsplit(url) if isinstance(url, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ConfigError(f"bot.webhook.public_url: expected the https URL Telegram should call, got {url!r}")
        w.public_url = url
    listen = section.get("listen", w.listen)
    if not isinstance(listen, str) or not listen:
        raise ConfigError(f"bot.webhook.listen: expected an address to listen on, got {listen!r}")
    w.listen = listen
    if "port" in section:
        w.port = _int("bot.webhook.port", section["port"], 1)
        if w.port > 65535:
            raise ConfigError(f"bot.webhook.port: expected a port in 1..65535, got {w.port}")
    path = section.get("url_path")
    if path is None:
        path = urllib.parse.urlsplit(w.public_url).path if w.public_url else ""
    if not isinstance(path, str) or any(c in path for c in "?# "):
        raise ConfigError(f"bot.webhook.url_path: expected a URL path, got {path!r}")
    w.url_path = path.strip("/")
    for key in ("cert", "key"):
        value = section.get(key)
        if value is not None and (not isinstance(value, str) or not value.startswith("/")):
            raise ConfigError(f"bot.webhook.{key}: expected an absolute path, got {value!r}")
        setattr(w, key, value)
    if w.key and not w.cert:
        raise ConfigError("bot.webhook.key: needs bot.webhook.cert (the certificate that goes with it)")
    if "max_connections" in section:
        w.max_connections = _int("bot.webhook.max_connections", section["max_connections"], 1)
        if w.max_connections > 100:
            raise ConfigError(f"bot.webhook.max_connections: Telegram allows 1..100, got {w.max_connections}")
    return w


def check_webhook_secret(value: str) -> str:
    """The webhook secret token as Telegram accepts it (the value itself is never shown)."""
    value = value.strip()
    if not WEBHOOK_SECRET_RE.match(value):
        raise ConfigError(f"the webhook secret (${WEBHOOK_SECRET_ENV} or the credential {WEBHOOK_SECRET_CREDENTIAL})"
                          f" must be 1 to 256 characters of A-Z, a-z, 0-9, _ and - (it has {len(value)} "
                          "characters)")
    return value


def _unknown(section: Any, fields: set[str]) -> str:
    if not isinstance(section, dict):
        return f", got {type(section).__name__}"
    extra = sorted(str(k) for k in set(section) - fields)
    return f"; unknown: {', '.join(extra)}" if extra else ""


def _id(what: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{what}: expected a Telegram id (a number), got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what}: expected a Telegram id (a number), got {value!r}") from None


def _ids(what: str, value: Any) -> list[int]:
    if not isinstance(value, list):
        raise ConfigError(f"{what}: expected a list of Telegram ids")
    return [_id(what, v) for v in value]


def _int(what: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{what}: expected a whole number >= {minimum}, got {value!r}")
    return value


def _float(what: str, value: Any, minimum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigError(f"{what}: expected a number >= {minimum}, got {value!r}")
    return float(value)


class RateLimiter:
    """At most ``limit`` events per key in any 60-second window."""

    def __init__(self, window: float = 60.0):
        self.window = window
        self.hits: dict[Any, deque[float]] = {}

    def check(self, key: Any, limit: int, now: float | None = None) -> float:
        """Record an event; 0 when allowed, else the seconds until one would be."""
        if limit <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        q = self.hits.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= limit:
            return max(0.1, q[0] + self.window - now)
        q.append(now)
        return 0.0

    def prune(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for key in [k for k, q in self.hits.items() if not q or q[-1] <= now - self.window]:
            del self.hits[key]


# -- decisions about one Telegram user ----------------------------------------------------------
def user_name(user: Any) -> str:
    """How a Telegram user appears in orders and the audit trail: ``telegram:ID(@name)``."""
    return f"telegram:{user.id}" + (f"(@{user.username})" if getattr(user, "username", None) else "")


def allowed_hosts(settings: BotSettings, user_id: int, machines: list[str],
                  resolve: Callable[[str], list[str]]) -> list[str] | None:
    """The machines among ``machines`` this user may use; None: every one."""
    policy = settings.users.get(user_id)
    if policy is None or policy.targets is None:
        return None
    return [h for h in machines if not settings.forbidden_hosts(user_id, [h], resolve)]


def may_touch(settings: BotSettings, user_id: int, chat_id: int, rec: Any,
              resolve: Callable[[str], list[str]]) -> bool:
    """Whether this user may cancel or retry the order ``rec``: one of the same chat or the same
    user, on a machine they may use."""
    if settings.forbidden_hosts(user_id, [rec.host], resolve):
        return False
    own = f"telegram:{user_id}"
    return rec.chat_id == chat_id or rec.user == own or (rec.user or "").startswith(own + "(")
