"""Webhook mode: Telegram pushes updates to the bot's own web server (PTB's run_webhook, tornado).

The emulator cannot push webhooks the way Telegram does, so its proxy (or the test itself) plays
Telegram's side: the real Update JSON, POSTed to the bot on 127.0.0.1 with the
X-Telegram-Bot-Api-Secret-Token header. The bot's replies go to the emulator's Bot API as usual.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import uuid
from typing import Any, Callable

from botlab import ALICE, BotLab, ask, order
from support.telegram_emulator import _free_port, post_update


def webhook_lab(make_lab: Callable[..., BotLab], secret: str | None) -> tuple[BotLab, str]:
    port = _free_port()
    url = f"http://127.0.0.1:{port}/galaxy-hook"
    env = {"GALAXY_TELEGRAM_WEBHOOK_SECRET": secret} if secret else {}
    lab = make_lab(ghost=False, mode="webhook", bot_env=env,
                   webhook={"listen": "127.0.0.1", "port": port, "public_url": url})
    return lab, url


def marker() -> str:
    return f"m{uuid.uuid4().hex[:10]}"


def test_orders_over_the_webhook_and_a_wrong_secret_refused(make_lab: Callable[..., BotLab]) -> None:
    secret = "wh_" + secrets.token_urlsafe(24)
    lab, url = webhook_lab(make_lab, secret)
    emu = lab.emulator
    alice = lab.user(ALICE)
    # At start the bot registered its URL and secret with Telegram, and deleted nothing.
    calls = emu.webhook_calls
    assert [c["method"] for c in calls] == ["setWebhook"]
    hook: dict[str, Any] = calls[0]
    assert hook["url"] == url and hook["secret_token"] == secret
    assert hook["allowed_updates"] == ["message", "callback_query"]
    assert emu.webhook is not None

    # /start, POSTed by the test as Telegram would.
    after = alice.last_id()
    status, _ = post_update(url, alice.update("/start", 700001), secret)
    assert status == 200
    reply = alice.wait_message("user id", after=after)
    assert "<code>1001</code>" in reply.text and "<b>authorized</b>" in reply.text

    # An order typed in the chat: the proxy pushes it to the webhook; a real worker answers.
    tag = marker()
    status_msg, answer = order(alice, f"/order web1 echo {tag}-over-webhook")
    assert answer.text.startswith("✅ <b>web1</b> · done") and f"{tag}-over-webhook" in answer.text
    assert status_msg.text.startswith("✅ <b>web1</b> done")

    # A wrong or missing secret: 403, and nothing happens.
    never = marker()
    update = alice.update(f"/order web1 echo {never}", 700002)
    assert post_update(url, update, "wrong-" + secret)[0] == 403
    assert post_update(url, update, None)[0] == 403
    assert post_update(url, update, secret[:-1])[0] == 403
    # The same update with the right secret does run: it was refused for the secret alone.
    tag2 = marker()
    after = alice.last_id()
    assert post_update(url, alice.update(f"/order web2 echo {tag2}", 700003), secret)[0] == 200
    alice.wait_message(lambda m: f"{tag2}" in m.text and "done" in m.text, after=after, timeout=30)
    assert not [r for r in lab.orders() if never in r.payload]
    assert not [m for m in alice.messages() if never in m.text]
    # Neither the token nor the secret shows in the log (DEBUG: every request URL is logged).
    log = lab.bot_log()
    assert "webhook mode: listening on 127.0.0.1" in log
    assert lab.token not in log and secret not in log


def test_switching_back_to_polling_deletes_the_webhook(make_lab: Callable[..., BotLab]) -> None:
    # No secret configured: the bot makes a random one for each run and registers it.
    lab, url = webhook_lab(make_lab, None)
    emu = lab.emulator
    alice = lab.user(ALICE)
    hook = emu.webhook
    assert hook is not None and hook["url"] == url and len(hook["secret_token"]) >= 32
    assert hook["secret_token"] not in lab.bot_log()
    assert "a random one for this run" in lab.bot_log()
    ask(alice, "/help", "Galaxy")  # pushed with the random secret
    # While the webhook is set, Telegram refuses getUpdates (as the proxy does).
    code = subprocess.run([sys.executable, "-c", f"""
import json, urllib.request, urllib.error
try:
    urllib.request.urlopen({(emu.api_base_url + lab.token + '/getUpdates')!r}, data=b'')
except urllib.error.HTTPError as e:
    print(e.code, json.load(e)['description'])
"""], capture_output=True, text=True, timeout=30).stdout
    assert code.startswith("409 Conflict: can't use getUpdates method while webhook is active")

    lab.stop_bot()
    lab.bot_overrides["mode"] = "polling"
    lab.write_config()
    sets = len(emu.webhook_calls)
    lab.start_bot()
    # PTB's polling bootstrap deletes the webhook (pending updates kept), then polls.
    later = emu.webhook_calls[sets:]
    assert [c["method"] for c in later] == ["deleteWebhook"]
    assert later[0].get("drop_pending_updates") in (None, "false", False)
    assert emu.webhook is None
    tag = marker()
    _, answer = order(alice, f"/order web1 echo {tag}-polled")
    assert f"{tag}-polled" in answer.text
    # And webhook mode again registers it again.
    lab.stop_bot()
    lab.bot_overrides["mode"] = "webhook"
    lab.write_config()
    lab.start_bot()
    assert emu.webhook is not None and emu.webhook_calls[-1]["method"] == "setWebhook"
    assert emu.webhook["secret_token"] != hook["secret_token"]  # a fresh random one
    assert "user id" in ask(alice, "/start", "user id").text


def test_check_shows_the_webhook_and_refuses_a_bad_secret(make_lab: Callable[..., BotLab]) -> None:
    import os

    lab = make_lab(ghost=False)
    lab.bot_overrides.update(mode="webhook", webhook={"public_url": "https://bot.example.org/galaxy-hook"})
    lab.write_config()
    env = {k: v for k, v in os.environ.items() if k != "GALAXY_CONFIG"}
    env["GALAXY_TELEGRAM_TOKEN"] = lab.token

    def check(**extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "galaxy_fleet.bot", "--config", str(lab.config_path),
                               "--check"], env={**env, **extra}, capture_output=True, text=True, timeout=30)

    ok = check(GALAXY_TELEGRAM_WEBHOOK_SECRET="good_secret-1")
    assert ok.returncode == 0, ok.stderr
    assert "webhook https://bot.example.org/galaxy-hook" in ok.stdout
    bad_secret = "has spaces and $ signs"
    bad = check(GALAXY_TELEGRAM_WEBHOOK_SECRET=bad_secret)
    assert bad.returncode == 2 and "must be 1 to 256 characters of A-Z, a-z, 0-9, _ and -" in bad.stderr
    assert bad_secret not in bad.stderr + bad.stdout
    lab.bot_overrides["webhook"] = {"public_url": "https://x.example/h", "secret_token": "abc"}
    lab.write_config()
    clear = check()
    assert clear.returncode == 2 and "the secret token never goes in the config" in clear.stderr
