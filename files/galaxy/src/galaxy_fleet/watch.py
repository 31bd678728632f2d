"""inotify (watchdog) events of the spool, handed to the worker."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from watchdog.events import FileSystemEvent, FileSystemEventHandler

log = logging.getLogger("galaxy.worker")

if TYPE_CHECKING:
    from galaxy_fleet.worker import Worker


class SpoolHandler(FileSystemEventHandler):
    """orders/: new, moved-in or closed files are offered to the worker;
    state/cancel/: a new file names an order to cancel."""

    def __init__(self, worker: "Worker"):
        self.worker = worker
        self.orders = os.fspath(worker.spool.orders)
        self.cancels = os.fspath(worker.spool.cancel_dir)

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if event.is_directory or kind not in ("created", "moved", "closed"):
            return
        path = os.fsdecode(event.dest_path if kind == "moved" else event.src_path)
        parent, name = os.path.split(path)
        try:
            if parent == self.orders:
                # "created" may be a file still being written; "moved"/"closed" are complete.
                self.worker.offer(Path(path), settled=kind != "created")
            elif parent == self.cancels and not name.startswith("."):
                self.worker.cancel(name)
        except Exception:  # the observer thread must survive anything (a full disk, ...)
            log.exception("cannot handle %s event for %s", kind, path)
