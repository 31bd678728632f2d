"""An order from the control side reaches a real opencode serve on a lab node:
answer, progress, tokens and cost come back; the session continues."""

from __future__ import annotations

import json

from support.llm_server import Text, ToolCall, message_text


def test_opencode_serve_is_deployed_private_and_offline(e2e):
    for node in ("web1", "web2"):
        state = e2e.must(node, "systemctl is-active opencode-serve galaxy-worker").split()
        assert state == ["active", "active"], (node, state)
        perms = e2e.must(node, "stat -c '%U:%G %a' /etc/galaxy/opencode-password").strip()
        assert perms == "root:root 600", perms
        # Bound to loopback only, and it wants the password.
        listen = [line.split()[3] for line in e2e.must(node, "ss -Hltn 'sport = :4096'").splitlines()]
        assert listen == ["127.0.0.1:4096"], listen
        code = e2e.must(node, "python3 -c \"import urllib.request,urllib.error\n"
                              "try: urllib.request.urlopen('http://127.0.0.1:4096/global/health', timeout=5)\n"
                              "except urllib.error.HTTPError as e: print(e.code)\"").strip()
        assert code == "401", code
        # The password never shows on a command line or in the journal.
        secret = e2e.must(node, "cat /etc/galaxy/opencode-password").strip()
        assert len(secret) >= 32
        cmdlines = e2e.must(node, "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; true")
        journal = e2e.must(node, "journalctl --no-pager -o cat 2>/dev/null; true")
        assert secret not in cmdlines and secret not in journal
        config = json.loads(e2e.must(node, "cat /var/lib/galaxy-opencode/.config/opencode/opencode.json"))
        assert config["enabled_providers"] == ["scripted"]
        assert config["permission"] == {"*": "allow", "bash": "ask", "external_directory": "ask"}
        node_cfg = e2e.must(node, "cat /etc/galaxy/config.yml")
        assert "default_executor: opencode" in node_cfg


def test_an_order_reaches_opencode_on_a_node_and_its_answer_progress_and_cost_come_back(e2e):
    e2e.llm.reset()
    e2e.llm.script(ToolCall("write", {"filePath": "/var/lib/galaxy-opencode/work/lab-note.txt",
                                      "content": "written by the agent on web1\n"}),
                   Text("The note is written.\nIt says who wrote it.", chunks=4, delay=0.3))
    rec = e2e.order("web1", "Write a note in lab-note.txt", chat_id=4242, timeout=120)
    assert rec.state == "done", (rec.state, rec.error)
    assert "The note is written." in (rec.response or "")
    details = rec.details
    assert details.get("cost", 0) > 0 and details.get("tokens_in", 0) > 0 and details.get("tokens_out", 0) > 0
    assert details.get("model") and "echo" in details["model"]
    assert details.get("tools") == ["write"] or "write" in (details.get("tools") or [])
    # Progress came back over the event stream, before the answer (the worker
    # audits at most one progress line per interval, so which lines varies).
    events = sorted(e2e.fleet.audit("web1", order_id=rec.id), key=lambda e: e["seq"])
    kinds = [e.get("type") for e in events]
    progress = [e.get("message", "") for e in events if e.get("type") == "order_progress"]
    assert progress and kinds.index("order_progress") < kinds.index("order_done"), kinds
    assert any(p.startswith(("[tool] write", "[text] ", "new opencode session")) for p in progress), progress
    assert e2e.must("web1", "cat /var/lib/galaxy-opencode/work/lab-note.txt") == "written by the agent on web1\n"
    # The model saw the order's text, fetched by opencode on web1 over the lab network.
    assert any("Write a note in lab-note.txt" in message_text(m) for c in e2e.llm.chats for m in c["messages"])

    # Same chat, same node: the session continues (the model sees the first turn).
    e2e.llm.script(Text("Yes, I remember the note."))
    again = e2e.order("web1", "Do you remember?", chat_id=4242, timeout=120)
    assert again.state == "done", (again.state, again.error)
    assert "Yes, I remember the note." in again.response
    assert again.details.get("opencode_session") == details.get("opencode_session")
    history = " ".join(message_text(m) for m in e2e.llm.chats[-1]["messages"])
    assert "Write a note in lab-note.txt" in history and "Do you remember?" in history
