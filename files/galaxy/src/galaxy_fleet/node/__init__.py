"""The node side: what runs on every fleet machine.

``spool`` (the order directories and atomic moves), ``watch`` (inotify),
``worker`` (claim, run), ``answer`` (how an order ends: its answer as data in
the sidecar, the Markdown document, audit, alert, archive), ``executors``
(opencode, command, shell),
``api`` (the node's operations), ``remote`` (``galaxy remote``, the protocol
the control node speaks over SSH), ``health``, ``retention`` and ``outbox``
(alerts waiting for the control node).
"""
