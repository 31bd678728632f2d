"""The audit trail: an append-only, hash-chained JSONL log on each node.

Format
    One event per line, canonical JSON: ASCII only, no spaces, keys in a fixed
    order: ``ts seq host type severity order_id user message``, then the extra
    data fields sorted by name (nested objects sorted too), then ``prev`` and
    ``hash``::

        {"ts":"2026-11-28T19:27:49.123Z","seq":42,"host":"web1","type":"order_finished",
         "severity":"info","order_id":"…","user":"alice","message":"done","cost":0.01,
         "prev":"<sha256 of event 41>","hash":"<sha256 of this line without hash>"}

    ``hash`` is the sha256 of the canonical JSON of the event without ``hash``,
    i.e. of the line up to ``,"hash"`` followed by ``}``; ``prev`` is the hash
    of the event before (``null`` for the first event of the log). Editing,
    deleting or reordering lines breaks the chain; ``verify()`` finds the first
    broken link without decoding JSON.

Cursor
    ``seq`` numbers the events of one log 1, 2, 3, … across rotations. It is
    the cursor: ``query(after=N)`` returns the events with ``seq > N``, oldest
    first, so a reader resumes by passing back the last seq it saw.

Concurrency and crashes
    Writers (worker threads, ``galaxy order submit``, the health check) take
    ``flock`` on ``<log>.lock`` for each append: rotation replaces the live
    file, so the lock lives on a file that is never replaced. Each writer
    remembers the file's identity, size, last seq and hash after its own
    append and re-reads the tail only when the file changed under it. An
    event is one ``write()`` of a whole line, then ``fdatasync`` when durable.
    A writer that dies mid-write leaves a partial last line: readers ignore
    bytes after the last newline, ``verify()`` reports them as ``torn``, and
    the next writer cuts them off and records an ``audit_repaired`` event
    (size, sha256 and a preview of what it discarded) before its own.

Rotation
    When the live file grows past ``rotate_bytes`` it is renamed to
    ``<log>.<first seq>-<last seq>`` (12 digits each) and a new live file
    starts with an ``audit_rotated`` event chained to the segment's last
    event; the segment is then gzip-compressed to ``….gz`` in the background.
    Queries and verify read the segments too.

Queries
    The newest matches are found by reading the live file backwards in blocks
    and jumping between occurrences of a substring such as
    ``"severity":"error"`` with ``bytes.rfind``; only candidate lines are
    decoded. Canonical encoding makes that prefilter exact (every match
    contains the substring); decoding then removes false positives (the same
    text inside a nested field). ``ts`` and ``seq`` sit at fixed offsets, so
    time and cursor bounds need no decoding either. Scans stop as soon as
    ``limit`` matches are found, and at the first event older than ``since``
    or not after the cursor (events are appended in time order under the lock;
    a clock stepped backwards can hide events from a ``since`` query).

Stdlib only, and imports stay small: ``galaxy audit`` must start fast.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections import deque

# Kept off the import path of `galaxy audit` (start-up time): hashlib,
# threading, pathlib, typing, dataclasses are imported where they are used.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    import threading
    from pathlib import Path
    from typing import Any, Callable, Iterable, Iterator

SEVERITIES = ("debug", "info", "warning", "error", "critical")
CORE_FIELDS = ("ts", "seq", "host", "type", "severity", "order_id", "user", "message")
RESERVED = frozenset(CORE_FIELDS + ("prev", "hash"))
ROTATED = "audit_rotated"
REPAIRED = "audit_repaired"
# Events whose tokens_in/tokens_out/cost --sum-cost adds up: an order's final
# event (the worker writes order_<final state>; tokens spent on a failed or
# cancelled order were spent all the same).
COST_TYPES = ("order_finished", "order_done", "order_failed", "order_cancelled", "order_timed_out",
              "order_interrupted")
MAX_MESSAGE = 8192  # characters; longer messages are cut (data fields are not)

_BLOCK = 64 * 1024  # first backward read; doubles up to _MAX_BLOCK
_MAX_BLOCK = 4 * 1024 * 1024
_TS_AT, _TS_LEN = 7, 24  # '{"ts":"' then 'YYYY-MM-DDTHH:MM:SS.mmmZ'
_SEQ_TAG = b'","seq":'
_SEQ_AT = _TS_AT + _TS_LEN + len(_SEQ_TAG)  # 39
_HASH_TAG = b',"hash":"'
_SUFFIX = len(_HASH_TAG) + 64 + 2  # ,"hash":"<64 hex>"}
_PREV_NULL = b',"prev":null}'
_PREV_TAG = b',"prev":"'
_HEX = frozenset(b"0123456789abcdef")

_dumps = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), sort_keys=True,
                          allow_nan=False, default=str).encode


class AuditError(ValueError):
    """An event or a query that cannot be accepted; the message says why."""


# ---------------------------------------------------------------- encoding --

def _now() -> str:
    ns = time.time_ns()
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + ".%03dZ" % (rest // 1_000_000)


def _seal(fields: Iterable[tuple[str, Any]], prev: str | None) -> tuple[bytes, str]:
    """The canonical line (with newline) of an event and its hash."""
    parts = [f"{_dumps(k)}:{_dumps(v)}" for k, v in fields]
    parts.append('"prev":' + _dumps(prev))
    body = ("{" + ",".join(parts) + "}").encode("ascii")
    digest = _sha256(body).hexdigest()
    return body[:-1] + _HASH_TAG + digest.encode("ascii") + b'"}\n', digest


def _fields(ts: str, seq: int, host: str, type: str, severity: str, order_id: str | None,
            user: str | None, message: str, data: dict[str, Any]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [("ts", ts), ("seq", seq), ("host", host), ("type", type),
                                  ("severity", severity), ("order_id", order_id),
                                  ("user", user), ("message", message)]
    out.extend(sorted(data.items()))
    return out


def _seq_of(line: bytes) -> int | None:
    """seq of a canonical line without decoding it (None if not canonical)."""
    if line[_TS_AT + _TS_LEN:_SEQ_AT] == _SEQ_TAG and line.startswith(b'{"ts":"'):
        end = line.find(b",", _SEQ_AT)
        digits = line[_SEQ_AT:end]
        if end > 0 and digits.isdigit():
            return int(digits)
    return None


def _ts_of(line: bytes) -> bytes | None:
    if line[_TS_AT + _TS_LEN:_SEQ_AT] == _SEQ_TAG and line.startswith(b'{"ts":"'):
        return line[_TS_AT:_TS_AT + _TS_LEN]
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


# ------------------------------------------------------------ segment files --

def _sha256_func() -> Callable[[bytes], Any]:
    from hashlib import sha256

    return sha256


def _sha256(data: bytes) -> Any:
    """hashlib.sha256, imported on first use (queries never need it)."""
    global _sha256
    from hashlib import sha256

    _sha256 = sha256
    return sha256(data)


class _Segment:
    """A rotated segment: ``<log>.<first>-<last>`` or the same with ``.gz``."""

    __slots__ = ("first", "last", "path", "compressed")

    def __init__(self, first: int, last: int, path: str, compressed: bool) -> None:
        self.first, self.last, self.path, self.compressed = first, last, path, compressed

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _segments(path: str, upto: int | None = None) -> list[_Segment]:
    """Rotated segments of the log at ``path``, oldest first (raw preferred over .gz).

    A directory listing taken while a segment is being compressed (``S.gz``
    renamed into place, then ``S`` removed) may show neither name: readdir
    makes no promise about entries renamed or removed during the listing. A
    hole in the chain (or before ``upto``, the first seq of the live file) is
    therefore listed again, a few times, before it is believed (a deleted
    segment is then what verify() reports)."""
    segs = _list_segments(path)
    for _ in range(5):
        if _contiguous(segs, upto):
            break
        segs = _list_segments(path)
    return segs


def _contiguous(segs: list[_Segment], upto: int | None) -> bool:
    for older, newer in zip(segs, segs[1:]):
        if older.last + 1 != newer.first:
            return False
    if upto is not None:
        before = [seg for seg in segs if seg.first < upto]
        if before and before[-1].last + 1 != upto:
            return False
    return True


def _list_segments(path: str) -> list[_Segment]:
    directory, base = os.path.split(path)
    prefix = base + "."
    found: dict[tuple[int, int], _Segment] = {}
    try:
        names = os.listdir(directory or ".")
    except FileNotFoundError:
        return []
    for name in names:
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix):]
        compressed = rest.endswith(".gz")
        if compressed:
            rest = rest[:-3]
        first, sep, last = rest.partition("-")
        if not (sep and first.isdigit() and last.isdigit()):
            continue
        key = (int(first), int(last))
        if key in found and not found[key].compressed:
            continue
        found[key] = _Segment(key[0], key[1], os.path.join(directory, name), compressed)
    return [found[k] for k in sorted(found)]


def _segment_name(path: str, first: int, last: int) -> str:
    return f"{os.path.basename(path)}.{first:012d}-{last:012d}"


def _read_segment(seg: _Segment) -> bytes | None:
    """The whole (decompressed) content of a segment, or None if it vanished."""
    import zlib

    candidates = [seg.path] if seg.compressed else [seg.path, seg.path + ".gz"]
    for p in candidates:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        if p.endswith(".gz"):
            d = zlib.decompressobj(wbits=31)
            out = [d.decompress(data)]
            while d.unused_data:  # several gzip members
                rest = d.unused_data
                d = zlib.decompressobj(wbits=31)
                out.append(d.decompress(rest))
            return b"".join(out)
        return data
    return None


def _fsync_dir(path: str) -> None:
    fd = os.open(path or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def compress_segments(path: str | os.PathLike[str]) -> list[str]:
    """Gzip the raw (uncompressed) segments of the log; returns the .gz files made.

    Safe to run from several processes: each raw segment is flocked while it
    is compressed, and the .gz appears by rename only when complete.
    """
    import zlib

    path = os.fspath(path)
    directory = os.path.dirname(path)
    made: list[str] = []
    for seg in _segments(path):
        if seg.compressed:
            continue
        try:
            fd = os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is compressing it
            try:
                if os.stat(seg.path).st_ino != os.fstat(fd).st_ino:
                    continue
            except FileNotFoundError:
                continue
            gz = seg.path + ".gz"
            tmp = os.path.join(directory, "." + seg.name + ".gz.tmp")
            try:
                out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
                try:
                    comp = zlib.compressobj(6, zlib.DEFLATED, 31)
                    while chunk := os.read(fd, 1 << 20):
                        _write_all(out, comp.compress(chunk))
                    _write_all(out, comp.flush())
                    os.fsync(out)
                finally:
                    os.close(out)
                os.rename(tmp, gz)
            except OSError:
                _unlink_quietly(tmp)
                raise
            _fsync_dir(directory)
            os.unlink(seg.path)
            _fsync_dir(directory)
            made.append(gz)
        finally:
            os.close(fd)
    return made


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


# ------------------------------------------------------------------ writer --

class AuditLog:
    """Appends events to one node's audit log; safe across threads and processes."""

    rotate_retry_s = 30.0  # after a failed rotation, wait this long before trying again

    def __init__(self, path: Path, host: str, *, rotate_bytes: int = 64 * 1024 * 1024,
                 durable: bool = True) -> None:
        import threading
        from pathlib import Path

        self.path = Path(path)
        self._p = os.fspath(path)  # str paths below: cheaper than Path in the hot path
        self._dir = os.path.dirname(self._p)
        self.host = host
        self.rotate_bytes = rotate_bytes
        self.durable = durable
        self._lock_path = self._p + ".lock"
        self._mutex = threading.Lock()
        self._pid = os.getpid()
        self._lock_fd: int | None = None
        self._fd: int | None = None
        self._ident: tuple[int, int] | None = None  # (st_dev, st_ino) of the live file in _fd
        self._size = -1  # live file size after our last write
        self._seq = 0
        self._hash: str | None = None
        self._compressors: list[threading.Thread] = []
        self._rotate_after = 0.0  # time.monotonic() before which no rotation is tried
        self.path.parent.mkdir(parents=True, exist_ok=True)

    # -- public --

    def append(self, type: str, *, severity: str = "info", message: str = "",
               order_id: str | None = None, user: str | None = None, sync: bool = True,
               **data: Any) -> dict:
        """Write one event and return it as written. Raises AuditError for a bad
        event and OSError (e.g. ENOSPC) when it cannot be written; nothing
        partial stays in the log either way.

        ``sync=False`` skips the fdatasync for an intermediate event: it is in
        the page cache (safe from a process crash) and reaches the disk with
        the next synced event, which always follows it in the same file."""
        if not isinstance(type, str) or not type:
            raise AuditError(f"event type must be a non-empty string, got {type!r}")
        if severity not in SEVERITIES:
            raise AuditError(f"severity must be one of {', '.join(SEVERITIES)}, got {severity!r}")
        for name, value in (("order_id", order_id), ("user", user)):
            if value is not None and not isinstance(value, str):
                raise AuditError(f"{name} must be a string or None, got {value!r}")
        message = "" if message is None else str(message)
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…[truncated]"
        bad = RESERVED.intersection(data)
        if bad:
            raise AuditError(f"data field names clash with event fields: {', '.join(sorted(bad))}")
        rotated = False
        with self._guard():
            self._flock()
            try:
                fd = self._current()
                try:
                    line, digest = _seal(_fields(_now(), self._seq + 1, self.host, type, severity,
                                                 order_id, user, message, data), self._hash)
                except (TypeError, ValueError) as exc:
                    raise AuditError(f"event data cannot be written as JSON: {exc}") from None
                self._write(fd, line, sync)
                self._seq += 1
                self._hash = digest
                if self._size > self.rotate_bytes and time.monotonic() >= self._rotate_after:
                    rotated = self._rotate()
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            if rotated:
                self._compress_in_background()
        return json.loads(line)

    def close(self) -> None:
        """Close the files and wait for a running segment compression (an
        append after close() opens them again: events are never refused)."""
        with self._guard():
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._lock_fd = None
            self._ident = None
            workers, self._compressors = self._compressors, []
        for worker in workers:
            worker.join()

    def __enter__(self) -> "AuditLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --

    def _guard(self) -> threading.Lock:
        if os.getpid() != self._pid:
            import threading

            # A forked child shares our open file descriptions, and with them
            # our flock: it must open its own.
            self._pid = os.getpid()
            self._mutex = threading.Lock()
            for fd in (self._fd, self._lock_fd):
                if fd is not None:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            self._fd = self._lock_fd = None
            self._ident = None
            self._size = -1
            self._compressors = []
        return self._mutex

    def _flock(self) -> None:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)

    def _current(self) -> int:
        """The fd of the live file, with _seq/_hash at its tail (lock held)."""
        try:
            st = os.stat(self._p)
        except FileNotFoundError:
            st = None
        if st is not None and self._fd is not None and (st.st_dev, st.st_ino) == self._ident:
            if st.st_size == self._size:
                return self._fd  # nobody wrote since our last append: no parsing
        else:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._fd = os.open(self._p, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
            if st is None and self.durable:
                _fsync_dir(self._dir)
            st = os.fstat(self._fd)
            self._ident = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._load_tail(self._fd)
        return self._fd

    def _load_tail(self, fd: int) -> None:
        """Set _seq/_hash from the live file's last event, repairing a torn tail."""
        size = self._size
        torn = b""
        tail: tuple[int, str] | None = None
        if size > 0:
            last_nl, block = -1, _BLOCK
            while True:
                start = max(0, size - block)
                buf = os.pread(fd, size - start, start)
                last_nl = buf.rfind(b"\n")
                if last_nl >= 0 or start == 0:
                    break
                block *= 2
            keep = start + last_nl + 1  # 0 when there is no complete line at all
            if keep < size:
                torn = os.pread(fd, size - keep, keep)
                os.ftruncate(fd, keep)
                if self.durable:
                    os.fsync(fd)
                self._size = size = keep
            tail = _last_event(fd, size)
            if tail is not None:
                self._seq, self._hash = tail
        if size == 0 or tail is None:  # nothing to chain on in the live file
            self._seq, self._hash = 0, None
            segs = _segments(self._p)
            if segs:
                # The live file is new but segments exist: a rotation was cut
                # short by a crash, or someone removed the live file. Chain on.
                seg = segs[-1]
                data = _read_segment(seg)
                tail = _last_event(data, len(data)) if data else None
                if tail is not None:
                    self._seq, self._hash = tail
                else:
                    self._seq = seg.last
                self._emit(fd, ROTATED, "warning",
                           f"started a new live file after {seg.name} (interrupted rotation?)",
                           {"segment": _segment_name(self._p, seg.first, seg.last),
                            "first_seq": seg.first, "last_seq": seg.last, "resumed": True})
        if torn:
            preview = torn[:200].decode("utf-8", "replace")
            self._emit(fd, REPAIRED, "warning",
                       f"discarded a torn last line of {len(torn)} bytes left by an interrupted write",
                       {"bytes": len(torn), "sha256": _sha256(torn).hexdigest(),
                        "preview": preview})

    def _emit(self, fd: int, type: str, severity: str, message: str, data: dict[str, Any]) -> None:
        line, digest = _seal(_fields(_now(), self._seq + 1, self.host, type, severity, None, None,
                                     message, data), self._hash)
        self._write(fd, line)
        self._seq += 1
        self._hash = digest

    def _write(self, fd: int, line: bytes, sync: bool = True) -> None:
        before = self._size
        try:
            n = os.write(fd, line)
            if n != len(line):  # only on a nearly full disk; still under our lock
                _write_all(fd, line[n:])
            if self.durable and sync:
                os.fdatasync(fd)
        except OSError:
            try:
                os.ftruncate(fd, before)
            except OSError:
                pass
            self._size = -1  # make the next append re-read the tail
            raise
        self._size = before + len(line)

    def _rotate(self) -> bool:
        """Move the live file to a segment and start a new one (lock held).

        The event that triggered it is already written, so a failure here (a
        full disk, say) is logged, not raised: the next append tries again.
        Returns whether a segment was made.
        """
        assert self._fd is not None
        first = _seq_of(os.pread(self._fd, 256, 0)) or 1
        last = self._seq
        name = _segment_name(self._p, first, last)
        line, digest = _seal(_fields(_now(), last + 1, self.host, ROTATED, "info", None, None,
                                     f"rotated events {first}..{last} into {name}.gz",
                                     {"segment": name, "first_seq": first, "last_seq": last}),
                             self._hash)
        tmp = os.path.join(self._dir, f".{os.path.basename(self._p)}.rotate.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
            try:
                _write_all(fd, line)
                if self.durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(self._p, os.path.join(self._dir, name))
        except OSError as exc:
            _unlink_quietly(tmp)
            self._rotate_after = time.monotonic() + self.rotate_retry_s
            _warn(f"cannot rotate {self._p} (will retry in {self.rotate_retry_s:.0f} s): {exc}")
            return False
        os.close(self._fd)
        self._fd, self._ident, self._size = None, None, -1
        try:
            os.rename(tmp, self._p)
            if self.durable:
                _fsync_dir(self._dir)
            self._fd = os.open(self._p, os.O_RDWR | os.O_APPEND | os.O_CLOEXEC)
        except OSError as exc:
            # The segment is in place; the next append starts a live file chained to it.
            _unlink_quietly(tmp)
            _warn(f"rotated {self._p} but could not start the new live file (will retry): {exc}")
            return True
        st = os.fstat(self._fd)
        self._ident = (st.st_dev, st.st_ino)
        self._size = st.st_size
        self._seq = last + 1
        self._hash = digest
        return True

    def _compress_in_background(self) -> None:
        # Threads (and processes) compressing at once skip each other's
        # segments: each raw segment is flocked while it is compressed.
        import threading

        worker = threading.Thread(target=_compress_quietly, args=(self._p,),
                                  name="audit-compress", daemon=True)
        self._compressors = [t for t in self._compressors if t.is_alive()] + [worker]
        worker.start()


def _warn(message: str) -> None:
    import logging

    logging.getLogger("galaxy.audit").warning("%s", message)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _compress_quietly(path: str) -> None:
    try:
        compress_segments(path)
    except OSError as exc:  # the raw segment stays readable; the next rotation retries
        _warn(f"cannot compress the segments of {path} (will retry): {exc}")


def _last_event(src: int | bytes, size: int) -> tuple[int, str] | None:
    """(seq, hash) of the last well-formed event among the complete lines."""
    for buf, lo, hi in _chunks_backward(src, size):
        end = hi
        while end > lo:
            start = max(buf.rfind(b"\n", lo, end - 1) + 1, lo)
            line = bytes(buf[start:end - 1])
            seq, h = _seq_of(line), _hash_of(line)
            if seq is not None and h is not None:
                return seq, h
            end = start
    return None


# ------------------------------------------------------------------ reader --

def _chunks_backward(src: int | bytes, size: int) -> Iterator[tuple[Any, int, int]]:
    """The complete lines of [0, size) as ``(buffer, lo, hi)``, newest first.

    ``buffer[lo:hi]`` is a run of whole lines (``hi`` just after a newline);
    bytes after the last newline (a torn or half-written line) are left out.
    ``src`` is a file descriptor, read backwards in growing blocks into one
    reused buffer (so a range is valid only until the next one is asked for),
    or a bytes object (one range, no copy).
    """
    if not isinstance(src, int):
        hi = src.rfind(b"\n", 0, size) + 1
        if hi > 0:
            yield src, 0, hi
        return
    pos, block, tail_done = size, _BLOCK, False
    buf = bytearray(0)
    while pos > 0:
        start = max(0, pos - block)
        if len(buf) < pos - start:
            buf = bytearray(pos - start)  # reused: fresh big buffers cost page faults
        end = os.preadv(src, [memoryview(buf)[:pos - start]], start)
        hi = end
        if not tail_done:
            k = buf.rfind(b"\n", 0, end)
            if k < 0:
                if start == 0:
                    return
                block *= 2
                continue
            hi = k + 1
            pos = start + hi
            tail_done = True
        lo = 0
        if start > 0:
            k = buf.find(b"\n", 0, hi)
            if k < 0 or k + 1 == hi:  # one line longer than the block
                block *= 2
                continue
            lo = k + 1
            pos = start + lo
        else:
            pos = 0
        yield buf, lo, hi
        block = min(block * 2, _MAX_BLOCK)


class _Filter:
    """The match test: cheap substring checks on the raw line, then exact checks."""

    def __init__(self, *, severity: Any = None, type: Any = None, order_id: Any = None,
                 host: Any = None, user: Any = None, since: str | None = None,
                 until: str | None = None, after: int | None = None) -> None:
        self.exact: list[tuple[str, frozenset[str]]] = []
        self.needles: list[tuple[bytes, ...]] = []
        # most selective first: its needle drives the scan
        for name, value in (("order_id", order_id), ("type", type), ("severity", severity),
                            ("host", host), ("user", user)):
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
            raise AuditError(f"unknown severity {v!r}: expected one of {', '.join(SEVERITIES)}"
                             " (add + for that level and above, e.g. warning+)")
        out.extend(SEVERITIES[SEVERITIES.index(v):] if at_least else [v])
    return sorted(set(out))


def _scan_chunk(buf: Any, lo: int, hi: int, filt: _Filter, emit: Callable[[bytes, dict], bool]) -> bool:
    """Offer the matching lines of buf[lo:hi], newest first; True = stop the whole scan."""
    end = hi
    needles = filt.primary
    if not needles:
        while end > lo:
            start = max(buf.rfind(b"\n", lo, end - 1) + 1, lo)
            line = bytes(buf[start:end - 1])
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
        line = bytes(buf[start:buf.find(b"\n", hit, hi)])
        if filt.too_old(line):
            return True
        event = filt.match(line)
        if event is not None and emit(line, event):
            return True
        for i, pos in enumerate(found):
            if pos >= start:
                found[i] = buf.rfind(needles[i], lo, start)


def _sources(path: str) -> Iterator[tuple[str, Callable[[], Iterator[tuple[Any, int, int]]]]]:
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
    return bytes(buf[lo:buf.find(b"\n", lo, hi)])


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
            if any(_scan_chunk(buf, lo, hi, filt, emit) or filt.too_old(_oldest_line(buf, lo, hi))
                   for buf, lo, hi in chunks()):
                break
    finally:
        sources.close()
    if filt.after is not None:
        return list(reversed(window))
    newest.reverse()
    return newest


def query(path: Path, *, limit: int | None = 20, severity: str | None = None,
          type: str | None = None, order_id: str | None = None, host: str | None = None,
          since: str | None = None, until: str | None = None, after: int | str | None = None,
          user: str | None = None) -> list[dict]:
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
    filt = _Filter(severity=severity, type=type, order_id=order_id, host=host, user=user,
                   since=since, until=until, after=after)
    return [event for _line, event in _scan(os.fspath(path), filt, limit)]


def parse_time(text: str, now: float | None = None) -> str:
    """An ISO-8601 time or a relative age (30s, 15m, 2h, 7d, 1w) as the log's
    UTC form ``YYYY-MM-DDTHH:MM:SS.mmmZ``. Naive times are UTC."""
    from datetime import datetime, timedelta, timezone

    value = str(text).strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    moment: datetime
    if value.lower() == "now":
        moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
    elif value[:-1].replace(".", "", 1).isdigit() and value[-1:].lower() in units:
        ago = float(value[:-1]) * units[value[-1].lower()]
        try:
            moment = (datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
                      - timedelta(seconds=ago))
        except (OverflowError, ValueError):
            raise AuditError(f"time {text!r} is too far back") from None
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise AuditError(f"cannot read time {text!r}: use ISO-8601 (2026-11-28, 2026-11-28T19:30:00Z,"
                             " 2026-11-28T21:30+02:00) or an age like 30s, 15m, 2h, 7d") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


# ------------------------------------------------------------------ verify --

class VerifyReport:
    """``ok``; ``count`` = events checked (up to the break); ``broken`` = None or
    ``{"segment", "line", "seq", "reason", "detail"}``; the seq range checked and
    the number of rotated segments read (the live file not counted)."""

    def __init__(self, ok: bool, count: int, broken: dict | None = None, first_seq: int | None = None,
                 last_seq: int | None = None, segments: int = 0) -> None:
        self.ok, self.count, self.broken = ok, count, broken
        self.first_seq, self.last_seq, self.segments = first_seq, last_seq, segments

    def __repr__(self) -> str:
        return "VerifyReport(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def to_dict(self) -> dict:
        return {"ok": self.ok, "count": self.count, "broken": self.broken,
                "first_seq": self.first_seq, "last_seq": self.last_seq, "segments": self.segments}


_REASONS = {
    "edited": "the event's content does not match its hash (changed after it was written)",
    "deleted": "events are missing before this one",
    "reordered": "events are out of order",
    "duplicated": "an event appears twice",
    "torn": "the last line is incomplete: a writer was interrupted mid-write (not tampering;"
            " readers skip it and the next append repairs it)",
}


def _snapshot(path: str) -> tuple[int | None, int, list[_Segment]]:
    """Open the live file and list segments while no writer is mid-append."""
    lock_fd = None
    try:
        lock_fd = os.open(path + ".lock", os.O_RDONLY | os.O_CLOEXEC)
        fcntl.flock(lock_fd, fcntl.LOCK_SH)
    except OSError:
        lock_fd = None  # no lock file (no writer yet) or not ours to open: read as is
    try:
        try:
            fd: int | None = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            size = os.fstat(fd).st_size
        except FileNotFoundError:
            fd, size = None, 0
        live_first = _seq_of(os.pread(fd, 256, 0)) if fd is not None else None
        return fd, size, _segments(path, live_first)
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _chunks_forward(read: Callable[[int, int], bytes], size: int,
                    block: int = 8 * 1024 * 1024) -> Iterator[tuple[bytes, bool]]:
    """(chunk of whole lines, is_last) forward; the last chunk may end in a partial line."""
    pos = 0
    carry = b""
    while pos < size:
        got = read(pos, min(block, size - pos))
        buf = carry + got
        pos += len(got)
        if pos >= size or not got:  # the end (or the file shrank under us)
            if buf:
                yield buf, True
            return
        k = buf.rfind(b"\n")
        carry = buf[k + 1:]
        if k >= 0:
            yield buf[:k + 1], False


class _Verifier:
    """Walks the lines of all sources in order and stops at the first broken link."""

    def __init__(self) -> None:
        self.count = 0
        self.first_seq: int | None = None
        self.last_seq: int | None = None
        self.last_hash: str | None = None
        self.last_at: tuple[str, int] = ("", 0)  # (source, line) of the last good event
        self.broken: dict | None = None
        self.pending: dict | None = None  # a gap: deleted, unless the missing seq turns up soon
        self.lookahead = 0
        self.next_seq_tag = b""  # '","seq":<last+1>,' as the next line must have it at offset 31
        self.prev_tag = b""  # ',"prev":"<last hash>"' as the next line must end its body with it

    def feed(self, source: str, data: bytes, line_no: int, final: bool) -> int:
        """Check the lines of ``data`` (whole lines unless ``final``); returns the last line number."""
        pos, n = 0, len(data)
        find = data.find
        sha = _sha256_func()
        seq_at = _SEQ_AT - len(_SEQ_TAG)
        while pos < n and self.broken is None:
            nl = find(b"\n", pos)
            if nl < 0:  # only in the final chunk
                if final and self.pending is None:
                    self._break(source, line_no + 1, (self.last_seq or 0) + 1, "torn")
                    return line_no + 1
                nl = n
            line = data[pos:nl]
            pos = nl + 1
            line_no += 1
            if self.pending is None:
                # Fast path: the line carries the expected seq and prev, and its hash.
                cut = len(line) - _SUFFIX
                if (self.last_seq is not None and line.startswith(self.next_seq_tag, seq_at)
                        and line.endswith(self.prev_tag, 0, cut) and line.endswith(b'"}')
                        and line.startswith(_HASH_TAG, cut)):
                    digest = sha(line[:cut] + b"}").hexdigest()
                    if line[cut + len(_HASH_TAG):-2] == digest.encode():
                        self._advance(source, line_no, self.last_seq + 1, digest)
                        continue
                self._check(source, line_no, line)
            elif _seq_of(line) == self.pending["expect"]:
                self.pending["reason"] = "reordered"
                self.pending["detail"] = f"seq {self.pending['seq']} comes before seq {self.pending['expect']}"
                self.finish()
            else:
                self.lookahead -= 1
                if self.lookahead <= 0:
                    self.finish()
        return line_no

    def _check(self, source: str, line_no: int, line: bytes) -> None:
        parts = _split_line(line)
        if parts is None:
            seq = _seq_of(line)
            detail = None
            if _hash_of(line) is None:
                detail = "the line is not a well-formed event (damaged or hand-made)"
            self._break(source, line_no, seq, "edited", detail)
            return
        seq, prev, digest = parts
        if self.last_seq is None:
            # The oldest event we have: the start of the log (seq 1), or the
            # rotation event that opens a file whose older segments were removed.
            if not (seq == 1 and prev is None) and _type_of(line) != ROTATED:
                self._break(source, line_no, seq, "deleted",
                            f"the log starts at seq {seq}: the events before it are missing")
                return
            self.first_seq = seq
        elif prev != self.last_hash or seq != self.last_seq + 1:
            expect = self.last_seq + 1
            if seq == self.last_seq and digest == self.last_hash:
                self._break(source, line_no, seq, "duplicated")
            elif seq < expect:
                self._break(source, line_no, seq, "reordered", f"seq {seq} comes after seq {self.last_seq}")
            elif seq == expect:
                at_source, at_line = self.last_at
                self._break(at_source, at_line, self.last_seq, "edited",
                            f"event seq {self.last_seq} was replaced and re-hashed:"
                            f" the prev of seq {seq} does not match it")
            else:
                self.pending = {"segment": source, "line": line_no, "seq": seq, "reason": "deleted",
                                "detail": f"expected seq {expect} after seq {self.last_seq}, found seq {seq}",
                                "expect": expect}
                self.lookahead = 1000
            return
        self._advance(source, line_no, seq, digest)

    def _advance(self, source: str, line_no: int, seq: int, digest: str) -> None:
        self.count += 1
        self.last_seq = seq
        self.last_hash = digest
        self.last_at = (source, line_no)
        self.next_seq_tag = b'","seq":%d,' % (seq + 1)
        self.prev_tag = b',"prev":"' + digest.encode("ascii") + b'"'

    def _break(self, source: str, line_no: int, seq: int | None, reason: str,
               detail: str | None = None) -> None:
        self.broken = {"segment": source, "line": line_no, "seq": seq, "reason": reason,
                       "detail": detail or _REASONS[reason]}

    def finish(self) -> None:
        if self.pending is not None:
            p, self.pending = self.pending, None
            del p["expect"]
            self.broken = p


def _type_of(line: bytes) -> str | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event.get("type") if isinstance(event, dict) else None


def _verify_source(v: _Verifier, name: str, read: Callable[[int, int], bytes], size: int,
                   live: bool) -> None:
    line_no = 0
    for chunk, last in _chunks_forward(read, size):
        line_no = v.feed(name, chunk, line_no, last and live)
        if v.broken is not None:
            return


def verify(path: Path) -> VerifyReport:
    """Check the hash chain over all segments and the live file.

    Reports the first broken link: ``{"segment", "line", "seq", "reason",
    "detail"}`` with reason ``edited`` (a line changed, was replaced and
    re-hashed, or is not an event at all), ``deleted``, ``reordered``,
    ``duplicated`` or ``torn`` (an incomplete last line left by an
    interrupted write: not tampering, and the next append repairs it).
    The last event cannot be checked against anything after it; keep a copy of
    the newest hash elsewhere (the control node does) to detect a rewritten tail.
    """
    path = os.fspath(path)
    live = os.path.basename(path)
    fd, size, segs = _snapshot(path)
    v = _Verifier()
    try:
        live_first = _seq_of(os.pread(fd, 256, 0)) if fd is not None else None
        used_segments = 0
        for seg in segs:  # one (decompressed) segment in memory at a time
            if v.broken is not None or (live_first is not None and seg.first >= live_first):
                continue
            data = _read_segment(seg)
            if data is None:
                continue
            used_segments += 1
            _verify_source(v, seg.name, lambda off, n, d=data: d[off:off + n], len(data), False)
            del data
        if fd is not None and v.broken is None:
            _verify_source(v, live, lambda off, n: os.pread(fd, n, off), size, True)
        v.finish()
    finally:
        if fd is not None:
            os.close(fd)
    return VerifyReport(ok=v.broken is None, count=v.count, broken=v.broken,
                        first_seq=v.first_seq, last_seq=v.last_seq, segments=used_segments)


# --------------------------------------------------------------- cost sums --

def event_hash(event: dict) -> str:
    """Recompute an event's hash from its fields (what the writer sealed)."""
    data = {k: v for k, v in event.items() if k not in RESERVED}
    fields = _fields(event["ts"], event["seq"], event["host"], event["type"], event["severity"],
                     event.get("order_id"), event.get("user"), event.get("message", ""), data)
    return _seal(fields, event.get("prev"))[1]


def verify_since(path: Path, seq: int, digest: str | None) -> tuple[bool, int, str | None, str]:
    """Check the events after ``seq`` (whose hash was ``digest``): each must
    follow the one before and hash to what it says. Returns (ok, last seq,
    last hash, reason). For a health check that runs often: it reads only
    what was added since the last run."""
    last_seq, last_hash = seq, digest
    while True:
        events = query(path, after=last_seq, limit=1000)
        for event in events:
            if event["seq"] != last_seq + 1 and last_seq:
                return False, last_seq, last_hash, f"event {last_seq + 1} is missing (deleted)"
            if last_hash is not None and event.get("prev") != last_hash:
                return False, last_seq, last_hash, f"event {event['seq']} does not follow event {last_seq}"
            if event_hash(event) != event.get("hash"):
                return False, last_seq, last_hash, f"event {event['seq']} was edited (hash mismatch)"
            last_seq, last_hash = event["seq"], event["hash"]
        if len(events) < 1000:
            return True, last_seq, last_hash, "intact"


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


# --------------------------------------------------------------------- CLI --

def _printable(text: str) -> str:
    """One line, no terminal control sequences: control characters escaped."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text) \
        if not text.isprintable() else text


def format_event(event: dict) -> str:
    """One readable line: time, seq (the cursor), severity, type, order, message."""
    order = event.get("order_id") or "-"
    user = event.get("user")
    message = str(event.get("message") or "")
    if user:
        message = f"[{user}] {message}"
    return (f"{event.get('ts', '?')}  {event.get('seq', '?'):>7}  {str(event.get('severity', '?')):<8} "
            f"{_printable(str(event.get('type', '?'))):<20} {_printable(str(order)):<34} {_printable(message)}")


def _time_arg(text: str) -> str:
    import argparse

    try:
        return parse_time(text)
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    import argparse

    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _severity_arg(text: str) -> str:
    import argparse

    try:
        _severities(_as_values("severity", text) or [])
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: "argparse.ArgumentParser") -> None:
    """The flags of `galaxy audit`."""
    parser.add_argument("--limit", type=_count_arg, default=20, metavar="N",
                        help="show the newest N matching events (default 20; 0 = all)")
    parser.add_argument("--severity", type=_severity_arg, metavar="S",
                        help=f"only this severity ({'/'.join(SEVERITIES)}); comma-separated for several,"
                             " S+ for S and above")
    parser.add_argument("--type", metavar="T", help="only events of this type (comma-separated for several)")
    parser.add_argument("--order", metavar="ID", help="only events of this order")
    parser.add_argument("--host", metavar="H", help="only events written by this host")
    parser.add_argument("--user", metavar="U", help="only events of this user")
    parser.add_argument("--since", type=_time_arg, metavar="T",
                        help="events at or after T: ISO-8601 (UTC unless it has an offset) or an age: 30m, 2h, 7d")
    parser.add_argument("--until", type=_time_arg, metavar="T", help="events before T (same forms as --since)")
    parser.add_argument("--after", type=_count_arg, metavar="CURSOR",
                        help="events after this seq, oldest first (page on with the last seq shown)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--verify", action="store_true",
                        help="check the hash chain; exit 1 and show the first broken link if any")
    parser.add_argument("--sum-cost", choices=("node", "day"),
                        help="sum tokens_in/tokens_out/cost of finished orders (order_done, order_failed, …)"
                             " per node or per day")
    parser.add_argument("--file", metavar="PATH",
                        help="read this audit log instead of the configured one")


def run(args: "argparse.Namespace", config: Any) -> int:
    """`galaxy audit`: 0 = done, 1 = broken chain or unreadable log, 2 = bad usage or config.

    ``config`` is a galaxy_fleet.config.Config, or None to load it only when
    --file is not given (keeps the YAML loader off the fast path).
    """
    path = args.file
    if path is None:
        if config is None:
            from galaxy_fleet import config as config_mod

            try:
                config = config_mod.load(getattr(args, "config", None))
            except config_mod.ConfigError as exc:
                print(f"galaxy audit: {exc}", file=sys.stderr)
                return 2
        path = config.audit.path
    path = os.fspath(path)
    out = sys.stdout
    try:
        if args.verify:
            report = verify(path)
            if args.json:
                out.write(json.dumps(report.to_dict()) + "\n")
            elif report.ok:
                span = f", seq {report.first_seq}..{report.last_seq}" if report.count else ""
                out.write(f"OK: {report.count} events verified in {report.segments} segment(s)"
                          f" and the live file{span}\n")
            else:
                b = report.broken or {}
                out.write(f"BROKEN: {b.get('segment')} line {b.get('line')} (seq {b.get('seq')}): "
                          f"{b.get('reason')}: {b.get('detail')}\n")
                out.write(f"{report.count} events verified before the break\n")
            return 0 if report.ok else 1
        filters = {"severity": args.severity, "type": args.type, "order_id": args.order,
                   "host": args.host, "user": args.user, "since": args.since, "until": args.until}
        if args.sum_cost:
            if args.after is not None:
                filters["after"] = args.after
            rows = sum_cost(path, args.sum_cost, **filters)
            if args.json:
                for row in rows:
                    out.write(json.dumps(row) + "\n")
            else:
                key = args.sum_cost
                out.write(f"{key:<24} {'orders':>8} {'tokens_in':>12} {'tokens_out':>12} {'cost':>12}\n")
                total = {"orders": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0.0}
                for row in rows:
                    out.write(f"{_printable(str(row[key])):<24} {row['orders']:>8} {row['tokens_in']:>12} "
                              f"{row['tokens_out']:>12} {row['cost']:>12.4f}\n")
                    for k in total:
                        total[k] += row[k]
                out.write(f"{'TOTAL':<24} {total['orders']:>8} {total['tokens_in']:>12} "
                          f"{total['tokens_out']:>12} {total['cost']:>12.4f}\n")
            return 0
        filt = _Filter(after=args.after, **filters)
        found = _scan(path, filt, args.limit or None)
        if args.json:
            out.flush()
            sys.stdout.buffer.write(b"".join(line + b"\n" for line, _event in found))
            sys.stdout.buffer.flush()
        else:
            out.write("".join(format_event(event) + "\n" for _line, event in found))
        if not found and not os.path.exists(path) and not _segments(path):
            print(f"galaxy audit: no audit log at {path} yet", file=sys.stderr)
        return 0
    except AuditError as exc:
        print(f"galaxy audit: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `galaxy audit | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"galaxy audit: cannot read {exc.filename or path}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m galaxy_fleet.audit` (the same as `galaxy audit`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="galaxy audit",
                                     description="Query and verify the node's audit trail.")
    parser.add_argument("--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or /etc/galaxy/config.yml)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, None)

