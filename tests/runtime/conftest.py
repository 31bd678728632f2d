"""Fixtures for the node runtime tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodeenv import NodeEnv


@pytest.fixture
def node(tmp_path: Path):
    env = NodeEnv(tmp_path)
    yield env
    env.stop_workers()
