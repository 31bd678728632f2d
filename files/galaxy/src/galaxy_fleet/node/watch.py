"""A small inotify watcher for the spool (Linux, ctypes, no polling).

Why not watchdog: its inotify emitter holds every IN_MOVED_FROM event for
0.5 s to pair it with a matching IN_MOVED_TO, and events behind it wait too.
Every claim is a rename *out of* orders/, so each claim would stall the next
order's pickup by half a second. Here we ask the kernel only for the events
that mean "a complete file is now in this directory" (IN_CLOSE_WRITE,
IN_MOVED_TO) plus IN_CREATE for writers that fill a file in place, and hand
them over as they arrive.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import threading
from typing import Callable

log = logging.getLogger("galaxy.watch")

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_EVENT = struct.Struct("iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]

# (directory, file name, kind) where kind is "created", "moved" or "closed";
# name None means the queue overflowed and the directory must be rescanned.
Callback = Callable[[str, "str | None", str], None]


class Watcher:
    """Watch directories (not recursively) and call ``callback`` from one thread."""

    def __init__(self, callback: Callback, *, name: str = "galaxy-watch"):
        self.callback = callback
        fd = _libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd
        self._dirs: dict[int, str] = {}
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, directory: str | os.PathLike[str], mask: int = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) -> None:
        path = os.fspath(directory)
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        self._dirs[wd] = path

    def start(self) -> "Watcher":
        self._thread.start()
        return self

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        for fd in (self.fd, self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                log.error("inotify read failed: %s", exc)
                return
            self._dispatch(data)

    def _dispatch(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
            offset += _EVENT.size
            raw = data[offset:offset + length].split(b"\0", 1)[0]
            offset += length
            if mask & IN_Q_OVERFLOW:
                for directory in list(self._dirs.values()):
                    self._call(directory, None, "overflow")
                continue
            if mask & (IN_IGNORED | IN_ISDIR) or wd not in self._dirs:
                continue
            kind = ("closed" if mask & IN_CLOSE_WRITE else "moved" if mask & IN_MOVED_TO
                    else "modified" if mask & IN_MODIFY else "created")
            self._call(self._dirs[wd], os.fsdecode(raw), kind)

    def _call(self, directory: str, name: str | None, kind: str) -> None:
        try:
            self.callback(directory, name, kind)
        except Exception:  # the watch thread must survive anything (a full disk, a bug)
            log.exception("cannot handle %s event for %s/%s", kind, directory, name)
