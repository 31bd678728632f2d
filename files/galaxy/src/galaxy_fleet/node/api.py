"""The node's order API: submit, status, wait, list, cancel.

`galaxy order ...` on the node and `galaxy remote` (the control plane's SSH
entry point) both call these; nobody else writes into the spool.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from galaxy_fleet.audit import AuditLog
from galaxy_fleet.config import Config
from galaxy_fleet.node.answer import finish
from galaxy_fleet.node.executors import Result
from galaxy_fleet.node.spool import Spool, read_json
from galaxy_fleet.order import (
    CANCELLED,
    QUEUED,
    RUNNING,
    Order,
    OrderError,
    build,
    check_name,
    from_dict,
    is_terminal,
    utcnow,
)


class NotFound(LookupError):
    """No order with that id on this node."""


class Busy(RuntimeError):
    """The node's queue is full (``worker.max_queued``): the order was not taken; try again later."""

    def __init__(self, host: str, queued: int, limit: int):
        super().__init__(
            f"{host} is busy: {queued} orders queued (limit {limit}); the order was not taken, try again later"
        )
        self.host, self.queued, self.limit = host, queued, limit


class Node:
    def __init__(self, config: Config, audit: AuditLog | None = None):
        self.config = config
        self.spool = Spool(config.spool_dir).ensure()
        self._audit = audit

    @property
    def audit(self) -> AuditLog:
        if self._audit is None:
            from galaxy_fleet.audit import open_audit

            self._audit = open_audit(self.config)
        return self._audit

    # -- submit ----------------------------------------------------------
    def build_order(self, data: dict[str, Any]) -> Order:
        """Validate an order as submitted (raises OrderError with the reason)."""
        return from_dict(data, max_payload_bytes=self.config.worker.max_payload_bytes, executors=self.config.executors)

    def submit(self, data: dict[str, Any]) -> Order:
        """Validate and queue an order durably. Duplicate ids are accepted once.

        Returns the order; a resubmitted id that is already known returns the
        original without queueing it again (at-least-once delivery made
        exactly-once).
        """
        try:
            order = self.build_order(data)
        except OrderError as exc:
            self.audit.append(
                "order_rejected",
                severity="error",
                message=str(exc),
                user=data.get("from") if isinstance(data, dict) and isinstance(data.get("from"), str) else None,
            )
            raise
        if not order.id_assigned and self.known(order.id):
            order.duplicate = True
            return order
        queued, limit = self.spool.queued_count(), self.config.worker.max_queued
        if queued >= limit:  # admission control: a full queue refuses, it never grows without bound
            self.audit.append(
                "order_refused",
                severity="warning",
                order_id=order.id,
                user=order.sender or None,
                message=f"queue full: {queued} orders queued (limit {limit})",
                queued=queued,
            )
            raise Busy(self.config.host, queued, limit)
        order.extra["acknowledged"] = False
        user = order.sender or None
        self.audit.append(
            "order_received",
            order_id=order.id,
            user=user,
            target=order.target,
            executor=order.executor or self.config.worker.default_executor,
            message=order.payload[:200],
        )
        self.spool.write_state(
            order.id, {"id": order.id, "state": QUEUED, "updated": utcnow(), "host": self.config.host}
        )
        # The file is written first, the queued event next, and only then is the
        # file put where a worker can see it: so "queued" always precedes "delivered".
        staged = self.spool.stage(order.id, order.to_json())
        try:
            self.audit.append("order_queued", order_id=order.id, user=user)
            self.spool.move(staged, self.spool.orders / f"{order.id}.json")
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return order

    def known(self, order_id: str) -> bool:
        sp = self.spool
        return any(
            p.exists()
            for p in (
                sp.state_path(order_id),
                sp.orders / f"{order_id}.json",
                sp.processing / f"{order_id}.json",
                sp.responses / f"{order_id}.json",
            )
        )

    # -- status ----------------------------------------------------------
    def status(self, order_id: str, *, with_response: bool = False) -> dict[str, Any]:
        """The order's state; once finished, its sidecar (the answer in ``answer``).
        ``with_response`` adds the Markdown document for people as ``response``."""
        sp = self.spool
        try:
            sidecar = read_json(sp.responses / f"{order_id}.json")
        except FileNotFoundError:
            sidecar = None
        except (OSError, ValueError):
            sidecar = None
        if sidecar is not None:
            if with_response:
                try:
                    sidecar["response"] = (sp.responses / f"{order_id}.md").read_text(encoding="utf-8")
                except OSError:
                    sidecar["response"] = ""
            return sidecar
        if (sp.processing / f"{order_id}.json").exists():
            # claimed by a runner: no state file is written for that (one write less per order)
            return {"id": order_id, "state": RUNNING, "host": self.config.host}
        state = sp.read_state(order_id)
        if state is None:
            if (sp.orders / f"{order_id}.json").exists():
                state = {"id": order_id, "state": QUEUED}
            else:
                raise NotFound(f"no order {order_id!r} on {self.config.host}")
        return state

    def wait(self, order_id: str, timeout: float | None = None) -> dict[str, Any]:
        """Block until the order is finished (inotify on responses/); returns its status.

        Raises TimeoutError if ``timeout`` passes first.
        """
        status = self.status(order_id, with_response=True)
        if is_terminal(status.get("state")):
            return status
        if timeout is not None and timeout <= 0:  # no watch (no inotify instance) for a mere look
            raise TimeoutError(f"order {order_id} is still {status.get('state')}")
        from galaxy_fleet.node.watch import IN_MOVED_TO, Watcher

        done = threading.Event()
        target = f"{order_id}.json"

        def on_event(_directory: str, name: str | None, _kind: str) -> None:
            if name is None or name == target:
                done.set()

        watcher = Watcher(on_event, name="galaxy-wait")
        watcher.add(self.spool.responses, IN_MOVED_TO)
        watcher.start()
        try:
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                status = self.status(order_id, with_response=True)
                if is_terminal(status.get("state")):
                    return status
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"order {order_id} is still {status.get('state')} after {timeout:g} s")
                # The event wakes us at once; the cap guards against a missed event.
                done.wait(1.0 if left is None else min(left, 1.0))
                done.clear()
        finally:
            watcher.stop()

    def list(self, *, limit: int = 20, state: str | None = None) -> list[dict[str, Any]]:
        """Most recent orders first, from the per-order state files."""
        names = sorted((n for n in os.listdir(self.spool.order_state) if n.endswith(".json")), reverse=True)
        out: list[dict[str, Any]] = []
        for name in names:
            st = self.spool.read_state(name[:-5])
            if st is not None and st.get("state") == QUEUED and (self.spool.processing / name).exists():
                st["state"] = RUNNING
            if st is None or (state and st.get("state") != state):
                continue
            out.append(st)
            if len(out) >= limit:
                break
        return out

    # -- cancel ----------------------------------------------------------
    def cancel(self, order_id: str, *, user: str | None = None, wait: float = 3.0) -> dict[str, Any]:
        """Cancel a queued or running order; returns its status afterwards.

        A queued order is claimed and finished here; a running one is signalled
        through state/cancel/<id> (the worker stops it within about a second).
        """
        check_name("order id", order_id)
        status = self.status(order_id)
        if is_terminal(status.get("state")):
            return status
        self.audit.append("order_cancel_requested", severity="warning", order_id=order_id, user=user)
        self.spool.request_cancel(order_id)
        queued = self.spool.orders / f"{order_id}.json"
        claim = self.spool.claim(queued, order_id)
        if claim is not None:
            try:
                try:
                    order = from_dict(read_json(claim.path), max_payload_bytes=1 << 30)
                except (OSError, ValueError):
                    order = Order(id=order_id, payload="(unreadable)")
                finish(
                    self.spool,
                    self.audit,
                    self.config.host,
                    claim.path,
                    order,
                    order.executor or self.config.worker.default_executor,
                    Result(CANCELLED, error=f"cancelled before it ran{f' by {user}' if user else ''}"),
                    {"received": order.timestamp, "run_s": 0.0},
                )
            finally:
                claim.release()
        try:
            return self.wait(order_id, timeout=wait)
        except TimeoutError:
            return self.status(order_id)

    # -- permission prompts ----------------------------------------------
    def answer_permission(self, order_id: str, permission_id: str, answer: str, by: str) -> dict[str, Any]:
        """Answer a running order's permission prompt: once, always (for this order) or deny.

        The executor that waits on the prompt forwards the answer and audits the
        decision; an answer that cannot be taken (no such prompt, already
        decided or expired) raises and is audited as refused."""
        from galaxy_fleet.node.permissions import PromptError, PromptNotFound, Prompts, check_ids

        try:
            check_ids(order_id, permission_id)
            state = self.status(order_id).get("state")
            if state != RUNNING:
                raise PromptNotFound(f"order {order_id} is {state or 'unknown'}: no permission prompt waits")
            return Prompts(self.config.spool_dir).answer(order_id, permission_id, answer, by)
        except (PromptError, PromptNotFound, NotFound) as exc:
            self.audit.append(
                "permission_answer_refused",
                severity="warning",
                message=str(exc),
                order_id=order_id[:128] if isinstance(order_id, str) else None,
                user=by[:128] if isinstance(by, str) and by else None,
                permission=str(permission_id)[:128],
                answer=str(answer)[:32],
            )
            raise


def new_order(payload: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The JSON of a fresh order, as `galaxy order submit` builds it: ``fields`` by their
    wire names (``from``, ``session``, ``timeout`` ...), None fields left out."""
    given = {k: v for k, v in fields.items() if v is not None}
    sender = given.pop("from", None)
    return build(payload, sender=sender, **given)
