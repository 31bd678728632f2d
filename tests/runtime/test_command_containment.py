"""What a `command` order can reach: no options smuggled in through the payload, no credentials
in the child's environment. Real worker, real programs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from nodeenv import EXECUTORS, PY


def _repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git[:3], "init", "-q"], check=True)
    (repo / "f").write_text("x\n")
    subprocess.run([*git[:3], "add", "f"], check=True)
    subprocess.run([*git, "commit", "-qm", "first commit"], check=True)
    return repo


def _submit(node, executor: str, payload: str) -> str:
    out = node.galaxy("order", "submit", "--json", "--executor", executor, "--", payload, check=True).stdout
    return json.loads(out)["id"]


def test_option_like_payload_is_refused_or_separated(node, tmp_path):
    repo = _repo(tmp_path)
    target = tmp_path / "written-by-git"
    log = ["git", "-C", str(repo), "log", "{payload}"]
    node.write_config(executors={**EXECUTORS,
                                 "gitlog": {"type": "command", "argv": log},
                                 "gitlog_sep": {"type": "command", "argv": log, "end_of_options": True},
                                 "gitlog_opts": {"type": "command", "argv": log, "allow_options": True}})
    node.start_worker()

    refused = node.wait_done(_submit(node, "gitlog", f"--output={target}"))
    assert refused["state"] == "failed"
    assert "refused: the payload begins with '-' and would be an option of git" in refused["error"]
    assert not target.exists()
    oid = _submit(node, "gitlog", f"--output={target}")
    node.wait_done(oid)
    assert [e["type"] for e in node.audit_events(oid)][-1] == "order_failed"

    separated = node.wait_done(_submit(node, "gitlog_sep", f"--output={target}"))
    assert not target.exists()  # after `--` git reads it as a path, not an option
    assert separated["state"] == "done", separated
    assert "first commit" not in (node.spool / "responses" / f"{separated['id']}.md").read_text()

    normal = node.wait_done(_submit(node, "gitlog", "HEAD"))
    assert normal["state"] == "done"
    assert "first commit" in (node.spool / "responses" / f"{normal['id']}.md").read_text()

    opts = node.wait_done(_submit(node, "gitlog_opts", "--oneline"))
    assert opts["state"] == "done"
    assert "first commit" in (node.spool / "responses" / f"{opts['id']}.md").read_text()
    # what the refusal prevents: with options allowed, the payload makes git write a file of its choosing
    node.wait_done(_submit(node, "gitlog_opts", f"--output={target}"))
    assert "first commit" in target.read_text()


def test_end_of_options_needs_a_placeholder(node):
    node.write_config(executors={**EXECUTORS, "bad": {"type": "command", "argv": ["git", "log"],
                                                      "end_of_options": True}})
    proc = node.galaxy("config", "check", str(node.config_path))
    assert proc.returncode != 0 and "'end_of_options' needs a placeholder" in proc.stdout + proc.stderr


def test_children_do_not_inherit_credentials(node, tmp_path):
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "opencode-password").write_text("s3cret-pw")
    node.start_worker(env={"CREDENTIALS_DIRECTORY": str(creds), "OPENCODE_SERVER_PASSWORD": "s3cret-pw",
                           "GALAXY_KEEP_ME": "kept"})
    script = ("import os; print(sorted(k for k in os.environ if 'CREDENTIAL' in k or 'PASSWORD' in k)); "
              "print(os.environ.get('GALAXY_KEEP_ME'))")
    side = node.wait_done(_submit(node, "py", script))
    text = (node.spool / "responses" / f"{side['id']}.md").read_text()
    assert side["state"] == "done" and "[]" in text and "kept" in text
    assert "s3cret-pw" not in text
    assert PY
