"""The opencode executor against the real `opencode serve` and a scripted LLM."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from nodeenv import wait_for
from support.executor_harness import Harness
from support.llm_server import Error, Hang, ScriptedLLM, Text, ToolCall, message_text
from support.opencode_server import OpenCodeServer, request

from galaxy_fleet.node.executors import ExecutorError
from galaxy_fleet.order import CANCELLED, DONE, FAILED, TIMED_OUT


def _said(llm: ScriptedLLM, index: int = -1) -> list[str]:
    """The texts of the messages the model saw in one chat request."""
    return [message_text(m) for m in llm.chats[index]["messages"]]


def _mapping(harness) -> dict:
    path = harness.state_dir / "opencode-sessions-opencode.json"
    return json.loads(path.read_text())["sessions"]


def test_answer_with_figures(harness, llm, project):
    llm.script(Text("The answer is 42.", prompt_tokens=120, completion_tokens=30))
    run = harness.run("What is six times seven?", workdir=project)
    result = run.result
    assert result.status == DONE, result.error
    assert result.output == "The answer is 42."
    d = result.details
    assert d["tokens"] == {"input": 120, "output": 30, "reasoning": 0, "cache_read": 0, "cache_write": 0}
    assert (d["tokens_in"], d["tokens_out"]) == (120, 30)
    # The scripted model costs $1 / $2 per million input / output tokens.
    assert abs(d["cost"] - (120 * 1 + 30 * 2) / 1e6) < 1e-12
    assert (d["model"], d["provider"], d["agent"]) == ("scripted/echo", "scripted", "build")
    assert d["opencode_session"].startswith("ses") and d["session_new"] is True
    assert d["directory"] == str(project)
    assert d["session_key"] is None and d["steps"] == 1
    assert _said(llm)[-1] == "What is six times seven?"
    assert result.bytes_out == len("The answer is 42.")


def test_same_session_key_continues_the_conversation(harness, llm, project):
    llm.script(Text("Nice to meet you, Ada."), Text("Your name is Ada."))
    first = harness.run("My name is Ada.", session="chat1-web1", workdir=project).result
    assert first.status == DONE, first.error
    assert first.details["session_new"] is True

    # A new executor (a restarted worker) finds the mapping in the state dir.
    second = harness.run("What is my name?", session="chat1-web1", workdir=project,
                         executor=harness.executor()).result
    assert second.status == DONE, second.error
    assert second.output == "Your name is Ada."
    assert second.details["opencode_session"] == first.details["opencode_session"]
    assert second.details["session_new"] is False
    seen = _said(llm)
    assert "My name is Ada." in seen and "Nice to meet you, Ada." in seen and seen[-1] == "What is my name?"
    assert _mapping(harness)["chat1-web1"]["id"] == first.details["opencode_session"]


def test_new_session_starts_fresh_and_remaps_the_key(harness, llm, project):
    llm.script(Text("Noted: blue."), Text("I do not know your colour."))
    first = harness.run("My colour is blue.", session="chat2-web1", workdir=project).result
    assert first.status == DONE, first.error
    second = harness.run("What is my colour?", session="chat2-web1", workdir=project,
                         options={"new_session": True}).result
    assert second.status == DONE, second.error
    assert second.details["session_new"] is True
    assert second.details["opencode_session"] != first.details["opencode_session"]
    seen = _said(llm)
    assert "My colour is blue." not in seen and seen[-1] == "What is my colour?"
    assert _mapping(harness)["chat2-web1"]["id"] == second.details["opencode_session"]


def test_orders_on_one_key_run_one_at_a_time(harness, llm, project):
    llm.script(Text("first reply", chunks=3, delay=0.4), Text("second reply"))
    one = harness.start("first order", session="chat4-web1", workdir=project)
    wait_for(lambda: one.progress, what="the first order to take the session")
    two = harness.start("second order", session="chat4-web1", workdir=project)
    a, b = one.wait(), two.wait()
    assert a.status == b.status == DONE, (a.error, b.error)
    assert a.details["opencode_session"] == b.details["opencode_session"]
    # The second prompt went in only after the first reply was complete.
    assert "first reply" in _said(llm) and _said(llm)[-1] == "second order"
    assert {a.output, b.output} == {"first reply", "second reply"}


def test_orders_without_a_key_never_share_a_session(harness, llm, project):
    llm.script(Text("one"), Text("two"))
    a = harness.run("first", workdir=project).result
    b = harness.run("second", workdir=project).result
    assert a.status == b.status == DONE
    assert a.details["opencode_session"] != b.details["opencode_session"]
    assert "first" not in _said(llm)


def test_a_deleted_session_is_replaced(harness, llm, project, opencode):
    llm.script(Text("hello"), Text("hello again"))
    first = harness.run("hi", session="chat3-web1", workdir=project).result
    old = first.details["opencode_session"]
    request(opencode, "DELETE", f"/session/{old}?directory={project}")
    second = harness.run("hi again", session="chat3-web1", workdir=project)
    assert second.result.status == DONE, second.result.error
    assert second.result.details["opencode_session"] != old
    assert any("is gone" in line for line in second.lines())


def test_tool_call_writes_a_file_in_the_project(harness, llm, project):
    target = project / "notes.txt"
    llm.script(ToolCall("write", {"filePath": str(target), "content": "written by the agent\n"}),
               Text("I wrote notes.txt."))
    run = harness.run("Write notes.txt", workdir=project)
    result = run.result
    assert result.status == DONE, result.error
    assert target.read_text() == "written by the agent\n"
    assert result.output == "I wrote notes.txt."
    assert result.details["tools"] == ["write"]
    assert result.details["steps"] == 2
    assert "[tool] write notes.txt" in run.lines()
    # The second request carried the tool's result back to the model.
    assert any(m.get("role") == "tool" for m in llm.chats[-1]["messages"])


def test_subagent_work_shows_as_progress(harness, llm, project):
    llm.script(ToolCall("task", {"description": "make a file", "prompt": "Write sub.txt",
                                 "subagent_type": "general"}),
               ToolCall("write", {"filePath": str(project / "sub.txt"), "content": "from the subagent\n"}),
               Text("Subagent: done."),
               Text("The subagent wrote sub.txt."))
    run = harness.run("Delegate it", workdir=project)
    result = run.result
    assert result.status == DONE, result.error
    assert result.output == "The subagent wrote sub.txt."
    assert (project / "sub.txt").read_text() == "from the subagent\n"
    lines = run.lines()
    assert any(line.startswith("[tool] task") for line in lines), lines
    assert "[subagent] [tool] write sub.txt" in lines, lines
    assert not any("Subagent: done." in line for line in lines)


def test_progress_arrives_before_the_answer(harness, llm, project):
    llm.script(ToolCall("write", {"filePath": str(project / "a.txt"), "content": "a"}),
               Text("line one\nline two\nline three\nline four\n", chunks=4, delay=0.6))
    run = harness.run("Work slowly", workdir=project, executor=harness.executor(progress_interval=0.1))
    assert run.result.status == DONE, run.result.error
    assert run.result.output == "line one\nline two\nline three\nline four"
    tool_at = [t for t, line in run.progress if line.startswith("[tool] write")]
    text_at = [t for t, line in run.progress if line.startswith("[text] ")]
    assert tool_at and len(text_at) >= 2, run.lines()
    # The text came in pieces while the model was still streaming.
    assert text_at[0] < run.returned_at - 0.5
    assert tool_at[0] < text_at[0], run.progress
    shown = " / ".join(line for _, line in run.progress if line.startswith("[text] "))
    for piece in ("line one", "line two", "line three", "line four"):
        assert piece in shown


def test_cancel_aborts_the_run(harness, llm, project, opencode):
    llm.script(Hang(first="Thinking", limit=60))
    run = harness.start("Take your time", workdir=project)
    assert llm.hung.wait(60), "the model was never asked"
    cancelled_at = time.monotonic()
    run.ctx.cancel("cancel")
    result = run.wait(10)
    assert run.returned_at - cancelled_at < 2.0
    assert result.status == CANCELLED
    assert result.error == "cancelled; opencode run aborted"
    # opencode hung up on the model within two seconds and the session is idle again.
    assert llm.hang_ended.wait(5)
    assert llm.hang_ended_at - cancelled_at < 2.0
    status = request(opencode, "GET", f"/session/status?directory={project}")
    assert result.details["opencode_session"] not in status


def test_timeout_aborts_the_run(harness, llm, project):
    llm.script(Hang(limit=60))
    run = harness.start("Never finish", workdir=project)
    assert llm.hung.wait(60)
    # The order's deadline passes now: the executor notices it by itself.
    run.ctx.deadline = time.monotonic() + 0.3
    result = run.wait(10)
    assert result.status == TIMED_OUT
    assert result.error.startswith("timed out")
    assert run.returned_at - run.ctx.deadline < 2.0
    assert llm.hang_ended.wait(5)
    assert llm.hang_ended_at - run.ctx.deadline < 2.0


def test_provider_error_fails_with_its_message(harness, llm, project):
    llm.script(Error(400, "the scripted model rejects this request", type="invalid_request_error"))
    result = harness.run("Bad", workdir=project).result
    assert result.status == FAILED
    assert result.error == "provider error (HTTP 400): the scripted model rejects this request"
    assert result.output == ""


def test_context_overflow_is_a_provider_error(harness, llm, project):
    llm.script(Error(400, "context length exceeded for scripted model", type="invalid_request_error"))
    result = harness.run("Too long", workdir=project).result
    assert result.status == FAILED
    assert result.error == "provider error (context overflow): context length exceeded for scripted model"


def test_retryable_provider_error_gives_up_after_the_configured_retries(harness, llm, project):
    llm.script(Error(500, "upstream exploded"), Error(500, "upstream exploded"), Error(500, "upstream exploded"))
    run = harness.run("Try", workdir=project, executor=harness.executor(provider_retries=1))
    result = run.result
    assert result.status == FAILED
    assert result.error == "provider error: upstream exploded (gave up after 1 retry)"
    assert any(line.startswith("[retry] provider error: upstream exploded") for line in run.lines())
    assert len(llm.chats) == 2  # the first try and one retry


def test_rate_limit_is_retried_by_opencode(harness, llm, project):
    llm.script(Error(429, "slow down", type="rate_limit_error", retry_after=0.2), Text("made it"))
    run = harness.run("Try", workdir=project)
    assert run.result.status == DONE, run.result.error
    assert run.result.output == "made it"
    assert any("slow down" in line for line in run.lines())


def test_unknown_agent_fails_clearly(harness, llm, project):
    ex = harness.executor(agents=["nosuchagent"])
    result = harness.run("Hi", executor=ex, workdir=project, options={"agent": "nosuchagent"}).result
    assert result.status == FAILED
    assert result.error.startswith('Agent not found: "nosuchagent"')
    assert llm.chats == []


def test_agent_and_model_options(harness, llm, project):
    llm.script(Text("Reviewed."))
    ex = harness.executor(agents=["reviewer"], models=["scripted/other"])
    result = harness.run("Review this", executor=ex, workdir=project,
                         options={"agent": "reviewer", "model": "scripted/other"}).result
    assert result.status == DONE, result.error
    assert (result.details["agent"], result.details["model"]) == ("reviewer", "scripted/other")
    assert llm.chats[-1]["model"] == "other"
    assert "You are the scripted reviewer agent." in _said(llm)[0]


def test_bad_model_option_fails_before_contacting_opencode(harness, llm):
    result = harness.run("Hi", options={"model": "no-slash"}).result
    assert result.status == FAILED and "refused" in result.error
    with pytest.raises(ExecutorError, match="provider/model"):
        harness.executor(models=["no-slash"])
    assert llm.chats == []


def test_an_order_cannot_choose_an_agent_or_model_the_node_does_not_allow(harness, llm, project):
    """The agent decides a run's tools and permissions: an order may not pick one the node did not list."""
    ex = harness.executor(agent="build", agents=["plan"], model="scripted/echo")
    for options, message in (({"agent": "reviewer"}, "the agent 'reviewer' (allowed: build, plan"),
                             ({"model": "scripted/other"}, "the model 'scripted/other' (allowed: scripted/echo")):
        result = harness.run("Hi", executor=ex, workdir=project, options=options).result
        assert result.status == FAILED and result.error.startswith("refused: this node does not let an order")
        assert message in result.error
    assert llm.chats == []  # refused before opencode was asked
    llm.script(Text("Planned."))
    result = harness.run("Plan it", executor=ex, workdir=project, options={"agent": "plan"}).result
    assert result.status == DONE, result.error
    assert result.details["agent"] == "plan"


def test_output_is_capped(harness, llm, project):
    llm.script(Text("x" * 5000))
    result = harness.run("Long", workdir=project, max_output_bytes=1024).result
    assert result.status == DONE
    assert result.truncated and result.bytes_out == 5000
    assert result.output.startswith("x" * 1024) and "truncated" in result.output


def test_server_down_fails_clearly(harness, tmp_path):
    from support.opencode_server import free_port

    ex = harness.executor(url=f"http://127.0.0.1:{free_port()}")
    result = harness.run("Hello?", executor=ex).result
    assert result.status == FAILED
    assert "is not reachable (connection refused)" in result.error
    assert "\n" not in result.error


def _own_server_harness(tmp_path: Path, server: OpenCodeServer) -> tuple[Harness, Path]:
    project = tmp_path / "project"
    project.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    return Harness(state, server.url), project


def test_server_dying_mid_run_fails_clearly(tmp_path):
    with ScriptedLLM() as llm, OpenCodeServer(llm.url) as server:
        h, project = _own_server_harness(tmp_path, server)
        llm.script(Hang(limit=60))
        run = h.start("Keep going", workdir=project)
        assert llm.hung.wait(60)
        server.stop()  # SIGTERM to opencode's process group
        stopped_at = time.monotonic()
        result = run.wait(30)
    assert result.status == FAILED
    assert result.error.startswith("opencode server went away mid-run")
    assert "not reachable" in result.error and "\n" not in result.error
    assert run.returned_at - stopped_at < 15


def test_a_permission_ask_in_an_order_nobody_can_answer_is_denied_not_waited_on(tmp_path):
    # A server whose config asks before edits: an order without a chat is denied at once, never waits.
    from galaxy_fleet.audit import query
    from galaxy_fleet.config import from_dict
    from galaxy_fleet.node import executors

    config = from_dict({"spool_dir": str(tmp_path / "spool")})
    with ScriptedLLM() as llm, OpenCodeServer(llm.url, permission={"*": "allow", "edit": "ask"}) as server:
        h, project = _own_server_harness(tmp_path, server)
        ex = executors.build("opencode", {"type": "opencode", "url": server.url}, config)
        llm.script(ToolCall("write", {"filePath": str(project / "x.txt"), "content": "x"}),
                   Text("I could not write it."))
        run = h.run("Write x.txt", workdir=project, executor=ex)
        ex.close()
    result = run.result
    assert result.status == DONE, result.error
    assert not (project / "x.txt").exists()
    assert result.output.startswith("I could not write it.\n\nPermission prompts denied:\n- edit ")
    assert any(line.startswith("[permission] edit ") and "denied by policy" in line for line in run.lines())
    events = query(config.audit.path, type=["permission_asked", "permission_answered"])
    assert [(e["type"], e.get("answer")) for e in events] == [("permission_asked", None),
                                                              ("permission_answered", "deny")]


def test_basic_auth(tmp_path, monkeypatch):
    with ScriptedLLM() as llm, OpenCodeServer(llm.url, password="correct horse") as server:
        h, project = _own_server_harness(tmp_path, server)
        monkeypatch.delenv("OPENCODE_SERVER_PASSWORD", raising=False)
        refused = h.run("Hi", workdir=project).result
        assert refused.status == FAILED
        assert "refused the credentials (HTTP 401)" in refused.error

        monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "correct horse")
        llm.script(Text("authenticated"))
        ok = h.run("Hi", workdir=project).result
        assert ok.status == DONE, ok.error
        assert ok.output == "authenticated"

        monkeypatch.delenv("OPENCODE_SERVER_PASSWORD")
        secret = tmp_path / "password"
        secret.write_text("correct horse\n")
        secret.chmod(0o600)
        llm.script(Text("from the file"))
        ok = h.run("Hi", workdir=project, executor=h.executor(password_file=str(secret))).result
        assert ok.status == DONE, ok.error
        assert ok.output == "from the file"


def test_health_without_the_credential_sees_the_server_answering(tmp_path, monkeypatch):
    """`galaxy health` run by hand (or by `galaxy remote` for the control node) has no
    credential: a 401 proves the server is alive, so it is not reported wedged (and never
    restarted); a wrong password is a real failure."""
    from galaxy_fleet.config import load
    from galaxy_fleet.config import HealthConfig
    from galaxy_fleet.node.health import check_opencode

    with ScriptedLLM() as llm, OpenCodeServer(llm.url, password="correct horse") as server:
        cfg_path = tmp_path / "config.yml"
        cfg_path.write_text(f"host: n1\nspool_dir: {tmp_path / 'spool'}\n"
                            f"worker: {{default_executor: opencode}}\n"
                            f"executors: {{opencode: {{type: opencode, url: '{server.url}'}}}}\n")
        config = load(cfg_path)
        settings = HealthConfig(opencode_timeout=10.0)
        monkeypatch.delenv("OPENCODE_SERVER_PASSWORD", raising=False)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        check = check_opencode(config, settings)
        assert check is not None and check.ok and check.data["authenticated"] is False, check
        monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "wrong")
        check = check_opencode(config, settings)
        assert check is not None and not check.ok and "HTTP 401" in check.message, check
        monkeypatch.setenv("OPENCODE_SERVER_PASSWORD", "correct horse")
        check = check_opencode(config, settings)
        assert check is not None and check.ok and "is healthy" in check.message, check
