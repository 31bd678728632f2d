"""Every route through Flask's test client, over a store a real local fleet filled."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from galaxy_fleet.config import ConfigError, from_dict
from galaxy_fleet.dashboard import create_app
from galaxy_fleet.dashboard import settings as dsettings
from galaxy_fleet.order import ACTIVE, UNSUCCESSFUL

TOKEN = "test-token-abcdefghijklmnop"


def status(client: Any) -> dict[str, Any]:
    resp = client.get("/api/status")
    assert resp.status_code == 200, resp.data
    return resp.get_json()


# -- the trivial route and the page ---------------------------------------------------------
def test_healthz(app_for: Any) -> None:
    resp = app_for().test_client().get("/healthz")
    assert resp.status_code == 200 and resp.data == b"ok\n"


def test_page_embeds_the_status_safely(app_for: Any, filled: Any) -> None:
    from dashboard.dashboard_support import HOSTILE_PAYLOAD

    resp = app_for().test_client().get("/")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert 'data-refresh="1.0"' in html and "<title>Galaxy test fleet · fleet</title>" in html
    # the embedded JSON cannot close its <script>: the order text's markup is \\u-escaped
    embedded = html[html.index('<script type="application/json" id="initial">'):]
    body = embedded[embedded.index(">") + 1:embedded.index("</script>")]
    assert "<" not in body and json.loads(body)["fleet"]["nodes"] == 4
    assert HOSTILE_PAYLOAD in [o["payload"] for o in json.loads(body)["recent_orders"]]
    csp = resp.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert "https:" not in html and "http://" not in html  # nothing loaded from elsewhere
    for asset in ("/static/dashboard.js", "/static/dashboard.css", "/static/favicon.svg"):
        got = app_for().test_client().get(asset)
        assert got.status_code == 200 and b"http://" not in got.data.replace(b"http://www.w3.org/", b"")


# -- /api/status ---------------------------------------------------------------------------
def test_status_matches_the_store(app_for: Any, filled: Any) -> None:
    st = status(app_for().test_client())
    store = filled.fleet.store
    orders = store.orders(limit=1000)
    states = [o.state for o in orders]
    assert st["orders"]["total"] == len(orders)
    assert st["orders"]["pending"] == sum(s in ACTIVE for s in states)
    assert st["orders"]["done"] == states.count("done")
    assert st["orders"]["failed"] == sum(s in UNSUCCESSFUL for s in states)
    assert st["orders"]["processed"] == st["orders"]["total"] - st["orders"]["pending"]
    assert st["fleet"] == {**st["fleet"], "nodes": 4, "connected": 2, "healthy": 1, "degraded": 1, "down": 1,
                           "unknown": 1}
    nodes = {n["name"]: n for n in st["nodes"]}
    assert nodes["web2"]["failing"] == ["worker"] and nodes["web2"]["worker"]["ok"] is False
    assert nodes["db1"]["error"] == "test: db1 was cut off"
    assert nodes["web1"]["worker"]["uptime_s"] > 0 and nodes["web2"]["worker"]["uptime_s"] is None  # stopped
    assert nodes["web1"]["disk_percent"] == max(d["used_percent"] for d in nodes["web1"]["disk"])
    assert [o["id"] for o in st["recent_orders"]] == [o.id for o in orders[:25]]
    assert [a["id"] for a in st["recent_alerts"]] == [a["id"] for a in store.alerts(15)]
    assert st["alerts"]["last_day"] == len(store.alerts(1000))
    hist = st["history"]
    assert len(hist["orders_per_hour"]) == 24 and len(hist["latency"]) == 24
    assert sum(b["done"] for b in hist["orders_per_hour"]) == states.count("done")
    assert hist["latency_day"]["count"] == sum(s in ("done", "failed", "timed_out") for s in states)
    assert set(hist["health"]) == {"web1", "web2", "db1"} and hist["health"]["web2"][-1] == "1"
    assert set(hist["health"]["web1"]) == {"-", "0"}
    assert all(len(v) == 96 for v in hist["health"].values())


def test_status_is_cached_and_has_an_etag(app_for: Any) -> None:
    client = app_for(cache_ttl=60.0).test_client()
    first = client.get("/api/status")
    again = client.get("/api/status")
    assert first.data == again.data and first.headers["ETag"] == again.headers["ETag"]
    assert client.get("/api/status", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    fresh = app_for(cache_ttl=0.0).test_client()
    a, b = fresh.get("/api/status").get_json(), (time.sleep(0.01), fresh.get("/api/status").get_json())[1]
    assert a["generated"] != b["generated"]


# -- /api/nodes, /api/orders, /api/alerts ------------------------------------------------------
def test_nodes(app_for: Any) -> None:
    client = app_for().test_client()
    got = client.get("/api/nodes").get_json()
    assert [n["name"] for n in got["nodes"]] == ["db1", "ghost", "web1", "web2"] and got["count"] == 4
    web2 = client.get("/api/nodes?host=web2").get_json()["nodes"]
    assert len(web2) == 1 and web2[0]["health"]["healthy"] is False  # the full stored report
    assert {c["name"] for c in web2[0]["health"]["checks"]} >= {"worker", "stuck", "backlog", "memory"}


def test_orders_with_filters(app_for: Any, filled: Any) -> None:
    client = app_for().test_client()
    everything = client.get("/api/orders?limit=1000").get_json()["orders"]
    assert [o["id"] for o in everything] == [o.id for o in filled.fleet.store.orders(limit=1000)]
    web2 = client.get("/api/orders?host=web2").get_json()["orders"]
    assert {o["host"] for o in web2} == {"web2"} and len(web2) == 3
    bad = client.get("/api/orders?state=failed,timed_out").get_json()["orders"]
    assert sorted(o["state"] for o in bad) == ["failed", "timed_out"]
    assert all(o["duration_s"] is not None and o["duration_s"] >= 0 for o in bad)
    assert len(client.get("/api/orders?limit=2").get_json()["orders"]) == 2
    assert client.get("/api/orders?since=1h").get_json()["count"] == len(everything)
    assert client.get("/api/orders?until=1h").get_json()["count"] == 0
    oid = filled.orders["failed"][0].id
    [one] = client.get(f"/api/orders?id={oid}").get_json()["orders"]
    assert one["state"] == "failed" and "exited with status 3" in one["error"]
    for query, needle in (("limit=0", "limit"), ("limit=x", "limit"), ("since=yesterday", "since")):
        resp = client.get(f"/api/orders?{query}")
        assert resp.status_code == 400 and needle in resp.get_json()["error"]


def test_alerts(app_for: Any, filled: Any) -> None:
    got = app_for().test_client().get("/api/alerts?host=web2").get_json()["alerts"]
    assert got and {a["host"] for a in got} == {"web2"}
    assert "health_failing" in {a["kind"] for a in got}


# -- /api/audit: the central audit trail, as `galaxy audit` on the control node -----------------
@pytest.mark.parametrize("query,filters", [
    ("", {}),
    ("limit=5", {"limit": 5}),
    ("severity=error", {"severity": "error"}),
    ("severity=warning,error", {"severity": "warning,error"}),
    ("type=health_check", {"type": "health_check"}),
    ("host=web2&type=order_failed,order_timed_out", {"host": "web2", "type": "order_failed,order_timed_out"}),
    ("type=worker_started&limit=2", {"type": "worker_started", "limit": 2}),
    ("host=web1,web2,db1&limit=7", {"host": "web1,web2,db1", "limit": 7}),
    ("host=web2,db1&type=health_check,worker_started", {"host": "web2,db1", "type": "health_check,worker_started"}),
    ("type=order_done,order_failed,health_check&limit=5", {"type": "order_done,order_failed,health_check",
                                                           "limit": 5}),
    ("severity=info,error&host=web1&limit=9", {"severity": "info,error", "host": "web1", "limit": 9}),
])
def test_audit_matches_the_store(app_for: Any, filled: Any, query: str, filters: dict[str, Any]) -> None:
    got = app_for().test_client().get(f"/api/audit?{query}").get_json()
    want = filled.fleet.store.events(**{"limit": 100, **filters})
    assert got["events"] == want and got["count"] == len(want) > 0


def test_audit_order_lifecycle_and_time_window(app_for: Any, filled: Any) -> None:
    client = app_for().test_client()
    oid = filled.orders["done"][0].id
    types = [e["type"] for e in client.get(f"/api/audit?order_id={oid}").get_json()["events"]
             if e["type"] != "order_progress"]
    assert types == ["order_received", "order_queued", "order_delivered", "order_running", "order_done"]
    everything = client.get("/api/audit?limit=10000").get_json()["events"]
    middle = everything[len(everything) // 2]["ts"]
    later = client.get(f"/api/audit?since={middle}&limit=10000").get_json()["events"]
    earlier = client.get(f"/api/audit?until={middle}&limit=10000").get_json()["events"]
    assert later and earlier and len(later) + len(earlier) == len(everything)
    assert all(e["ts"] >= middle for e in later) and all(e["ts"] < middle for e in earlier)
    assert client.get("/api/audit?since=10m").get_json()["count"] == min(100, len(everything))
    resp = client.get("/api/audit?limit=100000")
    assert resp.status_code == 400


# -- /metrics ------------------------------------------------------------------------------
def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics(app_for: Any, filled: Any) -> None:
    resp = app_for().test_client().get("/metrics")
    assert resp.status_code == 200 and resp.content_type.startswith("text/plain")
    m = _samples(resp.get_data(as_text=True))
    assert m[("galaxy_store_up", ())] == 1
    assert m[("galaxy_orders", (("host", "web2"), ("state", "failed")))] == 1
    assert m[("galaxy_orders", (("host", "web2"), ("state", "timed_out")))] == 1
    assert m[("galaxy_orders", (("host", "web1"), ("state", "running")))] == 1
    assert m[("galaxy_node_up", (("host", "web1"),))] == 1 and m[("galaxy_node_up", (("host", "db1"),))] == 0
    assert m[("galaxy_node_healthy", (("host", "web2"),))] == 0
    assert ("galaxy_node_healthy", (("host", "ghost"),)) not in m  # unknown is absent, not 0
    finished = [o for o in filled.fleet.store.orders(limit=1000, host="web1") if o.finished is not None]
    assert m[("galaxy_order_duration_seconds_count", (("host", "web1"),))] == len(finished)
    assert m[("galaxy_order_duration_seconds_bucket", (("host", "web1"), ("le", "+Inf")))] == len(finished)
    total = sum(v for (name, _), v in m.items() if name == "galaxy_alerts")
    assert total == len(filled.fleet.store.alerts(1000))
    assert m[("galaxy_audit_events_received", (("host", "web1"),))] == filled.fleet.store.cursor("web1")[0]
    assert ("galaxy_dashboard_process_resident_memory_bytes", ()) in m


def test_one_node_status_for_the_bot_the_dashboard_metrics_and_the_health_module(app_for: Any, filled: Any) -> None:
    """The same store and reports give each node the same status in every view: the Fleet's
    machine list (the bot's /machines and /status), the dashboard's summary, /metrics, and
    the node's own `galaxy health --json` that the health module and playbook read."""
    from galaxy_fleet.bot import render
    from galaxy_fleet.node_status import STATUSES, node_status

    client = app_for().test_client()
    dashboard = {n["name"]: (n["status"], n["reason"]) for n in status(client)["nodes"]}
    machines = filled.fleet.machines()
    bot = {m["name"]: (m["status"], m["reason"]) for m in machines}
    m = _samples(client.get("/metrics").get_data(as_text=True))
    metrics = {host: next(s for s in STATUSES if m[("galaxy_node_status", (("host", host), ("status", s)))] == 1)
               for host in dashboard}
    expected = {"web1": "healthy", "web2": "degraded", "db1": "down", "ghost": "unknown"}
    assert {h: v[0] for h, v in dashboard.items()} == expected
    assert {h: v[0] for h, v in bot.items()} == expected and metrics == expected
    # the reasons agree too (an unreachable node's changes with each connection attempt)
    assert dashboard["web1"] == bot["web1"] and dashboard["web2"] == bot["web2"]
    assert dashboard["web2"][1].startswith("failing: worker")
    assert dashboard["db1"][1].startswith("unreachable: ") and bot["db1"][1].startswith("unreachable: ")
    text = render.machines_text(machines)
    assert "🟢 <b>web1</b>" in text and "🟠 <b>web2</b>" in text and "🔴 <b>db1</b>" in text
    assert "⚪ <b>ghost</b>" in text and render.esc(dashboard["web2"][1]) in text
    summary = render.fleet_status_text(machines, [], 0)
    assert "down: db1" in summary and "degraded: web2" in summary and "unknown: ghost" in summary
    # on the nodes themselves (the health module reads this): the same rule, the same answer
    for name, env in (("web1", filled.lf.nodes["web1"]), ("web2", filled.lf.nodes["web2"])):
        report = json.loads(env.galaxy("health", "--json", "--no-record").stdout)
        assert report["status"] == expected[name]
        verdict = node_status(connected=None, health=report)
        assert (verdict.status, verdict.reason) == (report["status"], report["reason"])


# -- a missing store -------------------------------------------------------------------------
def test_without_a_store(tmp_path: Path) -> None:
    config = from_dict({"control": {"store": str(tmp_path / "nothing.db")}})
    client = create_app(config, token=None).test_client()
    assert client.get("/healthz").status_code == 200
    for route in ("/api/status", "/api/nodes", "/api/orders", "/api/audit"):
        resp = client.get(route)
        assert resp.status_code == 503 and "no store yet" in resp.get_json()["error"], route
    page = client.get("/")
    assert page.status_code == 503 and b"no store yet" in page.data
    assert "galaxy_store_up 0.0" in client.get("/metrics").get_data(as_text=True)
    assert not (tmp_path / "nothing.db").exists()  # the dashboard never creates it


def test_the_dashboard_cannot_write(app_for: Any) -> None:
    app = app_for()
    reader = app.extensions["galaxy_dashboard"].reader
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only|query_only"):
        reader._db().execute("DELETE FROM orders")


# -- the token rule ----------------------------------------------------------------------------
def test_token_protects_everything_but_healthz_and_login(app_for: Any) -> None:
    client = app_for(token=TOKEN).test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/static/dashboard.css").status_code == 200
    for route in ("/api/status", "/api/nodes", "/api/orders", "/api/audit", "/api/alerts", "/metrics", "/nope"):
        resp = client.get(route)
        assert resp.status_code == 401, route
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert client.get(route, headers={"Authorization": "Bearer wrong-token-0000000000"}).status_code == 401
    for route in ("/api/status", "/metrics"):
        assert client.get(route, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    page = client.get("/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")


def test_login_form_sets_a_cookie(app_for: Any) -> None:
    from galaxy_fleet.dashboard.auth import COOKIE

    client = app_for(token=TOKEN).test_client()
    form = client.get("/login?next=/api/status")
    assert form.status_code == 200 and b'name="token"' in form.data
    wrong = client.post("/login", data={"token": "not-the-token-000000", "next": "/"})
    assert wrong.status_code == 401 and client.get_cookie(COOKIE) is None
    ok = client.post("/login", data={"token": TOKEN, "next": "/api/status"})
    assert ok.status_code == 302 and ok.headers["Location"] == "/api/status"
    cookie = client.get_cookie(COOKIE)
    assert cookie is not None and TOKEN not in cookie.value and cookie.http_only and cookie.same_site == "Strict"
    assert client.get("/api/status").status_code == 200 and client.get("/").status_code == 200
    assert client.post("/logout").status_code == 302
    assert client.get("/api/status").status_code == 401
    # no open redirect after login
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "/\t/evil.example",
                   "/\n/evil.example", " //evil.example", "/\x7f/evil.example"):
        resp = client.post("/login", data={"token": TOKEN, "next": target})
        assert resp.headers["Location"] == "/", target


def test_without_a_token_loopback_is_open(app_for: Any) -> None:
    client = app_for(token=None).test_client()
    assert client.get("/api/status").status_code == 200 and client.get("/").status_code == 200
    assert client.get("/login").status_code == 302


def test_bind_rule() -> None:
    store = Path("/nonexistent/galaxy.db")
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        dsettings.check_bind(dsettings.Settings(store=store, host=host))
    for host in ("0.0.0.0", "::", "198.18.0.1", "dashboard.example"):
        with pytest.raises(ConfigError, match="not a loopback address, without a token"):
            dsettings.check_bind(dsettings.Settings(store=store, host=host))
        dsettings.check_bind(dsettings.Settings(store=store, host=host, token=TOKEN))


def test_token_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(dsettings.TOKEN_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    path = tmp_path / "token"
    path.write_text(TOKEN + "\n")
    path.chmod(0o600)
    config = from_dict({"dashboard": {"token_file": str(path), "host": "0.0.0.0"}})
    s = dsettings.load(config)
    assert s.token == TOKEN and s.host == "0.0.0.0" and TOKEN not in repr(s)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by everyone"):
        dsettings.load(config)
    path.chmod(0o600)
    path.write_text("short")
    with pytest.raises(ConfigError, match="at least 16 characters"):
        dsettings.load(config)
    with pytest.raises(ConfigError, match="cannot read"):
        dsettings.load(from_dict({"dashboard": {"token_file": str(tmp_path / "missing")}}))
    monkeypatch.setenv(dsettings.TOKEN_ENV, TOKEN)
    assert dsettings.load(config).token == TOKEN  # the environment wins over the file
    monkeypatch.delenv(dsettings.TOKEN_ENV)
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "dashboard_token").write_text(TOKEN)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert dsettings.load(from_dict({})).token == TOKEN
    with pytest.raises(ConfigError, match="dashboard.colour: unknown setting"):
        dsettings.load(from_dict({"dashboard": {"colour": "blue"}}))
    with pytest.raises(ConfigError, match="dashboard.port"):
        dsettings.load(from_dict({"dashboard": {"port": "http"}}))


def test_status_gzip(app_for: Any) -> None:
    import gzip

    client = app_for(cache_ttl=60.0).test_client()
    plain = client.get("/api/status")
    packed = client.get("/api/status", headers={"Accept-Encoding": "gzip, deflate, br"})
    assert packed.headers["Content-Encoding"] == "gzip" and packed.headers["Vary"] == "Accept-Encoding"
    assert gzip.decompress(packed.data) == plain.data and len(packed.data) < len(plain.data)
    assert "Content-Encoding" not in plain.headers
