"""A scripted OpenAI-compatible LLM server for tests (stdlib only).

It stands in for an LLM provider, the one boundary the tests cannot have for
real. It listens on 127.0.0.1 on a random port and answers
``POST /v1/chat/completions`` (streaming SSE or plain JSON) from a script::

    with ScriptedLLM() as llm:
        llm.script(Text("hello"), ToolCall("write", {...}), Text("done"))
        ...
        llm.chats[-1]["messages"]      # what the model was shown

Each chat request takes the next step of the script; with the script empty it
answers ``Text(default_reply)``. Requests whose system prompt marks them as
opencode's housekeeping (session titles, summaries) never take a step: they
get a short fixed answer, so a test scripts only the conversation it cares
about. Every request body is kept in ``requests``; the conversation ones also
in ``chats``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable


@dataclass
class Text:
    """A plain assistant answer, streamed in ``chunks`` pieces."""

    text: str
    chunks: int = 3
    delay: float = 0.0  # seconds between chunks
    prompt_tokens: int = 11
    completion_tokens: int = 7


@dataclass
class ToolCall:
    """The model calls one tool; opencode runs it and asks the model again."""

    name: str
    arguments: dict[str, Any]
    prompt_tokens: int = 13
    completion_tokens: int = 5


@dataclass
class Error:
    """The provider fails with an HTTP status and an OpenAI-style error body."""

    status: int = 500
    message: str = "scripted provider failure"
    type: str = "server_error"
    retry_after: float | None = None


@dataclass
class Hang:
    """Stream ``first`` and then keep the response open (sending SSE comments)
    until the client goes away, ``release()`` is called or ``limit`` passes."""

    first: str = "Working on it"
    limit: float = 60.0


@dataclass
class Recorded:
    body: dict[str, Any]
    kind: str  # "chat" or "housekeeping"
    at: float = field(default_factory=time.monotonic)


_HOUSEKEEPING_MARKERS = ("You are a title generator", "summarize", "Summarize")


def _system_text(body: dict[str, Any]) -> str:
    parts = []
    for msg in body.get("messages") or []:
        if msg.get("role") != "system":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(c.get("text", "") for c in content if isinstance(c, dict))
    return "\n".join(parts)


def message_text(msg: dict[str, Any]) -> str:
    """The text of one OpenAI chat message, whatever the content's shape."""
    content = msg.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(c.get("text", "") for c in content if isinstance(c, dict))
    return ""


class ScriptedLLM:
    def __init__(self, default_reply: str = "ok", host: str = "127.0.0.1") -> None:
        """``host``: where it listens (the lab tests give this host's lab address, 198.18.N.1,
        which the lab machines reach)."""
        self.default_reply = default_reply
        self.host = host
        self._lock = threading.Lock()
        self._script: list[Any] = []
        self._release = threading.Event()
        self.requests: list[Recorded] = []
        self._calls = 0
        self.hung = threading.Event()  # set once a Hang step has started streaming
        self.hang_ended = threading.Event()  # set when a Hang step saw the client go
        self.hang_ended_at = 0.0  # time.monotonic() of that
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # With the script empty: called with the latest user message's text; a step it
        # returns answers the request (None: the default reply). Lets many concurrent
        # orders each get the answer their own text asks for.
        self.responder: Callable[[str], Any] | None = None

    # -- scripting -----------------------------------------------------------
    def script(self, *steps: Any) -> None:
        with self._lock:
            self._script.extend(steps)

    def reset(self) -> None:
        """Forget the script, the recorded requests and any Hang (between tests)."""
        self._release.set()
        with self._lock:
            self._script.clear()
            self.requests.clear()
        self.hung.clear()
        self.hang_ended.clear()
        self._release = threading.Event()

    def release(self) -> None:
        """End every Hang step now."""
        self._release.set()

    @property
    def chats(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.body for r in self.requests if r.kind == "chat"]

    def pending(self) -> int:
        with self._lock:
            return len(self._script)

    def call_id(self) -> str:
        with self._lock:
            self._calls += 1
            return f"call_{self._calls}"

    def _next(self, body: dict[str, Any]) -> tuple[str, Any]:
        system = _system_text(body)
        kind = "housekeeping" if any(m in system for m in _HOUSEKEEPING_MARKERS) else "chat"
        with self._lock:
            self.requests.append(Recorded(body, kind))
            if kind == "housekeeping":
                return kind, Text("Scripted title", chunks=1)
            if self._script:
                return kind, self._script.pop(0)
            responder = self.responder
        if responder is not None:
            users = [m for m in body.get("messages") or [] if m.get("role") == "user"]
            step = responder(message_text(users[-1]) if users else "")
            if step is not None:
                return kind, step
        return kind, Text(self.default_reply)

    # -- life cycle ----------------------------------------------------------
    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The base URL an OpenAI client takes (ends in /v1)."""
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "ScriptedLLM":
        llm = self

        class Handler(_Handler):
            owner = llm

        self._server = ThreadingHTTPServer((self.host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="scripted-llm", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "ScriptedLLM":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    owner: ScriptedLLM
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._json(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
        else:
            self._json(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "malformed JSON"}})
            return
        _, step = self.owner._next(body)
        model = body.get("model", "scripted")
        stream = bool(body.get("stream"))
        if isinstance(step, Error):
            headers = {"Retry-After": str(step.retry_after)} if step.retry_after is not None else {}
            self._json(step.status, {"error": {"message": step.message, "type": step.type,
                                               "code": step.status}}, headers)
        elif not stream:
            self._complete(model, step)
        else:
            self._stream(model, step)

    # -- replies -------------------------------------------------------------
    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _complete(self, model: str, step: Any) -> None:
        message: dict[str, Any] = {"role": "assistant", "content": None}
        finish = "stop"
        if isinstance(step, ToolCall):
            message["tool_calls"] = [{"id": self.owner.call_id(), "type": "function",
                                      "function": {"name": step.name, "arguments": json.dumps(step.arguments)}}]
            finish = "tool_calls"
        else:
            message["content"] = step.text if isinstance(step, Text) else step.first
        usage = _usage(step)
        self._json(200, {"id": "chatcmpl-scripted", "object": "chat.completion", "created": int(time.time()),
                         "model": model, "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                         "usage": usage})

    def _stream(self, model: str, step: Any) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        base = {"id": "chatcmpl-scripted", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": model}

        def send(delta: dict[str, Any] | None = None, finish: str | None = None,
                 usage: dict[str, int] | None = None) -> None:
            chunk = dict(base, choices=[{"index": 0, "delta": delta or {}, "finish_reason": finish}])
            if usage is not None:
                chunk["usage"] = usage
            self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            self.wfile.flush()

        try:
            send({"role": "assistant", "content": ""})
            if isinstance(step, Text):
                for piece in _split(step.text, step.chunks):
                    if step.delay:
                        time.sleep(step.delay)
                    send({"content": piece})
                send(finish="stop", usage=_usage(step))
            elif isinstance(step, ToolCall):
                send({"tool_calls": [{"index": 0, "id": self.owner.call_id(), "type": "function",
                                      "function": {"name": step.name, "arguments": json.dumps(step.arguments)}}]})
                send(finish="tool_calls", usage=_usage(step))
            elif isinstance(step, Hang):
                send({"content": step.first})
                self.owner.hung.set()
                end = time.monotonic() + step.limit
                release = self.owner._release
                # A comment line every 50 ms finds out quickly when the client hangs up.
                while time.monotonic() < end and not release.wait(0.05):
                    self.wfile.write(b": still thinking\n\n")
                    self.wfile.flush()
                send(finish="stop", usage=_usage(step))
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            if isinstance(step, Hang):
                self.owner.hang_ended_at = time.monotonic()
                self.owner.hang_ended.set()


def _split(text: str, n: int) -> list[str]:
    n = max(1, min(n, len(text) or 1))
    size = -(-len(text) // n) if text else 0
    return [text[i:i + size] for i in range(0, len(text), size)] if text else [""]


def _usage(step: Any) -> dict[str, int]:
    p = getattr(step, "prompt_tokens", 3)
    c = getattr(step, "completion_tokens", 1)
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}
