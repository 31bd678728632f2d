"""The control plane's facade: the fleet as the bot, `galaxy send`, the MCP
server and the dashboard see it.

``Fleet(config)`` reads the ``control:`` section of the config::

    control:
      inventory: /etc/galaxy/inventory.yml   # an Ansible YAML/JSON inventory (required)
      nodes_group: galaxy_nodes
      store: /var/lib/galaxy/control/galaxy.db
      known_hosts: /etc/galaxy/known_hosts
      ssh_key: /var/lib/galaxy/.ssh/id_ed25519   # the routing key (default for every node)
      connect_timeout: 10                      # an unreachable node fails its part after this
      lost_after: 30                           # running orders of a node gone this long are reported lost

A node with ``ansible_connection: local`` (and optionally
``galaxy_config_path``) is reached by running `galaxy remote` as a local
process: the same protocol, no SSH. Tests use that to drive real workers.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from galaxy_fleet.control import inventory as inv
from galaxy_fleet.config import Config, ConfigError
from galaxy_fleet.control.inventory import TargetError
from galaxy_fleet.order import TERMINAL, new_id, utcnow
from galaxy_fleet.control.router import NodeBusy, NodeError, NodeUnavailable, Router, RouterSettings
from galaxy_fleet.control.store import OrderRecord, Store

__all__ = ["Fleet", "FleetEvent", "OrderRecord", "TargetError", "NodeUnavailable", "NodeError"]

log = logging.getLogger("galaxy.control")

STATE_OF_EVENT = {"order_queued": "queued", "order_delivered": "delivered", "order_running": "running"}


CONTROL_KEYS = {"inventory": str, "nodes_group": str, "store": str, "known_hosts": str, "ssh_key": str,
                "central_dir": str, "remote_command": str, "connect_timeout": (int, float), "request_timeout": (int, float),
                "ping_interval": (int, float), "dead_after": (int, float), "backoff_max": (int, float),
                "lost_after": (int, float), "health_every": (int, float)}


def check_section(section: dict[str, Any]) -> None:
    """Validate the ``control:`` section without touching the network (for `galaxy config check`)."""
    for key, value in section.items():
        kind = CONTROL_KEYS.get(key)
        if kind is None:
            raise ConfigError(f"control.{key}: unknown setting (known: {', '.join(sorted(CONTROL_KEYS))})")
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"control.{key}: expected {'a number' if kind != str else 'a string'}, got {value!r}")
        if kind != str and value < 0:
            raise ConfigError(f"control.{key}: must not be negative")


@dataclass
class FleetEvent:
    kind: str  # "order", "alert", "node_down", "node_up"
    host: str
    record: OrderRecord | None = None
    alert: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    message: str = ""
    ts: float = field(default_factory=time.time)


class Sessions:
    """Which agent session a chat continues on each node (survives restarts)."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, chat_id: int, host: str) -> str:
        key = self.store.session(chat_id, host)
        return key or self.new(chat_id, host)

    def new(self, chat_id: int, host: str) -> str:
        key = f"chat{chat_id}-{host}-{secrets.token_hex(3)}".replace("--", "-")
        self.store.set_session(chat_id, host, key)
        return key


class Fleet:
    def __init__(self, config: Config, *, store: Store | None = None, passive: bool = False):
        """``passive``: a short-lived client (`galaxy send`) that follows only its own
        orders: it streams from "now", stores no events or cursors and leaves
        alerts to the bot."""
        self.config = config
        self.passive = passive
        section = config.section("control")
        if not section.get("inventory"):
            raise ConfigError("control.inventory: the fleet's inventory file is not configured")
        self.inventory = inv.load(section["inventory"], nodes_group=section.get("nodes_group", "galaxy_nodes"),
                                  default_key=section.get("ssh_key"))
        self.store = store or Store(section.get("store", "/var/lib/galaxy/control/galaxy.db"))
        self.settings = RouterSettings.from_config(section)
        self.lost_after = float(section.get("lost_after", 30))
        self.health_every = float(section.get("health_every", 60))  # 0: only on request
        self.sessions = Sessions(self.store)
        self._subscribers: list[Callable[[FleetEvent], None]] = []
        self._last_hash: dict[str, str | None] = {}
        self._heartbeats: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._silent: set[str] = self._silent_at_start()
        self._audit: Any = None
        self._lost_marked: set[str] = set()
        self.router = Router(self.inventory.hosts, self.settings, on_message=self._on_message,
                             on_state=self._on_state, cursor=self._cursor)
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._watch_lost, name="galaxy-lost", daemon=True)

    # -- life cycle --------------------------------------------------------------
    def start(self) -> None:
        for name in self.inventory.hosts:
            self.store.set_node(name)
        self.router.start()
        self._watch.start()

    def stop(self) -> None:
        self._stop.set()
        self.router.stop()

    def wait_connected(self, timeout: float = 30.0, names: list[str] | None = None) -> bool:
        deadline = time.monotonic() + timeout
        for name in names or list(self.router.links):
            if not self.router.links[name].wait_up(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def subscribe(self, callback: Callable[[FleetEvent], None]) -> None:
        self._subscribers.append(callback)

    def _emit(self, ev: FleetEvent) -> None:
        for cb in list(self._subscribers):
            try:
                cb(ev)
            except Exception:
                log.exception("subscriber failed on %s event", ev.kind)

    # -- targets -------------------------------------------------------------------
    def resolve(self, spec: str) -> list[str]:
        return self.inventory.resolve(spec)

    def machines(self) -> list[dict[str, Any]]:
        stored = self.store.nodes()
        out = []
        for name, host in self.inventory.hosts.items():
            link = self.router.links[name]
            health = (stored.get(name) or {}).get("health") or {}
            hb = next((c.get("data", {}) for c in health.get("checks", []) if c.get("name") == "worker"), {})
            out.append({
                "name": name, "address": host.address, "groups": host.groups, "connected": link.connected,
                "healthy": health.get("healthy") if health else None,
                "last_seen": (stored.get(name) or {}).get("last_seen"),
                "running": len(hb.get("running", [])), "queued": hb.get("queued", 0),
                "error": link.error, "version": link.hello.get("version"),
            })
        return out

    # -- orders --------------------------------------------------------------------
    def submit(self, spec: str, payload: str, *, user: str, chat_id: int | None = None,
               message_id: int | None = None, executor: str | None = None, options: dict[str, Any] | None = None,
               session_key: str | None = None, timeout: float | None = None) -> list[OrderRecord]:
        """Send one order to every node the target names, in parallel.

        Each part is stored before it is sent. A node that cannot be reached
        fails its part with the reason; the others go on.
        """
        names = self.resolve(spec)
        batch = new_id() if len(names) > 1 else None
        records: dict[str, OrderRecord] = {}
        for name in names:
            key = session_key
            if key is None and chat_id is not None:
                key = self.sessions.get(chat_id, name)
            rec = OrderRecord(id=new_id(), host=name, payload=payload, state="received", batch=batch,
                              target_spec=spec, user=user, chat_id=chat_id, message_id=message_id,
                              executor=executor, session_key=key, options=dict(options or {}))
            if timeout is not None:
                rec.options["_timeout"] = timeout
            records[name] = self.store.add_order(rec)
        self._send(records)
        return [self.store.order(r.id) or r for r in records.values()]

    def _order_json(self, rec: OrderRecord) -> dict[str, Any]:
        options = {k: v for k, v in rec.options.items() if not k.startswith("_")}
        data: dict[str, Any] = {"type": "galaxy_order", "id": rec.id, "from": rec.user or "", "target": rec.host,
                                "command": "general", "payload": rec.payload, "timestamp": utcnow(),
                                "acknowledged": False}
        if rec.executor:
            data["executor"] = rec.executor
        if rec.session_key:
            data["session"] = rec.session_key
        if options:
            data["options"] = options
        if rec.options.get("_timeout"):
            data["timeout"] = rec.options["_timeout"]
        return data

    def _send(self, records: dict[str, OrderRecord]) -> None:
        results = self.router.fanout(list(records), "submit", lambda n: {"order": self._order_json(records[n])})
        for name, result in results.items():
            rec = records[name]
            if isinstance(result, NodeBusy):  # refused at the door: nothing runs, say so
                self._update(rec.id, state="failed", error=str(result), finished=time.time(),
                             details={"busy": True, "queued": result.queued, "limit": result.limit})
            elif isinstance(result, Exception):
                self._update(rec.id, state="failed", error=str(result), finished=time.time(),
                             details={"unreachable": isinstance(result, NodeUnavailable)})
            else:
                self._update(rec.id, state="queued")

    def _update(self, order_id: str, **fields: Any) -> OrderRecord | None:
        rec = self.store.update_order(order_id, **fields)
        if rec is not None:
            self._emit(FleetEvent("order", rec.host, record=rec))
        return rec

    def order(self, order_id: str) -> OrderRecord | None:
        return self.store.order(order_id)

    def orders(self, limit: int = 20, chat_id: int | None = None, batch: str | None = None) -> list[OrderRecord]:
        return self.store.orders(limit=limit, chat_id=chat_id, batch=batch)

    def cancel(self, order_id: str, *, user: str) -> OrderRecord:
        rec = self.store.order(order_id)
        if rec is None:
            raise KeyError(f"no order {order_id!r}")
        if rec.terminal:
            return rec
        self.router.request(rec.host, "cancel", order_id=order_id, user=user)
        return self.store.order(order_id) or rec

    def retry(self, order_id: str, *, user: str, chat_id: int | None = None,
              message_id: int | None = None) -> list[OrderRecord]:
        rec = self.store.order(order_id)
        if rec is None:
            raise KeyError(f"no order {order_id!r}")
        opts = dict(rec.options)
        timeout = opts.pop("_timeout", None)
        return self.submit(rec.host, rec.payload, user=user, chat_id=chat_id if chat_id is not None else rec.chat_id,
                           message_id=message_id, executor=rec.executor, options=opts,
                           session_key=rec.session_key, timeout=timeout)

    def wait(self, order_ids: list[str], timeout: float | None = None) -> list[OrderRecord]:
        """Block until every order is finished (or ``timeout``); returns their records."""
        done = threading.Event()
        wanted = set(order_ids)

        def check(_ev: FleetEvent | None = None) -> None:
            recs = [self.store.order(i) for i in wanted]
            if all(r is not None and r.terminal for r in recs):
                done.set()

        self.subscribe(check)
        try:
            check()
            done.wait(timeout)
        finally:
            self._subscribers.remove(check)
        return [r for r in (self.store.order(i) for i in order_ids) if r is not None]

    # -- health and audit ------------------------------------------------------------
    def health(self, spec: str | None = None) -> dict[str, dict[str, Any]]:
        names = self.resolve(spec) if spec else list(self.inventory.hosts)
        out: dict[str, dict[str, Any]] = {}
        for name, result in self.router.fanout(names, "health", lambda n: {}).items():
            if isinstance(result, Exception):
                out[name] = {"host": name, "healthy": False, "error": str(result), "checks": []}
            else:
                out[name] = result
                self.store.set_node(name, health=result, health_ts=time.time())
        return out

    def _poll_health(self) -> None:
        """Keep every connected node's latest health report in the store (the dashboard reads it)."""
        names = [n for n, link in self.router.links.items() if link.connected]
        if names:
            try:
                self.health(",".join(names))
            except Exception:
                log.exception("health poll failed")

    def audit(self, spec: str | None = None, **filters: Any) -> list[dict[str, Any]]:
        """The central audit trail (every node's events, as they streamed in)."""
        hosts = ",".join(self.resolve(spec)) if spec else None
        return self.store.events(host=hosts, **filters)

    def audit_event(self, type: str, **fields: Any) -> dict[str, Any]:
        """An event of the control node itself (a refusal, a confirmation): written to
        its own hash-chained log and into the central store, so fleet-wide queries
        and the dashboard see it."""
        if self._audit is None:
            from galaxy_fleet.node.worker import open_audit

            self._audit = open_audit(self.config)
        event = self._audit.append(type, **fields)
        self.store.add_events(self.config.host, [event], advance_cursor=False)
        return event

    # -- delivery bookkeeping ------------------------------------------------------
    def pending(self) -> list[FleetEvent]:
        out = [FleetEvent("order", r.host, record=r) for r in self.store.undelivered_orders()]
        out += [FleetEvent("alert", a.get("host", "?"), alert=a) for a in self.store.undelivered_alerts()]
        return out

    def delivered(self, ev: FleetEvent) -> None:
        if ev.kind == "order" and ev.record is not None and ev.record.terminal:
            self.store.mark_delivered(ev.record.id)
        elif ev.kind == "alert" and ev.alert is not None:
            self.store.mark_alert_delivered(ev.alert["id"])

    # -- from the router -------------------------------------------------------------
    def _cursor(self, host: str) -> int | None:
        if self.passive:
            return None
        seq, digest = self.store.cursor(host)
        self._last_hash[host] = digest
        return seq

    def _on_state(self, host: str, up: bool, error: str | None) -> None:
        now = time.time()
        if up:
            self._lost_marked.discard(host)
        if not self.passive:
            extra = {"last_seen": now, "hello": self.router.links[host].hello} if up else {}
            self.store.set_node(host, connected=int(up), error=error, **extra)
        self._emit(FleetEvent("node_up" if up else "node_down", host, message=error or ""))

    def _on_message(self, host: str, msg: dict[str, Any]) -> None:
        kind = msg.get("type")
        if kind == "heartbeat":
            self._on_heartbeat(host, msg.get("heartbeat") or {})
            return
        if self.passive:
            if kind == "event":
                self._on_order_event(host, msg["event"], msg.get("response"))
            return
        if kind == "event":
            self._on_event(host, msg["event"], msg.get("response"))
        elif kind == "alert":
            alert = msg.get("alert") or {}
            if isinstance(alert.get("id"), str) and self.store.add_alert({**alert, "host": host}):
                self._emit(FleetEvent("alert", host, alert={**alert, "host": host}))
            if isinstance(alert.get("id"), str):
                self.router.link(host).request_async("ack_alert", alert_id=alert["id"])

    def _on_heartbeat(self, host: str, beat: dict[str, Any]) -> None:
        interval = float(beat.get("interval") or 5.0)
        self._heartbeats[host] = (time.monotonic(), interval, beat)
        if self.passive:
            return
        self.store.set_node(host, last_seen=time.time())
        if host in self._silent and not beat.get("stopped"):
            self._silent.discard(host)
            self._fleet_alert(host, "worker_heard", "info", f"{host}: the order worker answers again "
                                                            f"(pid {beat.get('pid')})")

    def _fleet_alert(self, host: str, kind: str, severity: str, message: str) -> None:
        """An alert raised by the control node itself (stored, then handed to subscribers)."""
        alert = {"id": f"ctl-{new_id()}", "host": host, "kind": kind, "severity": severity,
                 "ts": utcnow(), "message": message, "origin": "control"}
        if self.store.add_alert(alert):
            self._emit(FleetEvent("alert", host, alert=alert))

    def _silent_at_start(self) -> set[str]:
        """Workers reported silent and not yet heard from again (survives restarts)."""
        last: dict[str, str] = {}
        for alert in reversed(self.store.alerts(limit=500)):  # oldest first
            if alert.get("kind") in ("worker_silent", "worker_heard"):
                last[alert.get("host", "?")] = alert["kind"]
        return {h for h, kind in last.items() if kind == "worker_silent"}

    def _check_heartbeats(self) -> None:
        """A connected node whose worker stopped beating: alert once, within a few intervals."""
        now = time.monotonic()
        for host, (seen, interval, beat) in list(self._heartbeats.items()):
            link = self.router.links.get(host)
            if link is None or not link.connected or host in self._silent:
                continue
            silent_for = now - seen
            if silent_for > max(2.0 * interval + 1.0, 3.0):
                self._silent.add(host)
                why = "stopped cleanly" if beat.get("stopped") else "stopped beating"
                self._fleet_alert(host, "worker_silent", "error",
                                  f"{host}: the order worker {why} ({silent_for:.0f} s without a heartbeat)")

    def _on_event(self, host: str, event: dict[str, Any], response: dict[str, Any] | None) -> None:
        prev_hash = self._last_hash.get(host)
        if prev_hash is not None and event.get("prev") != prev_hash and event.get("seq", 0) > 1:
            self._fleet_alert(host, "audit_chain_broken", "critical",
                              f"{host}: audit event {event.get('seq')} does not follow the one before it "
                              f"(edited or deleted events)")
        self._last_hash[host] = event.get("hash")
        self.store.add_events(host, [event])
        self.store.set_node(host, last_seen=time.time())
        self._on_order_event(host, event, response)

    def _on_order_event(self, host: str, event: dict[str, Any], response: dict[str, Any] | None) -> None:
        etype = event.get("type", "")
        oid = event.get("order_id")
        if not oid or not etype.startswith("order_"):
            return
        if etype in STATE_OF_EVENT:
            fields: dict[str, Any] = {"state": STATE_OF_EVENT[etype]}
            if etype == "order_running":
                fields["started"] = time.time()
            self._update(oid, **fields)
        elif etype == "order_progress":
            self._update(oid, progress=event.get("message"))
        elif etype[6:] in TERMINAL:
            resp = response or {}
            details = dict(resp.get("details") or {})
            details.update({k: resp.get(k) for k in ("exit_code", "timings", "bytes_out", "truncated", "executor")
                            if k in resp})
            self._update(oid, state=etype[6:], error=resp.get("error") or (event.get("message")
                                                                             if etype != "order_done" else None),
                         response=resp.get("response"), details=details, finished=time.time())

    def _watch_lost(self) -> None:
        """Orders on a node that has been unreachable for ``lost_after`` are reported failed ("lost")."""
        errors: dict[str, str | None] = {}
        next_health = time.monotonic() + 5.0
        while not self._stop.wait(1.0):
            now = time.monotonic()
            if not self.passive:
                self._check_heartbeats()
                for name, link in self.router.links.items():  # why a node never came up, for the dashboard
                    if not link.connected and errors.get(name) != link.error:
                        errors[name] = link.error
                        self.store.set_node(name, error=link.error)
                if self.health_every > 0 and now >= next_health:
                    next_health = now + self.health_every
                    threading.Thread(target=self._poll_health, name="galaxy-health-poll", daemon=True).start()
            for name, link in self.router.links.items():
                if link.connected or link.down_since is None or name in self._lost_marked:
                    continue
                if now - link.down_since < self.lost_after:
                    continue
                self._lost_marked.add(name)
                for rec in self.store.orders(limit=10000, host=name,
                                             states=("received", "queued", "delivered", "running")):
                    self._update(rec.id, state="failed", finished=time.time(),
                                 error=f"lost contact with {name} ({link.error}); the answer will follow if it "
                                       "comes back", details={**rec.details, "lost": True})


def default_store_path(config: Config) -> Path:
    return Path(config.section("control").get("store", "/var/lib/galaxy/control/galaxy.db"))
