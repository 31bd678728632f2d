"""The chain: canonical encoding of an event, sealing (sha256 over the line
without its hash, chained by ``prev``) and reading seq/ts/hash of a line
without decoding it.

Stdlib only; hashlib is imported on first use (queries never need it).
"""

from __future__ import annotations

import json
import os
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from typing import Any

SEVERITIES = ("debug", "info", "warning", "error", "critical")
CORE_FIELDS = ("ts", "seq", "host", "type", "severity", "order_id", "user", "message")
RESERVED = frozenset((*CORE_FIELDS, "prev", "hash"))
ROTATED = "audit_rotated"
REPAIRED = "audit_repaired"
# The identity of a log: random, made with its first event and carried by it and by every
# audit_rotated event (which opens each live file), so a reader can tell a log from its replacement.
LOG_ID = "log_id"

MAX_MESSAGE = 8192  # characters; longer messages are cut (data fields are not)

_TS_AT, _TS_LEN = 7, 24  # '{"ts":"' then 'YYYY-MM-DDTHH:MM:SS.mmmZ'
_SEQ_TAG = b'","seq":'
_SEQ_AT = _TS_AT + _TS_LEN + len(_SEQ_TAG)  # 39
_HASH_TAG = b',"hash":"'
_SUFFIX = len(_HASH_TAG) + 64 + 2  # ,"hash":"<64 hex>"}
_PREV_NULL = b',"prev":null}'
_PREV_TAG = b',"prev":"'
_HEX = frozenset(b"0123456789abcdef")

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True, allow_nan=False, default=str).encode


class AuditError(ValueError):
    """An event or a query that cannot be accepted; the message says why."""


def _now() -> str:
    ns = time.time_ns()
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest // 1_000_000:03d}Z"


def _seal(fields: Iterable[tuple[str, Any]], prev: str | None) -> tuple[bytes, str]:
    """The canonical line (with newline) of an event and its hash."""
    parts = [f"{_dumps(k)}:{_dumps(v)}" for k, v in fields]
    parts.append('"prev":' + _dumps(prev))
    body = ("{" + ",".join(parts) + "}").encode("ascii")
    digest = _sha256(body).hexdigest()
    return body[:-1] + _HASH_TAG + digest.encode("ascii") + b'"}\n', digest


def _fields(
    ts: str,
    seq: int,
    host: str,
    type: str,
    severity: str,
    order_id: str | None,
    user: str | None,
    message: str,
    data: dict[str, Any],
) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        ("ts", ts),
        ("seq", seq),
        ("host", host),
        ("type", type),
        ("severity", severity),
        ("order_id", order_id),
        ("user", user),
        ("message", message),
    ]
    out.extend(sorted(data.items()))
    return out


def _seq_of(line: bytes) -> int | None:
    """seq of a canonical line without decoding it (None if not canonical)."""
    if line[_TS_AT + _TS_LEN : _SEQ_AT] == _SEQ_TAG and line.startswith(b'{"ts":"'):
        end = line.find(b",", _SEQ_AT)
        digits = line[_SEQ_AT:end]
        if end > 0 and digits.isdigit():
            return int(digits)
    return None


def _ts_of(line: bytes) -> bytes | None:
    if line[_TS_AT + _TS_LEN : _SEQ_AT] == _SEQ_TAG and line.startswith(b'{"ts":"'):
        return line[_TS_AT : _TS_AT + _TS_LEN]
    return None


def _hash_of(line: bytes) -> str | None:
    if line[-_SUFFIX:-66] == _HASH_TAG and line.endswith(b'"}') and _HEX.issuperset(line[-66:-2]):
        return line[-66:-2].decode("ascii")
    return None


def _split_line(line: bytes) -> tuple[int, str | None, str] | None:
    """(seq, prev, hash) of a well-formed line whose hash matches its content, else None."""
    h = _hash_of(line)
    if h is None:
        return None
    body = line[:-_SUFFIX] + b"}"
    if _sha256(body).hexdigest() != h:
        return None
    if body.endswith(_PREV_NULL):
        prev = None
    elif body[-75:-66] == _PREV_TAG and body.endswith(b'"}'):
        prev = body[-66:-2].decode("ascii")
    else:
        return None
    seq = _seq_of(line)
    if seq is None:
        return None
    return seq, prev, h


def _sha256_func() -> Callable[[bytes], Any]:
    from hashlib import sha256

    return sha256


def _sha256_first(data: bytes) -> Any:
    """hashlib.sha256, imported on first use (queries never need it)."""
    global _sha256
    from hashlib import sha256

    _sha256 = sha256
    return sha256(data)


_sha256: Callable[[bytes], Any] = _sha256_first


def event_hash(event: dict) -> str:
    """Recompute an event's hash from its fields (what the writer sealed)."""
    data = {k: v for k, v in event.items() if k not in RESERVED}
    fields = _fields(
        event["ts"],
        event["seq"],
        event["host"],
        event["type"],
        event["severity"],
        event.get("order_id"),
        event.get("user"),
        event.get("message", ""),
        data,
    )
    return _seal(fields, event.get("prev"))[1]


def new_log_id() -> str:
    return os.urandom(16).hex()


def log_id_of(line: bytes) -> str | None:
    """The log identity an event line carries (the first event of a log and each audit_rotated do)."""
    if b'"log_id":"' not in line:
        return None
    try:
        event = json.loads(line)
    except ValueError:
        return None
    value = event.get(LOG_ID) if isinstance(event, dict) else None
    return value if isinstance(value, str) else None
