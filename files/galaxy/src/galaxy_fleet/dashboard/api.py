"""JSON under /api/ and Prometheus metrics under /metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from galaxy_fleet.dashboard.reader import StoreUnavailable, epoch

bp = Blueprint("api", __name__)

MAX_LIMIT = 10000


class BadRequest(ValueError):
    pass


def _state() -> Any:
    return current_app.extensions["galaxy_dashboard"]


@bp.errorhandler(StoreUnavailable)
def _unavailable(exc: StoreUnavailable) -> Any:
    resp = jsonify(error=str(exc))
    resp.status_code = 503
    resp.headers["Retry-After"] = "5"
    return resp


@bp.errorhandler(BadRequest)
def _bad(exc: BadRequest) -> Any:
    resp = jsonify(error=str(exc))
    resp.status_code = 400
    return resp


def _limit(default: int) -> int:
    raw = request.args.get("limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"limit: expected a number, got {raw!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise BadRequest(f"limit: must be between 1 and {MAX_LIMIT}, got {value}")
    return value


def _time(name: str) -> str | None:
    """A time filter as the audit trail's UTC form: ISO-8601 or an age like 15m, 2h, 7d."""
    from galaxy_fleet.audit import AuditError, parse_time

    raw = request.args.get(name)
    if not raw:
        return None
    try:
        return parse_time(raw)
    except AuditError as exc:
        raise BadRequest(f"{name}: {exc}") from None


@bp.get("/api/status")
def status() -> Response:
    """The fleet at a glance, as the page shows it (cached for ``cache_ttl`` seconds,
    gzip-compressed for clients that accept it, 304 when unchanged)."""
    summary = _state().summary
    gzipped = "gzip" in request.headers.get("Accept-Encoding", "")
    data, etag = summary.gzipped() if gzipped else summary.encoded()
    if etag in request.headers.get("If-None-Match", ""):
        resp = Response(status=304)
    else:
        resp = Response(data, mimetype="application/json")
        if gzipped:
            resp.headers["Content-Encoding"] = "gzip"
    resp.headers["ETag"] = etag
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["Vary"] = "Accept-Encoding"
    return resp


@bp.get("/api/nodes")
def nodes() -> Any:
    """Every node's figures and its newest full health report."""
    st = _state()
    reports = {n["name"]: {"health": n["health"], "hello": n["hello"]} for n in st.reader.nodes()}
    out = [{**n, **reports.get(n["name"], {})} for n in st.summary.nodes()]
    name = request.args.get("host")
    if name:
        wanted = set(name.split(","))
        out = [n for n in out if n["name"] in wanted]
    return jsonify(nodes=out, count=len(out))


@bp.get("/api/orders")
def orders() -> Any:
    """Orders, newest first; filters: host, state, from (also spelt user), batch, id, since, until, limit."""
    from galaxy_fleet.dashboard.summary import order_row

    since, until = _time("since"), _time("until")
    rows = _state().reader.orders(
        limit=_limit(50),
        host=request.args.get("host"),
        state=request.args.get("state"),
        sender=request.args.get("from") or request.args.get("user"),
        batch=request.args.get("batch"),
        order_id=request.args.get("id"),
        since=epoch(since) if since else None,
        until=epoch(until) if until else None,
    )
    return jsonify(orders=[order_row(o) for o in rows], count=len(rows))


@bp.get("/api/audit")
def audit() -> Any:
    """The central audit trail, like `galaxy audit` on the control node: severity, type,
    host, order_id, user (comma-separated lists), since, until, limit."""
    args = request.args
    events = _state().reader.events(
        host=args.get("host"),
        severity=args.get("severity"),
        type=args.get("type"),
        order_id=args.get("order_id"),
        user=args.get("user"),
        since=_time("since"),
        until=_time("until"),
        limit=_limit(100),
    )
    return jsonify(events=events, count=len(events))


@bp.get("/api/alerts")
def alerts() -> Any:
    rows = _state().reader.alerts(_limit(50), host=request.args.get("host"))
    return jsonify(alerts=rows, count=len(rows))


@bp.get("/metrics")
def metrics() -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(_state().registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
