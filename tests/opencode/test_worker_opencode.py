"""A real `galaxy worker` running orders through the opencode executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from nodeenv import NodeEnv
from support.llm_server import ScriptedLLM, Text, ToolCall
from support.opencode_server import OpenCodeServer


@pytest.fixture
def node(tmp_path: Path, opencode: OpenCodeServer):
    web = tmp_path / "web"
    web.mkdir()
    env = NodeEnv(tmp_path, worker={"default_executor": "opencode"},
                  executors={"opencode": {"type": "opencode", "url": opencode.url, "progress_interval": 0.1}},
                  projects={"web": str(web)})
    env.web = web
    yield env
    env.stop_workers()


def test_worker_runs_an_opencode_order_with_session_project_and_figures(node, llm: ScriptedLLM):
    node.start_worker()
    llm.script(ToolCall("write", {"filePath": str(node.web / "TODO.md"), "content": "- ship it\n"}),
               Text("Created TODO.md.", prompt_tokens=200, completion_tokens=50),
               Text("It says: ship it."))
    first = json.loads(node.galaxy("order", "submit", "--json", "--wait", "--from", "alice",
                                   "--session", "chat9-web1", "--option", "project=web",
                                   "Write a TODO file", check=True, timeout=180).stdout)
    assert first["state"] == "done", first
    assert (node.web / "TODO.md").read_text() == "- ship it\n"
    side = node.sidecar(first["id"])
    d = side["details"]
    assert d["session_key"] == "chat9-web1" and d["directory"] == str(node.web)
    assert d["tools"] == ["write"] and d["model"] == "scripted/echo" and d["agent"] == "build"
    assert d["tokens_in"] == 13 + 200 and d["tokens_out"] == 5 + 50
    md = (node.spool / "responses" / f"{first['id']}.md").read_text()
    assert "Created TODO.md." in md

    second = json.loads(node.galaxy("order", "submit", "--json", "--wait", "--session", "chat9-web1",
                                    "--option", "project=web", "What does it say?",
                                    check=True, timeout=180).stdout)
    assert second["state"] == "done", second
    d2 = node.sidecar(second["id"])["details"]
    assert d2["opencode_session"] == d["opencode_session"] and d2["session_new"] is False

    done = [e for e in node.audit_events(first["id"]) if e["type"] == "order_done"][0]
    assert (done["tokens_in"], done["tokens_out"], done["model"]) == (213, 55, "scripted/echo")
    assert any(e["type"] == "order_progress" for e in node.audit_events(first["id"]))
    rows = [json.loads(line) for line in node.galaxy("audit", "--sum-cost", "node", "--json",
                                                     check=True).stdout.splitlines()]
    total = {k: sum(r[k] for r in rows) for k in ("orders", "tokens_in", "tokens_out")}
    assert total == {"orders": 2, "tokens_in": 213 + 11, "tokens_out": 55 + 7}
    assert abs(sum(r["cost"] for r in rows) - (d["cost"] + d2["cost"])) < 1e-9


def test_worker_reports_a_dead_opencode_as_a_failed_order(tmp_path: Path):
    from support.opencode_server import free_port

    env = NodeEnv(tmp_path, worker={"default_executor": "opencode"},
                  executors={"opencode": {"type": "opencode", "url": f"http://127.0.0.1:{free_port()}"}})
    try:
        env.start_worker()
        out = json.loads(env.galaxy("order", "submit", "--json", "--wait", "hello", timeout=60).stdout)
        assert out["state"] == "failed"
        side = env.sidecar(out["id"])
        assert "is not reachable (connection refused)" in side["error"]
        alerts = env.outbox()
        assert [a["kind"] for a in alerts] == ["order_failed"]
        assert "is not reachable" in alerts[0]["message"]
    finally:
        env.stop_workers()
