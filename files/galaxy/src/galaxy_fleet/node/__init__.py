"""The node side: what runs on every fleet machine.

``spool`` (the order directories, atomic moves, reads that cannot stall),
``watch`` (inotify), ``worker`` (claim, run, recover), ``answer`` (how an order
ends: its answer as data in the sidecar, the Markdown document, audit, alert,
archive), ``executors`` (opencode, command, shell; ``sandbox``: programs started
as the agent's account), ``permissions`` (an agent's permission prompts and
their answers), ``procgroup`` (an order's processes, killed with it), ``api``
(the node's operations), ``remote`` (``galaxy remote``, the protocol the control
node speaks over SSH), ``health``, ``retention`` and ``outbox`` (alerts waiting
for the control node).
"""
