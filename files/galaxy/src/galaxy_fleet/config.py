"""Configuration: /etc/galaxy/config.yml, overridable by GALAXY_CONFIG or --config.

One typed loader for the whole file. Every section is a dataclass below; its
fields are the settings, their defaults are written here once, and ``setting()``
adds a minimum or maximum. ``from_dict`` builds a ``Config`` from the parsed
YAML, checking every value's type and refusing unknown keys with their full path
(``bot.flood.per_chat: unknown setting``); it reports all the errors it finds,
not only the first. Modules read their section from the ``Config``
(``config.health.disk_max_percent``) and never parse the file themselves.

Every key has a default so that a node runs with an empty file. Secrets are
never read from this file; they come from the environment or from files that
systemd hands over (``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import socket
import types
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, cast, get_args, get_origin, get_type_hints

DEFAULT_PATH = Path("/etc/galaxy/config.yml")

MiB = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid; ``errors`` lists every problem found."""

    def __init__(self, errors: str | list[str]):
        self.errors = [errors] if isinstance(errors, str) else list(errors)
        super().__init__("\n".join(self.errors))


def setting(
    default: Any = dataclasses.MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    min: float | None = None,
    max: float | None = None,
    ids: bool = False,
) -> Any:
    """A field with bounds: ``min``/``max`` apply to numbers; ``ids``: its whole numbers are
    Telegram ids, also accepted when written as strings ("123", as JSON mapping keys always are)."""
    meta = {"min": min, "max": max, "ids": ids}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


# -- node -------------------------------------------------------------------------------


@dataclass
class WorkerConfig:
    runners: int = setting(1, min=1)
    default_timeout: float = setting(3600.0, min=0.1)
    max_payload_bytes: int = setting(64 * 1024, min=1)
    max_output_bytes: int = setting(1 * MiB, min=1024)
    heartbeat_interval: float = setting(5.0, min=0.1)
    default_executor: str = "opencode"
    cancel_grace: float = setting(1.0, min=0)  # seconds between SIGTERM and SIGKILL of a cancelled command
    shutdown_grace: float = setting(20.0, min=0)  # on SIGTERM, how long running orders may finish
    max_queued: int = setting(1000, min=1)  # orders waiting on this node; beyond it a submit is refused as busy
    # The agent's sandbox (galaxy-agent.socket): command and shell executors' programs start there,
    # as the agent's account; "" forks them here, as the worker's account.
    agent_socket: str = ""


@dataclass
class AuditConfig:
    path: Path = Path("")  # unset: <spool_dir>/audit/audit.jsonl
    rotate_bytes: int = setting(64 * MiB, min=4096)


@dataclass
class HealthConfig:
    disk_max_percent: float = setting(90.0, min=1, max=100)
    inodes_max_percent: float = setting(90.0, min=1, max=100)
    backlog_max: int = setting(100, min=0)
    memory_min_mb: float = setting(64.0, min=0)
    heartbeat_max_age: float | None = setting(None, min=1)  # None: 3 heartbeat intervals, at least 15 s
    opencode: bool | None = None  # None: check it when the default executor is opencode
    opencode_timeout: float = setting(3.0, min=0.1)
    opencode_unit: str = "opencode-serve.service"
    opencode_restart: bool = True  # kill a wedged or bloated server; systemd (Restart=always) starts it again
    opencode_max_rss_mb: float = setting(2048.0, min=1)  # above this, restart it between orders
    opencode_start_grace: float = setting(30.0, min=0)  # a server younger than this is starting, not wedged
    # Every run checks the events added since the last run; this often (seconds) the whole
    # chain, rotated segments included, so an edit to an event checked before is found too.
    audit_full_verify_every: float = setting(86400.0, min=0)


@dataclass
class RetentionConfig:
    """Days after which `galaxy cleanup` removes finished things."""

    orders_days: float = setting(30.0, min=0)
    quarantine_days: float = setting(90.0, min=0)
    audit_days: float = setting(365.0, min=0)


# -- executors: the ``type`` of a spec picks its dataclass and the executor class ------------


@dataclass
class ShellCommand:
    argv: list[str] = setting(factory=list)
    cwd: str | None = None

    @staticmethod
    def _shorthand(value: Any) -> Any:
        return {"argv": value} if isinstance(value, list) else value  # `uptime: [uptime]`

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        return _argv_errors(path, self.argv)


@dataclass
class ShellSpec:
    """A named allow-list: the payload names one command."""

    type: str = "shell"
    commands: dict[str, ShellCommand] = setting(factory=dict)
    grace: float | None = setting(None, min=0)  # None: worker.cancel_grace


@dataclass
class CommandSpec:
    """``argv: [claude, -p, "{payload}"]``; ``stdin: true`` sends the payload on stdin instead."""

    type: str = "command"
    argv: list[str] = setting(factory=list)
    stdin: bool = False
    cwd: str | None = None
    env: dict[str, str] = setting(factory=dict)
    grace: float | None = setting(None, min=0)  # None: worker.cancel_grace
    # A payload that begins with '-' is refused (it would be an option of the program) unless
    # ``end_of_options`` puts a ``--`` before the first placeholder or ``allow_options`` lets it through.
    allow_options: bool = False
    end_of_options: bool = False

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        return _argv_errors(path, self.argv)


@dataclass
class OpenCodeSpec:
    """An `opencode serve` over HTTP; the password comes from a credential or a file, never from here."""

    type: str = "opencode"
    url: str = "http://127.0.0.1:4096"
    username: str | None = None  # None: $OPENCODE_SERVER_USERNAME or "opencode"
    password_credential: str = "opencode-password"
    password_file: str | None = None
    provider_retries: int = setting(3, min=0)
    progress_interval: float = setting(2.0, min=0.1)
    request_timeout: float = setting(15.0, min=0.1)
    agent: str | None = None
    model: str | None = None
    agents: list[str] = setting(factory=list)  # agents an order may choose besides ``agent``
    models: list[str] = setting(factory=list)  # models an order may choose besides ``model``
    directory: str | None = None
    permission_timeout: float = setting(300.0, min=1)  # an unanswered permission prompt is denied after this
    permission_unanswered: Literal["deny", "allow"] = "deny"  # prompts of orders nobody can answer

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        parsed = urllib.parse.urlsplit(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            return [f"{path}.url: expected an http(s) URL, got {self.url!r}"]
        return []


ExecutorSpec = ShellSpec | CommandSpec | OpenCodeSpec
EXECUTOR_TYPES: dict[str, type] = {"shell": ShellSpec, "command": CommandSpec, "opencode": OpenCodeSpec}


def _default_executors() -> dict[str, Any]:
    """The executors a node has unless its config says otherwise. A config may add
    more of the same types under other names (e.g. ``claude: {type: command}``)."""
    shell = {
        "uptime": ["uptime"],
        "df": ["df", "-h"],
        "free": ["free", "-m"],
        "hostname": ["hostname"],
        "date": ["date", "-Is"],
    }
    return {
        "shell": ShellSpec(commands={k: ShellCommand(argv) for k, argv in shell.items()}),
        "opencode": OpenCodeSpec(),
    }


def _argv_errors(path: str, argv: list[str]) -> list[str]:
    if not argv or not all(argv):
        return [f"{path}.argv: expected a non-empty list of non-empty strings"]
    return []


# -- control node -------------------------------------------------------------------------


@dataclass
class ControlConfig:
    """The fleet as the control node sees it; also the router's settings."""

    inventory: str | None = None  # an Ansible YAML/JSON inventory; required by the bot, send, mcp
    nodes_group: str = "galaxy_nodes"
    store: Path = Path("/var/lib/galaxy/control/galaxy.db")
    # The control node's own trail (refusals, confirmations, policy decisions), apart from any
    # node's: unset, <the store's directory>/audit/audit.jsonl; its events carry the host
    # name control@<host>, so a host that is control and node keeps two separate chains.
    audit: Path = Path("")
    known_hosts: str = "/etc/galaxy/known_hosts"
    ssh_key: str | None = None  # the routing key (default for every node)
    remote_command: str = "galaxy remote"
    connect_timeout: float = setting(10.0, min=0.1)  # a node that is not reachable by then fails its part
    request_timeout: float = setting(30.0, min=0.1)
    ping_interval: float = setting(2.0, min=0.1)  # an idle link is pinged this often ...
    dead_after: float = setting(6.0, min=0.1)  # ... and dropped when nothing came back for this long
    backoff_max: float = setting(30.0, min=0.1)
    lost_after: float = setting(30.0, min=0)  # running orders of a node gone this long are reported lost
    health_every: float = setting(60.0, min=0)  # fleet health polls; 0: only on request
    # The longest line a node may send (an event with its answer, JSON-escaped); a longer one drops the
    # link, so a compromised node cannot make the control node buffer without end.
    max_line_bytes: int = setting(16 * MiB, min=4096)

    @property
    def audit_path(self) -> Path:
        return self.audit if self.audit != Path("") else self.store.parent / "audit" / "audit.jsonl"


@dataclass
class UserPolicy:
    """One caller's limits (control/policy.py applies them)."""

    targets: list[str] | None = None  # None: every machine
    rate_per_minute: int | None = setting(None, min=0)  # None: the section's default
    executors: list[str] | None = None  # None: any executor

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        if self.targets is not None and not all(self.targets):
            return [f"{path}.targets: expected a list of host or group names"]
        return []


@dataclass
class DangerPolicy:
    targets: list[str] = setting(factory=list)  # hosts or groups whose orders need a confirmation
    patterns: list[re.Pattern[str]] = setting(factory=list)
    confirm_seconds: float = setting(60.0, min=1)


@dataclass
class FloodPolicy:
    """Telegram's flood limits (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this)."""

    overall_per_second: float = setting(30.0, min=0)
    chat_per_second: float = setting(1.0, min=0)
    chat_burst: int = setting(3, min=1)
    group_per_minute: float = setting(20.0, min=0)
    max_retries: int = setting(5, min=0)

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        if 0 < self.overall_per_second < 1 or 0 < self.group_per_minute < 1:
            return [f"{path}: overall_per_second and group_per_minute are at least 1 (or 0: no limit)"]
        return []


WEBHOOK_SECRET_ENV = "GALAXY_TELEGRAM_WEBHOOK_SECRET"
WEBHOOK_SECRET_CREDENTIAL = "telegram_webhook_secret"


@dataclass
class WebhookSettings:
    public_url: str = ""  # what Telegram calls (https, port 443/80/88/8443)
    listen: str = "127.0.0.1"
    port: int = setting(8443, min=1, max=65535)
    url_path: str = ""  # unset: the path of public_url
    cert: str | None = None
    key: str | None = None
    max_connections: int = setting(40, min=1, max=100)  # what Telegram allows

    unknown_hints: ClassVar[dict[str, str]] = {
        "secret": f" (the secret token never goes in the config: use ${WEBHOOK_SECRET_ENV} or the systemd"
        f" credential {WEBHOOK_SECRET_CREDENTIAL})"
    }

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        errors = []
        if "public_url" in raw:
            parsed = urllib.parse.urlsplit(self.public_url)
            if parsed.scheme not in ("http", "https") or not parsed.hostname:
                errors.append(
                    f"{path}.public_url: expected the https URL Telegram should call, got {self.public_url!r}"
                )
        if not self.listen:
            errors.append(f"{path}.listen: expected an address to listen on")
        url_path = self.url_path
        if "url_path" not in raw:
            url_path = urllib.parse.urlsplit(self.public_url).path if self.public_url else ""
        if any(c in url_path for c in "?# "):
            errors.append(f"{path}.url_path: expected a URL path, got {url_path!r}")
        self.url_path = url_path.strip("/")
        for key in ("cert", "key"):
            value = getattr(self, key)
            if value is not None and not value.startswith("/"):
                errors.append(f"{path}.{key}: expected an absolute path, got {value!r}")
        if self.key and not self.cert:
            errors.append(f"{path}.key: needs {path}.cert (the certificate that goes with it)")
        return errors


@dataclass
class BotConfig:
    """The Telegram bot (the token comes from $GALAXY_TELEGRAM_TOKEN or the credential telegram_token)."""

    api_base_url: str = "https://api.telegram.org/bot"
    authorized_users: set[int] = setting(factory=set, ids=True)
    users: dict[int, UserPolicy] = setting(factory=dict, ids=True)  # listed users are authorized too
    admins: set[int] = setting(factory=set, ids=True)  # authorized; may answer any order's permission prompts
    default_machine: str | None = None  # where /order without a target and plain text go
    alert_chats: list[int] = setting(factory=list, ids=True)  # unset: the authorized users' private chats
    rate_per_minute: int = setting(20, min=0)
    dangerous: DangerPolicy = setting(factory=DangerPolicy)
    progress_interval: float = setting(5.0, min=0.2)
    max_parts: int = setting(4, min=1)
    poll_timeout: int = setting(10, min=0)
    min_edit_interval: float = setting(1.0, min=0)
    node_down_alert_after: float = setting(30.0, min=0)
    refusal_replies_per_minute: int = setting(3, min=0)
    flood: FloodPolicy = setting(factory=FloodPolicy)
    mode: Literal["polling", "webhook"] = "polling"
    webhook: WebhookSettings = setting(factory=WebhookSettings)

    unknown_hints: ClassVar[dict[str, str]] = {
        "token": " (the token never goes in the config: use $GALAXY_TELEGRAM_TOKEN or the systemd"
        " credential telegram_token)"
    }

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        errors = []
        if not re.match(r"^https?://", self.api_base_url):
            errors.append(f"{path}.api_base_url: expected an http(s) URL, got {self.api_base_url!r}")
        if self.default_machine == "":
            errors.append(f"{path}.default_machine: expected a host or group name")
        self.authorized_users = self.authorized_users | set(self.users) | self.admins
        if "alert_chats" not in raw:
            self.alert_chats = sorted(self.authorized_users)
        if self.mode == "webhook" and not self.webhook.public_url:
            errors.append(
                f"{path}.webhook: mode webhook needs at least {{public_url: https://…}}"
                if "webhook" not in raw
                else f"{path}.webhook.public_url: expected the https URL Telegram should call"
            )
        return errors


@dataclass
class DashboardConfig:
    """The web dashboard; it reads ``control.store``. The token comes from ``token_file``,
    $GALAXY_DASHBOARD_TOKEN or the systemd credential dashboard_token."""

    host: str = "127.0.0.1"  # a non-loopback address requires a token
    port: int = setting(5000, min=0, max=65535)  # 0 picks a free port
    token_file: Path | None = None
    refresh: float = setting(5.0, min=1)  # seconds between the page's refreshes
    threads: int = setting(8, min=1)  # WSGI worker threads
    cache_ttl: float = setting(1.0, min=0)  # /api/status is recomputed at most this often
    history_ttl: float = setting(15.0, min=0)  # the charts of the last day, at most this often
    title: str = "Galaxy"
    allowed_hosts: list[str] = setting(factory=list)  # Host names besides 127.0.0.1, localhost, [::1], the listen
    # address; a request with any other Host header gets 421 (no DNS rebinding)

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        def ok(name: str) -> bool:
            if not name or any(c.isspace() or c in "/@?#" for c in name):
                return False
            if ":" not in name:
                return True
            try:  # an IPv6 address, with or without brackets; never a port
                return ipaddress.ip_address(name.strip("[]")).version == 6
            except ValueError:
                return False

        bad = [name for name in self.allowed_hosts if not ok(name)]
        if bad:
            return [f"{path}.allowed_hosts: expected host names or addresses (no port), got {bad!r}"]
        return []


@dataclass
class McpConfig:
    """``galaxy mcp``: the identity its orders carry (``mcp:<identity>``) and its limits."""

    identity: str = "mcp"
    targets: list[str] | None = None  # hosts or groups (None: every machine)
    executors: list[str] | None = None  # executors it may name; an order without one gets the first (None: any)
    rate_per_minute: int = setting(20, min=0)  # 0: no limit
    dangerous: Literal["refuse", "allow"] = "refuse"  # what is dangerous is bot.dangerous, for every entry point

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        return _identity_errors(path, self.identity)


@dataclass
class SendConfig:
    """``galaxy send``: orders carry ``unix:<login>``, or ``send:<identity>`` when set; per-user limits."""

    identity: str | None = None
    targets: list[str] | None = None
    executors: list[str] | None = None
    rate_per_minute: int = setting(20, min=0)
    dangerous: Literal["refuse", "allow"] = "refuse"
    users: dict[str, UserPolicy] = setting(factory=dict)  # per Unix user (or per identity, when set)

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        return _identity_errors(path, self.identity)


def _identity_errors(path: str, identity: str | None) -> list[str]:
    if identity is not None and not re.fullmatch(r"[\w.@-]{1,64}", identity):
        return [f"{path}.identity: expected a name of letters, digits, _ . @ -, got {identity!r}"]
    return []


# -- the file ---------------------------------------------------------------------------------


@dataclass
class Config:
    host: str = field(default_factory=socket.gethostname)
    spool_dir: Path = Path("/var/lib/galaxy")
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    executors: dict[str, ExecutorSpec] = field(default_factory=_default_executors, metadata={"convert": "_executors"})
    projects: dict[str, str] = field(default_factory=dict)  # name -> directory an order may work in
    health: HealthConfig = field(default_factory=HealthConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    bot: BotConfig = field(default_factory=BotConfig)
    dashboard: DashboardConfig = field(default_factory=DashboardConfig)
    mcp: McpConfig = field(default_factory=McpConfig)
    send: SendConfig = field(default_factory=SendConfig)
    source: Path | None = field(default=None, metadata={"setting": False})  # the file it was read from

    def __post_init__(self) -> None:
        if self.audit.path == Path(""):
            self.audit.path = self.spool_dir / "audit" / "audit.jsonl"

    def _check(self, path: str, raw: dict[str, Any]) -> list[str]:
        if self.worker.default_executor not in self.executors:
            return [
                f"worker.default_executor: no executor named {self.worker.default_executor!r} "
                f"(this node has: {', '.join(sorted(self.executors))})"
            ]
        return []


# -- the loader -------------------------------------------------------------------------------


class _Invalid(Exception):
    """One value is wrong; the loader adds its path."""


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = get_type_hints(cls)
    return _HINTS[cls]


def _where(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(tp: Any, value: Any, path: str, errors: list[str], ids: bool = False) -> Any:
    """``value`` as type ``tp``; raises _Invalid for this value, appends nested errors to ``errors``.
    ``ids``: whole numbers are Telegram ids."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Union or origin is types.UnionType:
        options = [t for t in get_args(tp) if t is not type(None)]
        if value is None and type(None) in get_args(tp):
            return None
        if len(options) == 1:
            return _convert(options[0], value, path, errors, ids)
        raise _Invalid(f"cannot check a value of {tp}")  # pragma: no cover - no such field
    if origin is Literal:
        if value not in get_args(tp):
            raise _Invalid(f"expected {' or '.join(map(str, get_args(tp)))}, got {value!r}")
        return value
    if tp is int and ids:
        if isinstance(value, bool):
            raise _Invalid(f"expected a Telegram id (a number), got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _Invalid(f"expected a Telegram id (a number), got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise _Invalid(f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid(f"expected a whole number, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _Invalid(f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _Invalid(f"expected a string, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            raise _Invalid(f"expected a path, got {value!r}")
        return Path(value)
    if origin is re.Pattern:
        if not isinstance(value, str):
            raise _Invalid(f"expected a regular expression string, got {value!r}")
        try:
            return re.compile(value)
        except re.error as exc:
            raise _Invalid(f"invalid regular expression {value!r}: {exc}") from None
    if origin in (list, set):
        if not isinstance(value, list):
            raise _Invalid(f"expected a list, got {value!r}")
        (item,) = get_args(tp)
        items = [_value(item, v, f"{path}[{i}]", errors, ids) for i, v in enumerate(value)]
        return origin(v for v in items if v is not _BAD)
    if origin is dict:
        if not isinstance(value, dict):
            raise _Invalid(f"expected a mapping, got {value!r}")
        ktype, vtype = get_args(tp)
        out = {}
        for k, v in value.items():
            key = _value(ktype, k, f"{path} key {k!r}", errors, ids)
            item = _value(vtype, v, _where(path, k), errors, ids)
            if key is not _BAD and item is not _BAD:
                out[key] = item
        return out
    if dataclasses.is_dataclass(tp):
        return build(cast(type, tp), value, path, errors)
    raise _Invalid(f"cannot check a value of {tp}")  # pragma: no cover - no such field


_BAD = object()


def _value(tp: Any, value: Any, path: str, errors: list[str], ids: bool = False) -> Any:
    try:
        return _convert(tp, value, path, errors, ids)
    except _Invalid as exc:
        errors.append(f"{path}: {exc}")
        return _BAD


def build(cls: type, data: Any, path: str, errors: list[str]) -> Any:
    """An instance of the dataclass ``cls`` from ``data`` (a mapping or None for the defaults).

    Problems go to ``errors`` with their path; a wrong value keeps its default so the
    rest of the section is still checked."""
    shorthand = getattr(cls, "_shorthand", None)
    if shorthand is not None:
        data = shorthand(data)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise _Invalid(f"expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.metadata.get("setting", True)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        f = fields.get(key) if isinstance(key, str) else None
        where = _where(path, key)
        if f is None:
            hint = next((h for word, h in getattr(cls, "unknown_hints", {}).items() if word in str(key)), "")
            errors.append(f"{where}: unknown setting{hint}")
            continue
        convert = f.metadata.get("convert")
        if convert:
            try:
                value = globals()[convert](raw, where, errors)
            except _Invalid as exc:
                errors.append(f"{where}: {exc}")
                continue
        else:
            value = _value(hints[key], raw, where, errors, f.metadata.get("ids", False))
        if value is _BAD:
            continue
        low, high = f.metadata.get("min"), f.metadata.get("max")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if low is not None and value < low:
                errors.append(f"{where}: must be at least {low:g}, got {raw!r}")
                continue
            if high is not None and value > high:
                errors.append(f"{where}: must be at most {high:g}, got {raw!r}")
                continue
        values[key] = value
    obj = cls(**values)
    check = getattr(obj, "_check", None)
    if check is not None:
        errors.extend(check(path, data))
    return obj


def _executors(data: Any, path: str, errors: list[str]) -> dict[str, Any]:
    """The default executors, with the config's added or replaced by name; a spec's
    ``type`` (default: its name) picks its settings."""
    if not isinstance(data, dict):
        raise _Invalid("expected a mapping of name to settings")
    merged = _default_executors()
    for name, spec in data.items():
        where = _where(path, name)
        spec = spec if spec is not None else {}
        if not isinstance(spec, dict):
            errors.append(f"{where}: expected a mapping, got {type(spec).__name__}")
            continue
        kind = spec.get("type", name)
        cls = EXECUTOR_TYPES.get(kind) if isinstance(kind, str) else None
        if cls is None:
            errors.append(f"{where}.type: unknown executor type {kind!r} (known: {', '.join(EXECUTOR_TYPES)})")
            continue
        merged[str(name)] = build(cls, {**spec, "type": kind}, where, errors)
    return merged


def section(cls: type, data: Any, path: str) -> Any:
    """One section on its own (``section(BotConfig, {...}, "bot")``); ConfigError lists its problems."""
    errors: list[str] = []
    try:
        obj = build(cls, data, path, errors)
    except _Invalid as exc:
        errors.append(f"{path}: {exc}")
    if errors:
        raise ConfigError(errors)
    return obj


def executor_spec(name: str, spec: dict[str, Any]) -> Any:
    """A typed executor spec from a mapping (``type`` defaults to the name)."""
    errors: list[str] = []
    specs = _executors({name: spec}, "executors", errors)
    if errors:
        raise ConfigError(errors)
    return specs[name]


def from_dict(data: Any, source: Path | None = None) -> Config:
    """The typed config from parsed YAML; ConfigError lists every problem with its key's path."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"top level: expected a mapping, got {type(data).__name__}")
    cfg = section(Config, data, "")
    cfg.source = source
    return cfg


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the config from ``path``, $GALAXY_CONFIG or /etc/galaxy/config.yml.

    A missing default file gives the defaults; a missing file that was named
    explicitly is an error.
    """
    import yaml  # deferred: keeps `galaxy version` fast

    explicit = path or os.environ.get("GALAXY_CONFIG")
    p = Path(explicit) if explicit else DEFAULT_PATH
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        if explicit:
            raise ConfigError(f"{p}: no such config file") from None
        return from_dict({})
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    try:
        return from_dict(data, source=p)
    except ConfigError as exc:
        raise ConfigError([f"{p}: {e}" for e in exc.errors]) from None


def secret(name: str, env: str | None = None) -> str | None:
    """A secret from $ENV, or from systemd's credentials directory, or None."""
    if env and os.environ.get(env):
        return os.environ[env]
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds:
        try:
            return (Path(creds) / name).read_text(encoding="utf-8").strip() or None
        except OSError:
            return None
    return None


def standalone_main(
    prog: str, description: str | None, add_arguments: Any, run: Any, argv: list[str] | None = None
) -> int:
    """``python -m galaxy_fleet.<daemon>``: the same options as its ``galaxy`` subcommand,
    for running it before (or without) the CLI entry point."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or /etc/galaxy/config.yml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"{prog}: config: {exc}", file=sys.stderr)
        return 2
    return int(run(args, config))
