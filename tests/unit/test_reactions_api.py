"""The API of retries and notifications: PATCH /api/v1/me (the e-mail setting), the submit
fields retry_lost/notify/webhook and their refusals, on the in-memory etcd."""

from __future__ import annotations

import pytest

from pink.config import Config, NotifyConfig, WebConfig
from pink.states import JobState
from webapp import accounts as auth
from webapp import create_app

IMG = "sha256:" + "ef" * 32


@pytest.fixture
def app(cluster, monkeypatch):
    cfg = Config(web=WebConfig(secret_key="unit-test-secret"),
                 notify=NotifyConfig(smtp_host="relay.example.org", smtp_from="pink@example.org",
                                     webhook_allow=("https://hooks.example.org/ci/",)))
    monkeypatch.setattr("webapp.Store", lambda _cfg: cluster.store)
    monkeypatch.setattr("webapp.WorkerLinks", lambda *_, **__: cluster.links)
    app = create_app({"PINK": cfg, "TESTING": True, "JANITOR": False})
    auth.create_user(cluster.store, "root", "root-password-1", admin=True)
    return app


def submit(client, headers, **query):
    return client.post("/api/v1/jobs", query_string={"image": IMG, **query}, data=b"", headers=headers)


def test_the_email_setting(client, as_user):
    me = as_user("root")
    assert client.get("/api/v1/me", headers=me).json == {
        "user": "root", "admin": True, "email": "", "notify_all": False, "email_enabled": True}
    answer = client.patch("/api/v1/me", json={"email": "root@example.org", "notify_all": True}, headers=me)
    assert answer.status_code == 200 and answer.json["email"] == "root@example.org"
    assert client.get("/api/v1/me", headers=me).json["notify_all"] is True
    for body, message in (({"email": "root@example.org\nBcc: x@evil.com"}, "is not an e-mail address"),
                          ({"email": "", "notify_all": True}, "set an e-mail address"),
                          ({"notify_all": "yes"}, "must be true or false"),
                          ({"admin": True}, 'send {"email"')):
        answer = client.patch("/api/v1/me", json=body, headers=me)
        assert answer.status_code == 400 and message in answer.json["error"], body
    assert client.patch("/api/v1/me", json={"email": ""}, headers=me).status_code == 400  # notify_all still on
    off = client.patch("/api/v1/me", json={"email": "", "notify_all": False}, headers=me)
    assert off.json["email"] == "" and off.json["notify_all"] is False


def test_submit_with_retry_notify_and_webhook(client, as_user, cluster):
    me = as_user("root")
    cluster.add_worker("w1", images=(IMG,))
    refused = submit(client, me, notify="1")
    assert refused.status_code == 400 and "set your e-mail address first" in refused.json["error"]
    refused = submit(client, me, webhook="https://hooks.example.org.evil.com/ci/")
    assert refused.status_code == 400 and "not on the operator's allow-list" in refused.json["error"]
    client.patch("/api/v1/me", json={"email": "root@example.org"}, headers=me)
    answer = submit(client, me, notify="1", retry_lost="2", webhook="https://hooks.example.org/ci/run?id=7")
    assert answer.status_code == 201, answer.json
    job = answer.json["job"]
    assert (job["notify"], job["retry_lost"], job["webhook"]) == (True, 2, "https://hooks.example.org/ci/run?id=7")
    assert job["retry_of"] == "" and job["notified_at"] is None
    # notify_all: every job mails its end, without asking.
    client.patch("/api/v1/me", json={"notify_all": True}, headers=me)
    assert submit(client, me).json["job"]["notify"] is True


def test_a_site_without_a_relay_refuses_email(client, as_user, app):
    app.extensions["pink.config"] = Config(web=WebConfig(secret_key="unit-test-secret"))
    answer = client.patch("/api/v1/me", json={"email": "root@example.org"}, headers=as_user("root"))
    assert answer.status_code == 409 and "sends no e-mail" in answer.json["error"]


def test_the_cli_sends_the_fields_and_shows_the_chain():
    from pink_client.jobspec import job_spec
    from pink_client.main import build_parser
    from pink_client.reactions import status_rows

    args = build_parser().parse_args(["submit", "x.tar", "--retry-lost", "2", "--notify",
                                      "--webhook", "https://hooks.example.org/ci/"])
    args.argv = None
    assert job_spec(args, {}) == {"retry_lost": 2, "notify": True, "webhook": "https://hooks.example.org/ci/"}
    args = build_parser().parse_args(["submit", "x.tar"])
    args.argv = None
    assert job_spec(args, {}) == {}
    rows = dict(status_rows({"retry_of": "a" * 20, "retried_by": "b" * 20, "retry_lost": 0, "notify": True,
                             "webhook": "https://hooks.example.org/ci/", "notify_note": ""}))
    assert rows["retry of"] == "a" * 20 and rows["retried as"] == "b" * 20
    assert rows["notify"] == "e-mail, https://hooks.example.org/ci/" and rows["retry"] is None


def test_a_resubmit_keeps_notifications_but_not_retries(client, as_user, cluster):
    me = as_user("root")
    cluster.add_worker("w1", images=(IMG,))
    client.patch("/api/v1/me", json={"email": "root@example.org"}, headers=me)
    first = submit(client, me, notify="1", retry_lost="2", webhook="https://hooks.example.org/ci/run")
    old = cluster.store.get_job(first.json["job"]["id"])
    cluster.rewrite(old, state=JobState.FAILED)
    again = client.post(f"/api/v1/jobs/{old.id}/resubmit", headers=me)
    assert again.status_code == 201, again.json
    job = again.json["job"]
    assert (job["notify"], job["webhook"], job["retry_lost"]) == (True, "https://hooks.example.org/ci/run", 0)
    changed = client.post(f"/api/v1/jobs/{old.id}/resubmit", json={"webhook": ""}, headers=me)
    assert changed.status_code == 201 and changed.json["job"]["webhook"] == ""
