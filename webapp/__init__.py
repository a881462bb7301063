"""PINK web server: JSON API (and browser UI) on Flask, run by gunicorn behind nginx."""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Any, Iterable

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from pink import __version__, config as pink_config
from pink.fairshare import FairShare
from pink.lease import Lease
from pink.store import Store

from .transfer import WorkerLinks


class TrustedProxyFix:
    """Werkzeug's ProxyFix (one hop: nginx) for requests that come from a trusted proxy only.

    A client that reaches gunicorn directly cannot pose as another address, or as HTTPS, with
    X-Forwarded-* headers of its own: those requests are served as they arrived.
    """

    def __init__(self, app, proxies: Iterable[str]) -> None:  # noqa: ANN001 - a WSGI app
        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1)
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]

    def __call__(self, environ, start_response):  # noqa: ANN001, ANN204 - WSGI
        try:
            peer = ipaddress.ip_address(environ.get("REMOTE_ADDR", ""))
        except ValueError:
            peer = None
        trusted = peer is not None and any(peer in net for net in self.networks)
        return (self.fixed if trusted else self.app)(environ, start_response)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` may carry ``PINK`` (a pink Config) and Flask settings."""
    app = Flask(__name__)
    cfg = (test_config or {}).get("PINK") or pink_config.load()
    if not cfg.web.secret_key:
        raise pink_config.ConfigError("web.secret_key is empty: set it (PINK_WEB_SECRET_KEY) to a long random string")
    app.config.from_mapping(
        SECRET_KEY=cfg.web.secret_key,
        # Only the image uploads may be big (the upload views raise their own limit); anything
        # else, an anonymous request included, is refused before its body is read.
        MAX_CONTENT_LENGTH=cfg.web.max_body_bytes,
        MAX_FORM_MEMORY_SIZE=cfg.web.max_body_bytes,
        JANITOR=True,
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "PINK"})
    app.extensions["pink.config"] = cfg
    app.extensions["pink.store"] = Store(cfg.etcd)
    app.extensions["pink.fairshare"] = FairShare(app.extensions["pink.store"], cfg.scheduling)
    app.extensions["pink.links"] = WorkerLinks(cfg.web.ssh_key, cfg.web.known_hosts,
                                               ciphers=cfg.web.ssh_ciphers)
    app.extensions["pink.lease"] = Lease(app.extensions["pink.store"], cfg.web.lease_ttl_s, f"web server {os.getpid()}")
    app.wsgi_app = TrustedProxyFix(app.wsgi_app, cfg.web.trusted_proxies)  # type: ignore[method-assign]

    from . import (accounts_api, api, api_lifecycle, arrays_api, auth, errors, fairshare_api, gpus_api, janitor,
                   metrics, ui, usage_api)

    errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(api_lifecycle.bp)
    app.register_blueprint(accounts_api.bp)
    app.register_blueprint(arrays_api.bp)
    app.register_blueprint(gpus_api.bp)
    app.register_blueprint(fairshare_api.bp)
    app.register_blueprint(ui.bp)
    app.register_blueprint(usage_api.bp)
    metrics.init_app(app)
    @app.get("/healthz")
    def healthz():
        return {"ok": True, "version": __version__}

    if app.config["JANITOR"]:
        janitor.start(app)
    logging.getLogger("pink").setLevel(logging.INFO)
    return app
