"""PINK web server: JSON API (and browser UI) on Flask, run by gunicorn behind nginx."""

from __future__ import annotations

import logging
import os
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from pink import config as pink_config
from pink.lease import Lease
from pink.store import Store
from pink.transfer import WorkerLinks


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``test_config`` may carry ``PINK`` (a pink Config) and Flask settings."""
    app = Flask(__name__)
    cfg = (test_config or {}).get("PINK") or pink_config.load()
    if not cfg.web.secret_key:
        raise pink_config.ConfigError("web.secret_key is empty: set it (PINK_WEB_SECRET_KEY) to a long random string")
    app.config.from_mapping(
        SECRET_KEY=cfg.web.secret_key,
        MAX_CONTENT_LENGTH=cfg.web.max_upload_bytes,
        JANITOR=True,
    )
    app.config.update({k: v for k, v in (test_config or {}).items() if k != "PINK"})
    app.extensions["pink.config"] = cfg
    app.extensions["pink.store"] = Store(cfg.etcd)
    app.extensions["pink.links"] = WorkerLinks(cfg.web.ssh_key, cfg.web.known_hosts)
    app.extensions["pink.lease"] = Lease(app.extensions["pink.store"], cfg.web.lease_ttl_s, f"web server {os.getpid()}")
    # nginx is the only proxy in front of gunicorn: trust exactly one hop.
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]

    from . import api, auth, errors, janitor, ui

    errors.init_app(app)
    auth.init_app(app)
    app.register_blueprint(api.bp)
    app.register_blueprint(ui.bp)
    @app.get("/healthz")
    def healthz():
        return {"ok": True}

    if app.config["JANITOR"]:
        janitor.start(app)
    logging.getLogger("pink").setLevel(logging.INFO)
    return app
