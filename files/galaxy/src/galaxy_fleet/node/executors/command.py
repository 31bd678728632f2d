"""Executors that run a program: ``command`` (an argv template) and ``shell``
(a named allow-list of read-only commands).

Neither ever goes through a shell: the payload is one argv element or stdin.

With ``worker.agent_socket`` set (the roles set it), a program starts in the
agent's sandbox, as the agent's account (see ``sandbox``). No program inherits
the worker's credentials (``$CREDENTIALS_DIRECTORY``) or an environment
variable whose name looks like a secret.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any

from galaxy_fleet.node.executors import Executor, ExecutorError, Result, RunContext, cap_text
from galaxy_fleet.node.executors.sandbox import AgentProcess, SandboxError, spawn
from galaxy_fleet.order import DONE, FAILED

if TYPE_CHECKING:
    from galaxy_fleet.order import Order

_PLACEHOLDERS = ("{payload}", "{order_id}", "{session}", "{target}")


# The worker's environment minus what a child must never see: systemd's hand-over
# of credentials and sockets, and anything named like a secret.
_SERVICE_ENV = frozenset({"CREDENTIALS_DIRECTORY", "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS",
                          "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID", "JOURNAL_STREAM", "MAINPID",
                          "MANAGERPID", "SYSTEMD_EXEC_PID", "GALAXY_CONFIG"})
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|CREDENTIAL|API_?KEY|PRIVATE", re.IGNORECASE)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of an executor's child: the worker's without secrets, plus ``extra``
    (the executor's own ``env``, which the operator wrote and is kept as it is)."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_ENV and not _SECRET_NAME.search(k)}
    env.update(extra or {})
    return env


def _expand(template: list[str], values: dict[str, str]) -> list[str]:
    """Replace whole-element placeholders; anything else stays literal."""
    return [values.get(part, part) if part in _PLACEHOLDERS else part for part in template]


def _check_argv(name: str, argv: Any) -> list[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ExecutorError(f"executor {name!r}: 'argv' must be a non-empty list of strings")
    return argv


def run_argv(argv: list[str], ctx: RunContext, *, stdin: bytes | None = None, cwd: str | None = None,
             env: dict[str, str] | None = None, grace: float = 1.0, agent_socket: str = "") -> Result:
    """Run ``argv``, stream its stdout lines as progress, stop it on cancel.

    Output beyond ``ctx.max_output_bytes`` is counted but not kept. stderr is
    kept (capped) and shown after stdout when the program fails. ``agent_socket``:
    start it in the agent's sandbox (see the module's doc).
    """
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | AgentProcess
    try:
        if agent_socket:
            proc = spawn(agent_socket, argv, cwd=cwd, env=child_env(env), order_id=ctx.order_id,
                         stdin=stdin is not None)
        else:
            proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=child_env(env),
                start_new_session=True, close_fds=True,
            )
    except SandboxError as exc:
        return Result(FAILED, error=str(exc))
    except FileNotFoundError:
        return Result(FAILED, error=f"command not found: {argv[0]}")
    except PermissionError:
        return Result(FAILED, error=f"permission denied running {argv[0]}")
    except OSError as exc:
        return Result(FAILED, error=f"cannot start {argv[0]}: {exc.strerror or exc}")

    def stop() -> None:
        # Signal the whole process group; escalate to SIGKILL after the grace period.
        _signal_group(proc, signal.SIGTERM)
        timer = threading.Timer(grace, _signal_group, (proc, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    ctx.on_cancel(stop)
    if stdin is not None:
        threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()

    limit = ctx.max_output_bytes
    out, err = bytearray(), bytearray()
    total = 0
    partial = b""
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, "out")  # type: ignore[arg-type]
    sel.register(proc.stderr, selectors.EVENT_READ, "err")  # type: ignore[arg-type]
    open_streams = 2
    while open_streams:
        for key, _ in sel.select():
            chunk = os.read(key.fd, 65536)
            if not chunk:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            if key.data == "err":
                if len(err) < limit:
                    err += chunk[: limit - len(err)]
                continue
            total += len(chunk)
            if len(out) <= limit:
                out += chunk[: limit + 1 - len(out)]
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop()
            for line in lines:  # every line: the worker batches them, none is dropped
                if line.strip():
                    ctx.progress(line.decode("utf-8", "replace")[:500])
    sel.close()
    code = proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    text, truncated = cap_text(bytes(out), limit)
    errtext = bytes(err).decode("utf-8", "replace").strip()
    details = {"duration_s": round(time.monotonic() - started, 6), "argv0": argv[0]}
    if ctx.cancelled.is_set():
        return Result(ctx.stopped_status(), output=text, exit_code=code, bytes_out=total,
                      truncated=truncated, error=f"stopped ({ctx.cancel_reason})", details=details)
    if code != 0:
        reason = f"{argv[0]} exited with status {code}" if code > 0 else f"{argv[0]} killed by signal {-code}"
        if errtext:
            reason += f": {errtext.splitlines()[-1][:300]}"
            text = (text + "\n\n" if text else "") + f"stderr:\n{errtext}"
        return Result(FAILED, output=text, exit_code=code, bytes_out=total, truncated=truncated,
                      error=reason, details=details)
    return Result(DONE, output=text, exit_code=0, bytes_out=total, truncated=truncated, details=details)


def _feed(proc: subprocess.Popen[bytes] | AgentProcess, data: bytes) -> None:
    try:
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass


def _signal_group(proc: subprocess.Popen[bytes] | AgentProcess, sig: int) -> None:
    if proc.returncode is not None:
        return
    if isinstance(proc, AgentProcess):  # another account's process: the sandbox signals it
        proc.signal_group(sig)
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class CommandExecutor(Executor):
    """``argv: ["claude", "-p", "{payload}"]``; ``stdin: true`` sends the payload on stdin instead.

    Optional: ``cwd``, ``env`` (mapping), ``grace`` (seconds between SIGTERM and SIGKILL).
    """

    type = "command"

    def __init__(self, name: str, spec: dict[str, Any], config: Any):
        super().__init__(name, spec, config)
        self.argv = _check_argv(name, spec.get("argv"))
        self.stdin = bool(spec.get("stdin", False))
        env = spec.get("env") or {}
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise ExecutorError(f"executor {name!r}: 'env' must map names to strings")
        self.env = env or None

    def run(self, order: "Order", ctx: RunContext) -> Result:
        values = {"{payload}": order.payload, "{order_id}": order.id,
                  "{session}": order.session or "", "{target}": order.target}
        argv = _expand(self.argv, values)
        stdin = order.payload.encode() if self.stdin else None
        return run_argv(argv, ctx, stdin=stdin, cwd=ctx.workdir or self.spec.get("cwd"), env=self.env,
                        grace=float(self.spec.get("grace", self.config.worker.cancel_grace)),
                        agent_socket=self.config.worker.agent_socket)


class ShellExecutor(Executor):
    """A named allow-list: the payload names one command, e.g. ``uptime`` or ``git-status``.

    ``commands: {uptime: {argv: [uptime]}, git-status: {argv: [git, status], cwd: /srv/app}}``
    """

    type = "shell"

    def __init__(self, name: str, spec: dict[str, Any], config: Any):
        super().__init__(name, spec, config)
        commands = spec.get("commands") or {}
        if not isinstance(commands, dict):
            raise ExecutorError(f"executor {name!r}: 'commands' must map names to {{argv: [...]}}")
        self.commands: dict[str, dict[str, Any]] = {}
        for cname, cspec in commands.items():
            if isinstance(cspec, list):
                cspec = {"argv": cspec}
            if not isinstance(cspec, dict):
                raise ExecutorError(f"executor {name!r}: command {cname!r} must be a mapping or an argv list")
            _check_argv(f"{name}.{cname}", cspec.get("argv"))
            self.commands[str(cname)] = cspec

    def run(self, order: "Order", ctx: RunContext) -> Result:
        wanted = order.payload.strip()
        cspec = self.commands.get(wanted)
        if cspec is None:
            allowed = ", ".join(sorted(self.commands)) or "(none)"
            return Result(FAILED, error=f"{wanted[:60]!r} is not an allowed command; allowed: {allowed}",
                          output=f"Not an allowed command. This node allows: {allowed}")
        return run_argv(list(cspec["argv"]), ctx, cwd=cspec.get("cwd"),
                        grace=float(self.spec.get("grace", self.config.worker.cancel_grace)),
                        agent_socket=self.config.worker.agent_socket)
