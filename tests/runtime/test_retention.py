"""`galaxy cleanup` removes only finished things past their retention."""

from __future__ import annotations

import gzip
import json
import os
import time


def test_cleanup_keeps_recent_and_running_orders(node):
    node.start_worker()
    old = node.submit("old order")
    recent = node.submit("recent order")
    node.wait_done(old)
    node.wait_done(recent)
    month_ago = time.time() - 40 * 86400
    for path in (node.spool / "responses").glob(f"{old}.*"):
        os.utime(path, (month_ago, month_ago))
    seg = node.spool / "audit" / "audit.jsonl.000000000001-000000000002.gz"
    seg.write_bytes(gzip.compress(b""))
    os.utime(seg, (time.time() - 400 * 86400,) * 2)
    dry = json.loads(node.galaxy("cleanup", "--dry-run", "--json", check=True).stdout)
    assert dry["removed"]["orders"] == 1 and (node.spool / "responses" / f"{old}.md").exists()
    report = json.loads(node.galaxy("cleanup", "--json", check=True).stdout)
    assert report["removed"]["orders"] == 1 and report["removed"]["audit_segments"] == 1
    assert not (node.spool / "responses" / f"{old}.md").exists()
    assert not (node.spool / "archive" / f"{old}.json").exists()
    assert (node.spool / "responses" / f"{recent}.md").exists()
    assert not seg.exists()
    assert node.audit_events()[-1]["type"] == "cleanup"
    bad = node.galaxy("cleanup", "--json")
    assert bad.returncode == 0
    node.write_config(retention={"orders_days": "soon"})
    bad = node.galaxy("cleanup")
    assert bad.returncode == 2 and "retention.orders_days" in bad.stderr
