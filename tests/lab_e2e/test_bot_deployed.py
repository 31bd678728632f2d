"""The bot as a user meets it: deployed by the collection on the lab's control machine.

`galaxy-bot` runs there under systemd as the collection installed it, with its
token handed over as a systemd credential; Telegram is the emulator (its Bot
API on this host's lab address), the phone is the emulator's user API. Every
order takes the production path: bot -> SSH with the routing key -> `galaxy
remote` on the node -> worker -> `opencode serve` -> the scripted LLM, and the
answer back. The LLM answers each order from its own text (``respond``):
``say X``, ``slowly N X`` (N seconds of streaming), ``long N`` (N lines).
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Iterator

import pytest
from botdeploy import ControlBot, order_ids
from botlab import ALICE, CAROL, DAVE, EVE, GROUP, OPS, ask, final_status, is_answer, order, order_id
from e2e import E2ELab, poll
from support.llm_server import Text
from support.telegram_emulator import TelegramUser


def respond(text: str) -> Text | None:
    if m := re.search(r"\bslowly (\d+) (\S+)", text):
        seconds, word = int(m.group(1)), m.group(2)
        return Text(f"Slowly: {word}.", chunks=seconds, delay=1.0)
    if m := re.search(r"\bsay (\S+)", text):
        return Text(f"Said {m.group(1)}.")
    if m := re.search(r"\blong (\d+)\b", text):
        return Text("".join(f"line {i} of the long answer\n" for i in range(int(m.group(1)))), chunks=8)
    return None


@pytest.fixture(scope="module")
def bot(e2e: E2ELab) -> Iterator[ControlBot]:
    e2e.llm.reset()
    e2e.llm.responder = respond
    control = ControlBot(e2e)
    poll(lambda: control.unit("ActiveState")["ActiveState"] == "active", 60, "galaxy-bot to be active")
    poll(lambda: e2e.telegram.proxy.commands, 60, "the deployed bot to register its commands")
    try:
        yield control
    finally:
        e2e.llm.responder = None


def user(e2e: E2ELab, uid: int, **kw: Any) -> TelegramUser:
    return e2e.telegram.user(uid, **kw)


def asked(e2e: E2ELab, text: str) -> int:
    """How many of the LLM's conversations were asked ``text`` last (history aside)."""
    from support.llm_server import message_text

    return sum(1 for c in e2e.llm.chats
               if text in message_text([m for m in c["messages"] if m.get("role") == "user"][-1]))


def marker() -> str:
    return f"m{uuid.uuid4().hex[:8]}"


def running(e2e: E2ELab, u: TelegramUser, text: str) -> tuple[Any, str]:
    """Send an order; wait until its status message shows it running and the LLM has it."""
    after = u.last_id()
    u.send(text)
    status = u.wait_message(lambda m: "running" in m.text and "<code>" in m.text, after=after, timeout=60)
    payload = text.split(" ", 2)[2] if text.startswith("/order ") else text
    poll(lambda: any(payload in str(c) for c in e2e.llm.chats), 60, "the LLM to get the order")
    return status, order_id(status)


def test_the_collection_runs_the_bot_on_the_control_machine(e2e: E2ELab, bot: ControlBot) -> None:
    unit = bot.unit("ActiveState", "User")
    assert unit["ActiveState"] == "active" and unit["User"] == "galaxy-control", unit
    assert "LoadCredential=telegram_token:/etc/galaxy/credentials/telegram_token" in bot.sh("systemctl cat galaxy-bot")
    assert "LoadCredential=telegram_webhook_secret:/etc/galaxy/credentials/telegram_webhook_secret" in \
        bot.sh("systemctl cat galaxy-bot")
    # The token and the webhook secret: in root-only credential files, nowhere else.
    for name, secret in (("telegram_token", e2e.telegram.token), ("telegram_webhook_secret", e2e.webhook_secret)):
        assert bot.sh(f"stat -c '%a %U' /etc/galaxy/credentials/{name}").split() == ["600", "root"]
        assert bot.sh(f"cat /etc/galaxy/credentials/{name}").strip() == secret
        for where in ("ps -eo args", "cat /etc/galaxy/config.yml", "systemctl cat galaxy-bot",
                      "journalctl -u galaxy-bot --no-pager -o cat", "cat /var/lib/galaxy/audit/audit.jsonl 2>/dev/null || true"):
            assert secret not in bot.sh(where), f"the {name} shows in `{where}`"
    names = {c["command"] for cmds in e2e.telegram.proxy.commands.values() for c in cmds}
    assert {"order", "machines", "cancel", "retry", "health", "audit", "new"} <= names
    reply = ask(user(e2e, ALICE), "/start", "user id", timeout=30)
    assert f"<code>{ALICE}</code>" in reply.text and "<b>authorized</b>" in reply.text

    def green() -> str | None:
        # The control node polls health every minute: right after a deploy (opencode serve
        # restarted at its end) the first answer may still say unhealthy.
        text = ask(user(e2e, ALICE), "/machines", "Machines", timeout=30).text
        return text if all(re.search(rf"🟢 <b>{n}</b>.*\n   connected", text) for n in ("web1", "web2")) else None

    try:
        machines = poll(green, 150, "/machines to show both nodes connected and healthy", interval=5)
    except AssertionError as exc:
        said = e2e.ssh("web1", "runuser -u galaxy -- /opt/galaxy/bin/galaxy health").stdout
        raise AssertionError(f"{exc}; web1 says: {said}") from None
    assert "[web]" in machines and "control" not in machines


def test_an_order_to_one_machine_is_answered_by_opencode(e2e: E2ELab, bot: ControlBot) -> None:
    m = marker()
    status, answer = order(user(e2e, ALICE), f"/order web2 say {m}", timeout=120)
    assert answer.text.startswith("✅ <b>web2</b> · done in ") and f"Said {m}." in answer.text, answer.text
    assert status.text.startswith("✅ <b>web2</b> done")
    # Plain text is an order to the default machine (web1).
    _, plain = order(user(e2e, CAROL), f"say {m}-plain", timeout=120)
    assert plain.text.startswith("✅ <b>web1</b> · done in ") and f"Said {m}-plain." in plain.text
    # The fleet's trail on the control node has the whole life cycle, with opencode's figures.
    oid = order_id(status)
    events = poll(lambda: [e for e in bot.audit("--order", oid) if e["type"] == "order_done"] and
                  bot.audit("--order", oid), 30, "the order's events in the control node's trail")
    types = [e["type"] for e in events]
    assert {"order_queued", "order_running", "order_done"} <= set(types), types
    done = next(e for e in events if e["type"] == "order_done")
    assert done["host"] == "web2" and done.get("cost", 0) > 0 and done.get("tokens_out", 0) > 0, done


def test_orders_to_a_group_and_to_all(e2e: E2ELab, bot: ControlBot) -> None:
    alice = user(e2e, ALICE)
    for target in ("web", "all"):
        m = marker()
        status, answer = order(alice, f"/order {target} say {m}", timeout=120)
        assert answer.text.startswith(f"📡 <b>{target}</b> · 2/2 done"), answer.text
        assert "✅ <b>web1</b> · done in" in answer.text and "✅ <b>web2</b> · done in" in answer.text
        assert answer.text.count(f"Said {m}.") == 2
        assert status.text.startswith(f"📡 <b>{target}</b> · 2/2 finished")


def test_cancel_a_running_order(e2e: E2ELab, bot: ControlBot) -> None:
    alice = user(e2e, ALICE)
    status, oid = running(e2e, alice, f"/order web1 slowly 40 {marker()}")
    alice.press(status, "Cancel")
    answer = alice.wait_message(lambda x: x.text.startswith("🚫 <b>web1</b> · cancelled"), after=status.message_id,
                                timeout=30)
    poll(lambda: bot.audit("--order", oid, "--type", "order_cancelled"), 30, "the cancellation in the trail")
    assert final_status(alice, status.message_id).buttons == []
    assert answer.chat_id == ALICE


def test_a_dangerous_order_confirmed_and_one_left_to_expire(e2e: E2ELab, bot: ControlBot) -> None:
    alice = user(e2e, ALICE)
    m = marker()
    confirm = ask(alice, f"/order web2 say {m} && rm -rf /nonexistent-{m}", "Dangerous order", timeout=30)
    after = alice.last_id()
    alice.press(confirm, "Confirm")
    answer = alice.wait_message(is_answer, after=after, timeout=120)
    assert answer.text.startswith("✅ <b>web2</b>") and f"Said {m}." in answer.text
    late = marker()
    confirm = ask(alice, f"say {late} && rm -rf /nonexistent-{late}", "Dangerous order", timeout=30)
    alice.wait_message(lambda x: x.message_id == confirm.message_id and "Not confirmed in time" in x.text,
                       after=confirm.message_id - 1, timeout=20)
    alice.press(confirm, "Confirm")  # too late
    poll(lambda: any(a.get("text") == "This request has expired." for a in e2e.telegram.callback_answers),
         20, "the late press to be answered")
    assert not [c for c in e2e.llm.chats if late in str(c)]
    kinds = {e["type"] for e in bot.audit("--type", "bot_confirmed,bot_confirm_expired")}
    assert kinds == {"bot_confirmed", "bot_confirm_expired"}, kinds


def test_an_unauthorized_user_is_refused_and_audited(e2e: E2ELab, bot: ControlBot) -> None:
    eve = user(e2e, EVE)
    m = marker()
    reply = ask(eve, f"/order web1 say {m}", "Not authorized", timeout=30)
    assert reply.text == "⛔ Not authorized."
    refusals = poll(lambda: [e for e in bot.audit("--type", "bot_refused") if e.get("chat_id") == EVE], 20,
                    "the refusal in the control node's trail")
    assert refusals[-1]["user"].startswith(f"telegram:{EVE}") and refusals[-1]["severity"] == "warning"
    # In a group, only authorized members give orders.
    in_group = user(e2e, EVE, chat_id=GROUP, chat_type="group")
    assert ask(in_group, f"/order web1 say {m}", "Not authorized", timeout=30).chat_id == GROUP
    assert not [c for c in e2e.llm.chats if m in str(c)]


def test_rate_limit(e2e: E2ELab, bot: ControlBot) -> None:
    dave = user(e2e, DAVE)
    for i in range(3):
        order(dave, f"say dave-{i}", timeout=120)
    reply = ask(dave, "say dave-3", "Slow down", timeout=30)
    assert re.match(r"🐢 Slow down: at most 3 orders a minute\. Try again in \d+ s\.", reply.text), reply.text
    assert not [c for c in e2e.llm.chats if "dave-3" in str(c)]


def test_a_long_answer_arrives_as_a_document(e2e: E2ELab, bot: ControlBot) -> None:
    docs = len(e2e.telegram.documents)
    status, answer = order(user(e2e, ALICE), "/order web1 long 2500", timeout=180)
    assert answer.document is not None and answer.document["file_name"] == f"order-{order_id(status)}.md"
    text = e2e.telegram.documents[docs].content.decode()
    assert "line 0 of the long answer" in text and "line 2499 of the long answer" in text


def test_help_status_orders_health_audit_retry_new_and_cancel(e2e: E2ELab, bot: ControlBot) -> None:
    carol = user(e2e, CAROL)
    text = ask(carol, "/help", "Galaxy", timeout=30).text
    for cmd in ("/order", "/machines", "/status", "/orders", "/cancel", "/retry", "/health", "/audit", "/new"):
        assert cmd in text, text
    m = marker()
    status, _ = order(carol, f"/order web2 say {m}-1", timeout=120)
    oid = order_id(status)
    assert "2/2 machines connected" in ask(carol, "/status", "Fleet", timeout=30).text
    assert oid in ask(carol, "/orders", "Recent orders", timeout=30).text
    health = ask(carol, "/health web2", "Health", timeout=60).text
    assert health.startswith("<b>Health</b>: 1/1 healthy") and "✅ <b>web2</b> healthy" in health, health
    audit = ask(carol, f"/audit order={oid}", "Audit", timeout=30).text
    assert "order_queued" in audit and "order_done" in audit and "web2" in audit, audit
    # /retry: the same order again, in the same agent session (opencode sees the history).
    after = carol.last_id()
    carol.send(f"/retry {oid[-8:]}")
    again = carol.wait_message(is_answer, after=after, timeout=120)
    assert again.text.startswith("✅ <b>web2</b> · done") and f"Said {m}-1." in again.text

    def users_asked(text: str) -> list[int]:
        from support.llm_server import message_text

        return [len(users) for c in e2e.llm.chats
                if (users := [x for x in c["messages"] if x.get("role") == "user"])
                and text in message_text(users[-1])]

    assert max(users_asked(f"say {m}-1")) >= 2  # the retry continued the chat's session on web2
    # /new: a fresh session, so the next order comes without history.
    assert "<b>web2</b>" in ask(carol, "/new web2", "Fresh agent session", timeout=30).text
    order(carol, f"/order web2 say {m}-2", timeout=120)
    assert users_asked(f"say {m}-2") == [1]
    # /cancel ID
    status, running_id = running(e2e, carol, f"/order web1 slowly 40 {m}-3")
    ask(carol, f"/cancel {running_id}", "Cancelling on web1", timeout=30)
    carol.wait_message(lambda x: x.text.startswith("🚫 <b>web1</b> · cancelled"), after=status.message_id,
                       timeout=30)


def test_an_alert_from_a_node_reaches_the_alert_chat_once(e2e: E2ELab, bot: ControlBot) -> None:
    m = marker()
    post = ("runuser -u galaxy -- /opt/galaxy/bin/python -c "
            "'import sys; from galaxy_fleet.node import outbox; from galaxy_fleet.node.spool import Spool; "
            f"outbox.post(Spool(\"/var/lib/galaxy\"), \"web1\", \"disk_low\", \"web1: disk almost full {m}\")'")
    e2e.must("web1", post)
    e2e.telegram.wait_message(OPS, m, timeout=30)
    e2e.must("web1", post)  # the same problem again: not repeated
    time.sleep(3)
    assert len([x for x in e2e.telegram.bot_messages(OPS) if m in x.text]) == 1
    assert not [x for x in e2e.telegram.bot_messages(ALICE) if m in x.text]


def test_the_bot_killed_mid_order_still_delivers_the_answer(e2e: E2ELab, bot: ControlBot) -> None:
    alice = user(e2e, ALICE)
    m = marker()
    restarts = bot.restarts()
    status, oid = running(e2e, alice, f"/order web1 slowly 10 {m}")
    bot.sh("systemctl kill --signal=KILL galaxy-bot")
    poll(lambda: bot.restarts() > restarts and bot.unit("ActiveState")["ActiveState"] == "active", 60,
         "systemd to restart the bot")
    answer = alice.wait_message(is_answer, after=status.message_id, timeout=120)
    assert answer.text.startswith("✅ <b>web1</b> · done") and f"Slowly: {m}." in answer.text, answer.text
    final = final_status(alice, status.message_id, timeout=30)
    assert final.text.startswith("✅ <b>web1</b> done") and order_ids(final.text) == [oid]
    time.sleep(2)
    assert len([x for x in alice.messages() if f"Slowly: {m}." in x.text and is_answer(x)]) == 1


def test_a_node_stopped_mid_order_fails_clearly_and_works_again_after(e2e: E2ELab, bot: ControlBot) -> None:
    alice, carol = user(e2e, ALICE), user(e2e, CAROL)
    m = marker()
    status, oid = running(e2e, alice, f"/order web2 slowly 60 {m}")
    e2e.lab("stop", "web2", timeout=120)
    try:
        e2e.telegram.wait_message(OPS, "web2</b> is unreachable", timeout=60)
        # Others are unaffected while web2 is away.
        _, fine = order(carol, f"/order web1 say {m}-web1", timeout=120)
        assert f"Said {m}-web1." in fine.text
        failed = alice.wait_message(lambda x: is_answer(x) and "web2" in x.text, after=status.message_id,
                                    timeout=60)
        assert failed.text.startswith("❌ <b>web2</b> · failed") and "lost contact with web2" in failed.text, \
            failed.text
    finally:
        e2e.lab("start", "web2", timeout=300)
    e2e.telegram.wait_message(OPS, "web2</b> is reachable again", timeout=90)
    # The order's real end follows once web2 is back ("the answer will follow"): it was
    # interrupted by the shutdown, and not run again.
    late = alice.wait_message(lambda x: is_answer(x) and "web2" in x.text, after=failed.message_id, timeout=90)
    assert late.text.startswith("⚠️ <b>web2</b> · interrupted") and "not re-run" in late.text, late.text
    # Back: its units came up with it, and later orders work.
    e2e.must("web2", "for i in $(seq 120); do ss -Hltn 'sport = :4096' | grep -q . && exit 0; sleep 0.5; done; exit 1")
    _, again = order(alice, f"/order web2 say {m}-back", timeout=180)
    assert again.text.startswith("✅ <b>web2</b> · done") and f"Said {m}-back." in again.text, again.text
    # The order that was running when web2 went down ended on web2 itself (never re-run), and the
    # control node's trail has its end.
    ends = poll(lambda: [e for e in bot.audit("--order", oid) if e["type"] in ("order_interrupted", "order_done",
                                                                                 "order_failed")],
                60, "the stopped order's end in the control node's trail")
    assert ends[-1]["host"] == "web2", ends
    assert asked(e2e, f"slowly 60 {m}") == 1
