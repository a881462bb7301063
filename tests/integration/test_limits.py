"""Request limits on real parts: bodies other than image uploads are small (gunicorn and nginx
agree), and login attempts are throttled by nginx per address and by the web servers per user."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

import pytest

import pink_dev as dev

from tests.helpers import TERMINAL, wait_state

pytestmark = pytest.mark.integration


def _rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(status.split("VmRSS:")[1].split()[0])
    return total


def test_an_anonymous_huge_body_is_refused_before_it_is_read(cluster):
    """200 MiB announced to POST /tokens (a login, no upload): gunicorn answers 413 after
    8 MiB were sent, and its workers do not grow (they used to read the whole body first)."""
    c = cluster()
    web = c.web[0]
    workers = dev.descendants(web.pid)
    before = _rss_kib(workers)
    with socket.create_connection((web.host, web.port), timeout=10) as conn:
        conn.sendall(b"POST /api/v1/tokens HTTP/1.1\r\nHost: pink\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n" % (200 << 20))
        sent = 0
        with contextlib.suppress(OSError):  # the server may close while we still send
            while sent < 8 << 20:
                conn.sendall(b" " * (1 << 20))
                sent += 1 << 20
        reply = conn.recv(65536)
    assert reply.split(b"\r\n", 1)[0].split()[1] == b"413", reply[:500]
    assert b"exceeds the capacity limit" in reply or b"\r\n\r\n" in reply
    assert _rss_kib(workers) - before < 32 << 10  # KiB: nowhere near 200 MiB


def test_nginx_refuses_a_big_body_except_on_uploads_in_json(cluster, images):
    c = cluster(nginx=True)
    api = c.api("alice")
    big = api.post("/api/v1/tokens", data=b"x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert big.status_code == 413
    assert big.json() == {"error": "the request body is too large"}
    assert big.headers["Strict-Transport-Security"] == "max-age=31536000"
    with open(images["writer"], "rb") as body:  # the upload path takes the whole image
        assert api.post("/api/v1/jobs", data=body).status_code == 201


def test_login_floods_are_throttled_per_address_and_per_user(cluster):
    c = cluster(nginx=True)
    anon = dev.ApiSession(c.url, verify=str(c.ca_cert))
    codes = [anon.post("/api/v1/tokens", json={"username": "alice", "password": f"guess-{i}"}).status_code
             for i in range(45)]
    # The web servers stop alice's guesses after 10 failures; nginx stops the address's flood.
    assert codes[:10] == [401] * 10 and set(codes[10:]) == {429}, codes
    flood = anon.post("/api/v1/tokens", json={"username": "bob", "password": "bob-password-1"})
    assert flood.status_code == 429 and flood.headers["Retry-After"]
    assert "from this address" in flood.json()["error"]


def test_a_job_spec_header_of_nearly_32_kib_passes_nginx_and_gunicorn(cluster, images):
    c = cluster(nginx=True)
    api = c.api("alice")
    spec = {"env": {f"VAR{i}": "x" * 250 for i in range(120)}, "command": ["sh", "-c", "echo ${#VAR119}"]}
    header = json.dumps(spec)
    assert 30 << 10 < len(header) < 32 << 10
    with open(images["writer"], "rb") as body:
        r = api.post("/api/v1/jobs", data=body, headers={"Pink-Job-Spec": header})
    assert r.status_code == 201, r.text
    job = wait_state(api, r.json()["job"]["id"], TERMINAL)
    assert job["state"] == "SUCCEEDED", job
    assert api.get(f"/api/v1/jobs/{job['id']}/logs").text == "250\n"
