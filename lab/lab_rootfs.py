"""The cached base root file system every lab machine boots from (read-only overlay lower layer).

Built once with `debootstrap --variant=minbase` from the Debian mirror that the
host's own apt sources name, customised for fast container boots, and stored
outside the repository under a name derived from its recipe, so a change of
recipe builds a new one. The build happens in a temporary directory that is
renamed into place only when complete: an interrupted build never leaves a
half cache behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

from lab_host import LabError, mountinfo, mounts_under, proc_start_time, run, unmount

SUITE = "bookworm"
VARIANT = "minbase"
# What a lab machine needs: systemd as PID 1 with D-Bus, sshd, and what Ansible
# and the Galaxy roles expect on a target (python3 + venv, apt bindings, sudo
# for become, acl for become_user to an unprivileged user, iproute2).
PACKAGES = (
    "systemd",
    "systemd-sysv",
    "dbus",
    "openssh-server",
    "python3",
    "python3-venv",
    "python3-apt",
    "iproute2",
    "sudo",
    "acl",
    "procps",
)

DEFAULT_CACHE = Path(os.environ.get("GALAXY_LAB_CACHE", "/var/cache/galaxy-lab"))

# Units that make no sense in a throwaway container without a network route:
# periodic apt and fs maintenance, consoles nobody logs in on, crash stores.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily.service",
    "apt-daily-upgrade.timer",
    "apt-daily-upgrade.service",
    "dpkg-db-backup.timer",
    "dpkg-db-backup.service",
    "e2scrub_all.timer",
    "e2scrub_all.service",
    "e2scrub_reap.service",
    "fstrim.timer",
    "fstrim.service",
    "systemd-pstore.service",
    "getty.target",
    "console-getty.service",
    "getty@.service",
    "container-getty@.service",
)

SSHD_DROPIN = """\
# galaxy-lab: one host key per machine (written at lab-up), keys only.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""

JOURNALD_DROPIN = """\
# galaxy-lab: keep the journal in memory; lab machines are thrown away.
[Journal]
Storage=volatile
RuntimeMaxUse=16M
ForwardToConsole=no
"""


def customize(root: Path) -> None:
    """Turn a fresh debootstrap tree into the lab's base image (no per-machine identity)."""
    etc = root / "etc"
    # Per-machine identity is written into each machine's overlay at lab-up.
    for key in (etc / "ssh").glob("ssh_host_*"):
        key.unlink()
    (etc / "machine-id").write_text("")
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.exists() or dbus_id.is_symlink():
        dbus_id.unlink()
    (etc / "hostname").write_text("localhost\n")
    (etc / "hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")
    resolv = etc / "resolv.conf"
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.write_text("# galaxy-lab machines have no DNS and no route out of the lab.\n")
    (etc / "ssh/sshd_config.d").mkdir(parents=True, exist_ok=True)
    (etc / "ssh/sshd_config.d/galaxy-lab.conf").write_text(SSHD_DROPIN)
    (etc / "systemd/journald.conf.d").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/journald.conf.d/galaxy-lab.conf").write_text(JOURNALD_DROPIN)
    units = etc / "systemd/system"
    for unit in MASKED_UNITS:
        link = units / unit
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to("/dev/null")
    for wants in units.glob("*.wants"):
        for link in wants.iterdir():
            if link.name in MASKED_UNITS:
                link.unlink()
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    # Downloaded .debs are not needed once installed.
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for cache in (root / "var/cache/apt").glob("*.bin"):
        cache.unlink()


def recipe() -> dict[str, object]:
    return {
        "suite": SUITE,
        "variant": VARIANT,
        "packages": list(PACKAGES),
        "masked": list(MASKED_UNITS),
        "customize": inspect.getsource(customize) + SSHD_DROPIN + JOURNALD_DROPIN,
    }


def recipe_id() -> str:
    blob = json.dumps(recipe(), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- mirror

def _deb822_paragraphs(text: str) -> list[dict[str, str]]:
    paras, cur, key = [], {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        if not line.strip():
            if cur:
                paras.append(cur)
            cur, key = {}, None
            continue
        if line[0] in " \t" and key:
            cur[key] += " " + line.strip()
            continue
        if ":" in line:
            key, value = line.split(":", 1)
            key = key.strip().lower()
            cur[key] = value.strip()
    if cur:
        paras.append(cur)
    return paras


def apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[tuple[str, list[str], list[str]]]:
    """(uri, suites, components) of every enabled binary `deb` source of the host."""
    entries: list[tuple[str, list[str], list[str]]] = []
    files = [etc_apt / "sources.list"] + sorted((etc_apt / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split("#", 1)[0].split()
            if not words or words[0] != "deb":
                continue
            words = words[1:]
            if words and words[0].startswith("["):
                while words and not words[0].endswith("]"):
                    words.pop(0)
                words = words[1:]
            if len(words) >= 2:
                entries.append((words[0], [words[1]], words[2:]))
    for path in sorted((etc_apt / "sources.list.d").glob("*.sources")):
        for para in _deb822_paragraphs(path.read_text()):
            if "deb" not in para.get("types", "").split():
                continue
            if para.get("enabled", "yes").lower() == "no":
                continue
            for uri in para.get("uris", "").split():
                entries.append((uri, para.get("suites", "").split(), para.get("components", "").split()))
    return entries


def find_mirror(suite: str = SUITE, etc_apt: Path = Path("/etc/apt")) -> str:
    """The Debian archive the host's apt already uses, preferring one that carries `suite`.

    `GALAXY_LAB_MIRROR` overrides it (for hosts whose sources are not Debian's).
    """
    override = os.environ.get("GALAXY_LAB_MIRROR")
    if override:
        return override
    usable = [
        (uri, suites, comps)
        for uri, suites, comps in apt_sources(etc_apt)
        if uri.split(":", 1)[0] in ("http", "https", "file") and "main" in comps
    ]
    for uri, suites, _ in usable:
        if suite in suites:
            return uri
    for uri, suites, _ in usable:  # a Debian host of another release: same archive
        if any(s.split("-")[0] == s and "security" not in uri for s in suites):
            return uri
    raise LabError(
        f"no Debian mirror carrying '{suite}' in the host's apt sources (/etc/apt/sources.list*); "
        "set GALAXY_LAB_MIRROR to a Debian archive URL"
    )


def _apt_proxy_env() -> dict[str, str]:
    """Pass the host apt's HTTP(S) proxy, if it has one, on to debootstrap's downloads."""
    env: dict[str, str] = {}
    for scheme in ("http", "https"):
        var = f"{scheme}_proxy"
        if os.environ.get(var):
            continue
        cp = run(["apt-config", "shell", "P", f"Acquire::{scheme}::Proxy"], check=False)
        words = shlex.split(cp.stdout)
        if words and words[0].startswith("P="):
            value = words[0][2:]
            if value and value.upper() != "DIRECT":
                env[var] = value
    return env


# ---------------------------------------------------------------- cache

def _remove_tree(path: Path) -> None:
    """Remove a build tree, after unmounting anything an interrupted debootstrap left in it."""
    for point in mounts_under(path):
        unmount(point)
    if mounts_under(path):
        raise LabError(f"cannot remove {path}: file systems still mounted below it")
    shutil.rmtree(path, ignore_errors=True)


def _in_use(path: Path) -> bool:
    text = str(path)
    return any(fstype == "overlay" and text in opts for _, fstype, opts in mountinfo())


def _debootstrap(argv: list[str], env: dict[str, str], lock_fd: int, log_path: Path) -> str | None:
    """Run debootstrap in a process group of its own; return None, or the tail of its log on failure.

    Every process of the build inherits the cache lock, so even if this
    program is killed, nobody removes or replaces the tree while an orphaned
    debootstrap still writes into it. If this program is interrupted, it
    kills the whole group before cleaning up.
    """
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True, pass_fds=(lock_fd,))
        try:
            code = proc.wait(timeout=1800)
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if code == 0:
        return None
    return "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])


def ensure_rootfs(cache: Path = DEFAULT_CACHE, log: Callable[[str], None] = print) -> Path:
    """Return the cached base root file system, building it first if its recipe is new."""
    rid = recipe_id()
    final = cache / f"rootfs-{rid}"
    if (final / "etc/galaxy-lab-recipe").is_file():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build of the root file system in {cache}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if (final / "etc/galaxy-lab-recipe").is_file():  # built meanwhile by someone else
            return final
        for stale in cache.glob(".build-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or proc_start_time(int(pid)) is None:
                log(f"removing an interrupted build: {stale}")
                _remove_tree(stale)
        mirror = find_mirror()
        tmp = cache / f".build-{rid}-{os.getpid()}"
        log(f"building the lab root file system ({SUITE}, {VARIANT}) in {final} (about a minute)")
        started = time.monotonic()
        env = dict(os.environ, **_apt_proxy_env())
        argv = [
            "debootstrap",
            f"--variant={VARIANT}",
            "--components=main",
            "--include=" + ",".join(PACKAGES),
            SUITE,
            str(tmp),
            mirror,
        ]
        try:
            out = _debootstrap(argv, env, lock.fileno(), cache / "build.log")
            if out is not None:
                raise LabError(f"debootstrap failed (full log: {cache / 'build.log'}):\n{out}")
            customize(tmp)
            (tmp / "etc/galaxy-lab-recipe").write_text(json.dumps(recipe(), indent=1) + "\n")
            if final.exists():  # a half tree without the recipe stamp cannot be trusted
                _remove_tree(final)
            os.rename(tmp, final)
        except BaseException:
            _remove_tree(tmp)
            raise
        log(f"root file system built in {time.monotonic() - started:.1f} s")
        for old in cache.glob("rootfs-*"):
            if old != final and not _in_use(old):
                log(f"removing the outdated root file system {old}")
                _remove_tree(old)
    return final
