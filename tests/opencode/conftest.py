"""Fixtures: one scripted LLM and one real `opencode serve` for the module,
a fresh script and project directory for every test."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.executor_harness import Harness
from support.llm_server import ScriptedLLM
from support.opencode_server import OpenCodeServer


@pytest.fixture(scope="session")
def llm_server() -> Iterator[ScriptedLLM]:
    with ScriptedLLM(default_reply="ok") as llm:
        yield llm


@pytest.fixture(scope="session")
def opencode(llm_server: ScriptedLLM) -> Iterator[OpenCodeServer]:
    with OpenCodeServer(llm_server.url) as server:
        yield server


@pytest.fixture
def llm(llm_server: ScriptedLLM) -> Iterator[ScriptedLLM]:
    llm_server.reset()
    yield llm_server
    llm_server.reset()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "project"
    path.mkdir()
    return path


@pytest.fixture
def harness(tmp_path: Path, opencode: OpenCodeServer) -> Harness:
    state = tmp_path / "state"
    state.mkdir()
    return Harness(state, opencode.url)
