"""Configuration: /etc/galaxy/config.yml, overridable by GALAXY_CONFIG or --config.

Every key has a default so that a node runs with an empty file. Secrets are
never read from this file; they come from the environment or from files that
systemd hands over (``$CREDENTIALS_DIRECTORY``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_PATH = Path("/etc/galaxy/config.yml")

MiB = 1024 * 1024


class ConfigError(ValueError):
    """The configuration file is missing, unreadable or invalid."""


# The executors a node has unless its config says otherwise. A config may add
# more of the same types under other names (e.g. ``claude: {type: command}``).
DEFAULT_EXECUTORS: dict[str, dict[str, Any]] = {
    "shell": {
        "type": "shell",
        "commands": {
            "uptime": {"argv": ["uptime"]},
            "df": {"argv": ["df", "-h"]},
            "free": {"argv": ["free", "-m"]},
            "hostname": {"argv": ["hostname"]},
            "date": {"argv": ["date", "-Is"]},
        },
    },
    "opencode": {"type": "opencode", "url": "http://127.0.0.1:4096"},
}


@dataclass
class WorkerConfig:
    runners: int = 1
    default_timeout: float = 3600.0
    max_payload_bytes: int = 64 * 1024
    max_output_bytes: int = 1 * MiB
    heartbeat_interval: float = 5.0
    default_executor: str = "opencode"
    cancel_grace: float = 1.0  # seconds between SIGTERM and SIGKILL of a cancelled command
    shutdown_grace: float = 20.0  # on SIGTERM, how long running orders may finish before interruption
    # The agent's sandbox (galaxy-agent.socket): command and shell executors' programs start there,
    # as the agent's account; "" forks them here, as the worker's account.
    agent_socket: str = ""


@dataclass
class AuditConfig:
    path: Path = Path("/var/lib/galaxy/audit/audit.jsonl")
    rotate_bytes: int = 64 * MiB
    keep_segments: int = 0  # 0 = keep all; retention is the cleanup playbook's job


@dataclass
class Config:
    host: str = field(default_factory=socket.gethostname)
    spool_dir: Path = Path("/var/lib/galaxy")
    worker: WorkerConfig = field(default_factory=WorkerConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    executors: dict[str, dict[str, Any]] = field(default_factory=lambda: dict(DEFAULT_EXECUTORS))
    projects: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    source: Path | None = None

    def section(self, name: str) -> dict[str, Any]:
        """A free-form top-level section (health, control, ...) or {}."""
        value = self.raw.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
        return value


def _typed(section: str, key: str, value: Any, kind: type, minimum: float | None = None) -> Any:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"{section}.{key}: expected {kind.__name__}, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{section}.{key}: must be at least {minimum}, got {value!r}")
    return value


def _fill(obj: Any, section: str, data: dict[str, Any], limits: dict[str, float]) -> None:
    for key, value in data.items():
        if not hasattr(obj, key):
            raise ConfigError(f"{section}.{key}: unknown setting")
        current = getattr(obj, key)
        if isinstance(current, Path):
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{section}.{key}: expected a path, got {value!r}")
            value = Path(value)
        else:
            value = _typed(section, key, value, type(current), limits.get(key))
        setattr(obj, key, value)


def from_dict(data: dict[str, Any], source: Path | None = None) -> Config:
    if not isinstance(data, dict):
        raise ConfigError(f"top level: expected a mapping, got {type(data).__name__}")
    cfg = Config(raw=data, source=source)
    if "host" in data:
        cfg.host = _typed("config", "host", data["host"], str)
    if "spool_dir" in data:
        if not isinstance(data["spool_dir"], str):
            raise ConfigError(f"spool_dir: expected a path, got {data['spool_dir']!r}")
        cfg.spool_dir = Path(data["spool_dir"])
        cfg.audit.path = cfg.spool_dir / "audit" / "audit.jsonl"
    worker = data.get("worker") or {}
    if not isinstance(worker, dict):
        raise ConfigError("worker: expected a mapping")
    _fill(cfg.worker, "worker", worker,
          {"runners": 1, "default_timeout": 0.1, "max_payload_bytes": 1,
           "max_output_bytes": 1024, "heartbeat_interval": 0.1, "cancel_grace": 0,
           "shutdown_grace": 0})
    audit = data.get("audit") or {}
    if not isinstance(audit, dict):
        raise ConfigError("audit: expected a mapping")
    _fill(cfg.audit, "audit", audit, {"rotate_bytes": 4096, "keep_segments": 0})
    execs = data.get("executors")
    if execs is not None:
        if not isinstance(execs, dict):
            raise ConfigError("executors: expected a mapping of name to settings")
        merged = dict(DEFAULT_EXECUTORS)
        for name, spec in execs.items():
            if not isinstance(spec, dict):
                raise ConfigError(f"executors.{name}: expected a mapping")
            spec = dict(spec)
            spec.setdefault("type", name)
            merged[name] = spec
        cfg.executors = merged
    projects = data.get("projects") or {}
    if not isinstance(projects, dict) or not all(isinstance(v, str) for v in projects.values()):
        raise ConfigError("projects: expected a mapping of name to directory")
    cfg.projects = dict(projects)
    if cfg.worker.default_executor not in cfg.executors:
        raise ConfigError(f"worker.default_executor: no executor named {cfg.worker.default_executor!r}")
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
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {exc}") from None
    try:
        return from_dict(data, source=p)
    except ConfigError as exc:
        raise ConfigError(f"{p}: {exc}") from None


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


def standalone_main(prog: str, description: str | None, add_arguments: Any, run: Any,
                    argv: list[str] | None = None) -> int:
    """``python -m galaxy_fleet.<daemon>``: the same options as its ``galaxy`` subcommand,
    for running it before (or without) the CLI entry point."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or "
                                                         "/etc/galaxy/config.yml)")
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"{prog}: config: {exc}", file=sys.stderr)
        return 2
    return int(run(args, config))
