"""Small host-side helpers for the lab: commands, processes, mounts, cgroups, namespaces.

Everything here works on the host (the root namespace of the machine that runs
`galaxy_lab.py`) and uses only the standard library and iproute2/util-linux.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Sequence


class LabError(RuntimeError):
    """A lab operation failed; the message says what and how to fix it."""


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output, and raise LabError with its stderr on failure."""
    try:
        cp = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise LabError(f"command not found: {argv[0]} (run `make host-deps`)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and cp.returncode != 0:
        detail = (cp.stderr or cp.stdout).strip()
        raise LabError(f"`{' '.join(argv)}` failed ({cp.returncode}): {detail}")
    return cp


# ---------------------------------------------------------------- processes

def proc_start_time(pid: int) -> int | None:
    """The start time (clock ticks since boot) of a live, non-zombie process, else None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name is in parentheses and may contain spaces: split after it.
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def proc_alive(pid: int, start: int | None) -> bool:
    """True when `pid` is still the very process that was recorded (guards against pid reuse)."""
    now = proc_start_time(pid)
    return now is not None and (start is None or now == start)


def signal_proc(pid: int, start: int | None, sig: int) -> bool:
    """Send `sig` to the recorded process if it is still that process."""
    if not proc_alive(pid, start):
        return False
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def nspid(pid: int) -> list[int]:
    """The pid of a process in each nested pid namespace, outermost first."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:"):
                return [int(x) for x in line.split()[1:]]
    except (FileNotFoundError, ProcessLookupError):
        pass
    return []


def container_init(parent: int) -> int | None:
    """The host pid of the pid-namespace init (PID 1 inside) whose parent is `parent`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() != str(parent):
            continue
        ids = fields.get("NSpid", "").split()
        if len(ids) > 1 and ids[-1] == "1":
            return int(entry.name)
    return None


def wait_gone(procs: Sequence[tuple[int, int | None]], timeout: float) -> list[tuple[int, int | None]]:
    """Wait until the processes are gone; return those still alive after `timeout`."""
    deadline = time.monotonic() + timeout
    alive = [p for p in procs if proc_alive(*p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if proc_alive(*p)]
    return alive


# ---------------------------------------------------------------- mounts

def _unescape(field: str) -> str:
    # /proc/self/mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and len(field) >= i + 4 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mountinfo() -> list[tuple[str, str, str]]:
    """(mount point, file system type, super options) of every mount in this namespace."""
    result = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, right = line.split(" - ", 1)
        point = _unescape(left.split()[4])
        rparts = right.split()
        result.append((point, rparts[0], rparts[2] if len(rparts) > 2 else ""))
    return result


def is_mountpoint(path: Path) -> bool:
    target = str(path)
    return any(point == target for point, _, _ in mountinfo())


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first."""
    base = str(path).rstrip("/")
    hits = [p for p, _, _ in mountinfo() if p == base or p.startswith(base + "/")]
    return sorted(set(hits), key=len, reverse=True)


def unmount(path: str) -> None:
    """Unmount, retrying while busy, and detach lazily as a last resort."""
    for _ in range(20):
        if run(["umount", path], check=False).returncode == 0 or not is_mountpoint(Path(path)):
            return
        time.sleep(0.2)
    run(["umount", "--lazy", path])


# ---------------------------------------------------------------- cgroups

def cgroup_hierarchies() -> list[Path]:
    """The hierarchies a lab machine's processes are placed in.

    The cgroup2 (unified) mount and, on a hybrid or legacy host, the
    `name=systemd` v1 hierarchy: those are the ones systemd-nspawn and the
    systemd inside the container use. Resource controllers mounted as v1
    hierarchies are left alone.
    """
    found = []
    for point, fstype, opts in mountinfo():
        if fstype == "cgroup2" or (fstype == "cgroup" and "name=systemd" in opts.split(",")):
            found.append(Path(point))
    # A hierarchy can be mounted twice (e.g. bind mounts); keep the first of each kind.
    unique: list[Path] = []
    for p in found:
        if p not in unique and not any(q in p.parents for q in unique):
            unique.append(p)
    return unique


def cgroup_pids(top: Path) -> list[int]:
    """Every process in the cgroup `top` and its descendants."""
    pids: list[int] = []
    if not top.is_dir():
        return pids
    for dirpath, _dirs, _files in os.walk(top):
        try:
            text = (Path(dirpath) / "cgroup.procs").read_text()
        except (FileNotFoundError, OSError):
            continue
        pids.extend(int(x) for x in text.split())
    return pids


def kill_cgroup(top: Path, timeout: float = 5.0) -> list[int]:
    """SIGKILL everything in a cgroup tree we created; return pids that would not die."""
    deadline = time.monotonic() + timeout
    while True:
        pids = [p for p in cgroup_pids(top) if proc_start_time(p) is not None]
        if not pids:
            return []
        if time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def remove_cgroup(top: Path) -> None:
    """rmdir a cgroup tree depth-first (cgroup directories can only be removed empty)."""
    if not top.is_dir():
        return
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        for _ in range(50):
            try:
                os.rmdir(dirpath)
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.1)  # the kernel frees a cgroup shortly after its last task exits


# ---------------------------------------------------------------- network

def netns_exists(name: str) -> bool:
    return Path("/run/netns", name).exists()


def link_exists(name: str, netns: str | None = None) -> bool:
    argv = ["ip"] + (["-n", netns] if netns else []) + ["link", "show", "dev", name]
    return run(argv, check=False).returncode == 0


def ip(*args: str, netns: str | None = None) -> None:
    run(["ip"] + (["-n", netns] if netns else []) + list(args))
