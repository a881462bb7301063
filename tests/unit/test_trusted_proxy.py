"""X-Forwarded-* headers count only when a trusted proxy (the load balancer) sends them."""

from __future__ import annotations

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from webapp import TrustedProxyFix

pytestmark = pytest.mark.unit

FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https", "X-Forwarded-Host": "pink.example.org"}


@Request.application
def echo(request: Request) -> Response:
    return Response(f"{request.remote_addr} {request.scheme} {request.host}")


def seen(peer: str, proxies: list[str]) -> str:
    client = Client(TrustedProxyFix(echo, proxies))
    return client.get("/", headers=FORWARDED, environ_base={"REMOTE_ADDR": peer}).get_data(as_text=True)


def test_the_load_balancer_sets_the_client_address_and_scheme():
    assert seen("10.0.0.10", ["10.0.0.10"]) == "203.0.113.7 https pink.example.org"
    assert seen("10.0.1.3", ["10.0.1.0/24"]) == "203.0.113.7 https pink.example.org"


def test_anyone_else_is_served_as_they_came():
    assert seen("10.0.0.99", ["10.0.0.10"]) == "10.0.0.99 http localhost"
    assert seen("10.0.0.99", []) == "10.0.0.99 http localhost"
