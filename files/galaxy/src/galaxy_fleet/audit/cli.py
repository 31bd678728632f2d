"""`galaxy audit` (and ``python -m galaxy_fleet.audit``): query, verify and sum
the costs of this host's audit log.
"""

from __future__ import annotations

import json
import os
import sys

from galaxy_fleet.audit.chain import SEVERITIES, AuditError
from galaxy_fleet.audit.query import (
    _as_values,
    _Filter,
    _printable,
    _scan,
    _severities,
    format_event,
    parse_time,
    sum_cost,
)
from galaxy_fleet.audit.segments import _segments
from galaxy_fleet.audit.verify import verify

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from typing import Any


def _time_arg(text: str) -> str:
    import argparse

    try:
        return parse_time(text)
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count_arg(text: str) -> int:
    import argparse

    if not text.strip().isdigit():
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def _severity_arg(text: str) -> str:
    import argparse

    try:
        _severities(_as_values("severity", text) or [])
    except AuditError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `galaxy audit`."""
    parser.add_argument(
        "--limit",
        type=_count_arg,
        default=20,
        metavar="N",
        help="show the newest N matching events (default 20; 0 = all)",
    )
    parser.add_argument(
        "--severity",
        type=_severity_arg,
        metavar="S",
        help=f"only this severity ({'/'.join(SEVERITIES)}); comma-separated for several, S+ for S and above",
    )
    parser.add_argument("--type", metavar="T", help="only events of this type (comma-separated for several)")
    parser.add_argument("--order", metavar="ID", help="only events of this order")
    parser.add_argument("--host", metavar="H", help="only events written by this host")
    parser.add_argument("--user", metavar="U", help="only events of this user")
    parser.add_argument(
        "--since",
        type=_time_arg,
        metavar="T",
        help="events at or after T: ISO-8601 (UTC unless it has an offset) or an age: 30m, 2h, 7d",
    )
    parser.add_argument("--until", type=_time_arg, metavar="T", help="events before T (same forms as --since)")
    parser.add_argument(
        "--after",
        type=_count_arg,
        metavar="CURSOR",
        help="events after this seq, oldest first (page on with the last seq shown)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--verify", action="store_true", help="check the hash chain; exit 1 and show the first broken link if any"
    )
    parser.add_argument(
        "--sum-cost",
        choices=("node", "day"),
        help="sum tokens_in/tokens_out/cost of finished orders (order_done, order_failed, …) per node or per day",
    )
    parser.add_argument("--file", metavar="PATH", help="read this audit log instead of the configured one")


def run(args: argparse.Namespace, config: Any) -> int:
    """`galaxy audit`: 0 = done, 1 = broken chain or unreadable log, 2 = bad usage or config.

    ``config`` is a galaxy_fleet.config.Config, or None to load it only when
    --file is not given (keeps the YAML loader off the fast path).
    """
    path = args.file
    if path is None:
        if config is None:
            from galaxy_fleet import config as config_mod

            try:
                config = config_mod.load(getattr(args, "config", None))
            except config_mod.ConfigError as exc:
                print(f"galaxy audit: {exc}", file=sys.stderr)
                return 2
        path = config.audit.path
    path = os.fspath(path)
    out = sys.stdout
    try:
        if args.verify:
            report = verify(path)
            if args.json:
                out.write(json.dumps(report.to_dict()) + "\n")
            elif report.ok:
                span = f", seq {report.first_seq}..{report.last_seq}" if report.count else ""
                out.write(
                    f"OK: {report.count} events verified in {report.segments} segment(s) and the live file{span}\n"
                )
            else:
                b = report.broken or {}
                out.write(
                    f"BROKEN: {b.get('segment')} line {b.get('line')} (seq {b.get('seq')}): "
                    f"{b.get('reason')}: {b.get('detail')}\n"
                )
                out.write(f"{report.count} events verified before the break\n")
            return 0 if report.ok else 1
        filters = {
            "severity": args.severity,
            "type": args.type,
            "order_id": args.order,
            "host": args.host,
            "user": args.user,
            "since": args.since,
            "until": args.until,
        }
        if args.sum_cost:
            if args.after is not None:
                filters["after"] = args.after
            rows = sum_cost(path, args.sum_cost, **filters)
            if args.json:
                for row in rows:
                    out.write(json.dumps(row) + "\n")
            else:
                key = args.sum_cost
                out.write(f"{key:<24} {'orders':>8} {'tokens_in':>12} {'tokens_out':>12} {'cost':>12}\n")
                total = {"orders": 0, "tokens_in": 0, "tokens_out": 0, "cost": 0.0}
                for row in rows:
                    out.write(
                        f"{_printable(str(row[key])):<24} {row['orders']:>8} {row['tokens_in']:>12} "
                        f"{row['tokens_out']:>12} {row['cost']:>12.4f}\n"
                    )
                    for k in total:
                        total[k] += row[k]
                out.write(
                    f"{'TOTAL':<24} {total['orders']:>8} {total['tokens_in']:>12} "
                    f"{total['tokens_out']:>12} {total['cost']:>12.4f}\n"
                )
            return 0
        filt = _Filter(after=args.after, **filters)
        found = _scan(path, filt, args.limit or None)
        if args.json:
            out.flush()
            sys.stdout.buffer.write(b"".join(line + b"\n" for line, _event in found))
            sys.stdout.buffer.flush()
        else:
            out.write("".join(format_event(event) + "\n" for _line, event in found))
        if not found and not os.path.exists(path) and not _segments(path):
            print(f"galaxy audit: no audit log at {path} yet", file=sys.stderr)
        return 0
    except AuditError as exc:
        print(f"galaxy audit: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `galaxy audit | head`: the reader left; say nothing more.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        print(f"galaxy audit: cannot read {exc.filename or path}: {exc.strerror or exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    """`python -m galaxy_fleet.audit` (the same as `galaxy audit`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="galaxy audit", description="Query and verify the node's audit trail.")
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or /etc/galaxy/config.yml)"
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, None)
