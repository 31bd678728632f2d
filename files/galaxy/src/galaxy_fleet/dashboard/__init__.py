"""`galaxy dashboard`: the fleet at a glance in a browser, JSON under /api/ and
Prometheus metrics under /metrics.

It reads the control node's store (``control.store``, written by galaxy-bot)
read-only and never talks to the nodes itself. Served by waitress on
127.0.0.1:5000 by default; any other address needs a token (see settings.py).

This module stays light (no Flask import) so that `galaxy` can register the
subcommand cheaply: ``add_arguments(parser)`` and ``run(args, config)``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

__all__ = ["add_arguments", "create_app", "run"]


@dataclass
class DashboardState:
    settings: Any
    reader: Any
    summary: Any
    registry: Any


def create_app(config: Any, **overrides: Any) -> Any:
    """The Flask app for ``config`` (a galaxy Config). ``overrides`` replace settings
    (store, host, port, token, refresh, cache_ttl, ...), e.g. in tests."""
    from flask import Flask

    from galaxy_fleet.dashboard import api, auth, metrics, pages, settings
    from galaxy_fleet.dashboard.reader import StoreReader
    from galaxy_fleet.dashboard.summary import Summary

    s = settings.load(config, **overrides)
    app = Flask(__name__)
    app.config.update(MAX_CONTENT_LENGTH=64 * 1024)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.json.compact = True  # type: ignore[attr-defined]
    reader = StoreReader(s.store)
    summary = Summary(reader, ttl=s.cache_ttl, history_ttl=s.history_ttl)
    app.extensions["galaxy_dashboard"] = DashboardState(s, reader, summary, metrics.registry(reader, summary))
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.before_request(auth.host_guard(s.allowed_host_names()))
    app.before_request(auth.guard(s.token))

    @app.after_request
    def _headers(resp: Any) -> Any:
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' "
            "data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        )
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        return resp

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host",
        help="address to listen on (default: dashboard.host or 127.0.0.1; any non-loopback address requires a token)",
    )
    parser.add_argument("--port", type=int, help="TCP port (default: dashboard.port or 5000; 0 picks a free one)")
    parser.add_argument("--store", help="the control node's store (default: control.store)")
    parser.add_argument("--threads", type=int, help="WSGI worker threads (default: dashboard.threads or 8)")


def run(args: argparse.Namespace, config: Any) -> int:
    """Serve the dashboard under waitress until SIGTERM or SIGINT; 2 on a configuration error."""
    import logging
    import signal
    import sys

    from galaxy_fleet.config import ConfigError
    from galaxy_fleet.dashboard import settings

    logging.basicConfig(
        level=logging.DEBUG if getattr(args, "verbose", False) else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    log = logging.getLogger("galaxy.dashboard")
    try:
        app = create_app(config, host=args.host, port=args.port, store=args.store, threads=args.threads)
        s = app.extensions["galaxy_dashboard"].settings
        settings.check_bind(s)
    except ConfigError as exc:
        print(f"galaxy dashboard: {exc}", file=sys.stderr)
        return 2

    from waitress.server import create_server

    try:
        server = create_server(
            app,
            host=s.host,
            port=s.port,
            threads=s.threads,
            ident="galaxy-dashboard",
            connection_limit=1000,
            channel_timeout=60,
            clear_untrusted_proxy_headers=True,
        )
    except OSError as exc:
        print(f"galaxy dashboard: cannot listen on {s.host}:{s.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    listen = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    urls = " ".join(f"http://{f'[{h}]' if ':' in str(h) else h}:{p}/" for h, p in listen)
    print(
        f"galaxy dashboard: serving {s.store} on {urls}{' (token required)' if s.token else ''}",
        file=sys.stderr,
        flush=True,
    )
    if not s.store.exists():
        log.warning("%s does not exist yet: the page shows an error until galaxy-bot creates it", s.store)
    try:
        server.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.close()
    return 0
