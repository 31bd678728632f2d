"""The bot section of the config, access decisions and the rate limiter."""

from __future__ import annotations

import pytest

from galaxy_fleet.bot.access import BotSettings, RateLimiter
from galaxy_fleet.config import ConfigError

GROUPS = {"web": ["web1", "web2"], "db": ["db1"], "all": ["web1", "web2", "db1"]}


def resolve(spec: str) -> list[str]:
    if spec in GROUPS:
        return GROUPS[spec]
    if spec in GROUPS["all"]:
        return [spec]
    raise ValueError(f"unknown target {spec!r}")


def test_defaults_and_users() -> None:
    s = BotSettings.from_section({"authorized_users": [1, "2"], "users": {"3": {"targets": ["web"],
                                                                                 "rate_per_minute": 2}}})
    assert s.authorized_users == {1, 2, 3} and s.alert_chats == [1, 2, 3]
    assert s.is_authorized(3) and not s.is_authorized(4) and not s.is_authorized(None)
    assert s.rate_for(3) == 2 and s.rate_for(1) == 20
    assert s.forbidden_hosts(3, ["web1", "db1"], resolve) == ["db1"]
    assert s.forbidden_hosts(1, ["db1"], resolve) == []


@pytest.mark.parametrize("section, message", [
    ({"token": "x"}, "bot.token: unknown setting (the token never goes in the config"),
    ({"authorized_users": "123"}, "bot.authorized_users: expected a list, got '123'"),
    ({"authorized_users": ["alice"]}, "expected a Telegram id"),
    ({"users": {1: {"targets": "web"}}}, "bot.users.1.targets: expected a list"),
    ({"rate_per_minute": -1}, "bot.rate_per_minute: must be at least 0, got -1"),
    ({"dangerous": {"patterns": ["(unclosed"]}}, "bot.dangerous.patterns[0]: invalid regular expression"),
    ({"dangerous": {"confirm_seconds": 0}}, "bot.dangerous.confirm_seconds"),
    ({"api_base_url": "ftp://x"}, "bot.api_base_url: expected an http(s) URL"),
    ({"flood": {"chat_per_second": -1}}, "bot.flood.chat_per_second: must be at least 0, got -1"),
    ({"flood": {"chat_burst": 0}}, "bot.flood.chat_burst: must be at least 1, got 0"),
    ({"flood": {"overall_per_second": 0.5}}, "bot.flood: overall_per_second and group_per_minute are at least 1"),
    ({"flood": {"per_chat": 1}}, "bot.flood.per_chat: unknown setting"),
    ({"flood": {"max_retries": "many"}}, "bot.flood.max_retries: expected a whole number, got 'many'"),
    ({"mode": "push"}, "bot.mode: expected polling or webhook, got 'push'"),
    ({"mode": "webhook"}, "bot.webhook: mode webhook needs at least {public_url: https://…}"),
    ({"mode": "webhook", "webhook": {}}, "bot.webhook.public_url: expected the https URL Telegram should call"),
    ({"mode": "webhook", "webhook": {"public_url": "bot.example.org"}}, "bot.webhook.public_url: expected"),
    ({"webhook": {"public_url": "https://b.example/h", "port": 70000}}, "bot.webhook.port: must be at most 65535, got 70000"),
    ({"webhook": {"public_url": "https://b.example/h", "secret_token": "s3cr3t"}},
     "(the secret token never goes in the config: use $GALAXY_TELEGRAM_WEBHOOK_SECRET or the systemd credential "
     "telegram_webhook_secret)"),
    ({"webhook": {"public_url": "https://b.example/h", "key": "/etc/k.pem"}}, "bot.webhook.key: needs bot.webhook.cert"),
    ({"webhook": {"public_url": "https://b.example/h", "cert": "cert.pem"}}, "bot.webhook.cert: expected an absolute"),
    ({"webhook": {"public_url": "https://b.example/h", "max_connections": 101}}, "bot.webhook.max_connections: must be at most 100, got 101"),
])
def test_invalid_sections_say_what_is_wrong(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        BotSettings.from_section(section)
    assert message in str(err.value)


def test_flood_and_webhook_settings() -> None:
    s = BotSettings.from_section({})
    assert (s.flood.overall_per_second, s.flood.chat_per_second, s.flood.chat_burst, s.flood.group_per_minute,
            s.flood.max_retries) == (30, 1, 3, 20, 5)
    assert s.mode == "polling" and s.webhook.public_url == ""
    s = BotSettings.from_section({"flood": {"chat_per_second": 0.5, "max_retries": 0}, "mode": "webhook",
                                  "webhook": {"public_url": "https://bot.example.org/galaxy/hook/", "port": 88}})
    assert s.flood.chat_per_second == 0.5 and s.flood.max_retries == 0 and s.flood.overall_per_second == 30
    w = s.webhook
    assert (w.public_url, w.listen, w.port, w.url_path, w.cert, w.max_connections) == \
        ("https://bot.example.org/galaxy/hook/", "127.0.0.1", 88, "galaxy/hook", None, 40)
    s = BotSettings.from_section({"mode": "webhook", "webhook": {"public_url": "https://b.example/x",
                                                                 "url_path": "/local", "listen": "0.0.0.0"}})
    assert s.webhook.url_path == "local" and s.webhook.listen == "0.0.0.0"


def test_webhook_secret_check() -> None:
    from galaxy_fleet.bot.access import check_webhook_secret

    assert check_webhook_secret("abc_DEF-123\n") == "abc_DEF-123"
    for bad in ("", "a b", "x" * 257, "é"):
        with pytest.raises(ConfigError) as err:
            check_webhook_secret(bad)
        assert "must be 1 to 256 characters" in str(err.value) and (not bad or bad not in str(err.value))


def test_danger() -> None:
    s = BotSettings.from_section({"dangerous": {"targets": ["db"], "patterns": [r"\brm\s+-rf\b", "(?i)drop table"]}})
    assert s.danger(["web1"], "uptime", resolve) is None
    assert "db1 is marked dangerous" in s.danger(["web1", "db1"], "uptime", resolve)
    assert "dangerous pattern" in s.danger(["web1"], "sudo rm  -rf /tmp/x", resolve)
    assert "dangerous pattern" in s.danger(["web1"], "DROP TABLE users", resolve)
    assert s.danger(["web1"], "firm -rfx", resolve) is None


def test_rate_limiter_window() -> None:
    rl = RateLimiter()
    assert [rl.check("u", 3, now=t) for t in (0, 1, 2)] == [0, 0, 0]
    assert rl.check("u", 3, now=3) == pytest.approx(57)
    assert rl.check("u", 3, now=60.5) == 0  # the first one left the window
    assert rl.check("other", 3, now=3) == 0
    assert rl.check("u", 0, now=3) == 0  # 0 = no limit


def test_visible_hosts_follow_the_target_limits() -> None:
    """Alerts, /machines and /status show a limited user only the machines it may order
    (control/policy.py's rule, the same one MCP and `galaxy send` use)."""
    s = BotSettings.from_section({"authorized_users": [1], "users": {"3": {"targets": ["web"]}}})
    assert s.visible_hosts(3, ["web1", "web2", "db1"], resolve) == ["web1", "web2"]
    assert s.visible_hosts(1, ["web1", "db1"], resolve) == ["web1", "db1"]
    assert s.visible_hosts(-100123, ["db1"], resolve) == ["db1"]  # a group chat: no per-user limit
