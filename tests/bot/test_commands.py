"""Every command of the bot, end to end: the real bot process, real workers, the emulator as the phone.

One lab (botlab.BotLab, the `lab` fixture) is shared by this module: web1 and web2 (group web),
db1 (group db, marked dangerous), ghost (never reachable); ALICE and CAROL may
do anything, BOB only web1 at 3 orders a minute, EVE nothing.
"""

from __future__ import annotations

import re
import time
import uuid

from botlab import (ALICE, BOB, CAROL, DAVE, EVE, GROUP, OPS, BotLab, ask, children, final_status, is_answer,
                    order, order_id, wait_for)
from support.telegram_emulator import BotMessage


def marker() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


def test_commands_are_registered(lab: BotLab) -> None:
    names = [c["command"] for c in lab.emulator.commands]
    assert names == ["order", "machines", "status", "orders", "cancel", "retry", "health", "audit", "new", "start",
                     "help"]


def test_start_tells_the_user_id_and_authorization(lab: BotLab) -> None:
    reply = ask(lab.user(ALICE), "/start", "user id")
    assert "<code>1001</code>" in reply.text and "<b>authorized</b>" in reply.text and "web1" in reply.text
    reply = ask(lab.user(EVE), "/start", "user id")
    assert reply.text == "Your Telegram user id is 1003. You are not authorized to use this bot."
    assert reply.buttons == []
    refusals = [e for e in lab.audit_events("bot_refused") if e["user"].startswith("telegram:1003")]
    assert refusals and refusals[-1]["reason"] == "unauthorized" and refusals[-1]["request"] == "/start"


def test_unauthorized_user_gets_a_short_refusal_and_nothing_else(lab: BotLab) -> None:
    mallory = lab.user(1010)
    secret = marker()
    for text in (f"/order web1 echo {secret}", f"echo {secret}", "/machines", "/health", "/audit"):
        mallory.send(text)
    wait_for(lambda: len([e for e in lab.audit_events("bot_refused") if e["user"].startswith("telegram:1010")]) == 5,
             what="five refusals audited")
    time.sleep(0.5)
    replies = mallory.messages()
    # A short refusal each, at most refusal_replies_per_minute (3) a minute; never fleet data.
    assert [m.text for m in replies] == ["⛔ Not authorized."] * 3
    assert not [r for r in lab.orders() if secret in r.payload]
    events = [e for e in lab.audit_events("bot_refused") if e["user"].startswith("telegram:1010")]
    assert [e["request"] for e in events] == ["/order", "text", "/machines", "/health", "/audit"]
    assert all(e["severity"] == "warning" and e["chat_id"] == 1010 for e in events)


def test_help(lab: BotLab) -> None:
    reply = ask(lab.user(ALICE), "/help", "Galaxy")
    for cmd in ("/order", "/machines", "/status", "/orders", "/cancel", "/retry", "/health", "/audit", "/new"):
        assert cmd in reply.text
    assert "<b>web1</b>" in reply.text  # the default machine


def test_unknown_command(lab: BotLab) -> None:
    assert "Unknown command" in ask(lab.user(ALICE), "/frobnicate", "Unknown").text


def test_order_to_a_machine(lab: BotLab) -> None:
    m = marker()
    status, answer = order(lab.user(ALICE), f"/order web2 echo {m}")
    assert answer.text.startswith("✅ <b>web2</b> · done in ") and answer.text.endswith(f"\n\n{m}")
    assert status.text.startswith("✅ <b>web2</b> done")
    assert status.buttons == []  # no Cancel once finished
    # Marked delivered in the store once the answer is sent.
    rec = wait_for(lambda: next((r for r in lab.orders(chat_id=ALICE) if r.id == order_id(status) and r.delivered),
                                None),
                   what="the order marked delivered")
    assert rec.host == "web2" and rec.state == "done" and rec.sender == "telegram:1001(@user1001)"
    assert rec.message_id == status.message_id
    assert rec.session  # the chat's session on web2


def test_order_usage(lab: BotLab) -> None:
    assert "Usage" in ask(lab.user(ALICE), "/order", "Usage").text
    assert "Usage" in ask(lab.user(ALICE), "/order web1", "Usage").text


def test_plain_text_is_an_order_to_the_default_machine(lab: BotLab) -> None:
    m = marker()
    status, answer = order(lab.user(ALICE), f"echo {m}")
    assert answer.text.startswith("✅ <b>web1</b>") and m in answer.text


def test_progress_is_shown_while_running(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    m = marker()
    after = alice.last_id()
    actions_before = len([a for a in lab.emulator.chat_actions if a.chat_id == ALICE])
    alice.send(f"/order web1 echo step-one-{m}; sleep 3; echo {m}-finished")
    running = alice.wait_message(lambda x: "running" in x.text and f"step-one-{m}" in x.text and "› " in x.text,
                                 after=after)
    assert running.button("Cancel")["callback_data"].startswith("c:")
    assert re.search(r"running \d", running.text)  # elapsed time
    answer = alice.wait_message(is_answer, after=after)
    assert f"{m}-finished" in answer.text
    # The typing action was sent while it ran (and refreshed every progress_interval).
    assert len([a for a in lab.emulator.chat_actions if a.chat_id == ALICE and a.action == "typing"]) \
        >= actions_before + 2


def test_fan_out_to_a_group_gives_one_summary(lab: BotLab) -> None:
    m = marker()
    status, answer = order(lab.user(ALICE), f"/order web echo {m} from $(hostname -s 2>/dev/null || echo node)")
    assert answer.text.startswith("📡 <b>web</b> · 2/2 done")
    assert "✅ <b>web1</b> · done in" in answer.text and "✅ <b>web2</b> · done in" in answer.text
    assert answer.text.count(m) == 2
    assert status.text.startswith("📡 <b>web</b> · 2/2 finished")
    recs = wait_for(lambda: [r for r in lab.orders(chat_id=ALICE) if m in r.payload and r.delivered],
                    what="both parts marked delivered")
    assert len(recs) == 2 and len({r.batch for r in recs}) == 1


def test_unreachable_machine_fails_clearly_and_quickly(lab: BotLab) -> None:
    t0 = time.monotonic()
    status, answer = order(lab.user(ALICE), "/order ghost echo hello")
    assert time.monotonic() - t0 < 10
    assert answer.text.startswith("❌ <b>ghost</b> · failed after") and "ghost is unreachable" in answer.text
    assert status.button("Retry")


def test_unknown_target(lab: BotLab) -> None:
    # A first word that is no target is part of the order (to the default machine) ...
    status, answer = order(lab.user(ALICE), "/order nosuchhost-echo")
    assert answer.text.startswith("❌ <b>web1</b>") or answer.text.startswith("✅ <b>web1</b>")
    # ... and /health names the known targets when asked for an unknown one.
    assert "known:" in ask(lab.user(ALICE), "/health nosuchhost", "unknown target").text


def test_machines(lab: BotLab) -> None:
    ask(lab.user(ALICE), "/health", "Health", timeout=30)  # a health report for every reachable machine
    text = ask(lab.user(ALICE), "/machines", "Machines").text
    for name in ("web1", "web2", "db1"):
        assert re.search(rf"🟢 <b>{name}</b>.*\n   connected · healthy", text), text
    assert "⚪ <b>ghost</b>" in text and "unknown: never reached" in text  # as the dashboard says
    assert "[web]" in text and "[db]" in text


def test_status(lab: BotLab) -> None:
    order(lab.user(ALICE), "echo for-status")
    text = ask(lab.user(ALICE), "/status", "Fleet").text
    assert "3/4 machines connected" in text and "unknown: ghost" in text
    assert re.search(r"Last 24 h: .*\d+ done", text)


def test_orders_lists_this_chats_orders(lab: BotLab) -> None:
    m = marker()
    status, _ = order(lab.user(CAROL), f"echo {m}")
    text = ask(lab.user(CAROL), "/orders", "Recent orders").text
    assert order_id(status) in text and m in text
    assert "No orders" in ask(lab.user(ALICE, chat_id=-999, chat_type="group"), "/orders", "orders").text


def _running(user, text: str) -> tuple[BotMessage, str]:
    after = user.last_id()
    user.send(text)
    status = user.wait_message(lambda x: "running" in x.text and "<code>" in x.text, after=after)
    return status, order_id(status)


def test_cancel_command(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    status, oid = _running(alice, "/order web1 sleep 30")
    ask(alice, f"/cancel {oid}", "Cancelling on web1")
    answer = alice.wait_message(lambda x: x.text.startswith("🚫 <b>web1</b> · cancelled after"),
                                after=status.message_id)
    assert answer.message_id > status.message_id
    rec = next(r for r in lab.orders() if r.id == oid)
    assert rec.state == "cancelled"
    # Someone else's order cannot be cancelled, nor an unknown one.
    assert "No order" in ask(lab.user(CAROL), f"/cancel {oid}", "No order").text
    assert "No order" in ask(alice, "/cancel nonesuch", "No order").text


def test_cancel_button(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    status, oid = _running(alice, "/order web2 sleep 30")
    alice.press(status, "Cancel")
    alice.wait_message(lambda x: x.text.startswith("🚫 <b>web2</b> · cancelled"), after=status.message_id)
    final = final_status(alice, status.message_id)
    assert final.text.startswith("🚫 <b>web2</b> cancelled") and final.buttons == []
    assert any(a.get("text") == "Cancelling…" for a in lab.emulator.callback_answers)


def test_cancel_all_of_a_fan_out(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    after = alice.last_id()
    alice.send("/order web sleep 30")
    status = alice.wait_message(lambda x: x.text.count("running") == 2, after=after)
    alice.press(status, "Cancel all")
    answer = alice.wait_message(lambda x: x.text.startswith("📡 <b>web</b> · 0/2 done, 2 cancelled"), after=after)
    assert "🚫 <b>web1</b>" in answer.text and "🚫 <b>web2</b>" in answer.text


def test_retry_command_and_button(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    m = marker()
    status, answer = order(alice, f"/order web1 echo {m}; exit 3")
    assert answer.text.startswith("❌ <b>web1</b> · failed after") and "exit 3" in answer.text
    oid = order_id(status)
    assert status.button("Retry")["callback_data"] == f"r:{oid}"
    # /retry ID: a new order with the same payload, its own status message and answer.
    after = alice.last_id()
    alice.send(f"/retry {oid[-8:]}")  # a unique part of the id is enough
    again = alice.wait_message(is_answer, after=after)
    assert again.text.startswith("❌ <b>web1</b> · failed") and m in again.text
    # The Retry button does the same.
    after = alice.last_id()
    alice.press(status, "Retry")
    alice.wait_message(is_answer, after=after)
    recs = [r for r in lab.orders(chat_id=ALICE) if m in r.payload]
    assert len(recs) == 3 and len({r.session for r in recs}) == 1


def test_health(lab: BotLab) -> None:
    text = ask(lab.user(ALICE), "/health web1", "Health").text
    assert text.startswith("<b>Health</b>: 1/1 healthy") and "✅ <b>web1</b> healthy" in text
    text = ask(lab.user(ALICE), "/health", "Health", timeout=30).text
    assert "3/4 healthy" in text and "❌ <b>ghost</b>" in text and "unreachable" in text
    # BOB may only look at web1.
    assert "1/1 healthy" in ask(lab.user(BOB), "/health", "Health").text
    assert "may not" in ask(lab.user(BOB), "/health db1", "may not").text


def test_audit(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    status, _ = order(alice, "/order web2 echo audited")
    oid = order_id(status)
    text = ask(alice, f"/audit order={oid}", "Audit").text
    assert "order_queued" in text and "order_done" in text and "web2" in text and "<pre>" in text
    text = ask(alice, "/audit type=order_done host=web2 limit=3", "Audit").text
    assert text.startswith("<b>Audit</b> (3 events") and text.count("order_done") == 3
    assert "severity must be one of" in ask(alice, "/audit severity=bogus", "severity").text
    assert "unknown filter" in ask(alice, "/audit colour=red", "unknown filter").text
    assert "Audit" in ask(alice, "/audit --severity warning+ --since 1h", "udit").text


def test_new_session(lab: BotLab) -> None:
    carol = lab.user(CAROL)
    first, _ = order(carol, "/order web1 echo s1")
    second, _ = order(carol, "/order web1 echo s2")
    reply = ask(carol, "/new web1", "Fresh agent session")
    assert "<b>web1</b>" in reply.text
    third, _ = order(carol, "/order web1 echo s3")
    ids = [order_id(s) for s in (first, second, third)]
    keys = [next(r for r in lab.orders() if r.id == i).session for i in ids]
    assert keys[0] == keys[1] != keys[2]
    # The worker received the session key with the order.
    archived = (lab.nodes["web1"].spool / "archive" / f"{ids[2]}.json").read_text()
    assert keys[2] in archived


def test_per_user_targets(lab: BotLab) -> None:
    reply = ask(lab.user(BOB, chat_id=-1234, chat_type="group"), "/order db1 echo nope", "may not")
    assert reply.text == "⛔ You may not send orders to db1."
    events = [e for e in lab.audit_events("bot_refused") if e.get("reason") == "target_not_allowed"]
    assert events and events[-1]["target"] == "db1"


def test_machines_and_status_show_a_limited_user_only_their_machines(lab: BotLab) -> None:
    text = ask(lab.user(BOB), "/machines", "Machines").text
    assert "<b>web1</b>" in text and "db1" not in text and "web2" not in text and "ghost" not in text
    text = ask(lab.user(BOB), "/status", "Fleet").text
    assert "1/1 machines connected" in text and "ghost" not in text


def test_rate_limit(lab: BotLab) -> None:
    dave = lab.user(DAVE)
    for i in range(3):
        order(dave, f"echo dave-{i}")
    reply = ask(dave, "echo dave-3", "Slow down")
    assert re.match(r"🐢 Slow down: at most 3 orders a minute\. Try again in \d+ s\.", reply.text)
    assert not [r for r in lab.orders() if r.payload == "echo dave-3"]
    assert [e for e in lab.audit_events("bot_refused") if e.get("reason") == "rate_limited"]


def test_dangerous_order_confirmed(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    m = marker()
    confirm = ask(alice, f"/order db1 echo {m}", "Dangerous order")
    assert "db1 is marked dangerous" in confirm.text and "Confirm within 3 s" in confirm.text
    assert not [r for r in lab.orders() if m in r.payload]  # nothing sent yet
    after = alice.last_id()
    alice.press(confirm, "Confirm")
    answer = alice.wait_message(is_answer, after=after)
    assert answer.text.startswith("✅ <b>db1</b>") and m in answer.text
    assert [e for e in lab.audit_events("bot_confirmed") if e["target"] == "db1"]
    # The confirmation message became the order's status message.
    status = final_status(alice, confirm.message_id)
    assert status.text.startswith("✅ <b>db1</b> done")


def test_dangerous_order_left_to_expire(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    m = marker()
    confirm = ask(alice, f"echo {m} && rm -rf /nonexistent-galaxy-{m}", "Dangerous order")
    assert "dangerous pattern" in confirm.text
    expired = alice.wait_message(lambda x: x.message_id == confirm.message_id and "Not confirmed in time" in x.text,
                                 timeout=10)
    assert expired.buttons == []
    alice.press(confirm, "Confirm")  # too late
    wait_for(lambda: any(a.get("text") == "This request has expired." for a in lab.emulator.callback_answers),
             what="the late press to be answered")
    time.sleep(0.5)
    assert not [r for r in lab.orders() if m in r.payload]
    assert [e for e in lab.audit_events("bot_confirm_expired")]


def test_dangerous_order_cancelled(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    m = marker()
    confirm = ask(alice, f"/order db echo {m}", "Dangerous order")
    alice.press(confirm, "Cancel")
    alice.wait_message(lambda x: x.message_id == confirm.message_id and x.text.startswith("✖ Not sent"))
    time.sleep(0.3)
    assert not [r for r in lab.orders() if m in r.payload]


def test_long_answer_arrives_as_a_document(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    docs_before = len(lab.emulator.documents)
    status, answer = order(alice, "/order web1 seq 1 30000")
    assert answer.document is not None and answer.document["file_name"] == f"order-{order_id(status)}.md"
    doc = lab.emulator.documents[docs_before]
    text = doc.content.decode()
    assert text.startswith(f"# Order {order_id(status)}: done") and "\n30000\n" in text
    assert doc.caption and "✅ <b>web1</b> · done in" in doc.caption and "Full answer" in doc.caption
    assert doc.caption and len(doc.caption) <= 1024


def test_medium_answer_is_split_into_parts(lab: BotLab) -> None:
    alice = lab.user(ALICE)
    after = alice.last_id()
    alice.send("/order web2 seq 1 1500")  # ~6.9 KB of output
    last = alice.wait_message(lambda x: "(2/2)" in x.text, after=after)
    parts = [x for x in alice.messages() if after < x.message_id <= last.message_id and re.search(r"\(\d/2\)", x.text)]
    assert len(parts) == 2 and all(len(p.text.encode("utf-16-le")) // 2 <= 4096 for p in parts)
    numbers = re.findall(r"^\d+$", re.sub(r"<[^>]+>", "\n", "\n".join(p.text for p in parts)), re.M)
    assert numbers == [str(i) for i in range(1, 1501)]
    assert all(p.text.count("<pre>") == p.text.count("</pre>") == 1 for p in parts)  # code block reopened


def test_group_chat(lab: BotLab) -> None:
    alice_in_group = lab.user(ALICE, chat_id=GROUP, chat_type="group")
    eve_in_group = lab.user(EVE, chat_id=GROUP, chat_type="group")
    m = marker()
    status, answer = order(alice_in_group, f"/order web1 echo {m}")
    assert m in answer.text and answer.chat_id == GROUP
    after = alice_in_group.last_id()
    eve_in_group.send(f"/order web1 echo {m}-eve")
    refusal = alice_in_group.wait_message("Not authorized", after=after)
    assert refusal.chat_id == GROUP
    alice_in_group.send(f"echo {m}-chatter")  # plain text in a group is conversation, not an order
    time.sleep(1.5)
    assert not [r for r in lab.orders() if f"{m}-" in r.payload]
    assert [x.text for x in alice_in_group.messages() if x.message_id > refusal.message_id] == []


def test_alert_chat_hears_about_the_unreachable_machine_once(lab: BotLab) -> None:
    ops = lab.emulator
    msg = ops.wait_message(OPS, "ghost</b> is unreachable", timeout=20)
    time.sleep(2)
    assert len([x for x in ops.bot_messages(OPS) if "ghost</b> is unreachable" in x.text]) == 1
    assert msg.chat_id == OPS


def test_the_token_never_leaks(lab: BotLab) -> None:
    order(lab.user(ALICE), "echo last")
    token = lab.token
    secret_part = token.split(":", 1)[1]
    log = lab.bot_log()
    assert secret_part not in log
    assert "<token>" in log  # the bot runs with -v: PTB's DEBUG lines had the token in URLs, redacted
    for path in lab.root.rglob("*"):
        if path.is_file() and "telegram-test-api" not in path.name:
            assert secret_part.encode() not in path.read_bytes(), f"token found in {path}"
    assert lab.bot is not None
    cmdline = open(f"/proc/{lab.bot.pid}/cmdline", "rb").read()
    assert secret_part.encode() not in cmdline
    # The bot's children (`galaxy remote`) never inherit it.
    kids = children(lab.bot.pid)
    assert kids
    for pid in kids:
        assert secret_part.encode() not in open(f"/proc/{pid}/environ", "rb").read()
