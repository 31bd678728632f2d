"""Run a module's main() in-process and catch what it would print as JSON.

Only the boundary is faked: the ``galaxy`` command the module runs is a small
script written per test that records its argv and stdin and answers with a
scripted exit code, stdout and stderr. The module, AnsibleModule and
run_command are the real ones.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args
from galaxy_fake import FakeGalaxy, make_fake


class ExitJson(Exception):
    def __init__(self, result: dict[str, Any]):
        super().__init__(result)
        self.result = result


class FailJson(Exception):
    def __init__(self, result: dict[str, Any]):
        super().__init__(result.get("msg"))
        self.result = result


def _exit_json(self: basic.AnsibleModule, **kwargs: Any) -> None:
    kwargs.setdefault("changed", False)
    raise ExitJson(kwargs)


def _fail_json(self: basic.AnsibleModule, msg: str = "", **kwargs: Any) -> None:
    kwargs["failed"] = True
    kwargs["msg"] = msg
    raise FailJson(kwargs)


@pytest.fixture
def galaxy(tmp_path: Path) -> FakeGalaxy:
    return make_fake(tmp_path)


@pytest.fixture
def run_module():
    """run_module(module, args) -> (kind, result) where kind is "exit" or "fail"."""

    def run(module: Any, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        args = {"run_as": "", **args}  # the fake and the test worker run as the test's own user
        with patch_module_args(args), mock.patch.multiple(
            basic.AnsibleModule, exit_json=_exit_json, fail_json=_fail_json
        ):
            try:
                module.main()
            except ExitJson as done:
                return "exit", done.result
            except FailJson as failed:
                return "fail", failed.result
        raise AssertionError("module returned without exit_json or fail_json")

    os.environ.setdefault("LC_ALL", "C.UTF-8")
    return run
