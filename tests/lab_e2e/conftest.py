"""A lab of its own with a deployed fleet whose nodes run a real ``opencode serve``.

Session fixture ``e2e``: boots a lab (first free id of E2E_LAB_IDS, state in
artifacts/e2e-lab), starts the scripted LLM on this host's lab address
(198.18.N.1, which the nodes reach; nothing else does), deploys
playbooks/site.yml with opencode enabled (the binary shipped from
.tools/opencode, its provider pointing at the scripted LLM), and runs the
control side here in the root namespace: a ``Fleet`` with the control
machine's own routing key, inventory and known_hosts, so orders and alerts
take the real path (SSH to each node's galaxy user, forced command
``galaxy remote``). Everything is torn down at the end of the session.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

import pytest
from labfixture import lab_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "collection"))

from collection import REPO, failures, playbook  # noqa: E402
from e2e import E2ELab, LabLLM, control_config  # noqa: E402

E2E_LAB_IDS = [os.environ["GALAXY_E2E_LAB_ID"]] if os.environ.get("GALAXY_E2E_LAB_ID") else \
    ["16", "17", "18", "19"]
OPENCODE_START_GRACE = 10  # seconds the health check leaves a starting opencode serve alone
# GALAXY_E2E_KEEP=1 (debugging): reuse a running lab and leave it running.
KEEP = bool(os.environ.get("GALAXY_E2E_KEEP"))


def boot_lab(state: Path, ids: list[str]) -> E2ELab:
    """A fresh lab on the first free id (an id held by another checkout's run is skipped)."""
    state.mkdir(parents=True, exist_ok=True)
    lab = E2ELab(ids[0], state)
    for lab_id in ids:
        lab.lab_id = lab_id
        if not KEEP:
            lab.lab("down", check=False)  # machines left by an interrupted run of this checkout: start fresh
        booted = lab.lab("up", "--nodes", "2", check=False)
        if booted.returncode == 0:
            lab.up = True
            break
        if "already running from another state directory" not in booted.stderr:
            raise RuntimeError(f"lab up failed:\n{booted.stderr}{booted.stdout}")
    else:
        raise RuntimeError(f"no free lab id among {ids}")
    lab.hosts = dict(json.loads(lab.lab("status", "--json", check=False).stdout)["hosts"])
    return lab


def deploy(lab: E2ELab, llm: LabLLM) -> None:
    """site.yml with opencode on the nodes, its only provider the scripted LLM."""
    source = lab.state / "galaxy-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO / "files" / "galaxy", source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    extra = lab.state / "opencode-vars.json"
    extra.write_text(json.dumps({
        "galaxy_node_source_dir": str(source),
        "galaxy_control_source_dir": str(source),
        "galaxy_node_opencode_enabled": True,
        "galaxy_node_opencode_providers": {"scripted": {
            "npm": "@ai-sdk/openai-compatible", "name": "Scripted LLM",
            "options": {"baseURL": llm.url, "apiKey": "scripted-lab-key"},
            "models": {"echo": {"name": "Echo", "cost": {"input": 1.0, "output": 2.0},
                                "limit": {"context": 100000, "output": 4096}}}}},
        "galaxy_node_opencode_model": "scripted/echo",
        "galaxy_node_worker_heartbeat_interval": 2,
        "galaxy_node_health": {"opencode_start_grace": OPENCODE_START_GRACE},
    }))
    cp = playbook(lab.inventory, "site.yml", "-e", f"@{extra}")
    if cp.returncode != 0:
        raise RuntimeError(f"site.yml failed:\n{failures(cp.stdout + cp.stderr)}")
    # A changed config restarts opencode serve at the end of the play: wait until it listens.
    for node in ("web1", "web2"):
        lab.must(node, "for i in $(seq 120); do ss -Hltn 'sport = :4096' | grep -q . && exit 0; sleep 0.5; done; "
                       "systemctl status opencode-serve --no-pager; exit 1")


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2ELab]:
    lab = E2ELab(E2E_LAB_IDS[0], REPO / "artifacts" / "e2e-lab")
    llm: LabLLM | None = None
    try:
        lab = boot_lab(REPO / "artifacts" / "e2e-lab", E2E_LAB_IDS)
        llm = LabLLM(lab.root_addr).start()
        lab.llm = llm
        deploy(lab, llm)
        lab.start_fleet(control_config(lab, tmp_path_factory.mktemp("e2e-control")))
        yield lab
    finally:
        lab.stop_fleet()
        if llm is not None:
            llm.stop()
        if lab.up and not KEEP:
            lab.lab("down", check=False)


__all__ = ["lab_tool"]
