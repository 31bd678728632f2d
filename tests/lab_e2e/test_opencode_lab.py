"""An order from the control side reaches a real opencode serve on a lab node:
answer, progress, tokens and cost come back; the session continues."""

from __future__ import annotations

import json

from e2e import poll
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


def test_a_permission_prompt_reaches_the_control_node_and_its_answer_the_agent(e2e):
    # The deployed opencode asks before bash: the prompt streams to the control
    # node as an event, the answer goes back over the same SSH link.
    e2e.llm.reset()
    e2e.llm.script(ToolCall("bash", {"command": "echo allowed > lab-perm.txt", "description": "Write"}),
                   Text("Written after approval."))
    rec = e2e.fleet.submit("web1", "Write lab-perm.txt", sender="e2e", chat_id=4243,
                           options={"interactive": True})[0]
    asked = poll(lambda: e2e.fleet.audit("web1", type="permission_asked", order_id=rec.id), 120,
                 "the permission prompt at the control node")[0]
    assert (asked["tool"], asked["detail"], asked["user"]) == ("bash", "echo allowed > lab-perm.txt", "e2e")
    reply = e2e.fleet.router.request("web1", "permission", order=rec.id, permission=asked["permission"],
                                     answer="once", by="e2e")
    assert reply["answer"] == "once"
    done = e2e.fleet.wait([rec.id], timeout=120)[0]
    assert done.state == "done", (done.state, done.error)
    assert e2e.must("web1", "cat /var/lib/galaxy-opencode/work/lab-perm.txt") == "allowed\n"
    answered = poll(lambda: e2e.fleet.audit("web1", type="permission_answered", order_id=rec.id), 30,
                    "the decision at the control node")
    assert [(e["answer"], e["by"]) for e in answered] == [("once", "e2e")]

    # The same request without a chat: nobody can answer, the node's policy denies at once.
    e2e.llm.script(ToolCall("bash", {"command": "echo denied > lab-denied.txt", "description": "Write"}),
                   Text("I was not allowed."))
    headless = e2e.order("web1", "Write lab-denied.txt", timeout=120)
    assert headless.state == "done", (headless.state, headless.error)
    assert "Permission prompts denied:" in (headless.response or "")
    assert e2e.ssh("web1", "test -e /var/lib/galaxy-opencode/work/lab-denied.txt").returncode != 0
    decided = e2e.fleet.audit("web1", type="permission_answered", order_id=headless.id)
    assert [(e["answer"], e["by"]) for e in decided] == [("deny", "policy")]
