"""Queries: filters, the backward scan over the live file and the segments,
time parsing, cost sums and the one-line form of an event.
"""

from __future__ import annotations

import json
import os
import time
from collections import deque
from datetime import UTC

from galaxy_fleet.audit.chain import SEVERITIES, AuditError, _dumps, _seq_of, _ts_of
from galaxy_fleet.audit.segments import _chunks_backward, _read_segment, _Segment, _segments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator
    from pathlib import Path
    from typing import Any

# Events whose tokens_in/tokens_out/cost --sum-cost adds up: an order's final
# event (the worker writes order_<final state>; tokens spent on a failed or
# cancelled order were spent all the same).
COST_TYPES = ("order_finished", "order_done", "order_failed", "order_cancelled", "order_timed_out", "order_interrupted")


class _Filter:
    """The match test: cheap substring checks on the raw line, then exact checks."""

    def __init__(
        self,
        *,
        severity: Any = None,
        type: Any = None,
        order_id: Any = None,
        host: Any = None,
        user: Any = None,
        since: str | None = None,
        until: str | None = None,
        after: int | None = None,
    ) -> None:
        self.exact: list[tuple[str, frozenset[str]]] = []
        self.needles: list[tuple[bytes, ...]] = []
        # most selective first: its needle drives the scan
        for name, value in (
            ("order_id", order_id),
            ("type", type),
            ("severity", severity),
            ("host", host),
            ("user", user),
        ):
            values = _as_values(name, value)
            if values is None:
                continue
            if name == "severity":
                values = _severities(values)
            self.exact.append((name, frozenset(values)))
            self.needles.append(tuple(f'"{name}":{_dumps(v)}'.encode("ascii") for v in sorted(values)))
        self.primary = self.needles[0] if self.needles else ()
        self.others = self.needles[1:]
        self.since = parse_time(since).encode() if since else None
        self.until = parse_time(until).encode() if until else None
        if after is not None and (not isinstance(after, int) or isinstance(after, bool) or after < 0):
            raise AuditError(f"cursor must be a non-negative integer (an event's seq), got {after!r}")
        self.after = after

    def too_old(self, line: bytes) -> bool:
        """True when this line and every line before it are out of range."""
        if self.after is not None:
            seq = _seq_of(line)
            if seq is not None and seq <= self.after:
                return True
        if self.since is not None:
            ts = _ts_of(line)
            if ts is not None and ts < self.since:
                return True
        return False

    def match(self, line: bytes) -> dict | None:
        for alts in self.others:
            if not any(n in line for n in alts):
                return None
        if self.until is not None:
            ts = _ts_of(line)
            if ts is not None and ts >= self.until:
                return None
        try:
            event = json.loads(line)
        except ValueError:
            return None  # a damaged line: verify reports it, queries skip it
        if not isinstance(event, dict):
            return None
        for name, allowed in self.exact:
            if event.get(name) not in allowed:
                return None
        ts = event.get("ts")
        if not isinstance(ts, str):
            return None
        if self.since is not None and ts.encode() < self.since:
            return None
        if self.until is not None and ts.encode() >= self.until:
            return None
        if self.after is not None:
            seq = event.get("seq")
            if not isinstance(seq, int) or seq <= self.after:
                return None
        return event


def _as_values(name: str, value: Any) -> list[str] | None:
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    out = [v.strip() for v in items if isinstance(v, str) and v.strip()]
    if not out or len(out) != len(items):
        raise AuditError(f"{name}: expected a non-empty value or comma-separated values, got {value!r}")
    return out


def _severities(values: list[str]) -> list[str]:
    """Severity names; 'warning+' means warning and everything above it."""
    out: list[str] = []
    for v in values:
        v = v.lower()
        at_least = v.endswith("+")
        v = v.rstrip("+")
        if v not in SEVERITIES:
            raise AuditError(
                f"unknown severity {v!r}: expected one of {', '.join(SEVERITIES)}"
                " (add + for that level and above, e.g. warning+)"
            )
        out.extend(SEVERITIES[SEVERITIES.index(v) :] if at_least else [v])
    return sorted(set(out))


def _scan_chunk(buf: Any, lo: int, hi: int, filt: _Filter, emit: Callable[[bytes, dict], bool]) -> bool:
    """Offer the matching lines of buf[lo:hi], newest first; True = stop the whole scan."""
    end = hi
    needles = filt.primary
    if not needles:
        while end > lo:
            start = max(buf.rfind(b"\n", lo, end - 1) + 1, lo)
            line = bytes(buf[start : end - 1])
            if filt.too_old(line):
                return True
            event = filt.match(line)
            if event is not None and emit(line, event):
                return True
            end = start
        return False
    found = [buf.rfind(n, lo, end) for n in needles]
    while True:
        hit = max(found)
        if hit < 0:
            return False
        start = max(buf.rfind(b"\n", lo, hit) + 1, lo)
        line = bytes(buf[start : buf.find(b"\n", hit, hi)])
        if filt.too_old(line):
            return True
        event = filt.match(line)
        if event is not None and emit(line, event):
            return True
        for i, pos in enumerate(found):
            if pos >= start:
                found[i] = buf.rfind(needles[i], lo, start)


def _sources(path: str) -> Generator[tuple[str, Callable[[], Iterator[tuple[Any, int, int]]]], None, None]:
    """(name, chunk iterator factory) for the live file, then the segments, newest first."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    live_first: int | None = None
    try:
        if fd is not None:
            size = os.fstat(fd).st_size
            live_first = _seq_of(os.pread(fd, 256, 0))
            yield os.path.basename(path), lambda: _chunks_backward(fd, size)
    finally:
        if fd is not None:
            os.close(fd)
    for seg in reversed(_segments(path, live_first)):
        if live_first is not None and seg.first >= live_first:
            continue  # rotated after we opened the live file: already read

        def chunks(seg: _Segment = seg) -> Iterator[tuple[Any, int, int]]:
            data = _read_segment(seg)
            if data:
                yield from _chunks_backward(data, len(data))

        yield seg.name, chunks


def _oldest_line(buf: Any, lo: int, hi: int) -> bytes:
    return bytes(buf[lo : buf.find(b"\n", lo, hi)])


def _scan(path: str, filt: _Filter, limit: int | None) -> list[tuple[bytes, dict]]:
    """Matching (line, event) pairs, oldest first (see query())."""
    if limit is not None and limit <= 0:
        return []
    if filt.after is not None:
        # Forward paging from a cursor: keep the oldest `limit` matches after it.
        window: deque[tuple[bytes, dict]] = deque(maxlen=limit)

        def emit(line: bytes, event: dict) -> bool:
            window.append((line, event))
            return False
    else:
        newest: list[tuple[bytes, dict]] = []

        def emit(line: bytes, event: dict) -> bool:
            newest.append((line, event))
            return limit is not None and len(newest) >= limit

    sources = _sources(path)
    try:
        for _name, chunks in sources:
            if any(
                _scan_chunk(buf, lo, hi, filt, emit) or filt.too_old(_oldest_line(buf, lo, hi))
                for buf, lo, hi in chunks()
            ):
                break
    finally:
        sources.close()
    if filt.after is not None:
        return list(reversed(window))
    newest.reverse()
    return newest


def query(
    path: Path,
    *,
    limit: int | None = 20,
    severity: str | None = None,
    type: str | None = None,
    order_id: str | None = None,
    host: str | None = None,
    since: str | None = None,
    until: str | None = None,
    after: int | str | None = None,
    user: str | None = None,
) -> list[dict]:
    """Matching events, oldest first.

    Without ``after``: the newest ``limit`` matches (``limit=None``: all).
    With ``after`` (a cursor, i.e. a seq): the oldest ``limit`` matches with
    ``seq > after``, so that passing back the last seq pages forward with
    nothing skipped. ``severity``/``type``/``host``/``user`` take one value or
    several comma-separated ones; ``severity`` also ``warning+`` (and above).
    ``since`` is inclusive, ``until`` exclusive; both accept ISO-8601 (naive
    means UTC) or a relative age such as ``15m``, ``2h``, ``7d``.
    """
    if isinstance(after, str):
        if not after.isdigit():
            raise AuditError(f"cursor must be a non-negative integer (an event's seq), got {after!r}")
        after = int(after)
    filt = _Filter(
        severity=severity, type=type, order_id=order_id, host=host, user=user, since=since, until=until, after=after
    )
    return [event for _line, event in _scan(os.fspath(path), filt, limit)]


def parse_time(text: str, now: float | None = None) -> str:
    """An ISO-8601 time or a relative age (30s, 15m, 2h, 7d, 1w) as the log's
    UTC form ``YYYY-MM-DDTHH:MM:SS.mmmZ``. Naive times are UTC."""
    from datetime import datetime, timedelta

    value = str(text).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    moment: datetime
    if value.lower() == "now":
        moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    elif value[:-1].replace(".", "", 1).isdigit() and value[-1:].lower() in units:
        ago = float(value[:-1]) * units[value[-1].lower()]
        try:
            moment = datetime.fromtimestamp(time.time() if now is None else now, UTC) - timedelta(seconds=ago)
        except (OverflowError, ValueError):
            raise AuditError(f"time {text!r} is too far back") from None
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise AuditError(
                f"cannot read time {text!r}: use ISO-8601 (2026-11-28, 2026-11-28T19:30:00Z,"
                " 2026-11-28T21:30+02:00) or an age like 30s, 15m, 2h, 7d"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def sum_cost(path: Path, by: str, **filters: Any) -> list[dict]:
    """tokens_in, tokens_out and cost of finished orders (COST_TYPES), per host or per day."""
    if by not in ("node", "day"):
        raise AuditError(f"--sum-cost: expected node or day, got {by!r}")
    filters = {k: v for k, v in filters.items() if v is not None}
    filters.setdefault("type", ",".join(COST_TYPES))
    filt = _Filter(**filters)
    rows: dict[str, dict] = {}
    for _line, event in _scan(os.fspath(path), filt, None):
        key = str(event.get("host")) if by == "node" else str(event.get("ts", ""))[:10]
        row = rows.setdefault(key, {by: key, "orders": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0.0})
        row["orders"] += 1
        for name in ("tokens_in", "tokens_out", "cost"):
            value = event.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                row[name] += value
    return [rows[k] for k in sorted(rows)]


def _printable(text: str) -> str:
    """One line, no terminal control sequences: control characters escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text) if not text.isprintable() else text


def format_event(event: dict) -> str:
    """One readable line: time, seq (the cursor), severity, type, order, message."""
    order = event.get("order_id") or "-"
    user = event.get("user")
    message = str(event.get("message") or "")
    if user:
        message = f"[{user}] {message}"
    return (
        f"{event.get('ts', '?')}  {event.get('seq', '?'):>7}  {event.get('severity', '?')!s:<8} "
        f"{_printable(str(event.get('type', '?'))):<20} {_printable(str(order)):<34} {_printable(message)}"
    )
