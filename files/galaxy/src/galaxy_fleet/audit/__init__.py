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

Identity
    The first event of a log carries ``log_id``, a random identity made with
    the log, and so does every ``audit_rotated`` event (each live file opens
    with one). ``log_identity()`` reads it from the live file's first line. A
    control node that stored a node's events compares the identity and its
    stored copy of the event at its cursor with the node's on every connect:
    a log that was reset, truncated or rewritten and re-sealed is told apart
    from the one it streamed, though each verifies on its own.

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

Stdlib only, and imports stay small: ``galaxy audit`` must start fast, so hashlib,
threading, pathlib, zlib and typing are imported where they are used.

Modules
    ``chain``     canonical form of an event, sealing, hashes
    ``segments``  the live file and rotated segments: listing and reading
    ``writer``    ``AuditLog`` (appends, repair, rotation, compression), ``open_audit``
    ``query``     filters, the backward scan, ``parse_time``, ``sum_cost``, ``format_event``
    ``verify``    ``verify``, ``verify_since``, ``VerifyReport``
    ``cli``       `galaxy audit`
"""

from __future__ import annotations

from galaxy_fleet.audit.chain import MAX_MESSAGE, SEVERITIES, AuditError, event_hash
from galaxy_fleet.audit.cli import add_arguments, main, run
from galaxy_fleet.audit.query import COST_TYPES, format_event, parse_time, query, sum_cost
from galaxy_fleet.audit.segments import log_identity
from galaxy_fleet.audit.verify import VerifyReport, verify, verify_since
from galaxy_fleet.audit.writer import AuditLog, compress_segments, open_audit

__all__ = [
    "COST_TYPES",
    "MAX_MESSAGE",
    "SEVERITIES",
    "AuditError",
    "AuditLog",
    "VerifyReport",
    "add_arguments",
    "compress_segments",
    "event_hash",
    "format_event",
    "log_identity",
    "main",
    "open_audit",
    "parse_time",
    "query",
    "run",
    "sum_cost",
    "verify",
    "verify_since",
]
