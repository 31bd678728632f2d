"""Helpers for the collection's tests: tools of this venv, clean copies, playbook runs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NAMESPACE, NAME = "galaxy_protocol", "fleet"

# What a copy of the collection for the linters holds: the collection's own
# content (the runtime's source in files/ has its own tests and linters).
CONTENT = ("galaxy.yml", "meta", "plugins", "roles", "playbooks", "changelogs", "docs", "README.md",
           "inventory/example", "tests/unit", "tests/sanity", "tests/collection", ".config")


def tool(name: str) -> str:
    path = BIN / name
    assert path.exists(), f"{path} missing: run `make deps` (requirements-dev.txt pins the Ansible tools)"
    return str(path)


def collection_copy(root: Path, content: tuple[str, ...] = CONTENT) -> Path:
    """Copy the collection into ROOT/ansible_collections/galaxy_protocol/fleet; return that path."""
    dest = root / "ansible_collections" / NAMESPACE / NAME
    dest.mkdir(parents=True)
    for item in content:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "output"))
        elif src.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    return dest


def collections_path() -> Path:
    """A collections path in which galaxy_protocol.fleet is this checkout (a symlink under artifacts/)."""
    root = REPO / "artifacts" / "collections"
    link = root / "ansible_collections" / NAMESPACE / NAME
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(REPO, target_is_directory=True)
    return root


def ansible_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        ANSIBLE_COLLECTIONS_PATH=str(collections_path()),
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_PIPELINING="1",
        ANSIBLE_HOST_KEY_CHECKING="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        PATH=f"{BIN}:{env.get('PATH', '')}",
    )
    env.update(extra)
    return env


def run(argv: list[str], *, timeout: float = 1200, env: dict[str, str] | None = None,
        cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env or ansible_env(),
                          cwd=cwd or REPO, stdin=subprocess.DEVNULL, check=False)


def playbook(inventory: Path | list[Path], name: str, *args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    inventories = inventory if isinstance(inventory, list) else [inventory]
    argv = [tool("ansible-playbook")]
    for inv in inventories:
        argv += ["-i", str(inv)]
    return run([*argv, str(REPO / "playbooks" / name), *args], timeout=timeout)


_RECAP = re.compile(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+skipped=(\d+)"
                    r"\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


def recap(output: str) -> dict[str, dict[str, int]]:
    """The PLAY RECAP counters per host."""
    keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
    return {m.group(1): dict(zip(keys, map(int, m.groups()[1:]))) for m in _RECAP.finditer(output)}


def failures(output: str) -> str:
    """The fatal/failed task lines of a playbook run (with their task names), for assertion messages."""
    lines = output.splitlines()
    picked = []
    for i, line in enumerate(lines):
        if re.match(r"^(fatal|failed): \[", line) or line.startswith("ERROR!") or line.startswith("[ERROR]"):
            task = next((lines[j] for j in range(i, -1, -1) if lines[j].startswith(("TASK [", "RUNNING HANDLER ["))), "")
            picked += [task, line[:3000]]
    return "\n".join(picked) or output[-3000:]
