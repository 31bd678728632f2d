"""What the roles write to /etc/galaxy/config.yml is what the runtime's loader accepts:
the node and control roles' config, rendered from their defaults and vars with the
collection's own template, goes through a real `galaxy config check`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from collection import REPO, failures, run, tool

PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars_files:
    - {repo}/roles/node/defaults/main.yml
    - {repo}/roles/node/vars/main.yml
    - {repo}/roles/control/defaults/main.yml
    - {repo}/roles/control/vars/main.yml
  tasks:
    - name: The node role's config
      ansible.builtin.template:
        src: {repo}/roles/_common/templates/config.yml.j2
        dest: "{{{{ out }}}}/node.yml"
        mode: "0600"
      vars: {{_galaxy_common_kept: {{}}, _galaxy_common_config: "{{{{ _galaxy_node_config }}}}"}}
    - name: The control role's config on a host that is a node too
      ansible.builtin.template:
        src: {repo}/roles/_common/templates/config.yml.j2
        dest: "{{{{ out }}}}/both.yml"
        mode: "0600"
      vars: {{_galaxy_common_kept: "{{{{ _galaxy_node_config }}}}",
              _galaxy_common_config: "{{{{ _galaxy_control_config }}}}"}}
"""

# Settings as the bot's lab deploy hands them to the control role.
CONTROL_SETTINGS = {
    "galaxy_control_bot_authorized_users": [1001, 1004],
    "galaxy_control_bot_settings": {
        "users": {"1002": {"targets": ["web1"], "rate_per_minute": 3}}, "default_machine": "web1",
        "alert_chats": [-7001], "dangerous": {"targets": ["db"], "patterns": [r"\brm\s+-rf\b"], "confirm_seconds": 3},
        "progress_interval": 1, "flood": {"chat_burst": 2}},
    "galaxy_control_settings": {"lost_after": 8},
    "galaxy_control_dashboard_settings": {"refresh": 2},
    "galaxy_node_retention": {"orders_days": 10},
    "galaxy_node_health": {"opencode_start_grace": 5},
}


def render(tmp_path: Path, *extra: str) -> dict[str, Path]:
    play = tmp_path / "render.yml"
    play.write_text(PLAY.format(repo=REPO))
    example = REPO / "inventory" / "example" / "group_vars"
    cp = run([tool("ansible-playbook"), "-i", "localhost,", str(play), "-e", f"out={tmp_path}",
              "-e", f"ansible_python_interpreter={sys.executable}",
              "-e", f"@{example / 'galaxy_nodes' / 'main.yml'}", "-e", f"@{example / 'galaxy_control' / 'main.yml'}",
              *extra], timeout=300)
    assert cp.returncode == 0, failures(cp.stdout + cp.stderr)
    return {"node": tmp_path / "node.yml", "both": tmp_path / "both.yml"}


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "galaxy_fleet.cli", "config", "check", "--json", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)


def test_the_rendered_config_is_accepted(tmp_path: Path) -> None:
    files = render(tmp_path, "-e", json.dumps(CONTROL_SETTINGS))
    for name, path in files.items():
        proc = check(path)
        assert proc.returncode == 0, (name, proc.stderr, path.read_text())
    both = yaml.safe_load(files["both"].read_text())
    assert both["control"]["lost_after"] == 8 and both["bot"]["users"]["1002"]["rate_per_minute"] == 3
    assert both["health"] == {"opencode_start_grace": 5} and both["projects"]["api"] == "/srv/projects/api"


def test_a_misspelt_setting_in_the_role_variables_is_refused_by_the_check(tmp_path: Path) -> None:
    """The role's template task validates with `galaxy config check`: a typo stops the deploy."""
    files = render(tmp_path, "-e", json.dumps({"galaxy_node_health": {"disk_max": 80},
                                               "galaxy_control_settings": {"conect_timeout": 5}}))
    proc = check(files["both"])
    assert proc.returncode == 2
    errors = json.loads(proc.stdout)["errors"]
    expected = ["control.conect_timeout: unknown setting", "health.disk_max: unknown setting"]
    assert sorted(e.split(": ", 1)[1] for e in errors) == expected
