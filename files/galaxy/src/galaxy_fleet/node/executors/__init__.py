"""Executors run an order's payload and return its answer.

One small interface serves them all. The worker calls ``run(order, ctx)`` in a
runner thread; the executor

- reports progress with ``ctx.progress(line)`` as it goes,
- watches ``ctx.cancelled`` (a threading.Event) and stops within a second or
  two once it is set (``ctx.cancel_reason`` says "cancel" or "timeout"),
- keeps captured output under ``ctx.max_output_bytes``,
- returns a Result; it raises only for bugs (the worker turns an exception
  into a failed order, it never dies of one).

Executors are built from the node config by ``build(name, spec, config)``;
the spec is the typed ``executors.<name>`` entry (``galaxy_fleet.config``:
ShellSpec, CommandSpec, OpenCodeSpec) and its ``type`` picks the class.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from galaxy_fleet.config import ConfigError, executor_spec

if TYPE_CHECKING:
    from galaxy_fleet.config import Config
    from galaxy_fleet.order import Order


class ExecutorError(ValueError):
    """An executor is misconfigured or asked for something it cannot do."""


@dataclass
class Result:
    status: str  # one of order.DONE, FAILED, CANCELLED, TIMED_OUT
    output: str = ""
    exit_code: int | None = None
    error: str | None = None  # a one-line reason when status is not done
    bytes_out: int = 0  # bytes the executor produced (before any cap)
    truncated: bool = False
    # executor-specific figures: tokens, cost, model, agent, session, ...
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunContext:
    order_id: str
    deadline: float  # time.monotonic() value
    max_output_bytes: int
    state_dir: Path  # a directory the executor may keep state in (sessions, ...)
    progress: Callable[[str], None] = lambda line: None
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: str | None = None  # "cancel", "timeout" or "shutdown"
    workdir: str | None = None  # the order's project directory, if it named one
    # called with the process group id of each program started for the order, so
    # the worker can record it and a successor can kill leftovers of a dead worker
    on_spawn: Callable[[int], None] = lambda pgid: None
    _callbacks: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def cancel(self, reason: str) -> None:
        """Ask the run to stop; the first reason given wins. Safe from any thread."""
        with self._lock:
            if self.cancelled.is_set():
                return
            self.cancel_reason = reason
            self.cancelled.set()
            callbacks, self._callbacks = self._callbacks, []
        for fn in callbacks:
            fn()

    def on_cancel(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` (once, from the cancelling thread) when the run is cancelled.

        Lets an executor block on its own I/O instead of polling ``cancelled``.
        """
        with self._lock:
            if not self.cancelled.is_set():
                self._callbacks.append(fn)
                return
        fn()

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def stopped_status(self) -> str:
        """The status for a run that ended because ``cancelled`` was set."""
        from galaxy_fleet.order import CANCELLED, INTERRUPTED, TIMED_OUT

        return {"timeout": TIMED_OUT, "shutdown": INTERRUPTED}.get(self.cancel_reason or "", CANCELLED)


class Executor:
    """Base class; subclasses set ``type`` and implement ``run``."""

    type = ""

    def __init__(self, name: str, spec: Any, config: Config):
        self.name = name
        self.spec = spec
        self.config = config

    def run(self, order: Order, ctx: RunContext) -> Result:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release long-lived resources (connections) at worker shutdown."""


def _types() -> dict[str, type[Executor]]:
    from galaxy_fleet.node.executors.command import CommandExecutor, ShellExecutor

    types: dict[str, type[Executor]] = {"command": CommandExecutor, "shell": ShellExecutor}
    try:
        from galaxy_fleet.node.executors.opencode import OpenCodeExecutor
    except ImportError:  # pragma: no cover - the opencode module ships with the package
        pass
    else:
        types["opencode"] = OpenCodeExecutor
    return types


def build(name: str, spec: Any, config: Config) -> Executor:
    """The executor for a typed spec (a plain mapping is checked as the config loader would)."""
    if isinstance(spec, dict):
        try:
            spec = executor_spec(name, spec)
        except ConfigError as exc:
            raise ExecutorError(str(exc)) from None
    kind = spec.type
    cls = _types().get(kind)
    if cls is None:
        raise ExecutorError(f"executor {name!r} has unknown type {kind!r}")
    return cls(name, spec, config)


def cap_text(data: bytes, limit: int) -> tuple[str, bool]:
    """Decode output as UTF-8 (bad bytes replaced) and cap it at ``limit`` bytes."""
    truncated = len(data) > limit
    if truncated:
        data = data[:limit]
    text = data.decode("utf-8", errors="replace")
    if truncated:
        text += f"\n\n[output truncated at {limit} bytes]"
    return text, truncated
