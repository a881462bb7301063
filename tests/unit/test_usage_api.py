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


class _Pages:
    """GET /jobs answers from a list of ids, as the server pages them (the CLI's side)."""

    def __init__(self, ids: list[str]) -> None:
        self.ids, self.asked = ids, []

    def json(self, method: str, path: str, params: dict) -> dict:
        self.asked.append(dict(params))
        rest = [i for i in self.ids if not params.get("before") or i < params["before"]]
        page = rest[:params["limit"]]
        return {"jobs": [{"id": i} for i in page], "next": page[-1] if len(rest) > len(page) else None}


def test_pink_ls_reads_page_by_page_and_says_how_to_go_on(monkeypatch):
    from pink_client import usage
    from pink_client.usage import list_pages

    monkeypatch.setattr(usage, "PAGE_MAX", 3)  # the server's cap, small: 4 jobs take two pages
    api, notes = _Pages([f"{i:020x}" for i in range(9, -1, -1)]), []
    jobs = list_pages(api, {"all": 1}, limit=4, note=notes.append)
    assert [j["id"] for j in jobs] == [f"{i:020x}" for i in (9, 8, 7, 6)]
    assert notes == [f"older jobs: pink ls --all --before {6:020x}"]
    assert [(a["limit"], a.get("before")) for a in api.asked] == [(3, None), (1, f"{7:020x}")]
    rest = list_pages(api, {}, limit=100, before=f"{6:020x}", note=notes.append)
    assert len(rest) == 6 and len(notes) == 1  # the last page: nothing more to say
