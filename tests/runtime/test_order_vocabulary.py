"""The order's vocabulary (order.py) and the node status rule (node_status.py), and that the
package keeps them in one place."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import galaxy_fleet
from galaxy_fleet import order as o
from galaxy_fleet.node_status import DEGRADED, DOWN, HEALTHY, UNKNOWN, node_status


def test_built_order_uses_the_wire_names_and_validates() -> None:
    data = o.build("do it", sender="alice", target="web1", executor="echo", timeout=30, session="s1",
                   options={"project": "api"})
    assert data["type"] == o.ORDER_TYPE and data["from"] == "alice" and data["session"] == "s1"
    assert data["timeout"] == 30 and data["options"] == {"project": "api"} and data["acknowledged"] is False
    assert "sender" not in data and "_timeout" not in data["options"]
    order = o.from_dict(data)
    assert (order.sender, order.session, order.timeout, order.target) == ("alice", "s1", 30.0, "web1")
    assert o.from_dict(order.to_dict()).to_dict() == order.to_dict()  # the JSON form is stable
    assert o.build("x", id="fixed-id")["id"] == "fixed-id" and o.build("x")["id"] != o.build("x")["id"]
    with pytest.raises(o.OrderError, match="timeout"):
        o.from_dict(o.build("x", timeout=-1))


def test_states() -> None:
    assert set(o.ACTIVE) | set(o.TERMINAL) == set(o.STATES) and not set(o.ACTIVE) & set(o.TERMINAL)
    assert set(o.UNSUCCESSFUL) < set(o.TERMINAL) and o.DONE not in o.RETRYABLE
    assert all(o.is_terminal(s) for s in o.TERMINAL) and not o.is_terminal(o.RUNNING) and not o.is_terminal(None)
    assert o.state_of_event("order_timed_out") == o.TIMED_OUT and o.state_of_event("order_progress") is None
    assert o.state_of_event(o.event_type(o.QUEUED)) == o.QUEUED and o.state_of_event(None) is None
    assert [o.rank(s) for s in o.ACTIVE] == [0, 1, 2, 3] and o.rank(o.DONE) > o.rank(o.RUNNING) > o.rank("bogus")
    assert all(s in o.TERMINAL_EVENTS for s in map(o.event_type, o.TERMINAL))


SRC = Path(galaxy_fleet.__file__).parent
TERMINAL_LITERAL = re.compile(r"""["'](?:order_)?(done|failed|cancelled|timed_out|interrupted)["']""")


def test_no_module_but_order_lists_the_states() -> None:
    """A list of final states anywhere else would be a second copy of the rule."""
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "order.py" and path.parent == SRC:
            continue
        if path.parent.name == "audit":
            continue  # names event types for --sum-cost, and keeps order.py off `galaxy audit`'s start-up path
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if len(set(TERMINAL_LITERAL.findall(line))) >= 2 and not line.lstrip().startswith("#"):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert offenders == []


REPORT_OK = {"healthy": True, "checks": [{"name": "worker", "ok": True, "message": "active"},
                                         {"name": "disk_spool", "ok": True, "message": "12 GiB free"}]}
REPORT_BAD = {"healthy": False, "checks": [{"name": "worker", "ok": False, "message": "no heartbeat"},
                                           {"name": "disk_spool", "ok": True, "message": "12 GiB free"}]}


@pytest.mark.parametrize("kwargs, status, reason", [
    ({"connected": True, "health": REPORT_OK}, HEALTHY, "all 2 checks passed"),
    ({"connected": None, "health": REPORT_OK}, HEALTHY, "all 2 checks passed"),
    ({"connected": True, "health": REPORT_BAD}, DEGRADED, "failing: worker: no heartbeat"),
    ({"connected": True, "health": REPORT_OK, "worker_silent": True}, DEGRADED,
     "the order worker stopped sending heartbeats"),
    ({"connected": False, "health": REPORT_OK, "error": "connection refused"}, DOWN,
     "unreachable: connection refused"),
    ({"connected": False, "health": None, "seen": True}, DOWN, "unreachable: not connected"),
    ({"connected": False, "health": None, "seen": False, "error": "timed out"}, UNKNOWN, "never reached (timed out)"),
    ({"connected": True, "health": None}, UNKNOWN, "connected, no health report yet"),
    ({"connected": True, "health": {"healthy": False, "error": "no answer", "checks": []}}, DOWN,
     "health check failed: no answer"),
    ({"connected": True, "health": {"healthy": False, "checks": [{"name": "disk_spool", "ok": False}]}}, DEGRADED,
     "failing: disk_spool"),
])
def test_node_status_rule(kwargs: dict, status: str, reason: str) -> None:
    verdict = node_status(**kwargs)
    assert (verdict.status, verdict.reason) == (status, reason)
    assert verdict.healthy is (None if status == UNKNOWN else status == HEALTHY)
