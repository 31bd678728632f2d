"""A lab of its own with a deployed fleet whose nodes run a real ``opencode serve``.

Session fixture ``e2e``: boots a lab (first free id of E2E_LAB_IDS, state in
artifacts/e2e-lab), starts the scripted LLM and the Telegram emulator's Bot API
on this host's lab address (198.18.N.1, which the machines reach; nothing else
does), deploys playbooks/site.yml with opencode enabled on the nodes (the
binary shipped from .tools/opencode, its provider pointing at the scripted LLM)
and the Telegram bot enabled on the control machine (its token from the
deploy's variables, handed over as a systemd credential), and runs a second
control side here in the root namespace: a ``Fleet`` with the control
machine's own routing key, inventory and known_hosts, so orders and alerts
take the real path (SSH to each node's galaxy user, forced command
``galaxy remote``). Everything is torn down at the end of the session.
"""

from __future__ import annotations

import os
import secrets
from typing import Iterator

import pytest
from botdeploy import bot_vars, new_token
from e2e import OPENCODE_START_GRACE, REPO, E2ELab, boot_lab, control_config, deploy
from support.llm_server import ScriptedLLM
from support.telegram_emulator import TelegramEmulator

E2E_LAB_IDS = [os.environ["GALAXY_E2E_LAB_ID"]] if os.environ.get("GALAXY_E2E_LAB_ID") else \
    ["16", "17", "18", "19"]
# GALAXY_E2E_KEEP=1 (debugging): reuse a running lab and leave it running.
KEEP = bool(os.environ.get("GALAXY_E2E_KEEP"))


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    lab = E2ELab(E2E_LAB_IDS[0], REPO / "artifacts" / "e2e-lab")
    llm: ScriptedLLM | None = None
    telegram: TelegramEmulator | None = None
    try:
        lab = boot_lab(REPO / "artifacts" / "e2e-lab", E2E_LAB_IDS, keep=KEEP)
        llm = ScriptedLLM(host=lab.root_addr).start()
        lab.llm = llm
        token = new_token()
        telegram = lab.telegram = TelegramEmulator(token, proxy_host=lab.root_addr).start(lab.state)
        lab.webhook_secret = secrets.token_urlsafe(32)
        deploy(lab, llm, OPENCODE_START_GRACE,
               control_vars=bot_vars(telegram.api_base_url, token, lab.webhook_secret))
        lab.start_fleet(control_config(lab, tmp_path_factory.mktemp("e2e-control")))
        yield lab
    finally:
        lab.stop_fleet()
        if telegram is not None:
            telegram.stop()
        if llm is not None:
            llm.stop()
        if lab.up and not KEEP:
            lab.lab("down", check=False)
