"""The control node treats what a node sends as input to check: bounded lines, and events only
about the node's own orders. The hostile node is a real process speaking the protocol."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodeenv import wait_for

HOSTILE = textwrap.dedent("""
    import json, os, sys, time
    mode, arg = sys.argv[1], sys.argv[2]
    out = sys.stdout.buffer
    def send(msg):
        out.write(json.dumps(msg).encode() + b"\\n"); out.flush()
    send({"type": "hello", "protocol": 1, "host": "evil", "version": "0", "cursor": 0})
    while True:  # answer what the control node asks until it subscribes to the event stream
        req = json.loads(sys.stdin.readline())
        send({"type": "result", "id": req["id"], "ok": True, "data": {}})
        if req.get("op") == "subscribe":
            break
    if mode == "long":
        written = 0
        chunk = b"x" * (1 << 20)
        try:
            out.write(b'{"type": "event", "event": {"message": "')
            for _ in range(100):  # a 100 MB line
                out.write(chunk); out.flush()
                written += len(chunk)
                with open(arg, "w") as f:
                    f.write(str(written))
            out.write(b'"}}\\n'); out.flush()
        except (BrokenPipeError, OSError):
            pass
        with open(arg, "w") as f:
            f.write(f"{written} done")
        sys.exit(0)
    # forge: wait for the id of another node's order, then report it done
    while not os.path.exists(arg):
        time.sleep(0.05)
    oid = open(arg).read().strip()
    send({"type": "event", "event": {"seq": 1, "ts": "2026-01-01T00:00:00Z", "host": "web2", "type": "order_done",
                                     "severity": "info", "order_id": oid, "user": None, "message": "",
                                     "hash": "h1", "prev": None},
          "response": {"response": "forged answer", "exit_code": 0}})
    for line in sys.stdin:  # answer pings until the control node hangs up
        req = json.loads(line)
        send({"type": "result", "id": req.get("id"), "ok": True, "data": {}})
""")


@pytest.fixture
def hostile(tmp_path: Path, monkeypatch):
    """Nodes named in ``hostile.nodes`` are reached by running the hostile program instead of
    `galaxy remote` (still a real local process behind the router's pipe)."""
    from galaxy_fleet.control import router

    script = tmp_path / "hostile.py"
    script.write_text(HOSTILE)
    real = router._local_connect
    procs: list[subprocess.Popen] = []

    class Hostile:
        nodes: dict[str, tuple[str, str]] = {}

    def connect(host, settings):
        if host.name not in Hostile.nodes:
            return real(host, settings)
        mode, arg = Hostile.nodes[host.name]
        proc = subprocess.Popen([sys.executable, str(script), mode, arg], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        procs.append(proc)

        def send(data: bytes) -> None:
            proc.stdin.write(data)
            proc.stdin.flush()

        def close() -> None:
            for f in (proc.stdin, proc.stdout):
                try:
                    f.close()
                except OSError:
                    pass
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

        return router._Conn(proc.stdout, send, close)

    monkeypatch.setattr(router, "_local_connect", connect)
    yield Hostile
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_line_over_the_limit_drops_the_link_without_reading_it(hostile, tmp_path):
    from galaxy_fleet.control.inventory import Host
    from galaxy_fleet.control.router import NodeLink, RouterSettings

    count = tmp_path / "written"
    hostile.nodes = {"evil": ("long", str(count))}
    states: list[tuple[bool, str | None]] = []
    messages: list[dict] = []
    settings = RouterSettings(max_line_bytes=1 << 20, backoff_max=60)
    link = NodeLink(Host("evil", "evil", connection="local"), settings,
                    on_message=lambda h, m: messages.append(m), on_state=lambda h, up, err: states.append((up, err)),
                    cursor=lambda h, hello, ask: None)
    link.start()
    try:
        wait_for(lambda: len(states) >= 2, 30, what="the link to come up and be dropped")
    finally:
        link.stop()
        link.join(10)
    assert states[0] == (True, None)
    assert states[1][0] is False and states[1][1] == f"evil sent a line over {1 << 20} bytes: link dropped"
    assert messages == []
    wait_for(lambda: count.exists() and count.read_text().endswith("done"), 30, what="the hostile node to give up")
    written = int(count.read_text().split()[0])
    assert written < 100 << 20  # the control node stopped reading: the 100 MB line never went through


def test_an_event_about_another_nodes_order_is_refused(local_fleet, hostile, tmp_path):
    lf = local_fleet(["web1"], extra_hosts={"web2": {"ansible_connection": "local"}})
    lf.nodes["web1"].start_worker()
    oid_file = tmp_path / "victim-order"
    hostile.nodes = {"web2": ("forge", str(oid_file))}
    fleet = lf.fleet()
    assert fleet.wait_connected(20)
    rec = fleet.submit("web1", "30", sender="alice", executor="sleep")[0]
    wait_for(lambda: fleet.order(rec.id).state == "running", 20, what="the order to run on web1")
    oid_file.write_text(rec.id)
    alert = wait_for(lambda: next((a for a in fleet.store.alerts() if a.get("kind") == "event_refused"), None),
                     20, what="the forged event to be refused")
    assert alert["host"] == "web2" and rec.id in alert["message"] and "belongs to web1" in alert["message"]
    after = fleet.order(rec.id)
    assert after.state == "running" and after.response is None  # the forged "done" changed nothing
    # the node's claim is still kept in the central trail, as that node's event
    assert [e["type"] for e in fleet.store.events(host="web2")] == ["order_done"]
    fleet.cancel(rec.id, user="alice")
    assert wait_for(lambda: fleet.order(rec.id).state == "cancelled", 20, what="the real answer")
    assert json.dumps(fleet.order(rec.id).response or "").find("forged") < 0
