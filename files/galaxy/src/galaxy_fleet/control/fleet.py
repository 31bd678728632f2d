"""The control plane's facade: the fleet as the bot, `galaxy send`, the MCP
server and the dashboard see it.

``Fleet(config)`` works from the ``control:`` section of the config
(``galaxy_fleet.config.ControlConfig``: the inventory, the store, the routing
key and the router's timeouts).

A node with ``ansible_connection: local`` (and optionally
``galaxy_config_path``) is reached by running `galaxy remote` as a local
process: the same protocol, no SSH. Tests use that to drive real workers.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from galaxy_fleet.config import Config, ConfigError
from galaxy_fleet.control import inventory as inv
from galaxy_fleet.control.inventory import TargetError
from galaxy_fleet.control.router import NodeBusy, NodeError, NodeUnavailable, Router
from galaxy_fleet.control.store import OrderRecord, Store
from galaxy_fleet.node_status import node_status
from galaxy_fleet.order import (
    ACTIVE,
    DONE,
    FAILED,
    QUEUED,
    RECEIVED,
    RUNNING,
    build,
    is_terminal,
    new_id,
    state_of_event,
    utcnow,
)

__all__ = ["Fleet", "FleetEvent", "NodeError", "NodeUnavailable", "OrderRecord", "PermissionRefused", "TargetError"]

log = logging.getLogger("galaxy.control")

# A running order's agent asks before a guarded tool (node/permissions.py); these events of the
# node become FleetEvent("permission") for the order's chat.
PERMISSION_EVENTS = ("permission_asked", "permission_answered", "permission_expired")


class PermissionRefused(PermissionError):
    """Who answered a permission prompt may not (neither the order's sender nor an admin)."""


def same_person(a: str | None, b: str | None) -> bool:
    """Whether two sender names are one person: ``telegram:123(@old)`` and ``telegram:123(@new)`` are."""

    def who(name: str) -> str:
        return name.split("(", 1)[0].strip() if name.startswith("telegram:") else name.strip()

    return bool(a and b and who(a) and who(a) == who(b))


@dataclass
class FleetEvent:
    kind: str  # "order", "alert", "node_down", "node_up", "permission" (event: the node's permission_* event)
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
        control = config.control
        if not control.inventory:
            raise ConfigError("control.inventory: the fleet's inventory file is not configured")
        self.inventory = inv.load(control.inventory, nodes_group=control.nodes_group, default_key=control.ssh_key)
        self.store = store or Store(control.store)
        self.settings = control
        self.lost_after = control.lost_after
        self.health_every = control.health_every  # 0: only on request
        self.sessions = Sessions(self.store)
        self._subscribers: list[Callable[[FleetEvent], None]] = []
        self._last_hash: dict[str, str | None] = {}
        self._rechecked: set[str] = set()  # hosts reconnected to check their log after a broken link
        self._halted: set[str] = set()  # hosts whose stream is ignored until the link is checked again
        self._heartbeats: dict[str, tuple[float, float, dict[str, Any]]] = {}
        self._silent: set[str] = self._silent_at_start()
        self._audit: Any = None
        # The control node's own trail is a chain of its own, under this name (see ControlConfig.audit).
        self.trail_name = f"control@{config.host}"
        self._lost_marked: set[str] = set()
        self._forged: set[str] = set()  # nodes that reported another node's order (alerted once)
        self.router = Router(
            self.inventory.hosts,
            self.settings,
            on_message=self._on_message,
            on_state=self._on_state,
            cursor=self._cursor,
        )
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
        """Every node with its status and the reason for it (node_status: the dashboard's rule too)."""
        stored = self.store.nodes()
        out = []
        for name, host in self.inventory.hosts.items():
            link = self.router.links[name]
            node = stored.get(name) or {}
            health = node.get("health") or {}
            hb: dict[str, Any] = next(
                (c.get("data", {}) for c in health.get("checks", []) if c.get("name") == "worker"), {}
            )
            verdict = node_status(
                connected=link.connected,
                health=health,
                error=link.error,
                seen=link.connected or node.get("last_seen") is not None,
                worker_silent=name in self._silent,
            )
            out.append(
                {
                    "name": name,
                    "address": host.address,
                    "groups": host.groups,
                    "connected": link.connected,
                    "status": verdict.status,
                    "reason": verdict.reason,
                    "healthy": health.get("healthy") if health else None,
                    "last_seen": node.get("last_seen"),
                    "running": len(hb.get("running", [])),
                    "queued": hb.get("queued", 0),
                    "error": link.error,
                    "version": link.hello.get("version"),
                }
            )
        return out

    # -- orders --------------------------------------------------------------------
    def submit(
        self,
        spec: str,
        payload: str,
        *,
        sender: str,
        chat_id: int | None = None,
        message_id: int | None = None,
        executor: str | None = None,
        options: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float | None = None,
    ) -> list[OrderRecord]:
        """Send one order to every node the target names, in parallel.

        Each part is stored before it is sent. A node that cannot be reached
        fails its part with the reason; the others go on.
        """
        names = self.resolve(spec)
        batch = new_id() if len(names) > 1 else None
        records: dict[str, OrderRecord] = {}
        for name in names:
            key = session
            if key is None and chat_id is not None:
                key = self.sessions.get(chat_id, name)
            rec = OrderRecord(
                id=new_id(),
                host=name,
                payload=payload,
                state=RECEIVED,
                batch=batch,
                target_spec=spec,
                sender=sender,
                chat_id=chat_id,
                message_id=message_id,
                executor=executor,
                session=key,
                timeout=timeout,
                options=dict(options or {}),
            )
            records[name] = self.store.add_order(rec)
        self._send(records)
        return [self.store.order(r.id) or r for r in records.values()]

    @staticmethod
    def _order_json(rec: OrderRecord) -> dict[str, Any]:
        return build(
            rec.payload,
            id=rec.id,
            sender=rec.sender,
            target=rec.host,
            executor=rec.executor,
            timeout=rec.timeout,
            session=rec.session,
            options=rec.options,
        )

    def _send(self, records: dict[str, OrderRecord]) -> None:
        results = self.router.fanout(list(records), "submit", lambda n: {"order": self._order_json(records[n])})
        for name, result in results.items():
            rec = records[name]
            if isinstance(result, NodeBusy):  # refused at the door: nothing runs, say so
                self._update(
                    rec.id,
                    state=FAILED,
                    error=str(result),
                    finished=time.time(),
                    details={"busy": True, "queued": result.queued, "limit": result.limit},
                )
            elif isinstance(result, Exception):
                self._update(
                    rec.id,
                    state=FAILED,
                    error=str(result),
                    finished=time.time(),
                    details={"unreachable": isinstance(result, NodeUnavailable)},
                )
            else:
                self._update(rec.id, state=QUEUED)

    def _update(self, order_id: str, **fields: Any) -> OrderRecord | None:
        rec = self.store.update_order(order_id, **fields)
        if rec is None and self.passive and is_terminal(fields.get("state")):
            # The bot's Fleet shares the store and may have recorded the end first:
            # this client's waiters (`galaxy send`, MCP) must hear it all the same.
            rec = self.store.order(order_id)
        if rec is not None:
            self._emit(FleetEvent("order", rec.host, record=rec))
        return rec

    def order(self, order_id: str) -> OrderRecord | None:
        return self.store.order(order_id)

    def orders(self, limit: int = 20, chat_id: int | None = None, batch: str | None = None) -> list[OrderRecord]:
        return self.store.orders(limit=limit, chat_id=chat_id, batch=batch)

    def cancel(self, order_id: str, *, user: str) -> OrderRecord:
        """``user``: who cancels (recorded in the node's audit trail)."""
        rec = self.store.order(order_id)
        if rec is None:
            raise KeyError(f"no order {order_id!r}")
        if rec.terminal:
            return rec
        self.router.request(rec.host, "cancel", order_id=order_id, user=user)
        return self.store.order(order_id) or rec

    def retry(
        self, order_id: str, *, sender: str, chat_id: int | None = None, message_id: int | None = None
    ) -> list[OrderRecord]:
        rec = self.store.order(order_id)
        if rec is None:
            raise KeyError(f"no order {order_id!r}")
        return self.submit(
            rec.host,
            rec.payload,
            sender=sender,
            chat_id=chat_id if chat_id is not None else rec.chat_id,
            message_id=message_id,
            executor=rec.executor,
            options=dict(rec.options),
            session=rec.session,
            timeout=rec.timeout,
        )

    def answer_permission(
        self, order_id: str, permission_id: str, answer: str, by: str, *, is_admin: bool = False
    ) -> dict[str, Any]:
        """Answer a permission prompt of a running order (once, always, deny) on its node.

        Only the order's sender (``by`` names the same person as the order's ``sender``) or an admin
        may: anyone else is refused here (PermissionRefused) and the refusal is audited in the
        control node's trail as ``permission_answer_refused``; the node is not asked. The node
        records the decision with ``by`` and refuses a prompt that is gone or already decided
        (NodeError)."""
        rec = self.store.order(order_id)
        if rec is None:
            raise KeyError(f"no order {order_id!r}")
        if not is_admin and not same_person(by, rec.sender):
            why = f"{by} may not answer the permission prompts of order {order_id}, placed by {rec.sender or 'nobody'}"
            try:
                self.audit_event(
                    "permission_answer_refused",
                    severity="warning",
                    message=why,
                    user=by,
                    order_id=order_id,
                    node=rec.host,
                    permission=permission_id,
                    answer=answer,
                    reason="not_sender",
                )
            except (OSError, ValueError) as exc:
                log.error("cannot record a refused permission answer in the control trail: %s", exc)
            raise PermissionRefused(why)
        result = self.router.request(
            rec.host, "permission", order=order_id, permission=permission_id, answer=answer, by=by
        )
        return result if isinstance(result, dict) else {"answer": answer, "by": by}

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
            from galaxy_fleet.audit import AuditLog

            self._audit = AuditLog(
                self.config.control.audit_path, self.trail_name, rotate_bytes=self.config.audit.rotate_bytes
            )
        event = self._audit.append(type, **fields)
        self.store.add_events(self.trail_name, [event], advance_cursor=False)
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
    def _cursor(self, host: str, hello: dict[str, Any], ask: Callable[..., Any]) -> int | None:
        """Where the host's event stream resumes, once its audit log is known to be the one
        streamed so far; a log reset, truncated or rewritten is read again from its start."""
        if self.passive:
            return None
        self._halted.discard(host)
        seq, digest = self.store.cursor(host)
        found = self._anchor(host, hello, ask, seq, digest)
        if found is not None and found[0] == "gap":
            # Removed before we received them (retention, or deleted): the log is the same one,
            # so what we hold stays and the stream goes on from the cursor, unanchored.
            self._fleet_alert(host, "audit_chain_broken", "critical", f"{host}: {found[1]}")
            found, digest = None, None
        if found is not None:
            self._rechecked.discard(host)
            self._log_reset(host, hello, seq, found[1])
            seq, digest = 0, None
        elif hello.get("log_id") and self.store.get(f"log_id:{host}") != hello["log_id"]:
            self.store.put(f"log_id:{host}", hello["log_id"])
        self._last_hash[host] = digest
        return seq

    def _anchor(
        self, host: str, hello: dict[str, Any], ask: Callable[..., Any], seq: int, digest: str | None
    ) -> tuple[str, str] | None:
        """Whether the node's audit log is still the one whose events up to ``seq`` are stored: None
        if it is, else ("reset", why) (another identity, an end before ``seq``, an event at ``seq``
        unlike the stored copy) or ("gap", why) (the same log, but the events from ``seq`` on to the
        oldest it still has are gone)."""
        known = self.store.get(f"log_id:{host}") or None
        log_id = hello.get("log_id")
        if known is not None and log_id != known:
            return "reset", f"its audit log has another identity ({log_id or 'none'}, was {known})"
        if seq <= 0:
            return None
        end = hello.get("cursor")
        if isinstance(end, int) and end < seq:
            return "reset", (
                f"its audit log ends at event {end}, before the {seq} events already received (truncated or reset)"
            )
        found = (ask("audit", after=seq - 1, limit=1) or {}).get("events") or []
        theirs: dict[str, Any] = found[0] if found and isinstance(found[0], dict) else {}
        first = theirs.get("seq") if theirs else None
        if not isinstance(first, int) or first < seq:
            return "reset", f"event {seq} of its audit log is missing (deleted)"
        if first == seq:
            ours = self.store.event(host, seq)
            if (theirs != ours) if ours is not None else (theirs.get("hash") != digest):
                return "reset", f"event {seq} of its audit log differs from the copy received (rewritten and re-sealed)"
            return None
        if first == seq + 1 and theirs.get("prev") == digest:
            return None  # the segment that held event seq was removed; the next event still links to it
        if known is None:
            return "reset", f"event {seq} of its audit log is missing (deleted)"
        return "gap", (
            f"events {seq + 1} to {first - 1} of its audit log are gone before the control node received "
            f"them (removed by retention, or deleted); the events after them cannot be checked against "
            f"the copy received"
        )

    def _log_reset(self, host: str, hello: dict[str, Any], seq: int, reason: str) -> None:
        """Alert, record it in the control node's own trail, keep the stored events of the old log
        aside (``events_superseded``) and start the host's cursor over."""
        old = self.store.get(f"log_id:{host}") or None
        new = hello.get("log_id") if isinstance(hello.get("log_id"), str) else None
        moved = self.store.supersede_events(host, old)
        self.store.put(f"log_id:{host}", new or "")
        message = (
            f"{host}: {reason}. The audit trail was reset or rewritten; the {moved} events received "
            f"before are kept aside and its log is read again from the start"
        )
        try:
            self.audit_event(
                "audit_reset",
                severity="critical",
                message=message,
                node=host,
                reason=reason,
                old_log=old,
                new_log=new,
                cursor=seq,
                node_end=hello.get("cursor"),
                superseded=moved,
            )
        except (OSError, ValueError) as exc:
            log.error("cannot record the audit reset of %s in the control trail: %s", host, exc)
        self._fleet_alert(host, "audit_reset", "critical", message)

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
        elif kind == "log_reset":  # the node saw its log change under the stream: check it again
            self._halted.add(host)
            self.router.link(host).drop("its audit log changed under the stream")
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
            self._fleet_alert(
                host, "worker_heard", "info", f"{host}: the order worker answers again (pid {beat.get('pid')})"
            )

    def _fleet_alert(self, host: str, kind: str, severity: str, message: str) -> None:
        """An alert raised by the control node itself (stored, then handed to subscribers)."""
        alert = {
            "id": f"ctl-{new_id()}",
            "host": host,
            "kind": kind,
            "severity": severity,
            "ts": utcnow(),
            "message": message,
            "origin": "control",
        }
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
                self._fleet_alert(
                    host,
                    "worker_silent",
                    "error",
                    f"{host}: the order worker {why} ({silent_for:.0f} s without a heartbeat)",
                )

    def _on_event(self, host: str, event: dict[str, Any], response: dict[str, Any] | None) -> None:
        if host in self._halted:
            return
        prev_hash = self._last_hash.get(host)
        if prev_hash is not None and event.get("prev") != prev_hash and event.get("seq", 0) > 1:
            if host not in self._rechecked:
                # Perhaps not the log streamed so far: check it on a new connection (see
                # _cursor) before storing more of it. If it is, the chain broke after the cursor.
                self._rechecked.add(host)
                self._halted.add(host)
                self.router.link(host).drop(f"audit event {event.get('seq')} does not follow the one before")
                return
            self._rechecked.discard(host)
            self._fleet_alert(
                host,
                "audit_chain_broken",
                "critical",
                f"{host}: audit event {event.get('seq')} does not follow the one before it (edited or deleted events)",
            )
        self._last_hash[host] = event.get("hash")
        self.store.add_events(host, [event])
        self.store.set_node(host, last_seen=time.time())
        self._on_order_event(host, event, response)

    def _on_order_event(self, host: str, event: dict[str, Any], response: dict[str, Any] | None) -> None:
        etype = event.get("type", "")
        oid = event.get("order_id")
        if not oid:
            return
        if not self._owns(host, str(oid), etype):
            return
        if etype in PERMISSION_EVENTS:
            self._emit(FleetEvent("permission", host, record=self.store.order(oid), event=event))
            return
        state = state_of_event(etype)
        if etype == "order_progress":
            self._update(oid, progress=event.get("message"))
        elif state in ACTIVE:
            fields: dict[str, Any] = {"state": state}
            if state == RUNNING:
                fields["started"] = time.time()
            self._update(oid, **fields)
        elif is_terminal(state):
            # The node's sidecar: the answer and its figures as fields (see node/answer.py).
            resp = response or {}
            details = dict(resp.get("details") or {})
            details.update(
                {k: resp.get(k) for k in ("exit_code", "timings", "bytes_out", "truncated", "executor") if k in resp}
            )
            answer = resp.get("answer")
            self._update(
                oid,
                state=state,
                error=resp.get("error") or (event.get("message") if state != DONE else None),
                answer=answer if isinstance(answer, str) else None,
                response=resp.get("response"),
                details=details,
                finished=time.time(),
            )

    def _owns(self, host: str, order_id: str, etype: str) -> bool:
        """An event changes an order only when it comes from the node the order was sent to: what a
        node says about another node's order is refused (logged, and alerted once per node)."""
        rec = self.store.order(order_id)
        if rec is None or rec.host == host:
            return True  # an order this control node did not send (placed on the node itself): nothing to change
        log.warning("%s sent %s for order %s, which belongs to %s: refused", host, etype, order_id, rec.host)
        if not self.passive and host not in self._forged:
            self._forged.add(host)
            self._fleet_alert(
                host,
                "event_refused",
                "critical",
                f"{host} sent {etype} for order {order_id}, which belongs to {rec.host}: refused "
                "(a node may report only its own orders)",
            )
        return False

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
                for rec in self.store.orders(limit=10000, host=name, states=ACTIVE):
                    self._update(
                        rec.id,
                        state=FAILED,
                        finished=time.time(),
                        error=f"lost contact with {name} ({link.error}); the answer will follow if it comes back",
                        details={**rec.details, "lost": True},
                    )
