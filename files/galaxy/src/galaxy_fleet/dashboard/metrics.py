"""Prometheus metrics under /metrics, computed from the store at scrape time."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from galaxy_fleet.dashboard.reader import DURATION_BUCKETS, StoreReader, StoreUnavailable
from galaxy_fleet.dashboard.summary import Summary
from galaxy_fleet.node_status import STATUSES
from galaxy_fleet.order import STATES


class FleetCollector:
    """A prometheus-client collector: each scrape reads the store once."""

    def __init__(self, reader: StoreReader, summary: Summary):
        self.reader = reader
        self.summary = summary

    def describe(self) -> list[Any]:
        return []  # unchecked collector: the metric set depends on the fleet

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily

        store_up = GaugeMetricFamily("galaxy_store_up", "1 when the dashboard can read the control node's store")
        try:
            counts = self.reader.order_counts()
            nodes = self.summary.nodes(counts=counts)
            histogram = self.reader.duration_histogram()
            alerts = self.reader.alert_counts()
            cursors = self.reader.cursors()
        except StoreUnavailable:
            store_up.add_metric([], 0)
            yield store_up
            return
        store_up.add_metric([], 1)
        yield store_up

        orders = GaugeMetricFamily("galaxy_orders", "Orders in the store by node and state", labels=["host", "state"])
        for host in sorted(counts):
            for state in STATES:
                orders.add_metric([host, state], counts[host].get(state, 0))
        yield orders

        up = GaugeMetricFamily(
            "galaxy_node_up", "1 when the control node's connection to the node is up", labels=["host"]
        )
        healthy = GaugeMetricFamily(
            "galaxy_node_healthy",
            "1 when the node's last health check passed, 0 when it failed (absent when unknown)",
            labels=["host"],
        )
        seen = GaugeMetricFamily(
            "galaxy_node_last_seen_timestamp_seconds", "When the node was last heard from", labels=["host"]
        )
        disk = GaugeMetricFamily(
            "galaxy_node_disk_used_percent",
            "Highest disk use of the node's spool and audit file systems",
            labels=["host"],
        )
        queued = GaugeMetricFamily(
            "galaxy_node_queued_orders", "Orders waiting in the node's queue (last health report)", labels=["host"]
        )
        uptime = GaugeMetricFamily(
            "galaxy_node_worker_uptime_seconds", "Seconds since the node's worker started", labels=["host"]
        )
        status = GaugeMetricFamily(
            "galaxy_node_status",
            "1 for the node's status (healthy, degraded, down, unknown:"
            " the rule the bot and the health playbook apply), 0 for the others",
            labels=["host", "status"],
        )
        for n in nodes:
            for name in STATUSES:
                status.add_metric([n["name"], name], 1 if n["status"] == name else 0)
            up.add_metric([n["name"]], 1 if n["connected"] else 0)
            if n["healthy"] is not None:
                healthy.add_metric([n["name"]], 1 if n["healthy"] else 0)
            if n["last_seen"] is not None:
                seen.add_metric([n["name"]], n["last_seen"])
            if n["disk_percent"] is not None:
                disk.add_metric([n["name"]], n["disk_percent"])
            if n["worker"]["queued"] is not None:
                queued.add_metric([n["name"]], n["worker"]["queued"])
            if n["worker"]["uptime_s"] is not None:
                uptime.add_metric([n["name"]], n["worker"]["uptime_s"])
        yield from (status, up, healthy, seen, disk, queued, uptime)

        duration = HistogramMetricFamily(
            "galaxy_order_duration_seconds",
            "Time from receiving an order to its answer, finished orders",
            labels=["host"],
        )
        for host in sorted(histogram):
            h = histogram[host]
            buckets = [(str(float(b)), n) for b, n in zip(DURATION_BUCKETS, h["buckets"], strict=False)]
            buckets.append(("+Inf", h["count"]))
            duration.add_metric([host], buckets, h["sum"])
        yield duration

        alert_total = GaugeMetricFamily(
            "galaxy_alerts", "Alerts received from the fleet", labels=["host", "kind", "severity"]
        )
        undelivered = GaugeMetricFamily(
            "galaxy_alerts_undelivered", "Alerts not yet delivered to Telegram", labels=["host"]
        )
        pending: dict[str, int] = {}
        for a in alerts:
            alert_total.add_metric([a["host"], a["kind"], a["severity"]], a["n"])
            pending[a["host"]] = pending.get(a["host"], 0) + (a["undelivered"] or 0)
        for host in sorted(pending):
            undelivered.add_metric([host], pending[host])
        yield alert_total
        yield undelivered

        events = GaugeMetricFamily(
            "galaxy_audit_events_received",
            "The newest audit event sequence number received from each node",
            labels=["host"],
        )
        for host in sorted(cursors):
            events.add_metric([host], cursors[host])
        yield events


def registry(reader: StoreReader, summary: Summary) -> Any:
    from prometheus_client import CollectorRegistry
    from prometheus_client.process_collector import ProcessCollector

    reg = CollectorRegistry(auto_describe=False)
    reg.register(FleetCollector(reader, summary))
    ProcessCollector(namespace="galaxy_dashboard", registry=reg)
    return reg
