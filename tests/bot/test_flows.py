"""The bot through failures and restarts, each test with a lab of its own (the make_lab fixture)."""

from __future__ import annotations

import signal
import time
from typing import Callable

from botlab import ALICE, BOB, OPS, BotLab, ask, final_status, is_answer, order, order_id, wait_for


def test_bot_killed_mid_order_still_delivers_the_answer(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab()
    alice = lab.user(ALICE)
    after = alice.last_id()
    alice.send("/order web1 echo started; sleep 3; echo the-answer-survived")
    status = alice.wait_message(lambda m: "running" in m.text and "<code>" in m.text, after=after)
    oid = order_id(status)
    assert lab.stop_bot(signal.SIGKILL) == -signal.SIGKILL
    # The order finishes on the node while no bot is running.
    wait_for((lab.nodes["web1"].spool / "archive" / f"{oid}.json").exists, 20, what="the order to finish")
    assert not [m for m in alice.messages() if m.message_id > after and is_answer(m)]
    lab.start_bot()
    answer = alice.wait_message(is_answer, after=after, timeout=30)
    assert answer.text.startswith("✅ <b>web1</b> · done") and "the-answer-survived" in answer.text
    # The same status message was brought to its end, and the answer delivered once.
    final = final_status(alice, status.message_id)
    assert final.text.startswith("✅ <b>web1</b> done") and final.buttons == []
    time.sleep(1.5)
    assert len([m for m in alice.messages() if "the-answer-survived" in m.text and is_answer(m)]) == 1
    rec = wait_for(lambda: next((r for r in lab.orders() if r.id == oid and r.delivered), None))
    assert rec.state == "done"
    # A further restart sends nothing again.
    lab.stop_bot()
    lab.start_bot()
    time.sleep(2)
    assert len([m for m in alice.messages() if "the-answer-survived" in m.text and is_answer(m)]) == 1


def test_interrupted_order_offers_retry(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab()
    alice = lab.user(ALICE)
    web2 = lab.nodes["web2"]
    after = alice.last_id()
    alice.send("/order web2 echo begun; sleep 4; echo retried-fine")
    status = alice.wait_message(lambda m: "running" in m.text and "› begun" in m.text, after=after)
    # The worker dies under the order; its replacement finds it interrupted (and never re-runs it).
    web2.stop(signal.SIGKILL)
    web2.start()
    answer = alice.wait_message(is_answer, after=after, timeout=30)
    assert answer.text.startswith("⚠️ <b>web2</b> · interrupted after")
    status = final_status(alice, status.message_id)
    assert status.text.startswith("⚠️ <b>web2</b> interrupted")
    after = alice.last_id()
    alice.press(status, "Retry")
    again = alice.wait_message(is_answer, after=after, timeout=30)
    assert again.text.startswith("✅ <b>web2</b> · done") and "retried-fine" in again.text
    recs = [r for r in lab.orders() if "retried-fine" in r.payload]
    assert sorted(r.state for r in recs) == ["done", "interrupted"]
    # The alert chat hears that the worker died, but not of the chat's interrupted order itself.
    lab.emulator.wait_message(OPS, "worker_died")
    assert not [m for m in lab.emulator.bot_messages(OPS) if "order_interrupted" in m.text]


def test_alerts_reach_the_chat_once_with_recovery(make_lab: Callable[..., BotLab]) -> None:
    from galaxy_fleet.node import outbox
    from galaxy_fleet.node.spool import Spool

    lab = make_lab(ghost=False)
    emu = lab.emulator
    web1 = lab.nodes["web1"]

    def ops(text: str) -> list[str]:
        return [m.text for m in emu.bot_messages(OPS) if text in m.text]

    # The worker stops: the control node notices its silence, the health check fails.
    web1.stop()
    emu.wait_message(OPS, "the order worker stopped", timeout=20)
    result = web1.galaxy("health")
    assert result.returncode == 1, result.stdout + result.stderr
    emu.wait_message(OPS, "health check failed", timeout=20)
    # The same problem raised again (a second alert file) is not repeated.
    outbox.post(Spool(web1.spool), "web1", "health_failing", "web1 health check failed: again")
    time.sleep(3)
    assert len(ops("health check failed")) == 1 and len(ops("the order worker stopped")) == 1
    # The worker is back: one recovery message.
    web1.start()
    emu.wait_message(OPS, "recovered: web1: the order worker answers again", timeout=20)
    # A bot restart neither repeats anything nor forgets the health problem is still open ...
    lab.stop_bot()
    lab.start_bot()
    time.sleep(2)
    assert len(ops("health check failed")) == 1 and len(ops("the order worker stopped")) == 1
    # ... so its recovery is announced, once.
    assert web1.galaxy("health").returncode == 0
    emu.wait_message(OPS, "recovered: web1 is healthy again", timeout=20)
    time.sleep(2)
    assert len(ops("recovered")) == 2
    assert [a["delivered"] for a in lab.store().alerts()] == [True] * len(lab.store().alerts())
    # Only the alert chat heard of it.
    assert not [m for m in emu.bot_messages(ALICE) if "health" in m.text]


def test_unreachable_machine_is_reported_and_its_return_announced(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab(ghost=False, alert_chats=[OPS, BOB])  # BOB may see web1 only
    emu = lab.emulator
    db1 = lab.nodes["db1"]
    # Break db1's `galaxy remote` (its config file goes away), then drop the connection by killing the
    # remote process: the link cannot come back.
    moved = db1.config_path.with_suffix(".off")
    db1.config_path.rename(moved)
    try:
        assert lab.bot is not None
        from botlab import children

        remotes = [p for p in children(lab.bot.pid)
                   if str(db1.config_path) in open(f"/proc/{p}/cmdline", "rb").read().decode(errors="replace")]
        assert len(remotes) == 1
        import os

        os.kill(remotes[0], signal.SIGKILL)
        msg = emu.wait_message(OPS, "db1</b> is unreachable", timeout=20)
        assert msg.text.startswith("🔴 <b>db1</b> is unreachable")
        # Orders to it fail clearly, others are unaffected.
        _, answer = order(lab.user(ALICE), "/order web2 echo still-fine")
        assert "still-fine" in answer.text
        confirm = ask(lab.user(ALICE), "/order db1 echo x", "Dangerous order")
        after = lab.user(ALICE).last_id()
        lab.user(ALICE).press(confirm, "Confirm")
        failed = lab.user(ALICE).wait_message(is_answer, after=after, timeout=20)
        assert failed.text.startswith("❌ <b>db1</b> · failed") and "unreachable" in failed.text
    finally:
        moved.rename(db1.config_path)
    emu.wait_message(OPS, "db1</b> is reachable again", timeout=40)
    assert len([m for m in emu.bot_messages(OPS) if "db1</b> is unreachable" in m.text]) == 1
    # A user limited to web1 hears nothing of db1, though their chat is an alert chat.
    assert not [m for m in emu.bot_messages(BOB) if "db1" in m.text]


def test_choosing_the_machine_when_there_is_no_default(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab(default_machine=None, ghost=False)
    alice = lab.user(ALICE)
    assert "the machine you pick" in ask(alice, "/help", "Galaxy").text
    choose = ask(alice, "echo picked-by-button", "Which machine")
    labels = [b["text"] for b in choose.buttons]
    assert sorted(labels[:3]) == ["db1", "web1", "web2"] and labels[3:] == ["all", "✖ Cancel"]
    after = alice.last_id()
    alice.press(choose, "web2")
    answer = alice.wait_message(is_answer, after=after)
    assert answer.text.startswith("✅ <b>web2</b>") and "picked-by-button" in answer.text
    # The keyboard message became the order's status message.
    status = final_status(alice, choose.message_id)
    assert status.text.startswith("✅ <b>web2</b> done") and status.buttons == []
    # /order without a target asks too; Cancel sends nothing.
    choose = ask(alice, "/order echo never-sent", "Which machine")
    alice.press(choose, "Cancel")
    alice.wait_message(lambda m: m.message_id == choose.message_id and "Not sent" in m.text)
    assert not [r for r in lab.orders() if "never-sent" in r.payload]


def test_sigterm_stops_the_bot_cleanly(make_lab: Callable[..., BotLab]) -> None:
    lab = make_lab(ghost=False)
    assert lab.bot is not None
    kids = __import__("botlab").children(lab.bot.pid)
    assert lab.stop_bot(signal.SIGTERM) == 0
    time.sleep(0.5)
    import os

    for pid in kids:  # its `galaxy remote` children are gone too
        assert not os.path.exists(f"/proc/{pid}") or "Z" in open(f"/proc/{pid}/stat").read().split()[2]


def test_missing_token_is_a_clear_error(tmp_path) -> None:
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"control": {"inventory": str(tmp_path / "inv.yml")}, "bot": {}}))
    env = {k: v for k, v in __import__("os").environ.items() if k not in ("GALAXY_TELEGRAM_TOKEN",
                                                                           "CREDENTIALS_DIRECTORY")}
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.bot", "--config", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "no bot token: set $GALAXY_TELEGRAM_TOKEN or hand over the systemd credential 'telegram_token'" \
        in proc.stderr
    cfg.write_text(yaml.safe_dump({"bot": {"token": "123:abc"}}))
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.bot", "--config", str(cfg)], env=env,
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "the token never goes in the config" in proc.stderr


def test_token_from_the_systemd_credential(tmp_path, make_lab: Callable[..., BotLab]) -> None:
    import os
    import subprocess
    import sys

    lab = make_lab(ghost=False)
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o700)
    (creds / "telegram_token").write_text(lab.token + "\n")
    env = {k: v for k, v in os.environ.items() if k != "GALAXY_TELEGRAM_TOKEN"}
    env["CREDENTIALS_DIRECTORY"] = str(creds)
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.bot", "--config", str(lab.config_path), "--check"],
                          env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "galaxy bot: OK (3 machines, 4 authorized users)" in proc.stdout


def test_galaxy_bot_check_through_the_galaxy_command(tmp_path) -> None:
    """`galaxy bot --check` (the service's command line) and `python -m galaxy_fleet.bot --check` agree."""
    import os
    import subprocess
    import sys

    import yaml

    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"galaxy_nodes": {"hosts": {
        "web1": {"ansible_connection": "local"}, "web2": {"ansible_connection": "local"}}}}}}))
    cfg = tmp_path / "config.yml"
    cfg.write_text(yaml.safe_dump({"control": {"inventory": str(inventory), "store": str(tmp_path / "galaxy.db")},
                                   "bot": {"authorized_users": [1001]}}))
    env = {k: v for k, v in os.environ.items() if k not in ("GALAXY_TELEGRAM_TOKEN", "CREDENTIALS_DIRECTORY")}
    env["GALAXY_TELEGRAM_TOKEN"] = "123:check"
    for argv in (["-m", "galaxy_fleet.cli", "--config", str(cfg), "bot", "--check"],
                 ["-m", "galaxy_fleet.bot", "--config", str(cfg), "--check"]):
        proc = subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, timeout=30)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "galaxy bot: OK (2 machines, 1 authorized users)"
    proc = subprocess.run([sys.executable, "-m", "galaxy_fleet.cli", "bot", "--help"], capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 0 and "--check" in proc.stdout
