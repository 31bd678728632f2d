"""The dashboard's one token: a Bearer header for programs (Prometheus, curl), or a
login form that sets a cookie for browsers.

The cookie holds an HMAC of the token, not the token; it is HttpOnly and
SameSite=Strict. Without a configured token (loopback only, see
settings.check_bind) everything is open.
"""

from __future__ import annotations

import hashlib
import hmac
import urllib.parse
from typing import Any

COOKIE = "galaxy_dashboard"
# Reachable without the token: the login form, the trivial health route and the
# page's static files (no data in them).
OPEN_ENDPOINTS = {"pages.login", "pages.healthz", "static"}


def cookie_value(token: str) -> str:
    return hmac.new(token.encode(), b"galaxy-dashboard-session-v1", hashlib.sha256).hexdigest()


def token_ok(token: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode(), token.encode())


def authorized(token: str | None, request: Any) -> bool:
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer " and token_ok(token, header[7:].strip()):
        return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and hmac.compare_digest(cookie.encode(), cookie_value(token).encode())


def guard(token: str | None) -> Any:
    """A before_request hook: 401 for the API and /metrics, the login form for pages."""

    def check() -> Any:
        from flask import jsonify, redirect, request, url_for

        if not token or request.endpoint in OPEN_ENDPOINTS or authorized(token, request):
            return None
        if request.path.startswith(("/api/", "/metrics")) or request.endpoint is None:
            resp = jsonify(error="authentication required: send 'Authorization: Bearer <token>'")
            resp.status_code = 401
            resp.headers["WWW-Authenticate"] = 'Bearer realm="galaxy-dashboard"'
            return resp
        return redirect(url_for("pages.login", next=request.full_path.rstrip("?")))

    return check


def safe_next(target: str | None) -> str:
    """Only a path on this site (no scheme, no //host) as the place to go after login. Browsers drop
    tabs and newlines from a URL and read a backslash as a slash, so ``/\t/evil`` is refused too."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in target):
        return "/"
    parts = urllib.parse.urlsplit(target)
    if parts.scheme or parts.netloc:
        return "/"
    return target


def host_name(header: str | None) -> str | None:
    """The name in a Host header, without its port and lowercased (IPv6 in brackets); None if malformed."""
    host = (header or "").strip().lower()
    if not host:
        return None
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(":")
        rest = f":{port}" if port or host.endswith(":") else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def host_guard(allowed: set[str]) -> Any:
    """A before_request hook: 421 for a Host header that is not one of this dashboard's names, so a
    web page cannot reach it through a name of its own that resolves to 127.0.0.1 (DNS rebinding)."""

    def check() -> Any:
        from flask import request

        name = host_name(request.headers.get("Host"))
        if name is not None and name in allowed:
            return None
        return (
            "misdirected request: this dashboard answers to "
            + ", ".join(sorted(allowed))
            + " (add other names to dashboard.allowed_hosts)\n",
            421,
            {"Content-Type": "text/plain"},
        )

    return check
