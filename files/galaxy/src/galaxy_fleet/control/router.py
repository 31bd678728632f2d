"""The router: one persistent connection per node to its `galaxy remote`.

Each link is a thread that connects (paramiko over SSH with strict host-key
checking, or a local process for ``ansible_connection: local``), subscribes
to the node's event stream from the cursor that ``cursor(host, hello, ask)``
returns (``ask`` sends a request before the stream starts), and reads. Requests
are multiplexed over the same connection by id. A dropped connection is
retried with exponential backoff and the stream resumes from its cursor.
One keeper thread pings idle links and drops those that stop answering.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from galaxy_fleet.config import ControlConfig
from galaxy_fleet.control.inventory import Host

log = logging.getLogger("galaxy.router")


class NodeUnavailable(ConnectionError):
    """The node cannot be reached now (the message says why)."""


class NodeError(RuntimeError):
    """The node answered with an error."""


class NodeBusy(NodeError):
    """The node refused an order because its queue is full."""

    def __init__(self, message: str, queued: int | None = None, limit: int | None = None):
        super().__init__(message)
        self.queued, self.limit = queued, limit


# The router's settings (timeouts, known_hosts, the remote command) are the control section's.
RouterSettings = ControlConfig


class LineTooLong(Exception):
    """A node sent a line over the limit."""


class _Conn:
    """A byte pipe to `galaxy remote`: readline(), send(), close()."""

    def __init__(self, rfile: Any, send: Callable[[bytes], None], close: Callable[[], None]):
        self.readline = rfile.readline
        self.send = send
        self.close = close


def _ssh_connect(host: Host, settings: RouterSettings) -> _Conn:
    import paramiko  # deferred: only the control node needs it

    client = paramiko.SSHClient()
    try:
        client.load_host_keys(settings.known_hosts)
    except OSError as exc:
        raise NodeUnavailable(f"cannot read known_hosts {settings.known_hosts}: {exc.strerror}") from None
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    try:
        client.connect(
            host.address,
            port=host.port,
            username=host.user,
            key_filename=host.key,
            timeout=settings.connect_timeout,
            banner_timeout=settings.connect_timeout,
            auth_timeout=settings.connect_timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        transport = client.get_transport()
        assert transport is not None
        transport.set_keepalive(max(1, int(settings.ping_interval)))
        chan = transport.open_session(timeout=settings.connect_timeout)
        chan.exec_command(settings.remote_command)
    except paramiko.BadHostKeyException:
        client.close()
        raise NodeUnavailable("its host key does not match known_hosts (possible impostor)") from None
    except paramiko.SSHException as exc:
        client.close()
        text = str(exc)
        if "not found in known_hosts" in text:
            text = f"its host key is not in {settings.known_hosts} (run the control role to record host keys)"
        raise NodeUnavailable(text) from None
    except OSError as exc:
        client.close()
        raise NodeUnavailable(f"cannot connect to {host.address}:{host.port}: {exc.strerror or exc}") from None
    rfile = chan.makefile("rb")

    def close() -> None:
        try:
            chan.close()
        finally:
            client.close()

    return _Conn(rfile, chan.sendall, close)


def _local_connect(host: Host, settings: RouterSettings) -> _Conn:
    argv = [sys.executable, "-m", "galaxy_fleet.cli"]
    if host.config:
        argv += ["--config", host.config]
    proc = subprocess.Popen(
        [*argv, "remote"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def send(data: bytes) -> None:
        stdin.write(data)
        stdin.flush()

    def close() -> None:
        try:
            stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    return _Conn(proc.stdout, send, close)


class NodeLink(threading.Thread):
    def __init__(
        self,
        host: Host,
        settings: RouterSettings,
        *,
        on_message: Callable[[str, dict[str, Any]], None],
        on_state: Callable[[str, bool, str | None], None],
        cursor: Callable[[str, dict[str, Any], Callable[..., Any]], int | None],
    ):
        super().__init__(name=f"galaxy-link-{host.name}", daemon=True)
        self.host = host
        self.settings = settings
        self._on_message = on_message
        self._on_state = on_state
        self._cursor = cursor
        self._conn: _Conn | None = None
        self._pending: dict[int, Future[Any]] = {}
        self._ids = itertools.count(1)  # 0 is the subscription's
        self._lock = threading.Lock()
        self._up = threading.Event()
        self._halt = threading.Event()
        self.error: str | None = "not connected yet"
        self.hello: dict[str, Any] = {}
        self.last_rx = 0.0
        self.down_since: float | None = time.monotonic()
        self.attempts = 0

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    # -- requests ------------------------------------------------------------
    def request_async(self, op: str, **args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        with self._lock:
            conn = self._conn if self._up.is_set() else None
            if conn is None:
                fut.set_exception(NodeUnavailable(f"{self.host.name} is unreachable: {self.error}"))
                return fut
            rid = next(self._ids)
            self._pending[rid] = fut
        data = json.dumps({"id": rid, "op": op, **args}, ensure_ascii=False).encode() + b"\n"
        try:
            conn.send(data)
        except Exception as exc:  # a dead channel
            with self._lock:
                self._pending.pop(rid, None)
            fut.set_exception(NodeUnavailable(f"{self.host.name}: connection lost ({exc})"))
            self.drop(f"write failed: {exc}")
        return fut

    def request(self, op: str, *, timeout: float | None = None, **args: Any) -> Any:
        """Send a request and wait for its answer.

        Waits up to ``connect_timeout`` for a link that is (re)connecting;
        raises NodeUnavailable or NodeError with a reason a person can read.
        """
        if not self._up.wait(self.settings.connect_timeout):
            raise NodeUnavailable(f"{self.host.name} is unreachable: {self.error}")
        fut = self.request_async(op, **args)
        try:
            return fut.result(timeout or self.settings.request_timeout)
        except FutureTimeout:
            raise NodeUnavailable(
                f"{self.host.name} did not answer {op!r} within {timeout or self.settings.request_timeout:g} s"
            ) from None

    def wait_up(self, timeout: float) -> bool:
        return self._up.wait(timeout)

    # -- the connection loop ----------------------------------------------------
    def run(self) -> None:
        backoff = 0.5
        while not self._halt.is_set():
            self.attempts += 1
            try:
                conn = (_local_connect if self.host.connection == "local" else _ssh_connect)(self.host, self.settings)
            except NodeUnavailable as exc:
                self._set_error(str(exc))
            except Exception as exc:  # anything else is a reason too, never a dead thread
                self._set_error(f"{type(exc).__name__}: {exc}")
            else:
                try:
                    if self._session(conn):
                        backoff = 0.5
                finally:
                    self._close(conn)
            if self._halt.wait(backoff):
                break
            backoff = min(backoff * 2, self.settings.backoff_max)

    def _set_error(self, message: str) -> None:
        if message != self.error:
            log.warning("%s: %s", self.host.name, message)
        self.error = message

    def _readline(self, conn: _Conn) -> bytes:
        """One line of at most ``max_line_bytes`` (b"" at the end); LineTooLong past that, having read
        no more than the limit."""
        limit = self.settings.max_line_bytes
        line = conn.readline(limit + 1)
        if len(line) > limit or (len(line) == limit and not line.endswith(b"\n")):
            raise LineTooLong(f"{self.host.name} sent a line over {limit} bytes: link dropped")
        return line

    def _session(self, conn: _Conn) -> bool:
        """Read one connection until it ends; True if it ever came up."""
        try:
            line = self._readline(conn)
        except LineTooLong as exc:
            self._set_error(str(exc))
            return False
        try:
            hello = json.loads(line) if line else {}
        except ValueError:
            hello = {}
        if hello.get("type") != "hello":
            reason = hello.get("error") if hello.get("type") == "error" else f"no hello (got {line[:80]!r})"
            self._set_error(f"galaxy remote did not start: {reason}")
            return False
        if hello.get("protocol") != 1:
            self._set_error(f"unsupported protocol {hello.get('protocol')!r}")
            return False
        self.hello = hello
        self.last_rx = time.monotonic()
        # Subscribe first; the link counts as up only once the node has answered,
        # so nothing a caller sends can overtake the start of the event stream.
        sub_id = 0
        with self._lock:
            self._conn = conn  # so that drop() and stop() can close it; requests wait for _up
        reason = "connection closed"
        came_up = False
        try:
            after = self._cursor(self.host.name, hello, lambda op, **args: self._ask(conn, op, **args))
            conn.send(json.dumps({"id": sub_id, "op": "subscribe", "after": after}).encode() + b"\n")
            while True:
                line = self._readline(conn)
                if not line:
                    break
                self.last_rx = time.monotonic()
                try:
                    msg = json.loads(line)
                except ValueError:
                    log.warning("%s: unreadable line %r", self.host.name, line[:120])
                    continue
                if msg.get("type") == "result" and msg.get("id") == sub_id and not self._up.is_set():
                    if not msg.get("ok"):
                        self._set_error(f"subscribe refused: {msg.get('error')}")
                        break
                    with self._lock:
                        self.error = None
                        self.down_since = None
                        self._up.set()
                    came_up = True
                    self._on_state(self.host.name, True, None)
                    continue
                if msg.get("type") == "result":
                    with self._lock:
                        fut = self._pending.pop(msg.get("id"), None)
                    if fut is not None and not fut.done():
                        if msg.get("ok"):
                            fut.set_result(msg.get("data"))
                        elif msg.get("busy"):
                            fut.set_exception(NodeBusy(str(msg.get("error")), msg.get("queued"), msg.get("limit")))
                        else:
                            fut.set_exception(NodeError(f"{self.host.name}: {msg.get('error')}"))
                    continue
                try:
                    self._on_message(self.host.name, msg)
                except Exception:
                    log.exception("%s: handling %s failed", self.host.name, msg.get("type"))
        except LineTooLong as exc:
            log.error("%s", exc)
            reason = str(exc)
            self.error = None
        except Exception as exc:
            reason = f"connection lost: {exc}"
        self._set_error(reason if self.error is None else self.error)
        return came_up

    def _ask(self, conn: _Conn, op: str, **args: Any) -> Any:
        """A request answered before the stream starts (nothing else is in flight yet)."""
        conn.send(json.dumps({"id": -1, "op": op, **args}, ensure_ascii=False).encode() + b"\n")
        while True:
            line = conn.readline()
            if not line:
                raise NodeUnavailable(f"{self.host.name}: connection closed")
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if isinstance(msg, dict) and msg.get("type") == "result" and msg.get("id") == -1:
                if msg.get("ok"):
                    return msg.get("data")
                raise NodeError(f"{self.host.name}: {msg.get('error')}")

    def _close(self, conn: _Conn) -> None:
        was_up = self._up.is_set()
        with self._lock:
            self._up.clear()
            self._conn = None
            pending, self._pending = self._pending, {}
            if self.down_since is None:
                self.down_since = time.monotonic()
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(NodeUnavailable(f"{self.host.name}: connection lost ({self.error})"))
        try:
            conn.close()
        except Exception:
            pass
        if was_up:
            self._on_state(self.host.name, False, self.error)

    def drop(self, reason: str) -> None:
        """Close the current connection (the loop reconnects)."""
        with self._lock:
            conn = self._conn
        if conn is not None:
            self.error = reason
            try:
                conn.close()
            except Exception:
                pass

    def stop(self) -> None:
        self._halt.set()
        self.drop("stopped")


class Router:
    def __init__(
        self,
        hosts: dict[str, Host],
        settings: RouterSettings,
        *,
        on_message: Callable[[str, dict[str, Any]], None],
        on_state: Callable[[str, bool, str | None], None],
        cursor: Callable[[str, dict[str, Any], Callable[..., Any]], int | None],
    ):
        self.settings = settings
        self.links = {
            name: NodeLink(h, settings, on_message=on_message, on_state=on_state, cursor=cursor)
            for name, h in hosts.items()
        }
        self._pool = ThreadPoolExecutor(max_workers=min(64, max(4, len(hosts))), thread_name_prefix="galaxy-fanout")
        self._halt = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name="galaxy-keeper", daemon=True)

    def start(self) -> None:
        for link in self.links.values():
            link.start()
        self._keeper.start()

    def stop(self) -> None:
        self._halt.set()
        for link in self.links.values():
            link.stop()
        for link in self.links.values():
            link.join(5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def link(self, name: str) -> NodeLink:
        try:
            return self.links[name]
        except KeyError:
            raise NodeUnavailable(f"{name} is not a fleet node") from None

    def request(self, name: str, op: str, **args: Any) -> Any:
        return self.link(name).request(op, **args)

    def fanout(self, names: list[str], op: str, args_for: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
        """The same op on several nodes in parallel: name -> result, or the exception it raised."""
        if len(names) == 1:
            name = names[0]
            try:
                return {name: self.request(name, op, **args_for(name))}
            except Exception as exc:
                return {name: exc}
        futures = {name: self._pool.submit(self.request, name, op, **args_for(name)) for name in names}
        out: dict[str, Any] = {}
        for name, fut in futures.items():
            try:
                out[name] = fut.result()
            except Exception as exc:
                out[name] = exc
        return out

    def _keep(self) -> None:
        """Ping idle links; drop those that stopped answering (a dead peer or network)."""
        interval = self.settings.ping_interval
        while not self._halt.wait(min(1.0, interval)):
            now = time.monotonic()
            for link in self.links.values():
                if not link.connected:
                    continue
                idle = now - link.last_rx
                if idle > self.settings.dead_after:
                    link.drop(f"no answer for {idle:.0f} s")
                elif idle > interval:
                    link.request_async("ping")
