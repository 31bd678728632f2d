from __future__ import annotations

from ansible_collections.galaxy_protocol.fleet.plugins.modules import order

DONE = {
    "id": "20261128T192749.123456Z-3f9a1c2e",
    "state": "done",
    "exit_code": 0,
    "answer": " 19:27:49 up 3 days,  load average: 0.00, 0.01, 0.00\n",
    "response": "# Order 20261128T192749.123456Z-3f9a1c2e: done\n",
    "details": {"truncated": False},
    "timings": {"run_seconds": 0.01},
}


def test_wait_returns_the_response(galaxy, run_module):
    galaxy.answer(0, DONE)
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "executor": "shell"})
    assert kind == "exit"
    assert result["changed"] is True
    assert result["state"] == "done"
    assert result["answer"] == DONE["answer"] and result["response"] == DONE["response"]
    assert result["id"] == DONE["id"]
    (call,) = galaxy.calls
    assert call["argv"] == ["order", "submit", "--json", "--executor", "shell", "--from", "ansible", "--wait", "-"]
    assert call["stdin"] == "uptime"


def test_every_option_reaches_the_cli_and_payload_stays_off_argv(galaxy, run_module):
    galaxy.answer(0, DONE)
    secret_payload = "deploy with token hunter2"
    kind, result = run_module(order, {
        "path": galaxy.path, "config": "/etc/galaxy/other.yml", "payload": secret_payload,
        "target": "web1", "executor": "opencode", "timeout": 90, "session": "s1", "priority": 5,
        "sender": "alice", "options": {"project": "api", "model": "m1"}, "wait_timeout": 30,
    })
    assert kind == "exit" and result["state"] == "done"
    (call,) = galaxy.calls
    assert call["argv"] == [
        "--config", "/etc/galaxy/other.yml", "order", "submit", "--json",
        "--target", "web1", "--executor", "opencode", "--timeout", "90.0", "--session", "s1",
        "--priority", "5", "--from", "alice",
        "--option", "model=m1", "--option", "project=api",
        "--wait", "--wait-timeout", "30.0", "-",
    ]
    assert all(secret_payload not in arg for arg in call["argv"])
    assert call["stdin"] == secret_payload


def test_no_wait_returns_the_queued_id(galaxy, run_module):
    galaxy.answer(0, {"id": DONE["id"], "state": "queued"})
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "wait": False})
    assert kind == "exit"
    assert (result["id"], result["state"], result["changed"]) == (DONE["id"], "queued", True)
    assert "--wait" not in galaxy.calls[0]["argv"]


def test_unknown_executor_fails_cleanly_with_the_cli_message(galaxy, run_module):
    galaxy.answer(2, "", "galaxy: unknown executor 'nope' (known: opencode, shell)\n")
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "executor": "nope"})
    assert kind == "fail"
    assert result["msg"] == "galaxy rejected the order failed (exit 2): galaxy: unknown executor 'nope' (known: opencode, shell)"
    assert result["rc"] == 2


def test_oversized_payload_fails_cleanly(galaxy, run_module):
    galaxy.answer(2, "", "galaxy: payload is 70000 bytes, the limit is 65536 (worker.max_payload_bytes)\n")
    kind, result = run_module(order, {"path": galaxy.path, "payload": "x" * 70000})
    assert kind == "fail"
    assert "the limit is 65536" in result["msg"]
    assert len(galaxy.calls[0]["stdin"]) == 70000


def test_order_that_ends_not_done_fails_with_its_result(galaxy, run_module):
    failed = dict(DONE, state="failed", exit_code=1, error="command exited 1")
    galaxy.answer(1, failed)
    kind, result = run_module(order, {"path": galaxy.path, "payload": "df"})
    assert kind == "fail"
    assert result["msg"] == f"order {DONE['id']} ended failed: command exited 1"
    assert result["state"] == "failed" and result["exit_code"] == 1 and result["changed"] is True


def test_order_not_queued_fails_with_the_cli_message(galaxy, run_module):
    galaxy.answer(1, "", "galaxy: order not queued: No space left on device\n")
    kind, result = run_module(order, {"path": galaxy.path, "payload": "df"})
    assert kind == "fail"
    assert result["msg"] == "galaxy order submit failed (exit 1): galaxy: order not queued: No space left on device"


def test_wait_gave_up_passes_on_the_cli_message(galaxy, run_module):
    galaxy.answer(3, "", f"galaxy: order {DONE['id']} is still running after 1 s\n")
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "wait_timeout": 1})
    assert kind == "fail"
    assert result["msg"] == f"waiting for the order failed (exit 3): galaxy: order {DONE['id']} is still running after 1 s"


def test_check_mode_submits_nothing(galaxy, run_module):
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "_ansible_check_mode": True})
    assert kind == "exit"
    assert result["changed"] is True
    assert galaxy.calls == []


def test_missing_cli_says_what_to_do(tmp_path, run_module):
    kind, result = run_module(order, {"path": str(tmp_path / "nope"), "payload": "uptime"})
    assert kind == "fail"
    assert "galaxy command not found" in result["msg"] and "node role" in result["msg"]


def test_garbage_output_is_reported(galaxy, run_module):
    galaxy.answer(0, "Traceback (most recent call last):\n")
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime"})
    assert kind == "fail"
    assert "unreadable JSON" in result["msg"]


def test_bad_arguments_never_reach_the_cli(galaxy, run_module):
    for args, fragment in (
        ({"payload": "   "}, "payload is empty"),
        ({"payload": "uptime", "timeout": -1}, "timeout must be a positive"),
        ({"payload": "uptime", "priority": "high"}, "priority"),
        ({}, "payload"),
    ):
        kind, result = run_module(order, {"path": galaxy.path, **args})
        assert kind == "fail", args
        assert fragment in result["msg"], result["msg"]
    assert galaxy.calls == []


def test_run_as_a_missing_account_is_explained(galaxy, run_module):
    kind, result = run_module(order, {"path": galaxy.path, "payload": "uptime", "run_as": "no-such-user-xyz"})
    assert kind == "fail"
    assert "run_as user no-such-user-xyz does not exist" in result["msg"]
    assert galaxy.calls == []


def test_run_as_drops_root_to_the_service_account(run_module):
    import os
    import pwd
    import shutil
    import tempfile
    from pathlib import Path

    from galaxy_fake import make_fake

    assert os.geteuid() == 0, "this test needs root (make test runs as root)"
    nobody = pwd.getpwnam("nobody")
    shared = Path(tempfile.mkdtemp(prefix="galaxy-run-as-", dir="/tmp"))
    try:
        shared.chmod(0o777)  # the fake, running as nobody, logs its calls here
        fake = make_fake(shared)
        fake.answer(0, {"id": "x1", "state": "queued"})
        for name in ("galaxy", "answer.json"):
            (shared / name).chmod(0o755)
        kind, result = run_module(order, {"path": fake.path, "payload": "uptime", "wait": False, "run_as": "nobody"})
        assert kind == "exit", result
        assert (shared / "uids.log").read_text().split() == [str(nobody.pw_uid)]
        assert fake.calls[0]["stdin"] == "uptime"
    finally:
        shutil.rmtree(shared)
