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

from galaxy_fleet.config import CommandSpec, ShellSpec
from galaxy_fleet.node.executors import Executor, ExecutorError, Result, RunContext, cap_text
from galaxy_fleet.node.executors.sandbox import AgentProcess, SandboxError, spawn
from galaxy_fleet.order import DONE, FAILED

if TYPE_CHECKING:
    from galaxy_fleet.order import Order

_PLACEHOLDERS = ("{payload}", "{order_id}", "{session}", "{target}")


# The worker's environment minus what a child must never see: systemd's hand-over
# of credentials and sockets, and anything named like a secret.
_SERVICE_ENV = frozenset(
    {
        "CREDENTIALS_DIRECTORY",
        "NOTIFY_SOCKET",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "MAINPID",
        "MANAGERPID",
        "SYSTEMD_EXEC_PID",
        "GALAXY_CONFIG",
    }
)
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


def _option_like(template: list[str], values: dict[str, str]) -> str | None:
    """The first placeholder value that would reach the program as an option (``-x``, ``--out=F``)."""
    for part in template[1:]:
        if part == "--":
            return None  # the template ends the options itself
        if part in _PLACEHOLDERS and values.get(part, "").startswith("-"):
            return part
    return None


def _check_argv(name: str, argv: Any) -> list[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) and a for a in argv):
        raise ExecutorError(f"executor {name!r}: 'argv' must be a non-empty list of strings")
    return argv


def run_argv(
    argv: list[str],
    ctx: RunContext,
    *,
    stdin: bytes | None = None,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    grace: float = 1.0,
    agent_socket: str = "",
) -> Result:
    """Run ``argv``, stream its stdout lines as progress, stop it on cancel.

    Output beyond ``ctx.max_output_bytes`` is counted but not kept. stderr is
    kept (capped) and shown after stdout when the program fails. ``agent_socket``:
    start it in the agent's sandbox (see the module's doc).
    """
    started = time.monotonic()
    proc: subprocess.Popen[bytes] | AgentProcess
    try:
        if agent_socket:
            proc = spawn(
                agent_socket, argv, cwd=cwd, env=child_env(env), order_id=ctx.order_id, stdin=stdin is not None
            )
        else:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=cwd,
                env=child_env(env),
                start_new_session=True,
                close_fds=True,
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

    if not isinstance(proc, AgentProcess):
        ctx.on_spawn(proc.pid)  # the leader of a new session: its pid is the group's id
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
    group_killed = False
    while open_streams:
        ready = sel.select(timeout=0.25)
        if not ready and not group_killed and _exited(proc):
            # The program is done but something it started holds the pipes: the
            # order ends with its program, so the rest of its group goes too.
            _signal_group(proc, signal.SIGKILL)
            group_killed = True
        for key, _ in ready:
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
    if not isinstance(proc, AgentProcess):
        try:  # wait for the program without reaping it, then end whatever it left behind
            os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        _signal_group(proc, signal.SIGKILL)  # nothing of the order outlives it
    code = proc.wait()
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    text, truncated = cap_text(bytes(out), limit)
    errtext = bytes(err).decode("utf-8", "replace").strip()
    details = {"duration_s": round(time.monotonic() - started, 6), "argv0": argv[0]}
    if ctx.cancelled.is_set():
        return Result(
            ctx.stopped_status(),
            output=text,
            exit_code=code,
            bytes_out=total,
            truncated=truncated,
            error=f"stopped ({ctx.cancel_reason})",
            details=details,
        )
    if code != 0:
        reason = f"{argv[0]} exited with status {code}" if code > 0 else f"{argv[0]} killed by signal {-code}"
        if errtext:
            reason += f": {errtext.splitlines()[-1][:300]}"
            text = (text + "\n\n" if text else "") + f"stderr:\n{errtext}"
        return Result(
            FAILED, output=text, exit_code=code, bytes_out=total, truncated=truncated, error=reason, details=details
        )
    return Result(DONE, output=text, exit_code=0, bytes_out=total, truncated=truncated, details=details)


def _feed(proc: subprocess.Popen[bytes] | AgentProcess, data: bytes) -> None:
    try:
        proc.stdin.write(data)  # type: ignore[union-attr]
        proc.stdin.close()  # type: ignore[union-attr]
    except (BrokenPipeError, OSError):
        pass


def _exited(proc: subprocess.Popen[bytes] | AgentProcess) -> bool:
    """Whether the program has exited, without reaping it: while it is a zombie
    its pid cannot be reused, so signalling its process group stays safe. A program in the
    agent's sandbox is the sandbox's to end (its unit stops with it)."""
    if proc.returncode is not None:
        return True
    if isinstance(proc, AgentProcess):
        return False
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


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
    """``argv: ["git", "log", "{payload}"]``; ``stdin: true`` sends the payload on stdin instead
    (``argv: [claude, -p]``: a prompt can then never be an option).

    Optional: ``cwd``, ``env`` (mapping), ``grace`` (seconds between SIGTERM and SIGKILL).

    A payload (or session, target) that begins with ``-`` would reach the program as an
    option (``git log --output=/etc/x``), so such an order is refused, unless the template
    separates it: ``end_of_options: true`` puts ``--`` before the first placeholder, which the
    program must understand (getopt-style programs do). ``allow_options: true`` hands it on as
    it is, for a program that is meant to take options from the order.
    """

    type = "command"

    def __init__(self, name: str, spec: CommandSpec, config: Any):
        super().__init__(name, spec, config)
        self.argv = _check_argv(name, spec.argv)
        self.stdin = spec.stdin
        self.env = spec.env or None
        self.grace = spec.grace if spec.grace is not None else config.worker.cancel_grace
        self.allow_options = spec.allow_options
        self.end_of_options = spec.end_of_options
        if self.end_of_options:
            first = next((i for i, part in enumerate(self.argv) if part in _PLACEHOLDERS), None)
            if first is None or first == 0:
                raise ExecutorError(f"executor {name!r}: 'end_of_options' needs a placeholder argument in 'argv'")
            if "--" not in self.argv[1:first]:
                self.argv = [*self.argv[:first], "--", *self.argv[first:]]

    def run(self, order: Order, ctx: RunContext) -> Result:
        values = {
            "{payload}": order.payload,
            "{order_id}": order.id,
            "{session}": order.session or "",
            "{target}": order.target,
        }
        if not self.allow_options and not self.end_of_options:
            part = _option_like(self.argv, values)
            if part is not None:
                what = part.strip("{}")
                return Result(
                    FAILED,
                    error=f"refused: the {what} begins with '-' and would be an option of "
                    f"{self.argv[0]} (executor {self.name!r})",
                    output=f"Not run: the {what} begins with '-', which {self.argv[0]} would read as an "
                    "option. Reword it, or ask the node's administrator to set "
                    "end_of_options: true (or allow_options: true) on this executor.",
                )
        argv = _expand(self.argv, values)
        stdin = order.payload.encode() if self.stdin else None
        return run_argv(
            argv,
            ctx,
            stdin=stdin,
            cwd=ctx.workdir or self.spec.cwd,
            env=self.env,
            grace=self.grace,
            agent_socket=self.config.worker.agent_socket,
        )


class ShellExecutor(Executor):
    """A named allow-list: the payload names one command, e.g. ``uptime`` or ``git-status``.

    ``commands: {uptime: {argv: [uptime]}, git-status: {argv: [git, status], cwd: /srv/app}}``
    """

    type = "shell"

    def __init__(self, name: str, spec: ShellSpec, config: Any):
        super().__init__(name, spec, config)
        for cname, cspec in spec.commands.items():
            _check_argv(f"{name}.{cname}", cspec.argv)
        self.commands = spec.commands
        self.grace = spec.grace if spec.grace is not None else config.worker.cancel_grace

    def run(self, order: Order, ctx: RunContext) -> Result:
        wanted = order.payload.strip()
        cspec = self.commands.get(wanted)
        if cspec is None:
            allowed = ", ".join(sorted(self.commands)) or "(none)"
            return Result(
                FAILED,
                error=f"{wanted[:60]!r} is not an allowed command; allowed: {allowed}",
                output=f"Not an allowed command. This node allows: {allowed}",
            )
        return run_argv(
            list(cspec.argv), ctx, cwd=cspec.cwd, grace=self.grace, agent_socket=self.config.worker.agent_socket
        )
