"""The spool: durable order files moved through directories by atomic rename.

Layout under the spool directory (one file system, so renames are atomic)::

    orders/      waiting to be claimed            <id>.json (or any *.json dropped in)
    processing/  claimed by a runner (flock held)  <id>.json
    archive/     finished orders                   <id>.json (with their final state)
    responses/   answers                           <id>.md + <id>.json sidecar
    quarantine/  malformed orders                  <name> + <name>.reason.json
    outbox/      alerts for the control plane      <id>.json
    state/       the worker's own state files      heartbeat.json, health.json, ...
    state/orders/  live state of each order        <id>.json (its own namespace: no id collides
                                                   with a worker file); cancel requests in state/cancel/
    tmp/         half-written files, never read

A claim is ``flock`` on the order file followed by its rename into
``processing/``: the lock travels with the inode, so a worker that starts up
and finds an unlocked file in ``processing/`` knows its runner is gone.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DIRS = ("orders", "processing", "archive", "responses", "quarantine", "outbox", "state", "tmp")


class SpoolFull(OSError):
    """The spool's file system has no room (ENOSPC/EDQUOT)."""


class UnsafeFile(ValueError):
    """A spool entry that is not a regular file of a sane size: never read, never followed."""


_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    for test, kind in _KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def read_regular(path: Path, max_bytes: int) -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``max_bytes``.

    It is opened without following a symbolic link and without blocking (a
    FIFO or a device never stalls the caller), checked with ``fstat`` before a
    byte is read, and read no further than the cap. Anything else raises
    UnsafeFile with what it is; a vanished file raises FileNotFoundError.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeFile("a symbolic link, not a regular file (never followed)") from None
        if exc.errno in (errno.ENXIO, errno.EISDIR):  # a socket, or a directory opened for writing
            raise UnsafeFile(f"{file_kind(os.lstat(path).st_mode)}, not a regular file") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeFile(f"{file_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise UnsafeFile(f"file is {st.st_size} bytes, over the limit of {max_bytes}")
        chunks, total = [], 0
        while True:  # read to the end, but never past the cap (the file may still grow)
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                raise UnsafeFile(f"file is over the limit of {max_bytes} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path, data: bytes, tmp_dir: Path | None = None, *, durable: bool = True, mode: int = 0o640
) -> None:
    """Write ``data`` to ``path`` so that readers see all of it or nothing.

    The bytes go to a temporary file in ``tmp_dir`` (same file system), are
    fsynced, then renamed over ``path``; the directory is fsynced too.
    A full disk raises SpoolFull and leaves nothing behind.
    """
    tmp_dir = tmp_dir or path.parent
    tmp = tmp_dir / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        _write_new(tmp, data, os.fsync if durable else None, mode)
        os.rename(tmp, path)
        if durable:
            _fsync_dir(path.parent)
    except OSError as exc:
        _discard(tmp, exc, path.name)
        raise


def _write_new(path: Path, data: bytes, sync: Callable[[int], None] | None, mode: int = 0o640) -> None:
    """Create ``path`` (it must not exist) holding ``data``, passed through ``sync(fd)`` if given."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync is not None:
            sync(fd)
    finally:
        os.close(fd)


def _discard(tmp: Path, exc: OSError, name: str) -> None:
    """After a failed write: nothing is left behind, and a full disk is SpoolFull."""
    try:
        tmp.unlink()
    except OSError:
        pass
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise SpoolFull(exc.errno, f"no space left to write {name}") from None


def write_json(path: Path, obj: Any, tmp_dir: Path | None = None, *, durable: bool = True) -> None:
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1).encode() + b"\n", tmp_dir, durable=durable)


def read_json(path: Path) -> Any:
    """Decode a JSON file; nesting too deep for the parser is a ValueError like any bad JSON."""
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        return json.loads(raw)
    except RecursionError:
        raise ValueError(f"{path.name}: JSON nested too deeply") from None


@dataclass
class Claim:
    """An order file claimed by this process: the flock is held until release()."""

    path: Path
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Spool:
    def __init__(self, root: Path | str, *, durable: bool = True):
        self.root = Path(root)
        self.durable = durable
        for name in DIRS:
            setattr(self, name, self.root / name)
        self.cancel_dir = self.root / "state" / "cancel"
        self.order_state = self.root / "state" / "orders"

    # typing aid for the attributes set above
    orders: Path
    processing: Path
    archive: Path
    responses: Path
    quarantine: Path
    outbox: Path
    state: Path
    tmp: Path

    def ensure(self) -> Spool:
        for name in DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o750)
        self.cancel_dir.mkdir(exist_ok=True, mode=0o750)
        self.order_state.mkdir(exist_ok=True, mode=0o750)
        return self

    # -- writing ---------------------------------------------------------
    def write(self, path: Path, data: bytes) -> None:
        write_atomic(path, data, self.tmp, durable=self.durable)

    def write_json(self, path: Path, obj: Any) -> None:
        write_json(path, obj, self.tmp, durable=self.durable)

    def stage(self, name: str, data: bytes) -> Path:
        """Write ``data`` durably to a temporary file, to be moved into place later."""
        staged = self.tmp / f".{name}.{secrets.token_hex(6)}.staged"
        try:
            # fdatasync: its directory entry is synced where it is moved to (move()).
            _write_new(staged, data, os.fdatasync if self.durable else None)
        except OSError as exc:
            _discard(staged, exc, name)
            raise
        return staged

    def write_pair(self, files: list[tuple[Path, bytes]]) -> None:
        """Write several files of one directory durably with a single directory sync."""
        for path, data in files:
            write_atomic(path, data, self.tmp, durable=False)
        if self.durable:
            for path, _ in files:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fdatasync(fd)
                finally:
                    os.close(fd)
            _fsync_dir(files[0][0].parent)

    def move(self, src: Path, dst: Path, *, durable: bool | None = None) -> None:
        os.rename(src, dst)
        if self.durable if durable is None else durable:
            # One directory sync commits the whole rename on journaling file
            # systems (ext4, xfs): the entry cannot survive in both places.
            _fsync_dir(dst.parent)

    # -- orders ----------------------------------------------------------
    def pending(self) -> Iterator[Path]:
        """Order files waiting in orders/ (dot files are half-written, skipped)."""
        try:
            with os.scandir(self.orders) as it:
                for entry in it:
                    if entry.name.endswith(".json") and not entry.name.startswith("."):
                        yield Path(entry.path)
        except FileNotFoundError:
            return

    def queued_count(self) -> int:
        """How many order files wait in orders/ (the node's queue length)."""
        try:
            with os.scandir(self.orders) as it:
                return sum(1 for e in it if e.name.endswith(".json") and not e.name.startswith("."))
        except FileNotFoundError:
            return 0

    def claim(self, src: Path, order_id: str) -> Claim | None:
        """Lock ``src`` and rename it to processing/<id>.json; None if another got it."""
        try:
            fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, OSError):  # gone, or replaced by a link: not this order any more
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                return None
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        dst = self.processing / f"{order_id}.json"
        try:
            if dst.exists():
                # Same id already running: this file is a duplicate delivery.
                os.close(fd)
                return None
            self.move(src, dst)
        except FileNotFoundError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return Claim(dst, fd)

    def orphans(self) -> Iterator[Claim]:
        """Files in processing/ whose runner is gone (their flock is free).

        Each is returned locked, so no other worker recovers it too.
        """
        try:
            entries = sorted(os.scandir(self.processing), key=lambda e: e.name)
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.name.endswith(".json") or entry.name.startswith("."):
                continue
            try:
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:  # gone, a link, or unreadable: nothing a runner could have claimed
                continue
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    os.close(fd)
                    continue
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if not os.path.exists(entry.path):  # finished between scandir and lock
                os.close(fd)
                continue
            yield Claim(Path(entry.path), fd)

    def quarantine_file(self, src: Path, reason: str) -> Path | None:
        """Move a malformed order aside with a JSON note of why; None if it vanished."""
        dst = self.quarantine / src.name
        if os.path.lexists(dst):
            dst = self.quarantine / f"{src.stem}.{secrets.token_hex(4)}{src.suffix}"
        try:
            self.move(src, dst)
        except FileNotFoundError:
            return None
        self.write_json(dst.with_name(dst.name + ".reason.json"), {"file": src.name, "reason": reason})
        return dst

    # -- state -----------------------------------------------------------
    def state_path(self, order_id: str) -> Path:
        return self.order_state / f"{order_id}.json"

    def read_state(self, order_id: str) -> dict[str, Any] | None:
        try:
            return read_json(self.state_path(order_id))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return None

    def write_state(self, order_id: str, state: dict[str, Any]) -> None:
        """Live state is a convenience copy (the response and audit trail are the
        record), so it is written atomically but not fsynced."""
        write_json(self.state_path(order_id), state, self.tmp, durable=False)

    def request_cancel(self, order_id: str) -> None:
        self.write(self.cancel_dir / order_id, b"cancel\n")

    def cancel_requested(self, order_id: str) -> bool:
        return (self.cancel_dir / order_id).exists()

    def clear_cancel(self, order_id: str) -> None:
        try:
            (self.cancel_dir / order_id).unlink()
        except FileNotFoundError:
            pass
