"""Failure drills on the lab: each failure is detected, alerted to the
control side, recovered and audited; orders work afterwards.

The control side is the Fleet of the ``e2e`` fixture (this host, the control
machine's routing key). Every wait is bounded."""

from __future__ import annotations

import json
import time
import uuid

from e2e import OPENCODE_START_GRACE, E2ELab, poll
from support.llm_server import Text


def main_pid(e2e: E2ELab, node: str, unit: str) -> int:
    pid = int(e2e.must(node, f"systemctl show --property=MainPID --value {unit}").strip() or 0)
    assert pid > 0, f"{unit} on {node} has no main process"
    return pid


def node_audit(e2e: E2ELab, node: str, kind: str) -> list[dict]:
    out = e2e.must(node, "cat /var/lib/galaxy/audit/audit*.jsonl")
    return [ev for ev in map(json.loads, out.splitlines()) if ev.get("type") == kind]


def reconnect(e2e: E2ELab, node: str, why: str) -> None:
    """Drop the control side's link: the next `galaxy remote` on the node sees the spool's new mount."""
    t0 = time.monotonic()
    e2e.fleet.router.links[node].drop(why)
    e2e.wait_seen("node_up", node, t0, timeout=30)


def order_works(e2e: E2ELab, node: str, reply: str) -> None:
    e2e.llm.script(Text(reply))
    rec = e2e.order(node, f"say {reply}", timeout=120)
    assert rec.state == "done", (rec.state, rec.error)
    assert reply in (rec.response or "")


def test_a_killed_worker_is_restarted_and_the_control_side_hears_it_died_and_recovered(e2e):
    e2e.llm.reset()
    order_works(e2e, "web2", "before the kill")
    pid = main_pid(e2e, "web2", "galaxy-worker")
    t0 = time.monotonic()
    e2e.must("web2", f"kill -9 {pid}")
    died = e2e.wait_seen("worker_died", "web2", t0, timeout=30)
    back = e2e.wait_seen("worker_recovered", "web2", t0, timeout=30)
    assert str(pid) in died.data.get("message", "")
    assert main_pid(e2e, "web2", "galaxy-worker") != pid
    assert any(ev.get("pid") == pid for ev in node_audit(e2e, "web2", "worker_died"))
    order_works(e2e, "web2", "after the kill")
    print(f"kill -9 -> worker_died at control {died.t - t0:.1f} s, worker_recovered {back.t - t0:.1f} s")


def test_a_wedged_opencode_server_is_restarted_by_the_health_check(e2e):
    e2e.llm.reset()
    pid = main_pid(e2e, "web1", "opencode-serve")
    # Past the start-up grace (a server still starting is left alone), then wedged.
    poll(lambda: int(e2e.must("web1", f"ps -o etimes= -p {pid}").strip()) > OPENCODE_START_GRACE + 1, 30,
         "opencode serve past its start-up grace", interval=1)
    e2e.must("web1", f"kill -STOP {pid}")
    t0 = time.monotonic()
    try:
        e2e.ssh("web1", "systemctl start galaxy-health.service", timeout=180)
    finally:
        e2e.ssh("web1", f"kill -CONT {pid} 2>/dev/null; true")
    restarted = e2e.wait_seen("opencode_restarted", "web1", t0, timeout=30)
    assert "opencode" in restarted.data.get("message", "")
    assert any(ev.get("pid") == pid for ev in node_audit(e2e, "web1", "opencode_restarted"))
    poll(lambda: e2e.ssh("web1", "systemctl is-active opencode-serve").stdout.strip() == "active"
         and main_pid(e2e, "web1", "opencode-serve") != pid, 30, "opencode-serve running again")
    # The restarted server answers orders (health waits until it is up).
    poll(lambda: e2e.ssh("web1", "systemctl start galaxy-health.service", timeout=180).returncode == 0,
         60, "web1 healthy again", interval=1)
    e2e.wait_seen("health_recovered", "web1", t0, timeout=30)
    order_works(e2e, "web1", "after the restart")


def test_a_full_spool_file_system_alerts_loses_nothing_and_orders_work_once_freed(e2e):
    e2e.llm.reset()
    # The spool moves onto its own 16 MiB tmpfs (the worker is stopped meanwhile),
    # so that it can really fill up without touching the machine's disk.
    e2e.must("web2", "systemctl stop galaxy-worker && mkdir -p /run/spool-copy && "
                     "cp -a /var/lib/galaxy/. /run/spool-copy/ && "
                     "mount -t tmpfs -o size=16m,mode=0750 galaxy-spool /var/lib/galaxy && "
                     "cp -a /run/spool-copy/. /var/lib/galaxy/ && chown galaxy:galaxy /var/lib/galaxy && "
                     "rm -rf /run/spool-copy && systemctl start galaxy-worker")
    try:
        reconnect(e2e, "web2", "spool moved")
        order_works(e2e, "web2", "before the disk filled")
        before = e2e.fleet.orders(limit=1)[0]
        t0 = time.monotonic()
        # Fill to ~95%: the health check alerts (its alert still fits) ...
        e2e.must("web2", "avail=$(df --output=avail -k /var/lib/galaxy | tail -1); "
                         "dd if=/dev/zero of=/var/lib/galaxy/filler bs=1k count=$((avail - 700)) 2>/dev/null")
        e2e.ssh("web2", "systemctl start galaxy-health.service", timeout=180)
        failing = e2e.wait_seen("health_failing", "web2", t0, timeout=30)
        assert "Disk space LOW" in failing.data.get("message", ""), failing.data
        # ... and then nothing fits: an order is refused with a clear reason, nothing is lost.
        e2e.must("web2", "dd if=/dev/zero of=/var/lib/galaxy/filler2 bs=4k 2>/dev/null; true")
        refused = e2e.fleet.submit("web2", "no room", sender="e2e")[0]
        rec = e2e.fleet.wait([refused.id], timeout=60)[0]
        assert rec.state in ("failed", "rejected"), (rec.state, rec.error)
        assert "space" in (rec.error or "").lower(), rec.error
        assert e2e.ssh("web2", "systemctl is-active galaxy-worker").stdout.strip() == "active"
        # Freed: orders work again, the earlier answer is intact, the health check recovers.
        e2e.must("web2", "rm -f /var/lib/galaxy/filler /var/lib/galaxy/filler2")
        order_works(e2e, "web2", "after the disk was freed")
        assert "before the disk filled" in e2e.must("web2", f"cat /var/lib/galaxy/responses/{before.id}.md")
        e2e.ssh("web2", "systemctl start galaxy-health.service", timeout=180)
        e2e.wait_seen("health_recovered", "web2", t0, timeout=30)
    finally:
        # Back onto the machine's disk, with whatever the tmpfs holds now.
        e2e.ssh("web2", "rm -f /var/lib/galaxy/filler /var/lib/galaxy/filler2; systemctl stop galaxy-worker; "
                        "mkdir -p /run/spool-copy && cp -a /var/lib/galaxy/. /run/spool-copy/ && "
                        "umount /var/lib/galaxy && cp -a /run/spool-copy/. /var/lib/galaxy/ && "
                        "rm -rf /run/spool-copy; systemctl start galaxy-worker")
        reconnect(e2e, "web2", "spool moved back")
    order_works(e2e, "web2", "on the disk again")


def test_a_node_cut_off_the_network_is_reported_down_then_up(e2e):
    t0 = time.monotonic()
    e2e.link("web1", up=False)
    try:
        down = e2e.wait_seen("node_down", "web1", t0, timeout=30)
    finally:
        e2e.link("web1", up=True)
    t1 = time.monotonic()
    up = e2e.wait_seen("node_up", "web1", t1, timeout=60)
    print(f"cut -> node_down at control {down.t - t0:.1f} s; restored -> node_up {up.t - t1:.1f} s")
    e2e.llm.reset()
    order_works(e2e, "web1", "after the network came back")


def rewrite_in_place(e2e: E2ELab, node: str, old: str, new: str) -> None:
    """Overwrite ``old`` with ``new`` (same length) in the node's audit log, in place: the
    writer's open file stays the file, as with an intruder's edit."""
    assert len(old) == len(new)
    script = ("import sys\n"
              "p = '/var/lib/galaxy/audit/audit.jsonl'\n"
              "old, new = sys.argv[1].encode(), sys.argv[2].encode()\n"
              "i = open(p, 'rb').read().index(old)\n"
              "fh = open(p, 'r+b'); fh.seek(i); fh.write(new); fh.close()\n")
    e2e.must(node, f"python3 -c \"{script}\" '{old}' '{new}'")


def test_an_edited_audit_line_is_reported_by_the_health_check(e2e):
    e2e.llm.reset()
    e2e.ssh("web1", "systemctl start galaxy-health.service", timeout=180)  # a checkpoint of the chain
    text = f"say an audited answer {uuid.uuid4().hex[:8]}"
    order_works(e2e, "web1", text[4:])
    rec = e2e.fleet.orders(limit=1)[0]
    rewrite_in_place(e2e, "web1", text, text.upper())
    t0 = time.monotonic()
    try:
        cp = e2e.ssh("web1", "s=$(date +%s); systemctl start galaxy-health.service; "
                             "journalctl -u galaxy-health.service --no-pager -o cat --since @$s", timeout=180)
        assert "Audit chain BROKEN" in cp.stdout and "was edited" in cp.stdout, cp.stdout
        failing = e2e.wait_seen("health_failing", "web1", t0, timeout=30)
        assert "Audit chain BROKEN" in failing.data.get("message", ""), failing.data
    finally:
        rewrite_in_place(e2e, "web1", text.upper(), text)
    e2e.ssh("web1", "systemctl start galaxy-health.service", timeout=180)
    e2e.wait_seen("health_recovered", "web1", t0, timeout=30)
    assert rec.state == "done"
