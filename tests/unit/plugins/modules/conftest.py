"""Run a module's main() in-process and catch what it would print as JSON.

Only the boundary is faked: the ``galaxy`` command the module runs is a small
script written per test that records its argv and stdin and answers with a
scripted exit code, stdout and stderr. The module, AnsibleModule and
run_command are the real ones.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from ansible.module_utils import basic
from ansible.module_utils.testing import patch_module_args


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


_FAKE = textwrap.dedent(
    """\
    #!{python}
    # A stand-in for the galaxy CLI: records the call, answers as scripted.
    import json, sys
    here = {here!r}
    with open(here + "/calls.jsonl", "a") as log:
        log.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
    with open(here + "/answer.json") as f:
        answer = json.load(f)
    sys.stdout.write(answer.get("stdout", ""))
    sys.stderr.write(answer.get("stderr", ""))
    sys.exit(answer.get("rc", 0))
    """
)


@dataclass
class FakeGalaxy:
    """The fake galaxy command: set ``answer(...)``, read ``calls`` afterwards."""

    dir: Path

    @property
    def path(self) -> str:
        return str(self.dir / "galaxy")

    def answer(self, rc: int = 0, stdout: Any = "", stderr: str = "") -> None:
        if not isinstance(stdout, str):
            stdout = json.dumps(stdout) + "\n"
        (self.dir / "answer.json").write_text(json.dumps({"rc": rc, "stdout": stdout, "stderr": stderr}))

    @property
    def calls(self) -> list[dict[str, Any]]:
        log = self.dir / "calls.jsonl"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def galaxy(tmp_path: Path) -> FakeGalaxy:
    fake = FakeGalaxy(tmp_path)
    script = tmp_path / "galaxy"
    script.write_text(_FAKE.format(python=sys.executable, here=str(tmp_path)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    fake.answer()
    return fake


@pytest.fixture
def run_module():
    """run_module(module, args) -> (kind, result) where kind is "exit" or "fail"."""

    def run(module: Any, args: dict[str, Any]) -> tuple[str, dict[str, Any]]:
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
