"""Escape attempts, each an order through the real stack: the control side routes it
over SSH to the node, whose worker starts it in the agent's sandbox
(galaxy-agent@.service, the agent's account). A ``command`` executor
``hostile: {argv: [sh, -c, "{payload}"]}`` plays an agent that follows a prompt
injection: each payload tries one way out and prints ``ESCAPED:<what>`` for every
step that worked. Every attempt must fail, and the order's own life cycle
(received ... done) must be in the node's audit trail.

The control machine is made a node too for this module (a second deploy of
site.yml with it in galaxy_nodes), so the most exposed layout is the one attacked:
the routing key, the bot's token and webhook secret, the dashboard token and the
store live on the machine where orders run."""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from botdeploy import bot_vars
from e2e import E2ELab, control_config

HOSTILE = {"hostile": {"type": "command", "argv": ["sh", "-c", "{payload}"]}}
MALLORY_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMalloryMalloryMalloryMalloryMalloryMallory0 mallory@escape"
BOTH = "control"  # the machine that is control and node


class Attack:
    def __init__(self, lab: E2ELab, fleet: Any, dashboard_token: str, provider_key: str):
        self.lab, self.fleet = lab, fleet
        self.dashboard_token, self.provider_key = dashboard_token, provider_key

    def run(self, host: str, script: str) -> Any:
        """The script as an order on ``host``; returns the finished order record."""
        rec = self.fleet.submit(host, script, sender="mallory", executor="hostile", timeout=60)[0]
        done = self.fleet.wait([rec.id], timeout=90)
        assert done and done[0].terminal, f"order {rec.id} on {host} did not finish: {done}"
        return done[0]

    def output(self, rec: Any) -> str:
        """What the program printed: the answer after its "## Response" heading (the order's
        text comes before it), and the error line."""
        response = rec.response or ""
        return f"{response.split('## Response', 1)[-1]}\n{rec.error or ''}"

    def audited(self, host: str, order_id: str) -> list[str]:
        """The types of the node's audit events about ``order_id``: the attempt's trace."""
        out = self.lab.must(host, "cat /var/lib/galaxy/audit/audit*.jsonl")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [ev["type"] for ev in events if ev.get("order_id") == order_id]

    def contained(self, host: str, script: str) -> str:
        """Run the attempt; assert nothing escaped and the attempt is audited; return its output."""
        rec = self.run(host, script)
        text = self.output(rec)
        assert "ESCAPED:" not in text, f"escape on {host}:\n{text}"
        assert "TRIED-ALL" in text, f"the attempt did not run to its end on {host} ({rec.state}): {text}"
        kinds = self.audited(host, rec.id)
        assert "order_running" in kinds and kinds[-1] in ("order_done", "order_failed"), kinds
        return text


def _try_writes(paths: list[str], line: str = "mallory") -> str:
    """A script that tries to append ``line`` to each path (making its directory first)."""
    quoted = " ".join(f"'{p}'" for p in paths)
    return (f"for f in {quoted}; do "
            f"if (mkdir -p \"$(dirname \"$f\")\" && printf '%s\\n' '{line}' >> \"$f\") 2>/dev/null; "
            f"then echo \"ESCAPED:$f\"; fi; done; echo TRIED-ALL")


@pytest.fixture(scope="module")
def attack(e2e: E2ELab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Attack]:
    from collection import failures, playbook
    from galaxy_fleet.config import load
    from galaxy_fleet.control.fleet import Fleet

    state = e2e.state
    groups = state / "escape-groups.yml"
    groups.write_text("all:\n  children:\n    web:\n      hosts:\n        web1:\n        web2:\n"
                      "    galaxy_nodes:\n      hosts:\n        control:\n")
    dashboard_token, provider_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    extra: dict[str, Any] = json.loads((state / "opencode-vars.json").read_text())
    extra.update({"galaxy_node_executors": HOSTILE, "galaxy_control_dashboard_token": dashboard_token,
                  "galaxy_node_opencode_secrets": {"ESCAPE_PROVIDER_KEY": provider_key}})
    if e2e.telegram is not None:
        extra.update(bot_vars(e2e.telegram.api_base_url, e2e.telegram.token, e2e.webhook_secret))
    secret_vars = state / "escape-vars.json"
    secret_vars.touch(mode=0o600)
    secret_vars.write_text(json.dumps(extra))
    try:
        cp = playbook([e2e.inventory, groups], "site.yml", "-e", f"@{secret_vars}")
    finally:
        secret_vars.unlink(missing_ok=True)
    assert cp.returncode == 0, f"site.yml with the control machine as a node failed:\n{failures(cp.stdout + cp.stderr)}"
    e2e.must(BOTH, "for i in $(seq 120); do ss -Hltn 'sport = :4096' | grep -q . && exit 0; sleep 0.5; done; exit 1")
    fleet = Fleet(load(control_config(e2e, tmp_path_factory.mktemp("escape-control"))))
    fleet.start()
    try:
        assert fleet.wait_connected(60), {n: link.error for n, link in fleet.router.links.items()}
        yield Attack(e2e, fleet, dashboard_token, provider_key)
    finally:
        fleet.stop()


def test_the_hostile_agent_runs_as_the_agents_account_in_its_sandbox(attack):
    text = attack.contained(BOTH, "id; echo \"home=$HOME\"; echo TRIED-ALL")
    assert "uid=" in text and "(galaxy-agent)" in text.split("uid=")[1].split()[0], text
    assert "home=/var/lib/galaxy-agent/scratch/" in text


@pytest.mark.parametrize("host", [BOTH, "web1"])
def test_no_authorized_keys_file_takes_a_new_key(attack, host):
    targets = ["/etc/ssh/galaxy_authorized_keys/galaxy", "/etc/ssh/galaxy_authorized_keys/galaxy-agent",
               "/var/lib/galaxy/.ssh/authorized_keys", "/var/lib/galaxy/.ssh/authorized_keys2",
               "/var/lib/galaxy-agent/.ssh/authorized_keys", "/var/lib/galaxy/control/.ssh/authorized_keys",
               "/root/.ssh/authorized_keys", "/etc/ssh/sshd_config.d/mallory.conf"]
    attack.contained(host, _try_writes(targets, MALLORY_KEY))
    found = attack.lab.ssh(host, f"grep -l Mallory {' '.join(targets)} 2>/dev/null")
    assert found.stdout.strip() == "", found.stdout


def test_ssh_to_localhost_with_a_key_added_anyway_gives_no_shell(attack):
    """Even with the agent's key in the worker account's files (put there by root, as if some
    other hole had let it), sshd gives that key nothing but `galaxy remote`; the agent's own
    account and the control account take no key at all."""
    lab = attack.lab
    lab.must(BOTH, "rm -f /var/lib/galaxy-agent/mallory_key*; ssh-keygen -q -t ed25519 -N '' -C mallory-escape "
                   "-f /var/lib/galaxy-agent/mallory_key && chown galaxy-agent /var/lib/galaxy-agent/mallory_key")
    backup = "/etc/ssh/galaxy_authorized_keys/galaxy.escape-backup"
    lab.must(BOTH, f"cp -p /etc/ssh/galaxy_authorized_keys/galaxy {backup}; "
                   "install -d -m 0755 /var/lib/galaxy-agent/.ssh /var/lib/galaxy/control/.ssh; "
                   "for f in /etc/ssh/galaxy_authorized_keys/galaxy /var/lib/galaxy/.ssh/authorized_keys "
                   "/var/lib/galaxy-agent/.ssh/authorized_keys /var/lib/galaxy/control/.ssh/authorized_keys; do "
                   "cat /var/lib/galaxy-agent/mallory_key.pub >> $f; done")
    try:
        ssh = ("ssh -n -i /var/lib/galaxy-agent/mallory_key -o StrictHostKeyChecking=no "
               "-o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR")
        script = "; ".join(
            f"out=$(timeout 20 {ssh} {tty} {user}@127.0.0.1 'id; echo SHELL-OK' 2>&1); "
            f"case $out in *SHELL-OK*|*uid=*) echo \"ESCAPED:{user}{tty}: $out\";; esac"
            for user in ("galaxy", "galaxy-agent", "galaxy-control", "root") for tty in ("", "-tt")
        ) + "; echo TRIED-ALL"
        attack.contained(BOTH, script)
    finally:
        lab.must(BOTH, f"mv {backup} /etc/ssh/galaxy_authorized_keys/galaxy; "
                       "rm -rf /var/lib/galaxy-agent/.ssh /var/lib/galaxy/control/.ssh /var/lib/galaxy-agent/mallory_key* "
                       "/var/lib/galaxy/.ssh/authorized_keys")


def test_no_credential_is_readable_on_a_host_that_is_control_and_node(attack):
    lab = attack.lab
    routing_key = lab.must(BOTH, "cat /etc/galaxy/routing_ed25519")
    secret_values = [attack.dashboard_token]
    if lab.telegram is not None:
        secret_values += [lab.telegram.token, lab.webhook_secret]
    paths = ["/etc/galaxy/routing_ed25519", "/etc/galaxy/credentials/*", "/run/credentials/*/*",
             "/etc/galaxy/opencode-password", "/etc/galaxy/opencode-secrets/*", "/var/lib/galaxy/control/galaxy.db",
             "/var/lib/galaxy/central/*", "/etc/galaxy/config.yml", "/etc/galaxy/inventory.yml",
             "/etc/ssh/ssh_host_ed25519_key", "/var/lib/galaxy/state/*"]
    script = (f"for f in {' '.join(paths)}; do cat \"$f\" >/dev/null 2>&1 && echo \"ESCAPED:$f\"; done; "
              "ls /run/credentials 2>&1; env; "
              "for p in /proc/[0-9]*; do tr '\\0' '\\n' < $p/environ 2>/dev/null | "
              "grep -E '^(CREDENTIALS_DIRECTORY|GALAXY_TELEGRAM_TOKEN|TELEGRAM)' | sed \"s|^|ESCAPED:$p |\"; done; "
              "echo TRIED-ALL")
    text = attack.contained(BOTH, script)
    assert "PRIVATE KEY" not in text and routing_key.splitlines()[1] not in text
    for value in secret_values:
        assert value not in text
    assert "CREDENTIALS_DIRECTORY" not in text


def test_the_audit_trail_cannot_be_edited_truncated_or_deleted(attack):
    lab = attack.lab
    first = lab.must(BOTH, "head -c 4096 /var/lib/galaxy/audit/audit.jsonl | sha256sum")
    log = "/var/lib/galaxy/audit/audit.jsonl"
    script = (f"f={log}; "
              "(echo '{\"type\":\"forged\"}' >> $f) 2>/dev/null && echo ESCAPED:append; "
              "(: > $f) 2>/dev/null && echo ESCAPED:truncate; "
              "truncate -s 0 $f 2>/dev/null && echo ESCAPED:truncate2; "
              "sed -i 's/order_done/order_gone/' $f 2>/dev/null && echo ESCAPED:edit; "
              "mv $f $f.old 2>/dev/null && echo ESCAPED:rename; "
              "rm -f $f 2>/dev/null && test ! -e $f && echo ESCAPED:delete; "
              "ls /var/lib/galaxy/audit >/dev/null 2>&1 && echo ESCAPED:list; "
              "echo TRIED-ALL")
    attack.contained(BOTH, script)
    assert lab.must(BOTH, "head -c 4096 /var/lib/galaxy/audit/audit.jsonl | sha256sum") == first
    verify = lab.ssh(BOTH, "runuser -u galaxy -- /opt/galaxy/bin/galaxy --config /etc/galaxy/config.yml "
                           "audit --verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert '{"type":"forged"}' not in lab.must(BOTH, f"cat {log}").splitlines()


def test_spool_state_and_other_orders_files_are_out_of_reach(attack):
    lab = attack.lab
    other = attack.run(BOTH, "echo an honest order; echo TRIED-ALL")
    assert other.state == "done"
    spool = "/var/lib/galaxy"
    targets = [f"{spool}/orders/mallory.json", f"{spool}/processing/mallory.json", f"{spool}/archive/{other.id}.json",
               f"{spool}/responses/{other.id}.md", f"{spool}/state/mallory", f"{spool}/outbox/mallory.json",
               f"{spool}/quarantine/mallory.json", f"{spool}/mallory"]
    script = _try_writes(targets, '{"type":"galaxy_order","payload":"forged-by-order"}') + "; " + (
        f"cat {spool}/responses/{other.id}.md 2>/dev/null && echo ESCAPED:read-answer; "
        f"ls {spool} >/dev/null 2>&1 && echo ESCAPED:list-spool; echo TRIED-ALL")
    attack.contained(BOTH, script)
    found = lab.ssh(BOTH, f"grep -l forged-by-order {' '.join(targets)} 2>/dev/null; "
                          f"ls {spool}/orders {spool}/processing {spool}/state {spool}/outbox {spool}/quarantine "
                          f"{spool} | grep mallory")
    assert found.stdout.strip() == "", found.stdout
    assert "an honest order" in lab.must(BOTH, f"cat {spool}/responses/{other.id}.md")


def test_no_cron_job_user_unit_or_shell_startup_file_can_be_installed(attack):
    lab = attack.lab
    targets = ["/etc/cron.d/mallory", "/var/spool/cron/crontabs/galaxy-agent", "/var/spool/cron/crontabs/galaxy",
               "/etc/systemd/system/mallory.service", "/etc/systemd/user/mallory.service",
               "/var/lib/galaxy-agent/.config/systemd/user/mallory.service",
               "/var/lib/galaxy/.config/systemd/user/mallory.service",
               "/var/lib/galaxy-agent/.bashrc", "/var/lib/galaxy-agent/.profile",
               "/var/lib/galaxy/.bashrc", "/var/lib/galaxy/.profile", "/var/lib/galaxy/.bash_login",
               "/root/.bashrc", "/root/.profile", "/etc/profile.d/mallory.sh", "/etc/bash.bashrc"]
    script = _try_writes(targets, "echo mallory was here") + "; " + (
        "(echo '* * * * * id' | crontab - ) 2>/dev/null && echo ESCAPED:crontab; "
        "systemctl --user enable --now mallory.service >/dev/null 2>&1 && echo ESCAPED:user-unit; echo TRIED-ALL")
    attack.contained(BOTH, script)
    found = lab.ssh(BOTH, f"grep -l 'mallory was here' {' '.join(targets)} 2>/dev/null; "
                          "crontab -l -u galaxy-agent 2>/dev/null")
    assert found.stdout.strip() == "", found.stdout


def test_another_users_project_cannot_be_read(attack):
    lab = attack.lab
    lab.must(BOTH, "id bob >/dev/null 2>&1 || useradd -m -s /bin/sh bob; install -d -o bob -m 0755 /home/bob/project; "
                   "echo bobs-secret-$(date +%N) > /home/bob/project/secret.txt; chown bob /home/bob/project/secret.txt; "
                   "chmod 0644 /home/bob/project/secret.txt; chmod 0755 /home/bob")
    secret = lab.must(BOTH, "cat /home/bob/project/secret.txt").strip()
    script = ("cat /home/bob/project/secret.txt 2>/dev/null && echo ESCAPED:read; "
              "ls /home/bob >/dev/null 2>&1 && echo ESCAPED:list; echo TRIED-ALL")
    text = attack.contained(BOTH, script)
    assert secret not in text


def test_what_an_order_leaves_running_is_stopped_with_it(attack):
    lab = attack.lab
    rec = attack.run(BOTH, "(sleep 1000 &) ; nohup sleep 1001 >/dev/null 2>&1 & "
                           "setsid sleep 1002 >/dev/null 2>&1 < /dev/null & echo TRIED-ALL")
    assert rec.state == "done"
    deadline = time.monotonic() + 20
    while lab.ssh(BOTH, "pgrep -u galaxy-agent -f 'sleep 100[012]'").returncode == 0:
        assert time.monotonic() < deadline, "an order's background process outlived it"
        time.sleep(0.5)
    assert "order_done" in attack.audited(BOTH, rec.id)

