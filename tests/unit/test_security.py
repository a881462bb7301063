"""Findings of the security review, each reproduced: login throttling per user name and per
client address (API and login page), login answers that take the same time whether the user
exists or not, JSON bodies of the wrong shape, and an upload without a body."""

from __future__ import annotations

import time

import pytest

from webapp import accounts

pytestmark = pytest.mark.unit


def _token(client, user, password, addr="192.0.2.1"):
    return client.post("/api/v1/tokens", json={"username": user, "password": password},
                       environ_base={"REMOTE_ADDR": addr})


def test_a_user_is_throttled_after_ten_failures_even_with_the_right_password(client):
    for _ in range(10):
        assert _token(client, "alice", "wrong-password").status_code == 401
    refused = _token(client, "alice", "alice-password-1")
    assert refused.status_code == 429
    assert 290 <= int(refused.headers["Retry-After"]) <= 300
    assert "too many failed logins" in refused.get_json()["error"]
    # Other users are not affected, from the same address.
    assert _token(client, "bob", "bob-password-1").status_code == 201


def test_the_window_ends_and_a_success_clears_the_user_count(client, cluster, monkeypatch):
    for _ in range(10):
        _token(client, "alice", "wrong-password")
    later = time.time() + 301
    monkeypatch.setattr("webapp.auth.time.time", lambda: later)
    # etcd drops the count with its lease at the end of the window.
    for lease in list(cluster.mem.leases):
        cluster.mem.expire(lease)
    assert _token(client, "alice", "alice-password-1").status_code == 201
    for _ in range(9):
        _token(client, "alice", "wrong-password")
    assert _token(client, "alice", "alice-password-1").status_code == 201  # cleared by the success


def test_an_address_is_throttled_across_user_names(client):
    for i in range(50):
        assert _token(client, f"user{i}", "guess-password", addr="198.51.100.7").status_code == 401
    assert _token(client, "bob", "bob-password-1", addr="198.51.100.7").status_code == 429
    assert _token(client, "bob", "bob-password-1", addr="198.51.100.8").status_code == 201


def test_the_login_page_is_throttled_too(client):
    page = client.get("/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    for _ in range(10):
        client.post("/login", data={"username": "alice", "password": "nope-nope", "csrf_token": csrf})
    resp = client.post("/login", data={"username": "alice", "password": "alice-password-1", "csrf_token": csrf})
    assert resp.status_code == 429 and "Retry-After" in resp.headers
    assert "Too many failed logins" in resp.get_data(as_text=True)


def test_a_json_body_that_is_not_an_object_is_a_400(client):
    assert client.post("/api/v1/tokens", json=42).status_code == 400


def test_unknown_and_known_users_cost_the_same_work(app, cluster, monkeypatch):
    calls = []
    real = accounts.verify_password
    monkeypatch.setattr(accounts, "verify_password", lambda p, h: calls.append(h) or real(p, h))
    monkeypatch.setattr(accounts, "hash_password", lambda p: pytest.fail("no hashing on a login"))
    assert accounts.authenticate(cluster.store, "nobody", "some-password") is None
    assert accounts.authenticate(cluster.store, "alice", "some-password") is None
    assert len(calls) == 2  # one scrypt each


def test_an_upload_without_a_body_is_a_400_and_leaves_no_job(client, as_user, cluster):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs", data=b"", headers=as_user("alice"), environ_overrides={"CONTENT_LENGTH": "0"})
    assert resp.status_code == 400 and "no image" in resp.get_json()["error"]
    assert cluster.store.list_jobs() == []


def test_workers_show_transfer_details_to_admins_only_and_each_user_only_their_images(client, as_user, cluster):
    cluster.add_worker(images=("sha256:" + "a" * 64,))
    seen = client.get("/api/v1/workers", headers=as_user("alice")).get_json()["workers"][0]
    assert not {"ssh_host", "ssh_port", "ssh_user", "inbox", "outbox"} & set(seen)
    assert seen["images"] == []  # an image of someone else's
    admin = client.get("/api/v1/workers", headers=as_user("root")).get_json()["workers"][0]
    assert admin["ssh_user"] == "pink-transfer" and admin["images"] == ["sha256:" + "a" * 64]


def test_a_submission_cannot_claim_to_resubmit_someone_elses_job(app, as_user, cluster):
    from webapp.spec import JobSpec
    from pink.model import User
    spec = JobSpec.parse({"resubmit_of": "0" * 20}, User("alice", "x"))
    assert spec.resubmit_of == ""
