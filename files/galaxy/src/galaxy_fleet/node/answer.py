"""How an order ends on the node: its answer written, audited, alerted, archived.

Every way an order finishes goes through ``finish``: a run of the worker, a
cancel of a queued order by the node API, the recovery of an order whose
runner died. The answer is carried as data: the sidecar
``responses/<id>.json`` holds it as the ``answer`` field next to the state,
exit code, error, timings and the executor's figures (tokens, cost), and is
what `galaxy order status`, `galaxy remote` and through it the control plane
read. The Markdown document ``responses/<id>.md`` is the same answer for a
person reading the spool; nothing parses it back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from galaxy_fleet.audit import AuditLog
from galaxy_fleet.node import outbox
from galaxy_fleet.node.executors import Result
from galaxy_fleet.node.spool import Spool
from galaxy_fleet.order import CANCELLED, DONE, FAILED, INTERRUPTED, RETRYABLE, Order, event_type, utcnow

SEVERITY = {DONE: "info", CANCELLED: "warning", FAILED: "error", INTERRUPTED: "error"}
FIGURES = ("tokens_in", "tokens_out", "cost", "model", "agent")  # executor figures the audit event carries


def sidecar_of(order: Order, host: str, executor: str, result: Result, timings: dict[str, Any]) -> dict[str, Any]:
    """The finished order as data: what every reader of the answer gets."""
    return {
        "id": order.id,
        "state": result.status,
        "host": host,
        "target": order.target,
        "from": order.sender,
        "executor": executor,
        "exit_code": result.exit_code,
        "error": result.error,
        "answer": result.output or "",
        "bytes_out": result.bytes_out,
        "truncated": result.truncated,
        "session": order.session,
        "timings": timings,
        "details": result.details,
    }


def render_response(order: Order, sidecar: dict[str, Any]) -> str:
    """The Markdown answer for people reading the spool, like the classic
    galaxy-order-response-*.md (written from the sidecar, never read back)."""
    t = sidecar["timings"]
    exit_code = sidecar.get("exit_code")
    lines = [
        f"# Order {order.id}: {sidecar['state']}",
        "",
        f"- **Host:** {sidecar['host']}",
        f"- **From:** {order.sender or '-'}",
        f"- **Executor:** {sidecar['executor']}",
        f"- **Exit code:** {'-' if exit_code is None else exit_code}",
        "- **Duration:** " + (f"{t['run_s']:.3f} s" if isinstance(t.get("run_s"), (int, float)) else "unknown"),
    ]
    if sidecar.get("error"):
        lines.append(f"- **Error:** {sidecar['error']}")
    lines += ["", "## Order", "", order.payload, "", "## Response", "", sidecar.get("answer") or "(no output)", ""]
    return "\n".join(lines)


def finish(
    spool: Spool,
    audit: AuditLog,
    host: str,
    proc_path: Path,
    order: Order,
    executor: str,
    result: Result,
    timings: dict[str, Any],
) -> dict[str, Any]:
    """Write the response and sidecar, audit, alert if needed, archive the order file.

    Order matters for crash safety: the durable response comes first, so a
    crash after it is completed by recovery instead of being re-reported.
    """
    state = result.status
    sidecar = sidecar_of(order, host, executor, result, dict(timings, finished=utcnow()))
    # The .md first, the sidecar (which marks the order finished) second: both durable.
    spool.write_pair(
        [
            (spool.responses / f"{order.id}.md", render_response(order, sidecar).encode()),
            (spool.responses / f"{order.id}.json", json.dumps(sidecar, ensure_ascii=False, indent=1).encode() + b"\n"),
        ]
    )
    figures = {k: result.details[k] for k in FIGURES if k in result.details}
    audit.append(
        event_type(state),
        severity=SEVERITY.get(state, "error"),
        order_id=order.id,
        user=order.sender or None,
        message=result.error or "ok",
        executor=executor,
        exit_code=result.exit_code,
        run_s=sidecar["timings"].get("run_s"),
        bytes_out=result.bytes_out,
        **figures,
    )
    if state != DONE:
        outbox.post(
            spool,
            host,
            event_type(state),
            f"Order {order.id} {state}: {result.error or state}",
            severity=SEVERITY.get(state, "error"),
            order_id=order.id,
            user=order.sender or None,
            target=order.target,
            retry=state in RETRYABLE,
        )
    try:
        # Not synced: if this rename is lost, recovery finds the finished sidecar and redoes it.
        spool.move(proc_path, spool.archive / f"{order.id}.json", durable=False)
    except FileNotFoundError:
        pass
    spool.write_state(
        order.id, {"id": order.id, "state": state, "updated": utcnow(), "host": host, "error": result.error}
    )
    spool.clear_cancel(order.id)
    return sidecar
