"""The files of one log: the live file and its rotated segments
(``<log>.<first>-<last>``, gzip-compressed to ``….gz``), listed and read;
the complete lines of a file or buffer read backwards in blocks.
"""

from __future__ import annotations

import itertools
import os

from galaxy_fleet.audit.chain import _hash_of, _seq_of, log_id_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path
    from typing import Any

_BLOCK = 64 * 1024  # first backward read; doubles up to _MAX_BLOCK
_MAX_BLOCK = 4 * 1024 * 1024


class _Segment:
    """A rotated segment: ``<log>.<first>-<last>`` or the same with ``.gz``."""

    __slots__ = ("compressed", "first", "last", "path")

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
    for older, newer in itertools.pairwise(segs):
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
        rest = name[len(prefix) :]
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


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _last_event(src: int | bytes, size: int) -> tuple[int, str] | None:
    """(seq, hash) of the last well-formed event among the complete lines."""
    for buf, lo, hi in _chunks_backward(src, size):
        end = hi
        while end > lo:
            start = max(buf.rfind(b"\n", lo, end - 1) + 1, lo)
            line = bytes(buf[start : end - 1])
            seq, h = _seq_of(line), _hash_of(line)
            if seq is not None and h is not None:
                return seq, h
            end = start
    return None


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
        end = os.preadv(src, [memoryview(buf)[: pos - start]], start)
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


def _first_line(fd: int) -> bytes:
    """The first complete line of an open file, without its newline (b"" if there is none)."""
    buf, block = b"", 4096
    while True:
        chunk = os.pread(fd, block, len(buf))
        if not chunk:
            return b""
        buf += chunk
        k = buf.find(b"\n")
        if k >= 0:
            return buf[:k]
        block = min(block * 2, _MAX_BLOCK)


def log_identity(path: str | os.PathLike[str] | Path) -> str | None:
    """The ``log_id`` of the log at ``path``: from the live file's first event (the log's first
    event, or the audit_rotated that opens every live file), or from the newest segment when
    there is no live file; None for a log written before logs had an identity."""
    p = os.fspath(path)
    try:
        fd = os.open(p, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    if fd is not None:
        try:
            line = _first_line(fd)
        finally:
            os.close(fd)
        if line:
            return log_id_of(line)
    segs = _segments(p)
    data = _read_segment(segs[-1]) if segs else None
    return log_id_of(data[: data.find(b"\n")]) if data else None
