"""galaxy-cleanup.timer on a real node (web1 of the deploy lab): installed, enabled and
scheduled by the node role, sandboxed at least as tightly as the health check, really
applying the retention of the node's config when it runs, and stopped and disabled
again when the role is told so.

The module name sorts after test_deploy.py on purpose: both share the session's
deploy lab, and test_deploy.py starts with a check that nothing is deployed yet.
Only web1 is deployed here (--limit), so the rest of the lab is left as it was.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from collection import failures, playbook, recap

# The retention this module deploys: 10 days is shorter than the runtime's default
# (30), so an order 20 days old is removed only if the service reads the config.
SETTINGS = ["-e", json.dumps({"galaxy_node_retention": {"orders_days": 10}})]
AS_GALAXY = "setpriv --reuid galaxy --regid galaxy --init-groups --"
SPOOL = "/var/lib/galaxy"


def deploy(deploy_lab, *extra: str):
    cp = playbook(deploy_lab.inventory, "site.yml", "--limit", "web1", *deploy_lab.source_vars(), *SETTINGS, *extra)
    return cp, cp.stdout + cp.stderr


def show(deploy_lab, unit: str, *props: str) -> dict[str, str]:
    cp = deploy_lab.ssh("web1", f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props))
    assert cp.returncode == 0, cp.stderr
    return dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)


def exposure(deploy_lab, unit: str) -> float:
    cp = deploy_lab.ssh("web1", f"systemd-analyze security --no-pager {unit}")
    found = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", cp.stdout)
    assert found, cp.stdout[-2000:] + cp.stderr
    return float(found.group(1))


@pytest.fixture(scope="module")
def deployed(deploy_lab):
    cp, out = deploy(deploy_lab)
    assert cp.returncode == 0, failures(out)
    return deploy_lab


def test_the_timer_is_enabled_and_runs_daily_with_a_random_delay(deployed):
    timer = show(deployed, "galaxy-cleanup.timer", "ActiveState", "UnitFileState", "TimersCalendar",
                 "RandomizedDelayUSec", "Persistent", "NextElapseUSecRealtime")
    assert timer["ActiveState"] == "active" and timer["UnitFileState"] == "enabled", timer
    assert "OnCalendar=*-*-* 00:00:00" in timer["TimersCalendar"], timer  # "daily"
    assert timer["RandomizedDelayUSec"] == "1h" and timer["Persistent"] == "yes", timer
    assert timer["NextElapseUSecRealtime"] not in ("", "n/a", "0"), timer
    service = show(deployed, "galaxy-cleanup.service", "Type", "User", "ExecStart", "PrivateNetwork")
    assert service["Type"] == "oneshot" and service["User"] == "galaxy", service
    assert "/opt/galaxy/bin/galaxy --config /etc/galaxy/config.yml cleanup" in service["ExecStart"], service
    assert service["PrivateNetwork"] == "yes"
    config = deployed.ssh("web1", "/opt/galaxy/bin/python -c \"import yaml; print(yaml.safe_load("
                                  "open('/etc/galaxy/config.yml'))['retention'])\"")
    assert config.stdout.strip() == "{'orders_days': 10}", config.stdout + config.stderr


def test_the_cleanup_service_is_sandboxed_like_the_health_check(deployed):
    cleanup, health = exposure(deployed, "galaxy-cleanup.service"), exposure(deployed, "galaxy-health.service")
    print(f"systemd-analyze security: galaxy-cleanup.service {cleanup}, galaxy-health.service {health}")
    assert cleanup <= health, (cleanup, health)


def test_a_second_run_and_check_mode_change_nothing(deployed):
    cp, out = deploy(deployed)
    assert cp.returncode == 0, failures(out)
    assert recap(out)["web1"]["changed"] == 0, re.findall(r"(?m)^changed: .*$", out)
    check, out = deploy(deployed, "--check", "--diff")
    assert check.returncode == 0, failures(out)
    assert recap(out)["web1"]["changed"] == 0, re.findall(r"(?m)^changed: .*$", out)


def test_starting_the_service_applies_the_configured_retention(deployed):
    tag = uuid.uuid4().hex[:8]
    old, recent = f"retention-old-{tag}", f"retention-recent-{tag}"
    for oid in (old, recent):
        done = deployed.ssh("web1", f"cd /; {AS_GALAXY} /opt/galaxy/bin/galaxy order submit --executor shell"
                                    f" --id {oid} --wait --wait-timeout 60 uptime")
        assert done.returncode == 0, done.stdout + done.stderr
    files = {oid: [f"{SPOOL}/archive/{oid}.json", f"{SPOOL}/responses/{oid}.md", f"{SPOOL}/responses/{oid}.json"]
             for oid in (old, recent)}
    # Past the 10 days of the config but within the runtime's default 30; the other 2 days old.
    aged = deployed.ssh("web1", f"touch -d '20 days ago' {' '.join(files[old])} && "
                                f"touch -d '2 days ago' {' '.join(files[recent])} && wc -l < {SPOOL}/audit/audit.jsonl")
    assert aged.returncode == 0, aged.stderr
    before = int(aged.stdout)

    started = deployed.ssh("web1", "systemctl start galaxy-cleanup.service")  # a oneshot: returns when it is done
    assert started.returncode == 0, started.stdout + started.stderr
    service = show(deployed, "galaxy-cleanup.service", "Result", "ExecMainStatus")
    assert service == {"Result": "success", "ExecMainStatus": "0"}, service

    left = deployed.ssh("web1", f"for f in {' '.join(files[old] + files[recent])}; do test -e $f && echo $f; done; true")
    assert left.stdout.split() == files[recent], left.stdout
    events = deployed.ssh("web1", f"tail -n +{before + 1} {SPOOL}/audit/audit.jsonl")
    cleanups = [e for e in map(json.loads, events.stdout.splitlines()) if e.get("type") == "cleanup"]
    # One from this start (a timer run that happened to fire in between would add another).
    assert cleanups, events.stdout[-2000:]
    assert all(e["retention"]["orders_days"] == 10.0 for e in cleanups), cleanups
    assert sum(e["orders"] for e in cleanups) >= 1, cleanups
    journal = deployed.ssh("web1", "journalctl -q -u galaxy-cleanup.service -o cat -n 20 --no-pager")
    assert re.search(r"removed \d+ finished orders", journal.stdout), journal.stdout + journal.stderr


def test_a_calendar_systemd_cannot_parse_stops_the_run_before_any_change(deployed):
    cp, out = deploy(deployed, "-e", "galaxy_node_cleanup_on_calendar=every other tuesday")
    assert cp.returncode == 2, failures(out)
    assert "is not a systemd calendar event" in out, failures(out)
    assert recap(out)["web1"]["changed"] == 0


def test_disabling_the_timer_stops_and_disables_it(deployed):
    # From -e, the boolean arrives as the string "false".
    cp, out = deploy(deployed, "-e", "galaxy_node_cleanup_timer_enabled=false")
    assert cp.returncode == 0, failures(out)
    assert recap(out)["web1"]["changed"] >= 1
    timer = show(deployed, "galaxy-cleanup.timer", "ActiveState", "UnitFileState")
    assert timer == {"ActiveState": "inactive", "UnitFileState": "disabled"}, timer
    again, out = deploy(deployed, "-e", "galaxy_node_cleanup_timer_enabled=false")
    assert again.returncode == 0, failures(out)
    assert recap(out)["web1"]["changed"] == 0, re.findall(r"(?m)^changed: .*$", out)
    assert show(deployed, "galaxy-cleanup.timer", "ActiveState")["ActiveState"] == "inactive"
    # The service stays installed for a run by hand.
    assert show(deployed, "galaxy-cleanup.service", "LoadState")["LoadState"] == "loaded"
