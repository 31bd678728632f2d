"""One policy for every entry point: MCP and `galaxy send` go through control/policy.py, each refusal
audited in the central trail."""

from __future__ import annotations

import os
import pwd
import subprocess
import sys

import anyio
import pytest
import yaml

from nodeenv import GALAXY


def _configure(lf, **sections) -> dict[str, str]:
    data = yaml.safe_load(lf.control_config.read_text())
    data.update(sections)
    lf.control_config.write_text(yaml.safe_dump(data))
    return {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}


def _refusals(lf) -> list[dict]:
    from galaxy_fleet.control.store import Store

    store = Store(lf.root / "galaxy.db")
    try:
        return store.events(type="order_refused", limit=None)
    finally:
        store.close()


def _mcp_calls(env: dict[str, str], calls: list[tuple[str, dict]]) -> list:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "galaxy_fleet.cli", "mcp"], env=env)

    async def session() -> list:
        out = []
        async with Client(params, read_timeout_seconds=60, raise_exceptions=False) as client:
            for name, args in calls:
                out.append(await client.call_tool(name, args))
        return out

    return anyio.run(session)


def _text(result) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


def test_mcp_refuses_dangerous_orders_and_targets_outside_its_policy(local_fleet):
    lf = local_fleet()
    lf.start_workers()
    env = _configure(lf, bot={"dangerous": {"patterns": [r"\brm\s+-rf\b"]}},
                     mcp={"identity": "agent", "targets": ["web1"]})
    dangerous, outside, machines, fine, status = _mcp_calls(env, [
        ("send_order", {"target": "web1", "text": "rm -rf /srv/app", "wait_seconds": 30}),
        ("send_order", {"target": "web2", "text": "hello", "wait_seconds": 30}),
        ("list_machines", {}),
        ("send_order", {"target": "web1", "text": "allowed", "wait_seconds": 30}),
        ("fleet_health", {"target": "web2"}),
    ])
    assert dangerous.is_error and "dangerous order refused" in _text(dangerous) and "pattern" in _text(dangerous)
    assert outside.is_error and "mcp:agent may not send orders to web2" in _text(outside)
    assert [m["name"] for m in machines.structured_content["result"]] == ["web1"]
    answers = fine.structured_content["result"]
    assert [(a["host"], a["state"]) for a in answers] == [("web1", "done")] and "allowed" in answers[0]["answer"]
    assert status.is_error and "may not see" in _text(status)
    refused = _refusals(lf)
    assert [(e["user"], e["reason"], e["entry"]) for e in refused] == [
        ("mcp:agent", "dangerous", "mcp"), ("mcp:agent", "target_not_allowed", "mcp")]
    assert all(e["host"] == "control@control" for e in refused)
    # neither refused order reached a node
    assert all("rm -rf" not in p.read_text() for env_ in lf.nodes.values()
               for p in env_.spool.rglob("*.json") if p.is_file())


def test_mcp_executor_limit(local_fleet):
    lf = local_fleet(["web1"])
    lf.start_workers()
    env = _configure(lf, mcp={"executors": ["echo"]})
    other, default = _mcp_calls(env, [
        ("send_order", {"target": "web1", "text": "print(1)", "executor": "py", "wait_seconds": 30}),
        ("send_order", {"target": "web1", "text": "via default", "wait_seconds": 30}),
    ])
    assert other.is_error and "may not use the executor 'py'" in _text(other)
    assert default.structured_content["result"][0]["state"] == "done"
    assert [e["reason"] for e in _refusals(lf)] == ["executor_not_allowed"]


def test_galaxy_send_acts_as_the_unix_user_and_is_rate_limited_and_refused(local_fleet):
    lf = local_fleet()
    lf.start_workers()
    me = pwd.getpwuid(os.getuid()).pw_name
    env = _configure(lf, send={"users": {me: {"targets": ["web1"], "rate_per_minute": 2}}})

    def send(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*GALAXY, "send", *args], env=env, capture_output=True, text=True, timeout=60,
                              check=False)

    first = send("web1", "one")
    assert first.returncode == 0, first.stderr
    outside = send("web2", "two")
    assert outside.returncode == 2 and f"refused: unix:{me} may not send orders to web2" in outside.stderr
    second = send("web1", "three")
    assert second.returncode == 0, second.stderr
    limited = send("web1", "four")
    assert limited.returncode == 2 and "rate limited: at most 2 orders a minute" in limited.stderr
    refused = _refusals(lf)
    assert [(e["user"], e["reason"], e["target"]) for e in refused] == [
        (f"unix:{me}", "target_not_allowed", "web2"), (f"unix:{me}", "rate_limited", "web1")]
    from galaxy_fleet.control.store import Store

    store = Store(lf.root / "galaxy.db")
    assert sorted(r.payload for r in store.orders(limit=10)) == ["one", "three"]
    assert {r.sender for r in store.orders(limit=10)} == {f"unix:{me}"}
    store.close()


def test_send_identity_from_the_config_and_dangerous_allowed(local_fleet):
    lf = local_fleet(["web1"])
    lf.start_workers()
    env = _configure(lf, bot={"dangerous": {"targets": ["web1"]}}, send={"identity": "ops"})
    refused = subprocess.run([*GALAXY, "send", "web1", "x"], env=env, capture_output=True, text=True, timeout=60,
                             check=False)
    assert refused.returncode == 2 and "web1 is marked dangerous" in refused.stderr
    env = _configure(lf, send={"identity": "ops", "dangerous": "allow"})
    ok = subprocess.run([*GALAXY, "send", "web1", "x"], env=env, capture_output=True, text=True, timeout=60,
                        check=False)
    assert ok.returncode == 0, ok.stderr
    assert [e["user"] for e in _refusals(lf)] == ["send:ops"]


@pytest.mark.parametrize("section, message", [
    ({"mcp": {"dangerous": "confirm"}}, "mcp.dangerous: expected refuse or allow"),
    ({"mcp": {"users": {}}}, "mcp.users: unknown setting"),
    ({"send": {"users": {"alice": {"targets": "web"}}}}, "send.users.alice.targets: expected a list"),
    ({"send": {"identity": "a b"}}, "send.identity: expected a name"),
    ({"mcp": {"rate_per_minute": -1}}, "mcp.rate_per_minute: must be at least 0"),
])
def test_policy_sections_are_checked(section, message):
    from galaxy_fleet.config import ConfigError, from_dict
    from galaxy_fleet.control.policy import EntryPolicy

    with pytest.raises(ConfigError) as err:
        EntryPolicy.from_config(from_dict(section), next(iter(section)))
    assert message in str(err.value)
