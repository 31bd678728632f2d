"""The one config loader: defaults, types, minimums, unknown keys with their path,
every section typed for the module that reads it, and `galaxy config check` run for real."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from galaxy_fleet import config as config_mod
from galaxy_fleet.config import (CommandSpec, ConfigError, ControlConfig, HealthConfig, OpenCodeSpec, ShellSpec,
                                 from_dict, load)

ROOT = Path(__file__).resolve().parents[2]
GALAXY = [sys.executable, "-m", "galaxy_fleet.cli"]

# Every section, with values that differ from the defaults where there is one to set.
FULL: dict[str, Any] = {
    "host": "web1",
    "spool_dir": "/srv/galaxy",
    "worker": {"runners": 2, "default_timeout": 600, "max_payload_bytes": 1000, "max_output_bytes": 4096,
               "heartbeat_interval": 1, "default_executor": "claude", "cancel_grace": 0.5, "shutdown_grace": 5},
    "audit": {"path": "/srv/audit/audit.jsonl", "rotate_bytes": 1048576},
    "executors": {"claude": {"type": "command", "argv": ["claude", "-p", "{payload}"], "stdin": False,
                             "env": {"HOME": "/srv"}, "grace": 2},
                  "shell": {"commands": {"uptime": ["uptime"],
                                         "git-status": {"argv": ["git", "status"], "cwd": "/srv/app"}}},
                  "opencode": {"url": "http://127.0.0.1:4096", "model": "p/m", "request_timeout": 5}},
    "projects": {"web": "/srv/app"},
    "health": {"disk_max_percent": 80, "heartbeat_max_age": 20, "opencode": False},
    "retention": {"orders_days": 7, "quarantine_days": 14, "audit_days": 0},
    "control": {"inventory": "/etc/galaxy/inventory.yml", "store": "/srv/control.db", "connect_timeout": 5,
                "health_every": 0},
    "bot": {"authorized_users": [1, "2"], "users": {3: {"targets": ["web"], "rate_per_minute": 2}},
            "flood": {"chat_burst": 5}, "mode": "webhook", "webhook": {"public_url": "https://b.example/hook"},
            "dangerous": {"patterns": [r"\brm\b"]}},
    "dashboard": {"host": "127.0.0.1", "port": 5001, "refresh": 2, "title": "Fleet"},
}


def errors_of(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as err:
        from_dict(data)
    return err.value.errors


def test_an_empty_file_gives_every_section_its_defaults() -> None:
    cfg = from_dict({})
    assert cfg.spool_dir == Path("/var/lib/galaxy")
    assert cfg.audit.path == Path("/var/lib/galaxy/audit/audit.jsonl")
    assert cfg.worker.runners == 1 and cfg.worker.default_executor == "opencode"
    assert cfg.health.disk_max_percent == 90 and cfg.health.heartbeat_max_age is None
    assert cfg.retention.orders_days == 30 and cfg.retention.audit_days == 365
    assert cfg.control.store == Path("/var/lib/galaxy/control/galaxy.db") and cfg.control.inventory is None
    assert cfg.bot.rate_per_minute == 20 and cfg.bot.flood.chat_burst == 3 and cfg.bot.alert_chats == []
    assert cfg.dashboard.port == 5000
    assert isinstance(cfg.executors["shell"], ShellSpec) and cfg.executors["shell"].commands["df"].argv == ["df", "-h"]
    assert isinstance(cfg.executors["opencode"], OpenCodeSpec)
    # A different spool moves the audit trail with it, unless audit.path says otherwise.
    assert from_dict({"spool_dir": "/srv/g"}).audit.path == Path("/srv/g/audit/audit.jsonl")


def test_every_section_is_typed() -> None:
    cfg = from_dict(FULL)
    assert cfg.worker.default_timeout == 600.0 and isinstance(cfg.worker.default_timeout, float)
    assert cfg.audit.path == Path("/srv/audit/audit.jsonl")
    claude = cfg.executors["claude"]
    assert isinstance(claude, CommandSpec) and claude.argv[0] == "claude" and claude.grace == 2.0
    assert cfg.executors["shell"].commands["git-status"].cwd == "/srv/app"
    assert set(cfg.executors) == {"claude", "shell", "opencode"}
    assert cfg.health == HealthConfig(disk_max_percent=80, heartbeat_max_age=20, opencode=False)
    assert cfg.retention.audit_days == 0.0
    assert cfg.control.store == Path("/srv/control.db") and cfg.control.connect_timeout == 5.0
    assert cfg.bot.authorized_users == {1, 2, 3} and cfg.bot.alert_chats == [1, 2, 3]
    assert cfg.bot.users[3].targets == ["web"] and cfg.bot.flood.chat_burst == 5
    assert cfg.bot.webhook.url_path == "hook" and cfg.bot.dangerous.patterns[0].search("rm -x")
    assert cfg.dashboard.title == "Fleet" and cfg.dashboard.refresh == 2.0


@pytest.mark.parametrize("data, message", [
    ({"bot": {"flood": {"per_chat": 1}}}, "bot.flood.per_chat: unknown setting"),
    ({"bot": {"webhook": {"secret_token": "x"}}}, "bot.webhook.secret_token: unknown setting (the secret token"),
    ({"bot": {"telegram_token": "x"}}, "bot.telegram_token: unknown setting (the token never goes in the config"),
    ({"executors": {"claude": {"type": "command", "argv": ["c"], "argb": 1}}}, "executors.claude.argb: unknown"),
    ({"executors": {"shell": {"commands": {"up": {"argv": ["uptime"], "dir": "/"}}}}},
     "executors.shell.commands.up.dir: unknown setting"),
    ({"executors": {"x": {"argv": ["a"]}}}, "executors.x.type: unknown executor type 'x'"),
    ({"executors": {"c": {"type": "command"}}}, "executors.c.argv: expected a non-empty list"),
    ({"audit": {"keep_segments": 3}}, "audit.keep_segments: unknown setting"),
    ({"control": {"central_dir": "/var/lib/galaxy/central"}}, "control.central_dir: unknown setting"),
    ({"colour": "blue"}, "colour: unknown setting"),
    ({"worker": {"runners": "two"}}, "worker.runners: expected a whole number, got 'two'"),
    ({"worker": {"runners": True}}, "worker.runners: expected a whole number, got True"),
    ({"worker": {"runners": 0}}, "worker.runners: must be at least 1, got 0"),
    ({"worker": {"default_executor": "nope"}}, "worker.default_executor: no executor named 'nope'"),
    ({"health": {"disk_max_percent": 101}}, "health.disk_max_percent: must be at most 100, got 101"),
    ({"health": {"opencode": "yes"}}, "health.opencode: expected true or false, got 'yes'"),
    ({"health": [1]}, "health: expected a mapping, got list"),
    ({"retention": {"orders_days": -1}}, "retention.orders_days: must be at least 0, got -1"),
    ({"control": {"store": ""}}, "control.store: expected a path, got ''"),
    ({"control": {"connect_timeout": "soon"}}, "control.connect_timeout: expected a number, got 'soon'"),
    ({"dashboard": {"port": 70000}}, "dashboard.port: must be at most 65535, got 70000"),
    ({"bot": {"users": {"alice": {}}}}, "bot.users key 'alice': expected a Telegram id"),
    ({"bot": {"dangerous": {"patterns": ["("]}}}, "bot.dangerous.patterns[0]: invalid regular expression"),
    ({"projects": {"web": 1}}, "projects.web: expected a string, got 1"),
])
def test_a_wrong_setting_is_named_by_its_path(data: dict[str, Any], message: str) -> None:
    errors = errors_of(data)
    assert any(message in e for e in errors), errors


def test_every_error_is_reported_not_only_the_first() -> None:
    errors = errors_of({"worker": {"runners": 0, "oops": 1}, "bot": {"flood": {"per_chat": 1}, "max_parts": 0},
                        "dashboard": {"port": "http"}, "retention": {"orders_days": -1}})
    assert sorted(errors) == sorted([
        "worker.runners: must be at least 1, got 0", "worker.oops: unknown setting",
        "bot.flood.per_chat: unknown setting", "bot.max_parts: must be at least 1, got 0",
        "dashboard.port: expected a whole number, got 'http'", "retention.orders_days: must be at least 0, got -1"])


def test_load_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yml"
    path.write_text("worker: {runners: 0}\n")
    with pytest.raises(ConfigError) as err:
        load(path)
    assert str(err.value) == f"{path}: worker.runners: must be at least 1, got 0"
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level: expected a mapping"):
        load(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load(tmp_path / "missing.yml")


def test_modules_read_their_typed_section(tmp_path: Path) -> None:
    from galaxy_fleet.bot.access import BotSettings
    from galaxy_fleet.control.router import RouterSettings
    from galaxy_fleet.dashboard import settings as dsettings
    from galaxy_fleet.node.executors import ExecutorError, build
    from galaxy_fleet.node.retention import cleanup

    cfg = from_dict({**FULL, "spool_dir": str(tmp_path / "spool"), "audit": {}})
    bot = BotSettings.from_config(cfg)
    assert bot.is_authorized(3) and bot.rate_for(3) == 2 and bot.webhook.url_path == "hook"
    # The dashboard and the bot read the same store, also when the config does not name it.
    assert dsettings.load(from_dict({}), token=None).store == ControlConfig().store
    assert dsettings.load(cfg, token=None).store == Path("/srv/control.db")
    assert RouterSettings is ControlConfig
    assert build("claude", cfg.executors["claude"], cfg).grace == 2.0  # type: ignore[attr-defined]
    assert build("shell", cfg.executors["shell"], cfg).grace == cfg.worker.cancel_grace  # type: ignore[attr-defined]
    with pytest.raises(ExecutorError, match="executors.bad.argv"):
        build("bad", {"type": "command", "argv": []}, cfg)
    report = cleanup(cfg, dry_run=True, overrides={"orders_days": 1})
    assert report["retention"] == {"orders_days": 1, "quarantine_days": 14.0, "audit_days": 0.0}


def test_no_module_parses_the_file_itself() -> None:
    """The sections are read through the typed Config, never as dicts."""
    src = ROOT / "files" / "galaxy" / "src" / "galaxy_fleet"
    offenders = [f"{p.relative_to(src)}:{n}" for p in src.rglob("*.py")
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if re.search(r"\.section\(\"|\.raw\b|\.raw\.get|DEFAULT_STORE|default_store_path", line)]
    assert offenders == []


def readme_configuration() -> str:
    text = (ROOT / "README.md").read_text()
    return text[text.index("## Configuration"):text.index("\n## ", text.index("## Configuration") + 5)]


def test_the_readme_lists_every_setting_and_its_example_loads() -> None:
    part = readme_configuration()
    example = re.search(r"```yaml\n(.*?)```", part, re.S)
    assert example is not None
    from_dict(yaml.safe_load(example.group(1)))
    sections = {f.name: f.type for f in dataclasses.fields(config_mod.Config) if f.metadata.get("setting", True)}
    classes = [config_mod.WorkerConfig, config_mod.AuditConfig, config_mod.HealthConfig, config_mod.RetentionConfig,
               config_mod.ControlConfig, config_mod.BotConfig, config_mod.DangerPolicy, config_mod.FloodPolicy,
               config_mod.WebhookSettings, config_mod.DashboardConfig, config_mod.CommandSpec, config_mod.ShellSpec,
               config_mod.OpenCodeSpec]
    missing = [name for name in sections if f"`{name}`" not in part]
    missing += [f"{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)
                if f"`{f.name}`" not in part and f.name != "type"]
    assert missing == []


def galaxy(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GALAXY, *args], capture_output=True, text=True, timeout=60, check=False)


def test_galaxy_config_check_accepts_a_full_file(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(FULL))
    proc = galaxy("config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{path}: OK (host web1, 3 executors)"
    proc = galaxy("config", "check", "--json", str(path))
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"] is True


def test_galaxy_config_check_reports_every_error_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text("worker: {runners: 0}\n"                                # below the minimum
                    "control: {connect_timeout: soon}\n"                   # wrong type
                    "bot: {flood: {per_chat: 1}}\n"                        # unknown key at depth
                    "executors: {shell: {commands: {up: {argv: []}}}}\n"   # an executor's own rule
                    "audit: {keep_segments: 2}\n")
    proc = galaxy("config", "check", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert lines[0] == "galaxy: invalid config: "
    assert sorted(line.strip() for line in lines[1:]) == sorted(f"{path}: {e}" for e in [
        "worker.runners: must be at least 1, got 0",
        "control.connect_timeout: expected a number, got 'soon'",
        "bot.flood.per_chat: unknown setting",
        "executors.shell.commands.up.argv: expected a non-empty list of non-empty strings",
        "audit.keep_segments: unknown setting"])
    proc = galaxy("config", "check", "--json", str(path))
    assert proc.returncode == 2 and len(json.loads(proc.stdout)["errors"]) == 5
