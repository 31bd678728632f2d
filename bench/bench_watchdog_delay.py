#!/usr/bin/env python3
"""Does watchdog still hold inotify move events? (why node/watch.py does not use it)

A file is renamed out of a watched directory (as every claim does) and at once
another renamed in (as every submit does); prints how long until each library
reports the new file: watchdog's Observer, and galaxy's Watcher (inotify_simple).
Needs `pip install watchdog` (not a dependency of galaxy).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from galaxy_fleet.node.watch import IN_MOVED_TO, Watcher

ROUNDS = 20


def measure(start_watch) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        watched, outside = root / "orders", root / "processing"
        watched.mkdir()
        outside.mkdir()
        seen: dict[str, float] = {}
        got = threading.Condition()

        def on_new(name: str) -> None:
            with got:
                seen.setdefault(name, time.perf_counter())
                got.notify_all()

        stop = start_watch(watched, on_new)
        try:
            delays = []
            for i in range(ROUNDS):
                (watched / f"old{i}").write_bytes(b"x")
                time.sleep(0.05)
                (root / f"new{i}").write_bytes(b"x")
                os.rename(watched / f"old{i}", outside / f"old{i}")  # a claim: IN_MOVED_FROM
                t0 = time.perf_counter()
                os.rename(root / f"new{i}", watched / f"new{i}")  # a submit: IN_MOVED_TO
                name = f"new{i}"
                with got:
                    got.wait_for(lambda name=name: name in seen, timeout=5)
                delays.append(seen.get(name, float("inf")) - t0)
            return delays
        finally:
            stop()


def with_watchdog(directory: Path, on_new) -> object:
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    class Handler(FileSystemEventHandler):
        def on_moved(self, event):  # a rename inside the directory, or into it
            if Path(event.dest_path).parent == directory:
                on_new(Path(event.dest_path).name)

        def on_created(self, event):  # watchdog reports a rename from outside as created
            on_new(Path(event.src_path).name)

    obs = InotifyObserver()
    obs.schedule(Handler(), str(directory))
    obs.start()
    time.sleep(0.2)
    return lambda: (obs.stop(), obs.join(5))


def with_galaxy(directory: Path, on_new) -> object:
    w = Watcher(lambda _d, name, _k: name and on_new(name))
    w.add(directory, IN_MOVED_TO)
    w.start()
    return w.stop


def main() -> int:
    for label, fn in (("watchdog InotifyObserver", with_watchdog), ("galaxy Watcher (inotify_simple)", with_galaxy)):
        d = measure(fn)
        print(f"{label:34s}: new file reported after p50 {statistics.median(d) * 1000:7.1f} ms, "
              f"max {max(d) * 1000:7.1f} ms over {ROUNDS} claim+submit pairs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
