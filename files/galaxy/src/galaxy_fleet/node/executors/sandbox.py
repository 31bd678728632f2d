"""The agent's sandbox: executors' programs run in a unit of their own, as the agent's account.

The node role installs ``galaxy-agent.socket`` (a Unix socket only the worker's
account may connect to, ``Accept=yes``) and ``galaxy-agent@.service`` (one
instance per connection, ``User=`` the agent's account, its own sandbox: the
project and scratch directories writable, the spool, the audit trail and
/etc/galaxy out of sight). With ``worker.agent_socket`` set, ``run_argv``
starts a program through it instead of forking it:

- the worker makes the program's stdin/stdout/stderr pipes and connects;
- it sends one JSON line ``{"argv", "cwd", "env", "order_id"}`` with the three
  pipe ends attached (SCM_RIGHTS), so output is read exactly as from a child;
- the instance (``main`` below) makes the order's scratch directory (its
  ``HOME``), starts the program in a process group of its own and answers
  ``{"pid": N}`` or ``{"error": "..."}``;
- the worker may write ``TERM`` or ``KILL`` lines (cancel, timeout); a closed
  connection (the worker died) kills the program;
- the instance answers ``{"exit": code}`` when the program ends, removes the
  scratch directory and exits; systemd then stops whatever the program left
  running in the instance's cgroup.

No capability is needed anywhere: systemd switches the account, so the worker
holds no privilege over the agent beyond asking it to run something.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO, Any

MAX_REQUEST = 1 << 20
DEFAULT_SCRATCH = "/var/lib/galaxy-agent/scratch"
_SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL}


class SandboxError(OSError):
    """The sandbox could not start the program (the reason is for the order's answer)."""


# -- the worker's side ----------------------------------------------------------------
class AgentProcess:
    """A program running in the agent's sandbox, with the parts of Popen that run_argv uses."""

    def __init__(
        self,
        conn: socket.socket,
        pid: int,
        stdin: IO[bytes] | None,
        stdout: IO[bytes],
        stderr: IO[bytes],
        reader: IO[bytes],
    ):
        self.pid = pid  # in the sandbox's pid space: for logs only, never to be signalled from here
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._conn, self._reader = conn, reader
        self._lock = threading.Lock()

    def signal_group(self, sig: int) -> None:
        """Ask the sandbox to signal the program's process group (SIGTERM or SIGKILL)."""
        name = "KILL" if sig == signal.SIGKILL else "TERM"
        with self._lock:
            if self.returncode is not None:
                return
            try:
                self._conn.sendall(f"{name}\n".encode())
            except OSError:
                pass

    def wait(self) -> int:
        if self.returncode is None:
            code = -signal.SIGKILL
            try:
                line = self._reader.readline(4096)
                code = int(json.loads(line)["exit"]) if line else code
            except (OSError, ValueError, KeyError, TypeError):
                pass
            with self._lock:
                self.returncode = code
            self._reader.close()
            self._conn.close()
        return self.returncode


def spawn(
    socket_path: str, argv: list[str], *, cwd: str | None, env: dict[str, str], order_id: str, stdin: bool
) -> AgentProcess:
    """Start ``argv`` in the agent's sandbox; raises SandboxError with the reason when it cannot."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if stdin:
        in_r, in_w = os.pipe()
    else:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        try:
            conn.connect(socket_path)
            request = json.dumps({"argv": argv, "cwd": cwd, "env": env, "order_id": order_id}).encode() + b"\n"
            if len(request) > MAX_REQUEST:
                raise SandboxError(f"the program's arguments and environment exceed {MAX_REQUEST} bytes")
            socket.send_fds(conn, [request[:65536]], [in_r, out_w, err_w])
            if len(request) > 65536:
                conn.sendall(request[65536:])
        except SandboxError:
            raise
        except OSError as exc:
            raise SandboxError(f"the agent's sandbox ({socket_path}) is not available: {exc.strerror or exc}") from None
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        reader = conn.makefile("rb")
        try:
            reply = json.loads(reader.readline(65536) or b"{}")
        except (OSError, ValueError):
            reply = {}
        if "pid" not in reply:
            reader.close()
            raise SandboxError(str(reply.get("error") or "the agent's sandbox closed the connection"))
    except BaseException:
        conn.close()
        for fd in (out_r, err_r, in_w):
            if fd >= 0:
                os.close(fd)
        raise
    return AgentProcess(
        conn,
        int(reply["pid"]),
        os.fdopen(in_w, "wb") if in_w >= 0 else None,
        os.fdopen(out_r, "rb"),
        os.fdopen(err_r, "rb"),
        reader,
    )


def signal_as_agent(socket_path: str, pid: int, sig: int) -> None:
    """Send ``sig`` to ``pid`` from the agent's account (opencode serve runs as it, so only it
    may signal it: the health check restarts a wedged server this way, holding no CAP_KILL)."""
    argv = [
        sys.executable,
        "-I",
        "-c",
        "import os, sys; os.kill(int(sys.argv[1]), int(sys.argv[2]))",
        str(pid),
        str(int(sig)),
    ]
    proc = spawn(socket_path, argv, cwd="/", env={"PATH": "/usr/bin:/bin"}, order_id=f"signal-{pid}", stdin=False)
    try:
        proc.stdout.read()
        err = proc.stderr.read(65536).decode("utf-8", "replace").strip()
    finally:
        proc.stdout.close()
        proc.stderr.close()
    code = proc.wait()
    if code != 0:
        raise SandboxError(err.splitlines()[-1] if err else f"kill exited with status {code}")


# -- the sandbox's side (galaxy-agent@.service) ------------------------------------------
def _receive(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 3)
    buf = bytearray(data)
    while not buf.endswith(b"\n"):
        if len(buf) > MAX_REQUEST:
            raise ValueError("request too long")
        more = conn.recv(65536)
        if not more:
            raise ValueError("request cut short")
        buf += more
    request = json.loads(buf)
    if len(fds) != 3:
        raise ValueError(f"expected 3 file descriptors, got {len(fds)}")
    argv, cwd, env, order_id = request.get("argv"), request.get("cwd"), request.get("env"), request.get("order_id")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise ValueError("argv must be a non-empty list of strings")
    if not (isinstance(env, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())):
        raise ValueError("env must map strings to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise ValueError("cwd must be a string")
    if not isinstance(order_id, str) or not order_id or "/" in order_id or order_id.startswith("."):
        raise ValueError("order_id must be a file name")
    return request, fds


def _reply(conn: socket.socket, **data: Any) -> None:
    try:
        conn.sendall(json.dumps(data).encode() + b"\n")
    except OSError:
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _commands(conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
    """TERM/KILL lines from the worker; a closed connection means the worker is gone: kill."""
    stream = conn.makefile("rb")
    for line in stream:
        sig = _SIGNALS.get(line.strip().decode("ascii", "replace"))
        if sig is not None and proc.returncode is None:
            _killpg(proc.pid, sig)
    if proc.returncode is None:
        _killpg(proc.pid, signal.SIGKILL)


def serve(conn: socket.socket, scratch_root: Path) -> int:
    try:
        request, fds = _receive(conn)
    except (OSError, ValueError) as exc:
        _reply(conn, error=f"bad request to the agent's sandbox: {exc}")
        return 2
    scratch = scratch_root / request["order_id"]
    try:
        scratch.mkdir(mode=0o700, parents=False, exist_ok=True)
        env = dict(request["env"])
        account = pwd.getpwuid(os.getuid()).pw_name
        env.update(HOME=str(scratch), USER=account, LOGNAME=account)
        proc = subprocess.Popen(
            request["argv"],
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            cwd=request["cwd"] or str(scratch),
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    except FileNotFoundError as exc:
        missing = request["cwd"] if exc.filename == request["cwd"] else request["argv"][0]
        _reply(conn, error=f"not found: {missing}")
        return 1
    except PermissionError as exc:
        _reply(conn, error=f"permission denied: {exc.filename or request['argv'][0]}")
        return 1
    except OSError as exc:
        _reply(conn, error=f"cannot start {request['argv'][0]}: {exc.strerror or exc}")
        return 1
    finally:
        for fd in fds:
            os.close(fd)
    _reply(conn, pid=proc.pid)
    threading.Thread(target=_commands, args=(conn, proc), daemon=True).start()
    code = proc.wait()
    _killpg(proc.pid, signal.SIGKILL)  # nothing the program started outlives it
    shutil.rmtree(scratch, ignore_errors=True)
    _reply(conn, exit=code)
    return 0


def main() -> int:
    """``python -m galaxy_fleet.node.executors.sandbox``: one connection on stdin (systemd's Accept=yes)."""
    conn = socket.socket(fileno=os.dup(0))
    for fd in (0, 1):  # the program never sees the connection
        os.dup2(os.open(os.devnull, os.O_RDWR), fd)
    scratch_root = Path(os.environ.get("GALAXY_SCRATCH_DIR") or DEFAULT_SCRATCH)
    return serve(conn, scratch_root)


if __name__ == "__main__":
    sys.exit(main())
