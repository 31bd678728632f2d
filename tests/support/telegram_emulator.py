"""The real ``telegram-test-api`` emulator (npm) on loopback, made usable by python-telegram-bot 22.

``mk/telegram.mk`` installs the pinned package into ``.tools/telegram-test-api``.
``TelegramEmulator`` starts it with node on 127.0.0.1 at a free port, and puts a
small **compatibility proxy** (a stdlib HTTP server, also on loopback, in this
process) in front of its Bot API. The bot talks to the proxy; the package itself
is never patched. The proxy fixes the package's known gaps against PTB 22:

- ``getMe`` lacks ``is_bot``: added, with the other required User fields;
- ``date`` in milliseconds: converted to seconds in every message handed out;
- edits return ``null``: the edited Message is returned, as Telegram does;
- an edit without a keyboard keeps the old one: it is dropped, as Telegram does;
- callback queries lack ``chat_instance``: added (derived from the chat id);
- ``getUpdates`` ignores ``timeout`` and ``offset``: implemented; updates stay
  until a later ``offset`` confirms them, an empty poll waits up to ``timeout``;
- ``sendChatAction``, ``setMyCommands``/``getMyCommands``, ``sendDocument``
  are missing: implemented by recording them (``chat_actions``, ``commands``,
  ``documents``); a document also goes into the chat as a message with a
  ``document`` field, so the emulator's history shows it in order;
- ``null`` results of boolean methods: ``true``;
- ``setWebhook``/``deleteWebhook``/``getWebhookInfo``: the package would push raw,
  unfixed updates without the secret header; here they are recorded
  (``webhook_calls``) and, while a webhook is set, the proxy plays Telegram's
  side: it pushes each update (fixed as above) to the webhook URL with the
  ``X-Telegram-Bot-Api-Secret-Token`` header, in order, again until it gets a
  2xx; ``getUpdates`` is refused with 409 as Telegram does.

For the flood-limit tests the proxy records every call with its arrival time,
chat and answer (``requests``), and ``flood(n, retry_after)`` makes it answer
the next n sendMessage/editMessageText calls with Telegram's 429
(``{"ok": false, "error_code": 429, "description": "Too Many Requests: retry
after N", "parameters": {"retry_after": N}}``) without passing them on.

The user side goes straight to the emulator's own JSON API: ``/sendMessage``,
``/sendCommand``, ``/sendCallback``, ``/getUpdatesHistory`` (``TelegramUser``).

Everything is torn down on ``stop()`` / leaving the context, even after a
failed test: the node process group is killed and the proxy shut down.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(os.environ.get("GALAXY_TELEGRAM_TEST_API",
                              REPO / ".tools" / "telegram-test-api" / "node_modules" / "telegram-test-api"))
START_TIMEOUT = 20.0
BOT_USER = {"id": 666, "is_bot": True, "first_name": "Test First name", "username": "TestNameBot",
            "can_join_groups": True, "can_read_all_group_messages": False, "supports_inline_queries": False}

# Runs the package as published: its module exports the TelegramServer class.
_LAUNCHER = r"""
const TelegramServer = require(process.argv[1]);
const server = new TelegramServer({host: '127.0.0.1', port: Number(process.argv[2]),
                                   storeTimeout: Number(process.argv[3])});
server.start().then(() => process.stdout.write('ready\n'),
                    (err) => { process.stderr.write(String(err) + '\n'); process.exit(3); });
const stop = () => server.stop().then(() => process.exit(0), () => process.exit(1));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
"""


class EmulatorMissing(RuntimeError):
    pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chat(params: dict[str, Any]) -> int | None:
    try:
        return int(params["chat_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _seconds(date: Any) -> Any:
    """The emulator stamps bot messages with Date.now() (ms); Telegram uses seconds."""
    if isinstance(date, (int, float)) and date > 10_000_000_000:
        return int(date // 1000)
    return date


@dataclass
class Document:
    chat_id: int
    filename: str
    content: bytes
    caption: str | None
    message_id: int
    time: float


@dataclass
class ChatAction:
    chat_id: int
    action: str
    time: float


@dataclass
class Call:
    """A Bot API call as it reached the proxy."""
    method: str
    time: float
    chat_id: int | None
    status: int
    text: str = ""


@dataclass
class FloodRule:
    count: int
    retry_after: int
    methods: tuple[str, ...]
    chat_id: int | None = None
    every: int = 1  # refuse every n-th matching call (1: each one until count is used up)
    seen: int = 0


WEBHOOK_SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"


def post_update(url: str, update: dict[str, Any], secret: str | None, timeout: float = 10) -> tuple[int, bytes]:
    """POST one Update to a bot's webhook as Telegram does (JSON, the secret header); (status, body)."""
    parsed = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port or 80, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers[WEBHOOK_SECRET_HEADER] = secret
    try:
        conn.request("POST", parsed.path or "/", body=json.dumps(update).encode(), headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@dataclass
class BotMessage:
    """A message the bot sent, as the chat shows it now (edits applied)."""
    message_id: int
    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None
    document: dict[str, Any] | None
    time: float
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def buttons(self) -> list[dict[str, Any]]:
        rows = (self.reply_markup or {}).get("inline_keyboard") or []
        return [b for row in rows for b in row]

    def button(self, label_part: str) -> dict[str, Any]:
        for b in self.buttons:
            if label_part.lower() in b.get("text", "").lower():
                return b
        raise AssertionError(f"no button matching {label_part!r} on message {self.message_id}: "
                             f"{[b.get('text') for b in self.buttons]}")


class _EmulatorConnection:
    """One keep-alive HTTP connection per proxy thread to the emulator."""

    def __init__(self, port: int):
        self.port = port
        self.local = threading.local()

    def request(self, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in range(2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            try:
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")


class CompatProxy:
    """The Bot API side of the emulator, fixed up for PTB 22 (see the module docstring)."""

    def __init__(self, emulator_port: int, host: str = "127.0.0.1"):
        self.upstream = _EmulatorConnection(emulator_port)
        self.lock = threading.Condition()
        self.pending: dict[str, list[dict[str, Any]]] = {}  # token -> updates not yet confirmed
        self.sent: dict[tuple[int, int], dict[str, Any]] = {}  # (chat, message id) -> Message
        self.chat_actions: list[ChatAction] = []
        self.commands: dict[str, list[dict[str, Any]]] = {}  # scope (JSON) -> commands
        self.documents: list[Document] = []
        self.callback_answers: list[dict[str, Any]] = []
        self.calls: list[tuple[str, float]] = []  # (method, time) of every Bot API call
        # For timing (bench/bench_bot.py): when each update first reached the bot, and when the
        # bot sent each message (time the request arrived, chat id, text or caption).
        self.first_delivery: dict[int, tuple[float, dict[str, Any]]] = {}
        self.outgoing: list[tuple[float, int, str]] = []
        self.requests: list[Call] = []  # every call: arrival time, chat, the status answered
        self.floods: list[FloodRule] = []
        self.webhook_calls: list[dict[str, Any]] = []  # setWebhook/deleteWebhook as the bot made them
        self.webhooks: dict[str, dict[str, Any]] = {}  # token -> the webhook set now
        self.pushed: list[tuple[float, int, int]] = []  # (time, update_id, status) of webhook pushes
        self.pusher: threading.Thread | None = None
        self.stopping = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body are written separately: without this, Nagle's algorithm and the
            # client's delayed ACK hold every keep-alive response for ~40 ms.
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                proxy._handle(self)

            def do_POST(self) -> None:
                proxy._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the request line holds the token

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, name="telegram-compat-proxy", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()
        self.server.shutdown()
        self.server.server_close()

    def kick(self) -> None:
        """Wake long polls: the user side just added an update."""
        with self.lock:
            self.lock.notify_all()

    # -- request plumbing ---------------------------------------------------
    def _handle(self, req: BaseHTTPRequestHandler) -> None:
        length = int(req.headers.get("Content-Length") or 0)
        body = req.rfile.read(length) if length else b""
        parsed = urllib.parse.urlsplit(req.path)
        parts = parsed.path.strip("/").split("/")
        if len(parts) != 2 or not parts[0].startswith("bot"):
            return self._reply(req, 404, {"ok": False, "error_code": 404, "description": "Not Found"})
        token, method = parts[0][3:], parts[1]
        ctype = req.headers.get("Content-Type", "")
        arrived = time.time()
        self.calls.append((method, arrived))
        params: dict[str, Any] = {}
        try:
            params = self._params(ctype, body, parsed.query)
            flooded = self._flooded(method, params)
            if flooded is not None:
                status, payload = 429, {"ok": False, "error_code": 429,
                                        "description": f"Too Many Requests: retry after {flooded}",
                                        "parameters": {"retry_after": flooded}}
            else:
                if method in ("sendMessage", "sendDocument"):
                    with self.lock:
                        self.outgoing.append((arrived, int(params.get("chat_id", 0)),
                                              str(params.get("text") or params.get("caption") or "")))
                fix = getattr(self, f"_m_{method}", None)
                if fix is not None:
                    status, payload = fix(token, params, req.command, parsed.path, body, ctype)
                else:
                    status, payload = self._forward(req.command, req.path, body, ctype)
        except Exception as exc:  # a broken proxy must show up in the test, not hang the bot
            status, payload = 500, {"ok": False, "error_code": 500, "description": f"compat proxy: {exc!r}"}
        if method != "getUpdates":
            with self.lock:
                self.requests.append(Call(method, arrived, _chat(params), status,
                                          str(params.get("text") or params.get("caption") or "")))
        self._reply(req, status, payload)

    # -- flood limits (429) ------------------------------------------------------
    def flood(self, count: int, retry_after: int = 1, methods: tuple[str, ...] = ("sendMessage", "editMessageText"),
              chat_id: int | None = None, every: int = 1) -> None:
        """Answer the next ``count`` calls of ``methods`` (to ``chat_id``, or any chat) with 429; with
        ``every`` n, only every n-th of them (so that the 429s fall on different messages)."""
        with self.lock:
            self.floods.append(FloodRule(count, retry_after, tuple(methods), chat_id, max(1, every)))

    def _flooded(self, method: str, params: dict[str, Any]) -> int | None:
        with self.lock:
            for rule in self.floods:
                if rule.count > 0 and method in rule.methods and (rule.chat_id is None
                                                                  or _chat(params) == rule.chat_id):
                    rule.seen += 1
                    if rule.seen % rule.every == 0:
                        rule.count -= 1
                        return rule.retry_after
        return None

    @staticmethod
    def _reply(req: BaseHTTPRequestHandler, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        req.send_response(status)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        try:
            req.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the bot went away mid-poll (stopped or killed)

    @staticmethod
    def _params(ctype: str, body: bytes, query: str) -> dict[str, Any]:
        params: dict[str, Any] = dict(urllib.parse.parse_qsl(query))
        if ctype.startswith("application/x-www-form-urlencoded"):
            params.update(urllib.parse.parse_qsl(body.decode()))
        elif ctype.startswith("application/json") and body:
            params.update(json.loads(body))
        elif ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                filename = part.get_filename()
                content = part.get_payload(decode=True) or b""
                params[name] = {"filename": filename, "content": content} if filename else content.decode()
        return params

    def _forward(self, method: str, path: str, body: bytes | None, ctype: str) -> tuple[int, Any]:
        headers = {"Content-Type": ctype} if ctype else {}
        status, data = self.upstream.request(method, path, body, headers)
        try:
            payload = json.loads(data) if data else None
        except ValueError:
            payload = {"ok": False, "error_code": status, "description": data.decode(errors="replace")}
        if status >= 400 and isinstance(payload, dict) and "description" not in payload:
            # The emulator answers unknown methods with a bare {"message": ...} and 500.
            payload = {"ok": False, "error_code": 400 if status == 500 else status,
                       "description": payload.get("message", "error")}
            status = 400 if status == 500 else status
        return status, payload

    def _post_upstream(self, path: str, obj: dict[str, Any]) -> tuple[int, Any]:
        return self._forward("POST", path, json.dumps(obj).encode(), "application/json")

    # -- fixes ----------------------------------------------------------------
    def _fix_message(self, msg: dict[str, Any]) -> dict[str, Any]:
        msg = dict(msg)
        msg.pop("botToken", None)
        msg.pop("chat_id", None)
        if "date" in msg:
            msg["date"] = _seconds(msg["date"])
        else:
            msg["date"] = int(time.time())
        chat = msg.get("chat") or {}
        chat.setdefault("type", "private")
        msg["chat"] = chat
        if isinstance(msg.get("from"), dict):
            msg["from"] = {"is_bot": False, "first_name": "User", **msg["from"]}
        if not msg.get("reply_markup") or "inline_keyboard" not in msg.get("reply_markup", {}):
            msg.pop("reply_markup", None)
        return msg

    def _fix_update(self, update: dict[str, Any]) -> dict[str, Any]:
        update = dict(update)
        if "message" in update:
            update["message"] = self._fix_message(update["message"])
        if "callback_query" in update:
            cq = dict(update["callback_query"])
            if cq.get("message"):
                cq["message"] = self._fix_message(cq["message"])
            chat_id = ((cq.get("message") or {}).get("chat") or {}).get("id", 0)
            cq.setdefault("chat_instance", hashlib.sha1(str(chat_id).encode()).hexdigest()[:16])
            cq["from"] = {"is_bot": False, "first_name": "User", **(cq.get("from") or {})}
            update["callback_query"] = cq
        return update

    def _bot_message(self, result: dict[str, Any]) -> dict[str, Any]:
        msg = self._fix_message(result)
        msg["from"] = dict(BOT_USER)
        if msg.get("text") is None:
            msg.pop("text", None)
        with self.lock:
            self.sent[(int(msg["chat"]["id"]), int(msg["message_id"]))] = msg
        return msg

    def _m_getMe(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        status, payload = self._forward(*forward)
        if status == 200 and payload.get("ok"):
            payload["result"] = {**BOT_USER, **payload["result"], "is_bot": True}
        return status, payload

    def _take_updates(self, token: str) -> list[dict[str, Any]]:
        """New updates from the emulator (fixed), queued with those not yet confirmed; the queue."""
        status, payload = self._post_upstream(f"/bot{token}/getUpdates", {})
        with self.lock:
            queue = self.pending.setdefault(token, [])
            if status == 200:
                queue.extend(self._fix_update(u) for u in payload.get("result") or [])
            return queue

    def _m_getUpdates(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            if token in self.webhooks:
                return 409, {"ok": False, "error_code": 409,
                             "description": "Conflict: can't use getUpdates method while webhook is active; "
                                            "use deleteWebhook to delete the webhook first"}
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        limit = int(params.get("limit") or 100)
        deadline = time.monotonic() + timeout
        path = f"/bot{token}/getUpdates"
        while True:
            status, payload = self._post_upstream(path, {})
            if status != 200:
                return status, payload
            with self.lock:
                queue = self.pending.setdefault(token, [])
                queue.extend(self._fix_update(u) for u in payload.get("result") or [])
                if offset:
                    queue[:] = [u for u in queue if u["update_id"] >= offset]
                if queue or self.stopping:
                    now = time.time()
                    for u in queue[:limit]:
                        self.first_delivery.setdefault(u["update_id"], (now, u))
                    return 200, {"ok": True, "result": queue[:limit]}
                left = deadline - time.monotonic()
                if left <= 0:
                    return 200, {"ok": True, "result": []}
                # The user side kicks us; poll anyway in case something else posted to the emulator.
                self.lock.wait(min(left, 0.05))

    def _m_sendMessage(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        status, payload = self._forward(*forward)
        if status == 200 and payload.get("ok"):
            payload["result"] = self._bot_message(payload["result"])
        return status, payload

    def _edited(self, params: dict[str, Any], text_key: str | None) -> dict[str, Any] | bool:
        if params.get("inline_message_id"):
            return True
        key = (int(params["chat_id"]), int(params["message_id"]))
        with self.lock:
            msg = dict(self.sent.get(key) or {"message_id": key[1], "chat": {"id": key[0], "type": "private"},
                                              "from": dict(BOT_USER), "date": int(time.time())})
            if text_key:
                msg["text"] = params.get(text_key, "")
            markup = params.get("reply_markup")
            markup = json.loads(markup) if isinstance(markup, str) else markup
            if markup and "inline_keyboard" in markup and markup["inline_keyboard"]:
                msg["reply_markup"] = markup
            else:
                msg.pop("reply_markup", None)
            msg["edit_date"] = int(time.time())
            self.sent[key] = msg
        return msg

    def _m_editMessageText(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        if not params.get("reply_markup") and not params.get("inline_message_id"):
            # Telegram drops the inline keyboard of a message edited without one; the emulator keeps
            # it. Dropped first, so that nobody sees the new text with the old buttons.
            self._post_upstream(f"/bot{token}/editMessageReplyMarkup",
                                {"chat_id": params.get("chat_id"), "message_id": params.get("message_id"),
                                 "reply_markup": {"inline_keyboard": []}})
        status, payload = self._forward(*forward)
        if status == 200 and payload.get("ok"):
            payload["result"] = self._edited(params, "text")
        return status, payload

    def _m_editMessageReplyMarkup(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        # The emulator ignores a markup without inline_keyboard (i.e. removing the buttons):
        # send it an empty keyboard instead, which it stores.
        markup = params.get("reply_markup")
        markup = json.loads(markup) if isinstance(markup, str) else markup
        if not markup or not markup.get("inline_keyboard"):
            body = {"chat_id": params["chat_id"], "message_id": params["message_id"],
                    "reply_markup": {"inline_keyboard": []}}
            status, payload = self._post_upstream(f"/bot{token}/editMessageReplyMarkup", body)
        else:
            status, payload = self._forward(*forward)
        if status == 200 and payload.get("ok"):
            payload["result"] = self._edited(params, None)
        return status, payload

    def _true_result(self, *forward: Any) -> tuple[int, Any]:
        status, payload = self._forward(*forward)
        if status == 200 and payload.get("ok") and payload.get("result") is None:
            payload["result"] = True
        return status, payload

    def _m_answerCallbackQuery(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            self.callback_answers.append({**params, "time": time.time()})
        return self._true_result(*forward)

    def _m_deleteMessage(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        return self._true_result(*forward)

    # Webhooks: recorded here, and pushed by the proxy (the package's own push lacks the fixes).
    def _m_setWebhook(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        url = params.get("url") or ""
        if not url:  # Telegram: an empty url removes the webhook
            return self._m_deleteWebhook(token, params)
        record = {k: v for k, v in params.items() if k != "certificate"}
        if isinstance(params.get("certificate"), dict):
            record["certificate"] = params["certificate"]["content"]
        for key in ("allowed_updates",):
            if isinstance(record.get(key), str):
                record[key] = json.loads(record[key])
        with self.lock:
            self.webhook_calls.append({"method": "setWebhook", "time": time.time(), **record})
            self.webhooks[token] = record
            if self.pusher is None:
                self.pusher = threading.Thread(target=self._push_loop, name="telegram-webhook-push", daemon=True)
                self.pusher.start()
            self.lock.notify_all()
        return 200, {"ok": True, "result": True, "description": "Webhook was set"}

    def _m_deleteWebhook(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            self.webhook_calls.append({"method": "deleteWebhook", "time": time.time(),
                                       **{k: v for k, v in params.items() if k != "url"}})
            self.webhooks.pop(token, None)
            if str(params.get("drop_pending_updates")).lower() == "true":
                self.pending.pop(token, None)
        return 200, {"ok": True, "result": True, "description": "Webhook was deleted"}

    def _m_getWebhookInfo(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            hook = self.webhooks.get(token) or {}
            waiting = len(self.pending.get(token) or [])
        return 200, {"ok": True, "result": {"url": hook.get("url", ""), "has_custom_certificate": "certificate" in hook,
                                            "pending_update_count": waiting}}

    def _push_loop(self) -> None:
        """Telegram's side of a webhook: each update, in order, until the bot answers 2xx."""
        while True:
            with self.lock:
                if self.stopping:
                    return
                hooks = dict(self.webhooks)
            for token, hook in hooks.items():
                queue = self._take_updates(token)
                while queue:
                    with self.lock:
                        if self.stopping or self.webhooks.get(token) is not hook or not queue:
                            break
                        update = queue[0]
                    try:
                        status, _ = post_update(hook["url"], update, hook.get("secret_token"))
                    except OSError:
                        status = 0
                    with self.lock:
                        self.pushed.append((time.time(), update["update_id"], status))
                        if 200 <= status < 300:
                            self.first_delivery.setdefault(update["update_id"], (time.time(), update))
                            if queue and queue[0] is update:
                                queue.pop(0)
                            continue
                    time.sleep(0.2)  # the bot is not there (yet): Telegram tries again later
                    break
            with self.lock:
                if not self.stopping:
                    self.lock.wait(0.05)

    # Missing in the emulator: recorded here.
    def _m_sendChatAction(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            self.chat_actions.append(ChatAction(int(params["chat_id"]), params.get("action", ""), time.time()))
        return 200, {"ok": True, "result": True}

    def _m_setMyCommands(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        commands = params.get("commands") or "[]"
        with self.lock:
            self.commands[params.get("scope") or "default"] = (
                json.loads(commands) if isinstance(commands, str) else commands)
        return 200, {"ok": True, "result": True}

    def _m_getMyCommands(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            return 200, {"ok": True, "result": self.commands.get(params.get("scope") or "default", [])}

    def _m_deleteMyCommands(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        with self.lock:
            self.commands.pop(params.get("scope") or "default", None)
        return 200, {"ok": True, "result": True}

    def _m_sendDocument(self, token: str, params: dict[str, Any], *forward: Any) -> tuple[int, Any]:
        doc = params.get("document")
        if not isinstance(doc, dict):
            return 400, {"ok": False, "error_code": 400,
                         "description": "Bad Request: the compat proxy only takes uploaded documents"}
        chat_id = int(params["chat_id"])
        content: bytes = doc["content"]
        file_id = hashlib.sha256(content).hexdigest()[:32]
        document = {"file_id": file_id, "file_unique_id": file_id[:16], "file_name": doc["filename"],
                    "mime_type": "text/markdown" if doc["filename"].endswith(".md") else "application/octet-stream",
                    "file_size": len(content)}
        caption = params.get("caption")
        # Into the emulator's chat as a message, so the user side sees it in order.
        shown: dict[str, Any] = {"chat_id": chat_id, "text": caption or "", "document": document}
        if caption:
            shown["caption"] = caption
        for key in ("reply_markup", "parse_mode", "reply_parameters"):
            if key in params:
                shown[key] = json.loads(params[key]) if key != "parse_mode" else params[key]
        status, payload = self._post_upstream(f"/bot{token}/sendMessage", shown)
        if status != 200 or not payload.get("ok"):
            return status, payload
        msg = self._bot_message(payload["result"])
        msg.pop("text", None)
        with self.lock:
            self.documents.append(Document(chat_id, doc["filename"], content, caption, msg["message_id"],
                                           time.time()))
        payload["result"] = msg
        return status, payload


class TelegramUser:
    """A Telegram user (in a private chat by default) driven through the emulator's JSON API."""

    def __init__(self, emu: "TelegramEmulator", user_id: int, *, chat_id: int | None = None,
                 chat_type: str = "private", first_name: str | None = None, username: str | None = None):
        self.emu = emu
        self.user_id = user_id
        self.chat_id = chat_id if chat_id is not None else user_id
        self.chat_type = chat_type
        self.first_name = first_name or f"user{user_id}"
        self.username = username or f"user{user_id}"

    @property
    def _from(self) -> dict[str, Any]:
        return {"id": self.user_id, "is_bot": False, "first_name": self.first_name, "username": self.username}

    @property
    def _chat(self) -> dict[str, Any]:
        chat: dict[str, Any] = {"id": self.chat_id, "type": self.chat_type}
        if self.chat_type == "private":
            chat.update(first_name=self.first_name, username=self.username)
        else:
            chat["title"] = f"group {self.chat_id}"
        return chat

    def send(self, text: str) -> None:
        """Type ``text`` into the chat: /commands go to /sendCommand, the rest to /sendMessage."""
        msg: dict[str, Any] = {"botToken": self.emu.token, "from": self._from, "chat": self._chat,
                               "date": int(time.time()), "text": text}
        if text.startswith("/"):
            length = len(text.split(maxsplit=1)[0])
            msg["entities"] = [{"offset": 0, "length": length, "type": "bot_command"}]
            self.emu.client_call("/sendCommand", msg)
        else:
            self.emu.client_call("/sendMessage", msg)

    def update(self, text: str, update_id: int, message_id: int | None = None) -> dict[str, Any]:
        """``text`` typed into the chat as the Update Telegram hands a bot (what the proxy makes of the
        emulator's updates), for tests that play Telegram's side of a webhook themselves."""
        msg: dict[str, Any] = {"message_id": message_id if message_id is not None else update_id,
                               "from": self._from, "chat": self._chat, "date": int(time.time()), "text": text}
        if text.startswith("/"):
            msg["entities"] = [{"offset": 0, "length": len(text.split(maxsplit=1)[0]), "type": "bot_command"}]
        return {"update_id": update_id, "message": msg}

    def press(self, message: BotMessage, label_part: str) -> None:
        """Press the inline button whose label contains ``label_part`` on ``message``."""
        button = message.button(label_part)
        cb_message = {"message_id": message.message_id, "chat": self._chat, "date": int(message.time),
                      "from": dict(BOT_USER), "text": message.text}
        self.emu.client_call("/sendCallback", {"botToken": self.emu.token, "from": self._from,
                                               "message": cb_message, "data": button["callback_data"],
                                               "date": int(time.time())})

    def messages(self) -> list[BotMessage]:
        return self.emu.bot_messages(self.chat_id)

    def wait_message(self, match: str | Callable[[BotMessage], bool], *, timeout: float = 15.0,
                     after: int = 0) -> BotMessage:
        """The first bot message in this chat (with message_id > ``after``) that matches."""
        return self.emu.wait_message(self.chat_id, match, timeout=timeout, after=after)

    def last_id(self) -> int:
        msgs = self.messages()
        return msgs[-1].message_id if msgs else 0


class TelegramEmulator:
    """``telegram-test-api`` on loopback plus the compatibility proxy. A context manager."""

    def __init__(self, token: str, *, store_timeout: int = 3600, proxy_host: str = "127.0.0.1"):
        """``proxy_host``: where the bot reaches the Bot API. The lab tests give this host's
        lab address (198.18.N.1), so a bot on a lab machine reaches it; the emulator itself
        and the user side always stay on loopback."""
        self.token = token
        self.proxy_host = proxy_host
        self.store_timeout = store_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.proxy: CompatProxy | None = None
        self.port = 0
        self.log_path: Path | None = None

    # -- life cycle -----------------------------------------------------------
    def start(self, log_dir: Path | None = None) -> "TelegramEmulator":
        if not (PACKAGE / "package.json").exists():
            raise EmulatorMissing(f"{PACKAGE} is missing: run `make telegram-tools`")
        log_dir = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
        self.log_path = log_dir / f"telegram-test-api-{os.getpid()}-{id(self)}.log"
        for _ in range(5):
            self.port = _free_port()
            log = open(self.log_path, "wb")
            self.proc = subprocess.Popen(["node", "-e", _LAUNCHER, str(PACKAGE), str(self.port),
                                          str(self.store_timeout)],
                                         stdout=subprocess.PIPE, stderr=log, start_new_session=True,
                                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                                              "NODE_ENV": "production"})
            log.close()
            if self._wait_ready():
                break
            self._kill_node()
        else:
            raise RuntimeError(f"telegram-test-api did not start: {self.log()}")
        self.proxy = CompatProxy(self.port, self.proxy_host)
        self.proxy.start()
        return self

    def _wait_ready(self) -> bool:
        assert self.proc and self.proc.stdout
        line = [b""]
        reader = threading.Thread(target=lambda: line.__setitem__(0, self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        return line[0].strip() == b"ready"

    def _kill_node(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(5)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        if self.proxy:
            self.proxy.stop()
            self.proxy = None
        self._kill_node()

    def __enter__(self) -> "TelegramEmulator":
        return self if self.proxy else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    # -- what the bot is given ------------------------------------------------
    @property
    def api_base_url(self) -> str:
        """PTB's ``base_url`` (the token is appended): the proxy, not the emulator."""
        assert self.proxy, "emulator not started"
        return f"http://{self.proxy.host}:{self.proxy.port}/bot"

    @property
    def emulator_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- the user side: the emulator's own API --------------------------------
    def client_call(self, path: str, body: dict[str, Any]) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        if resp.status != 200:
            raise AssertionError(f"emulator {path} -> {resp.status}: {data[:300]!r}")
        if self.proxy:
            self.proxy.kick()
        return json.loads(data)

    def user(self, user_id: int, **kwargs: Any) -> TelegramUser:
        return TelegramUser(self, user_id, **kwargs)

    def history(self) -> list[dict[str, Any]]:
        return self.client_call("/getUpdatesHistory", {"token": self.token}).get("result") or []

    def bot_messages(self, chat_id: int | None = None) -> list[BotMessage]:
        """What the bot sent (to ``chat_id``), oldest first, with edits applied."""
        out = []
        for item in self.history():
            msg = item.get("message") or {}
            if "chat_id" not in msg:  # user updates carry `chat`, bot messages `chat_id`
                continue
            if chat_id is not None and str(msg["chat_id"]) != str(chat_id):
                continue
            markup = msg.get("reply_markup")
            out.append(BotMessage(int(item["messageId"]), int(msg["chat_id"]), msg.get("text") or "",
                                  markup if isinstance(markup, dict) else None, msg.get("document"),
                                  item["time"] / 1000.0, msg))
        return out

    def wait_message(self, chat_id: int | None, match: str | Callable[[BotMessage], bool], *,
                     timeout: float = 15.0, after: int = 0) -> BotMessage:
        pred = (lambda m: match in m.text) if isinstance(match, str) else match
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.bot_messages(chat_id)
            for m in msgs:
                if m.message_id > after and pred(m):
                    return m
            if time.monotonic() > deadline:
                shown = "\n".join(f"  #{m.message_id} {m.text[:200]!r}" for m in msgs[-12:])
                raise AssertionError(f"no bot message matching {match!r} in chat {chat_id} within {timeout} s;"
                                     f" last messages:\n{shown}")
            time.sleep(0.05)

    # -- what the proxy recorded (methods the emulator lacks) -----------------
    @property
    def chat_actions(self) -> list[ChatAction]:
        assert self.proxy
        with self.proxy.lock:
            return list(self.proxy.chat_actions)

    @property
    def commands(self) -> list[dict[str, Any]]:
        assert self.proxy
        with self.proxy.lock:
            return list(self.proxy.commands.get("default", []))

    @property
    def documents(self) -> list[Document]:
        assert self.proxy
        with self.proxy.lock:
            return list(self.proxy.documents)

    @property
    def callback_answers(self) -> list[dict[str, Any]]:
        assert self.proxy
        with self.proxy.lock:
            return list(self.proxy.callback_answers)

    def flood(self, count: int, retry_after: int = 1, methods: tuple[str, ...] = ("sendMessage", "editMessageText"),
              chat_id: int | None = None, every: int = 1) -> None:
        """Telegram's 429 (with ``retry_after``) for the next ``count`` calls of ``methods`` (every n-th)."""
        assert self.proxy
        self.proxy.flood(count, retry_after, methods, chat_id, every)

    def requests(self, method: str | None = None, chat_id: int | None = None) -> list[Call]:
        """The Bot API calls (not getUpdates) that reached the proxy, oldest first."""
        assert self.proxy
        with self.proxy.lock:
            return [c for c in self.proxy.requests
                    if (method is None or c.method == method) and (chat_id is None or c.chat_id == chat_id)]

    @property
    def webhook_calls(self) -> list[dict[str, Any]]:
        assert self.proxy
        with self.proxy.lock:
            return [dict(c) for c in self.proxy.webhook_calls]

    @property
    def webhook(self) -> dict[str, Any] | None:
        """The webhook set now for this emulator's token (None: polling)."""
        assert self.proxy
        with self.proxy.lock:
            hook = self.proxy.webhooks.get(self.token)
            return dict(hook) if hook else None
