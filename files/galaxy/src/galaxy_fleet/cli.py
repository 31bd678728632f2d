"""The `galaxy` command.

Exit codes: 0 success (an order ended ``done``), 1 an order ended otherwise or a
check failed, 2 bad input or configuration, 3 a wait gave up, 4 no such order,
5 the node is busy (its queue is full: the order was not taken, try again later).
Start-up stays light: each subcommand imports what it needs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

EXIT_OK, EXIT_NOT_DONE, EXIT_INPUT, EXIT_WAIT, EXIT_NOT_FOUND = 0, 1, 2, 3, 4
EXIT_BUSY = 5  # the node's queue is full: the order was not taken


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_INPUT):
        super().__init__(message)
        self.code = code


def _config(args: argparse.Namespace) -> Any:
    from galaxy_fleet.config import ConfigError, load

    try:
        return load(args.config)
    except ConfigError as exc:
        raise CliError(f"config: {exc}") from None


def _emit(args: argparse.Namespace, obj: Any, text: str) -> None:
    print(json.dumps(obj, ensure_ascii=False) if args.json else text)


def _node(args: argparse.Namespace) -> Any:
    from galaxy_fleet.node.api import Node

    return Node(_config(args))


def _state_exit(status: dict[str, Any]) -> int:
    from galaxy_fleet.order import DONE

    return EXIT_OK if status.get("state") == DONE else EXIT_NOT_DONE


# -- galaxy version ---------------------------------------------------------
def cmd_version(args: argparse.Namespace) -> int:
    from galaxy_fleet import __version__

    _emit(args, {"version": __version__}, f"galaxy {__version__}")
    return EXIT_OK


# -- galaxy worker ----------------------------------------------------------
def cmd_worker(args: argparse.Namespace) -> int:
    import logging

    from galaxy_fleet.node.worker import Worker

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    return Worker(_config(args), runners=args.runners).serve_forever()


# -- galaxy order ... -------------------------------------------------------
def _read_payload(text: str) -> str:
    if text == "-":
        data = sys.stdin.buffer.read()
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CliError(f"payload on stdin is not valid UTF-8 (byte {exc.start})") from None
    return text


def _parse_options(pairs: list[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--option expects KEY=VALUE, got {pair!r}")
        options[key] = {"true": True, "false": False}.get(value, value)
    return options


def _print_status(args: argparse.Namespace, status: dict[str, Any]) -> None:
    if args.json:
        print(json.dumps(status, ensure_ascii=False))
        return
    if "response" in status:
        print(status["response"].rstrip())
    else:
        extra = f" ({status['error']})" if status.get("error") else ""
        print(f"{status.get('id')}: {status.get('state')}{extra}")


def cmd_order_submit(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.api import Busy, new_order
    from galaxy_fleet.order import QUEUED, OrderError

    node = _node(args)
    fields = {
        "from": args.sender,
        "target": args.target or node.config.host,
        "executor": args.executor,
        "timeout": args.timeout,
        "session": args.session,
        "priority": args.priority,
        "command": args.command,
        "options": _parse_options(args.option) or None,
    }
    if args.id:
        fields["id"] = args.id
    try:
        order = node.submit(new_order(_read_payload(args.payload), fields))
    except OrderError as exc:
        raise CliError(f"order rejected: {exc}") from None
    except Busy as exc:
        raise CliError(f"order not queued: {exc}", EXIT_BUSY) from None
    except OSError as exc:  # a full disk, a read-only spool, ...
        raise CliError(f"order not queued: {exc.strerror or exc}", EXIT_NOT_DONE) from None
    if not args.wait:
        _emit(args, {"id": order.id, "state": QUEUED}, order.id)
        return EXIT_OK
    return _wait(args, node, order.id)


def _wait(args: argparse.Namespace, node: Any, order_id: str) -> int:
    from galaxy_fleet.node.api import NotFound

    try:
        status = node.wait(order_id, timeout=args.wait_timeout)
    except TimeoutError as exc:
        raise CliError(str(exc), EXIT_WAIT) from None
    except NotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    _print_status(args, status)
    return _state_exit(status)


def cmd_order_wait(args: argparse.Namespace) -> int:
    return _wait(args, _node(args), _checked_id(args.order_id))


def _checked_id(order_id: str) -> str:
    from galaxy_fleet.order import OrderError, check_name

    try:
        return check_name("order id", order_id)
    except OrderError as exc:
        raise CliError(str(exc)) from None


def cmd_order_status(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.api import NotFound

    try:
        status = _node(args).status(_checked_id(args.order_id), with_response=args.response)
    except NotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    _print_status(args, status)
    return EXIT_OK


def cmd_order_list(args: argparse.Namespace) -> int:
    orders = _node(args).list(limit=args.limit, state=args.state)
    if args.json:
        print(json.dumps(orders, ensure_ascii=False))
    else:
        for st in orders:
            print(f"{st.get('id')}  {st.get('state', '?'):<11} {st.get('updated', '')}  {st.get('error') or ''}")
    return EXIT_OK


def cmd_order_cancel(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.api import NotFound

    try:
        status = _node(args).cancel(_checked_id(args.order_id), user=args.sender)
    except NotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    _print_status(args, status)
    from galaxy_fleet.order import STOPPED

    return EXIT_OK if status.get("state") in STOPPED else EXIT_NOT_DONE


def cmd_order_permission(args: argparse.Namespace) -> int:
    """Answer a running order's permission prompt, or list the prompts waiting."""
    from galaxy_fleet.node.permissions import PromptError, PromptNotFound, Prompts

    node = _node(args)
    order_id = _checked_id(args.order_id)
    if args.permission_id is None or args.answer is None:
        if args.permission_id is not None:
            raise CliError("give the answer too: once, always or deny")
        try:
            waiting = Prompts(node.config.spool_dir).pending(order_id)
        except PromptError as exc:
            raise CliError(str(exc)) from None
        if args.json:
            print(json.dumps(waiting, ensure_ascii=False))
        else:
            for p in waiting:
                print(f"{p.get('permission')}  {p.get('tool')}  {p.get('detail')}")
        return EXIT_OK
    if not args.sender:
        raise CliError("--from is required: the audit trail records who answered")
    try:
        decision = node.answer_permission(order_id, args.permission_id, args.answer, args.sender)
    except PromptNotFound as exc:
        raise CliError(str(exc), EXIT_NOT_FOUND) from None
    except PromptError as exc:
        raise CliError(str(exc), EXIT_NOT_DONE) from None
    _emit(args, decision, f"{decision['permission']}: {decision['answer']} by {decision['by']}")
    return EXIT_OK


# -- galaxy audit -----------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    """On the control node (a ``control.store`` exists) the whole fleet's trail; elsewhere,
    or with --local/--file/--verify/--sum-cost/--after, this host's own log."""
    from galaxy_fleet import audit

    if args.file:
        if args.completeness:
            raise CliError("--completeness reads the control node's store, not a file")
        return audit.run(args, None)
    config = _config(args)
    store = config.control.store
    own_log_only = args.local or args.verify or args.sum_cost or args.after is not None
    # The store is the control account's: for the node's account (on a host that is both) it is not there.
    if store and not own_log_only and os.access(store, os.R_OK):
        from galaxy_fleet.control import central

        return central.run(args, str(store))
    if args.completeness:
        raise CliError("--completeness needs the control node's store (control.store in the config)")
    return audit.run(args, config)


# -- galaxy health ----------------------------------------------------------
def cmd_health(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.health import main_health

    return main_health(_config(args), as_json=args.json, record_run=not args.no_record)


# -- galaxy cleanup ----------------------------------------------------------------
def cmd_cleanup(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.retention import cleanup

    overrides = {
        k: v
        for k, v in (
            ("orders_days", args.orders_days),
            ("audit_days", args.audit_days),
            ("quarantine_days", args.quarantine_days),
        )
        if v is not None
    }
    try:
        report = cleanup(_config(args), dry_run=args.dry_run, overrides=overrides)
    except ValueError as exc:
        raise CliError(f"config: {exc}") from None
    r = report["removed"]
    _emit(
        args,
        report,
        f"{'would remove' if args.dry_run else 'removed'} {r['orders']} finished orders, "
        f"{r['quarantine']} quarantined files, {r['audit_segments']} audit segments "
        f"({r['bytes']} bytes)",
    )
    return EXIT_OK


# -- galaxy remote ------------------------------------------------------------
def cmd_remote(args: argparse.Namespace) -> int:
    from galaxy_fleet.node.remote import main as remote_main

    return remote_main(_config(args))


# -- galaxy send (control node) ---------------------------------------------------
def cmd_send(args: argparse.Namespace) -> int:
    import time

    from galaxy_fleet.control.fleet import Fleet, FleetEvent, TargetError
    from galaxy_fleet.control.inventory import InventoryError
    from galaxy_fleet.control.policy import EntryPolicy, Gate, Refused
    from galaxy_fleet.order import DONE, RUNNING

    config = _config(args)
    if args.inventory:
        config.control.inventory = args.inventory
    try:
        policy = EntryPolicy.from_config(config, "send")
        fleet = Fleet(config, passive=True)
        gate = Gate(fleet, policy, policy.caller())
        names = fleet.resolve(args.target)
    except (TargetError, InventoryError) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"config: {exc}") from None
    payload = _read_payload(" ".join(args.text))
    mine: set[str] = set()
    t0 = time.monotonic()

    def show(ev: FleetEvent) -> None:
        rec = ev.record
        if args.json or args.quiet or rec is None or rec.id not in mine:
            return
        line = f"[{time.monotonic() - t0:6.1f}s] {rec.host}: {rec.state}"
        if rec.progress and rec.state == RUNNING:
            line += f" - {rec.progress[:100]}"
        print(line, file=sys.stderr, flush=True)

    fleet.subscribe(show)
    fleet.start()
    try:
        fleet.wait_connected(fleet.settings.connect_timeout, names)
        try:
            records = gate.submit(
                args.target,
                payload,
                executor=args.executor,
                options=_parse_options(args.option) or None,
                timeout=args.timeout,
            )
        except Refused as exc:
            raise CliError(f"refused: {exc}") from None
        mine.update(r.id for r in records)
        final = fleet.wait([r.id for r in records], timeout=args.wait_timeout)
    finally:
        fleet.stop()
    if args.json:
        print(json.dumps([r.to_dict() for r in final], ensure_ascii=False, default=str))
    else:
        for rec in final:
            # the answer as the node sent it (a field, not its Markdown document), under a
            # header line when there are several or the order did not end done
            if len(final) > 1 or rec.state != DONE:
                print(f"=== {rec.host}: {rec.state}" + (f": {rec.error}" if rec.error and rec.state != DONE else ""))
            if rec.answer:
                print(rec.answer.rstrip("\n"))
    busy = [r.host for r in final if r.details.get("busy")]
    if busy:
        print(f"refused, queue full (try again later): {', '.join(busy)}", file=sys.stderr)
    if any(not r.terminal for r in final):
        return EXIT_WAIT
    return EXIT_OK if all(r.state == DONE for r in final) else EXIT_NOT_DONE


# -- galaxy bot ------------------------------------------------------------------
def cmd_bot(args: argparse.Namespace) -> int:
    from galaxy_fleet.bot import cli as bot

    return bot.run(args, _config(args))


# -- galaxy dashboard ------------------------------------------------------------
def cmd_dashboard(args: argparse.Namespace) -> int:
    from galaxy_fleet import dashboard

    return dashboard.run(args, _config(args))


# -- galaxy mcp ----------------------------------------------------------------
def cmd_mcp(args: argparse.Namespace) -> int:
    from galaxy_fleet.control.mcp import run

    return run(args, _config(args))


# -- galaxy config check ----------------------------------------------------
def cmd_config_check(args: argparse.Namespace) -> int:
    """Every section through the one loader (the control node's too, so a typo fails at
    deploy time, not at service start), then every executor built as the worker builds it.
    All the problems are reported, each with its key's path."""
    from galaxy_fleet.config import ConfigError, load
    from galaxy_fleet.node.executors import ExecutorError, build

    errors: list[str] = []
    try:
        cfg = load(args.path)
    except ConfigError as exc:
        errors = exc.errors
    else:
        for name, spec in cfg.executors.items():
            try:
                build(name, spec, cfg)
            except ExecutorError as exc:
                errors.append(f"{args.path}: executors.{name}: {exc}")
    if errors:
        if args.json:
            print(json.dumps({"ok": False, "path": str(args.path), "errors": errors}, ensure_ascii=False))
        raise CliError("invalid config: " + "".join(f"\n  {e}" for e in errors))
    _emit(
        args,
        {"ok": True, "path": str(args.path), "host": cfg.host},
        f"{args.path}: OK (host {cfg.host}, {len(cfg.executors)} executors)",
    )
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="galaxy", description="Galaxy: run a fleet of machines from a phone.")
    parser.add_argument(
        "--config", metavar="PATH", help="config file (default: $GALAXY_CONFIG or /etc/galaxy/config.yml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more logging")
    sub = parser.add_subparsers(dest="cmd", metavar="COMMAND", required=True)

    def add(
        parent: Any, name: str, func: Callable[[argparse.Namespace], int], help: str, json_flag: bool = True
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if json_flag:
            p.add_argument("--json", action="store_true", help="machine-readable output")
        return p

    add(sub, "version", cmd_version, "print the version")
    p = add(sub, "worker", cmd_worker, "run the order worker (the galaxy-worker service)", json_flag=False)
    p.add_argument("--runners", type=int, help="concurrent orders (default: worker.runners in the config)")

    order = sub.add_parser("order", help="submit and follow orders on this node").add_subparsers(
        dest="order_cmd", metavar="ACTION", required=True
    )
    p = add(order, "submit", cmd_order_submit, "queue an order on this node")
    p.add_argument("payload", help="the order text, or - to read it from stdin")
    p.add_argument("--target", help="target name recorded in the order (default: this host)")
    p.add_argument("--executor", help="executor name (default: worker.default_executor)")
    p.add_argument("--timeout", type=float, help="seconds before the order is stopped")
    p.add_argument("--session", help="session key (continue an agent session)")
    p.add_argument("--priority", type=int, help="-100..100, higher runs first (default 0)")
    p.add_argument("--from", dest="sender", help="who sent it (recorded in the audit trail)")
    p.add_argument("--command", help="the order's command field (default: general)")
    p.add_argument("--id", help="order id (default: a new time-sortable id)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="executor option, e.g. agent=build, project=web (repeatable)",
    )
    p.add_argument("--wait", action="store_true", help="wait for the answer and print it")
    p.add_argument("--wait-timeout", type=float, help="give up waiting after this many seconds (exit 3)")
    p = add(order, "wait", cmd_order_wait, "wait for an order to finish and print its answer")
    p.add_argument("order_id")
    p.add_argument("--wait-timeout", type=float, help="give up after this many seconds (exit 3)")
    p = add(order, "status", cmd_order_status, "show an order's state")
    p.add_argument("order_id")
    p.add_argument("--response", action="store_true", help="include the answer when finished")
    p = add(order, "list", cmd_order_list, "recent orders, newest first")
    p.add_argument("--limit", type=int, default=20)
    p.add_argument("--state", help="only orders in this state")
    p = add(order, "cancel", cmd_order_cancel, "cancel a queued or running order")
    p.add_argument("order_id")
    p.add_argument("--from", dest="sender", help="who cancels it (recorded in the audit trail)")
    p = add(
        order,
        "permission",
        cmd_order_permission,
        "answer a running order's permission prompt (without an answer: list the prompts waiting)",
    )
    p.add_argument("order_id")
    p.add_argument("permission_id", nargs="?")
    p.add_argument("answer", nargs="?", choices=("once", "always", "deny"))
    p.add_argument("--from", dest="sender", help="who answers (recorded in the audit trail)")

    from galaxy_fleet import audit

    p = add(sub, "audit", cmd_audit, "query and verify the audit trail", json_flag=False)
    audit.add_arguments(p)
    p.add_argument(
        "--local", action="store_true", help="on the control node: this host's own log instead of the fleet's trail"
    )
    p.add_argument(
        "--completeness",
        action="store_true",
        help="control node: prove every order in the window (--since/--until) has a complete life cycle",
    )

    p = add(sub, "health", cmd_health, "check this node's health (exit 0 only when healthy)")
    p.add_argument("--no-record", action="store_true", help="do not write an audit event or alerts")

    p = add(sub, "cleanup", cmd_cleanup, "remove finished orders and old audit segments past their retention")
    p.add_argument("--dry-run", action="store_true", help="only count what would go")
    p.add_argument("--orders-days", type=float, help="override retention.orders_days")
    p.add_argument("--quarantine-days", type=float, help="override retention.quarantine_days")
    p.add_argument("--audit-days", type=float, help="override retention.audit_days")

    add(
        sub,
        "remote",
        cmd_remote,
        "speak the node protocol on stdin/stdout (the routing key's forced command)",
        json_flag=False,
    )

    p = add(sub, "send", cmd_send, "send an order to fleet nodes and print the answers (control node)")
    p.add_argument("target", help="a node, a group, all, or several joined by commas")
    p.add_argument("text", nargs="+", help="the order text (- reads stdin)")
    p.add_argument("--inventory", help="inventory file (default: control.inventory in the config)")
    p.add_argument("--executor", help="executor name on the nodes")
    p.add_argument("--timeout", type=float, help="order timeout in seconds")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="executor option")
    p.add_argument("--wait-timeout", type=float, help="stop waiting after this many seconds (exit 3)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines")

    from galaxy_fleet import bot

    p = add(sub, "bot", cmd_bot, "run the Telegram bot (the galaxy-bot service, control node)", json_flag=False)
    bot.add_arguments(p)

    from galaxy_fleet import dashboard

    p = add(
        sub,
        "dashboard",
        cmd_dashboard,
        "serve the web dashboard (the galaxy-dashboard service, control node)",
        json_flag=False,
    )
    dashboard.add_arguments(p)

    add(sub, "mcp", cmd_mcp, "serve the fleet as MCP tools on stdio (for AI agents)", json_flag=False)

    cfg = sub.add_parser("config", help="configuration tools").add_subparsers(
        dest="config_cmd", metavar="ACTION", required=True
    )
    p = add(cfg, "check", cmd_config_check, "validate a config file (exit 2 if invalid)")
    p.add_argument("path")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CliError as exc:
        print(f"galaxy: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
