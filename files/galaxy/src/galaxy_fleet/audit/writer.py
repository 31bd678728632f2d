"""The writer: ``AuditLog`` appends sealed events under ``flock``, repairs a
torn tail, rotates the live file into segments and gzip-compresses them in
the background. See the package's documentation for the format and the
guarantees.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from galaxy_fleet.audit.chain import (
    LOG_ID,
    MAX_MESSAGE,
    REPAIRED,
    RESERVED,
    ROTATED,
    SEVERITIES,
    AuditError,
    _fields,
    _now,
    _seal,
    _seq_of,
    _sha256,
    log_id_of,
    new_log_id,
)
from galaxy_fleet.audit.segments import (
    _BLOCK,
    _first_line,
    _fsync_dir,
    _last_event,
    _read_segment,
    _segment_name,
    _segments,
    _unlink_quietly,
    _write_all,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading
    from pathlib import Path
    from typing import Any

    from galaxy_fleet.config import Config


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


class AuditLog:
    """Appends events to one node's audit log; safe across threads and processes."""

    rotate_retry_s = 30.0  # after a failed rotation, wait this long before trying again

    def __init__(self, path: Path, host: str, *, rotate_bytes: int = 64 * 1024 * 1024, durable: bool = True) -> None:
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

    def append(
        self,
        type: str,
        *,
        severity: str = "info",
        message: str = "",
        order_id: str | None = None,
        user: str | None = None,
        sync: bool = True,
        **data: Any,
    ) -> dict:
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
        if bad or LOG_ID in data:
            bad = bad.union({LOG_ID} & data.keys())
            raise AuditError(f"data field names clash with event fields: {', '.join(sorted(bad))}")
        rotated = False
        with self._guard():
            lock_fd = self._flock()
            try:
                fd = self._current()
                if self._seq == 0:  # the first event of a new log carries its identity
                    data = {**data, LOG_ID: new_log_id()}
                try:
                    line, digest = _seal(
                        _fields(_now(), self._seq + 1, self.host, type, severity, order_id, user, message, data),
                        self._hash,
                    )
                except (TypeError, ValueError) as exc:
                    raise AuditError(f"event data cannot be written as JSON: {exc}") from None
                self._write(fd, line, sync)
                self._seq += 1
                self._hash = digest
                if self._size > self.rotate_bytes and time.monotonic() >= self._rotate_after:
                    rotated = self._rotate()
            finally:
                fcntl.flock(lock_fd, fcntl.LOCK_UN)
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

    def __enter__(self) -> AuditLog:
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

    def _flock(self) -> int:
        if self._lock_fd is None:
            self._lock_fd = os.open(self._lock_path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o640)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self._lock_fd

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
                log_id = log_id_of(data[: data.find(b"\n")]) if data else None
                self._emit(
                    fd,
                    ROTATED,
                    "warning",
                    f"started a new live file after {seg.name} (interrupted rotation?)",
                    {
                        "segment": _segment_name(self._p, seg.first, seg.last),
                        "first_seq": seg.first,
                        "last_seq": seg.last,
                        "resumed": True,
                        LOG_ID: log_id or new_log_id(),
                    },
                )
        if torn:
            preview = torn[:200].decode("utf-8", "replace")
            self._emit(
                fd,
                REPAIRED,
                "warning",
                f"discarded a torn last line of {len(torn)} bytes left by an interrupted write",
                {"bytes": len(torn), "sha256": _sha256(torn).hexdigest(), "preview": preview},
            )

    def _emit(self, fd: int, type: str, severity: str, message: str, data: dict[str, Any]) -> None:
        if self._seq == 0:
            data = {**data, LOG_ID: new_log_id()}
        line, digest = _seal(
            _fields(_now(), self._seq + 1, self.host, type, severity, None, None, message, data), self._hash
        )
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
        opening = _first_line(self._fd)
        first = _seq_of(opening) or 1
        last = self._seq
        name = _segment_name(self._p, first, last)
        # The new live file opens with the log's identity (a log older than identities gets one now).
        log_id = log_id_of(opening) or new_log_id()
        line, digest = _seal(
            _fields(
                _now(),
                last + 1,
                self.host,
                ROTATED,
                "info",
                None,
                None,
                f"rotated events {first}..{last} into {name}.gz",
                {"segment": name, "first_seq": first, "last_seq": last, LOG_ID: log_id},
            ),
            self._hash,
        )
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

        worker = threading.Thread(target=_compress_quietly, args=(self._p,), name="audit-compress", daemon=True)
        self._compressors = [t for t in self._compressors if t.is_alive()] + [worker]
        worker.start()


def _warn(message: str) -> None:
    import logging

    logging.getLogger("galaxy.audit").warning("%s", message)


def _compress_quietly(path: str) -> None:
    try:
        compress_segments(path)
    except OSError as exc:  # the raw segment stays readable; the next rotation retries
        _warn(f"cannot compress the segments of {path} (will retry): {exc}")


def open_audit(config: Config) -> AuditLog:
    """The configured audit log of this host (``audit.path``, ``audit.rotate_bytes``)."""
    return AuditLog(config.audit.path, config.host, rotate_bytes=config.audit.rotate_bytes)
