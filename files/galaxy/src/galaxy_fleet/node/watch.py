"""A small inotify watcher for the spool (Linux, no polling), on the maintained
``inotify_simple`` binding.

Why not watchdog: its inotify emitter holds every IN_MOVED_FROM event for
0.5 s to pair it with a matching IN_MOVED_TO, and events behind it wait too.
Every claim is a rename *out of* orders/, so each claim would stall the next
order's pickup by half a second. Here we ask the kernel only for the events
that mean "a complete file is now in this directory" (IN_CLOSE_WRITE,
IN_MOVED_TO) plus IN_CREATE for writers that fill a file in place, and hand
them over as they arrive (no read delay).
"""

from __future__ import annotations

import errno
import logging
import os
import select
import threading
from collections.abc import Callable

from inotify_simple import INotify, flags, parse_events

log = logging.getLogger("galaxy.watch")

IN_MODIFY = int(flags.MODIFY)
IN_CLOSE_WRITE = int(flags.CLOSE_WRITE)
IN_MOVED_TO = int(flags.MOVED_TO)
IN_CREATE = int(flags.CREATE)
IN_Q_OVERFLOW = int(flags.Q_OVERFLOW)
IN_IGNORED = int(flags.IGNORED)
IN_ISDIR = int(flags.ISDIR)

# (directory, file name, kind) where kind is "created", "moved" or "closed";
# name None means the queue overflowed and the directory must be rescanned.
Callback = Callable[[str, "str | None", str], None]


class Watcher:
    """Watch directories (not recursively) and call ``callback`` from one thread."""

    def __init__(self, callback: Callback, *, name: str = "galaxy-watch"):
        self.callback = callback
        self._inotify = INotify(nonblocking=True)  # close-on-exec; raises OSError when none is left
        self.fd = self._inotify.fileno()
        self._dirs: dict[int, str] = {}
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def add(self, directory: str | os.PathLike[str], mask: int = IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE) -> None:
        path = os.fspath(directory)
        wd = self._inotify.add_watch(path, mask)
        self._dirs[wd] = path

    def start(self) -> Watcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(5)
        try:
            self._inotify.close()
        except OSError:
            pass
        for fd in (self._stop_r, self._stop_w):
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
        for event in parse_events(data):
            mask = event.mask
            if mask & IN_Q_OVERFLOW:
                for directory in list(self._dirs.values()):
                    self._call(directory, None, "overflow")
                continue
            if mask & (IN_IGNORED | IN_ISDIR) or event.wd not in self._dirs:
                continue
            kind = (
                "closed"
                if mask & IN_CLOSE_WRITE
                else "moved"
                if mask & IN_MOVED_TO
                else "modified"
                if mask & IN_MODIFY
                else "created"
            )
            self._call(self._dirs[event.wd], event.name, kind)

    def _call(self, directory: str, name: str | None, kind: str) -> None:
        try:
            self.callback(directory, name, kind)
        except Exception:  # the watch thread must survive anything (a full disk, a bug)
            log.exception("cannot handle %s event for %s/%s", kind, directory, name)
