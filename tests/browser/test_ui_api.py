"""The JSON endpoints the browser UI added, called as any client would (no browser): server-sent
events, resubmit, password change, users. They share the browser layer's cluster."""

from __future__ import annotations

import json

import pytest

from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.browser


def read_events(lines, count: int) -> list[tuple[str, dict]]:
    """The next ``count`` events from the lines of a text/event-stream response."""
    events, name, data = [], "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].strip())
        elif line == "" and data:
            events.append((name, json.loads("\n".join(data))))
            name, data = "message", []
            if len(events) == count:
                break
    return events


def test_events_stream_the_callers_jobs_as_they_change(ui_cluster, images):
    api = ui_cluster.api("bob")
    with api.get("/api/v1/events", stream=True, timeout=60) as stream:
        assert stream.status_code == 200
        assert stream.headers["Content-Type"].startswith("text/event-stream")
        lines = stream.iter_lines(decode_unicode=True)
        assert next(lines) == "retry: 2000"
        first = read_events(lines, 1)[0]
        assert first[0] == "jobs" and isinstance(first[1]["jobs"], list)
        job_id = submit(api, images["writer"], name="sse").json()["job"]["id"]
        seen = set()
        for _name, payload in iter(lambda: read_events(lines, 1)[0], None):
            states = {j["id"]: j["state"] for j in payload["jobs"]}
            assert all(j["user"] == "bob" for j in payload["jobs"])
            seen.add(states.get(job_id))
            if states.get(job_id) in TERMINAL:
                break
    assert "SUCCEEDED" in seen and len(seen - {None}) >= 2  # it saw the job change, live


def test_events_of_one_job_and_of_someone_elses(ui_cluster, images):
    alice, bob = ui_cluster.api("alice"), ui_cluster.api("bob")
    job_id = submit(alice, images["writer"], name="one-job").json()["job"]["id"]
    assert bob.get(f"/api/v1/events?job={job_id}").status_code == 404
    with alice.get(f"/api/v1/events?job={job_id}", stream=True, timeout=60) as stream:
        name, payload = read_events(stream.iter_lines(decode_unicode=True), 1)[0]
    assert name == "job" and payload["job"]["id"] == job_id


def test_resubmit_rules(ui_cluster, images):
    alice, bob = ui_cluster.api("alice"), ui_cluster.api("bob")
    running = submit(alice, images["sleeper"], name="still-running", timeout=600).json()["job"]["id"]
    try:
        r = alice.post(f"/api/v1/jobs/{running}/resubmit")
        assert r.status_code == 409 and "only an ended job" in r.json()["error"]
        assert bob.post(f"/api/v1/jobs/{running}/resubmit").status_code == 404
        root = ui_cluster.api("root")
        assert root.post(f"/api/v1/jobs/{running}/resubmit").status_code == 403
    finally:
        alice.post(f"/api/v1/jobs/{running}/cancel")
    # A job whose upload was refused has no image to run again.
    bad = alice.post("/api/v1/jobs", data=b"not a tar" * 100)
    assert bad.status_code == 400
    failed = next(j for j in alice.get("/api/v1/jobs").json()["jobs"] if j["state"] == "FAILED" and not j["image_id"])
    r = alice.post(f"/api/v1/jobs/{failed['id']}/resubmit")
    assert r.status_code == 409 and "never had a complete image" in r.json()["error"]
    wait_state(alice, running, TERMINAL)


def test_password_change_and_users_api(ui_cluster):
    root, bob = ui_cluster.api("root"), ui_cluster.api("bob")
    assert bob.get("/api/v1/users").status_code == 403
    assert bob.post("/api/v1/users", json={"username": "mallory", "password": "x" * 10}).status_code == 403
    r = root.post("/api/v1/users", json={"username": "gina", "password": "ginas-password"})
    assert r.status_code == 201 and r.json()["user"] == {"name": "gina", "admin": False, "disabled": False,
                                                         "created_at": r.json()["user"]["created_at"]}
    assert root.post("/api/v1/users", json={"username": "gina", "password": "ginas-password"}).status_code == 409
    assert root.post("/api/v1/users", json={"username": "Bad Name", "password": "long-enough"}).status_code == 400
    assert root.post("/api/v1/users", json={"username": "hank", "password": "short"}).status_code == 400
    assert "gina" in [u["name"] for u in root.get("/api/v1/users").json()["users"]]
    token = ui_cluster.api()
    r = token.post("/api/v1/tokens", json={"username": "gina", "password": "ginas-password", "name": "t"})
    token.headers["Authorization"] = f"Bearer {r.json()['token']}"
    assert token.post("/api/v1/me/password", json={"old_password": "nope", "new_password": "x" * 10}).status_code == 403
    assert token.post("/api/v1/me/password", json={"old_password": "ginas-password", "new_password": "short"}).status_code == 400
    changed = token.post("/api/v1/me/password", json={"old_password": "ginas-password",
                                                      "new_password": "ginas-new-password"})
    assert changed.status_code == 200 and changed.json() == {"sessions_ended": 0, "tokens_revoked": 0}
    # The token still works; the new password logs in, the old one does not.
    assert token.get("/api/v1/me").json()["user"] == "gina"
    login = ui_cluster.api()
    assert login.post("/api/v1/tokens", json={"username": "gina", "password": "ginas-password"}).status_code == 401
    assert login.post("/api/v1/tokens", json={"username": "gina", "password": "ginas-new-password"}).status_code == 201
