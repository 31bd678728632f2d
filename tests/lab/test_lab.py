"""The lab fleet: real systemd machines in network namespaces, reached over real SSH."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest_plugins = ["labfixture"]
# tests/conftest.py puts tests/ on sys.path; the plugin's helpers are used below too.
pytest.register_assert_rewrite("labfixture")
from labfixture import REPO, lab_tool  # noqa: E402
pytestmark = pytest.mark.timeout(900)


def ssh_banner(addr: str) -> bytes:
    with socket.create_connection((addr, 22), timeout=5) as sock:
        sock.settimeout(5)
        return sock.recv(64)


# ---------------------------------------------------------------- the session lab

def test_every_machine_boots_systemd_to_running(lab):
    assert {"control", "web1", "web2"} <= set(lab.hosts)
    for name in lab.hosts:
        cp = lab.ssh(name, "cat /proc/1/comm; hostname; systemctl is-system-running")
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.split() == ["systemd", name, "running"]


def test_each_machine_has_its_own_network_namespace_and_address(lab):
    seen = set()
    for name, addr in lab.hosts.items():
        cp = lab.ssh(name, "readlink /proc/self/ns/net; ip -4 -o addr show dev eth0")
        assert cp.returncode == 0, cp.stderr
        netns, addrline = cp.stdout.splitlines()
        assert f"inet {addr}/24" in addrline
        seen.add(netns)
    assert len(seen) == len(lab.hosts)
    assert os.readlink("/proc/self/ns/net") not in seen


def test_root_namespace_reaches_every_machine(lab):
    for addr in lab.hosts.values():
        assert addr.startswith("198.18.")
        assert ssh_banner(addr).startswith(b"SSH-2.0-OpenSSH")


def test_machines_reach_each_other_by_name_over_ssh(lab):
    nodes = sorted(n for n in lab.hosts if n != "control")
    for node in nodes:
        cp = lab.ssh("control", ["ssh", "-o", "BatchMode=yes", node, "hostname"])
        assert cp.returncode == 0, cp.stderr
        assert cp.stdout.strip() == node
    probe = "import socket; s = socket.create_connection(('web2', 22), 5); print(s.recv(8).decode())"
    cp = lab.ssh("web1", ["python3", "-c", probe])
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.strip() == "SSH-2.0-"


def test_machines_have_no_route_out_of_the_lab(lab):
    for name in lab.hosts:
        # Route look-ups only: nothing is sent anywhere.
        cp = lab.ssh(name, "ip -4 route show default; ip -6 route show default; ip route get 192.0.2.1")
        assert cp.stdout.strip() == "", cp.stdout
        assert "unreachable" in cp.stderr
    lab_if = Path("/proc/sys/net/ipv4/conf/glab0/forwarding")
    assert lab_if.read_text().strip() == "0"


def test_host_keys_are_per_machine_and_checked_strictly(lab, tmp_path):
    keys = [line.split()[2] for line in lab.known_hosts.read_text().splitlines()]
    assert len(keys) == len(set(keys)) == len(lab.hosts)
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    argv = [a if not a.startswith("UserKnownHostsFile=") else f"UserKnownHostsFile={empty}"
            for a in lab.ssh_argv("web1")]
    cp = subprocess.run(argv + ["true"], capture_output=True, text=True, timeout=30)
    assert cp.returncode == 255
    assert "Host key verification failed" in cp.stderr


def test_inventory_describes_the_lab(lab):
    text = lab.inventory.read_text()
    assert lab.inventory == REPO / "inventory" / "lab" / "hosts.yml"
    groups = dict(re.findall(r"^    (galaxy_\w+):\n      hosts:\n((?:        .*\n)+)", text, re.M))
    assert re.findall(r"^        (\w+):", groups["galaxy_control"], re.M) == ["control"]
    nodes = re.findall(r"^        (\w+):", groups["galaxy_nodes"], re.M)
    assert nodes == sorted(n for n in lab.hosts if n != "control")
    for name, addr in lab.hosts.items():
        assert f"        {name}:\n          ansible_host: {addr}\n" in text
    assert "ansible_user: root" in text
    assert f'ansible_ssh_private_key_file: "{lab.key}"' in text
    assert "ansible_python_interpreter: /usr/bin/python3" in text
    common = json.loads(re.search(r"ansible_ssh_common_args: (\".*\")", text).group(1))
    assert f"UserKnownHostsFile={lab.known_hosts}" in common
    assert "StrictHostKeyChecking=yes" in common
    # What Ansible will run, with exactly the inventory's settings.
    cp = subprocess.run(
        ["ssh", "-i", str(lab.key), *common.split(), "-o", "BatchMode=yes", f"root@{lab.hosts['web1']}",
         "/usr/bin/python3 -c 'import apt, venv; print(1)'; sudo -n true && echo sudo"],
        capture_output=True, text=True, timeout=30,
    )
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split() == ["1", "sudo"]


def test_ansible_reaches_every_machine_through_the_inventory(lab):
    ansible = Path(sys.executable).parent / "ansible"
    cp = subprocess.run(
        [str(ansible), "-i", str(lab.inventory), "all", "-m", "ansible.builtin.command", "-a", "hostname"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "ANSIBLE_DEPRECATION_WARNINGS": "False"},
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    for name in lab.hosts:
        assert re.search(rf"^{name} \| CHANGED \| rc=0 >>\n{name}$", cp.stdout, re.M), cp.stdout


def test_lab_state_is_private(lab):
    assert lab.key.stat().st_mode & 0o077 == 0
    assert (REPO / "lab-state").stat().st_mode & 0o077 == 0


def test_up_again_is_idempotent(lab):
    before = lab_tool("status", "--json").stdout
    started = time.monotonic()
    cp = lab_tool("up", "--hold", str(os.getpid()))
    assert time.monotonic() - started < 10
    assert cp.stdout.strip() == str(lab.inventory)
    assert json.loads(lab_tool("status", "--json").stdout)["hosts"] == json.loads(before)["hosts"]


# ---------------------------------------------------------------- teardown, in labs of their own

def side_lab(lab_id: int, tmp_path: Path) -> list[str]:
    return [f"--lab-id={lab_id}", f"--state-dir={tmp_path / 'state'}", f"--inventory={tmp_path / 'hosts.yml'}"]


def resources(lab_id: int, tmp_path: Path, state: dict) -> list[str]:
    """Everything of lab `lab_id` that still exists on this host."""
    found = []
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    found += [f"netns {line.split()[0]}" for line in names.splitlines() if line.startswith(f"glab{lab_id}-")]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {m}" for m in re.findall(rf"^\d+: (glab{lab_id})[@:]", links, re.M)]
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [f"mount {line.split()[4]}" for line in mounts.splitlines() if str(tmp_path) in line.split()[4]]
    for hierarchy in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
        cg = Path(hierarchy, f"galaxy-lab-{lab_id}")
        if cg.exists():
            found.append(f"cgroup {cg}")
    for pid, _start in [*state.get("procs", {}).values(), *state.get("inits", {}).values()]:
        stat = Path(f"/proc/{pid}/stat")
        if stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            found.append(f"process {pid}")
    return found


def test_up_then_down_leaves_nothing_behind(tmp_path):
    args = side_lab(250, tmp_path)
    started = time.monotonic()
    lab_tool(*args, "up", "--nodes", "1")
    boot = time.monotonic() - started
    state = json.loads((tmp_path / "state" / "state.json").read_text())
    info = json.loads(lab_tool(*args, "status", "--json").stdout)
    assert info["up"], info
    assert info["hosts"] == {"control": "198.18.250.10", "web1": "198.18.250.11"}
    assert ssh_banner("198.18.250.11").startswith(b"SSH-")
    assert len(resources(250, tmp_path, state)) >= 2 + 1 + 2 + 2  # namespaces, link, mounts, processes
    lab_tool(*args, "down")
    assert resources(250, tmp_path, state) == []
    assert not (tmp_path / "hosts.yml").exists()
    assert not (tmp_path / "state" / "machines").exists()
    assert lab_tool(*args, "status", check=False).returncode == 3
    print(f"side lab up in {boot:.1f} s")


def test_down_cleans_up_after_a_killed_up(tmp_path):
    args = side_lab(251, tmp_path)
    state_file = tmp_path / "state" / "state.json"
    up = subprocess.Popen([sys.executable, str(REPO / "lab" / "galaxy_lab.py"), *args, "up", "--nodes", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    state: dict = {}
    while time.monotonic() < deadline and up.poll() is None:
        try:
            state = json.loads(state_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = {}
        if state.get("procs"):  # killed mid-way: machines spawned, boot not confirmed
            break
        time.sleep(0.01)
    assert up.poll() is None, up.stderr.read()
    up.send_signal(signal.SIGKILL)
    up.wait()
    state = json.loads(state_file.read_text())
    assert state["phase"] == "starting"
    assert resources(251, tmp_path, state)
    lab_tool(*args, "down")
    assert resources(251, tmp_path, state) == []
    assert not state_file.exists()


def test_a_stopped_machine_boots_again_as_it_was(tmp_path):
    args = side_lab(252, tmp_path)
    lab_tool(*args, "up", "--nodes", "1")
    try:
        def on_web1(command: str) -> subprocess.CompletedProcess[str]:
            return lab_tool(*args, "ssh", "web1", "--", command, check=False)

        assert on_web1("echo kept > /var/tmp/mark").returncode == 0
        lab_tool(*args, "stop", "web1")
        rows = {r["name"]: r for r in json.loads(lab_tool(*args, "status", "--json", check=False).stdout)["machines"]}
        assert rows["web1"]["container"] == "stopped" and not rows["web1"]["sshd"]
        assert rows["control"]["container"] == "running"
        lab_tool(*args, "start", "web1")
        info = json.loads(lab_tool(*args, "status", "--json").stdout)
        assert info["up"], info
        cp = on_web1("cat /var/tmp/mark; systemctl is-system-running")
        assert cp.stdout.split() == ["kept", "running"], cp.stdout + cp.stderr
        assert "already running" in lab_tool(*args, "start", "web1").stderr
        state = json.loads((tmp_path / "state" / "state.json").read_text())
    finally:
        lab_tool(*args, "down")
    assert resources(252, tmp_path, state) == []
