"""A stand-in for the galaxy command at the module's boundary (see conftest.py)."""

from __future__ import annotations

import json
import stat
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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
    import os
    with open(here + "/uids.log", "a") as log:
        log.write("%d\\n" % os.getuid())
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


def make_fake(directory: Path) -> FakeGalaxy:
    """Write the fake galaxy command into ``directory``."""
    fake = FakeGalaxy(directory)
    script = directory / "galaxy"
    script.write_text(_FAKE.format(python=sys.executable, here=str(directory)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    fake.answer()
    return fake
