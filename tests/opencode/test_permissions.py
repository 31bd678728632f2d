"""Agent permission prompts: a real `galaxy worker`, a real `opencode serve` whose
config asks before ``bash`` and edits outside the project, and the scripted LLM
calling ``bash``. The prompt is an audit event; answers come through
`galaxy order permission` and `galaxy remote`; every decision is audited."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from galaxy_fleet.config import Config
from galaxy_fleet.node import executors
from galaxy_fleet.node.executors import ExecutorError
from nodeenv import GALAXY, NodeEnv, wait_for
from support.llm_server import ScriptedLLM, Text, ToolCall
from support.opencode_server import OpenCodeServer

ASK = {"*": "allow", "bash": "ask", "external_directory": "ask"}


@pytest.fixture(scope="module")
def asking(llm_server: ScriptedLLM) -> Iterator[OpenCodeServer]:
    with OpenCodeServer(llm_server.url, permission=ASK) as server:
        yield server


def _node(tmp_path: Path, server: OpenCodeServer, **spec: Any) -> NodeEnv:
    web = tmp_path / "web"
    web.mkdir()
    env = NodeEnv(tmp_path, worker={"default_executor": "opencode"},
                  executors={"opencode": {"type": "opencode", "url": server.url, "progress_interval": 0.1, **spec}},
                  projects={"web": str(web)})
    env.web = web  # type: ignore[attr-defined]
    return env


@pytest.fixture
def node(tmp_path: Path, asking: OpenCodeServer) -> Iterator[NodeEnv]:
    env = _node(tmp_path, asking)
    yield env
    env.stop_workers()


def _submit(env: NodeEnv, payload: str, *, interactive: bool = True, sender: str = "alice") -> str:
    args = ["--from", sender, "--option", "project=web"]
    if interactive:
        args += ["--option", "interactive=true"]
    return env.submit(payload, *args)


def _events(env: NodeEnv, order_id: str, kind: str) -> list[dict[str, Any]]:
    return [e for e in env.audit_events(order_id) if e["type"] == kind]


def _asked(env: NodeEnv, order_id: str, count: int = 1) -> list[dict[str, Any]]:
    return wait_for(lambda: len(_events(env, order_id, "permission_asked")) >= count
                    and _events(env, order_id, "permission_asked"), 60, what="a permission prompt")


def _tool_results(llm: ScriptedLLM) -> list[str]:
    """What opencode told the model about its tool calls."""
    return [str(m.get("content")) for chat in llm.chats for m in chat["messages"] if m.get("role") == "tool"]


def test_prompt_answered_once_runs_the_command(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    llm.script(ToolCall("bash", {"command": "echo ran > ran.txt", "description": "Write ran.txt"}),
               Text("I wrote ran.txt."))
    oid = _submit(node, "Write ran.txt with bash")
    asked = _asked(node, oid)[0]
    assert (asked["tool"], asked["detail"], asked["user"], asked["interactive"]) == (
        "bash", "echo ran > ran.txt", "alice", True)
    assert asked["timeout"] == 300
    assert not (node.web / "ran.txt").exists()  # it waits for the answer
    listed = json.loads(node.galaxy("order", "permission", "--json", oid, check=True).stdout)
    assert [p["permission"] for p in listed] == [asked["permission"]]

    out = node.galaxy("order", "permission", "--json", oid, asked["permission"], "once", "--from", "alice",
                      check=True)
    assert json.loads(out.stdout)["answer"] == "once"
    side = node.wait_done(oid, 60)
    assert side["state"] == "done", side
    assert (node.web / "ran.txt").read_text() == "ran\n"
    answered = _events(node, oid, "permission_answered")
    assert [(e["answer"], e["by"], e["user"], e["permission"], e["auto"]) for e in answered] == [
        ("once", "alice", "alice", asked["permission"], False)]
    assert side["details"]["permissions"][0]["answer"] == "once"
    assert "Permission prompts denied" not in (node.spool / "responses" / f"{oid}.md").read_text()
    # The prompt is gone once the order ended: a late answer finds nothing.
    late = node.galaxy("order", "permission", oid, asked["permission"], "deny", "--from", "alice")
    assert late.returncode != 0 and "no permission prompt" in late.stderr
    assert _events(node, oid, "permission_answer_refused")[0]["user"] == "alice"


class _Remote:
    """`galaxy remote` as the control node drives it: requests in, results and events out."""

    def __init__(self, env: NodeEnv):
        self.proc = subprocess.Popen([*GALAXY, "remote"], env=env.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def send(self, request: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        self.proc.stdin.flush()

    def next(self, match: Any, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.lines.get(timeout=max(0.1, deadline - time.monotonic()))
            if match(msg):
                return msg

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_prompt_relayed_and_denied_through_galaxy_remote(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    remote = _Remote(node)
    try:
        remote.send({"id": 1, "op": "subscribe"})
        remote.next(lambda m: m.get("type") == "result" and m["id"] == 1)
        llm.script(ToolCall("bash", {"command": "touch denied.txt", "description": "Touch"}),
                   Text("I was not allowed to touch it."))
        oid = _submit(node, "Touch denied.txt")
        # The prompt reaches the subscriber as an event of the stream.
        asked = remote.next(lambda m: m.get("type") == "event" and m["event"]["type"] == "permission_asked")["event"]
        assert (asked["order_id"], asked["tool"], asked["detail"]) == (oid, "bash", "touch denied.txt")
        base = {"op": "permission", "order": oid, "permission": asked["permission"]}
        remote.send({"id": 2, **base, "answer": "maybe", "by": "bob"})
        bad = remote.next(lambda m: m.get("type") == "result" and m["id"] == 2)
        assert bad["ok"] is False and "once, always, deny" in bad["error"]
        remote.send({"id": 3, **base, "answer": "deny", "by": "bob"})
        good = remote.next(lambda m: m.get("type") == "result" and m["id"] == 3)
        assert good["ok"] is True and good["data"]["answer"] == "deny" and good["data"]["from"] == "alice"
        decided = remote.next(lambda m: m.get("type") == "event" and m["event"]["type"] == "permission_answered")
        assert (decided["event"]["answer"], decided["event"]["by"]) == ("deny", "bob")
        remote.send({"id": 4, **base, "answer": "once", "by": "bob"})
        again = remote.next(lambda m: m.get("type") == "result" and m["id"] == 4)
        assert again["ok"] is False
    finally:
        remote.close()
    side = node.wait_done(oid, 60)
    assert side["state"] == "done", side
    assert not (node.web / "denied.txt").exists()
    # The agent was told, and went on to answer.
    assert any("denied by bob" in text for text in _tool_results(llm))
    md = (node.spool / "responses" / f"{oid}.md").read_text()
    assert "I was not allowed to touch it." in md
    assert "Permission prompts denied:\n- bash `touch denied.txt`: denied by bob" in md
    answered = _events(node, oid, "permission_answered")
    assert [(e["answer"], e["by"], e["severity"]) for e in answered] == [("deny", "bob", "warning")]
    refused = _events(node, oid, "permission_answer_refused")
    assert [(e["user"], e["answer"]) for e in refused] == [("bob", "maybe"), ("bob", "once")]


def test_unanswered_prompt_expires_denied(tmp_path: Path, asking: OpenCodeServer, llm: ScriptedLLM):
    env = _node(tmp_path, asking, permission_timeout=1.5)
    try:
        env.start_worker()
        llm.script(ToolCall("bash", {"command": "touch late.txt", "description": "Touch"}),
                   Text("Nobody answered."))
        oid = _submit(env, "Touch late.txt")
        asked = _asked(env, oid)[0]
        assert asked["timeout"] == 1.5
        side = env.wait_done(oid, 60)
        assert side["state"] == "done", side
        assert not (env.web / "late.txt").exists()
        expired = _events(env, oid, "permission_expired")
        assert [(e["permission"], e["answer"], e["after"]) for e in expired] == [(asked["permission"], "deny", 1.5)]
        assert _events(env, oid, "permission_answered") == []
        assert any("no answer within 1.5 s" in text for text in _tool_results(llm))
        md = (env.spool / "responses" / f"{oid}.md").read_text()
        assert "- bash `touch late.txt`: no answer within 1.5 s" in md
    finally:
        env.stop_workers()


def test_always_allows_the_tool_for_the_rest_of_the_order_only(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    llm.script(ToolCall("bash", {"command": "echo one > one.txt", "description": "One"}),
               ToolCall("bash", {"command": "echo two > two.txt", "description": "Two"}),
               Text("Both written."))
    oid = _submit(node, "Write two files")
    asked = _asked(node, oid)[0]
    node.galaxy("order", "permission", oid, asked["permission"], "always", "--from", "alice", check=True)
    side = node.wait_done(oid, 60)
    assert side["state"] == "done", side
    assert (node.web / "one.txt").exists() and (node.web / "two.txt").exists()
    assert len(_events(node, oid, "permission_asked")) == 1  # the second call was not asked again
    answered = _events(node, oid, "permission_answered")
    assert [(e["answer"], e["by"], e["auto"], e["detail"]) for e in answered] == [
        ("always", "alice", False, "echo one > one.txt"), ("always", "alice", True, "echo two > two.txt")]

    # "always" was never passed on to opencode: the next order asks again.
    llm.script(ToolCall("bash", {"command": "echo three > three.txt", "description": "Three"}), Text("ok"))
    second = _submit(node, "Write a third file")
    asked2 = _asked(node, second)[0]
    node.galaxy("order", "permission", second, asked2["permission"], "deny", "--from", "alice", check=True)
    assert node.wait_done(second, 60)["state"] == "done"
    assert not (node.web / "three.txt").exists()


def test_order_nobody_can_answer_is_denied_at_once(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    llm.script(ToolCall("bash", {"command": "touch headless.txt", "description": "Touch"}),
               Text("Could not run it."))
    oid = _submit(node, "Touch headless.txt", interactive=False)
    side = node.wait_done(oid, 60)
    assert side["state"] == "done", side
    assert not (node.web / "headless.txt").exists()
    asked = _events(node, oid, "permission_asked")
    assert [(e["tool"], e["interactive"], e["timeout"]) for e in asked] == [("bash", False, None)]
    answered = _events(node, oid, "permission_answered")
    assert [(e["answer"], e["by"], e["user"]) for e in answered] == [("deny", "policy", "alice")]
    reason = "nobody can answer prompts of this order; node policy: deny"
    assert answered[0]["reason"] == reason
    md = (node.spool / "responses" / f"{oid}.md").read_text()
    assert f"Permission prompts denied:\n- bash `touch headless.txt`: {reason}" in md
    assert any(reason in text for text in _tool_results(llm))


def test_node_policy_may_allow_prompts_nobody_can_answer(tmp_path: Path, asking: OpenCodeServer,
                                                         llm: ScriptedLLM):
    env = _node(tmp_path, asking, permission_unanswered="allow")
    try:
        env.start_worker()
        llm.script(ToolCall("bash", {"command": "echo ok > allowed.txt", "description": "Write"}), Text("Done."))
        oid = _submit(env, "Write allowed.txt", interactive=False)
        side = env.wait_done(oid, 60)
        assert side["state"] == "done", side
        assert (env.web / "allowed.txt").read_text() == "ok\n"
        answered = _events(env, oid, "permission_answered")
        assert [(e["answer"], e["by"]) for e in answered] == [("once", "policy")]
    finally:
        env.stop_workers()


def test_edit_outside_the_project_asks(node: NodeEnv, llm: ScriptedLLM, tmp_path: Path):
    node.start_worker()
    outside = tmp_path / "outside.txt"
    llm.script(ToolCall("write", {"filePath": str(outside), "content": "x\n"}), Text("Not written."))
    oid = _submit(node, "Write outside the project", interactive=False)
    assert node.wait_done(oid, 60)["state"] == "done"
    assert not outside.exists()
    assert [e["tool"] for e in _events(node, oid, "permission_asked")] == ["external_directory"]


@pytest.mark.parametrize("spec, message", [
    ({"permission_timeout": 0}, "permission_timeout: must be at least 1"),
    ({"permission_timeout": "soon"}, "permission_timeout: expected a number"),
    ({"permission_unanswered": "ask"}, "permission_unanswered: expected deny or allow"),
])
def test_bad_permission_settings_are_refused(spec: dict[str, Any], message: str):
    with pytest.raises(ExecutorError, match=message):
        executors.build("opencode", {"type": "opencode", **spec}, Config())


def test_interactive_must_be_a_boolean(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    oid = node.submit("hello", "--option", "interactive=yes")
    side = node.wait_done(oid, 60)
    assert side["state"] == "failed" and side["error"] == "option 'interactive' must be true or false"


def test_a_prompt_still_waiting_when_the_order_is_cancelled_is_audited(node: NodeEnv, llm: ScriptedLLM):
    node.start_worker()
    llm.script(ToolCall("bash", {"command": "touch slow.txt", "description": "Touch"}), Text("unreached"))
    oid = _submit(node, "Touch slow.txt")
    asked = _asked(node, oid)[0]
    node.galaxy("order", "cancel", oid, "--from", "alice")
    side = node.wait_done(oid, 60)
    assert side["state"] == "cancelled", side
    assert not (node.web / "slow.txt").exists()
    expired = _events(node, oid, "permission_expired")
    assert [(e["permission"], e["message"]) for e in expired] == [
        (asked["permission"], "bash: the order ended before an answer came")]
    late = node.galaxy("order", "permission", oid, asked["permission"], "once", "--from", "alice")
    assert late.returncode != 0 and "is cancelled" in late.stderr


def test_answers_with_bad_ids_are_refused_and_audited(node: NodeEnv):
    bad = node.galaxy("order", "permission", "20260101-x", "../../etc", "once", "--from", "mallory")
    assert bad.returncode != 0 and "permission id" in bad.stderr
    unknown = node.galaxy("order", "permission", "20260101-x", "per_1", "once", "--from", "mallory")
    assert unknown.returncode != 0 and "no order" in unknown.stderr
    refused = [e for e in node.audit_events() if e["type"] == "permission_answer_refused"]
    assert [e["user"] for e in refused] == ["mallory", "mallory"]
    no_from = node.galaxy("order", "permission", "20260101-x", "per_1", "once")
    assert no_from.returncode != 0 and "--from is required" in no_from.stderr
