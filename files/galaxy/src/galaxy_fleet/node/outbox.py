"""Alerts for the control plane: one JSON file per alert in the spool's outbox/.

The control plane (the router's event stream, or `galaxy remote`) delivers
them to Telegram and removes them; until then they survive restarts.
"""

from __future__ import annotations

from typing import Any

from galaxy_fleet.node.spool import Spool
from galaxy_fleet.order import new_id, utcnow

ALERT_TYPE = "galaxy_alert"


def post(
    spool: Spool,
    host: str,
    kind: str,
    message: str,
    *,
    severity: str = "error",
    order_id: str | None = None,
    user: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    alert = {
        "type": ALERT_TYPE,
        "id": new_id(),
        "ts": utcnow(),
        "host": host,
        "kind": kind,
        "severity": severity,
        "message": message,
        "order_id": order_id,
        "user": user,
        **data,
    }
    spool.write_json(spool.outbox / f"{alert['id']}.json", alert)
    return alert


def pending(spool: Spool) -> list[dict[str, Any]]:
    """Alerts not yet delivered, oldest first (unreadable files are skipped)."""
    from galaxy_fleet.node.spool import read_json

    alerts = []
    for path in sorted(spool.outbox.glob("*.json")):
        try:
            alerts.append(read_json(path))
        except (OSError, ValueError):
            continue
    return alerts


def ack(spool: Spool, alert_id: str) -> bool:
    try:
        (spool.outbox / f"{alert_id}.json").unlink()
    except FileNotFoundError:
        return False
    return True
