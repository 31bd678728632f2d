"""The order worker: watches orders/, claims, runs through an executor, answers.

Data flows one way: spool (orders/) → claim (processing/) → executor →
response (responses/) → archive, with an audit event for every transition and
an outbox alert for every order that did not end ``done``.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from galaxy_fleet import __version__, sdnotify
from galaxy_fleet.audit import open_audit
from galaxy_fleet.config import Config
from galaxy_fleet.node import outbox, procgroup
from galaxy_fleet.node.answer import SEVERITY, finish
from galaxy_fleet.node.executors import Executor, ExecutorError, Result, RunContext, build
from galaxy_fleet.node.spool import Claim, Spool, SpoolFull, UnsafeFile, read_json, read_regular, write_json
from galaxy_fleet.order import (
    DELIVERED,
    DONE,
    FAILED,
    INTERRUPTED,
    Order,
    OrderError,
    from_dict,
    is_terminal,
    parse,
    pid_alive,
    sort_key,
    utcnow,
)

log = logging.getLogger("galaxy.worker")

PROGRESS_EVERY = 1.0  # seconds between progress events per order (faster lines are batched)
PROGRESS_KEEP = 50  # lines one progress event carries at most
PROGRESS_LINE_MAX = 500  # characters kept of one progress line
SETTLE_AFTER = 2.0  # a half-written order file gets this long before it counts as malformed


class _Timers(threading.Thread):
    """One thread for every timed action of the runs (no timer thread per order):
    deadlines, and progress lines held back by the throttle."""

    def __init__(self) -> None:
        super().__init__(name="galaxy-timers", daemon=True)
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int]] = []
        self._actions: dict[int, Any] = {}  # token -> callable, while scheduled
        self._count = itertools.count()
        self._stop = False

    def schedule(self, when: float, action: Any) -> int:
        """Run ``action()`` at monotonic time ``when``; returns a token for ``cancel``."""
        token = next(self._count)
        with self._cv:
            self._actions[token] = action
            heapq.heappush(self._heap, (when, token))
            self._cv.notify()
        return token

    def cancel(self, token: int | None) -> None:
        if token is not None:
            with self._cv:
                self._actions.pop(token, None)

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify()

    def run(self) -> None:
        while True:
            with self._cv:
                while not self._stop:
                    while self._heap and self._heap[0][1] not in self._actions:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._cv.wait()
                        continue
                    delay = self._heap[0][0] - time.monotonic()
                    if delay <= 0:
                        break
                    self._cv.wait(delay)
                if self._stop:
                    return
                _, token = heapq.heappop(self._heap)
                action = self._actions.pop(token)
            try:
                action()
            except Exception:  # a failing action must not stop the deadlines of the others
                log.exception("timed action failed")


class _Progress:
    """An order's progress lines into the audit trail, at most one event per
    PROGRESS_EVERY: lines that arrive faster are held and go out together in the
    next event (``lines``), by a trailing flush if nothing else comes, so none is
    lost ([tool] lines included); only beyond PROGRESS_KEEP lines per event are
    the oldest counted (``skipped``) instead of kept."""

    def __init__(self, emit: Any, timers: _Timers) -> None:
        self._emit = emit
        self._timers = timers
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._skipped = 0
        self._last_emit = float("-inf")
        self._token: int | None = None
        self.last = ""

    def __call__(self, line: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.last = line
            self._pending.append(line[:PROGRESS_LINE_MAX])
            if len(self._pending) > PROGRESS_KEEP:
                self._skipped += len(self._pending) - PROGRESS_KEEP
                del self._pending[:-PROGRESS_KEEP]
            if now - self._last_emit >= PROGRESS_EVERY:
                self._flush_locked()
            elif self._token is None:
                self._token = self._timers.schedule(self._last_emit + PROGRESS_EVERY, self.flush)

    def flush(self) -> None:
        """Whatever is held goes out now (the trailing flush, and the end of the run)."""
        with self._lock:
            self._timers.cancel(self._token)  # harmless when the timer itself is calling
            self._token = None
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._pending:
            return
        lines, skipped = self._pending, self._skipped
        self._pending, self._skipped = [], 0
        self._last_emit = time.monotonic()
        extra: dict[str, Any] = {}
        if len(lines) > 1:
            extra["lines"] = lines
        if skipped:
            extra["skipped"] = skipped
        self._emit(lines[-1], extra)


class Worker:
    def __init__(self, config: Config, *, runners: int | None = None):
        self.config = config
        self.host = config.host
        self.spool = Spool(config.spool_dir).ensure()
        self._orders_dir = os.fspath(self.spool.orders)
        self.audit = open_audit(config)
        self.runners = runners or config.worker.runners
        self.shutdown_grace = config.worker.shutdown_grace
        self._executors: dict[str, Executor] = {}
        self._exec_lock = threading.Lock()
        self._cv = threading.Condition()
        self._heap: list[tuple[tuple[int, str], int, Path, Order]] = []
        self._queued: set[Path] = set()
        self._queued_ids: dict[str, Path] = {}
        self._set_aside: set[tuple[str, int, int]] = set()  # (name, dev, inode) reported and left alone
        self._seq = 0
        self._running: dict[str, RunContext] = {}
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._timers = _Timers()
        self._watcher: Any = None

    # -- intake ----------------------------------------------------------
    @property
    def max_file_bytes(self) -> int:
        """The largest order file read: the payload limit with room for JSON escapes and fields."""
        return 8 * self.config.worker.max_payload_bytes + 64 * 1024

    def offer(self, path: Path, settled: bool = True) -> None:
        """Consider a file that appeared in orders/: queue it or quarantine it.

        Nothing in the file can stall or stop the worker: it is read without
        following links or blocking, within a size cap, and whatever goes
        wrong reading or parsing it sends it to quarantine with the reason.
        """
        name = path.name
        if not name.endswith(".json") or name.startswith("."):
            return
        with self._cv:
            if path in self._queued:
                return
        if self._is_set_aside(path):
            return
        try:
            raw = read_regular(path, self.max_file_bytes)
        except FileNotFoundError:
            return
        except UnsafeFile as exc:
            self.reject(path, str(exc))
            return
        except OSError as exc:
            self.reject(path, f"cannot read the file: {exc.strerror or exc}")
            return
        try:
            order = parse(raw, max_payload_bytes=self.config.worker.max_payload_bytes)
        except OrderError as exc:
            if not settled:
                # Someone may still be writing it (cat > orders/x.json): the close
                # event or the settle timer decides.
                timer = threading.Timer(SETTLE_AFTER, self._offer_safely, (path, True))
                timer.daemon = True
                timer.start()
                return
            self.reject(path, str(exc))
            return
        except Exception as exc:  # whatever the parser trips on is the file's fault, not the worker's
            self.reject(path, f"cannot parse the order: {type(exc).__name__}: {exc}")
            return
        duplicate = self._duplicate_of(path, order)
        if duplicate:
            self.reject(
                path, f"order id {order.id!r} is already known on this node ({duplicate}); it was not run again"
            )
            return
        with self._cv:
            if path in self._queued or self._stopping.is_set():
                return
            self._queued.add(path)
            self._queued_ids[order.id] = path
            self._seq += 1
            heapq.heappush(self._heap, (sort_key(order), self._seq, path, order))
            self._cv.notify()

    def _offer_safely(self, path: Path, settled: bool = True) -> None:
        try:
            self.offer(path, settled)
        except Exception:  # one file's failure never stops the scan or the timer thread
            log.exception("cannot take in %s", path.name)

    def _duplicate_of(self, path: Path, order: Order) -> str | None:
        """Where this order's id is already known, if the file is not simply that order itself."""
        sp, oid = self.spool, order.id
        with self._cv:
            other = self._queued_ids.get(oid)
        if other is not None and other != path:
            return "another file with this id is queued"
        if (sp.responses / f"{oid}.json").exists() or (sp.archive / f"{oid}.json").exists():
            return "it already has an answer"
        if (sp.processing / f"{oid}.json").exists():
            return "it is running"
        if path.name != f"{oid}.json":
            # Dropped under another name: `galaxy order submit` writes <id>.json, so
            # any other trace of this id means a second order claiming it.
            if (sp.orders / f"{oid}.json").exists():
                return "another file with this id is queued"
            if sp.state_path(oid).exists():
                return "it was submitted before"
        return None

    def _is_set_aside(self, path: Path) -> bool:
        try:
            st = os.lstat(path)
        except OSError:
            return False
        return (path.name, st.st_dev, st.st_ino) in self._set_aside

    def reject(self, path: Path, reason: str) -> None:
        try:
            dst = self.spool.quarantine_file(path, reason)
        except SpoolFull:
            log.error("spool full: cannot quarantine %s (%s)", path.name, reason)
            return
        except OSError as exc:
            self._set_aside_file(path, reason, exc)
            return
        if dst is None:
            return  # another worker got there first
        log.warning("quarantined %s: %s", path.name, reason)
        self.audit.append("order_quarantined", severity="error", message=reason, file=path.name, quarantine=dst.name)
        outbox.post(
            self.spool, self.host, "order_quarantined", f"Order file {path.name} rejected: {reason}", file=path.name
        )

    def _set_aside_file(self, path: Path, reason: str, exc: OSError) -> None:
        """An entry that cannot be moved to quarantine (a mount point, a busy directory):
        it is left where it is, reported once, and never looked at again by this worker."""
        try:
            st = os.lstat(path)
        except OSError:
            return
        self._set_aside.add((path.name, st.st_dev, st.st_ino))
        message = f"{reason}; it cannot be moved to quarantine ({exc.strerror or exc}) and is ignored"
        log.error("set aside %s: %s", path.name, message)
        self.audit.append("order_quarantined", severity="error", message=message, file=path.name, quarantine=None)
        outbox.post(
            self.spool,
            self.host,
            "order_quarantined",
            f"Order file {path.name} rejected: {message}; remove it by hand",
            file=path.name,
        )

    def scan(self) -> None:
        for path in sorted(self.spool.pending()):
            self._offer_safely(path, settled=True)

    def _on_event(self, directory: str, name: str | None, kind: str) -> None:
        if directory == self._orders_dir:
            if name is None:  # the kernel's queue overflowed: look at everything again
                self.scan()
            else:
                # "created" may be a file still being written; "moved"/"closed" are complete.
                self.offer(self.spool.orders / name, settled=kind != "created")
        elif name is None:
            for pending in os.listdir(self.spool.cancel_dir):
                self.cancel(pending)
        elif not name.startswith("."):
            self.cancel(name)

    # -- cancellation ----------------------------------------------------
    def cancel(self, order_id: str, reason: str = "cancel") -> bool:
        with self._cv:
            ctx = self._running.get(order_id)
        if ctx is None:
            return False
        ctx.cancel(reason)
        return True

    # -- execution -------------------------------------------------------
    def executor(self, name: str) -> Executor:
        with self._exec_lock:
            ex = self._executors.get(name)
            if ex is None:
                spec = self.config.executors.get(name)
                if spec is None:
                    raise ExecutorError(
                        f"unknown executor {name!r}; this node has: {', '.join(sorted(self.config.executors))}"
                    )
                ex = self._executors[name] = build(name, spec, self.config)
            return ex

    def _runner(self) -> None:
        while True:
            with self._cv:
                while not self._heap and not self._stopping.is_set():
                    self._cv.wait()
                if self._stopping.is_set():
                    return
                _, _, path, order = heapq.heappop(self._heap)
                self._queued.discard(path)
                if self._queued_ids.get(order.id) == path:
                    del self._queued_ids[order.id]
            claim = self.spool.claim(path, order.id)
            if claim is None:
                continue
            try:
                self._execute(claim, order, canonical=path.name == f"{order.id}.json")
            except OSError as exc:
                # A full disk or similar: the order stays in processing/ and the
                # heartbeat's recovery pass reports it once it can write again.
                log.error("cannot complete order %s: %s", order.id, exc)
            except Exception:  # never let one order take the runner down
                log.exception("internal error running order %s", order.id)
            finally:
                claim.release()

    def _execute(self, claim: Claim, order: Order, canonical: bool) -> None:
        spool, audit = self.spool, self.audit
        user = order.sender or None
        claimed = utcnow()
        # pickup latency: from the order file's last write to this claim
        pickup_s = max(0.0, time.time() - os.fstat(claim.fd).st_mtime)
        if not canonical:  # dropped straight into orders/: nobody has audited it yet
            audit.append(
                "order_received",
                order_id=order.id,
                user=user,
                message="order file found in spool",
                target=order.target,
                executor=order.executor,
                assigned_id=order.id_assigned,
                sync=False,
            )
            audit.append("order_queued", order_id=order.id, user=user, sync=False)
        # Intermediate events are not synced one by one: the final event of the
        # order (synced) flushes them, and a process crash cannot lose them.
        audit.append("order_delivered", order_id=order.id, user=user, worker=os.getpid(), sync=False)
        name = order.executor or self.config.worker.default_executor
        timings: dict[str, Any] = {"received": order.timestamp, "claimed": claimed, "pickup_s": round(pickup_s, 6)}
        t0 = time.monotonic()

        def fail(message: str) -> None:
            timings["run_s"] = 0.0
            finish(spool, audit, self.host, claim.path, order, name, Result(FAILED, error=message), timings)

        try:
            executor = self.executor(name)
        except ExecutorError as exc:
            return fail(str(exc))
        workdir = None
        project = order.options.get("project")
        if project is not None:
            workdir = self.config.projects.get(project) if isinstance(project, str) else None
            if workdir is None:
                return fail(
                    f"unknown project {project!r}; this node has: {', '.join(sorted(self.config.projects)) or '(none)'}"
                )
        timeout = order.timeout or self.config.worker.default_timeout

        def emit(line: str, extra: dict[str, Any]) -> None:
            audit.append(
                "order_progress", severity="debug", order_id=order.id, user=user, message=line, sync=False, **extra
            )

        progress = _Progress(emit, self._timers)

        state_dir = spool.state / "executors" / name
        state_dir.mkdir(parents=True, exist_ok=True)
        ctx = RunContext(
            order.id,
            deadline=t0 + timeout,
            max_output_bytes=self.config.worker.max_output_bytes,
            state_dir=state_dir,
            progress=progress,
            workdir=workdir,
            on_spawn=lambda pgid: self._record_group(order.id, pgid),
        )
        with self._cv:
            self._running[order.id] = ctx
        if spool.cancel_requested(order.id):
            ctx.cancel("cancel")
        deadline = self._timers.schedule(ctx.deadline, lambda: ctx.cancel("timeout"))
        audit.append("order_running", order_id=order.id, user=user, executor=name, timeout=timeout, sync=False)
        try:
            if ctx.cancelled.is_set():
                result = Result(ctx.stopped_status(), error=f"stopped ({ctx.cancel_reason}) before it started")
            else:
                result = executor.run(order, ctx)
        except Exception as exc:  # an executor bug is a failed order, not a dead worker
            log.exception("executor %s crashed on %s", name, order.id)
            result = Result(FAILED, error=f"executor {name} crashed: {type(exc).__name__}: {exc}")
        finally:
            self._timers.cancel(deadline)
            progress.flush()
            with self._cv:
                self._running.pop(order.id, None)
        if not is_terminal(result.status):
            result.status = FAILED
        if result.status == DONE and ctx.cancelled.is_set():
            result.status = ctx.stopped_status()
        timings["run_s"] = round(time.monotonic() - t0, 6)
        if progress.last:
            result.details.setdefault("last_progress", progress.last)
        finish(spool, audit, self.host, claim.path, order, name, result, timings)
        self._group_file(order.id).unlink(missing_ok=True)

    def _group_file(self, order_id: str) -> Path:
        return self.spool.processing / f"{order_id}.pgid"

    def _record_group(self, order_id: str, pgid: int) -> None:
        """Note the process group of a program started for an order, beside its claim."""
        try:
            write_json(self._group_file(order_id), procgroup.identity(pgid), self.spool.tmp, durable=False)
        except OSError as exc:
            log.error("cannot record the process group of %s: %s", order_id, exc)

    def _kill_leftovers(self, order_id: str) -> None:
        """Kill what a dead worker's run of this order left running, then forget the record."""
        path = self._group_file(order_id)
        try:
            record = read_json(path)
        except FileNotFoundError:
            return
        except (OSError, ValueError):
            record = None
        killed = procgroup.kill_recorded(record)
        if killed:
            log.warning("killed %d leftover process(es) of order %s", killed, order_id)
            self.audit.append(
                "order_processes_killed",
                severity="warning",
                order_id=order_id,
                message=f"{killed} process(es) left by the dead worker killed",
                pgid=record.get("pgid") if isinstance(record, dict) else None,
                count=killed,
            )
        path.unlink(missing_ok=True)

    # -- recovery --------------------------------------------------------
    def recover(self) -> int:
        """Orders whose runner died become ``interrupted``, with a response; never re-run."""
        count = 0
        for claim in self.spool.orphans():
            try:
                self._recover_one(claim)
                count += 1
            except OSError as exc:  # e.g. a full disk: the next heartbeat tries again
                log.error("cannot recover %s yet: %s", claim.path.name, exc)
            except Exception:  # one bad file never stops the recovery of the others
                log.exception("cannot recover %s", claim.path.name)
            finally:
                claim.release()
        return count

    def _complete_delivery(self, oid: str, order: Order) -> None:
        """The claim proves the order was delivered; a worker killed between the claim and
        its ``order_delivered`` event left the life cycle without it: add it, marked recovered."""
        from galaxy_fleet.audit import query

        if query(self.config.audit.path, order_id=oid, type="order_delivered", limit=1):
            return
        self.audit.append(
            "order_delivered",
            order_id=oid,
            user=order.sender or None,
            recovered=True,
            message="claimed by a worker that died before recording it",
            sync=False,
        )

    def _complete_audit(self, oid: str, sidecar: dict[str, Any]) -> None:
        """A worker that died between an order's answer and its final audit event: add the event."""
        from galaxy_fleet.audit import query

        state = str(sidecar.get("state"))
        if query(self.config.audit.path, order_id=oid, type=f"order_{state}", limit=1):
            return
        self.audit.append(
            f"order_{state}",
            severity=SEVERITY.get(state, "error"),
            order_id=oid,
            user=sidecar.get("from") or None,
            message=sidecar.get("error") or "ok",
            executor=sidecar.get("executor"),
            exit_code=sidecar.get("exit_code"),
            recovered=True,
        )

    def _recover_one(self, claim: Claim) -> None:
        oid = claim.path.stem
        self._kill_leftovers(oid)  # before anything else: nothing of the old run may finish it now
        sidecar = self.spool.responses / f"{oid}.json"
        try:
            side = read_json(sidecar)
            done = isinstance(side, dict) and is_terminal(side.get("state"))
        except (OSError, ValueError):
            done = False
        if done:  # it had finished; only the archive move was lost (and perhaps its audit event)
            self._complete_audit(oid, side)
            self.spool.move(claim.path, self.spool.archive / claim.path.name)
            return
        try:
            data = json.loads(read_regular(claim.path, 1 << 30))
            data["id"] = oid
            order = from_dict(data, max_payload_bytes=1 << 30)
        except (OSError, ValueError, TypeError, RecursionError):
            order = Order(id=oid, payload="(unreadable)")
        self._complete_delivery(oid, order)
        state = self.spool.read_state(oid) or {}
        message = "the worker stopped while this order was running; it was not re-run (retry it to run it again)"
        result = Result(
            INTERRUPTED,
            error=message,
            output=f"Interrupted: {message}.",
            details={"retry": True, "was": state.get("state", DELIVERED)},
        )
        executor = order.executor or self.config.worker.default_executor
        # How long it ran before its runner died is not known: no run_s (not a made-up 0).
        finish(self.spool, self.audit, self.host, claim.path, order, executor, result, {"received": order.timestamp})
        log.warning("order %s interrupted (its runner was gone)", oid)

    # -- life cycle ------------------------------------------------------
    def heartbeat(self) -> None:
        self._beat()
        sdnotify.notify("WATCHDOG=1")

    def _beat(self, stopped: bool = False) -> None:
        with self._cv:
            running, queued = sorted(self._running), len(self._heap)
        beat = {
            "pid": os.getpid(),
            "host": self.host,
            "ts": utcnow(),
            "time": time.time(),
            "running": running,
            "queued": queued,
            "runners": self.runners,
            "version": __version__,
            "stopped": stopped,
        }
        write_json(self.spool.state / "heartbeat.json", beat, self.spool.tmp, durable=stopped)

    def _previous_run(self) -> dict[str, Any] | None:
        """The last worker's heartbeat if it ended without a clean stop (and is gone)."""
        try:
            beat = read_json(self.spool.state / "heartbeat.json")
        except (OSError, ValueError):
            return None
        pid = beat.get("pid")
        if beat.get("stopped") or not isinstance(pid, int) or pid == os.getpid():
            return None
        if os.path.exists(f"/proc/{pid}") and pid_alive(pid):
            return None  # another worker on this spool is alive
        return beat

    def start(self) -> None:
        from galaxy_fleet.node.watch import Watcher

        previous = self._previous_run()
        recovered = self.recover()
        self.audit.append(
            "worker_started",
            message=f"galaxy {__version__}, {self.runners} runner(s)",
            pid=os.getpid(),
            runners=self.runners,
            recovered=recovered,
            unclean=previous is not None,
        )
        if previous is not None:
            # The last worker died without a clean stop (kill -9, OOM, a crash)
            # and we are its replacement: say both, so the phone sees the
            # failure and the recovery.
            self.audit.append(
                "worker_died",
                severity="error",
                pid=previous.get("pid"),
                message=f"worker pid {previous.get('pid')} stopped without a clean shutdown; "
                f"{recovered} order(s) interrupted",
            )
            outbox.post(
                self.spool,
                self.host,
                "worker_died",
                f"{self.host}: the order worker (pid {previous.get('pid')}) died; "
                f"{recovered} running order(s) marked interrupted",
                severity="error",
                interrupted=recovered,
            )
            outbox.post(
                self.spool,
                self.host,
                "worker_recovered",
                f"{self.host}: the order worker is running again (pid {os.getpid()})",
                severity="info",
            )
        self._timers.start()
        self._watcher = Watcher(self._on_event, name="galaxy-spool-watch")
        self._watcher.add(self.spool.orders)
        self._watcher.add(self.spool.cancel_dir)
        self._watcher.start()
        self.scan()  # after the watch is in place, so nothing slips between the two
        for name in os.listdir(self.spool.cancel_dir):
            self.cancel(name)
        for i in range(self.runners):
            t = threading.Thread(target=self._runner, name=f"galaxy-runner-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        self.heartbeat()
        sdnotify.notify(f"READY=1\nSTATUS=serving {self.spool.root} with {self.runners} runner(s)")

    def stop(self) -> None:
        """Stop taking orders; let running ones finish for shutdown_grace, then interrupt them."""
        sdnotify.notify("STOPPING=1")
        if self._watcher is not None:
            self._watcher.stop()
        with self._cv:
            self._stopping.set()
            self._heap.clear()
            self._queued.clear()
            self._queued_ids.clear()
            self._cv.notify_all()
        deadline = time.monotonic() + self.shutdown_grace
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        with self._cv:
            leftover = list(self._running.values())
        for ctx in leftover:
            ctx.cancel("shutdown")
        for t in self._threads:
            t.join(10)
        self._timers.stop()
        for ex in self._executors.values():
            ex.close()
        self.audit.append("worker_stopped", message="clean shutdown", pid=os.getpid(), interrupted=len(leftover))
        self.audit.close()
        self._beat(stopped=True)

    def serve_forever(self) -> int:
        stop = threading.Event()

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        self.start()
        interval = min(self.config.worker.heartbeat_interval, sdnotify.watchdog_interval() or 1e9)
        log.info("worker ready on %s (%d runner(s))", self.spool.root, self.runners)
        while not stop.wait(interval):
            try:
                self.heartbeat()
            except OSError as exc:  # a full disk must not kill the worker
                log.error("heartbeat failed: %s", exc)
            self.recover()
        self.stop()
        return 0
