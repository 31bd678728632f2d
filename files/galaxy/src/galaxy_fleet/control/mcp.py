"""`galaxy mcp`: the fleet as Model Context Protocol tools, over stdio.

An agent (opencode, Claude, ...) that has this server configured can list the
machines, send an order and wait for its answer, follow an order, check fleet
health and query the central audit trail. It is a passive control client (like
`galaxy send`): alerts and the audit stream's cursor stay with the bot.

It acts as one caller, ``mcp:<identity>``, under the ``mcp:`` section of the
config (control/policy.py): the machines it may order and see, the executors
it may name, its rate, and dangerous orders refused (nobody can confirm them).
"""

from __future__ import annotations

import argparse
from typing import Any

from galaxy_fleet.config import Config
from galaxy_fleet.control.policy import EntryPolicy, Gate, Refused


def _brief(rec: Any) -> dict[str, Any]:
    return {
        "order_id": rec.id,
        "host": rec.host,
        "state": rec.state,
        "error": rec.error,
        "answer": rec.answer,
        "progress": rec.progress,
        "tokens_in": rec.details.get("tokens_in"),
        "tokens_out": rec.details.get("tokens_out"),
        "cost": rec.details.get("cost"),
        "busy": bool(rec.details.get("busy")),
    }


def build_server(fleet: Any, gate: Gate) -> Any:
    import anyio
    from mcp.server.mcpserver import MCPServer
    from mcp.server.mcpserver.exceptions import ToolError

    from galaxy_fleet import __version__

    server = MCPServer(
        "galaxy",
        version=__version__,
        instructions="Tools to run orders on the Galaxy fleet and inspect its health and audit trail.",
    )

    async def blocking(fn: Any, *args: Any, **kw: Any) -> Any:
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kw))

    @server.tool()
    async def list_machines() -> list[dict[str, Any]]:
        """The fleet's machines: name, address, groups, connected, healthy, running and queued orders."""
        machines = await blocking(fleet.machines)
        names = gate.visible([m["name"] for m in machines])
        return [m for m in machines if m["name"] in names]

    def scope(target: str | None) -> str | None:
        """The hosts a query may cover: the target's, within what this caller may see."""
        if target is None and gate.caller.limits.targets is None:
            return None  # the whole fleet, the control node's own events included
        hosts = gate.visible(fleet.resolve(target) if target else list(fleet.inventory.hosts))
        if not hosts:
            raise ToolError(f"{gate.caller.identity} may not see {target or 'any machine'}")
        return ",".join(hosts)

    @server.tool()
    async def send_order(
        target: str, text: str, executor: str | None = None, wait_seconds: float = 600.0
    ) -> list[dict[str, Any]]:
        """Send an order to a machine, a group or "all" and wait for the answers (one per machine).

        Orders still running after wait_seconds are returned with their current state;
        follow them with order_status.
        """
        try:
            recs = await blocking(gate.submit, target, text, executor=executor)
        except Refused as exc:
            raise ToolError(f"refused: {exc}") from None
        done = await blocking(fleet.wait, [r.id for r in recs], wait_seconds)
        return [_brief(r) for r in done]

    @server.tool()
    async def order_status(order_id: str) -> dict[str, Any]:
        """An order's state, latest progress line and, once finished, its answer."""
        rec = await blocking(fleet.order, order_id)
        if rec is None or not gate.visible([rec.host]):
            raise ToolError(f"no order {order_id!r}")
        return _brief(rec)

    @server.tool()
    async def fleet_health(target: str | None = None) -> dict[str, Any]:
        """Run the health checks on the fleet (or a machine/group) now; host -> report."""
        return await blocking(fleet.health, scope(target))

    @server.tool()
    async def query_audit(
        target: str | None = None,
        severity: str | None = None,
        type: str | None = None,
        order_id: str | None = None,
        since: str | None = None,
        limit: int = 50,
    ) -> list[dict[str, Any]]:
        """Events of the fleet's audit trail, newest last (filters as `galaxy audit`)."""
        return await blocking(
            fleet.audit,
            scope(target),
            severity=severity,
            type=type,
            order_id=order_id,
            since=since,
            limit=min(max(1, limit), 1000),
        )

    return server


def run(args: argparse.Namespace, config: Config) -> int:
    import logging
    import sys

    from galaxy_fleet.control.fleet import Fleet

    # stdout is the protocol: logs go to stderr only
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    policy = EntryPolicy.from_config(config, "mcp")
    fleet = Fleet(config, passive=True)
    fleet.start()
    try:
        build_server(fleet, Gate(fleet, policy, policy.caller())).run("stdio")
    finally:
        fleet.stop()
    return 0
