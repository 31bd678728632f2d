"""An agent's permission prompts on the phone: the real bot, real workers with an opencode
executor, a real `opencode serve` that asks before ``bash``, and the scripted LLM calling
``bash``. Each prompt reaches the order's chat with Allow once / Allow for this order / Deny;
the answer goes through the control plane (only the sender or an admin) to the node, which
audits who decided."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from botlab import ALICE, BOB, CAROL, GROUP, BotLab, is_answer, new_token, wait_for
from support.llm_server import ScriptedLLM, Text, ToolCall
from support.opencode_server import OpenCodeServer
from support.telegram_emulator import BotMessage, TelegramUser

ASK = {"*": "allow", "bash": "ask", "external_directory": "ask"}
TIMEOUTS = {"web1": 120, "web2": 3}  # seconds a prompt waits on each node (web2: the expiry test's)


@pytest.fixture(scope="module")
def llm_server() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(default_reply="ok") as llm:
        yield llm


@pytest.fixture(scope="module")
def plab(tmp_path_factory: pytest.TempPathFactory, llm_server: ScriptedLLM) -> Iterator[BotLab]:
    """Two nodes whose default executor is opencode (web1, web2), CAROL an admin."""
    with OpenCodeServer(llm_server.url, permission=ASK) as server:
        lab = BotLab(tmp_path_factory.mktemp("permlab"), new_token(), nodes={"web1": ["web"], "web2": ["web"]},
                     ghost=False, default_executor="opencode", admins=[CAROL])
        for name, node in lab.nodes.items():
            project = node.dir / "project"
            project.mkdir()
            node.config["executors"]["opencode"] = {
                "type": "opencode", "url": server.url, "directory": str(project), "progress_interval": 0.2,
                "permission_timeout": TIMEOUTS[name]}
            node.config_path.write_text(yaml.safe_dump(node.config))
        try:
            lab.start()
            yield lab
        finally:
            lab.stop()


@pytest.fixture
def llm(llm_server: ScriptedLLM) -> Iterator[ScriptedLLM]:
    llm_server.reset()
    yield llm_server
    llm_server.reset()


def project(lab: BotLab, host: str) -> Path:
    return lab.nodes[host].dir / "project"


def is_prompt(m: BotMessage) -> bool:
    return "the agent asks to use" in m.text


def prompt_of(user: TelegramUser, after: int, timeout: float = 60) -> BotMessage:
    """The next permission prompt in the chat, with its three buttons."""
    msg = user.wait_message(lambda m: is_prompt(m) and len(m.buttons) == 3, after=after, timeout=timeout)
    assert [b["text"] for b in msg.buttons] == ["✅ Allow once", "✅ Allow for this order", "⛔ Deny"]
    assert all(len(b["callback_data"].encode()) <= 64 for b in msg.buttons)
    return msg


def prompt_order(msg: BotMessage) -> str:
    m = re.search(r"order <code>([^<]+)</code>", msg.text)
    assert m, msg.text
    return m.group(1)


def edited(user: TelegramUser, msg: BotMessage, text: str, timeout: float = 30) -> BotMessage:
    """The prompt message once it says ``text`` (its buttons gone)."""
    return user.wait_message(lambda m: m.message_id == msg.message_id and text in m.text and not m.buttons,
                             after=msg.message_id - 1, timeout=timeout)


def events(lab: BotLab, host: str, order_id: str, type_: str) -> list[dict[str, Any]]:
    """The node's audit events of an order, as they streamed into the control store."""
    store = lab.store()
    try:
        return store.events(host=host, order_id=order_id, type=type_)
    finally:
        store.close()


def answer_after(user: TelegramUser, after: int, timeout: float = 60) -> BotMessage:
    return user.wait_message(is_answer, after=after, timeout=timeout)


def test_allow_once_runs_the_command(plab: BotLab, llm: ScriptedLLM) -> None:
    alice = plab.user(ALICE)
    llm.script(ToolCall("bash", {"command": "touch allowed.txt", "description": "Touch"}), Text("Touched it."))
    after = alice.last_id()
    alice.send("/order web1 touch allowed.txt")
    prompt = prompt_of(alice, after)
    oid = prompt_order(prompt)
    assert "<b>bash</b>" in prompt.text and "touch allowed.txt" in prompt.text and "within 2:00" in prompt.text
    rec = next(r for r in plab.orders() if r.id == oid)
    assert rec.options.get("interactive") is True  # placed from a chat: someone can answer
    assert not (project(plab, "web1") / "allowed.txt").exists()  # it waits for the answer
    alice.press(prompt, "Allow once")
    done = edited(alice, prompt, "allowed once by telegram:1001")
    assert "✅" in done.text
    answer = answer_after(alice, prompt.message_id)
    assert "Touched it." in answer.text and "Permission prompts denied" not in answer.text
    assert (project(plab, "web1") / "allowed.txt").exists()
    decided = wait_for(lambda: events(plab, "web1", oid, "permission_answered"), what="the node's audit event")
    assert [(e["answer"], e["by"]) for e in decided] == [("once", "telegram:1001(@user1001)")]


def test_deny_keeps_the_command_from_running(plab: BotLab, llm: ScriptedLLM) -> None:
    alice = plab.user(ALICE)
    llm.script(ToolCall("bash", {"command": "touch denied.txt", "description": "Touch"}), Text("I was not allowed."))
    after = alice.last_id()
    alice.send("/order web1 touch denied.txt")
    prompt = prompt_of(alice, after)
    oid = prompt_order(prompt)
    alice.press(prompt, "Deny")
    edited(alice, prompt, "denied by telegram:1001")
    answer = answer_after(alice, prompt.message_id)
    assert "Permission prompts denied" in answer.text and "denied by telegram:1001" in answer.text
    assert not (project(plab, "web1") / "denied.txt").exists()
    decided = wait_for(lambda: events(plab, "web1", oid, "permission_answered"), what="the node's audit event")
    assert [(e["answer"], e["by"]) for e in decided] == [("deny", "telegram:1001(@user1001)")]


def test_unanswered_prompt_expires_denied(plab: BotLab, llm: ScriptedLLM) -> None:
    alice = plab.user(ALICE)
    llm.script(ToolCall("bash", {"command": "touch late.txt", "description": "Touch"}), Text("Nobody answered."))
    after = alice.last_id()
    alice.send("/order web2 touch late.txt")
    prompt = prompt_of(alice, after)
    oid = prompt_order(prompt)
    gone = edited(alice, prompt, "expired — denied", timeout=30)
    assert "⌛" in gone.text
    expired = wait_for(lambda: events(plab, "web2", oid, "permission_expired"), what="the node's expiry event")
    assert expired[0]["answer"] == "deny"
    answer_after(alice, prompt.message_id)
    assert not (project(plab, "web2") / "late.txt").exists()
    alice.press(prompt, "Allow once")  # a late press on the buttons it had
    wait_for(lambda: any(a.get("text") == "This prompt is no longer waiting." for a in plab.emulator.callback_answers),
             what="the late press to be refused")
    assert not events(plab, "web2", oid, "permission_answered")


def test_allow_for_this_order_is_not_asked_again(plab: BotLab, llm: ScriptedLLM) -> None:
    alice = plab.user(ALICE)
    llm.script(ToolCall("bash", {"command": "touch one.txt", "description": "One"}),
               ToolCall("bash", {"command": "touch two.txt", "description": "Two"}), Text("Both touched."))
    after = alice.last_id()
    alice.send("/order web1 touch both")
    prompt = prompt_of(alice, after)
    oid = prompt_order(prompt)
    alice.press(prompt, "Allow for this order")
    edited(alice, prompt, "allowed for this order by telegram:1001")
    answer = answer_after(alice, prompt.message_id)
    assert "Both touched." in answer.text
    assert (project(plab, "web1") / "one.txt").exists() and (project(plab, "web1") / "two.txt").exists()
    assert len(events(plab, "web1", oid, "permission_asked")) == 1  # the second call was not asked
    decided = wait_for(lambda: len(events(plab, "web1", oid, "permission_answered")) == 2
                       and events(plab, "web1", oid, "permission_answered"), what="both decisions")
    assert [(e["answer"], e["auto"]) for e in decided] == [("always", False), ("always", True)]
    assert not [m for m in alice.messages() if m.message_id > prompt.message_id and is_prompt(m)]


def test_only_the_sender_or_an_admin_may_answer(plab: BotLab, llm: ScriptedLLM) -> None:
    alice = plab.user(ALICE, chat_id=GROUP, chat_type="group")
    bob = plab.user(BOB, chat_id=GROUP, chat_type="group")
    carol = plab.user(CAROL, chat_id=GROUP, chat_type="group")
    llm.script(ToolCall("bash", {"command": "touch admin.txt", "description": "Touch"}), Text("Done."))
    after = alice.last_id()
    alice.send("/order web1 touch admin.txt")
    prompt = prompt_of(alice, after)
    oid = prompt_order(prompt)
    bob.press(prompt, "Allow once")  # another user of the group: refused, audited, not sent
    wait_for(lambda: plab.audit_events("permission_answer_refused"), what="the refusal in the control trail")
    refused = plab.audit_events("permission_answer_refused")[-1]
    assert (refused["order_id"], refused["user"], refused["answer"]) == (oid, "telegram:1002(@user1002)", "once")
    assert any(a.get("text", "").startswith("Only the person who placed the order")
               for a in plab.emulator.callback_answers)
    assert not events(plab, "web1", oid, "permission_answered")
    assert not (project(plab, "web1") / "admin.txt").exists()
    assert len(next(m for m in alice.messages() if m.message_id == prompt.message_id).buttons) == 3  # still open
    carol.press(prompt, "Allow once")  # an admin may
    edited(alice, prompt, "allowed once by telegram:1004")
    answer_after(alice, prompt.message_id)
    assert (project(plab, "web1") / "admin.txt").exists()
    decided = wait_for(lambda: events(plab, "web1", oid, "permission_answered"), what="the node's audit event")
    assert [(e["answer"], e["by"]) for e in decided] == [("once", "telegram:1004(@user1004)")]
