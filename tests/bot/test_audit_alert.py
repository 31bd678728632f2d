"""A node's audit trail replaced under the running bot: the alert chat hears of it, the
control node's own trail records it, and orders to that node are still followed to the end."""

from __future__ import annotations

import os
from typing import Callable

from botlab import ALICE, OPS, BotLab, order, wait_for

from galaxy_fleet import audit


def test_a_replaced_node_audit_log_reaches_the_alert_chat(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab(nodes={"web1": ["web"]}, ghost=False)
    alice = lab.user(ALICE)
    order(alice, "/order web1 echo before")
    node_log = lab.nodes["web1"].spool / "audit" / "audit.jsonl"
    wait_for(lambda: lab.store().cursor("web1")[0] == audit.query(node_log, limit=1)[-1]["seq"], 20,
             what="the control node to catch up")
    fresh = node_log.with_name("fresh.jsonl")
    with audit.AuditLog(fresh, "web1") as log:
        log.append("order_progress", message="nothing to see")
    os.rename(fresh, node_log)

    alert = lab.emulator.wait_message(OPS, "audit_reset", timeout=30)
    assert "web1" in alert.text and "reset or rewritten" in alert.text and alert.text.startswith("🚨")
    [own] = wait_for(lambda: lab.audit_events("audit_reset"), 10, what="the control node's own record")
    assert own["node"] == "web1" and own["severity"] == "critical"
    _status, answer = order(alice, "/order web1 echo after-the-reset")
    assert "after-the-reset" in answer.text
