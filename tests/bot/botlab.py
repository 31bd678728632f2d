"""A local fleet with the real bot process, for the bot's tests and benchmark.

``BotLab`` runs, all on this machine and all real:

- telegram-test-api behind its compatibility proxy (tests/support/telegram_emulator.py);
- one `galaxy worker` per node on its own temporary spool; the inventory gives
  each node ``ansible_connection: local``, so the bot's Fleet reaches it by
  running `galaxy remote` as a local process (the same protocol as over SSH);
- `python -m galaxy_fleet.bot` as a separate process with the token in its
  environment, a control config (inventory, SQLite store, bot section) and its
  own audit trail.

The users are played through the emulator's own API (``lab.user(ALICE)``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

from nodeenv import wait_for  # noqa: F401  (the bot tests import it from here)
from support.telegram_emulator import BotMessage, TelegramEmulator, TelegramUser

PY = sys.executable
GALAXY = [PY, "-m", "galaxy_fleet.cli"]
BOT = [PY, "-m", "galaxy_fleet.bot"]

ALICE = 1001  # authorized, every machine
BOB = 1002  # authorized: web1 only, 3 orders a minute
EVE = 1003  # not authorized
CAROL = 1004  # authorized, every machine (used where a clean rate budget matters)
DAVE = 1005  # authorized: web1 only, 3 orders a minute (the rate limit test's own)
GROUP = -5001  # a group chat
OPS = -7001  # the alert chat

NODES: dict[str, list[str]] = {"web1": ["web"], "web2": ["web"], "db1": ["db"]}


def bot_settings(api_base_url: str, **overrides: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "api_base_url": api_base_url,
        "authorized_users": [ALICE, CAROL],
        "users": {BOB: {"targets": ["web1"], "rate_per_minute": 3},
                  DAVE: {"targets": ["web1"], "rate_per_minute": 3}},
        "default_machine": "web1",
        "alert_chats": [OPS],
        "rate_per_minute": 100,
        "dangerous": {"targets": ["db"], "patterns": [r"\brm\s+-rf\b"], "confirm_seconds": 3},
        "progress_interval": 0.5,
        "min_edit_interval": 0.2,
        "max_parts": 3,
        "poll_timeout": 5,
        "node_down_alert_after": 1,
    }
    settings.update(overrides)
    return settings




class Node:
    def __init__(self, root: Path, name: str, groups: list[str], default_executor: str = "sh"):
        self.name = name
        self.groups = groups
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.spool = self.dir / "spool"
        self.config_path = self.dir / "config.yml"
        self.proc: subprocess.Popen[bytes] | None = None
        self.config: dict[str, Any] = {
            "host": name,
            "spool_dir": str(self.spool),
            "worker": {"runners": 2, "default_timeout": 120, "heartbeat_interval": 0.5,
                       "default_executor": default_executor,
                       "cancel_grace": 0.5, "shutdown_grace": 1},
            "executors": {"sh": {"type": "command", "argv": ["/bin/sh", "-c", "{payload}"]},
                          "noop": {"type": "command", "argv": ["/bin/true"]}},
            "health": {"heartbeat_max_age": 2},
        }
        self.config_path.write_text(yaml.safe_dump(self.config))

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "GALAXY_TELEGRAM_TOKEN"}
        return {**env, "GALAXY_CONFIG": str(self.config_path), "PYTHONUNBUFFERED": "1"}

    def start(self) -> None:
        log = open(self.dir / "worker.log", "ab")
        self.proc = subprocess.Popen([*GALAXY, "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        hb = self.spool / "state" / "heartbeat.json"

        def beating() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker {self.name} exited: {(self.dir / 'worker.log').read_text()[-2000:]}")
            try:
                return json.loads(hb.read_text())["pid"] == self.proc.pid  # type: ignore[union-attr]
            except (OSError, ValueError, KeyError):
                return False

        wait_for(beating, 20, what=f"worker {self.name} heartbeat")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def galaxy(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*GALAXY, *args], env=self.env, capture_output=True, text=True, timeout=60)


class BotLab:
    def __init__(self, root: Path, token: str, *, nodes: dict[str, list[str]] | None = None,
                 ghost: bool = True, verbose: bool = True, default_executor: str = "sh",
                 bot_env: dict[str, str] | None = None, **bot_overrides: Any):
        self.root = root
        self.token = token
        self.emulator = TelegramEmulator(token)
        self.nodes = {name: Node(root, name, groups, default_executor)
                      for name, groups in (nodes or NODES).items()}
        self.ghost = ghost
        self.verbose = verbose  # DEBUG logs carry every Bot API URL: the token redaction is exercised
        self.bot_overrides = bot_overrides
        self.bot_env = dict(bot_env or {})  # more environment for the bot (e.g. the webhook secret)
        self.bot: subprocess.Popen[bytes] | None = None
        self.bot_runs = 0
        self.control_dir = root / "control"
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.control_dir / "config.yml"
        self.store_path = self.control_dir / "galaxy.db"
        self.audit_path = self.control_dir / "audit" / "audit.jsonl"  # the control node's own trail

    # -- life cycle ----------------------------------------------------------------
    def start(self) -> "BotLab":
        self.emulator.start(self.root)
        for node in self.nodes.values():
            node.start()
        self.write_config()
        self.start_bot()
        return self

    def write_config(self) -> None:
        hosts: dict[str, Any] = {n.name: {"ansible_connection": "local", "galaxy_config_path": str(n.config_path)}
                                 for n in self.nodes.values()}
        groups: dict[str, Any] = {}
        for n in self.nodes.values():
            for g in n.groups:
                groups.setdefault(g, {"hosts": {}})["hosts"][n.name] = None
        if self.ghost:
            # A machine whose `galaxy remote` can never start: always unreachable.
            hosts["ghost"] = {"ansible_connection": "local",
                              "galaxy_config_path": str(self.root / "ghost" / "missing.yml")}
        inventory = {"all": {"children": {"galaxy_nodes": {"hosts": hosts, "children": groups}}}}
        (self.control_dir / "inventory.yml").write_text(yaml.safe_dump(inventory))
        config = {
            "host": "control",
            "spool_dir": str(self.control_dir / "spool"),
            "control": {"inventory": str(self.control_dir / "inventory.yml"), "store": str(self.store_path),
                        "connect_timeout": 2, "lost_after": 30, "backoff_max": 2},
            "bot": bot_settings(self.emulator.api_base_url, **self.bot_overrides),
        }
        self.config_path.write_text(yaml.safe_dump(config))

    @property
    def bot_log_path(self) -> Path:
        return self.control_dir / "bot.log"

    def start_bot(self, wait: bool = True) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if k != "GALAXY_CONFIG"}
        env.update({"GALAXY_TELEGRAM_TOKEN": self.token, "PYTHONUNBUFFERED": "1", **self.bot_env})
        log = open(self.bot_log_path, "ab")
        self.bot_runs += 1
        log.write(f"==== bot run {self.bot_runs}\n".encode())
        log.flush()
        self.bot = subprocess.Popen([*BOT, "--config", str(self.config_path), *(["-v"] if self.verbose else [])],
                                    env=env, stdout=log,
                                    stderr=subprocess.STDOUT)
        log.close()
        if wait:
            run = self.bot_runs
            wait_for(lambda: self._bot_ready(run), 30, what="the bot to start")
        return self.bot

    def _bot_ready(self, run: int) -> bool:
        if self.bot is not None and self.bot.poll() is not None:
            raise AssertionError(f"the bot exited {self.bot.returncode}:\n{self.bot_log()[-3000:]}")
        text = self.bot_log()
        return "bot ready" in text.split(f"==== bot run {run}\n", 1)[-1]

    def bot_log(self) -> str:
        return self.bot_log_path.read_text(errors="replace") if self.bot_log_path.exists() else ""

    def stop_bot(self, sig: int = signal.SIGTERM) -> int | None:
        if self.bot is None:
            return None
        if self.bot.poll() is None:
            self.bot.send_signal(sig)
            try:
                self.bot.wait(30)
            except subprocess.TimeoutExpired:
                self.bot.kill()
                self.bot.wait()
        code = self.bot.returncode
        self.bot = None
        return code

    def stop(self) -> None:
        try:
            self.stop_bot()
        finally:
            for node in self.nodes.values():
                node.stop()
            self.emulator.stop()

    # -- the user side and what the tests look at ------------------------------------
    def user(self, user_id: int, **kwargs: Any) -> TelegramUser:
        return self.emulator.user(user_id, **kwargs)

    def store(self) -> Any:
        from galaxy_fleet.control.store import Store

        return Store(self.store_path)

    def orders(self, **filters: Any) -> list[Any]:
        store = self.store()
        try:
            return store.orders(limit=1000, **filters)
        finally:
            store.close()

    def audit_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        if not self.audit_path.exists():
            return []
        events = [json.loads(line) for line in self.audit_path.read_text().splitlines() if line.strip()]
        return [e for e in events if type_ is None or e["type"] == type_]


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def new_token() -> str:
    # Shaped like a real token; the tests look for it in logs and files.
    return f"{secrets.randbelow(10**9) + 10**9}:AA{secrets.token_urlsafe(24)}"


def ask(user: TelegramUser, text: str, match: str | Callable[[BotMessage], bool], timeout: float = 20) -> BotMessage:
    """Send ``text`` and wait for the first new bot message in the chat that matches."""
    after = user.last_id()
    user.send(text)
    return user.wait_message(match, after=after, timeout=timeout)


ANSWER = re.compile(r"</b> · (done|failed|cancelled|timed out|interrupted) (in|after) |· \d+/\d+ done")


def is_answer(m: BotMessage) -> bool:
    return bool(ANSWER.search(m.text)) or m.document is not None


def order(user: TelegramUser, text: str, timeout: float = 30) -> tuple[BotMessage, BotMessage]:
    """Send an order; returns (the status message as it ends, the answer)."""
    after = user.last_id()
    user.send(text)
    answer = user.wait_message(is_answer, after=after, timeout=timeout)
    first = next(m for m in user.messages() if after < m.message_id < answer.message_id)
    return final_status(user, first.message_id), answer


FINAL = re.compile(r"^(✅|❌|🚫|⌛|⚠️) <b>[^<]+</b> (done|failed|cancelled|timed out|interrupted) |"
                   r"^📡 <b>[^<]+</b> · (\d+)/\3 finished")


def final_status(user: TelegramUser, message_id: int, timeout: float = 10) -> BotMessage:
    """The status message once it shows the order finished (it is edited right after the answer is sent)."""
    return user.wait_message(lambda m: m.message_id == message_id and bool(FINAL.search(m.text)),
                             after=message_id - 1, timeout=timeout)


def order_id(status: BotMessage) -> str:
    m = re.search(r"<code>(\d{8}T[\d.]+Z-[0-9a-f]+)</code>", status.text)
    assert m, f"no order id in {status.text!r}"
    return m.group(1)
