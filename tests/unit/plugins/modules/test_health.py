from __future__ import annotations

from ansible_collections.galaxy_protocol.fleet.plugins.modules import health

GOOD = {"healthy": True, "checks": [
    {"name": "worker", "ok": True, "message": "galaxy-worker.service is active"},
    {"name": "disk", "ok": True, "message": "12 GiB free"},
]}
BAD = {"healthy": False, "checks": [
    {"name": "worker", "ok": False, "message": "galaxy-worker.service is failed"},
    {"name": "disk", "ok": True, "message": "12 GiB free"},
]}


def test_healthy_node(galaxy, run_module):
    galaxy.answer(0, GOOD)
    kind, result = run_module(health, {"path": galaxy.path})
    assert kind == "exit"
    assert result["healthy"] is True and result["changed"] is False
    assert result["checks"] == GOOD["checks"] and result["failed_checks"] == []
    assert galaxy.calls[0]["argv"] == ["health", "--json"]


def test_unhealthy_node_is_reported_not_failed_by_default(galaxy, run_module):
    galaxy.answer(1, BAD)
    kind, result = run_module(health, {"path": galaxy.path})
    assert kind == "exit"
    assert result["healthy"] is False and result["failed_checks"] == ["worker"] and result["rc"] == 1


def test_fail_on_unhealthy_names_the_checks(galaxy, run_module):
    galaxy.answer(1, BAD)
    kind, result = run_module(health, {"path": galaxy.path, "fail_on_unhealthy": True})
    assert kind == "fail"
    assert result["msg"] == "unhealthy: worker: galaxy-worker.service is failed"
    assert result["changed"] is False


def test_exit_code_and_report_must_agree(galaxy, run_module):
    galaxy.answer(1, GOOD)
    kind, result = run_module(health, {"path": galaxy.path})
    assert kind == "exit" and result["healthy"] is False


def test_runs_in_check_mode(galaxy, run_module):
    galaxy.answer(0, GOOD)
    kind, result = run_module(health, {"path": galaxy.path, "_ansible_check_mode": True})
    assert kind == "exit" and result["healthy"] is True
    assert len(galaxy.calls) == 1


def test_crash_without_report_fails(galaxy, run_module):
    galaxy.answer(2, "", "galaxy: /etc/galaxy/config.yml: worker.runners: expected int\n")
    kind, result = run_module(health, {"path": galaxy.path, "config": "/etc/galaxy/config.yml"})
    assert kind == "fail"
    assert "worker.runners: expected int" in result["msg"]
    assert galaxy.calls[0]["argv"][:2] == ["--config", "/etc/galaxy/config.yml"]


def test_status_and_reason_come_from_the_node(galaxy, run_module):
    """The node decides the status by the rule the bot and the dashboard use; the module passes it on."""
    galaxy.answer(1, {**BAD, "status": "degraded", "reason": "failing: worker: galaxy-worker.service is failed"})
    kind, result = run_module(health, {"path": galaxy.path})
    assert kind == "exit"
    assert result["status"] == "degraded" and result["reason"] == "failing: worker: galaxy-worker.service is failed"


def test_status_of_an_older_node_without_one(galaxy, run_module):
    galaxy.answer(0, GOOD)
    kind, result = run_module(health, {"path": galaxy.path})
    assert kind == "exit" and result["status"] == "healthy" and result["reason"] == "all 2 checks passed"
    galaxy.answer(1, {**GOOD, "status": "healthy", "reason": "all 2 checks passed"})
    kind, result = run_module(health, {"path": galaxy.path})
    # the exit code says otherwise: the stricter answer wins, and says why
    assert kind == "exit" and result["status"] == "degraded" and result["reason"] == "galaxy health exited with 1"
