"""The control side: what drives the fleet from the control node.

``inventory`` (hosts and groups), ``router`` (one SSH link per node, bounded
reads), ``fleet`` (submit, fan-out, events, alerts, the anchored audit stream),
``policy`` (who may order what, where: one set of rules for the bot, MCP and
`galaxy send`), ``store`` (SQLite), ``central`` (the fleet-wide audit trail) and
``mcp`` (the fleet as MCP tools).
"""
