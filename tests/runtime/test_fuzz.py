"""Property tests (Hypothesis) for what a node is handed: order files and messages, names,
and the `galaxy remote` protocol against a real `galaxy remote` process.

Each property has a fixed budget (max_examples, no deadline) so `make test` stays quick.
"""

from __future__ import annotations

import json
import subprocess
import threading
from typing import Any

import pytest
from galaxy_fleet.order import MAX_DEPTH, Order, OrderError, from_dict, parse, valid_name
from hypothesis import HealthCheck, given, settings, strategies as st

from nodeenv import GALAXY, NodeEnv

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=30)
names = st.text(alphabet="abcXYZ019._@:-/\n\r\t \x00é", min_size=0, max_size=20)
FIELDS = ["type", "id", "from", "target", "command", "payload", "timestamp", "executor", "timeout",
          "session", "priority", "options", "acknowledged"]
orders = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8),
                         json_values | names | st.just("galaxy_order"), max_size=10)


def _nested(depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# -- order parsing and validation ------------------------------------------------------

@FUZZ
@given(st.binary(max_size=300))
def test_any_bytes_parse_or_refuse_cleanly(raw):
    try:
        order = parse(raw)
    except OrderError:
        return
    assert isinstance(order, Order)


@FUZZ
@given(orders)
def test_any_object_is_an_order_or_an_order_error(data):
    try:
        order = from_dict(data)
    except OrderError as exc:
        assert str(exc)
        return
    for name in (order.id, order.target, order.session, order.executor):
        assert name in ("", None) or valid_name(name)
    again = parse(order.to_json())  # what is accepted survives its own JSON form
    extra = {k: v for k, v in order.extra.items() if k != "acknowledged"}  # to_dict always writes it
    assert (again.id, again.payload, again.options) == (order.id, order.payload, order.options)
    assert {k: v for k, v in again.extra.items() if k != "acknowledged"} == extra


@FUZZ
@given(st.integers(min_value=1, max_value=3000), st.sampled_from(["options", "extra", "raw"]))
def test_nesting_is_bounded_not_fatal(depth, where):
    if where == "raw":
        raw = b'{"payload": "x", "y": ' + b"[" * depth + b"]" * depth + b"}"
        try:
            parse(raw)
        except OrderError as exc:
            assert "nested" in str(exc)
        else:
            assert depth < MAX_DEPTH
        return
    value = _nested(depth)
    data = {"payload": "x", **({"options": {"k": value}} if where == "options" else {"extra": value})}
    try:
        from_dict(data)
    except OrderError as exc:
        assert "nested more than" in str(exc)
        assert depth + 2 > MAX_DEPTH
    else:
        assert depth + 1 <= MAX_DEPTH


@FUZZ
@given(names)
def test_names_are_whole_and_safe(value):
    if valid_name(value):
        assert value == value.strip() and "\n" not in value and "/" not in value
        assert not value.startswith(".") and ".." not in value and len(value) <= 128


# -- the galaxy remote protocol ------------------------------------------------------------

class Session:
    """One real `galaxy remote`; each frame is followed by a ping whose answer marks its end."""

    def __init__(self, env: NodeEnv):
        self.proc = subprocess.Popen([*GALAXY, "remote"], env=env.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert json.loads(self.proc.stdout.readline())["type"] == "hello"
        self.seq = self.answers = self.expected = 0
        self.stderr = b""
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    def _drain_stderr(self) -> None:
        self.stderr = self.proc.stderr.read()

    def exchange(self, frame: bytes) -> None:
        """Send one frame (and a marker ping) and read until both are answered.

        Requests are served concurrently, so answers may come in any order: the
        session must have given exactly one answer per non-blank frame so far.
        """
        self.seq += 1
        marker = f"marker-{self.seq}"
        if frame.strip():
            self.expected += 1
        self.proc.stdin.write(frame + b"\n" + json.dumps({"id": marker, "op": "ping"}).encode() + b"\n")
        self.proc.stdin.flush()
        marked = False
        while not marked or self.answers < self.expected:
            line = self.proc.stdout.readline()
            assert line, f"session closed: {self.stderr[-2000:]!r}"
            msg = json.loads(line)  # every line is well-formed JSON
            assert isinstance(msg, dict) and msg.get("type") in ("result", "event", "alert", "heartbeat")
            if msg["type"] != "result":
                continue
            assert isinstance(msg.get("ok"), bool)
            if msg.get("id") == marker:
                assert msg["ok"] is True
                marked = True
                continue
            assert msg["ok"] or isinstance(msg.get("error"), str)
            self.answers += 1
        assert self.answers == self.expected, (frame[:200], self.answers, self.expected)

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def close(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(30) == 0
        assert b"Traceback" not in self.stderr


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    env = NodeEnv(tmp_path_factory.mktemp("fuzz-remote"))
    env.write_config(worker={"max_queued": 20})
    s = Session(env)
    yield s
    s.close()


OPS = ["ping", "submit", "cancel", "status", "list", "audit", "ack_alert", "subscribe", "nope", "__init__",
       "_handle", "send", "serve"]
requests = st.fixed_dictionaries(
    {"op": st.sampled_from(OPS) | json_values},
    optional={"id": st.integers() | st.text(max_size=200) | json_values,
              "order": orders | json_values, "order_id": names | json_values, "limit": json_values,
              "after": json_values, "wait": st.floats(min_value=0, max_value=0.2) | json_values,
              "state": json_values, "alert_id": names, "response": json_values, "verify": st.just(False)})


def _frames() -> st.SearchStrategy[bytes]:
    encoded = requests.map(lambda r: json.dumps(r).encode())
    truncated = st.tuples(encoded, st.floats(0, 1)).map(lambda t: t[0][: int(len(t[0]) * t[1])])
    deep = st.integers(1, 5000).map(lambda d: b'{"id": 1, "op": "submit", "order": ' + b"[" * d + b"]" * d + b"}")
    return (encoded | truncated | st.binary(max_size=200) | deep).map(lambda f: f.replace(b"\n", b" "))


@FUZZ
@given(_frames())
def test_every_frame_gets_one_answer_and_the_session_stays(session, frame):
    session.exchange(frame)


def test_session_memory_stays_bounded(session):
    """After the fuzzing above (and a few large frames), the session is small and alive."""
    for _ in range(20):
        session.exchange(json.dumps({"id": 1, "op": "ping", "pad": "z" * 500_000}).encode())
    session.exchange(b"[" * 200_000)
    assert session.rss_mb() < 100
