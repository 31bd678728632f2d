"""`galaxy remote`: the node's one API for the control plane, over stdin/stdout.

It is the forced command of the routing key (``restrict,command="galaxy
remote"``), so it never reaches a shell and refuses any other command line.

Protocol (version 1): newline-delimited JSON, one object per line.

- On start the node says ``{"type": "hello", "protocol": 1, "host": ..., "version": ..., "cursor": N}``
  (``cursor``: the newest audit seq; ``log_id``: the audit log's identity).
- A request is ``{"id": R, "op": OP, ...args}``; its answer is
  ``{"type": "result", "id": R, "ok": true, "data": ...}`` or ``{..., "ok": false, "error": "..."}``.
- ops: ``ping``, ``submit {order}``, ``cancel {order_id, user}``, ``status {order_id, response}``,
  ``list {limit, state}``, ``health {}``, ``audit {filters..., after, limit}``,
  ``subscribe {after}``, ``ack_alert {alert_id}``,
  ``permission {order, permission, answer: once|always|deny, by}`` (answers a prompt that a
  running order's agent is waiting on; the prompt itself is the ``permission_asked`` event).
- After ``subscribe`` the node pushes every audit event with ``seq > after``
  as ``{"type": "event", "event": {...}}``, live; a finished order's event
  carries ``"response"``: the order's sidecar, whose fields (``state``, ``answer``,
  ``exit_code``, ``error``, ``timings``, ``details`` with tokens and cost) are
  the answer as data, plus its Markdown document for people. Undelivered outbox alerts are
  pushed as ``{"type": "alert", "alert": {...}}`` until acknowledged, and the
  worker's heartbeat as ``{"type": "heartbeat", "heartbeat": {...}}`` each time it beats.
  Delivery is at-least-once: the client resumes from the last seq it stored. A log
  reset or truncated under the stream ends it with ``{"type": "log_reset", ...}``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, Any

from galaxy_fleet import __version__
from galaxy_fleet.config import Config
from galaxy_fleet.order import TERMINAL_EVENTS

PROTOCOL = 1
MAX_LINE = 1 << 20  # a request larger than this is refused
ALLOWED_ORIGINAL = {"", "galaxy remote", "remote"}


class RemoteError(Exception):
    """A request that cannot be served; the message goes back to the client."""


class RemoteServer:
    def __init__(self, config: Config, rfile: IO[bytes], wfile: IO[bytes]):
        from galaxy_fleet.node.api import Node

        self.config = config
        self.node = Node(config)
        self.rfile, self.wfile = rfile, wfile
        self._wlock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="galaxy-remote")
        self._stream: threading.Thread | None = None
        self._stop = threading.Event()

    # -- output ----------------------------------------------------------
    def send(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        with self._wlock:
            self.wfile.write(data)
            self.wfile.flush()

    # -- main loop -------------------------------------------------------
    def serve(self) -> int:
        from galaxy_fleet.audit import log_identity, query

        newest = query(self.config.audit.path, limit=1)
        self.send({"type": "hello", "protocol": PROTOCOL, "host": self.config.host, "version": __version__,
                   "cursor": newest[-1]["seq"] if newest else 0, "log_id": log_identity(self.config.audit.path)})
        try:
            while True:
                line = self.rfile.readline(MAX_LINE + 1)
                if not line:
                    break
                if len(line) > MAX_LINE:
                    self.send({"type": "result", "id": None, "ok": False, "error": "request too large"})
                    break
                if not line.strip():
                    continue
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("a request must be a JSON object")
                except ValueError as exc:
                    self.send({"type": "result", "id": None, "ok": False, "error": f"bad request: {exc}"})
                    continue
                self._pool.submit(self._handle, req)
        except (BrokenPipeError, ConnectionResetError):
            pass
        finally:
            self._stop.set()
            self._pool.shutdown(wait=True)
        return 0

    def _handle(self, req: dict[str, Any]) -> None:
        rid = req.get("id")
        op = req.get("op")
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
        try:
            if handler is None:
                raise RemoteError(f"unknown op {op!r}")
            data = handler(req)
            reply = {"type": "result", "id": rid, "ok": True, "data": data}
        except RemoteError as exc:
            reply = {"type": "result", "id": rid, "ok": False, "error": str(exc)}
        except (ValueError, LookupError) as exc:  # OrderError, NotFound, AuditError ...
            reply = {"type": "result", "id": rid, "ok": False, "error": str(exc)}
        except OSError as exc:
            reply = {"type": "result", "id": rid, "ok": False, "error": f"{op}: {exc.strerror or exc}"}
        except Exception as exc:  # never let a bad request end the session
            reply = {"type": "result", "id": rid, "ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        try:
            self.send(reply)
        except (BrokenPipeError, ValueError, OSError):
            self._stop.set()

    # -- ops ---------------------------------------------------------------
    def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        from galaxy_fleet.order import utcnow

        return {"pong": utcnow()}

    def op_submit(self, req: dict[str, Any]) -> dict[str, Any]:
        data = req.get("order")
        if not isinstance(data, dict):
            raise RemoteError("submit needs an 'order' object")
        order = self.node.submit(data)
        return {"id": order.id, "state": "queued", "duplicate": order.duplicate}

    def op_cancel(self, req: dict[str, Any]) -> dict[str, Any]:
        return self.node.cancel(_str(req, "order_id"), user=req.get("user"), wait=float(req.get("wait", 3.0)))

    def op_status(self, req: dict[str, Any]) -> dict[str, Any]:
        from galaxy_fleet.order import check_name

        return self.node.status(check_name("order id", _str(req, "order_id")),
                                with_response=bool(req.get("response")))

    def op_list(self, req: dict[str, Any]) -> list[dict[str, Any]]:
        return self.node.list(limit=int(req.get("limit", 20)), state=req.get("state"))

    def op_health(self, req: dict[str, Any]) -> dict[str, Any]:
        from galaxy_fleet.node.health import run_checks

        return run_checks(self.config).to_dict()

    def op_audit(self, req: dict[str, Any]) -> dict[str, Any]:
        from galaxy_fleet.audit import query, verify

        filters = {k: req[k] for k in ("severity", "type", "order_id", "since", "until", "after", "user")
                   if req.get(k) is not None}
        events = query(self.config.audit.path, limit=req.get("limit", 100), **filters)
        out: dict[str, Any] = {"events": events}
        if req.get("verify"):
            report = verify(self.config.audit.path)
            out["verify"] = {"ok": report.ok, "count": report.count, "broken": report.broken}
        return out

    def op_ack_alert(self, req: dict[str, Any]) -> dict[str, Any]:
        from galaxy_fleet.node import outbox
        from galaxy_fleet.order import check_name

        return {"removed": outbox.ack(self.node.spool, check_name("alert id", _str(req, "alert_id")))}

    def op_permission(self, req: dict[str, Any]) -> dict[str, Any]:
        """Answer a permission prompt of a running order: ``{order, permission, answer, by}``."""
        return self.node.answer_permission(_str(req, "order"), _str(req, "permission"), _str(req, "answer"),
                                           _str(req, "by"))

    def op_subscribe(self, req: dict[str, Any]) -> dict[str, Any]:
        after = req.get("after")
        if after is not None and (not isinstance(after, int) or after < 0):
            raise RemoteError("'after' must be a non-negative integer (an event seq)")
        if self._stream is not None:
            raise RemoteError("already subscribed")
        if after is None:
            # "from now" is fixed before we answer: whatever the client sends after
            # this answer is in the stream.
            from galaxy_fleet.audit import query

            newest = query(self.config.audit.path, limit=1)
            after = newest[-1]["seq"] if newest else 0
        self._stream = threading.Thread(target=self._stream_events, args=(after,), name="galaxy-stream",
                                        daemon=True)
        self._stream.start()
        return {"subscribed": True, "after": after}

    # -- the event stream ----------------------------------------------------
    def _stream_events(self, after: int) -> None:
        from galaxy_fleet.node import outbox
        from galaxy_fleet.audit import log_identity, query
        from galaxy_fleet.node.watch import IN_CLOSE_WRITE, IN_CREATE, IN_MODIFY, IN_MOVED_TO, Watcher

        wake = threading.Event()
        outbox_dir = os.fspath(self.node.spool.outbox)
        state_dir = os.fspath(self.node.spool.state)
        check_outbox = threading.Event()
        check_outbox.set()
        beat = threading.Event()
        beat.set()

        def on_event(directory: str, name: str | None, _kind: str) -> None:
            if directory == outbox_dir:
                check_outbox.set()
            elif directory == state_dir:
                if name not in (None, "heartbeat.json"):
                    return  # other state files change with every order: not our business
                beat.set()
            wake.set()

        watcher = Watcher(on_event, name="galaxy-stream-watch")
        watcher.add(self.config.audit.path.parent, IN_MODIFY | IN_MOVED_TO | IN_CREATE | IN_CLOSE_WRITE)
        watcher.add(self.node.spool.outbox, IN_MOVED_TO)
        watcher.add(self.node.spool.state, IN_MOVED_TO)
        watcher.start()
        path = self.config.audit.path
        sent_alerts: set[Any] = set()
        log_id = log_identity(path)
        seen = _file_state(path)
        try:
            while not self._stop.is_set():
                wake.clear()
                first = True
                while True:  # drain in pages so a long backlog never sits in memory at once
                    events = query(path, after=after, limit=500)
                    for event in events:
                        self._push_event(event)
                        after = event["seq"]
                        log_id = event.get("log_id", log_id)  # a new log's first event, a rotation
                    state = _file_state(path) if first and not events else seen
                    if state != seen:  # nothing new, yet the file changed: is it still our log?
                        seen = state
                        if _log_replaced(path, log_id, after):
                            # Reset or truncated under the stream: say so and stop streaming;
                            # the client checks the log again when it reconnects.
                            self.send({"type": "log_reset", "log_id": log_identity(path), "after": after})
                            return
                    first = False
                    if len(events) < 500:
                        break
                if beat.is_set():
                    beat.clear()
                    self._push_heartbeat()
                if check_outbox.is_set():
                    check_outbox.clear()
                    pending = outbox.pending(self.node.spool)
                    for alert in pending:
                        if alert.get("id") not in sent_alerts:
                            self.send({"type": "alert", "alert": alert})
                    sent_alerts = {a.get("id") for a in pending}
                # inotify wakes us at once; the timeout is only a safety net
                wake.wait(5.0)
        except (BrokenPipeError, ValueError, OSError):
            self._stop.set()
        finally:
            watcher.stop()

    def _push_heartbeat(self) -> None:
        """The worker's heartbeat, so the control node notices a silent worker within seconds."""
        from galaxy_fleet.node.spool import read_json

        try:
            hb = read_json(self.node.spool.state / "heartbeat.json")
        except (OSError, ValueError):
            return
        self.send({"type": "heartbeat", "heartbeat": {**hb, "interval": self.config.worker.heartbeat_interval}})

    def _push_event(self, event: dict[str, Any]) -> None:
        msg: dict[str, Any] = {"type": "event", "event": event}
        etype = event.get("type", "")
        oid = event.get("order_id")
        if oid and etype in TERMINAL_EVENTS:
            try:
                msg["response"] = self.node.status(oid, with_response=True)
            except LookupError:
                pass
        self.send(msg)



def _file_state(path: Any) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size


def _log_replaced(path: Any, log_id: str | None, after: int) -> bool:
    """Whether the log at ``path`` is no longer the one streamed so far: another identity, or
    it ends before ``after``."""
    from galaxy_fleet.audit import log_identity, query

    if log_identity(path) != log_id:
        return True
    newest = query(path, limit=1)
    return (newest[-1]["seq"] if newest else 0) < after


def _str(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise RemoteError(f"'{key}' must be a non-empty string")
    return value


def main(config: Config) -> int:
    original = os.environ.get("SSH_ORIGINAL_COMMAND")
    if original is not None:
        words = original.split()
        if words and os.path.basename(words[0]) == "galaxy":
            words = words[1:]
        if " ".join(words) not in ALLOWED_ORIGINAL:
            print(json.dumps({"type": "error", "error": "this key only runs `galaxy remote`"}), flush=True)
            return 1
    server = RemoteServer(config, sys.stdin.buffer, sys.stdout.buffer)
    return server.serve()
