"""The spool: durable order files moved through directories by atomic rename.

Layout under the spool directory (one file system, so renames are atomic)::

    orders/      waiting to be claimed            <id>.json (or any *.json dropped in)
    processing/  claimed by a runner (flock held)  <id>.json
    archive/     finished orders                   <id>.json (with their final state)
    responses/   answers                           <id>.md + <id>.json sidecar
    quarantine/  malformed orders                  <name> + <name>.reason.json
    outbox/      alerts for the control plane      <id>.json
    state/       live state of each order          <id>.json; cancel requests in state/cancel/
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

DIRS = ("orders", "processing", "archive", "responses", "quarantine", "outbox", "state", "tmp")


class SpoolFull(OSError):
    """The spool's file system has no room (ENOSPC/EDQUOT)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path | None = None, *, durable: bool = True,
                 mode: int = 0o640) -> None:
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
            view = view[os.write(fd, view):]
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
    write_atomic(path, json.dumps(obj, ensure_ascii=False, indent=1).encode() + b"\n",
                 tmp_dir, durable=durable)


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


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

    # typing aid for the attributes set above
    orders: Path
    processing: Path
    archive: Path
    responses: Path
    quarantine: Path
    outbox: Path
    state: Path
    tmp: Path

    def ensure(self) -> "Spool":
        for name in DIRS:
            (self.root / name).mkdir(parents=True, exist_ok=True, mode=0o750)
        self.cancel_dir.mkdir(exist_ok=True, mode=0o750)
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

    def claim(self, src: Path, order_id: str) -> Claim | None:
        """Lock ``src`` and rename it to processing/<id>.json; None if another got it."""
        try:
            fd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
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
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
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
        if dst.exists():
            dst = self.quarantine / f"{src.stem}.{secrets.token_hex(4)}{src.suffix}"
        try:
            self.move(src, dst)
        except FileNotFoundError:
            return None
        self.write_json(dst.with_name(dst.name + ".reason.json"), {"file": src.name, "reason": reason})
        return dst

    # -- state -----------------------------------------------------------
    def state_path(self, order_id: str) -> Path:
        return self.state / f"{order_id}.json"

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
