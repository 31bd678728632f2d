#!/usr/bin/env python3
"""galaxy-lab: a fleet of real Debian 12 machines on this host, for trying and testing Galaxy.

    python3 lab/galaxy_lab.py up [--nodes N]     # boot control + web1..webN, write the inventory
    python3 lab/galaxy_lab.py status [--json]
    python3 lab/galaxy_lab.py ssh web1 -- systemctl is-system-running
    python3 lab/galaxy_lab.py down

Each machine is a `systemd-nspawn --boot` container (systemd as PID 1, sshd) on
an overlay of one cached debootstrap root file system, in its own network
namespace, joined to the others and to this host's root namespace by veth
pairs on a bridge, on 198.18.<lab-id>.0/24, with no route anywhere else.
Every resource is recorded in the state directory before it is created, so
`down` cleans up after a failed or killed `up` too. See lab/README.md.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab_rootfs  # noqa: E402
from lab_host import (  # noqa: E402
    LabError,
    cgroup_hierarchies,
    container_init,
    ip,
    is_mountpoint,
    kill_cgroup,
    link_exists,
    mounts_under,
    netns_exists,
    proc_alive,
    proc_start_time,
    remove_cgroup,
    run,
    signal_proc,
    unmount,
    wait_gone,
)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STATE = REPO / "lab-state"
DEFAULT_INVENTORY = REPO / "inventory" / "lab" / "hosts.yml"
DEFAULT_NODES = 2
BOOT_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
OWNERS = Path("/run/galaxy-lab")
REQUIRED_COMMANDS = ("systemd-nspawn", "debootstrap", "ip", "ssh", "ssh-keygen", "nsenter", "mount", "umount")
# The container gets a cgroup2 tree of its own (through a cgroup namespace)
# even on a host with the hybrid v1/v2 layout, which is what a modern systemd
# inside expects; nspawn otherwise copies the host's legacy layout.
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}


def log(msg: str) -> None:
    print(f"galaxy-lab: {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Machine:
    name: str
    addr: str
    group: str  # galaxy_control | galaxy_nodes


class Lab:
    """Names and paths of one lab; several labs (different ids) can run side by side."""

    def __init__(self, lab_id: int, state_dir: Path, inventory: Path, cache: Path) -> None:
        if not 0 <= lab_id <= 255:
            raise LabError("the lab id must be between 0 and 255")
        self.id = lab_id
        self.state_dir = state_dir.resolve()
        self.inventory = inventory.resolve()
        self.cache = cache
        self.prefix = f"glab{lab_id}"
        self.hub = f"{self.prefix}-hub"
        self.root_if = self.prefix
        self.net = f"198.18.{lab_id}"
        self.root_addr = f"{self.net}.1"
        self.cgroup = f"galaxy-lab-{lab_id}"
        self.key = self.state_dir / "id_ed25519"
        self.known_hosts = self.state_dir / "known_hosts"
        self.state_file = self.state_dir / "state.json"
        self.machines_dir = self.state_dir / "machines"
        self.owner_file = OWNERS / f"{lab_id}.owner"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def plan(self, nodes: int) -> list[Machine]:
        if not 1 <= nodes <= 200:
            raise LabError("the number of nodes must be between 1 and 200")
        machines = [Machine("control", f"{self.net}.10", "galaxy_control")]
        machines += [Machine(f"web{i}", f"{self.net}.{10 + i}", "galaxy_nodes") for i in range(1, nodes + 1)]
        return machines

    # -- state ---------------------------------------------------------------
    def load(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None

    def save(self, state: dict[str, Any]) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1) + "\n")
        os.replace(tmp, self.state_file)

    def lock(self) -> "_Lock":
        return _Lock(self.state_dir / ".lock")

    def ssh_options(self) -> list[str]:
        return [
            "-i", str(self.key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={_ssh_quote(self.known_hosts)}",
            "-o", "StrictHostKeyChecking=yes",
        ]

    def ssh_argv(self, addr: str) -> list[str]:
        return ["ssh", "-F", "none", *self.ssh_options(), "-o", "BatchMode=yes",
                "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", f"root@{addr}"]


def _ssh_quote(path: Path) -> str:
    return f'"{path}"' if " " in str(path) else str(path)


class _Lock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.fd = open(self.path, "w")
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        self.fd.close()


def _systemd_host() -> bool:
    return Path("/run/systemd/system").is_dir()


# ---------------------------------------------------------------- preflight

def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts, containers): run it as root")
    missing = [c for c in REQUIRED_COMMANDS if shutil.which(c) is None]
    if missing:
        raise LabError(f"missing commands: {', '.join(missing)} (run `make host-deps`)")
    if not _systemd_host():
        hierarchies = cgroup_hierarchies()
        if not any(run(["stat", "-fc", "%T", str(h)]).stdout.strip() == "cgroup2fs" for h in hierarchies):
            raise LabError("no cgroup2 hierarchy is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)")


# ---------------------------------------------------------------- up

def up(lab: Lab, nodes: int | None, hold: int | None, keep_on_failure: bool = False) -> int:
    preflight()
    started = time.monotonic()
    with lab.lock():
        state = lab.load()
        if state is not None:
            if state.get("phase") == "up" and _healthy(lab, state):
                have = len(state["machines"]) - 1
                if nodes is not None and nodes != have:
                    raise LabError(f"the lab is up with {have} node(s), not {nodes}: run `make lab-down` first")
                _register(state, hold)
                lab.save(state)
                log(f"the lab is already up ({have} node(s))")
                print(lab.inventory)
                return 0
            log("cleaning up what a previous lab left behind")
            _down(lab, state)
        if netns_exists(lab.hub):
            owner = lab.owner_file.read_text().strip() if lab.owner_file.exists() else "unknown"
            raise LabError(
                f"lab {lab.id} is already running from another state directory ({owner}); "
                "stop it there, or choose another --lab-id"
            )
        machines = lab.plan(nodes or DEFAULT_NODES)
        rootfs = lab_rootfs.ensure_rootfs(lab.cache, log)
        t_boot = time.monotonic()
        state = {
            "lab_id": lab.id,
            "phase": "starting",
            "manual": hold is None,
            "holders": [],
            "rootfs": str(rootfs),
            "machines": [asdict(m) for m in machines],
            "run_netns_mount_created": False,
            "netns": [],
            "links": [],
            "mounts": [],
            "cgroups": [],
            "scopes": [],
            "procs": {},
            "inits": {},
            "owner_file": None,
        }
        _register(state, hold)
        lab.save(state)
        try:
            _create(lab, state, machines, rootfs)
            _wait_all(lab, state, machines)
            _write_inventory(lab, machines)
            state["phase"] = "up"
            lab.save(state)
        except BaseException as exc:
            if isinstance(exc, (SystemExit, KeyboardInterrupt)):
                exc_text = "stopped by a signal"
            else:
                exc_text = str(exc)
            if keep_on_failure:
                log(f"lab-up failed; leaving it as it is for inspection (`down` cleans up): {exc_text}")
            else:
                log(f"lab-up failed, tearing down: {exc_text}")
                _down(lab, state)
            raise
    log(f"{len(machines)} machines running; boot + sshd in {time.monotonic() - t_boot:.1f} s, "
        f"lab-up in {time.monotonic() - started:.1f} s")
    print(lab.inventory)
    return 0


def _register(state: dict[str, Any], hold: int | None) -> None:
    """Record who uses the lab: a person (`manual`) or test sessions holding it by pid."""
    state["holders"] = [h for h in state.get("holders", []) if proc_alive(*h)]
    if hold is None:
        state["manual"] = True
    elif proc_start_time(hold) is not None:
        state["holders"].append([hold, proc_start_time(hold)])


def _healthy(lab: Lab, state: dict[str, Any]) -> bool:
    procs = state.get("procs", {})
    if len(procs) != len(state.get("machines", [])):
        return False
    if not all(proc_alive(*p) for p in procs.values()):
        return False
    return all(_tcp_banner(m["addr"], 2.0) for m in state["machines"])


def _create(lab: Lab, state: dict[str, Any], machines: list[Machine], rootfs: Path) -> None:
    lab.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(lab.state_dir, 0o700)  # it holds the lab's private key and the machines' disks
    lab.machines_dir.mkdir(exist_ok=True)
    if not lab.key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "galaxy-lab", "-f", str(lab.key)])
    OWNERS.mkdir(exist_ok=True)
    state["owner_file"] = str(lab.owner_file)
    lab.save(state)
    lab.owner_file.write_text(f"{lab.state_dir}\n")

    # Network: a bridge in a hub namespace; the root namespace and every machine hang off it.
    state["run_netns_mount_created"] = not is_mountpoint(Path("/run/netns"))
    state["netns"].append(lab.hub)
    lab.save(state)
    ip("netns", "add", lab.hub)
    ip("link", "set", "lo", "up", netns=lab.hub)
    ip("link", "add", "br0", "type", "bridge", netns=lab.hub)
    ip("link", "set", "br0", "up", netns=lab.hub)
    state["links"].append(lab.root_if)
    lab.save(state)
    ip("link", "add", lab.root_if, "type", "veth", "peer", "name", "uplink", "netns", lab.hub)
    # This host never forwards lab traffic anywhere, whatever its ip_forward says.
    Path(f"/proc/sys/net/ipv4/conf/{lab.root_if}/forwarding").write_text("0")
    Path(f"/proc/sys/net/ipv6/conf/{lab.root_if}/disable_ipv6").write_text("1")
    ip("addr", "add", f"{lab.root_addr}/24", "dev", lab.root_if)
    ip("link", "set", lab.root_if, "up")
    ip("link", "set", "uplink", "master", "br0", "up", netns=lab.hub)

    for m in machines:
        ns = lab.netns(m.name)
        state["netns"].append(ns)
        lab.save(state)
        ip("netns", "add", ns)
        ip("link", "set", "lo", "up", netns=ns)
        port = f"v-{m.name}"
        ip("link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns, netns=lab.hub)
        ip("link", "set", port, "master", "br0", "up", netns=lab.hub)
        ip("addr", "add", f"{m.addr}/24", "dev", "eth0", netns=ns)
        ip("link", "set", "eth0", "up", netns=ns)

    # Identity: one host key per machine, known before boot, so checking is strict from the start.
    pub = Path(f"{lab.key}.pub").read_text()
    host_keys: dict[str, Path] = {}
    for m in machines:
        mdir = lab.machines_dir / m.name
        if mdir.exists():
            _remove_machine_dir(mdir)
        mdir.mkdir()
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{m.name}", "-f", str(mdir / "host_key")])
        host_keys[m.name] = mdir / "host_key"
    known = "".join(
        f"{m.name},{m.addr} {' '.join(Path(f'{host_keys[m.name]}.pub').read_text().split()[:2])}\n"
        for m in machines
    )
    lab.known_hosts.write_text(known)
    hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n"
    hosts += "".join(f"{m.addr} {m.name}\n" for m in machines)

    for m in machines:
        mdir = lab.machines_dir / m.name
        root = mdir / "root"
        for sub in ("upper", "work", "root"):
            (mdir / sub).mkdir()
        state["mounts"].append(str(root))
        lab.save(state)
        run(["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={rootfs},upperdir={mdir / 'upper'},workdir={mdir / 'work'}", str(root)])
        _write(root / "etc/hostname", f"{m.name}\n")
        _write(root / "etc/hosts", hosts)
        _write(root / "etc/machine-id", uuid.uuid4().hex + "\n")
        _write(root / "etc/ssh/ssh_host_ed25519_key", host_keys[m.name].read_text(), 0o600)
        _write(root / "etc/ssh/ssh_host_ed25519_key.pub", Path(f"{host_keys[m.name]}.pub").read_text())
        _write(root / "etc/ssh/ssh_known_hosts", known)
        _write(root / "root/.ssh/authorized_keys", pub, 0o600)
        if m.group == "galaxy_control":  # so that `ssh web1` works from the control machine
            _write(root / "root/.ssh/id_ed25519", lab.key.read_text(), 0o600)
            _write(root / "root/.ssh/id_ed25519.pub", pub)

    for m in machines:
        _spawn(lab, state, m)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)


def _spawn(lab: Lab, state: dict[str, Any], m: Machine) -> None:
    mdir = lab.machines_dir / m.name
    nspawn = [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--directory={mdir / 'root'}",
        f"--machine={lab.netns(m.name)}",
        f"--hostname={m.name}",
        f"--network-namespace-path=/run/netns/{lab.netns(m.name)}",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
    ]
    if _systemd_host():
        # A delegated scope of its own per machine; systemd-run execs nspawn in place.
        unit = f"{lab.netns(m.name)}.scope"
        if unit not in state["scopes"]:
            state["scopes"].append(unit)
        argv = ["systemd-run", "--quiet", "--scope", f"--unit={unit}", "--property=Delegate=yes", *nspawn]
    else:
        # No systemd on the host: put the container in a cgroup of its own, in the
        # unified and name=systemd hierarchies, before nspawn starts (--keep-unit
        # makes nspawn use the cgroup it finds itself in).
        rel = f"{lab.cgroup}/{m.name}"
        if rel not in state["cgroups"]:
            state["cgroups"].append(rel)
        lab.save(state)
        joins = []
        for h in cgroup_hierarchies():
            (h / rel).mkdir(parents=True, exist_ok=True)
            joins.append(f"echo $$ > {shlex.quote(str(h / rel / 'cgroup.procs'))} && ")
        argv = ["sh", "-c", "".join(joins) + 'exec "$@"', "sh", *nspawn]
    lab.save(state)
    with open(mdir / "console.log", "wb") as console:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, **NSPAWN_ENV),
        )
    state["procs"][m.name] = [proc.pid, proc_start_time(proc.pid)]
    lab.save(state)


def _wait_all(lab: Lab, state: dict[str, Any], machines: list[Machine]) -> None:
    with ThreadPoolExecutor(max_workers=min(8, len(machines))) as pool:
        futures = {m.name: pool.submit(_wait_machine, lab, state, m) for m in machines}
        errors = []
        for name, fut in futures.items():
            try:
                init, t_run, t_ssh = fut.result()
                state["inits"][name] = [init, proc_start_time(init)]
                log(f"{name:8} {next(m.addr for m in machines if m.name == name):14} "
                    f"systemd running after {t_run:.1f} s, ssh after {t_ssh:.1f} s")
            except Exception as exc:  # collect every machine's failure, not only the first
                errors.append(f"{name}: {exc}")
        lab.save(state)
        if errors:
            raise LabError("machines did not come up:\n  " + "\n  ".join(errors))


def _wait_machine(lab: Lab, state: dict[str, Any], m: Machine) -> tuple[int, float, float]:
    t0 = time.monotonic()
    deadline = t0 + BOOT_TIMEOUT
    pid, start = state["procs"][m.name]
    console = lab.machines_dir / m.name / "console.log"

    def check_alive() -> None:
        if not proc_alive(pid, start):
            tail = "\n".join(console.read_text(errors="replace").splitlines()[-15:])
            raise LabError(f"systemd-nspawn exited; {console}:\n{tail}")
        if time.monotonic() > deadline:
            raise LabError(f"not up after {BOOT_TIMEOUT:.0f} s; see {console}")

    init = None
    while init is None:
        check_alive()
        init = container_init(pid)
        if init is None:
            time.sleep(0.05)
    # Record it at once: `down` kills this pid namespace's init if nspawn itself is gone.
    state["inits"][m.name] = [init, proc_start_time(init)]
    status = ""
    while True:
        check_alive()
        cp = run(["nsenter", "-t", str(init), "-a", "systemctl", "is-system-running", "--wait"],
                 check=False, timeout=max(1.0, deadline - time.monotonic()))
        status = cp.stdout.strip()
        if status == "running":
            break
        if status == "degraded":
            failed = run(["nsenter", "-t", str(init), "-a", "systemctl", "--failed", "--plain", "--no-legend"],
                         check=False).stdout.strip()
            raise LabError(f"systemd is degraded; failed units:\n{failed}")
        if status in ("maintenance", "stopping"):
            raise LabError(f"systemd is {status}; see {console}")
        time.sleep(0.1)  # "offline" or nothing: systemd's bus is not there yet
    t_run = time.monotonic() - t0
    while not _tcp_banner(m.addr, 1.0):
        check_alive()
        time.sleep(0.1)
    cp = run([*lab.ssh_argv(m.addr), "true"], check=False, timeout=30)
    if cp.returncode != 0:
        raise LabError(f"ssh root@{m.addr} failed: {cp.stderr.strip()}")
    return init, t_run, time.monotonic() - t0


def _tcp_banner(addr: str, timeout: float) -> bool:
    """True when sshd answers on addr:22 with its banner."""
    try:
        with socket.create_connection((addr, 22), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def _write_inventory(lab: Lab, machines: list[Machine]) -> None:
    common = " ".join(shlex.quote(o) for o in lab.ssh_options()[2:])
    lines = [
        "# Generated by lab/galaxy_lab.py (`make lab-up`); `make lab-down` removes it. Do not edit.",
        "all:",
        "  vars:",
        "    ansible_user: root",
        f"    ansible_ssh_private_key_file: {json.dumps(str(lab.key))}",
        "    ansible_python_interpreter: /usr/bin/python3",
        f"    ansible_ssh_common_args: {json.dumps(common)}",
        "  children:",
    ]
    for group in ("galaxy_control", "galaxy_nodes"):
        lines += [f"    {group}:", "      hosts:"]
        for m in machines:
            if m.group == group:
                lines += [f"        {m.name}:", f"          ansible_host: {m.addr}"]
    lab.inventory.parent.mkdir(parents=True, exist_ok=True)
    tmp = lab.inventory.with_name(lab.inventory.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, lab.inventory)


# ---------------------------------------------------------------- down

def down(lab: Lab) -> int:
    if os.geteuid() != 0:
        raise LabError("the lab needs root: run it as root")
    t0 = time.monotonic()
    with lab.lock():
        state = lab.load()
        if state is None:
            log("the lab is down")
            return 0
        live = [h for h in state.get("holders", []) if proc_alive(*h)]
        if live:
            log(f"warning: test sessions still hold the lab (pids {', '.join(str(h[0]) for h in live)})")
        _down(lab, state)
    log(f"lab down in {time.monotonic() - t0:.1f} s")
    return 0


def release(lab: Lab, pid: int) -> int:
    """A test session is done with the lab: stop it if a session started it and nobody holds it now."""
    with lab.lock():
        state = lab.load()
        if state is None:
            return 0
        state["holders"] = [h for h in state.get("holders", []) if h[0] != pid and proc_alive(*h)]
        if state.get("manual") or state["holders"]:
            lab.save(state)
            log("the lab stays up (started by hand, or held by another session)")
            return 0
        _down(lab, state)
    return 0


def _down(lab: Lab, state: dict[str, Any]) -> None:
    """Remove everything the state records, in reverse order of creation; raise if anything stays."""
    state["phase"] = "stopping"
    lab.save(state)
    procs = [tuple(p) for p in state.get("procs", {}).values()]
    inits = [tuple(p) for p in state.get("inits", {}).values()]
    # An orderly halt first: nspawn turns SIGTERM into SIGRTMIN+3 for the container's systemd.
    for pid, start in procs:
        signal_proc(pid, start, signal.SIGTERM)
    stuck = wait_gone(procs + inits, STOP_TIMEOUT)
    for pid, start in stuck:
        signal_proc(pid, start, signal.SIGKILL)
    wait_gone(stuck, 5.0)
    for unit in state.get("scopes", []):
        run(["systemctl", "stop", unit], check=False)
    hierarchies = cgroup_hierarchies() if state.get("cgroups") else []
    for rel in state.get("cgroups", []):
        for h in hierarchies:
            left = kill_cgroup(h / rel)
            if left:
                raise LabError(f"processes {left} in {h / rel} would not die")
    for path in reversed(state.get("mounts", [])):
        for point in mounts_under(Path(path)):
            unmount(point)
    for ns in reversed(state.get("netns", [])):
        if netns_exists(ns):
            ip("netns", "delete", ns)
    for link in state.get("links", []):
        if link_exists(link):
            ip("link", "delete", link)
    for rel in state.get("cgroups", []):
        for h in hierarchies:
            remove_cgroup(h / rel)
    for h in hierarchies:
        top = h / lab.cgroup
        if top.is_dir() and not any(p.is_dir() for p in top.iterdir()):
            remove_cgroup(top)
    run_netns = Path("/run/netns")
    if state.get("run_netns_mount_created") and is_mountpoint(run_netns) and not any(run_netns.iterdir()):
        unmount(str(run_netns))
    if state.get("owner_file"):
        Path(state["owner_file"]).unlink(missing_ok=True)
        try:
            OWNERS.rmdir()
        except OSError:
            pass
    if lab.machines_dir.exists():
        _remove_machine_dir(lab.machines_dir)
    lab.inventory.unlink(missing_ok=True)
    left = leftovers(lab, state)
    if left:
        lab.save(state)
        raise LabError("teardown left these behind:\n  " + "\n  ".join(left))
    lab.state_file.unlink(missing_ok=True)
    lab.known_hosts.unlink(missing_ok=True)


def _remove_machine_dir(path: Path) -> None:
    for point in mounts_under(path):
        unmount(point)
    if mounts_under(path):
        raise LabError(f"cannot remove {path}: file systems still mounted below it")
    shutil.rmtree(path)


def leftovers(lab: Lab, state: dict[str, Any]) -> list[str]:
    """What of the recorded resources still exists (empty after a clean teardown)."""
    left = []
    for name, (pid, start) in {**state.get("procs", {}), **state.get("inits", {})}.items():
        if proc_alive(pid, start):
            left.append(f"process {pid} ({name})")
    left += [f"mount {p}" for p in mounts_under(lab.state_dir)]
    left += [f"netns {ns}" for ns in state.get("netns", []) if netns_exists(ns)]
    left += [f"link {ln}" for ln in state.get("links", []) if link_exists(ln)]
    for rel in state.get("cgroups", []):
        left += [f"cgroup {h / rel}" for h in cgroup_hierarchies() if (h / rel).exists()]
    return left


# ---------------------------------------------------------------- status, ssh

def status(lab: Lab, as_json: bool) -> int:
    state = lab.load()
    info: dict[str, Any] = {
        "up": False,
        "phase": state.get("phase") if state else "down",
        "inventory": str(lab.inventory),
        "key": str(lab.key),
        "known_hosts": str(lab.known_hosts),
        "hosts": {},
        "machines": [],
    }
    ok = state is not None and state.get("phase") == "up"
    for m in (state or {}).get("machines", []):
        pid, start = state["procs"].get(m["name"], [0, None])
        row = {"name": m["name"], "addr": m["addr"], "group": m["group"],
               "container": "running" if pid and proc_alive(pid, start) else "stopped",
               "systemd": "-", "sshd": False}
        init = state.get("inits", {}).get(m["name"])
        if row["container"] == "running" and init and proc_alive(*init):
            cp = run(["nsenter", "-t", str(init[0]), "-a", "systemctl", "is-system-running"], check=False)
            row["systemd"] = cp.stdout.strip() or "unknown"
        row["sshd"] = _tcp_banner(m["addr"], 2.0)
        ok = ok and row["systemd"] == "running" and row["sshd"]
        info["hosts"][m["name"]] = m["addr"]
        info["machines"].append(row)
    info["up"] = ok
    if as_json:
        print(json.dumps(info, indent=1))
    elif state is None:
        print("the lab is down")
    else:
        print(f"lab {lab.id}: {info['phase']}{' (healthy)' if ok else ''}; inventory {lab.inventory}")
        print(f"{'NAME':10} {'ADDRESS':15} {'CONTAINER':10} {'SYSTEMD':12} SSHD")
        for row in info["machines"]:
            print(f"{row['name']:10} {row['addr']:15} {row['container']:10} {row['systemd']:12} "
                  f"{'up' if row['sshd'] else 'down'}")
    if state is None:
        return 3
    return 0 if ok else 1


def _machine(lab: Lab, state: dict[str, Any] | None, name: str) -> Machine:
    if state is None or state.get("phase") != "up":
        raise LabError("the lab is not up: run `make lab-up` first")
    for m in state["machines"]:
        if m["name"] == name:
            return Machine(**m)
    raise LabError(f"no machine {name!r} in the lab (machines: {', '.join(m['name'] for m in state['machines'])})")


def stop_machine(lab: Lab, name: str) -> int:
    """Power one machine off (its systemd shuts down in order, as on a real host); its
    disk, address and namespace stay, so `start` boots it again as it was."""
    with lab.lock():
        state = lab.load()
        m = _machine(lab, state, name)
        assert state is not None
        proc = tuple(state["procs"][m.name])
        init = tuple(state.get("inits", {}).get(m.name) or (0, None))
        if not proc_alive(*proc):
            log(f"{name} is already stopped")
            return 0
        signal_proc(proc[0], proc[1], signal.SIGTERM)  # nspawn: SIGRTMIN+3 to the container's systemd
        stuck = wait_gone([proc, init] if init[0] else [proc], STOP_TIMEOUT)
        for pid, start in stuck:
            signal_proc(pid, start, signal.SIGKILL)
        wait_gone(stuck, 5.0)
        unit = f"{lab.netns(m.name)}.scope"
        if unit in state.get("scopes", []):
            run(["systemctl", "stop", unit], check=False)
    log(f"{name} stopped")
    return 0


def start_machine(lab: Lab, name: str) -> int:
    """Boot a machine that `stop` (or a poweroff inside it) brought down."""
    with lab.lock():
        state = lab.load()
        m = _machine(lab, state, name)
        assert state is not None
        if proc_alive(*state["procs"][m.name]):
            log(f"{name} is already running")
            return 0
        _spawn(lab, state, m)
        init, t_run, t_ssh = _wait_machine(lab, state, m)
        state["inits"][m.name] = [init, proc_start_time(init)]
        lab.save(state)
    log(f"{name} running after {t_run:.1f} s, ssh after {t_ssh:.1f} s")
    return 0


def ssh(lab: Lab, name: str, command: list[str]) -> int:
    state = lab.load()
    if state is None:
        raise LabError("the lab is down: run `make lab-up` first")
    addrs = {m["name"]: m["addr"] for m in state["machines"]}
    if name not in addrs:
        raise LabError(f"no machine {name!r} in the lab (machines: {', '.join(addrs)})")
    argv = lab.ssh_argv(addrs[name])
    if not command:
        argv.insert(1, "-t")
    os.execvp("ssh", argv + command)
    return 127  # not reached


# ---------------------------------------------------------------- CLI

def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="galaxy_lab.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--lab-id", type=int, default=_int_env("GALAXY_LAB_ID", 0),
                        help="run several labs side by side: lab N uses 198.18.N.0/24 (default 0)")
    parser.add_argument("--state-dir", type=Path, default=Path(os.environ.get("GALAXY_LAB_STATE", DEFAULT_STATE)))
    parser.add_argument("--inventory", type=Path,
                        default=Path(os.environ.get("GALAXY_LAB_INVENTORY", DEFAULT_INVENTORY)))
    parser.add_argument("--cache", type=Path, default=lab_rootfs.DEFAULT_CACHE,
                        help="where the base root file system is cached (default %(default)s)")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_up = sub.add_parser("up", help="boot the lab (idempotent) and print the inventory path")
    p_up.add_argument("--nodes", type=int, default=None,
                      help=f"number of nodes web1..webN besides control (default {DEFAULT_NODES})")
    p_up.add_argument("--hold", type=int, metavar="PID",
                      help="a test session (pid) that uses the lab; `release PID` stops the lab if it started it")
    p_up.add_argument("--keep-on-failure", action="store_true", help="do not tear down when booting fails")
    sub.add_parser("down", help="stop every machine and remove every namespace, link, mount and cgroup")
    p_status = sub.add_parser("status", help="show the machines; exit 0 when all are running")
    p_status.add_argument("--json", action="store_true")
    p_ssh = sub.add_parser("ssh", help="ssh into a machine: ssh web1 [-- command ...]")
    p_ssh.add_argument("name")
    p_ssh.add_argument("command", nargs=argparse.REMAINDER)
    for verb, text in (("stop", "power one machine off (its disk and address stay)"),
                       ("start", "boot a stopped machine again")):
        sub.add_parser(verb, help=text).add_argument("name")
    p_release = sub.add_parser("release", help="(for test fixtures) drop a hold taken with `up --hold`")
    p_release.add_argument("pid", type=int)
    sub.add_parser("rootfs", help="build the cached root file system if its recipe changed, print its path")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Turn SIGTERM into an exception so that a stopped `up` still tears down what it made.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        lab = Lab(args.lab_id, args.state_dir, args.inventory, args.cache)
        if args.cmd == "up":
            return up(lab, args.nodes, args.hold, args.keep_on_failure)
        if args.cmd == "down":
            return down(lab)
        if args.cmd == "release":
            return release(lab, args.pid)
        if args.cmd == "status":
            return status(lab, args.json)
        if args.cmd == "stop":
            return stop_machine(lab, args.name)
        if args.cmd == "start":
            return start_machine(lab, args.name)
        if args.cmd == "ssh":
            command = args.command[1:] if args.command[:1] == ["--"] else args.command
            return ssh(lab, args.name, command)
        if args.cmd == "rootfs":
            preflight()
            print(lab_rootfs.ensure_rootfs(lab.cache, log))
            return 0
    except LabError as exc:
        log(f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
