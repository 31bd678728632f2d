"""The playbooks against real machines (a lab of this module's own): bad input first,
then a deploy with an unreachable node, orders, health, audit collection and a rolling
update that stops at an unhealthy node."""

from __future__ import annotations

import re

import yaml

from collection import failures, playbook, recap

WRONG_TYPES = ["-e", '{"galaxy_node_worker_runners": "many", "galaxy_control_dashboard_port": "eighty",'
                     ' "galaxy_node_projects": ["not", "a", "mapping"]}']


def test_wrong_variable_types_are_rejected_before_anything_changes(deploy_lab):
    cp = playbook(deploy_lab.inventory, "site.yml", *deploy_lab.source_vars(), *WRONG_TYPES)
    out = cp.stdout + cp.stderr
    assert cp.returncode == 2, failures(out)
    assert "Validating arguments against arg spec" in out
    for name in ("galaxy_node_worker_runners", "galaxy_node_projects", "galaxy_control_dashboard_port"):
        assert name in out, f"{name} not named in:\n{failures(out)}"
    counts = recap(out)
    assert set(counts) == {"control", "web1", "web2"}
    assert all(c["changed"] == 0 and c["failed"] == 1 for c in counts.values()), counts
    for host in ("control", "web1", "web2"):
        probe = deploy_lab.ssh(host, "test -e /etc/galaxy || test -e /opt/galaxy || id galaxy; echo rc=$?")
        assert "rc=1" in probe.stdout, f"{host} was changed: {probe.stdout}{probe.stderr}"


def test_an_unreachable_node_fails_alone_and_the_others_deploy(deploy_lab):
    ghost = deploy_lab.state / "ghost.yml"
    ghost.write_text(yaml.safe_dump({"galaxy_nodes": {"hosts": {"web9": {
        "ansible_host": re.sub(r"\.\d+$", ".99", deploy_lab.hosts["web1"]),
        "ansible_ssh_common_args": "-o ConnectTimeout=3 -o StrictHostKeyChecking=yes"}}}}))
    cp = playbook([deploy_lab.inventory, ghost], "site.yml", *deploy_lab.source_vars())
    out = cp.stdout + cp.stderr
    counts = recap(out)
    assert counts["web9"]["unreachable"] == 1, failures(out)
    assert re.search(r"fatal: \[web9\]: UNREACHABLE! => .*(timed out|No route|Connection refused)", out), failures(out)
    for host in ("control", "web1", "web2"):
        assert counts[host]["failed"] == 0 and counts[host]["unreachable"] == 0, (host, counts, failures(out))
        assert counts[host]["changed"] > 0
    assert cp.returncode == 4  # ansible-playbook: some hosts were unreachable
    assert "No SSH host key known for web9" in out
    for host in ("web1", "web2"):
        state = deploy_lab.ssh(host, "systemctl is-active galaxy-worker galaxy-health.timer")
        assert state.stdout.split() == ["active", "active"], state
    known = deploy_lab.ssh("control", "cat /etc/galaxy/known_hosts").stdout
    assert ",web1 ssh-ed25519 " in known and ",web2 ssh-ed25519 " in known and "web9" not in known


def test_a_second_run_changes_nothing(deploy_lab):
    # Same inventory as the first deploy, web9 still unreachable: the others report no change.
    cp = playbook([deploy_lab.inventory, deploy_lab.state / "ghost.yml"], "site.yml", *deploy_lab.source_vars())
    out = cp.stdout + cp.stderr
    counts = recap(out)
    assert counts.pop("web9")["unreachable"] == 1, failures(out)
    changes = re.findall(r"(?m)^changed: .*$", out)
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), (counts, failures(out), changes)


def test_booleans_given_as_strings_mean_the_same(deploy_lab):
    # -e makes strings: "false" must not switch opencode on, "true" must keep the dedicated account.
    cp = playbook([deploy_lab.inventory, deploy_lab.state / "ghost.yml"], "site.yml", "--limit", "control,web1",
                  *deploy_lab.source_vars(),
                  "-e", "galaxy_node_opencode_enabled=false", "-e", "galaxy_node_user_create=true",
                  "-e", "galaxy_control_bot_enabled=false", "-e", "galaxy_control_dashboard_enabled=no")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, failures(out)
    counts = recap(out)
    assert all(c["changed"] == 0 for c in counts.values()), (counts, re.findall(r"(?m)^changed: .*$", out))


def test_check_mode_reports_no_change_on_a_deployed_fleet(deploy_lab):
    cp = playbook([deploy_lab.inventory, deploy_lab.state / "ghost.yml"], "site.yml", "--check", "--diff",
                  *deploy_lab.source_vars())
    out = cp.stdout + cp.stderr
    counts = recap(out)
    counts.pop("web9")
    assert all(c["changed"] == 0 and c["failed"] == 0 for c in counts.values()), (counts, failures(out))


def test_order_playbook_prints_the_response(deploy_lab):
    cp = playbook(deploy_lab.inventory, "order.yml", "-e", "target=web1", "-e", "payload=uptime",
                  "-e", "executor=shell")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, failures(out)
    assert "load average" in out and "# Order " in out and ": done" in out


def test_order_playbook_fails_cleanly_on_an_unknown_executor(deploy_lab):
    cp = playbook(deploy_lab.inventory, "order.yml", "-e", "target=web2", "-e", "payload=uptime",
                  "-e", "executor=teleport")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 2, failures(out)
    assert "galaxy rejected the order" in out and "unknown executor 'teleport'" in out


def test_order_playbook_without_a_target_explains_usage(deploy_lab):
    cp = playbook(deploy_lab.inventory, "order.yml", "-e", "payload=uptime")
    assert cp.returncode == 2
    assert "usage: ansible-playbook playbooks/order.yml -e target=web1" in cp.stdout


def test_health_playbook_prints_one_table(deploy_lab):
    cp = playbook(deploy_lab.inventory, "health.yml")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, failures(out)
    assert re.search(r'"NODE\s+STATUS\s+CHECKS\s+FAILING"', out)
    assert re.search(r'"web1\s+healthy\s+\d+/\d+\s+-"', out) and re.search(r'"web2\s+healthy', out)


def test_audit_playbook_collects_once(deploy_lab):
    first = playbook(deploy_lab.inventory, "audit.yml", "-e", "audit_verify=true")
    assert first.returncode == 0, failures(first.stdout)
    counts = [int(n) for n in re.findall(r"(\d+) new event\(s\) from web1", first.stdout)]
    assert counts and counts[0] > 0
    second = playbook(deploy_lab.inventory, "audit.yml")
    assert second.returncode == 0, failures(second.stdout)
    assert re.search(r"0 new event\(s\) from web1, cursor \d+", second.stdout)
    store = deploy_lab.ssh("control", "wc -l < /var/lib/galaxy/central/web1.jsonl; cat /var/lib/galaxy/central/web1.cursor;"
                                      " echo; stat -c %U:%a /var/lib/galaxy/central/web1.jsonl")
    lines, cursor, owner = store.stdout.split()
    assert int(lines) == counts[0] and int(cursor) >= counts[0] and owner == "galaxy-control:640"


def test_cleanup_playbook_applies_retention(deploy_lab):
    dry = playbook(deploy_lab.inventory, "cleanup.yml", "-e", "galaxy_cleanup_dry_run=true")
    assert dry.returncode == 0, failures(dry.stdout)
    assert '"orders":' in dry.stdout and "changed=0" in dry.stdout
    # everything finished is older than 0 days: a real run removes it and says so
    real = playbook(deploy_lab.inventory, "cleanup.yml", "-e", "galaxy_cleanup_orders_days=0")
    assert real.returncode == 0, failures(real.stdout)
    left = deploy_lab.ssh("web1", "ls /var/lib/galaxy/responses | wc -l; tail -n 1 /var/lib/galaxy/audit/audit.jsonl")
    count, last = left.stdout.split("\n", 1)
    assert int(count) == 0 and '"type":"cleanup"' in last


def test_backup_playbook_copies_config_and_audit(deploy_lab, tmp_path):
    cp = playbook(deploy_lab.inventory, "backup.yml", "-e", f"galaxy_backup_dir={tmp_path}")
    assert cp.returncode == 0, failures(cp.stdout)
    import tarfile

    for host in ("control", "web1", "web2"):
        [archive] = list((tmp_path / host).glob("galaxy-backup-*.tar.gz"))
        names = tarfile.open(archive).getnames()
        assert "/etc/galaxy/config.yml" in names, names
        if host != "control":  # the nodes' audit trails (the control host here runs no worker)
            assert any(n.startswith("/var/lib/galaxy/audit/audit.jsonl") for n in names), names
        assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert "/etc/galaxy/inventory.yml" in tarfile.open(next((tmp_path / "control").glob("*.tar.gz"))).getnames()
    left = deploy_lab.ssh("web1", "ls /var/tmp /tmp | grep -c galaxy-backup || true")
    assert left.stdout.strip() == "0"


def test_rolling_update_stops_at_an_unhealthy_node(deploy_lab, tmp_path):
    # web1 demands more free memory than any machine has: its health gate fails.
    sick = tmp_path / "sick.yml"
    sick.write_text(yaml.safe_dump({"galaxy_nodes": {"hosts": {"web1": {
        "galaxy_node_health": {"memory_min_mb": 10_000_000}}}}}))
    cp = playbook([deploy_lab.inventory, sick], "update.yml", *deploy_lab.source_vars(),
                  "-e", "galaxy_update_health_retries=2", "-e", "galaxy_update_health_delay=1")
    out = cp.stdout + cp.stderr
    assert cp.returncode == 2, failures(out)
    roll = out[out.index("PLAY [Roll the update over the Galaxy nodes]"):]
    assert re.search(r"fatal: \[web1\]: FAILED! .*unhealthy: memory", roll), roll[-4000:]
    assert "[web2]" not in roll, "web2 was touched after web1 failed its health gate"
    # Put web1 right again: the next update rolls over both.
    cp = playbook(deploy_lab.inventory, "update.yml", *deploy_lab.source_vars())
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, failures(out)
    assert out.count("TASK [Wait until the node is healthy]") == 2


def test_an_existing_login_user_runs_the_worker(deploy_lab, tmp_path):
    """A developer's workstation: the services run as alice; her own SSH key stays authorized."""
    own_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAlicesOwnKeyForHerLaptop0000000000000000000 alice@laptop"
    setup = deploy_lab.ssh("web2", "id alice 2>/dev/null || useradd -m -s /bin/bash alice;"
                                   " install -d -o alice -m 700 /home/alice/.ssh /home/alice/src;"
                                   f" echo '{own_key}' > /home/alice/.ssh/authorized_keys;"
                                   " chown alice: /home/alice/.ssh/authorized_keys /home/alice/src")
    assert setup.returncode == 0, setup.stderr
    workstation = tmp_path / "workstation.yml"
    workstation.write_text(yaml.safe_dump({"galaxy_nodes": {"hosts": {"web2": {
        "galaxy_node_user": "alice", "galaxy_node_user_create": False,
        "galaxy_node_projects": {"thesis": "/home/alice/src"}}}}}))
    cp = playbook([deploy_lab.inventory, workstation], "site.yml", "--limit", "control,web2", *deploy_lab.source_vars())
    out = cp.stdout + cp.stderr
    assert cp.returncode == 0, failures(out)
    state = deploy_lab.ssh("web2", "systemctl show galaxy-worker -p User -p ActiveState -p ProtectHome;"
                                   " stat -c %U /var/lib/galaxy; cat /home/alice/.ssh/authorized_keys")
    assert "User=alice" in state.stdout and "ActiveState=active" in state.stdout, state.stdout
    assert "ProtectHome=read-only" in state.stdout
    lines = state.stdout.splitlines()
    assert "alice" in lines
    assert own_key in lines
    assert any(line.startswith('restrict,command="/opt/galaxy/bin/galaxy remote" ssh-ed25519 ') for line in lines)
    order = playbook([deploy_lab.inventory, workstation], "order.yml", "-e", "target=web2", "-e", "payload=uptime",
                     "-e", "executor=shell")
    assert order.returncode == 0, failures(order.stdout + order.stderr)
    assert "load average" in order.stdout
    router = deploy_lab.ssh("control", "cat /etc/galaxy/inventory.yml")
    assert 'galaxy_route_user: "alice"' in router.stdout
    # Orders run as the agent's account, which cannot touch alice's start-up files or keys.
    agent = deploy_lab.ssh("web2", "touch /home/alice/.bashrc /home/alice/.profile; "
                                   "for f in /home/alice/.bashrc /home/alice/.profile /home/alice/.ssh/authorized_keys "
                                   "/home/alice/.ssh; do setpriv --reuid=galaxy-agent --regid=galaxy-agent --init-groups "
                                   "-- test -w $f && echo writable:$f; done; echo checked")
    assert "checked" in agent.stdout and "writable:" not in agent.stdout, agent.stdout
