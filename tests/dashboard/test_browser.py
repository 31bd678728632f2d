"""The real `galaxy dashboard` process, a store filled by a real local fleet, and
headless Chromium: the numbers the page renders are the store's."""

from __future__ import annotations

import json
import sqlite3
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
from dashboard.dashboard_support import ARTIFACTS, HOSTILE_PAYLOAD, DashboardProcess

from nodeenv import wait_for

PENDING = ("received", "queued", "delivered", "running")
FAILED = ("failed", "timed_out", "interrupted")

# What the page shows, read back from the rendered DOM (after its script ran).
READ_PAGE = """(() => {
  const text = (el) => el ? el.textContent.trim() : null;
  const nodes = {};
  for (const card of document.querySelectorAll("#nodes [data-node]")) {
    const f = {};
    for (const dd of card.querySelectorAll("[data-field]")) f[dd.dataset.field] = text(dd);
    nodes[card.dataset.node] = {status: card.dataset.status, fields: f,
      slots: card.querySelectorAll(".strip rect.slot").length,
      ok_slots: card.querySelectorAll(".strip rect.slot.ok").length,
      bad_slots: card.querySelectorAll(".strip rect.slot.bad").length};
  }
  const tiles = {};
  for (const v of document.querySelectorAll("[data-value]")) tiles[v.dataset.value] = text(v);
  return {
    generated: document.documentElement.dataset.generated,
    renders: parseInt(document.documentElement.dataset.renders || "0", 10),
    title: document.title,
    tiles, nodes,
    orders: [...document.querySelectorAll("#orders tbody tr[data-order]")].map((tr) => ({
      id: tr.dataset.order, state: tr.dataset.state, host: text(tr.querySelector(".host")),
      payload: text(tr.querySelector(".payload span")), took: text(tr.querySelector("[data-field=duration]"))})),
    alerts: [...document.querySelectorAll("#alerts li[data-alert]")].map((li) => li.dataset.alert),
    checks: [...document.querySelectorAll("#checks li[data-ts]")].map((li) => ({ts: li.dataset.ts, text: text(li)})),
    bars: [...document.querySelectorAll("#chart-orders g.bar")].map((g) => parseInt(g.dataset.total, 10)),
    latency_paths: document.querySelectorAll("#chart-latency path.line").length,
    banner_hidden: document.getElementById("banner").hidden,
    injected: document.querySelectorAll("#orders b, #orders script").length,
  };
})()"""


def store_rows(path: Any, sql: str, args: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def expected_orders(path: Any) -> dict[str, dict[str, int]]:
    per: dict[str, dict[str, int]] = {}
    for r in store_rows(path, "SELECT host, state, COUNT(*) AS n FROM orders GROUP BY host, state"):
        per.setdefault(r["host"], {})[r["state"]] = r["n"]
    out = {}
    for host, states in per.items():
        out[host] = {"pending": sum(states.get(s, 0) for s in PENDING),
                     "processed": sum(n for s, n in states.items() if s not in PENDING),
                     "failed": sum(states.get(s, 0) for s in FAILED)}
    return out


def open_page(chromium: Any, url: str, *, width: int = 1280, height: int = 900, mobile: bool = False,
              dark: bool = False) -> Any:
    page = chromium.new_page()
    page.viewport(width, height, mobile=mobile, dark=dark, scale=2 if mobile else 1)
    page.navigate(url)
    page.wait_for("document.documentElement.dataset.renders >= 1")
    return page


def test_the_page_shows_the_store(dashboard: DashboardProcess, chromium: Any, filled: Any) -> None:
    page = open_page(chromium, dashboard.url + "/")
    try:
        # wait for one refresh through /api/status, so both render paths ran
        page.wait_for("document.documentElement.dataset.renders >= 2", 15)
        seen = page.evaluate(READ_PAGE)
        page.screenshot(ARTIFACTS / "dashboard-desktop.png")
        console = list(page.console)
    finally:
        page.close()
    assert [c for c in console if c["level"] == "error"] == [], console
    assert seen["banner_hidden"] and seen["title"] == "Galaxy test fleet · fleet"

    store = filled.store_path
    # every node, with the status the fleet gave it
    assert {n: v["status"] for n, v in seen["nodes"].items()} == {
        "web1": "healthy", "web2": "degraded", "db1": "down", "ghost": "unknown"}
    # the pending/processed/failed figures per node equal the store's orders
    expected = expected_orders(store)
    for host, card in seen["nodes"].items():
        want = expected.get(host, {"pending": 0, "processed": 0, "failed": 0})
        got = {k: int(card["fields"][k].replace(",", "")) for k in ("pending", "processed", "failed")}
        assert got == want, host
    # ... which are what the scenario made
    assert expected["web1"] == {"pending": 2, "processed": 5, "failed": 0}
    assert expected["web2"] == {"pending": 0, "processed": 3, "failed": 2}
    # health figures from the stored reports
    for host in ("web1", "web2"):
        report = json.loads(store_rows(store, "SELECT health FROM nodes WHERE name = ?", (host,))[0]["health"])
        disk = max(c["data"]["used_percent"] for c in report["checks"] if c["name"].startswith("disk_"))
        assert seen["nodes"][host]["fields"]["disk"] == f"{round(disk)}%"
        assert seen["nodes"][host]["fields"]["opencode"] == "not used"  # these nodes run the echo executor
    assert seen["nodes"]["web1"]["fields"]["worker"] == "✓ busy"
    assert seen["nodes"]["web2"]["fields"]["worker"] == "✗ down"
    assert seen["nodes"]["db1"]["fields"]["worker"] == "unknown"  # out of reach: its old report is no answer
    # the health history strip: a day of 15-minute slots, the newest holding the checks
    assert seen["nodes"]["web1"]["slots"] == 96 and seen["nodes"]["web1"]["ok_slots"] == 1
    assert seen["nodes"]["web2"]["bad_slots"] == 1 and seen["nodes"]["ghost"]["ok_slots"] == 0

    # fleet tiles
    totals = {"pending": 0, "processed": 0, "failed": 0}
    for figures in expected.values():
        for k in totals:
            totals[k] += figures[k]
    assert {k: int(seen["tiles"][k]) for k in totals} == totals
    assert seen["tiles"]["nodes"] == "1 / 4"
    alerts_day = store_rows(store, "SELECT COUNT(*) AS n FROM alerts WHERE received >= ?", (time.time() - 86400,))
    assert int(seen["tiles"]["alerts"]) == alerts_day[0]["n"] >= 4

    # recent orders: the store's newest, newest first, payloads as text
    newest = store_rows(store, "SELECT id, state, host FROM orders ORDER BY created DESC, id DESC LIMIT 25")
    assert [(o["id"], o["state"], o["host"]) for o in seen["orders"]] == [(r["id"], r["state"], r["host"])
                                                                          for r in newest]
    assert HOSTILE_PAYLOAD in [o["payload"] for o in seen["orders"]] and seen["injected"] == 0
    done = [o for o in seen["orders"] if o["state"] == "done"]
    assert done and all(o["took"].endswith(("ms", "s")) for o in done)
    # alerts and health checks, newest first
    alert_ids = [r["id"] for r in store_rows(store, "SELECT id FROM alerts ORDER BY received DESC LIMIT 15")]
    assert seen["alerts"] == alert_ids
    checks = store_rows(store, "SELECT ts FROM events WHERE type = 'health_check' ORDER BY ts DESC LIMIT 20")
    assert len(seen["checks"]) == len(checks) >= 5
    assert [c["ts"] for c in seen["checks"]] == [r["ts"] for r in checks]
    assert any("web2" in c["text"] and "✗ failing: worker" in c["text"] for c in seen["checks"])
    # charts: 24 hourly bars summing to the day's orders; a latency line
    day_start = (time.time() // 3600 + 1) * 3600 - 86400  # 24 clock hours, the current one included
    day = store_rows(store, "SELECT COUNT(*) AS n FROM orders WHERE created >= ?", (day_start,))
    assert len(seen["bars"]) == 24 and sum(seen["bars"]) == day[0]["n"]
    assert seen["latency_paths"] == 2


def test_phone_and_dark_mode(dashboard: DashboardProcess, chromium: Any) -> None:
    page = open_page(chromium, dashboard.url + "/", width=390, height=844, mobile=True, dark=True)
    try:
        layout = page.evaluate("""(() => ({
          scroll: document.documentElement.scrollWidth, width: window.innerWidth,
          bg: getComputedStyle(document.body).backgroundColor,
          cols: getComputedStyle(document.getElementById("nodes")).gridTemplateColumns.split(" ").length}))()""")
        page.screenshot(ARTIFACTS / "dashboard-phone-dark.png")
        page.screenshot(ARTIFACTS / "dashboard-phone-dark-first-screen.png", full_page=False)
    finally:
        page.close()
    assert layout["scroll"] <= layout["width"], layout  # nothing wider than the phone
    assert layout["cols"] == 1
    r, g, b = (int(x) for x in layout["bg"][layout["bg"].index("(") + 1:-1].split(",")[:3])
    assert r + g + b < 120, layout["bg"]  # dark background


def test_the_page_refreshes_itself(dashboard: DashboardProcess, chromium: Any, filled: Any) -> None:
    page = open_page(chromium, dashboard.url + "/")
    try:
        before = page.evaluate(READ_PAGE)
        store = filled.fleet.store
        known = {e["ts"] for e in store.events(type="health_check", limit=1000)}
        filled.lf.nodes["web1"].galaxy("health", "--json", check=True)
        new = wait_for(lambda: [e for e in store.events(type="health_check", limit=1000) if e["ts"] not in known],
                       20, what="the new health check in the store")
        # no reload: the page's own refresh brings it
        page.wait_for(f"(document.querySelector('#checks li[data-ts]') || {{}}).dataset?.ts === {json.dumps(new[0]['ts'])}",
                      15)
        after = page.evaluate(READ_PAGE)
    finally:
        page.close()
    assert after["renders"] > before["renders"]
    assert after["checks"][0]["text"].endswith("web1✓ healthy")
    assert len(after["checks"]) == min(20, len(before["checks"]) + 1)


def test_token_login_in_the_browser(filled: Any, chromium: Any, tmp_path: Any) -> None:
    token = "browser-test-token-0123456789"
    proc = DashboardProcess(filled.config_path, tmp_path, env={"GALAXY_DASHBOARD_TOKEN": token})
    try:
        assert "(token required)" in proc.output() and token not in proc.output()
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(proc.url + "/api/status", timeout=10)
        assert err.value.code == 401
        req = urllib.request.Request(proc.url + "/api/status", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.load(resp)["fleet"]["nodes"] == 4
        page = chromium.new_page()
        try:
            page.navigate(proc.url + "/")
            assert page.evaluate("location.pathname") == "/login"
            page.evaluate(f"document.getElementById('token').value = 'wrong-token-xxxxxxxxxxxx';"
                          "document.querySelector('form').submit()")
            page.wait_for("document.readyState === 'complete' && !!document.querySelector('.error')")
            page.evaluate(f"document.getElementById('token').value = {json.dumps(token)};"
                          "document.querySelector('form').submit()")
            page.wait_for("location.pathname === '/' && document.documentElement.dataset.renders >= 1", 20)
            assert page.evaluate("document.querySelectorAll('#nodes [data-node]').length") == 4
            page.wait_for("document.documentElement.dataset.renders >= 2", 15)  # refreshes with the cookie
            assert page.evaluate("document.cookie") == ""  # HttpOnly: scripts cannot read it
        finally:
            page.close()
    finally:
        assert proc.stop() == 0


def test_a_large_fleet_gets_one_row_per_node(chromium: Any, tmp_path: Any) -> None:
    """Beyond 24 nodes the page lists them in a table, problems first."""
    from dashboard.dashboard_support import local_fleet_class

    LocalFleet = local_fleet_class()
    unreachable = {f"edge{i:02d}": {"ansible_host": "127.0.0.1", "ansible_port": 1} for i in range(1, 30)}
    lf = LocalFleet(tmp_path, ["web1"], extra_hosts=unreachable)
    lf._fleets = []
    proc = None
    try:
        lf.start_workers()
        fleet = lf.fleet()
        assert fleet.wait_connected(30, ["web1"])
        lf.nodes["web1"].galaxy("health", "--json", check=True)
        fleet.health("web1")
        [rec] = fleet.submit("web1", "hello from a big fleet", sender="alice")
        assert fleet.wait([rec.id], timeout=20)[0].state == "done"
        wait_for(lambda: fleet.store.events(type="health_check"), 20, what="the health check in the store")
        proc = DashboardProcess(lf.control_config, tmp_path)
        page = open_page(chromium, proc.url + "/")
        try:
            seen = page.evaluate(READ_PAGE)
            dense = page.evaluate("document.querySelectorAll('#nodes table.node-table tr.node-row').length")
            page.screenshot(ARTIFACTS / "dashboard-dense.png")
            console = list(page.console)
        finally:
            page.close()
    finally:
        if proc is not None:
            assert proc.stop() == 0
        lf.stop()
    assert [c for c in console if c["level"] == "error"] == [], console
    assert dense == 30 and len(seen["nodes"]) == 30
    order = list(seen["nodes"])
    assert order[-1] == "web1" and order[:29] == sorted(unreachable)  # unknown ones first, then the healthy
    assert seen["nodes"]["web1"]["status"] == "healthy" and seen["nodes"]["web1"]["fields"]["processed"] == "1"
    assert seen["nodes"]["web1"]["ok_slots"] == 1 and seen["tiles"]["nodes"] == "1 / 30"
