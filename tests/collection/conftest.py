"""A lab of its own for the deploy tests (lab id 8 on 198.18.8.0/24), so that
deploying Galaxy never disturbs the shared session lab other tests use."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from labfixture import lab_tool

from collection import REPO

# Lab ids are per machine: another checkout's run may hold one; take the first free.
DEPLOY_LAB_IDS = [os.environ["GALAXY_DEPLOY_LAB_ID"]] if os.environ.get("GALAXY_DEPLOY_LAB_ID") else \
    ["8", "11", "12", "13", "14", "15"]


@dataclass
class DeployLab:
    lab_id: str
    inventory: Path
    hosts: dict[str, str]
    state: Path
    source: Path  # a snapshot of files/galaxy: edits to the working tree do not leak into a run

    def lab(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return lab_tool("--lab-id", self.lab_id, "--state-dir", str(self.state), "--inventory",
                        str(self.inventory), *args, check=check)

    def ssh(self, name: str, command: str) -> subprocess.CompletedProcess[str]:
        """Run a shell command line as root on machine ``name``."""
        return self.lab("ssh", name, "--", command, check=False)

    def source_vars(self) -> list[str]:
        return ["-e", f"galaxy_node_source_dir={self.source} galaxy_control_source_dir={self.source}"]


@pytest.fixture(scope="session")
def deploy_lab() -> Iterator[DeployLab]:
    state = REPO / "artifacts" / "deploy-lab"
    state.mkdir(parents=True, exist_ok=True)
    source = state / "galaxy-src"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO / "files" / "galaxy", source,
                    ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__"))
    lab = DeployLab(DEPLOY_LAB_IDS[0], state / "hosts.yml", {}, state, source)
    up = False
    try:
        for lab_id in DEPLOY_LAB_IDS:
            lab.lab_id = lab_id
            lab.lab("down", check=False)  # machines left by an interrupted run of this checkout: start fresh
            booted = lab.lab("up", "--nodes", "2", check=False)
            if booted.returncode == 0:
                up = True
                break
            if "already running from another state directory" not in booted.stderr:
                raise RuntimeError(f"lab up failed:\n{booted.stderr}{booted.stdout}")
        else:
            raise RuntimeError(f"no free lab id among {DEPLOY_LAB_IDS}")
        info = json.loads(lab.lab("status", "--json").stdout)
        lab.hosts = dict(info["hosts"])
        yield lab
    finally:
        if up:
            lab.lab("down", check=False)
