"""An order typed in Telegram reaches opencode on a lab node (issue 5's lab test).

The real bot process (`python -m galaxy_fleet.bot`) runs on this host, in the
root namespace (which reaches the lab), with the control machine's routing
key, known_hosts and inventory; Telegram is the emulator of tests/bot. The
order goes bot -> SSH -> `galaxy remote` on web2 -> worker -> opencode serve
-> the scripted LLM on 198.18.N.1, and the answer comes back to the chat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bot"))

from botlab import ALICE, BOT, bot_settings, new_token, order  # noqa: E402
from e2e import control_config, poll  # noqa: E402
from support.llm_server import Text  # noqa: E402
from support.telegram_emulator import TelegramEmulator  # noqa: E402


def test_an_order_from_the_bot_reaches_opencode_on_a_node_and_the_answer_comes_back(e2e, tmp_path):
    token = new_token()
    emulator = TelegramEmulator(token).start(tmp_path)
    bot: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "bot.log"
    try:
        cfg_path = control_config(e2e, tmp_path)
        cfg = yaml.safe_load(cfg_path.read_text())
        cfg["host"] = "e2e-bot"
        cfg["bot"] = bot_settings(emulator.api_base_url, default_machine="web2")
        cfg_path.write_text(yaml.safe_dump(cfg))
        env = {k: v for k, v in os.environ.items() if k != "GALAXY_CONFIG"}
        env.update({"GALAXY_TELEGRAM_TOKEN": token, "PYTHONUNBUFFERED": "1"})
        with open(log_path, "wb") as log:
            bot = subprocess.Popen([*BOT, "--config", str(cfg_path)], env=env, stdout=log,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

        def ready() -> bool:
            assert bot is not None and bot.poll() is None, log_path.read_text(errors="replace")[-3000:]
            return "bot ready" in log_path.read_text(errors="replace")

        poll(ready, 60, "the bot to start")
        e2e.llm.reset()
        e2e.llm.script(Text("Hello from opencode on web2.", chunks=5, delay=0.4))
        status, answer = order(emulator.user(ALICE), "/order web2 greet the chat", timeout=120)
        assert "Hello from opencode on web2." in answer.text, answer.text
        assert "done" in status.text, status.text
        # The figures of the run are in the bot's store: cost and tokens from opencode.
        from galaxy_fleet.store import Store

        store = Store(cfg["control"]["store"])
        try:
            rec = next(r for r in store.orders(limit=10) if r.payload == "greet the chat")
        finally:
            store.close()
        assert rec.state == "done" and rec.host == "web2"
        assert rec.details.get("cost", 0) > 0 and rec.details.get("tokens_out", 0) > 0, rec.details
        assert any("greet the chat" in str(m.get("content")) for c in e2e.llm.chats for m in c["messages"])
        assert token not in log_path.read_text(errors="replace")
    finally:
        if bot is not None and bot.poll() is None:
            bot.terminate()
            try:
                bot.wait(30)
            except subprocess.TimeoutExpired:
                bot.kill()
                bot.wait()
        emulator.stop()
