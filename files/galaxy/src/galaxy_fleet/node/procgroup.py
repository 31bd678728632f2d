"""An order's processes as one process group: recorded, and killed as a whole.

Each program an executor starts leads a new session (``start_new_session``),
so it and everything it forks share one process group whose id is its pid.
The worker records that group next to the claim (``processing/<id>.pgid``)
with the leader's start time and the boot id; a worker that recovers the
order after its predecessor died kills what is left of the group, and only
that group: a pid reused by an unrelated process has another start time.
"""

from __future__ import annotations

import os
import signal
from typing import Any


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    try:  # the command name may hold spaces and parentheses: split after the last ")"
        return int(raw[raw.rindex(b")") + 2 :].split()[19])
    except (ValueError, IndexError):
        return None


def identity(pgid: int) -> dict[str, Any]:
    """What a later worker needs to find this group again, and only this group."""
    return {"pgid": pgid, "start": start_time(pgid), "boot": _boot_id()}


def members(pgid: int) -> list[int]:
    """The live processes in group ``pgid``."""
    found: list[int] = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return found
    for name in names:
        if not name.isdigit():
            continue
        try:
            if os.getpgid(int(name)) == pgid:
                found.append(int(name))
        except OSError:
            continue
    return found


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal every process of the group; False if none was left."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def kill_recorded(record: Any) -> int:
    """Kill the leftovers of a recorded group; returns how many processes were signalled.

    Nothing is killed unless the record is from this boot and the group's
    leader, if it still exists, is the process that was recorded.
    """
    if not isinstance(record, dict):
        return 0
    pgid, start = record.get("pgid"), record.get("start")
    if not isinstance(pgid, int) or pgid <= 1 or record.get("boot") != _boot_id():
        return 0
    now = start_time(pgid)
    if now is not None and start is not None and now != start:
        return 0  # that pid belongs to another process now
    procs = members(pgid)
    if procs:
        kill_group(pgid)
    return len(procs)
