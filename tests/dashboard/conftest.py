"""Fixtures: a store filled by a real local fleet (for these tests, then stopped), the real
`galaxy dashboard` process on it, headless Chromium, Flask apps over the store."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from dashboard.dashboard_support import DashboardProcess, FilledFleet, fill, local_fleet_class


@pytest.fixture(scope="package")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FilledFleet]:
    root = tmp_path_factory.mktemp("dashfleet")
    LocalFleet = local_fleet_class()
    lf = LocalFleet(root, ["web1", "web2", "db1"],
                    extra_hosts={"ghost": {"ansible_host": "127.0.0.1", "ansible_port": 1}})
    lf._fleets = []
    for name, env in lf.nodes.items():
        env.write_config(host=name, worker={"shutdown_grace": 0})  # teardown need not wait for the long order
    try:
        lf.start_workers()
        fleet = lf.fleet()
        orders = fill(lf, fleet)
        config = yaml.safe_load(lf.control_config.read_text())
        config["dashboard"] = {"refresh": 1, "title": "Galaxy test fleet"}
        lf.control_config.write_text(yaml.safe_dump(config))
        yield FilledFleet(lf, fleet, root / "galaxy.db", lf.control_config, orders)
    finally:
        lf.stop()


@pytest.fixture(scope="package")
def dashboard(filled: FilledFleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DashboardProcess]:
    proc = DashboardProcess(filled.config_path, tmp_path_factory.mktemp("dashproc"))
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="package")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dashboard.chromium_cdp import Chromium

    browser = Chromium(tmp_path_factory.mktemp("chromium"))
    try:
        yield browser
    finally:
        browser.stop()


@pytest.fixture
def app_for(filled: FilledFleet) -> Any:
    """A Flask app over the filled store (settings overridable)."""
    from galaxy_fleet.config import load
    from galaxy_fleet.dashboard import create_app

    def make(**overrides: Any) -> Any:
        overrides.setdefault("token", None)
        app = create_app(load(filled.config_path), **overrides)
        app.testing = True
        return app

    return make
