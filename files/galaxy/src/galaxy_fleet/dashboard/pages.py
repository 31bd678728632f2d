"""The page, the login form and the trivial /healthz route."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, make_response, redirect, render_template, request, url_for
from markupsafe import Markup

from galaxy_fleet.dashboard import auth
from galaxy_fleet.dashboard.reader import StoreUnavailable

bp = Blueprint("pages", __name__)


def _state() -> Any:
    return current_app.extensions["galaxy_dashboard"]


def _script_json(data: bytes) -> Markup:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' left
    (they can only occur inside JSON strings, where the \\u escapes mean the same)."""
    safe = data.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")
    return Markup(safe.decode("utf-8"))  # noqa: S704 - escaped above: it cannot close the script element


@bp.get("/")
def index() -> Any:
    st = _state()
    try:
        data, _etag = st.summary.encoded()
        error = None
    except StoreUnavailable as exc:
        data, error = b"null", str(exc)
    resp = make_response(
        render_template(
            "index.html",
            title=st.settings.title,
            initial=_script_json(data),
            refresh=st.settings.refresh,
            error=error,
            logout=bool(st.settings.token),
        )
    )
    resp.headers["Cache-Control"] = "no-store"
    if error:
        resp.status_code = 503
    return resp


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    st = _state()
    token = st.settings.token
    target = auth.safe_next(request.values.get("next"))
    if not token:
        return redirect(target)
    if request.method == "POST":
        if auth.token_ok(token, request.form.get("token", "").strip()):
            resp = redirect(target)
            resp.set_cookie(
                auth.COOKIE,
                auth.cookie_value(token),
                httponly=True,
                samesite="Strict",
                secure=request.is_secure,
                max_age=30 * 86400,
            )
            return resp
        return render_template(
            "login.html", title=st.settings.title, next=target, error="That token is not right."
        ), 401
    return render_template("login.html", title=st.settings.title, next=target, error=None)


@bp.post("/logout")
def logout() -> Any:
    resp = redirect(url_for("pages.login"))
    resp.delete_cookie(auth.COOKIE)
    return resp


@bp.get("/healthz")
def healthz() -> Response:
    """Trivial: the process answers (the benchmark's baseline; no store access)."""
    return Response(b"ok\n", mimetype="text/plain")
