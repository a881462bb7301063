"""JSON errors, made in one place."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from pink.errors import StoreError, StoreUnavailable, WorkerUnavailable

from .auth import LoginThrottled

log = logging.getLogger(__name__)


def error_response(status: int, message: str, headers: dict | None = None):
    response = jsonify(error=message)
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def http_error_response(exc: HTTPException):
    """A werkzeug HTTP error as JSON, with the headers it carries (``Allow`` of a 405)."""
    headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
    return error_response(exc.code or 500, exc.description or exc.name, headers)


def init_app(app: Flask) -> None:
    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return http_error_response(exc)

    @app.errorhandler(StoreUnavailable)
    def store_down(exc: StoreUnavailable):
        log.warning("etcd unavailable: %s", exc)
        return error_response(503, "the cluster database (etcd) is unavailable; try again in a "
                                   "minute, and tell the operators if it lasts", {"Retry-After": "5"})

    @app.errorhandler(StoreError)
    def store_error(exc: StoreError):
        log.error("etcd refused a request: %s", exc)
        return error_response(500, "the cluster database refused the request; tell the operators")

    @app.errorhandler(LoginThrottled)
    def throttled(exc: LoginThrottled):
        return error_response(429, str(exc), {"Retry-After": str(exc.retry_after_s)})

    @app.errorhandler(WorkerUnavailable)
    def worker_down(exc: WorkerUnavailable):
        return error_response(503, str(exc), {"Retry-After": "5"})
