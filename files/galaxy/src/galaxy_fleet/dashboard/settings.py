"""The dashboard's runtime settings: the ``dashboard:`` config section
(``galaxy_fleet.config.DashboardConfig``), the store it reads (``control.store``,
the one the bot writes), command-line overrides and the access token.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from galaxy_fleet.config import Config, ConfigError, ControlConfig, DashboardConfig, secret

TOKEN_ENV = "GALAXY_DASHBOARD_TOKEN"
TOKEN_CREDENTIAL = "dashboard_token"
MIN_TOKEN_LENGTH = 16
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@dataclass
class Settings(DashboardConfig):
    """The ``dashboard:`` section with the store it reads and the token it requires."""

    store: Path = field(default_factory=lambda: ControlConfig().store)
    token: str | None = None

    def allowed_host_names(self) -> set[str]:
        """The Host header names this dashboard answers to (lowercase, IPv6 in brackets)."""
        names = set(LOOPBACK_NAMES)
        bind = self.host.strip("[]").lower()
        if bind and bind not in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard bind names no host
            names.add(f"[{bind}]" if ":" in bind else bind)
        for name in self.allowed_hosts:
            name = name.strip("[]").lower()
            names.add(f"[{name}]" if ":" in name else name)
        return names

    def __repr__(self) -> str:  # never print the token
        return (
            f"Settings(store={str(self.store)!r}, host={self.host!r}, port={self.port}, "
            f"token={'set' if self.token else None})"
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


def read_token(section: DashboardConfig) -> str | None:
    """The token from $GALAXY_DASHBOARD_TOKEN, ``dashboard.token_file`` or the systemd
    credential ``dashboard_token``; None when none is configured."""
    token = os.environ.get(TOKEN_ENV)
    source = f"${TOKEN_ENV}"
    if not token and section.token_file:
        path = section.token_file
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
        raise ConfigError(
            f"dashboard token from {source}: use at least {MIN_TOKEN_LENGTH} characters without"
            " spaces (e.g. `openssl rand -hex 24`)"
        )
    return token


def load(config: Config, **overrides: Any) -> Settings:
    """Settings from the config; ``overrides`` (command-line values, None = unset) win."""
    d = config.dashboard
    store = overrides.pop("store", None) or config.control.store
    s = Settings(store=Path(store), **{f.name: getattr(d, f.name) for f in fields(DashboardConfig)})
    for key, value in overrides.items():
        if value is not None:
            setattr(s, key, value)
    if "token" not in overrides:
        s.token = read_token(d)
    return s


def check_bind(settings: Settings) -> None:
    """Refuse to serve a non-loopback address without a token."""
    if not settings.token and not is_loopback(settings.host):
        raise ConfigError(
            f"the dashboard would listen on {settings.host}, which is not a loopback address, without a token:"
            f" set dashboard.token_file (mode 0600/0640), ${TOKEN_ENV} or the systemd credential"
            f" {TOKEN_CREDENTIAL}, or listen on 127.0.0.1"
        )
