"""Accounts through the API on an in-memory etcd: tokens expire and can be revoked by their
owner and by admins, admins disable and delete users, a password change ends the user's other
sessions (and, when asked, their tokens), and logout ends a session on the server."""

from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.unit


def _login(client, user):
    page = client.get("/login")
    csrf = page.get_data(as_text=True).split('name="csrf_token" value="')[1].split('"')[0]
    resp = client.post("/login", data={"username": user, "password": f"{user}-password-1", "csrf_token": csrf})
    assert resp.status_code == 302
    return client.get("/api/v1/me")


def test_a_token_lasts_the_days_asked_for_at_most_the_maximum(client):
    resp = client.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1", "days": 7})
    assert resp.status_code == 201
    assert resp.get_json()["expires_at"] == pytest.approx(time.time() + 7 * 86400, abs=30)
    default = client.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1"})
    assert default.get_json()["expires_at"] == pytest.approx(time.time() + 90 * 86400, abs=30)
    for bad in (0, -1, 366, "7", True):
        refused = client.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1", "days": bad})
        assert refused.status_code == 400 and "at most 365" in refused.get_json()["error"]


def test_an_expired_token_no_longer_works(client, monkeypatch):
    secret = client.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1",
                                                 "days": 1}).get_json()["token"]
    auth = {"Authorization": f"Bearer {secret}"}
    assert client.get("/api/v1/me", headers=auth).status_code == 200
    later = time.time() + 86400 + 5
    monkeypatch.setattr("webapp.auth.time.time", lambda: later)
    assert client.get("/api/v1/me", headers=auth).status_code == 401


def test_admins_list_and_revoke_any_users_tokens(client, as_user):
    alice = as_user("alice")
    listed = client.get("/api/v1/users/alice/tokens", headers=as_user("root")).get_json()["tokens"]
    assert len(listed) == 1 and listed[0]["expires_at"]
    assert client.get("/api/v1/users/alice/tokens", headers=as_user("bob")).status_code == 403
    assert client.delete(f"/api/v1/users/alice/tokens/{listed[0]['id']}", headers=as_user("root")).status_code == 204
    assert client.get("/api/v1/me", headers=alice).status_code == 401
    assert client.delete("/api/v1/users/alice/tokens/nope", headers=as_user("root")).status_code == 404
    assert client.get("/api/v1/users/nobody/tokens", headers=as_user("root")).status_code == 404


def test_a_disabled_user_is_locked_out_at_once_and_can_come_back(app, as_user):
    alice_browser, admin = app.test_client(), app.test_client()
    _login(alice_browser, "alice")
    token = as_user("alice")
    root = as_user("root")
    resp = admin.patch("/api/v1/users/alice", json={"disabled": True}, headers=root)
    assert resp.status_code == 200 and resp.get_json()["user"]["disabled"] is True
    assert admin.get("/api/v1/me", headers=token).status_code == 401
    assert alice_browser.get("/api/v1/me").status_code == 401  # the session ended
    login = admin.post("/api/v1/tokens", json={"username": "alice", "password": "alice-password-1"})
    assert login.status_code == 401
    assert admin.patch("/api/v1/users/alice", json={"disabled": False}, headers=root).status_code == 200
    assert admin.get("/api/v1/me", headers=token).status_code == 200
    assert admin.patch("/api/v1/users/root", json={"disabled": True}, headers=root).status_code == 409
    assert admin.patch("/api/v1/users/alice", json={"disabled": "yes"}, headers=root).status_code == 400
    assert admin.patch("/api/v1/users/alice", json={"disabled": True}, headers=as_user("bob")).status_code == 403


def test_deleting_a_user_removes_their_tokens_and_sessions_and_keeps_their_jobs(app, as_user, cluster):
    cluster.add_worker()
    job = cluster.add_job(user="alice")
    token = as_user("alice")
    admin = app.test_client()
    assert admin.delete("/api/v1/users/alice", headers=as_user("root")).status_code == 204
    assert admin.get("/api/v1/me", headers=token).status_code == 401
    assert cluster.store.tokens("alice") == []
    assert cluster.store.get_user("alice") is None
    assert cluster.store.get_job(job.id) is not None
    assert admin.delete("/api/v1/users/alice", headers=as_user("root")).status_code == 404
    assert admin.delete("/api/v1/users/root", headers=as_user("root")).status_code == 409


def test_a_password_change_ends_other_sessions_and_on_request_tokens(app, as_user):
    mine, other = app.test_client(), app.test_client()
    _login(mine, "alice")
    _login(other, "alice")
    token = as_user("alice")
    csrf = mine.get("/account").get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    resp = mine.post("/api/v1/me/password", json={"old_password": "alice-password-1",
                                                   "new_password": "alice-password-2"},
                     headers={"X-CSRF-Token": csrf})
    assert resp.status_code == 200 and resp.get_json() == {"sessions_ended": 1, "tokens_revoked": 0}
    assert mine.get("/api/v1/me").status_code == 200
    assert other.get("/api/v1/me").status_code == 401
    assert mine.get("/api/v1/me", headers=token).status_code == 200  # tokens stay unless asked
    resp = mine.post("/api/v1/me/password", json={"old_password": "alice-password-2", "new_password": "alice-password-3",
                                                   "revoke_tokens": True}, headers={"X-CSRF-Token": csrf})
    assert resp.get_json()["tokens_revoked"] == 1
    assert mine.get("/api/v1/me", headers=token).status_code == 401


def test_logout_ends_the_session_on_the_server_even_for_a_copied_cookie(app):
    browser = app.test_client()
    _login(browser, "alice")
    copied = browser.get_cookie("pink_session").value
    csrf = browser.get("/account").get_data(as_text=True).split('name="csrf-token" content="')[1].split('"')[0]
    assert browser.post("/logout", headers={"X-CSRF-Token": csrf}).status_code == 302
    thief = app.test_client()
    thief.set_cookie("pink_session", copied)
    assert thief.get("/api/v1/me").status_code == 401
