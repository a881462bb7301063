"""Gunicorn server hooks for prometheus-client's multiprocess mode (imported by gunicorn's config).

Gunicorn runs several processes per web server, and a scrape reaches one of them. Each process
writes its counters and histograms into files under ``PROMETHEUS_MULTIPROC_DIR``; ``/metrics``
merges them, so any process answers for the whole web server. The config sets the directory in
the master's environment before anything imports prometheus-client (it picks its storage at
import) and names these hooks::

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = "/run/pink-web/metrics"
    from pink.gunicorn_metrics import child_exit, on_starting

This module lives in ``pink`` (whose package import is light), not ``webapp``: importing the
web app in gunicorn's master would import prometheus-client there too early.

``on_starting`` empties the directory when the server starts (counters start from zero, as
Prometheus expects of a restarted target); ``child_exit`` folds a finished process's live
gauges away (its counters stay counted).
"""

from __future__ import annotations

import os
import shutil


def _folder() -> str:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
    if not folder:
        raise RuntimeError("PROMETHEUS_MULTIPROC_DIR is not set: set it in gunicorn's config")
    return folder


def on_starting(server) -> None:  # noqa: ANN001 - gunicorn's Arbiter
    folder = _folder()
    shutil.rmtree(folder, ignore_errors=True)
    os.makedirs(folder, mode=0o700, exist_ok=True)


def child_exit(server, worker) -> None:  # noqa: ANN001 - gunicorn's Arbiter and Worker
    from prometheus_client import multiprocess  # noqa: PLC0415 - after the environment is set

    multiprocess.mark_process_dead(worker.pid)
