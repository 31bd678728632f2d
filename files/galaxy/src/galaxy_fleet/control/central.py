"""`galaxy audit` on the control node: the whole fleet's trail from the store.

Every node's events stream into the store (deduplicated by host and seq,
each link of the chain checked as it arrives). Here they are queried like a
node's own log, and ``--completeness`` proves, for a time window, that every
order has a complete life cycle and that no node's chain has gaps.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections import defaultdict
from typing import Any

from galaxy_fleet.control.store import Store
from galaxy_fleet.order import TERMINAL_EVENTS as TERMINAL_TYPES

SEVERITIES = ("debug", "info", "warning", "error", "critical")


def _severity(value: str | None) -> str | None:
    if value and value.endswith("+"):
        return ",".join(SEVERITIES[SEVERITIES.index(value[:-1]) :])
    return value


def completeness(store: Store, *, since: str | None, until: str | None, host: str | None) -> dict[str, Any]:
    """Check the window's orders: received, queued, one final state, nothing in between missing."""
    events = store.events(host=host, since=since, until=until, limit=None)
    by_order: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    for e in events:
        seqs[e["host"]].append(e["seq"])
        if e.get("order_id") and e["type"].startswith("order_"):
            by_order[(e["host"], e["order_id"])].append(e)
    gaps = {}
    for h, values in seqs.items():
        values.sort()
        missing = [a + 1 for a, b in itertools.pairwise(values) if b != a + 1]
        if missing:
            gaps[h] = missing[:20]
    incomplete, in_flight, complete = [], [], 0
    for (h, oid), evs in sorted(by_order.items()):
        types = [e["type"] for e in evs]
        if "order_received" not in types:
            continue  # began before the window
        finals = [t for t in types if t in TERMINAL_TYPES]
        problems = []
        if "order_queued" not in types:
            problems.append("no order_queued")
        if len(finals) > 1:
            problems.append(f"several final states: {', '.join(finals)}")
        if "order_running" in types and "order_delivered" not in types:
            problems.append("running without order_delivered")
        if not finals:
            if problems:
                incomplete.append({"host": h, "order_id": oid, "problems": problems, "events": types})
            else:
                in_flight.append({"host": h, "order_id": oid, "last": types[-1]})
            continue
        if problems:
            incomplete.append({"host": h, "order_id": oid, "problems": problems, "events": types})
        else:
            complete += 1
    return {
        "since": since,
        "until": until,
        "orders": complete + len(incomplete) + len(in_flight),
        "complete": complete,
        "in_flight": in_flight,
        "incomplete": incomplete,
        "chain_gaps": gaps,
        "ok": not incomplete and not gaps,
    }


def run(args: argparse.Namespace, store_path: str) -> int:
    from galaxy_fleet.audit import format_event

    store = Store(store_path)
    try:
        if args.completeness:
            report = completeness(store, since=args.since, until=args.until, host=args.host)
            if args.json:
                print(json.dumps(report))
            else:
                print(
                    f"{report['orders']} orders in the window: {report['complete']} complete, "
                    f"{len(report['in_flight'])} still running, {len(report['incomplete'])} incomplete"
                )
                for item in report["incomplete"]:
                    print(f"  INCOMPLETE {item['host']} {item['order_id']}: {'; '.join(item['problems'])}")
                for h, missing in report["chain_gaps"].items():
                    print(f"  GAP {h}: events {', '.join(map(str, missing))} missing")
                print("COMPLETE" if report["ok"] else "NOT COMPLETE")
            return 0 if report["ok"] else 1
        events = store.events(
            host=args.host,
            limit=args.limit or None,
            severity=_severity(args.severity),
            type=args.type,
            order_id=args.order,
            since=args.since,
            until=args.until,
        )
        if args.json:
            sys.stdout.write("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events))
        else:
            sys.stdout.write("".join(f"{e['host']:<12} {format_event(e)}\n" for e in events))
        return 0
    finally:
        store.close()
