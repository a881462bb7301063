"""GET /api/v1/usage, the paged GET /api/v1/jobs, and the /usage page (the Flask app on the
in-memory etcd)."""

from __future__ import annotations

import time

import pytest

from pink.model import Job, new_job_id
from pink.states import JobState
from tests.unit.test_accounts import _login


def _accounted(cluster, user: str) -> None:
    if "w1" not in cluster.leases:
        cluster.add_worker("w1")
    job = cluster.add_job(user, JobState.RUNNING, cpus=1.0)
    job = cluster.store.transition(job, JobState.EXPORTING, started_at=job.updated_at - 3600)
    cluster.store.transition(job, JobState.SUCCEEDED, finished_at=job.updated_at, gpu_seconds=7200.0)
    cluster.store.account_pending()


def test_users_see_their_own_usage_and_admins_anyones(client, as_user, cluster):
    _accounted(cluster, "alice")
    _accounted(cluster, "bob")
    mine = client.get("/api/v1/usage", headers=as_user("alice")).get_json()
    assert [u["user"] for u in mine["by_user"]] == ["alice"]
    assert mine["total"]["jobs"] == 1 and mine["total"]["gpu_seconds"] == 7200.0
    assert mine["total"]["cpu_seconds"] == pytest.approx(3600.0, abs=1)  # 1 CPU x 1 h
    assert client.get("/api/v1/usage?user=bob", headers=as_user("alice")).status_code == 403
    everyone = client.get("/api/v1/usage", headers=as_user("root")).get_json()
    assert [u["user"] for u in everyone["by_user"]] == ["alice", "bob"]
    assert everyone["total"]["jobs"] == 2 and len(everyone["by_day"]) == 1
    bob = client.get("/api/v1/usage?user=bob", headers=as_user("root")).get_json()
    assert bob["total"]["jobs"] == 1
    old = client.get("/api/v1/usage?since=2001-01-01&until=2001-01-31", headers=as_user("root")).get_json()
    assert old["rows"] == [] and old["total"]["jobs"] == 0


def test_bad_usage_windows_are_400s(client, as_user):
    for query in ("since=yesterday", "until=2026-02-30", "since=2026-02-02&until=2026-02-01",
                  "since=1990-01-01&until=2026-01-01"):
        resp = client.get(f"/api/v1/usage?{query}", headers=as_user("alice"))
        assert resp.status_code == 400, query


def test_the_job_list_pages_with_a_cursor(client, as_user, cluster):
    made = sorted((cluster.store.create_job(Job(id=new_job_id(time.time() + i), user="alice",
                                                 state=JobState.QUEUED, worker="w1"))[0].id for i in range(5)),
                  reverse=True)
    seen, cursor = [], ""
    while True:
        answer = client.get(f"/api/v1/jobs?all=1&limit=2&before={cursor}", headers=as_user("root")).get_json()
        seen += [j["id"] for j in answer["jobs"]]
        cursor = answer["next"] or ""
        if not cursor:
            break
    assert seen == made
    assert client.get("/api/v1/jobs?before=nope", headers=as_user("alice")).status_code == 400


def test_the_usage_page_is_for_admins(client):
    _login(client, "alice")
    assert client.get("/usage").status_code == 403
    client2 = client.application.test_client()  # another browser
    _login(client2, "root")
    page = client2.get("/usage")
    assert page.status_code == 200 and b"usage-by-user" in page.data
