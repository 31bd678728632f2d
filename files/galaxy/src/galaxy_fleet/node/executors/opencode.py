"""The ``opencode`` executor: an HTTP client of ``opencode serve``.

One order is one prompt in an opencode session:

1. the order's session key (``order.session``, chosen by the control plane)
   maps to an opencode session id, kept in a small JSON file in the state
   dir; an order without a key, or with ``options.new_session``, gets a
   fresh session (and the key is remapped);
2. the executor subscribes to the server's event stream (``GET /event``)
   *before* it sends the prompt (``POST /session/{id}/prompt_async``), so no
   event of the run is missed; tool calls and growing text become progress
   lines;
3. cancel or timeout aborts the run (``POST /session/{id}/abort``);
4. when the session goes idle the reply is read back over REST (the final
   state, not the event stream) and becomes the answer, with tokens, cost,
   model and agent in ``Result.details``.

Messages that belong to this order are the ones created after the newest
message that existed before the prompt: opencode's message ids sort by
creation time. Nothing here parses ``opencode run`` output.

Spec keys (``executors.opencode`` in the node config), all optional:
``url`` (default http://127.0.0.1:4096), ``username`` (default ``opencode``),
``password_file``, ``password_credential`` (systemd credential name, default
``opencode-password``), ``agent``, ``model`` ("provider/model"),
``agents`` and ``models`` (what an order's ``agent``/``model`` options may
choose besides those two; by default an order cannot change them, since the
agent decides which tools and permissions a run has),
``directory`` (used when an order names no project), ``provider_retries``
(give up after this many provider retries, default 3; -1 leaves it to
opencode), ``progress_interval`` (seconds between text progress lines,
default 2), ``request_timeout`` (seconds, default 15),
``permission_timeout`` (seconds a permission prompt waits for an answer
before it is denied, default 300), ``permission_unanswered`` (``deny``, the
default, or ``allow``: the answer to prompts of orders nobody can answer).

Permission prompts (opencode's ``permission: ask``) are relayed as
``permission_asked`` audit events and answered through
``galaxy_fleet.node.permissions``; see ``_Asks``.
The password comes from $OPENCODE_SERVER_PASSWORD, else the credential, else
``password_file``.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import queue
import socket
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from galaxy_fleet.config import OpenCodeSpec
from galaxy_fleet.node.executors import Executor, ExecutorError, Result, RunContext, cap_text
from galaxy_fleet.order import DONE, FAILED

if TYPE_CHECKING:
    from galaxy_fleet.config import Config
    from galaxy_fleet.order import Order

ABORTED = "MessageAbortedError"


class ServerError(Exception):
    """opencode answered with an HTTP error; ``status`` 0 means unreachable."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class _Client:
    """Small JSON-over-HTTP client; one short connection per call."""

    def __init__(self, url: str, auth: str | None, timeout: float):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ExecutorError(f"opencode url {url!r} is not an http(s) URL")
        self.url = url.rstrip("/")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.base = parts.path.rstrip("/")
        self.auth = auth
        self.timeout = timeout

    def connect(self, timeout: float | None) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.https else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        h = {"Accept": "application/json"}
        if self.auth:
            h["Authorization"] = self.auth
        h.update(extra or {})
        return h

    def path(self, path: str, query: dict[str, Any] | None = None) -> str:
        q = {k: v for k, v in (query or {}).items() if v is not None}
        return self.base + path + ("?" + urllib.parse.urlencode(q) if q else "")

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = self.headers({"Content-Type": "application/json"} if data is not None else None)
        conn = self.connect(timeout or self.timeout)
        try:
            conn.request(method, self.path(path, query), body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ServerError(0, _unreachable(self.url, exc)) from None
        finally:
            conn.close()
        if resp.status >= 400:
            raise ServerError(resp.status, _http_error(resp.status, raw, method, path))
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            raise ServerError(resp.status, f"opencode sent a non-JSON reply to {method} {path}") from None


def _unreachable(url: str, exc: BaseException) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, ConnectionRefusedError):
        reason = "connection refused"
    elif isinstance(exc, (socket.timeout, TimeoutError)):
        reason = "timed out"
    return f"opencode server at {url} is not reachable ({reason}); is opencode-serve running?"


def _http_error(status: int, raw: bytes, method: str, path: str) -> str:
    if status == 401:
        return "opencode server refused the credentials (HTTP 401); check OPENCODE_SERVER_PASSWORD / the password file"
    detail = ""
    try:
        data = json.loads(raw)
        if isinstance(data, dict):
            inner: dict[str, Any] = data["data"] if isinstance(data.get("data"), dict) else data
            detail = inner.get("message") or data.get("name") or ""
            if not detail and isinstance(data.get("errors"), list):
                detail = "; ".join(str(e.get("message", e)) for e in data["errors"][:3])
    except ValueError:
        detail = raw.decode("utf-8", "replace")[:200]
    route = path.split("?", maxsplit=1)[0]
    return f"opencode {method} {route} failed with HTTP {status}" + (f": {_first_line(detail)}" if detail else "")


def _first_line(text: Any, limit: int = 300) -> str:
    line = str(text or "").strip().splitlines()[0] if str(text or "").strip() else ""
    return line if len(line) <= limit else line[: limit - 1] + "…"


_PROVIDER_ERRORS = {
    "ContextOverflowError": "context overflow",
    "ContentFilterError": "content filter",
    "MessageOutputLengthError": "output length limit",
    "StructuredOutputError": "structured output",
}


def _error_text(err: Any) -> str:
    """One line for an opencode error object ({name, data: {message, ...}})."""
    if not isinstance(err, dict):
        return _first_line(err) or "unknown error"
    name = err.get("name") or "Error"
    data: dict[str, Any] = err["data"] if isinstance(err.get("data"), dict) else {}
    message = _first_line(data.get("message")) or name
    status = data.get("statusCode")
    if name == "APIError":
        return f"provider error{f' (HTTP {status})' if status else ''}: {message}"
    if name in _PROVIDER_ERRORS:
        return f"provider error ({_PROVIDER_ERRORS[name]}): {message}"
    if name == "ProviderAuthError":
        return f"provider {data.get('providerID', '?')} rejected the credentials: {message}"
    if name in ("UnknownError", "Error"):
        return message
    return f"{name}: {message}"


class _EventStream:
    """Reads ``GET /event`` (SSE) in a thread and queues the decoded events."""

    def __init__(self, client: _Client, directory: str | None):
        self.client = client
        self.directory = directory
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.ended = threading.Event()
        self.error: str | None = None
        self._conn: http.client.HTTPConnection | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="opencode-events", daemon=True)

    def start(self, timeout: float) -> None:
        self.begin()
        self.wait_connected(timeout)

    def begin(self) -> None:
        self._thread.start()

    def wait_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        # The server greets every subscriber with an event (server.connected).
        while not self.connected.wait(0.02):
            if self.ended.is_set() or time.monotonic() > deadline:
                self.close()
                raise ServerError(0, self.error or f"opencode event stream at {self.client.url} did not open")

    def _run(self) -> None:
        try:
            conn = self._conn = self.client.connect(self.client.timeout)
            conn.request(
                "GET",
                self.client.path("/event", {"directory": self.directory}),
                headers=self.client.headers({"Accept": "text/event-stream"}),
            )
            resp = conn.getresponse()
            if resp.status != 200:
                self.error = _http_error(resp.status, resp.read(), "GET", "/event")
                return
            if conn.sock is not None:
                conn.sock.settimeout(None)  # events may be minutes apart; close() ends the read
            data: list[bytes] = []
            while True:
                line = resp.readline()
                if not line:
                    break
                line = line.rstrip(b"\r\n")
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip())
                elif not line and data:
                    try:
                        event = json.loads(b"\n".join(data))
                    except ValueError:
                        event = None
                    data = []
                    if isinstance(event, dict):
                        self.connected.set()
                        self.events.put(event)
        except (OSError, http.client.HTTPException, AttributeError, ValueError) as exc:
            # AttributeError/ValueError: http.client reading from a socket that close() shut.
            if not self._closing:
                self.error = _unreachable(self.client.url, exc)
        finally:
            if self._conn is not None:
                self._conn.close()
            self.ended.set()
            self.events.put({"type": "_stream.ended"})

    def close(self) -> None:
        """Stop reading: shut the socket down; the reader thread closes it."""
        self._closing = True
        conn = self._conn
        sock = conn.sock if conn is not None else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class SessionStore:
    """Session key -> opencode session, in one JSON file written atomically."""

    _locks: ClassVar[dict[Path, threading.Lock]] = {}
    _locks_guard = threading.Lock()

    def __init__(self, path: Path):
        self.path = path
        with self._locks_guard:
            self.lock = self._locks.setdefault(path, threading.Lock())

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # a damaged map costs continuity, never an order
        sessions = data.get("sessions") if isinstance(data, dict) else None
        return sessions if isinstance(sessions, dict) else {}

    def get(self, key: str) -> dict[str, Any] | None:
        with self.lock:
            entry = self._read().get(key)
        return entry if isinstance(entry, dict) and isinstance(entry.get("id"), str) else None

    def put(self, key: str, session_id: str, directory: str | None) -> None:
        with self.lock:
            sessions = self._read()
            sessions[key] = {
                "id": session_id,
                "directory": directory,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".sessions-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": 1, "sessions": sessions}, fh, indent=1, sort_keys=True)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            dfd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)


class _KeyLocks:
    """One lock per session key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def acquire(self, key: str, cancelled: threading.Event) -> bool:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        while not lock.acquire(timeout=0.2):
            if cancelled.is_set():
                self._drop(key)
                return False
        return True

    def release(self, key: str) -> None:
        with self._guard:
            lock, _ = self._locks[key]
        lock.release()
        self._drop(key)

    def _drop(self, key: str) -> None:
        with self._guard:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


_session_locks = _KeyLocks()


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def _tool_summary(part: dict[str, Any], directory: str | None) -> str:
    state = part.get("state") or {}
    args: dict[str, Any] = state["input"] if isinstance(state.get("input"), dict) else {}
    target = (
        args.get("command")
        or args.get("filePath")
        or args.get("path")
        or args.get("pattern")
        or args.get("url")
        or args.get("description")
        or state.get("title")
        or ""
    )
    target = str(target)
    if directory and target.startswith(directory.rstrip("/") + "/"):
        target = target[len(directory.rstrip("/")) + 1 :]
    line = f"{part.get('tool', 'tool')} {target}".strip()
    return _first_line(line, 160)


class _Run:
    """The state of one order while it runs: progress, errors, the reply."""

    def __init__(
        self, executor: OpenCodeExecutor, ctx: RunContext, session_id: str, directory: str | None, marker: str
    ):
        self.ex = executor
        self.ctx = ctx
        self.sid = session_id
        self.children: set[str] = set()  # subagent sessions started by this run
        self.directory = directory
        self.marker = marker  # newest message id before the prompt ("" if none)
        self.parts: dict[str, str] = {}  # part id -> part type
        self.user_messages: set[str] = set()  # the prompt itself, not to be echoed
        self.text: dict[str, str] = {}  # text part id -> text so far
        self.text_sent: dict[str, int] = {}  # text part id -> chars already reported
        self.tools_seen: dict[str, str] = {}  # tool part id -> last reported status
        self.tool_names: list[str] = []
        self.session_error: str | None = None
        self.gave_up = False  # too many provider retries: abort and fail
        self.started = False
        self.last_text_progress = 0.0
        self.asks: _Asks | None = None  # the order's permission prompts

    def ours(self, message_id: Any) -> bool:
        return isinstance(message_id, str) and message_id > self.marker

    def handle(self, event: dict[str, Any]) -> str:
        """Take one event; "idle" or "check" when the run may be over (look over REST)."""
        kind = event.get("type")
        props = event.get("properties")
        if not isinstance(props, dict):
            return ""
        session = props.get("sessionID")
        if kind == "session.created":
            info = props.get("info") or {}
            if info.get("parentID") in self.children | {self.sid} and isinstance(info.get("id"), str):
                self.children.add(info["id"])
            return ""
        if session in self.children:
            # A subagent's work: show its tool calls, refuse its asks, keep its text out.
            if kind == "message.part.updated" and (props.get("part") or {}).get("type") == "tool":
                self._part(props["part"], prefix="[subagent] ")
            elif kind == "permission.asked" and self.asks is not None:
                self.asks.asked(props, subagent=True)
            elif kind in ("permission.asked", "question.asked"):
                self._refuse(kind, props)
            return ""
        if session not in (None, self.sid):
            return ""
        if kind == "message.part.updated":
            self._part(props.get("part") or {})
        elif kind == "message.part.delta":
            pid = str(props.get("partID"))
            if props.get("field") == "text" and self.parts.get(pid) == "text" and self.ours(props.get("messageID")):
                self.text[pid] = self.text.get(pid, "") + str(props.get("delta") or "")
                self._text_progress()
        elif kind == "message.updated":
            info = props.get("info") or {}
            if info.get("role") == "user" and self.ours(info.get("id")):
                self.user_messages.add(info["id"])
                self.started = True
        elif kind == "session.status":
            status = props.get("status") or {}
            if status.get("type") == "busy":
                self.started = True
            elif status.get("type") == "retry":
                return self._retry(status)
            elif status.get("type") == "idle":
                return "idle"
        elif kind == "session.idle":
            return "idle"
        elif kind == "session.error":
            err = props.get("error")
            if not (isinstance(err, dict) and err.get("name") == ABORTED) and self.session_error is None:
                self.session_error = _error_text(err)
            return "check"
        elif kind == "permission.asked" and self.asks is not None:
            self.asks.asked(props, subagent=False)
        elif kind in ("permission.asked", "question.asked"):
            self._refuse(kind, props)
        return ""

    def _part(self, part: dict[str, Any], prefix: str = "") -> None:
        pid, ptype = part.get("id"), part.get("type")
        if (
            not isinstance(pid, str)
            or not self.ours(part.get("messageID"))
            or part.get("messageID") in self.user_messages
        ):
            return
        self.parts[pid] = str(ptype)
        if ptype == "text" and not part.get("synthetic"):
            self.text[pid] = str(part.get("text") or "")
            done = bool((part.get("time") or {}).get("end"))
            self._text_progress(final=done)
        elif ptype == "tool":
            state = part.get("state") or {}
            status = state.get("status")
            call = pid  # part ids are unique; call ids repeat across messages
            previous = self.tools_seen.get(call)
            if status in ("running", "completed") and previous is None:
                self.tools_seen[call] = str(status)
                self.tool_names.append(str(part.get("tool")))
                self._flush_text(final=True)
                self.ctx.progress(f"{prefix}[tool] {_tool_summary(part, self.directory)}")
            elif status == "error" and previous != "error":
                if previous is None:
                    self.tool_names.append(str(part.get("tool")))
                self.tools_seen[call] = "error"
                self.ctx.progress(
                    f"{prefix}[tool] {_tool_summary(part, self.directory)} failed: "
                    f"{_first_line(state.get('error'), 200)}"
                )

    def _text_progress(self, final: bool = False) -> None:
        now = time.monotonic()
        if final or now - self.last_text_progress >= self.ex.progress_interval:
            self._flush_text(final)

    def _flush_text(self, final: bool = True) -> None:
        """Report the text that grew since the last report: whole lines while
        it grows (or a long unbroken stretch), everything once it is final."""
        for pid, text in self.text.items():
            sent = self.text_sent.get(pid, 0)
            fresh = text[sent:]
            if not fresh.strip():
                continue
            cut = fresh.rfind("\n") + 1
            if final or (len(fresh) >= 300 and cut == 0):
                chunk = fresh
            elif cut:
                chunk = fresh[:cut]
            else:
                continue
            self.text_sent[pid] = sent + len(chunk)
            lines = [ln.strip() for ln in chunk.splitlines() if ln.strip()]
            shown = " / ".join(lines)
            self.ctx.progress("[text] " + (shown if len(shown) <= 300 else shown[:299] + "…"))
            self.last_text_progress = time.monotonic()

    def _retry(self, status: dict[str, Any]) -> str:
        attempt = int(_number(status.get("attempt")))
        message = _first_line(status.get("message"), 200) or "provider error"
        self.ctx.progress(f"[retry] provider error: {message} (attempt {attempt})")
        limit = self.ex.provider_retries
        if limit >= 0 and attempt > limit:
            self.session_error = (
                f"provider error: {message} (gave up after {limit} {'retry' if limit == 1 else 'retries'})"
            )
            self.gave_up = True
            return "check"
        return ""

    def _refuse(self, kind: str, props: dict[str, Any]) -> None:
        rid = props.get("id")
        what = props.get("permission") or "a question"
        self.ctx.progress(f"[refused] opencode asked for {what}; headless runs never answer asks")
        if self.session_error is None:
            self.session_error = (
                f"opencode asked for permission '{what}'; set its permissions so that headless runs never ask"
            )
        try:
            if kind == "permission.asked":
                self.ex.client().call(
                    "POST",
                    f"/permission/{rid}/reply",
                    {"reply": "reject", "message": "Galaxy runs headless: no one can approve."},
                    {"directory": self.directory},
                )
            else:
                self.ex.client().call("POST", f"/question/{rid}/reject", None, {"directory": self.directory})
        except ServerError:
            pass


def _ask_detail(props: dict[str, Any]) -> str:
    """What a permission prompt is about, on one line: the command, else the paths."""
    raw_meta, raw_patterns = props.get("metadata"), props.get("patterns")
    meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
    patterns: list[Any] = raw_patterns if isinstance(raw_patterns, list) else []
    detail = (
        meta.get("command")
        or meta.get("filepath")
        or meta.get("filePath")
        or meta.get("path")
        or ", ".join(str(p) for p in patterns[:5])
        or meta.get("description")
        or ""
    )
    return _first_line(" ".join(str(detail).split()), 300)


class _Asks:
    """The permission prompts of one order (``permission: ask`` in opencode's config).

    A prompt is relayed and waited on when the order is interactive (its
    ``interactive`` option is true: someone in a chat can answer); the answer
    comes through node/permissions.py and is forwarded to opencode. ``always``
    allows the tool for the rest of this order only: opencode is told ``once``
    and later prompts for the same tool are allowed here without asking. No
    answer within ``permission_timeout`` seconds denies. An order nobody can
    answer follows ``permission_unanswered`` (deny or allow) at once. Every
    prompt and decision is an audit event: permission_asked,
    permission_answered (by, answer), permission_expired.
    """

    def __init__(self, executor: OpenCodeExecutor, ctx: RunContext, order: Order, directory: str | None):
        from galaxy_fleet.node.permissions import Prompts

        interactive = (order.options or {}).get("interactive", False)
        if not isinstance(interactive, bool):
            raise ExecutorError("option 'interactive' must be true or false")
        self.ex = executor
        self.ctx = ctx
        self.order = order
        self.directory = directory
        self.interactive = interactive
        self.prompts = Prompts(executor.config.spool_dir)
        self.waiting: dict[str, dict[str, Any]] = {}  # permission id -> prompt (with its deadline)
        self.seen: set[str] = set()
        self.always: dict[str, str] = {}  # tool -> who allowed it for the rest of the order
        self.decisions: list[dict[str, Any]] = []
        self.recorded = False

    def asked(self, props: dict[str, Any], subagent: bool) -> None:
        pid = props.get("id")
        if not isinstance(pid, str) or pid in self.seen:
            return  # a repeat (the stream reconnected) or nothing to answer
        self.seen.add(pid)
        tool = str(props.get("permission") or "?")
        detail = _ask_detail(props)
        raw_patterns = props.get("patterns")
        patterns = [str(p)[:300] for p in raw_patterns[:10]] if isinstance(raw_patterns, list) else []
        prompt = {
            "permission": pid,
            "tool": tool,
            "detail": detail,
            "patterns": patterns,
            "subagent": subagent,
            "from": self.order.sender or None,
        }
        if tool in self.always:
            self._apply(prompt, "always", self.always[tool], auto=True)
            return
        written = self.ex.audit(
            "permission_asked",
            severity="warning",
            order_id=self.order.id,
            user=self.order.sender or None,
            message=f"{tool}: {detail}",
            permission=pid,
            tool=tool,
            detail=detail,
            patterns=patterns,
            subagent=subagent,
            interactive=self.interactive,
            timeout=self.ex.permission_timeout if self.interactive else None,
        )
        if not written:
            self._apply(
                prompt, "deny", "node", reason="the prompt could not be written to the audit trail", person=False
            )
            return
        if not self.interactive:
            answer = "once" if self.ex.permission_unanswered == "allow" else "deny"
            self._apply(
                prompt,
                answer,
                "policy",
                person=False,
                reason=f"nobody can answer prompts of this order; node policy: {self.ex.permission_unanswered}",
            )
            return
        try:
            self.prompts.ask(self.order.id, pid, {**prompt, "timeout": self.ex.permission_timeout})
            self.recorded = True
        except (OSError, ValueError) as exc:
            self._apply(prompt, "deny", "node", reason=f"the prompt could not be recorded: {exc}", person=False)
            return
        self.waiting[pid] = {**prompt, "deadline": time.monotonic() + self.ex.permission_timeout}
        self.ctx.progress(
            f"[permission] {tool} {detail}: waiting for an answer (denied after {self.ex.permission_timeout:g} s)"
        )

    def catch_up(self, client: _Client, run: _Run) -> None:
        """After the event stream broke: the prompts of this run that were asked meanwhile."""
        try:
            listed = client.call("GET", "/permission", query={"directory": self.directory}) or []
        except ServerError:
            return
        for props in listed if isinstance(listed, list) else []:
            if isinstance(props, dict) and props.get("sessionID") in run.children | {run.sid}:
                self.asked(props, subagent=props.get("sessionID") != run.sid)

    def service(self) -> None:
        """Forward the answers that came; deny the prompts whose time ran out."""
        for pid, prompt in list(self.waiting.items()):
            decision = self.prompts.answered(self.order.id, pid)
            if decision is None and time.monotonic() >= prompt["deadline"]:
                try:
                    decision, _ = self.prompts.decide(self.order.id, pid, "deny", "timeout", expired=True)
                except (OSError, ValueError, LookupError):
                    decision = {"answer": "deny", "by": "timeout", "expired": True}
            if decision is None:
                continue
            del self.waiting[pid]
            if decision.get("expired"):
                self._apply(
                    prompt, "deny", "timeout", expired=True, reason=f"no answer within {self.ex.permission_timeout:g} s"
                )
            else:
                self._apply(prompt, str(decision["answer"]), str(decision.get("by") or "?"))

    def _apply(
        self,
        prompt: dict[str, Any],
        answer: str,
        by: str,
        *,
        reason: str | None = None,
        expired: bool = False,
        auto: bool = False,
        person: bool = True,
    ) -> None:
        pid, tool, detail = prompt["permission"], prompt["tool"], prompt["detail"]
        if answer == "always":
            self.always.setdefault(tool, by)
        body: dict[str, Any] = {"reply": "reject" if answer == "deny" else "once"}
        if answer == "deny":
            body["message"] = (
                f"Permission to use {tool} was denied: {reason}."
                if reason
                else f"Permission to use {tool} was denied by {by}."
            )
        failure = None
        try:
            self.ex.client().call(
                "POST", f"/permission/{urllib.parse.quote(pid)}/reply", body, {"directory": self.directory}
            )
        except ServerError as exc:
            failure = str(exc)  # e.g. the run was aborted and the prompt is gone
        fields: dict[str, Any] = {
            "order_id": self.order.id,
            "permission": pid,
            "tool": tool,
            "detail": detail,
            "answer": answer,
        }
        if expired:
            self.ex.audit(
                "permission_expired",
                severity="warning",
                user=self.order.sender or None,
                message=f"{tool}: {reason}; denied",
                after=self.ex.permission_timeout,
                **fields,
            )
        else:
            # ``user`` is who decided when a person did; the order's sender when the node's policy did.
            user = by if person else self.order.sender or None
            self.ex.audit(
                "permission_answered",
                severity="warning" if answer == "deny" else "info",
                user=user,
                message=f"{tool}: {answer} by {by}" + (f" ({reason})" if reason else ""),
                by=by,
                auto=auto,
                reason=reason,
                forwarded=failure is None,
                **fields,
            )
        self.decisions.append(
            {
                "permission": pid,
                "tool": tool,
                "detail": detail,
                "answer": answer,
                "by": by,
                "expired": expired,
                "auto": auto,
                "reason": reason,
            }
        )
        verb = {"once": "allowed once", "always": "allowed for this order", "deny": "denied"}[answer]
        why = reason or ("earlier answer" if auto else None)
        self.ctx.progress(
            f"[permission] {tool} {detail}: {verb} by {by}"
            + (f" ({why})" if why else "")
            + (f"; opencode did not take the answer: {failure}" if failure else "")
        )

    def annotate(self, result: Result) -> None:
        """The decisions go into the result; denied prompts are named in the answer."""
        if not self.decisions:
            return
        result.details["permissions"] = self.decisions
        denied = [d for d in self.decisions if d["answer"] == "deny"]
        if denied:
            lines = [f"- {d['tool']} `{d['detail']}`: " + (d["reason"] or f"denied by {d['by']}") for d in denied]
            note = "Permission prompts denied:\n" + "\n".join(lines)
            result.output = (result.output.rstrip() + "\n\n" if result.output.strip() else "") + note

    def close(self) -> None:
        for prompt in self.waiting.values():  # the run ended (cancel, timeout) before an answer came
            self.ex.audit(
                "permission_expired",
                severity="warning",
                order_id=self.order.id,
                user=self.order.sender or None,
                permission=prompt["permission"],
                tool=prompt["tool"],
                detail=prompt["detail"],
                answer="deny",
                message=f"{prompt['tool']}: the order ended before an answer came",
            )
        self.waiting.clear()
        if self.recorded:
            try:
                self.prompts.clear(self.order.id)
            except OSError:
                pass


class OpenCodeExecutor(Executor):
    type = "opencode"

    def __init__(self, name: str, spec: OpenCodeSpec, config: Config):
        super().__init__(name, spec, config)
        self.url = spec.url
        self.username = spec.username or os.environ.get("OPENCODE_SERVER_USERNAME") or "opencode"
        self.provider_retries = spec.provider_retries
        self.progress_interval = spec.progress_interval
        self.request_timeout = spec.request_timeout
        if spec.model:
            _split_model(spec.model)
        self.choices: dict[str, set[str]] = {}
        for key, values in (("agent", spec.agents), ("model", spec.models)):
            if key == "model":
                for v in values:
                    _split_model(v)
            own = getattr(spec, key)
            self.choices[key] = set(values) | ({own} if own else set())
        _Client(self.url, None, 1)  # validates the URL now, not at the first order
        self._permission_settings(name, spec)

    # -- configuration -------------------------------------------------------
    def password(self) -> str | None:
        from galaxy_fleet.config import secret

        value = secret(self.spec.password_credential, "OPENCODE_SERVER_PASSWORD")
        if value:
            return value
        path = self.spec.password_file
        if path:
            try:
                return Path(path).read_text(encoding="utf-8").strip() or None
            except OSError as exc:
                raise ServerError(0, f"cannot read the opencode password file {path}: {exc.strerror}") from None
        return None

    def client(self) -> _Client:
        pw = self.password()
        auth = None
        if pw:
            auth = "Basic " + base64.b64encode(f"{self.username}:{pw}".encode()).decode()
        return _Client(self.url, auth, self.request_timeout)

    def _permission_settings(self, name: str, spec: OpenCodeSpec) -> None:
        """``permission_timeout`` and ``permission_unanswered`` (see _Asks)."""
        self.permission_timeout = spec.permission_timeout
        self.permission_unanswered = spec.permission_unanswered
        self._audit: Any = None
        self._audit_lock = threading.Lock()

    def audit(self, type: str, **fields: Any) -> bool:
        """Append one event to the node's audit trail; False if it could not be written."""
        with self._audit_lock:
            if self._audit is None:
                # Deferred: the worker module imports the executors package.
                from galaxy_fleet.audit.writer import open_audit

                self._audit = open_audit(self.config)
            log = self._audit
        try:
            log.append(type, **fields)
            return True
        except (OSError, ValueError):
            return False

    def close(self) -> None:
        with self._audit_lock:
            log, self._audit = self._audit, None
        if log is not None:
            log.close()

    def sessions(self, ctx: RunContext) -> SessionStore:
        return SessionStore(Path(ctx.state_dir) / f"opencode-sessions-{self.name}.json")

    # -- the run -------------------------------------------------------------
    def run(self, order: Order, ctx: RunContext) -> Result:
        options = order.options or {}
        details: dict[str, Any] = {"session_key": order.session}
        try:
            agent = self._choice(options, "agent")
            model = self._choice(options, "model")
            model_ref = _split_model(model) if model else None
            directory = ctx.workdir or self.spec.directory or None
            client = self.client()
            if not order.session:
                return self._run(order, ctx, client, agent, model_ref, directory, True, details)
            # One order at a time per session key: a second prompt would interleave.
            key = f"{self.name}:{order.session}"
            if not _session_locks.acquire(key, ctx.cancelled):
                return Result(
                    status=ctx.stopped_status(),
                    details=details,
                    error=f"stopped ({ctx.cancel_reason}) while waiting for session {order.session}",
                )
            try:
                return self._run(
                    order, ctx, client, agent, model_ref, directory, bool(options.get("new_session")), details
                )
            finally:
                _session_locks.release(key)
        except ServerError as exc:
            return Result(status=FAILED, error=str(exc), details=details)
        except ExecutorError as exc:
            return Result(status=FAILED, error=str(exc), details=details)

    def _choice(self, options: dict[str, Any], key: str) -> str | None:
        """The agent or model for this order: the node's, or one the order picks from ``agents``/``models``."""
        value = _opt(options, self.spec, key)
        if value is None or value == getattr(self.spec, key) or value in self.choices[key]:
            return value
        allowed = ", ".join(sorted(self.choices[key])) or "none"
        raise ExecutorError(
            f"refused: this node does not let an order choose the {key} {value!r} "
            f"(allowed: {allowed}; executors.{self.name}.{key}s lists more)"
        )

    def _session(
        self,
        client: _Client,
        order: Order,
        ctx: RunContext,
        directory: str | None,
        fresh: bool,
        details: dict[str, Any],
    ) -> tuple[str, str]:
        """The order's session id and the newest message id in it before the prompt."""
        store = self.sessions(ctx) if order.session else None
        entry = store.get(order.session) if store and order.session and not fresh else None
        if entry and (entry.get("directory") or None) == directory:
            try:
                # One call checks that the session still exists and finds the marker.
                newest = (
                    client.call(
                        "GET",
                        f"/session/{urllib.parse.quote(entry['id'])}/message",
                        query={"directory": directory, "limit": 1},
                    )
                    or []
                )
                details["session_new"] = False
                ctx.progress(f"continuing opencode session {entry['id']}")
                return entry["id"], newest[-1]["info"]["id"] if newest else ""
            except ServerError as exc:
                if exc.status != 404:
                    raise
                ctx.progress(f"opencode session {entry['id']} is gone; starting a new one")
        elif entry:
            ctx.progress("the project changed; starting a new opencode session")
        title = f"Galaxy {order.session}" if order.session else f"Galaxy order {order.id}"
        info = client.call("POST", "/session", {"title": title}, {"directory": directory})
        sid = info.get("id") if isinstance(info, dict) else None
        if not isinstance(sid, str):
            raise ServerError(0, "opencode created a session but sent no id")
        if store and order.session:
            store.put(order.session, sid, directory)
        details["session_new"] = True
        ctx.progress(f"new opencode session {sid}" + (f" in {directory}" if directory else ""))
        return sid, ""

    def _run(
        self,
        order: Order,
        ctx: RunContext,
        client: _Client,
        agent: str | None,
        model_ref: tuple[str, str] | None,
        directory: str | None,
        fresh: bool,
        details: dict[str, Any],
    ) -> Result:
        # Subscribe first (it needs only the directory) while the session is looked up.
        asks = _Asks(self, ctx, order, directory)
        stream = _EventStream(client, directory)
        stream.begin()
        try:
            sid, marker = self._session(client, order, ctx, directory, fresh, details)
            details.update({"opencode_session": sid, "directory": directory})
            q = {"directory": directory}
            path = f"/session/{urllib.parse.quote(sid)}"
            run = _Run(self, ctx, sid, directory, marker)
            run.asks = asks
            stream.wait_connected(self.request_timeout)
            body: dict[str, Any] = {"parts": [{"type": "text", "text": order.payload}]}
            if agent:
                body["agent"] = agent
            if model_ref:
                body["model"] = {"providerID": model_ref[0], "modelID": model_ref[1]}
            client.call("POST", path + "/prompt_async", body, q)
            return self._follow(ctx, client, stream, run, path, q, details)
        finally:
            stream.close()
            asks.close()

    def _follow(
        self,
        ctx: RunContext,
        client: _Client,
        stream: _EventStream,
        run: _Run,
        path: str,
        q: dict[str, Any],
        details: dict[str, Any],
    ) -> Result:
        streams = [stream]
        try:
            return self._wait(ctx, client, streams, run, path, q, details)
        finally:
            streams[-1].close()

    def _wait(
        self,
        ctx: RunContext,
        client: _Client,
        streams: list[_EventStream],
        run: _Run,
        path: str,
        q: dict[str, Any],
        details: dict[str, Any],
    ) -> Result:
        stream = streams[-1]
        sent = time.monotonic()
        last_check = sent
        check = ""
        reconnects = 0
        while True:
            if not ctx.cancelled.is_set() and ctx.remaining() <= 0:
                ctx.cancel("timeout")
            if ctx.cancelled.is_set():
                return self._stop(ctx, client, run, path, q, details)
            try:
                event = stream.events.get(timeout=0.1)
            except queue.Empty:
                event = None
            if event is not None:
                if event.get("type") == "_stream.ended":
                    # The stream broke: the server died, restarted or hung up.
                    try:
                        client.call("GET", "/global/health", timeout=3)
                    except ServerError as exc:
                        raise ServerError(exc.status, f"opencode server went away mid-run: {exc}") from None
                    reconnects += 1
                    if reconnects > 5:
                        raise ServerError(0, "opencode keeps closing its event stream; giving up")
                    stream.close()
                    stream = _EventStream(client, run.directory)
                    streams.append(stream)
                    stream.start(timeout=self.request_timeout)
                    check = "check"
                    if run.asks is not None:
                        run.asks.catch_up(client, run)
                else:
                    check = run.handle(event) or check
            if run.asks is not None and run.asks.waiting:
                run.asks.service()
            now = time.monotonic()
            if now - last_check >= 5.0:
                check = check or "check"  # a slow poll in case an event was lost
            if not check:
                continue
            signal, check = check, ""
            last_check = now
            if run.gave_up:
                self._abort(client, path, q)
                return self._finish(ctx, client, run, path, q, details)
            if signal != "idle":
                status = (client.call("GET", "/session/status", query=q) or {}).get(run.sid) or {}
                if status.get("type") in ("busy", "retry"):
                    continue
            messages = self._messages(client, run, path, q)
            assistants = [m for m in messages if (m.get("info") or {}).get("role") == "assistant"]
            if assistants and _settled(assistants[-1]):
                return self._finish(ctx, client, run, path, q, details, messages)
            if run.session_error and not assistants:
                return self._finish(ctx, client, run, path, q, details, messages)
            if signal == "idle":
                # Idle is announced before the last message update lands; look again soon.
                check, last_check = "", now - 4.8
            if not messages and time.monotonic() - sent > 30:
                return Result(status=FAILED, details=details, error="opencode accepted the prompt but never started it")

    def _messages(
        self, client: _Client, run: _Run, path: str, q: dict[str, Any], timeout: float | None = None
    ) -> list[dict[str, Any]]:
        # The newest messages are enough unless the run made more than a page of them.
        page = client.call("GET", path + "/message", query={**q, "limit": 64}, timeout=timeout) or []
        ids = [(m.get("info") or {}).get("id") or "" for m in page]
        if len(page) >= 64 and min(ids) > run.marker:
            page = client.call("GET", path + "/message", query=q, timeout=timeout) or []
        return [m for m in page if run.ours((m.get("info") or {}).get("id"))]

    def _abort(self, client: _Client, path: str, q: dict[str, Any], timeout: float = 5) -> str | None:
        try:
            client.call("POST", path + "/abort", None, q, timeout=timeout)
            return None
        except ServerError as exc:
            return str(exc)

    def _stop(
        self, ctx: RunContext, client: _Client, run: _Run, path: str, q: dict[str, Any], details: dict[str, Any]
    ) -> Result:
        # Bounded so that a cancelled order is answered within two seconds even
        # when opencode is slow: the abort is sent at once, whatever happens after.
        begun = time.monotonic()
        failure = self._abort(client, path, q, timeout=1.2)
        result = self._finish(
            ctx, client, run, path, q, details, tolerate=True, timeout=max(0.2, 1.7 - (time.monotonic() - begun))
        )
        result.status = ctx.stopped_status()
        what = "timed out" if ctx.cancel_reason == "timeout" else "cancelled"
        result.error = f"{what}; opencode run aborted" if failure is None else f"{what}; abort failed: {failure}"
        return result

    def _finish(
        self,
        ctx: RunContext,
        client: _Client,
        run: _Run,
        path: str,
        q: dict[str, Any],
        details: dict[str, Any],
        messages: list[dict[str, Any]] | None = None,
        tolerate: bool = False,
        timeout: float | None = None,
    ) -> Result:
        run._flush_text(final=True)
        if messages is None:
            try:
                messages = self._messages(client, run, path, q, timeout)
            except ServerError:
                if not tolerate:
                    raise
                messages = []
        assistants = [m for m in messages if (m.get("info") or {}).get("role") == "assistant"]
        details.update(_figures(assistants))
        users = [m for m in messages if (m.get("info") or {}).get("role") == "user"]
        if users and assistants:
            begun = _number(((users[0].get("info") or {}).get("time") or {}).get("created"))
            ended = _number(((assistants[-1].get("info") or {}).get("time") or {}).get("completed"))
            if begun and ended >= begun:
                details["opencode_ms"] = int(ended - begun)  # the server's own time for the prompt
        details["tools"] = run.tool_names
        answer = ""
        for msg in reversed(assistants):
            answer = _text_of(msg)
            if answer:
                break
        if not messages:  # the server did not answer in time: what the events showed
            answer = "\n\n".join(t.strip() for t in run.text.values() if t.strip())
        error = run.session_error
        for msg in assistants:
            err = (msg.get("info") or {}).get("error")
            if err and not (isinstance(err, dict) and err.get("name") == ABORTED):
                error = _error_text(err)
        output, truncated = cap_text(answer.encode("utf-8"), ctx.max_output_bytes)
        result = Result(
            status=DONE, output=output, bytes_out=len(answer.encode("utf-8")), truncated=truncated, details=details
        )
        if error:
            result.status, result.error = FAILED, error
        elif not answer.strip():
            if run.tool_names:
                result.output = "(no text answer; the agent ran: " + ", ".join(run.tool_names) + ")"
            else:
                result.status = FAILED
                result.error = "opencode finished without an answer"
        if run.asks is not None:
            run.asks.annotate(result)
        return result


def _opt(options: dict[str, Any], spec: OpenCodeSpec, key: str) -> str | None:
    value = options.get(key, getattr(spec, key))
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ExecutorError(f"option {key!r} must be a string")
    return value


def _split_model(model: str) -> tuple[str, str]:
    provider, sep, model_id = model.partition("/")
    if not sep or not provider or not model_id:
        raise ExecutorError(f"model {model!r} must look like 'provider/model'")
    return provider, model_id


def _settled(message: dict[str, Any]) -> bool:
    info = message.get("info") or {}
    return bool((info.get("time") or {}).get("completed") or info.get("error"))


def _text_of(message: dict[str, Any]) -> str:
    texts = [
        str(p.get("text") or "")
        for p in message.get("parts") or []
        if p.get("type") == "text" and not p.get("synthetic") and not p.get("ignored")
    ]
    return "\n\n".join(t.strip() for t in texts if t.strip())


def _figures(assistants: list[dict[str, Any]]) -> dict[str, Any]:
    """Token and cost totals over the order's assistant messages."""
    tokens = {"input": 0, "output": 0, "reasoning": 0, "cache_read": 0, "cache_write": 0}
    cost = 0.0
    last: dict[str, Any] = {}
    for msg in assistants:
        info = msg.get("info") or {}
        t = info.get("tokens") or {}
        cache = t.get("cache") or {}
        tokens["input"] += int(_number(t.get("input")))
        tokens["output"] += int(_number(t.get("output")))
        tokens["reasoning"] += int(_number(t.get("reasoning")))
        tokens["cache_read"] += int(_number(cache.get("read")))
        tokens["cache_write"] += int(_number(cache.get("write")))
        cost += _number(info.get("cost"))
        last = info
    out: dict[str, Any] = {
        "tokens": tokens,
        # Flat figures for accounting: everything the model read, everything it wrote.
        "tokens_in": tokens["input"] + tokens["cache_read"] + tokens["cache_write"],
        "tokens_out": tokens["output"] + tokens["reasoning"],
        "cost": round(cost, 10),
        "steps": len(assistants),
    }
    if last:
        provider, model_id = last.get("providerID"), last.get("modelID")
        out.update(
            {
                "provider": provider,
                "model_id": model_id,
                "model": f"{provider}/{model_id}" if provider and model_id else model_id,
                "agent": last.get("agent") or last.get("mode"),
                "finish": last.get("finish"),
            }
        )
    return out
