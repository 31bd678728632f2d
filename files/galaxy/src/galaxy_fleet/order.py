"""The order: its JSON form, ids, validation and life-cycle states.

An order is a superset of the classic Galaxy order JSON::

    {"type": "galaxy_order", "id": ..., "from": ..., "target": ..., "command": ...,
     "payload": ..., "timestamp": ..., "acknowledged": false}

with optional ``timeout``, ``executor``, ``session``, ``priority`` and
``options``. Unknown fields are kept as they are.

This module is the one place that names an order's fields and states: the
node (spool, worker, API), the control plane (fleet, store), the bot, the
dashboard and the CLI import them from here. In Python the ``from`` field is
``sender`` (``from`` is a keyword); everywhere else it is ``from``.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

ORDER_TYPE = "galaxy_order"

RECEIVED = "received"
QUEUED = "queued"
DELIVERED = "delivered"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"
TIMED_OUT = "timed_out"
INTERRUPTED = "interrupted"

STATES = (RECEIVED, QUEUED, DELIVERED, RUNNING, DONE, FAILED, CANCELLED, TIMED_OUT, INTERRUPTED)
# Not finished yet, in the order an order passes through them (a state only moves forward).
ACTIVE = (RECEIVED, QUEUED, DELIVERED, RUNNING)
# Final: the order has its answer (or the reason it has none).
TERMINAL = (DONE, FAILED, CANCELLED, TIMED_OUT, INTERRUPTED)
# The final states that count as a failure (cancelled does not: someone asked for it).
UNSUCCESSFUL = (FAILED, TIMED_OUT, INTERRUPTED)
# The final states of an order stopped before its end (what a cancel leads to).
STOPPED = (CANCELLED, TIMED_OUT, INTERRUPTED)
# Final states after which the user is offered a retry.
RETRYABLE = (FAILED, TIMED_OUT, INTERRUPTED)

# The audit event of a state change is ``order_<state>``.
EVENT_PREFIX = "order_"
TERMINAL_EVENTS = frozenset(EVENT_PREFIX + s for s in TERMINAL)


def is_terminal(state: Any) -> bool:
    return state in TERMINAL


def rank(state: Any) -> int:
    """How far along its life an order in this state is: the active states in their
    order, every final state above them, anything else (not a state) below."""
    if state in ACTIVE:
        return ACTIVE.index(state)
    return len(ACTIVE) if state in TERMINAL else -1


def event_type(state: str) -> str:
    """The audit event type of a state change: ``order_done``."""
    return EVENT_PREFIX + state


def state_of_event(etype: Any) -> str | None:
    """The state an ``order_<state>`` audit event reports, or None for other events."""
    if isinstance(etype, str) and etype.startswith(EVENT_PREFIX) and etype[len(EVENT_PREFIX) :] in STATES:
        return etype[len(EVENT_PREFIX) :]
    return None


# Ids and targets end up in file names and SSH routing: a strict alphabet
# rules out path traversal, hidden files and shell metacharacters at once.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}")  # always fullmatch: "$" admits a final "\n"
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


# Bounds on the free-form parts of an order (``options`` and unknown fields), so
# nothing a sender adds can make a node recurse, or hold and copy without limit.
MAX_DEPTH = 16  # nesting of objects and arrays inside one field
MAX_FIELD_BYTES = 16 * 1024  # JSON size of ``options``, and of all unknown fields together
MAX_EXTRA_FIELDS = 32


class OrderError(ValueError):
    """An order that cannot be accepted; the message says why."""


def _depth(value: Any) -> int:
    """Nesting depth of a decoded JSON value, without recursion (1 for a scalar)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > MAX_DEPTH:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _check_bounded(kind: str, value: Any, max_depth: int = MAX_DEPTH) -> None:
    if _depth(value) > max_depth:
        raise OrderError(f"{kind} is nested more than {max_depth} levels deep")
    size = len(json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass"))
    if size > MAX_FIELD_BYTES:
        raise OrderError(f"{kind} is {size} bytes of JSON, over the limit of {MAX_FIELD_BYTES}")


_id_lock = threading.Lock()
_id_last = 0


def new_id() -> str:
    """A unique, time-sortable order id: ``20261128T192749.123456Z-3f9a1c2e``.

    The time part is strictly increasing within a process, so ids sort in
    submission order even when two are made in the same microsecond.
    """
    global _id_last
    with _id_lock:
        now = time.time_ns() // 1000
        if now <= _id_last:
            now = _id_last + 1
        _id_last = now
    secs, micros = divmod(now, 1_000_000)
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(secs))
    return f"{stamp}.{micros:06d}Z-{secrets.token_hex(4)}"


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def valid_name(value: Any) -> bool:
    return isinstance(value, str) and bool(_NAME_RE.fullmatch(value)) and ".." not in value


def check_name(kind: str, value: Any) -> str:
    if not valid_name(value):
        raise OrderError(
            f"{kind} {value!r} is not valid: use 1-128 letters, digits and . _ @ : - "
            "(no leading dot, no '..', no slashes)"
        )
    return value


@dataclass
class Order:
    id: str
    payload: str
    target: str = ""
    sender: str = ""
    command: str = "general"
    timestamp: str = ""
    executor: str | None = None
    timeout: float | None = None
    session: str | None = None
    priority: int = 0
    options: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    id_assigned: bool = False  # the id was given by Galaxy (a classic order without one)
    duplicate: bool = False  # submitted again with an id this node already had: not queued twice

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(self.extra)
        d.update(
            {
                "type": ORDER_TYPE,
                "id": self.id,
                "from": self.sender,
                "target": self.target,
                "command": self.command,
                "payload": self.payload,
                "timestamp": self.timestamp,
                "acknowledged": bool(self.extra.get("acknowledged", False)),
            }
        )
        for key in ("executor", "timeout", "session"):
            value = getattr(self, key)
            if value is not None:
                d[key] = value
        if self.priority:
            d["priority"] = self.priority
        if self.options:
            d["options"] = self.options
        return d

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")).encode()


def build(
    payload: str,
    *,
    id: str | None = None,
    sender: str | None = None,
    target: str | None = None,
    command: str | None = None,
    executor: str | None = None,
    timeout: float | None = None,
    session: str | None = None,
    priority: int | None = None,
    options: dict[str, Any] | None = None,
    timestamp: str | None = None,
) -> dict[str, Any]:
    """The JSON of a fresh order (a new id and time stamp unless given), the one builder
    behind `galaxy order submit`, `galaxy send`, the bot and MCP. Not validated here:
    the node validates what it receives (``from_dict``)."""
    return Order(
        id=id or new_id(),
        payload=payload,
        target=target or "",
        sender=sender or "",
        command=command or "general",
        timestamp=timestamp or utcnow(),
        executor=executor,
        timeout=timeout,
        session=session,
        priority=priority or 0,
        options=dict(options or {}),
    ).to_dict()


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise OrderError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def from_dict(data: Any, *, max_payload_bytes: int = 64 * 1024, executors: Any = None) -> Order:
    """Validate a decoded order. Raises OrderError with a reason a user can act on."""
    if not isinstance(data, dict):
        raise OrderError(f"an order must be a JSON object, got {type(data).__name__}")
    kind = data.get("type", ORDER_TYPE)
    if kind != ORDER_TYPE:
        raise OrderError(f"field 'type' must be {ORDER_TYPE!r}, got {kind!r}")
    payload = data.get("payload")
    if not isinstance(payload, str):
        raise OrderError(
            "field 'payload' is required and must be a string"
            if payload is None
            else f"field 'payload' must be a string, got {type(payload).__name__}"
        )
    if not payload.strip():
        raise OrderError("field 'payload' is empty")
    size = len(payload.encode("utf-8", "surrogatepass"))
    if size > max_payload_bytes:
        raise OrderError(f"payload is {size} bytes, over the limit of {max_payload_bytes}")
    if _CONTROL_RE.search(payload):
        raise OrderError("payload contains control characters")
    for key in ("from", "target", "command", "timestamp"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise OrderError(f"field {key!r} must be a string, got {type(value).__name__}")
        if isinstance(value, str) and _CONTROL_RE.search(value):
            raise OrderError(f"field {key!r} contains control characters")
    target = data.get("target") or ""
    if target:
        check_name("target", target)
    assigned = False
    oid = data.get("id")
    if oid is None:
        oid, assigned = new_id(), True
    else:
        check_name("order id", oid)
    executor = _opt_str(data, "executor")
    if executor is not None:
        check_name("executor", executor)
        if executors is not None and executor not in executors:
            raise OrderError(f"unknown executor {executor!r}; this node has: {', '.join(sorted(executors))}")
    session = _opt_str(data, "session")
    if session is not None:
        check_name("session", session)
    timeout = data.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise OrderError(f"field 'timeout' must be a positive number of seconds, got {timeout!r}")
        timeout = float(timeout)
    priority = data.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int) or not -100 <= priority <= 100:
        raise OrderError(f"field 'priority' must be an integer from -100 to 100, got {priority!r}")
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise OrderError("field 'options' must be an object")
    _check_bounded("field 'options'", options)
    ack = data.get("acknowledged", False)
    if not isinstance(ack, bool):
        raise OrderError("field 'acknowledged' must be true or false")
    known = {
        "type",
        "id",
        "from",
        "target",
        "command",
        "payload",
        "timestamp",
        "executor",
        "timeout",
        "session",
        "priority",
        "options",
    }
    extra = {k: v for k, v in data.items() if k not in known}
    if len(extra) > MAX_EXTRA_FIELDS:
        raise OrderError(f"order has {len(extra)} unknown fields, over the limit of {MAX_EXTRA_FIELDS}")
    if extra:
        _check_bounded("the unknown fields", extra)
    return Order(
        id=oid,
        payload=payload,
        target=target,
        sender=data.get("from") or "",
        command=data.get("command") or "general",
        timestamp=data.get("timestamp") or utcnow(),
        executor=executor,
        timeout=timeout,
        session=session,
        priority=priority,
        options=options,
        extra=extra,
        id_assigned=assigned,
    )


def parse(raw: bytes, **kw: Any) -> Order:
    """Decode and validate the bytes of an order file or message."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OrderError(f"order is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OrderError(f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise OrderError("malformed JSON: nested too deeply") from None
    return from_dict(data, **kw)


def sort_key(order: Order) -> tuple[int, str]:
    """Higher priority first, then first come first served (ids sort by time)."""
    return (-order.priority, order.id)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
