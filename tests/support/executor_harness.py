"""Run orders through an executor the way the worker does, for tests and benchmarks."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from galaxy_fleet.node import executors
from galaxy_fleet.config import Config
from galaxy_fleet.node.executors import Result, RunContext
from galaxy_fleet.order import Order, new_id


@dataclass
class Run:
    """One order through the executor, with what it reported on the way."""

    result: Result | None = None
    progress: list[tuple[float, str]] = field(default_factory=list)
    returned_at: float = 0.0
    ctx: RunContext | None = None
    thread: threading.Thread | None = None

    def lines(self) -> list[str]:
        return [line for _, line in self.progress]

    def wait(self, timeout: float = 120) -> Result:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the executor did not return"
        assert self.result is not None
        return self.result


class Harness:
    """Builds executors as the worker does and runs orders in a runner thread."""

    def __init__(self, state_dir: Path, url: str):
        self.state_dir = state_dir
        self.url = url

    def executor(self, **spec: Any) -> executors.Executor:
        return executors.build("opencode", {"type": "opencode", "url": self.url, **spec}, Config())

    def make_order(self, payload: str, session: str | None = None,
                   options: dict[str, Any] | None = None) -> Order:
        return Order(id=new_id(), payload=payload, session=session, options=dict(options or {}))

    def start(self, payload: str, *, executor: executors.Executor | None = None, session: str | None = None,
              options: dict[str, Any] | None = None, workdir: Path | None = None, timeout: float = 120,
              max_output_bytes: int = 1 << 20) -> Run:
        ex = executor or self.executor()
        order = self.make_order(payload, session, options)
        run = Run()
        ctx = RunContext(order_id=order.id, deadline=time.monotonic() + timeout,
                         max_output_bytes=max_output_bytes, state_dir=self.state_dir,
                         progress=lambda line: run.progress.append((time.monotonic(), line)),
                         workdir=str(workdir) if workdir else None)
        run.ctx = ctx

        def runner() -> None:
            run.result = ex.run(order, ctx)
            run.returned_at = time.monotonic()

        run.thread = threading.Thread(target=runner, name="runner", daemon=True)
        run.thread.start()
        return run

    def run(self, payload: str, **kw: Any) -> Run:
        run = self.start(payload, **kw)
        run.wait()
        return run
