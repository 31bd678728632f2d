"""The control side: what drives the fleet from the control node.

``inventory`` (hosts and groups), ``router`` (one SSH link per node),
``fleet`` (submit, fan-out, events, policy), ``store`` (SQLite),
``central`` (the fleet-wide audit trail) and ``mcp`` (the fleet as MCP tools).
"""
