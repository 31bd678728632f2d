"""The bot section of the config, access decisions and the rate limiter."""

from __future__ import annotations

import pytest

from galaxy_fleet.bot_access import BotSettings, RateLimiter
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
    ({"authorized_users": "123"}, "bot.authorized_users: expected a list"),
    ({"authorized_users": ["alice"]}, "expected a Telegram id"),
    ({"users": {1: {"targets": "web"}}}, "bot.users.1.targets: expected a list"),
    ({"rate_per_minute": -1}, "bot.rate_per_minute: expected a whole number >= 0"),
    ({"dangerous": {"patterns": ["(unclosed"]}}, "bot.dangerous.patterns[0]: invalid regular expression"),
    ({"dangerous": {"confirm_seconds": 0}}, "bot.dangerous.confirm_seconds"),
    ({"api_base_url": "ftp://x"}, "bot.api_base_url: expected an http(s) URL"),
])
def test_invalid_sections_say_what_is_wrong(section: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        BotSettings.from_section(section)
    assert message in str(err.value)


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
