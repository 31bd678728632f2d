"""Verification: the whole chain over all segments and the live file
(``verify``), or only what was added after a known event (``verify_since``).
"""

from __future__ import annotations

import fcntl
import json
import os

from galaxy_fleet.audit.chain import (
    _HASH_TAG,
    _SEQ_AT,
    _SEQ_TAG,
    _SUFFIX,
    ROTATED,
    _hash_of,
    _seq_of,
    _sha256_func,
    _split_line,
    event_hash,
)
from galaxy_fleet.audit.query import query
from galaxy_fleet.audit.segments import _read_segment, _Segment, _segments

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path


class VerifyReport:
    """``ok``; ``count`` = events checked (up to the break); ``broken`` = None or
    ``{"segment", "line", "seq", "reason", "detail"}``; the seq range checked and
    the number of rotated segments read (the live file not counted)."""

    def __init__(
        self,
        ok: bool,
        count: int,
        broken: dict | None = None,
        first_seq: int | None = None,
        last_seq: int | None = None,
        segments: int = 0,
    ) -> None:
        self.ok, self.count, self.broken = ok, count, broken
        self.first_seq, self.last_seq, self.segments = first_seq, last_seq, segments

    def __repr__(self) -> str:
        return "VerifyReport(" + ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items()) + ")"

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "count": self.count,
            "broken": self.broken,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "segments": self.segments,
        }


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
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None, 0, _segments(path, None)
        size = os.fstat(fd).st_size
        return fd, size, _segments(path, _seq_of(os.pread(fd, 256, 0)))
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _slicer(data: bytes) -> Callable[[int, int], bytes]:
    return lambda off, n: data[off : off + n]


def _chunks_forward(
    read: Callable[[int, int], bytes], size: int, block: int = 8 * 1024 * 1024
) -> Iterator[tuple[bytes, bool]]:
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
        carry = buf[k + 1 :]
        if k >= 0:
            yield buf[: k + 1], False


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
                if (
                    self.last_seq is not None
                    and line.startswith(self.next_seq_tag, seq_at)
                    and line.endswith(self.prev_tag, 0, cut)
                    and line.endswith(b'"}')
                    and line.startswith(_HASH_TAG, cut)
                ):
                    digest = sha(line[:cut] + b"}").hexdigest()
                    if line[cut + len(_HASH_TAG) : -2] == digest.encode():
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
                self._break(
                    source, line_no, seq, "deleted", f"the log starts at seq {seq}: the events before it are missing"
                )
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
                self._break(
                    at_source,
                    at_line,
                    self.last_seq,
                    "edited",
                    f"event seq {self.last_seq} was replaced and re-hashed: the prev of seq {seq} does not match it",
                )
            else:
                self.pending = {
                    "segment": source,
                    "line": line_no,
                    "seq": seq,
                    "reason": "deleted",
                    "detail": f"expected seq {expect} after seq {self.last_seq}, found seq {seq}",
                    "expect": expect,
                }
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

    def _break(self, source: str, line_no: int, seq: int | None, reason: str, detail: str | None = None) -> None:
        self.broken = {
            "segment": source,
            "line": line_no,
            "seq": seq,
            "reason": reason,
            "detail": detail or _REASONS[reason],
        }

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


def _verify_source(v: _Verifier, name: str, read: Callable[[int, int], bytes], size: int, live: bool) -> None:
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
    p = os.fspath(path)
    live = os.path.basename(p)
    fd, size, segs = _snapshot(p)
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
            _verify_source(v, seg.name, _slicer(data), len(data), False)
            del data
        if fd is not None and v.broken is None:
            _verify_source(v, live, lambda off, n: os.pread(fd, n, off), size, True)
        v.finish()
    finally:
        if fd is not None:
            os.close(fd)
    return VerifyReport(
        ok=v.broken is None,
        count=v.count,
        broken=v.broken,
        first_seq=v.first_seq,
        last_seq=v.last_seq,
        segments=used_segments,
    )


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
