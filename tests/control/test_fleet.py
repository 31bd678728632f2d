"""The control plane against real workers: `galaxy remote`, router, store, `galaxy send`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from nodeenv import GALAXY, wait_for


def test_order_to_one_node(local_fleet):
    lf = local_fleet()
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", "hello web1", sender="alice", chat_id=42)
    assert rec.host == "web1" and rec.state in ("queued", "delivered", "running", "done")
    [final] = fleet.wait([rec.id], timeout=20)
    assert final.state == "done" and "hello web1" in final.response
    assert final.details["exit_code"] == 0 and final.session.startswith("chat42-web1-")
    # the node's events flowed into the central store, in order, deduplicated
    types = [e["type"] for e in fleet.audit("web1", order_id=rec.id) if e["type"] != "order_progress"]
    assert types == ["order_received", "order_queued", "order_delivered", "order_running", "order_done"]
    assert [e["type"] for e in fleet.audit(order_id=rec.id, type="order_done")] == ["order_done"]
    # the answer is pending delivery until the bot says it was sent
    assert [ev.record.id for ev in fleet.pending() if ev.kind == "order"] == [rec.id]
    fleet.delivered(fleet.pending()[0])
    assert fleet.pending() == []


def test_fan_out_group_and_all_with_an_unreachable_node(local_fleet):
    # "ghost" is an SSH node on a loopback port nobody listens on
    lf = local_fleet(["web1", "web2"], extra_hosts={"ghost": {"ansible_host": "127.0.0.1", "ansible_port": 1}})
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20, ["web1", "web2"])
    recs = fleet.submit("web", "group order", sender="alice")
    assert sorted(r.host for r in recs) == ["web1", "web2"] and len({r.batch for r in recs}) == 1
    assert {r.state for r in fleet.wait([r.id for r in recs], timeout=20)} == {"done"}
    t0 = time.monotonic()
    recs = fleet.submit("all", "everyone", sender="alice")
    by_host = {r.host: r for r in fleet.wait([r.id for r in recs], timeout=30)}
    assert set(by_host) == {"web1", "web2", "ghost"}
    assert by_host["ghost"].state == "failed"
    assert "ghost is unreachable" in by_host["ghost"].error and "127.0.0.1:1" in by_host["ghost"].error
    assert by_host["web1"].state == by_host["web2"].state == "done"
    assert time.monotonic() - t0 < 15  # bounded by connect_timeout (3 s here), not hanging
    with pytest.raises(ValueError, match="unknown target 'nope'"):
        fleet.submit("nope", "x", sender="alice")


def test_cancel_through_the_fleet(local_fleet):
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", "60", sender="bob", executor="sleep")
    wait_for(lambda: fleet.order(rec.id).state == "running", 20, what="running")
    fleet.cancel(rec.id, user="bob")
    [final] = fleet.wait([rec.id], timeout=10)
    assert final.state == "cancelled"
    alerts = wait_for(lambda: fleet.store.alerts(), 10, what="alert")
    assert alerts[0]["kind"] == "order_cancelled" and alerts[0]["host"] == "web1"
    # the alert was acknowledged: the node's outbox is empty again
    wait_for(lambda: lf.nodes["web1"].outbox() == [], 10, what="outbox drained")


def test_restarted_control_still_gets_the_answer(local_fleet):
    """The control side dies mid-order; a new one resumes the stream from its cursor."""
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", "2", sender="carol", chat_id=7, executor="sleep")
    wait_for(lambda: fleet.order(rec.id).state == "running", 20, what="running")
    fleet.stop()  # like the bot being killed: nothing more is read
    time.sleep(2.5)  # the order finishes while nobody listens
    assert lf.nodes["web1"].sidecar(rec.id)["state"] == "done"
    fleet2 = lf.fleet()
    [final] = fleet2.wait([rec.id], timeout=20)
    assert final.state == "done"
    assert [ev.record.id for ev in fleet2.pending() if ev.kind == "order"] == [rec.id]
    events = fleet2.audit("web1", order_id=rec.id)
    assert len(events) == len({e["seq"] for e in events})  # replay added no duplicates


def test_reconnect_after_the_remote_process_dies(local_fleet):
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    link = fleet.router.links["web1"]
    first = link.attempts
    link.drop("test: cut the connection")
    wait_for(lambda: link.attempts > first and link.connected, 20, what="reconnected")
    [rec] = fleet.submit("web1", "after reconnect", sender="dan")
    assert fleet.wait([rec.id], timeout=20)[0].state == "done"


def test_lost_node_is_reported_and_corrected_when_it_returns(local_fleet):
    lf = local_fleet(["web1"])
    worker = lf.nodes["web1"]
    worker.start_worker()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", "4", sender="erin", executor="sleep")
    wait_for(lambda: fleet.order(rec.id).state == "running", 20, what="running")
    # make the node unreachable: point its config at a path that does not exist
    good = worker.config_path.read_text()
    worker.config_path.rename(worker.config_path.with_suffix(".off"))
    fleet.router.links["web1"].drop("test: node gone")
    lost = wait_for(lambda: (r := fleet.order(rec.id)).state == "failed" and r, 20, what="order reported lost")
    assert "lost contact with web1" in lost.error and lost.details["lost"] is True
    worker.config_path.with_suffix(".off").rename(worker.config_path)
    assert worker.config_path.read_text() == good
    final = wait_for(lambda: (r := fleet.order(rec.id)).state == "done" and r, 30, what="real answer")
    assert "lost" not in final.details and final.delivered is False


def test_remote_refuses_other_commands(local_fleet):
    lf = local_fleet(["web1"])
    env = {**lf.nodes["web1"].env, "SSH_ORIGINAL_COMMAND": "bash -c id"}
    proc = subprocess.run([*GALAXY, "remote"], env=env, input=b"", capture_output=True, timeout=30)
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["error"] == "this key only runs `galaxy remote`"
    env["SSH_ORIGINAL_COMMAND"] = "galaxy remote"
    proc = subprocess.run([*GALAXY, "remote"], env=env, input=b'{"id": 1, "op": "ping"}\n',
                          capture_output=True, timeout=30)
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    assert lines[0]["type"] == "hello" and lines[0]["host"] == "web1"
    assert lines[1]["ok"] is True and "pong" in lines[1]["data"]


def test_remote_bad_requests_do_not_end_the_session(local_fleet):
    lf = local_fleet(["web1"])
    reqs = b"\n".join([b"not json", b"[1]", b'{"id": 2, "op": "nope"}', b'{"id": 3, "op": "status"}',
                       b'{"id": 4, "op": "status", "order_id": "../etc"}',
                       b'{"id": 5, "op": "submit", "order": {"payload": 5}}', b'{"id": 6, "op": "ping"}']) + b"\n"
    proc = subprocess.run([*GALAXY, "remote"], env=lf.nodes["web1"].env, input=reqs, capture_output=True,
                          timeout=30)
    out = {m.get("id", "hello"): m for m in map(json.loads, proc.stdout.splitlines()) if m["type"] != "hello"}
    errors = [m["error"] for m in out.values() if not m["ok"]]
    assert any("bad request" in e for e in errors)
    assert "unknown op 'nope'" in out[2]["error"]
    assert "'order_id' must be a non-empty string" in out[3]["error"]
    assert "is not valid" in out[4]["error"]
    assert "'payload' must be a string" in out[5]["error"]
    assert out[6]["ok"] is True


def test_galaxy_send_cli(local_fleet):
    lf = local_fleet()
    lf.start_workers()
    env = {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}
    proc = subprocess.run([*GALAXY, "send", "web1", "hi", "from", "send"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "hi from send" in proc.stdout
    assert "web1: done" in proc.stderr  # progress lines
    proc = subprocess.run([*GALAXY, "send", "--json", "all", "fan", "out"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert sorted((r["host"], r["state"]) for r in json.loads(proc.stdout)) == [("web1", "done"), ("web2", "done")]
    proc = subprocess.run([*GALAXY, "send", "web1", "--executor", "py", "import sys; sys.exit(3)"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "failed" in proc.stdout
    proc = subprocess.run([*GALAXY, "send", "mars", "x"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "unknown target 'mars'" in proc.stderr


def test_inventory_resolution(tmp_path):
    from galaxy_fleet.control import inventory

    path = tmp_path / "hosts.yml"
    path.write_text("""
all:
  vars: {galaxy_route_user: fleet, ansible_port: 2222}
  children:
    galaxy_control: {hosts: {control: {ansible_host: 198.18.0.10}}}
    galaxy_nodes:
      vars: {ansible_port: 22}
      hosts:
        web1: {ansible_host: 198.18.0.11}
        db1: {ansible_host: 198.18.0.13, ansible_port: 2200}
      children:
        web: {hosts: {web1: null, web2: {ansible_host: 198.18.0.12}}}
""")
    inv = inventory.load(path, default_key="/k")
    assert sorted(inv.hosts) == ["db1", "web1", "web2"]
    assert inv.hosts["web2"].address == "198.18.0.12" and inv.hosts["web2"].port == 22
    assert inv.hosts["db1"].port == 2200 and inv.hosts["db1"].user == "fleet" and inv.hosts["db1"].key == "/k"
    assert inv.resolve("web") == ["web1", "web2"]
    assert inv.resolve("all") == ["web1", "db1", "web2"]
    assert inv.resolve("db1,web") == ["db1", "web1", "web2"]
    with pytest.raises(inventory.TargetError, match="unknown target 'control'"):
        inv.resolve("control")  # the control node is not a fleet node here
    (tmp_path / "bad.yml").write_text("- just a list\n")
    with pytest.raises(inventory.InventoryError, match="expected a mapping"):
        inventory.load(tmp_path / "bad.yml")


def test_store_states_only_move_forward(tmp_path):
    from galaxy_fleet.control.store import OrderRecord, Store

    store = Store(tmp_path / "s.db")
    store.add_order(OrderRecord(id="o1", host="web1", payload="x", state="received"))
    assert store.update_order("o1", state="running").state == "running"
    assert store.update_order("o1", state="queued") is None  # a late event never goes back
    assert store.update_order("o1", state="done", response="ok").state == "done"
    assert store.update_order("o1", state="failed", error="late") is None  # final is final
    assert store.order("o1").state == "done"
    assert oct(os.stat(tmp_path / "s.db").st_mode & 0o777) == "0o640"
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_send_is_unaffected_by_sigpipe(local_fleet):
    """`galaxy send ... | head -1` must not leave a traceback."""
    lf = local_fleet(["web1"])
    lf.start_workers()
    env = {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}
    proc = subprocess.run(f"{sys.executable} -m galaxy_fleet.cli send web1 a b c | head -c 1", shell=True,
                          env=env, capture_output=True, text=True, timeout=60)
    assert "Traceback" not in proc.stderr
    assert signal.SIGPIPE  # the shell pipeline above really closed early


def test_mcp_server_tools(local_fleet):
    """`galaxy mcp` over stdio, driven by the official MCP client."""
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    lf = local_fleet()
    lf.start_workers()
    params = StdioServerParameters(command=sys.executable, args=["-m", "galaxy_fleet.cli", "mcp"],
                                   env={**os.environ, "GALAXY_CONFIG": str(lf.control_config)})

    async def session() -> dict:
        async with Client(params, read_timeout_seconds=60) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            machines = await client.call_tool("list_machines", {})
            sent = await client.call_tool("send_order", {"target": "all", "text": "via mcp", "wait_seconds": 30})
            return {"names": names, "machines": machines.structured_content, "sent": sent.structured_content}

    out = anyio.run(session)
    assert out["names"] == ["fleet_health", "list_machines", "order_status", "query_audit", "send_order"]
    assert sorted(m["name"] for m in out["machines"]["result"]) == ["web1", "web2"]
    answers = out["sent"]["result"]
    assert sorted(a["host"] for a in answers) == ["web1", "web2"]
    assert all(a["state"] == "done" and "via mcp" in a["answer"] for a in answers)


def test_central_audit_and_completeness(local_fleet):
    lf = local_fleet()
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    recs = fleet.submit("all", "audited", sender="frank")
    [bad] = fleet.submit("web2", "import sys; sys.exit(4)", sender="frank", executor="py")
    fleet.wait([r.id for r in recs] + [bad.id], timeout=30)
    time.sleep(0.5)  # the last events of the stream land in the store
    env = {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}

    def audit(*args):
        return subprocess.run([*GALAXY, "audit", *args], env=env, capture_output=True, text=True, timeout=60)

    proc = audit("--json", "--limit", "0", "--type", "order_done")
    hosts = sorted(json.loads(x)["host"] for x in proc.stdout.splitlines())
    assert hosts == ["web1", "web2"], proc.stderr
    proc = audit("--severity", "error", "--host", "web2")
    assert "order_failed" in proc.stdout and "web1" not in proc.stdout
    proc = audit("--completeness", "--since", "1h")
    assert proc.returncode == 0, proc.stdout
    assert "3 orders in the window: 3 complete" in proc.stdout and "COMPLETE" in proc.stdout
    # delete an event from the central copy: the gap is found
    fleet.store.db.execute("DELETE FROM events WHERE host = 'web1' AND type = 'order_running'")
    proc = audit("--completeness", "--since", "1h", "--json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["ok"] is False and "web1" in report["chain_gaps"]


def test_silent_worker_is_detected_and_recovery_announced(local_fleet):
    lf = local_fleet(["web1"])
    worker = lf.nodes["web1"].start_worker()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    wait_for(lambda: "web1" in fleet._heartbeats, 10, what="first heartbeat")
    worker.send_signal(signal.SIGSTOP)  # hung, not dead: only the missing heartbeat shows it
    try:
        t0 = time.monotonic()
        alert = wait_for(lambda: [a for a in fleet.store.alerts() if a["kind"] == "worker_silent"], 15,
                         what="worker_silent alert")[0]
        assert time.monotonic() - t0 < 10
        assert alert["host"] == "web1" and "stopped beating" in alert["message"]
    finally:
        worker.send_signal(signal.SIGCONT)
    wait_for(lambda: [a for a in fleet.store.alerts() if a["kind"] == "worker_heard"], 15, what="recovery")
    assert len([a for a in fleet.store.alerts() if a["kind"] == "worker_silent"]) == 1


def test_control_events_reach_the_central_trail_without_moving_cursors(local_fleet):
    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    cursor = fleet.store.cursor(fleet.trail_name)
    ev = fleet.audit_event("bot_refused", severity="warning", user="666", message="not authorized")
    # the control node's own chain, apart from any node's (a host may be both)
    assert fleet.trail_name == "control@control" and ev["host"] == fleet.trail_name and ev["hash"]
    assert [e["type"] for e in fleet.audit(None, type="bot_refused")] == ["bot_refused"]
    assert fleet.store.cursor(fleet.trail_name) == cursor


def test_remote_submit_reports_a_duplicate_id(local_fleet):
    lf = local_fleet(["web1"])
    order = json.dumps({"payload": "once", "id": "dup-remote-1"})
    reqs = f'{{"id": 1, "op": "submit", "order": {order}}}\n'.encode()
    first = subprocess.run([*GALAXY, "remote"], env=lf.nodes["web1"].env, input=reqs, capture_output=True, timeout=30)
    again = subprocess.run([*GALAXY, "remote"], env=lf.nodes["web1"].env, input=reqs, capture_output=True, timeout=30)

    def result(proc):
        return next(m for m in map(json.loads, proc.stdout.splitlines()) if m.get("id") == 1)

    assert result(first)["data"] == {"id": "dup-remote-1", "state": "queued", "duplicate": False}
    assert result(again)["data"] == {"id": "dup-remote-1", "state": "queued", "duplicate": True}


# An agent's answer may hold lines that look like the node's own response document.
TRICKY_ANSWER = ("I read the failing test first.\n\n## Response\n\nThe fix: close the file before the rename.\n\n"
                 "## Order\n\nBoth steps are done.")


def test_answer_with_its_own_response_heading_arrives_whole(local_fleet):
    """The answer travels as a field from the worker's sidecar through `galaxy remote` into
    the store, and every reader (the bot's renderer, MCP, `galaxy send`, `galaxy order
    submit --wait --json` behind the order module) gets all of it."""
    from galaxy_fleet.bot import render
    from galaxy_fleet.control.mcp import _brief
    from galaxy_fleet.control.store import Store

    lf = local_fleet()
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", TRICKY_ANSWER, sender="alice", executor="cat", timeout=30)
    [final] = fleet.wait([rec.id], timeout=30)
    assert final.state == "done" and final.answer == TRICKY_ANSWER
    assert final.timeout == 30 and final.options == {} and final.sender == "alice"
    # the node's sidecar has it as a field; the Markdown document for people is still written
    sidecar = json.loads((lf.nodes["web1"].spool / "responses" / f"{rec.id}.json").read_text())
    assert sidecar["answer"] == TRICKY_ANSWER and sidecar["from"] == "alice" and sidecar["state"] == "done"
    document = (lf.nodes["web1"].spool / "responses" / f"{rec.id}.md").read_text()
    assert document.endswith(f"## Response\n\n{TRICKY_ANSWER}\n") and final.response == document
    # the store keeps it (a fresh connection reads the same), the bot shows all of it, MCP returns it
    again = Store(lf.root / "galaxy.db")
    assert again.order(rec.id).answer == TRICKY_ANSWER
    again.close()
    assert render.answer_markdown([final]).endswith(TRICKY_ANSWER)
    assert "I read the failing test first." in "\n".join(render.split_markdown(render.answer_markdown([final])) or [])
    assert _brief(final)["answer"] == TRICKY_ANSWER
    # `galaxy send` prints the answer itself; it hears the end although this (the bot's)
    # Fleet, sharing the store, records it first
    env = {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}
    proc = subprocess.run([*GALAXY, "send", "--executor", "cat", "--wait-timeout", "60", "web1", "-"],
                          input=TRICKY_ANSWER, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stdout == TRICKY_ANSWER + "\n"
    assert "web1: done" in proc.stderr  # the end reached its waiter (not the end of --wait-timeout)
    # on the node: what the order module reads
    proc = subprocess.run([*GALAXY, "order", "submit", "--json", "--wait", "--executor", "cat", "-"],
                          input=TRICKY_ANSWER, env=lf.nodes["web2"].env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["answer"] == TRICKY_ANSWER and status["state"] == "done"


def test_group_order_reports_the_busy_nodes(local_fleet):
    lf = local_fleet(["web1", "web2"])
    lf.nodes["web1"].write_config(host="web1", worker={"max_queued": 1})
    lf.nodes["web2"].start_worker()  # web1 has no worker: its queue fills and stays full
    assert lf.nodes["web1"].galaxy("order", "submit", "fills the queue").returncode == 0
    fleet = lf.fleet()
    fleet.wait_connected(10, ["web1", "web2"])
    records = {r.host: r for r in fleet.submit("web", "hello", sender="tester", executor="echo")}
    final = {r.host: r for r in fleet.wait([r.id for r in records.values()], timeout=30)}
    assert final["web2"].state == "done"
    assert final["web1"].state == "failed" and final["web1"].details.get("busy") is True
    assert "web1 is busy: 1 orders queued (limit 1)" in final["web1"].error
    from galaxy_fleet.bot.render import status_text

    assert "busy, order refused (try again later): web1" in status_text(list(final.values()), "web")
    env = {**os.environ, "GALAXY_CONFIG": str(lf.control_config)}
    proc = subprocess.run([*GALAXY, "send", "web", "again"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "=== web1: failed: web1 is busy" in proc.stdout
    assert "refused, queue full (try again later): web1" in proc.stderr


def test_permission_answers_only_from_the_sender_or_an_admin(local_fleet):
    from galaxy_fleet.control.fleet import NodeError, PermissionRefused, same_person

    lf = local_fleet(["web1"])
    lf.start_workers()
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    [rec] = fleet.submit("web1", "hello", sender="telegram:7(@ann)", chat_id=7)
    fleet.wait([rec.id], timeout=20)
    # Someone else: refused in the control plane, audited there, the node never asked.
    with pytest.raises(PermissionRefused, match="telegram:8"):
        fleet.answer_permission(rec.id, "per_1", "once", "telegram:8(@mallory)")
    [refused] = fleet.store.events(host=fleet.trail_name, type="permission_answer_refused")
    assert (refused["order_id"], refused["user"], refused["node"], refused["reason"]) == (
        rec.id, "telegram:8(@mallory)", "web1", "not_sender")
    assert not fleet.audit("web1", type="permission_answer_refused")
    # The sender (under a new username) and an admin reach the node, which refuses: nothing waits.
    with pytest.raises(NodeError, match="no permission prompt"):
        fleet.answer_permission(rec.id, "per_1", "once", "telegram:7(@ann_renamed)")
    with pytest.raises(NodeError, match="no permission prompt"):
        fleet.answer_permission(rec.id, "per_1", "deny", "telegram:9(@admin)", is_admin=True)
    on_node = wait_for(lambda: len(fleet.audit("web1", type="permission_answer_refused")) == 2
                       and fleet.audit("web1", type="permission_answer_refused"), what="the node's refusals")
    assert [e["user"] for e in on_node] == ["telegram:7(@ann_renamed)", "telegram:9(@admin)"]
    with pytest.raises(KeyError):
        fleet.answer_permission("20990101T000000.000000Z-abcdef", "per_1", "once", "telegram:7")
    assert same_person("telegram:7(@a)", "telegram:7") and not same_person("telegram:7", "telegram:70")
    assert not same_person("", "") and not same_person(None, "telegram:7")
