"""The dashboard's settings (the ``dashboard:`` config section) and its access token.

    dashboard:
      host: 127.0.0.1        # a non-loopback address requires a token
      port: 5000
      token_file: /etc/galaxy/dashboard.token   # or $GALAXY_DASHBOARD_TOKEN, or the
                                                # systemd credential "dashboard_token"
      refresh: 5             # seconds between the page's refreshes
      threads: 8             # WSGI worker threads
      cache_ttl: 1.0         # /api/status is recomputed at most this often
      history_ttl: 15.0      # the charts of the last day, at most this often
      title: Galaxy
      allowed_hosts: [galaxy.example.org]   # names the browser may use besides 127.0.0.1, localhost, [::1]
                                            # and the listen address (any other Host header gets 421)

The store is ``control.store``, the one the bot writes.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from galaxy_fleet.config import Config, ConfigError

TOKEN_ENV = "GALAXY_DASHBOARD_TOKEN"
TOKEN_CREDENTIAL = "dashboard_token"
MIN_TOKEN_LENGTH = 16
DEFAULT_STORE = "/var/lib/galaxy/control/galaxy.db"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class Settings:
    store: Path
    host: str = "127.0.0.1"
    port: int = 5000
    token: str | None = None
    refresh: float = 5.0
    threads: int = 8
    cache_ttl: float = 1.0
    history_ttl: float = 15.0
    title: str = "Galaxy"
    allowed_hosts: tuple[str, ...] = ()

    def allowed_host_names(self) -> set[str]:
        """The Host header names this dashboard answers to (lowercase, IPv6 in brackets)."""
        names = set(LOOPBACK_NAMES)
        bind = self.host.strip("[]").lower()
        if bind and bind not in ("0.0.0.0", "::"):
            names.add(f"[{bind}]" if ":" in bind else bind)
        for name in self.allowed_hosts:
            name = name.strip("[]").lower()
            names.add(f"[{name}]" if ":" in name else name)
        return names

    def __repr__(self) -> str:  # never print the token
        return (f"Settings(store={str(self.store)!r}, host={self.host!r}, port={self.port}, "
                f"token={'set' if self.token else None})")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def read_token(section: dict[str, Any]) -> str | None:
    """The token from $GALAXY_DASHBOARD_TOKEN, ``dashboard.token_file`` or the systemd
    credential ``dashboard_token``; None when none is configured."""
    from galaxy_fleet.config import secret

    token = os.environ.get(TOKEN_ENV)
    source = f"${TOKEN_ENV}"
    if not token and section.get("token_file"):
        path = Path(str(section["token_file"]))
        source = str(path)
        try:
            mode = path.stat().st_mode
            token = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"dashboard.token_file: cannot read {path}: {exc.strerror or exc}") from None
        if mode & stat.S_IROTH:
            raise ConfigError(f"dashboard.token_file: {path} is readable by everyone; chmod o-r it")
    if not token:
        token = secret(TOKEN_CREDENTIAL)
        source = f"credential {TOKEN_CREDENTIAL}"
    if token is None:
        return None
    token = token.strip()
    if len(token) < MIN_TOKEN_LENGTH or any(c.isspace() for c in token):
        raise ConfigError(f"dashboard token from {source}: use at least {MIN_TOKEN_LENGTH} characters without"
                          " spaces (e.g. `openssl rand -hex 24`)")
    return token


def _number(section: dict[str, Any], key: str, default: float, kind: type, minimum: float) -> Any:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or kind is int and not isinstance(value, int):
        raise ConfigError(f"dashboard.{key}: expected a {kind.__name__}, got {value!r}")
    if value < minimum:
        raise ConfigError(f"dashboard.{key}: must be at least {minimum}, got {value!r}")
    return kind(value)


def _host_names(value: Any) -> tuple[str, ...]:
    def ok(name: Any) -> bool:
        if not isinstance(name, str) or not name or any(c.isspace() or c in "/@?#" for c in name):
            return False
        if ":" not in name:
            return True
        try:  # an IPv6 address, with or without brackets; never a port
            return ipaddress.ip_address(name.strip("[]")).version == 6
        except ValueError:
            return False

    if not isinstance(value, list) or not all(ok(v) for v in value):
        raise ConfigError(f"dashboard.allowed_hosts: expected a list of host names or addresses (no port), "
                          f"got {value!r}")
    return tuple(value)


def load(config: Config, **overrides: Any) -> Settings:
    """Settings from the config; ``overrides`` (command-line values, None = unset) win."""
    section = config.section("dashboard")
    store = overrides.pop("store", None) or config.section("control").get("store") or DEFAULT_STORE
    known = {"host", "port", "token_file", "refresh", "threads", "cache_ttl", "history_ttl", "title", "allowed_hosts"}
    unknown = sorted(set(section) - known)
    if unknown:
        raise ConfigError(f"dashboard.{unknown[0]}: unknown setting")
    s = Settings(
        store=Path(str(store)),
        host=str(section.get("host", "127.0.0.1")),
        port=_number(section, "port", 5000, int, 0),
        refresh=_number(section, "refresh", 5.0, float, 1),
        threads=_number(section, "threads", 8, int, 1),
        cache_ttl=_number(section, "cache_ttl", 1.0, float, 0),
        history_ttl=_number(section, "history_ttl", 15.0, float, 0),
        title=str(section.get("title", "Galaxy")),
        allowed_hosts=_host_names(section.get("allowed_hosts", [])),
    )
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    if "token" not in overrides:
        s.token = read_token(section)
    if s.port > 65535:
        raise ConfigError(f"dashboard.port: {s.port} is not a TCP port")
    return s


def check_bind(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not settings.token and not is_loopback(settings.host):
        raise ConfigError(
            f"the dashboard would listen on {settings.host}, which is not a loopback address, without a token:"
            f" set dashboard.token_file (mode 0600/0640), ${TOKEN_ENV} or the systemd credential"
            f" {TOKEN_CREDENTIAL}, or listen on 127.0.0.1")
