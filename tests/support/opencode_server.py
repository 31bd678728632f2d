"""Run the real ``opencode serve`` (npm package ``opencode-ai``) offline for tests.

``mk/opencode.mk`` installs the pinned package into ``.tools/opencode`` and a
plugin seed into ``.tools/opencode-plugin-seed``. This module starts the
binary with everything that keeps it off the network:

- an isolated HOME and XDG dirs under a temporary root, and a minimal
  environment (nothing inherited but PATH and the locale);
- the ``OPENCODE_DISABLE_*`` switches (autoupdate, models.dev fetch, share,
  LSP downloads, default plugins, Claude Code and external skills);
- a config whose only enabled provider is an OpenAI-compatible one pointing at
  a scripted LLM server on loopback, with permissions that never ask;
- a global config dir seeded with ``package.json``, ``package-lock.json`` and
  ``node_modules`` holding ``@opencode-ai/plugin``: opencode's background
  dependency install then finds nothing to do instead of calling the npm
  registry.

``OpenCodeServer`` is a context manager; it waits for ``/global/health`` and
tears the process group down on exit, even after a failed test.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("GALAXY_OPENCODE_TOOLS", REPO / ".tools"))
OPENCODE_BIN = TOOLS / "opencode" / "node_modules" / ".bin" / "opencode"
PLUGIN_SEED = TOOLS / "opencode-plugin-seed"

PROVIDER = "scripted"
MODEL = "echo"

OFFLINE_SWITCHES = {
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_EXTERNAL_SKILLS": "1",
}

START_TIMEOUT = float(os.environ.get("GALAXY_OPENCODE_START_TIMEOUT", "90"))


class OpenCodeMissing(RuntimeError):
    pass


class PortTaken(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def require_binary() -> Path:
    if not os.access(OPENCODE_BIN, os.X_OK):
        raise OpenCodeMissing(f"{OPENCODE_BIN} is missing: run `make opencode-tools` first")
    if not (PLUGIN_SEED / "node_modules" / "@opencode-ai" / "plugin").is_dir():
        raise OpenCodeMissing(f"{PLUGIN_SEED} holds no @opencode-ai/plugin: run `make opencode-tools` first")
    return OPENCODE_BIN


def opencode_config(llm_url: str, **extra: Any) -> dict[str, Any]:
    """An opencode.json whose only provider is the scripted LLM at ``llm_url``."""
    cfg: dict[str, Any] = {
        "enabled_providers": [PROVIDER],
        "provider": {
            PROVIDER: {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Scripted LLM",
                "options": {"baseURL": llm_url, "apiKey": "scripted-test-key"},
                "models": {
                    MODEL: {"name": "Echo", "cost": {"input": 1.0, "output": 2.0},
                            "limit": {"context": 100000, "output": 4096}},
                    "other": {"name": "Other", "cost": {"input": 3.0, "output": 4.0},
                              "limit": {"context": 100000, "output": 4096}},
                },
            }
        },
        "model": f"{PROVIDER}/{MODEL}",
        "small_model": f"{PROVIDER}/{MODEL}",
        "autoupdate": False,
        "share": "disabled",
        "snapshot": False,
        "lsp": False,
        "formatter": False,
        # A headless run must never wait on an "ask".
        "permission": "allow",
        "agent": {
            "reviewer": {"description": "Reviews code (test agent)", "mode": "primary",
                         "prompt": "You are the scripted reviewer agent."},
        },
    }
    cfg.update(extra)
    return cfg


def offline_env(root: Path, password: str | None = None) -> dict[str, str]:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(root / "home"),
        "XDG_CONFIG_HOME": str(root / "config"),
        "XDG_DATA_HOME": str(root / "data"),
        "XDG_CACHE_HOME": str(root / "cache"),
        "XDG_STATE_HOME": str(root / "state"),
        "TMPDIR": str(root / "tmp"),
        **OFFLINE_SWITCHES,
    }
    if password:
        env["OPENCODE_SERVER_PASSWORD"] = password
    return env


def prepare_root(root: Path, llm_url: str, **config_extra: Any) -> Path:
    """Lay out HOME, XDG dirs and the seeded global config dir under ``root``."""
    for sub in ("home", "data", "cache", "state", "tmp", "project"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    cfg_dir = root / "config" / "opencode"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(PLUGIN_SEED / name, cfg_dir / name)
    link = cfg_dir / "node_modules"
    if not link.exists():
        link.symlink_to(PLUGIN_SEED / "node_modules", target_is_directory=True)
    (cfg_dir / "opencode.json").write_text(json.dumps(opencode_config(llm_url, **config_extra), indent=2))
    return root


class OpenCodeServer:
    """``opencode serve`` on 127.0.0.1 with a random port, fully offline."""

    def __init__(self, llm_url: str, root: Path | None = None, password: str | None = None,
                 **config_extra: Any) -> None:
        self.llm_url = llm_url
        self.password = password
        self.config_extra = config_extra
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="galaxy-opencode-")) if root is None else root
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.log_path = self.root / "serve.log"
        self._listening = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def project(self) -> Path:
        return self.root / "project"

    @property
    def env(self) -> dict[str, str]:
        return offline_env(self.root, self.password)

    def start(self) -> "OpenCodeServer":
        """Start on a free port; a port taken in the meantime means another try."""
        prepare_root(self.root, self.llm_url, **self.config_extra)
        for attempt in range(3):
            try:
                return self._start_once(free_port())
            except PortTaken:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _start_once(self, port: int) -> "OpenCodeServer":
        binary = require_binary()
        self._listening.clear()
        self.url = ""
        # `--port 0` would mean opencode's default 4096, not "any free port".
        self.proc = subprocess.Popen(
            [str(binary), "serve", "--hostname", "127.0.0.1", "--port", str(port), "--print-logs",
             "--log-level", "INFO"],
            cwd=self.project, env=self.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read_output, name="opencode-serve-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT
        while not self._listening.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                if "EADDRINUSE" in self.log_tail() or "in use" in self.log_tail():
                    raise PortTaken(port)
                raise RuntimeError(f"opencode serve did not start; log:\n{self.log_tail()}")
        self.wait_healthy(deadline - time.monotonic())
        return self

    def _read_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        with open(self.log_path, "ab") as log:
            for line in self.proc.stdout:
                log.write(line)
                log.flush()
                text = line.decode("utf-8", "replace")
                if not self._listening.is_set() and "server listening on " in text:
                    self.url = text.split("server listening on ", 1)[1].strip().rstrip("/")
                    self._listening.set()

    def auth_header(self) -> dict[str, str]:
        if not self.password:
            return {}
        token = base64.b64encode(f"opencode:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def wait_healthy(self, timeout: float) -> None:
        """Poll ``/global/health`` until it answers healthy (each try bounded)."""
        deadline = time.monotonic() + max(timeout, 1.0)
        last: object = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                break
            req = urllib.request.Request(self.url + "/global/health", headers=self.auth_header())
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    if json.load(resp).get("healthy"):
                        return
            except (OSError, ValueError) as exc:  # not ready yet
                last = exc
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"opencode serve never became healthy ({last}); log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def cleanup(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "OpenCodeServer":
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def request(server: OpenCodeServer, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
    """A small JSON call to the server, for tests that look behind the executor."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **server.auth_header()}
    req = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        raw = resp.read()
    return json.loads(raw) if raw else None
