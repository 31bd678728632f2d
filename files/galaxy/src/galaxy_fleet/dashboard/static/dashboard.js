/* Galaxy dashboard: renders /api/status into the page and refreshes it.
   No libraries: the DOM is built with textContent (never innerHTML with data),
   the charts are inline SVG drawn here. */
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const refreshMs = Math.max(1, parseFloat(document.body.dataset.refresh || "5")) * 1000;
  let last = null;       // the newest status we rendered
  let lastOk = 0;        // when we last got one (ms)
  let failures = 0;

  // -- small helpers -------------------------------------------------------------
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("data-") || k === "title" || k === "role" || k.startsWith("aria-")) el.setAttribute(k, v);
      else el[k] = v;
    }
    for (const kid of kids.flat()) if (kid !== null && kid !== undefined && kid !== false)
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return el;
  }
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) el.setAttribute(k, v);
    for (const kid of kids.flat()) if (kid) el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    return el;
  }
  const tip = (text) => s("title", {}, text);
  const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));

  function dur(sec) {
    if (sec === null || sec === undefined || isNaN(sec)) return "–";
    if (sec < 1) return Math.round(sec * 1000) + " ms";
    if (sec < 10) return sec.toFixed(1) + " s";
    if (sec < 60) return Math.round(sec) + " s";
    const m = Math.floor(sec / 60), hrs = Math.floor(m / 60), d = Math.floor(hrs / 24);
    if (d > 0) return d + "d " + (hrs % 24) + "h";
    if (hrs > 0) return hrs + "h " + (m % 60) + "m";
    return m + "m " + Math.round(sec % 60) + "s";
  }
  function ago(epochSec) {
    if (!epochSec) return "never";
    const sec = Math.max(0, Date.now() / 1000 - epochSec);
    return sec < 2 ? "just now" : dur(sec).replace(/\.\d s$/, " s") + " ago";
  }
  const toEpoch = (iso) => (iso ? Date.parse(iso) / 1000 : null);
  function clock(epochSec, withDate) {
    const d = new Date(epochSec * 1000);
    const hm = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
    if (!withDate || Date.now() - d < 20 * 3600 * 1000) return hm;
    return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + hm;
  }
  const STATE_CLASS = { done: "ok", failed: "bad", timed_out: "bad", interrupted: "bad", cancelled: "muted",
                        running: "info", delivered: "info", queued: "info", received: "info" };

  // -- tiles ---------------------------------------------------------------------
  function tile(key, label, value, sub, cls) {
    return h("div", { class: "tile " + (cls || ""), "data-tile": key },
      h("div", { class: "tile-label", text: label }),
      h("div", { class: "tile-value", "data-value": key, text: value }),
      h("div", { class: "tile-sub", text: sub || "" }));
  }
  function renderTiles(st) {
    const f = st.fleet, o = st.orders, day = st.history.last_day;
    const p50 = st.history.latency_day.p50;
    const problems = f.degraded + f.down;
    $("tiles").replaceChildren(
      tile("nodes", "Nodes healthy", f.healthy + " / " + f.nodes,
        [f.degraded ? f.degraded + " degraded" : "", f.down ? f.down + " down" : "", f.unknown ? f.unknown + " unknown" : ""]
          .filter(Boolean).join(" · ") || "all connected", problems ? "bad" : f.unknown ? "warn" : "ok"),
      tile("pending", "Pending", num(o.pending), o.running + " running", o.pending ? "info" : ""),
      tile("processed", "Processed", num(o.processed), num(o.done) + " done", ""),
      tile("failed", "Failed", num(o.failed), num(day.failed) + " in 24 h", o.failed ? "bad-soft" : ""),
      tile("day", "Orders · 24 h", num(day.done + day.failed + day.cancelled + day.pending),
        p50 === null ? "no answers yet" : "median answer " + dur(p50), ""),
      tile("alerts", "Alerts · 24 h", num(st.alerts.last_day),
        st.recent_alerts.length ? "last " + ago(st.recent_alerts[0].received) : "none", st.alerts.last_day ? "warn" : ""),
      tile("disk", "Fullest disk", f.disk_percent_max === null ? "–" : Math.round(f.disk_percent_max) + "%",
        "across the fleet", f.disk_percent_max >= 90 ? "bad" : f.disk_percent_max >= 75 ? "warn" : ""),
      tile("uptime", "Uptime", dur(st.control.uptime_s), "control node " + st.control.host, ""),
    );
  }

  // -- charts ----------------------------------------------------------------------
  function chartBox(el) {
    const w = Math.max(260, Math.floor(el.clientWidth || 600)), hgt = Math.round(Math.min(220, Math.max(150, w * 0.36)));
    return { w, h: hgt, l: 50, r: 10, t: 10, b: 24 };
  }
  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v))), n = v / p;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * p;
  }
  // A top for a count axis whose four steps are whole, round numbers.
  const COUNT_STEPS = [1, 2, 3, 5, 10, 15, 20, 25, 50, 75, 100, 150, 200, 250, 500, 750, 1000, 1500, 2000, 2500, 5000];
  function niceCount(v) {
    for (const step of COUNT_STEPS) if (step * 4 >= v) return step * 4;
    return niceMax(v);
  }
  // A top for a duration axis whose four steps are round: 15 s, 1 min, 5 min, 1 h, ...
  const DURATION_STEPS = [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
  function niceDuration(v) {
    for (const step of DURATION_STEPS) if (step * 4 >= v) return step * 4;
    return niceMax(v);
  }
  function axes(g, box, max, fmt, starts) {
    const ih = box.h - box.t - box.b;
    for (let i = 0; i <= 4; i++) {
      const y = box.t + ih - (ih * i) / 4;
      g.append(s("line", { x1: box.l, x2: box.w - box.r, y1: y, y2: y, class: i ? "grid" : "axis" }));
      g.append(s("text", { x: box.l - 6, y: y + 4, class: "tick", "text-anchor": "end" }, fmt((max * i) / 4)));
    }
    const iw = box.w - box.l - box.r, n = starts.length, step = n > 12 && iw < 500 ? 6 : 3;
    starts.forEach((t, i) => {
      if (i % step) return;
      g.append(s("text", { x: box.l + (iw * (i + 0.5)) / n, y: box.h - 6, class: "tick", "text-anchor": "middle" },
        clock(t)));
    });
  }
  function renderOrdersChart(st) {
    const el = $("chart-orders"), box = chartBox(el), buckets = st.history.orders_per_hour;
    const keys = ["done", "failed", "cancelled", "pending"];
    const totals = buckets.map((b) => keys.reduce((a, k) => a + b[k], 0));
    const max = niceCount(Math.max(1, ...totals));
    const g = s("svg", { viewBox: `0 0 ${box.w} ${box.h}`, width: box.w, height: box.h, role: "img",
                         "aria-label": "Orders per hour over the last 24 hours" });
    axes(g, box, max, (v) => num(Math.round(v)), buckets.map((b) => b.start));
    const iw = box.w - box.l - box.r, ih = box.h - box.t - box.b, bw = iw / buckets.length;
    buckets.forEach((b, i) => {
      let y = box.t + ih;
      const x = box.l + i * bw + Math.max(1, bw * 0.12), w = Math.max(1, bw * 0.76);
      const label = clock(b.start, true) + " – " + keys.filter((k) => b[k]).map((k) => b[k] + " " + k).join(", ");
      const col = s("g", { class: "bar", "data-hour": i, "data-total": totals[i] }, tip(totals[i] ? label : clock(b.start, true) + ": no orders"));
      col.append(s("rect", { x: box.l + i * bw, y: box.t, width: bw, height: ih, class: "hit" }));
      for (const k of keys) {
        if (!b[k]) continue;
        const hh = (b[k] / max) * ih;
        y -= hh;
        col.append(s("rect", { x, y, width: w, height: Math.max(hh, 0.5), class: "seg " + k, rx: Math.min(2, w / 4) }));
      }
      g.append(col);
    });
    el.replaceChildren(g);
  }
  function renderLatencyChart(st) {
    const el = $("chart-latency"), box = chartBox(el), buckets = st.history.latency;
    const vals = buckets.flatMap((b) => [b.p50, b.p95]).filter((v) => v !== null);
    const g = s("svg", { viewBox: `0 0 ${box.w} ${box.h}`, width: box.w, height: box.h, role: "img",
                         "aria-label": "Order latency per hour over the last 24 hours" });
    if (!vals.length) {
      g.append(s("text", { x: box.w / 2, y: box.h / 2, class: "empty", "text-anchor": "middle" }, "No finished orders in the last 24 hours"));
      el.replaceChildren(g);
      return;
    }
    const max = niceDuration(Math.max(...vals) * 1.05);
    axes(g, box, max, (v) => (v ? dur(v).replace(" ", "").replace(/m0s$/, "m").replace(/h0m$/, "h") : "0"), buckets.map((b) => b.start));
    const iw = box.w - box.l - box.r, ih = box.h - box.t - box.b, n = buckets.length;
    const px = (i) => box.l + (iw * (i + 0.5)) / n, py = (v) => box.t + ih - (v / max) * ih;
    for (const key of ["p95", "p50"]) {
      // one path, broken where an hour had no finished orders
      let d = "", pen = false;
      buckets.forEach((b, i) => {
        if (b[key] === null) { pen = false; return; }
        d += (pen ? "L" : "M") + px(i).toFixed(1) + " " + py(b[key]).toFixed(1);
        pen = true;
      });
      if (key === "p95") {
        // a soft band between the median and the 95th percentile
        const pts = buckets.map((b, i) => [i, b]).filter(([, b]) => b.p50 !== null);
        if (pts.length > 1) {
          const up = pts.map(([i, b]) => px(i).toFixed(1) + " " + py(b.p95).toFixed(1));
          const down = pts.slice().reverse().map(([i, b]) => px(i).toFixed(1) + " " + py(b.p50).toFixed(1));
          g.append(s("path", { d: "M" + up.join("L") + "L" + down.join("L") + "Z", class: "band" }));
        }
      }
      g.append(s("path", { d, class: "line " + key }));
    }
    buckets.forEach((b, i) => {
      if (b.p50 === null) return;
      const dot = s("g", { class: "pt" }, tip(`${clock(b.start, true)}: median ${dur(b.p50)}, 95% ${dur(b.p95)}, ` +
                                             `slowest ${dur(b.max)} (${b.count} order${b.count === 1 ? "" : "s"})`));
      dot.append(s("rect", { x: px(i) - iw / n / 2, y: box.t, width: iw / n, height: ih, class: "hit" }));
      dot.append(s("circle", { cx: px(i), cy: py(b.p50), r: 2.6, class: "dot p50" }));
      dot.append(s("circle", { cx: px(i), cy: py(b.p95), r: 2.6, class: "dot p95" }));
      g.append(dot);
    });
    el.replaceChildren(g);
  }
  function healthStrip(slots, st) {
    const n = slots.length, w = 240, hh = 14, sw = w / n;
    const win = st.history.window;
    const g = s("svg", { viewBox: `0 0 ${w} ${hh}`, preserveAspectRatio: "none", class: "strip", role: "img",
                         "aria-label": "Health checks over the last 24 hours" });
    slots.forEach((v, i) => {
      const cls = v < 0 ? "none" : v ? "bad" : "ok";
      const t = clock(win.health_start + i * win.health_slot_s, true);
      g.append(s("rect", { x: i * sw + 0.3, y: 0, width: Math.max(0.4, sw - 0.6), height: hh, class: "slot " + cls },
        tip(t + ": " + (v < 0 ? "no check" : v ? "a check failed" : "healthy"))));
    });
    return g;
  }

  // -- nodes -------------------------------------------------------------------------
  function fig(key, label, value, cls, title) {
    return h("div", { class: "fig " + (cls || ""), title: title || null }, h("dt", { text: label }),
      h("dd", { "data-field": key }, value));
  }
  const mark = (ok) => (ok === true ? "✓ " : ok === false ? "✗ " : "");
  function diskBar(pct) {
    if (pct === null || pct === undefined) return "–";
    const cls = pct >= 90 ? "bad" : pct >= 75 ? "warn" : "ok";
    const bar = h("span", { class: "meter " + cls }, h("span", { class: "fill" }));
    bar.firstChild.style.width = Math.min(100, pct).toFixed(0) + "%";
    return h("span", { class: "disk" }, bar, h("span", { class: "pct", text: Math.round(pct) + "%" }));
  }
  // Problems first, then by name: the nodes that need a look are at the top.
  const STATUS_ORDER = { down: 0, degraded: 1, unknown: 2, healthy: 3 };
  const CARDS_UP_TO = 24;  // beyond this many nodes, one table row per node
  function nodeView(n, st) {
    const w = n.worker, oc = n.opencode, gone = n.status === "down";
    const marks = st.history.health[n.name] || "-".repeat(st.history.window.health_slots);
    return {
      // a node out of reach: its last report says nothing about its worker or opencode now
      worker: gone ? "unknown" : w.ok === null ? (n.connected ? "connected" : "–") : mark(w.ok) + (w.ok ? (w.running ? "busy" : "idle") : "down"),
      workerTip: gone || w.ok === null ? null : (w.message || "") + (w.ok ? ` · ${w.running} running, ${w.queued || 0} queued` : ""),
      uptimeLabel: n.uptime_s !== null ? "Uptime" : "Worker up",
      uptime: n.uptime_s !== null ? dur(n.uptime_s) : w.uptime_s !== null ? dur(w.uptime_s) : "–",
      opencode: gone ? "unknown" : oc.ok === null ? "not used" : mark(oc.ok) + (oc.ok ? (oc.ms !== null && oc.ms !== undefined ? Math.round(oc.ms) + " ms" : "healthy") : "unhealthy"),
      slots: [...marks].map((c) => (c === "-" ? -1 : Number(c))),
      note: n.status === "down" && n.error ? n.error
        : n.status === "degraded" ? n.reason
        : n.status === "unknown" && !n.last_seen ? "Not connected since the bot started; no report yet." : null,
      seen: [n.version ? "v" + n.version : null, n.connected ? "online" : "seen " + ago(n.last_seen),
             n.health_ts ? "checked " + ago(n.health_ts) : "not checked yet"].filter(Boolean).join(" · "),
    };
  }
  function nodeCard(n, v, st) {
    return h("article", { class: "node " + n.status, "data-node": n.name, "data-status": n.status },
      h("header", {},
        h("h3", { text: n.name }),
        h("span", { class: "pill " + n.status, "data-field": "status", text: n.status })),
      v.note ? h("p", { class: n.status === "unknown" ? "node-note" : "node-error", text: v.note }) : null,
      h("dl", { class: "figs" + (n.status === "down" ? " stale" : "") },
        fig("pending", "Pending", num(n.orders.pending), n.orders.pending ? "info" : ""),
        fig("processed", "Processed", num(n.orders.processed)),
        fig("failed", "Failed", num(n.orders.failed), n.orders.failed ? "bad" : ""),
        fig("uptime", v.uptimeLabel, v.uptime),
        fig("worker", "Worker", v.worker, n.worker.ok === false ? "bad" : "", v.workerTip),
        fig("opencode", "opencode", v.opencode, n.opencode.ok === false ? "bad" : ""),
        fig("disk", "Disk", diskBar(n.disk_percent), "wide"),
      ),
      h("div", { class: "history" }, healthStrip(v.slots, st),
        h("div", { class: "strip-axis" }, h("span", { text: "24 h ago" }), h("span", { text: "now" }))),
      h("footer", { text: v.seen }));
  }
  function nodeRow(n, v, st) {
    const cell = (key, value, cls, title) => h("td", { class: cls || "", "data-field": key, title: title || null }, value);
    return h("tr", { class: "node-row " + n.status, "data-node": n.name, "data-status": n.status },
      h("th", { scope: "row", title: v.note || v.seen }, h("span", { class: "node-name", text: n.name }),
        h("span", { class: "pill small " + n.status, "data-field": "status", text: n.status })),
      cell("pending", num(n.orders.pending), "num" + (n.orders.pending ? " info" : "")),
      cell("processed", num(n.orders.processed), "num"),
      cell("failed", num(n.orders.failed), "num" + (n.orders.failed ? " bad" : "")),
      cell("uptime", v.uptime, "num"),
      cell("worker", v.worker, n.worker.ok === false ? "bad" : "", v.workerTip),
      cell("opencode", v.opencode, n.opencode.ok === false ? "bad" : ""),
      cell("disk", diskBar(n.disk_percent), "disk-cell"),
      h("td", { class: "strip-cell" }, healthStrip(v.slots, st)),
      h("td", { class: "muted small", text: v.note || v.seen }));
  }
  function renderNodes(st) {
    const nodes = st.nodes.slice().sort((a, b) =>
      (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) || a.name.localeCompare(b.name));
    const box = $("nodes");
    if (nodes.length <= CARDS_UP_TO) {
      box.className = "nodes";
      box.replaceChildren(...nodes.map((n) => nodeCard(n, nodeView(n, st), st)));
    } else {
      box.className = "nodes dense panel";
      const head = ["Node", "Pending", "Processed", "Failed", "Up", "Worker", "opencode", "Disk", "Health · 24 h", ""];
      box.replaceChildren(h("div", { class: "table-wrap" }, h("table", { class: "node-table" },
        h("thead", {}, h("tr", {}, head.map((t, i) => h("th", { class: i >= 1 && i <= 4 ? "num" : "", text: t })))),
        h("tbody", {}, nodes.map((n) => nodeRow(n, nodeView(n, st), st))))));
    }
    $("nodes-count").textContent = `${st.fleet.connected} of ${st.fleet.nodes} connected`;
  }

  // -- orders, alerts, checks ------------------------------------------------------------
  function renderOrders(st) {
    const rows = st.recent_orders.map((o) => h("tr", { "data-order": o.id, "data-state": o.state },
      h("td", { class: "when", title: new Date(o.created * 1000).toISOString(), text: clock(o.created, true) }),
      h("td", { class: "host", text: o.host }),
      h("td", {}, h("span", { class: "pill small " + (STATE_CLASS[o.state] || "muted"), text: o.state.replace("_", " ") })),
      h("td", { class: "num", "data-field": "duration", text: o.duration_s !== null ? dur(o.duration_s) : o.started ? "running " + dur(Date.now() / 1000 - o.started) : "…" }),
      h("td", { class: "hide-s", text: o.from || "" }),
      h("td", { class: "payload", title: o.payload }, h("span", { text: o.payload }),
        o.error ? h("span", { class: "err", text: o.error }) : null)));
    if (!rows.length) rows.push(h("tr", {}, h("td", { colSpan: 6, class: "empty", text: "No orders yet." })));
    $("orders").tBodies[0].replaceChildren(...rows);
  }
  const SEV = { critical: "bad", error: "bad", warning: "warn", info: "info", debug: "muted" };
  function renderAlerts(st) {
    const items = st.recent_alerts.map((a) => h("li", { class: "sev-" + (SEV[a.severity] || "warn"), "data-alert": a.id },
      h("span", { class: "feed-when", text: clock(toEpoch(a.ts) || a.received, true) }),
      h("span", { class: "feed-host", text: a.host }),
      h("span", { class: "feed-msg", text: a.message || a.kind })));
    if (!items.length) items.push(h("li", { class: "empty", text: "No alerts. All quiet." }));
    $("alerts").replaceChildren(...items);
  }
  function renderChecks(st) {
    const items = st.health_checks.map((c) => h("li", { class: c.healthy ? "sev-ok" : "sev-bad", "data-ts": c.ts, "data-host": c.host },
      h("span", { class: "feed-when", text: clock(toEpoch(c.ts), true) }),
      h("span", { class: "feed-host", text: c.host }),
      h("span", { class: "feed-msg", text: (c.healthy ? "✓ " : "✗ ") + (c.message || (c.healthy ? "healthy" : "failing")) })));
    if (!items.length) items.push(h("li", { class: "empty", text: "No health checks have reported yet." }));
    $("checks").replaceChildren(...items);
  }

  // -- the loop ------------------------------------------------------------------------
  function render(st) {
    last = st;
    renderTiles(st);
    renderOrdersChart(st);
    renderLatencyChart(st);
    renderNodes(st);
    renderOrders(st);
    renderAlerts(st);
    renderChecks(st);
    document.documentElement.dataset.generated = st.generated;
    document.documentElement.dataset.renders = String(1 + parseInt(document.documentElement.dataset.renders || "0", 10));
  }
  function banner(text) {
    const b = $("banner");
    b.textContent = text || "";
    b.hidden = !text;
  }
  function tick() {
    const live = $("live");
    const stale = !lastOk || Date.now() - lastOk > refreshMs * 3;
    live.classList.toggle("stale", stale);
    $("updated").textContent = last ? (stale ? "stale · " : "live · ") + "updated " + ago(toEpoch(last.generated)) : "waiting for data…";
  }
  async function refresh() {
    try {
      const resp = await fetch("/api/status", { credentials: "same-origin", cache: "no-cache", headers: { Accept: "application/json" } });
      if (resp.status === 401) { location.href = "/login?next=/"; return; }
      const body = await resp.json().catch(() => null);
      if (!resp.ok) throw new Error((body && body.error) || "HTTP " + resp.status);
      render(body);
      lastOk = Date.now();
      failures = 0;
      banner("");
    } catch (err) {
      failures++;
      banner("Cannot refresh: " + err.message + (last ? " — showing the figures from " + clock(toEpoch(last.generated), true) : ""));
    } finally {
      tick();
      setTimeout(refresh, Math.min(refreshMs * Math.pow(2, Math.min(failures, 3)), 60000));
    }
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (last) { renderOrdersChart(last); renderLatencyChart(last); } }, 150);
  });
  document.addEventListener("DOMContentLoaded", () => {
    let initial = null;
    try { initial = JSON.parse($("initial").textContent); } catch (e) { initial = null; }
    if (initial) { render(initial); lastOk = Date.now(); }
    tick();
    setInterval(tick, 1000);
    setTimeout(refresh, initial ? refreshMs : 0);
  });
})();
