"""`galaxy health` on a real node: output, exit codes, alerts on state changes, chain checks."""

from __future__ import annotations

import json


def health(node, *args):
    proc = node.galaxy("health", *args)
    return proc.returncode, proc.stdout


def test_healthy_node_passes_in_seed_format(node):
    node.start_worker()
    code, out = health(node)
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[0].endswith("=== Galaxy Health Check (testnode) ===")
    assert lines[-1].endswith("=== Health Check PASSED ===")
    assert any("✓ worker is running" in x for x in lines)
    assert any("✓ Disk space OK for spool" in x for x in lines)
    code, out = health(node, "--json")
    report = json.loads(out)
    assert report["healthy"] is True
    names = {c["name"] for c in report["checks"]}
    assert {"worker", "disk_spool", "stuck", "backlog", "audit_chain", "memory", "audit"} <= names
    events = [e for e in node.audit_events() if e["type"] == "health_check"]
    assert len(events) == 2 and events[-1]["checks"]["worker"] is True


def test_state_change_alerts_once_and_recovery_is_announced(node):
    worker = node.start_worker()
    assert health(node)[0] == 0
    worker.kill()
    worker.wait()
    for _ in range(3):  # failing three times raises one alert, not three
        code, out = health(node)
        assert code == 1 and "✗ worker is not running" in out and "FAILED" in out
    assert [a["kind"] for a in node.outbox()] == ["health_failing"]
    node.start_worker()
    assert health(node)[0] == 0
    kinds = [a["kind"] for a in node.outbox()]
    assert kinds[:1] == ["health_failing"] and "health_recovered" in kinds


def test_edited_audit_line_is_detected(node):
    node.start_worker()
    oid = node.submit("hello")
    node.wait_done(oid)
    assert health(node)[0] == 0
    later = node.submit("after the check")
    node.wait_done(later)
    path = node.spool / "audit" / "audit.jsonl"
    text = path.read_text()
    assert '"message":"after the check"' in text
    path.write_text(text.replace('"message":"after the check"', '"message":"something else"'))
    code, out = health(node)
    assert code == 1 and "Audit chain BROKEN" in out and "edited" in out
    proc = node.galaxy("audit", "--verify")
    assert proc.returncode == 1


def test_config_check_covers_every_section(node, tmp_path):
    good = tmp_path / "good.yml"
    good.write_text("host: web1\ncontrol: {inventory: /etc/galaxy/inventory.yml, connect_timeout: 5}\n"
                    "bot: {authorized_users: [1]}\ndashboard: {port: 5000}\nretention: {orders_days: 7}\n"
                    "health: {disk_max_percent: 80}\n")
    proc = node.galaxy("config", "check", str(good))
    assert proc.returncode == 0, proc.stderr
    for text, message in [
        ("control: {inventry: x}\n", "control.inventry: unknown setting"),
        ("control: {connect_timeout: soon}\n", "control.connect_timeout: expected a number"),
        ("dashboard: {listen: 0.0.0.0}\n", "dashboard.listen: unknown setting"),
        ("retention: {orders_days: -1}\n", "retention.orders_days"),
        ("health: {disk_max: 80}\n", "health.disk_max: unknown setting"),
        ("bot: {authorized_users: nobody}\n", "bot"),
    ]:
        bad = tmp_path / "bad.yml"
        bad.write_text(text)
        proc = node.galaxy("config", "check", str(bad))
        assert proc.returncode == 2 and message in proc.stderr, (text, proc.stderr)


def test_an_edit_to_an_event_checked_before_is_found_by_the_full_verification(node):
    node.start_worker()
    oid = node.submit("checked once")
    node.wait_done(oid)
    code, out = health(node)  # the first run checks the whole chain, and records when
    assert code == 0 and "all " in out and "events checked" in out, out
    path = node.spool / "audit" / "audit.jsonl"
    text = path.read_text()
    assert '"payload_preview":"checked once"' in text or "checked once" in text
    path.write_text(text.replace("checked once", "checked twice", 1))
    # Within audit_full_verify_every (a day by default) only new events are read: not seen yet.
    code, out = health(node)
    assert code == 0 and "new events checked" in out, out
    node.write_config(health={"audit_full_verify_every": 0})
    code, out = health(node)
    assert code == 1 and "Audit chain BROKEN" in out and "edited" in out, out
    assert [a["kind"] for a in node.outbox()][-1] == "health_failing"
    # It stays failing (every run verifies in full again) until the trail is put right.
    assert health(node)[0] == 1
    path.write_text(path.read_text().replace("checked twice", "checked once", 1))
    code, out = health(node)
    assert code == 0, out
