"""`galaxy cleanup`: retention for finished orders, answers and old audit segments.

Only finished things are removed: an order's archive file, its answer and
sidecar and its state file go together once the sidecar is older than
``retention.orders_days``; quarantined files after ``retention.quarantine_days``;
compressed audit segments after ``retention.audit_days`` (the live audit file is
never touched, so the chain's newest part always stays). Every run is an audit
event with the counts.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from galaxy_fleet.config import Config
from galaxy_fleet.node.spool import Spool


def _old(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:
        return False


def cleanup(
    config: Config, *, dry_run: bool = False, now: float | None = None, overrides: dict[str, float] | None = None
) -> dict[str, Any]:
    s = dataclasses.replace(config.retention, **(overrides or {}))
    now = time.time() if now is None else now
    spool = Spool(config.spool_dir)
    removed: dict[str, Any] = {"orders": 0, "quarantine": 0, "audit_segments": 0, "bytes": 0}

    def drop(path: Path) -> None:
        try:
            size = path.stat().st_size
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            return
        removed["bytes"] += size

    cutoff = now - s.orders_days * 86400
    for sidecar in spool.responses.glob("*.json"):
        oid = sidecar.stem
        if not _old(sidecar, cutoff) or (spool.processing / f"{oid}.json").exists():
            continue
        for path in (spool.archive / f"{oid}.json", spool.responses / f"{oid}.md", spool.state_path(oid), sidecar):
            drop(path)
        removed["orders"] += 1
    qcut = now - s.quarantine_days * 86400
    for path in spool.quarantine.iterdir() if spool.quarantine.exists() else ():
        if path.is_file() and _old(path, qcut):
            drop(path)
            removed["quarantine"] += 1
    acut = now - s.audit_days * 86400
    live = config.audit.path
    for seg in live.parent.glob(live.name + ".*.gz"):
        if _old(seg, acut):
            drop(seg)
            removed["audit_segments"] += 1
    if not dry_run:
        from galaxy_fleet.audit import open_audit

        audit = open_audit(config)
        audit.append(
            "cleanup",
            message=f"removed {removed['orders']} finished orders, {removed['quarantine']} "
            f"quarantined files, {removed['audit_segments']} audit segments",
            **removed,
            retention=dataclasses.asdict(s),
        )
        audit.close()
    return {"dry_run": dry_run, "removed": removed, "retention": dataclasses.asdict(s), "pid": os.getpid()}
