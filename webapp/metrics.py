"""``GET /metrics``: the web server's Prometheus metrics (see pink/metrics.py, docs/metrics.md).

Not behind a login, as Prometheus scrapes it; the load balancers answer 404 for ``/metrics``
(roles/pink_lb), so only hosts that reach a web server's gunicorn port directly can read it.
Under gunicorn the metrics of all its processes are merged (prometheus-client's multiprocess
mode, see :mod:`pink.gunicorn_metrics`); without ``PROMETHEUS_MULTIPROC_DIR`` this process's own.
"""

from __future__ import annotations

import os
import time

from flask import Blueprint, Flask, Response, current_app, g, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

from pink.metrics import SUBMIT_SECONDS, ClusterCollector

bp = Blueprint("metrics", __name__)

#: The views whose answer is a job submission (the submit latency histogram).
SUBMIT_ENDPOINTS = frozenset({"api.submit_job", "api_lifecycle.resubmit_job"})


@bp.get("/metrics")
def metrics():
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = CollectorRegistry()
        registry.register(_ProcessMetrics())
    registry.register(current_app.extensions["pink.metrics"])
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)


class _ProcessMetrics:
    """This process's default registry (one process, no multiprocess directory)."""

    def collect(self):
        yield from REGISTRY.collect()


def _started() -> None:
    g.metrics_started = time.monotonic()


def _finished(response):
    started = g.pop("metrics_started", None)
    if started is not None and request.endpoint in SUBMIT_ENDPOINTS:
        SUBMIT_SECONDS.observe(time.monotonic() - started)
    return response


def init_app(app: Flask) -> None:
    app.extensions["pink.metrics"] = ClusterCollector(app.extensions["pink.store"])
    app.register_blueprint(bp)
    app.before_request(_started)
    app.after_request(_finished)
