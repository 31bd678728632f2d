"""What makes a node healthy, degraded, down or unknown: one rule for every view.

The bot's /machines and /status, the dashboard's page and /metrics, and the
``health`` Ansible module (through `galaxy health --json` on the node) all
call ``node_status``; none decides on its own.

- ``down``: the control node has no connection to it (it was connected once,
  or has left a health report behind), or a health request to it failed.
- ``unknown``: never heard from, or connected without a health report yet.
- ``degraded``: reachable, but a health check fails or its order worker stopped
  sending heartbeats.
- ``healthy``: reachable and every check of its latest health report passed.

A health report is the node's own (``{"healthy": bool, "checks": [{"name",
"ok", "message"}, ...]}``, see node/health.py). This module imports nothing
of the package, so the node, the control plane and the dashboard can all use it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

HEALTHY = "healthy"
DEGRADED = "degraded"
DOWN = "down"
UNKNOWN = "unknown"
STATUSES = (HEALTHY, DEGRADED, DOWN, UNKNOWN)
# From the worst: how the views sort nodes, and what /metrics reports as a number.
SEVERITY = {DOWN: 3, DEGRADED: 2, UNKNOWN: 1, HEALTHY: 0}


@dataclass(frozen=True)
class NodeStatus:
    status: str
    reason: str
    failing: tuple[str, ...] = field(default=())  # the names of the failing checks

    @property
    def healthy(self) -> bool | None:
        """True/False as a health report says it; None when nothing is known."""
        if self.status == UNKNOWN:
            return None
        return self.status == HEALTHY

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "reason": self.reason, "failing": list(self.failing)}


def _failing(checks: list[Any]) -> list[dict[str, Any]]:
    return [c for c in checks if isinstance(c, dict) and not c.get("ok")]


def node_status(
    *,
    connected: bool | None,
    health: dict[str, Any] | None,
    error: str | None = None,
    seen: bool = True,
    worker_silent: bool = False,
) -> NodeStatus:
    """The status of one node and why.

    ``connected``: whether the control node's link to it is up; None when the
    question is asked on the node itself (the health module), where it is.
    ``health``: its latest health report, if any. ``error``: why the link is
    down. ``seen``: whether it was ever heard from. ``worker_silent``: the
    control node noticed its worker's heartbeats stop.
    """
    report = health or {}
    if connected is False:
        if not seen and not report:
            return NodeStatus(UNKNOWN, f"never reached ({error})" if error else "never reached")
        return NodeStatus(DOWN, f"unreachable: {error or 'not connected'}")
    checks = report.get("checks")
    checks = checks if isinstance(checks, list) else []
    if report.get("error") and not checks:
        return NodeStatus(DOWN, f"health check failed: {report['error']}")
    failing = _failing(checks)
    if failing or report.get("healthy") is False:
        names = tuple(str(c.get("name", "?")) for c in failing)
        detail = "; ".join(
            f"{c.get('name', '?')}: {c['message']}" if c.get("message") else str(c.get("name", "?")) for c in failing
        )
        return NodeStatus(DEGRADED, f"failing: {detail or 'a check'}", names)
    if worker_silent:
        return NodeStatus(DEGRADED, "the order worker stopped sending heartbeats")
    if not report or "healthy" not in report:
        return NodeStatus(UNKNOWN, "connected, no health report yet" if connected else "no health report yet")
    return NodeStatus(HEALTHY, f"all {len(checks)} checks passed" if checks else "healthy")
