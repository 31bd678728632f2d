"""A local fleet: real workers on temp spools, reached through `galaxy remote`
run as local processes (ansible_connection: local), and a real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nodeenv import EXECUTORS, NodeEnv


class LocalFleet:
    def __init__(self, root: Path, names: list[str], extra_hosts: dict[str, dict[str, Any]] | None = None):
        self.root = root
        self.nodes: dict[str, NodeEnv] = {}
        for name in names:
            (root / name).mkdir()
            env = NodeEnv(root / name)
            env.write_config(host=name)
            self.nodes[name] = env
        hosts = {name: {"ansible_connection": "local", "galaxy_config_path": str(env.config_path)}
                 for name, env in self.nodes.items()}
        self.inventory = root / "inventory.yml"
        self.inventory.write_text(yaml.safe_dump({"all": {"children": {
            "galaxy_nodes": {"hosts": {**hosts, **(extra_hosts or {})},
                             "children": {"web": {"hosts": {n: None for n in names if n.startswith("web")}}}},
        }}}))
        self.control_config = root / "control.yml"
        self.write_control()

    def write_control(self, **control: Any) -> None:
        (self.root / "known_hosts").touch()
        self.control_config.write_text(yaml.safe_dump({
            "host": "control", "spool_dir": str(self.root / "control-spool"),
            "executors": dict(EXECUTORS), "worker": {"default_executor": "echo"},
            "control": {"inventory": str(self.inventory), "store": str(self.root / "galaxy.db"),
                        "known_hosts": str(self.root / "known_hosts"),
                        "connect_timeout": 3, "ping_interval": 1, "dead_after": 4, "lost_after": 3, **control},
        }))

    def start_workers(self) -> None:
        for env in self.nodes.values():
            env.start_worker()

    def fleet(self, **kw: Any):
        from galaxy_fleet.config import load
        from galaxy_fleet.control.fleet import Fleet

        fleet = Fleet(load(self.control_config), **kw)
        self._fleets.append(fleet)
        fleet.start()
        return fleet

    _fleets: list[Any]

    def stop(self) -> None:
        for fleet in self._fleets:
            fleet.stop()
        for env in self.nodes.values():
            env.stop_workers()


@pytest.fixture
def local_fleet(tmp_path: Path):
    made: list[LocalFleet] = []

    def make(names: list[str] = ["web1", "web2"], extra_hosts: dict[str, dict[str, Any]] | None = None) -> LocalFleet:
        lf = LocalFleet(tmp_path, names, extra_hosts)
        lf._fleets = []
        made.append(lf)
        return lf

    yield make
    for lf in made:
        lf.stop()
