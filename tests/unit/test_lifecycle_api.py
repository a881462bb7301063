"""Deleting ended jobs (store transaction, tombstones, API, the worker's removal of files) and
resubmitting with changes (the body's validation), on the in-memory etcd."""

from __future__ import annotations

import dataclasses
import json

import pytest

from gpu_worker.deletions import Deletions
from pink.config import WorkerConfig
from pink.model import Job
from pink.states import JobState
from pink.store_deletes import DEFAULT_TOMBSTONE_S

IMAGE = "sha256:" + "cd" * 32


def _ended(cluster, **fields) -> Job:
    cluster.add_worker(images=(IMAGE,))
    return cluster.add_job(state=JobState.SUCCEEDED, image_id=IMAGE, image_bytes=1000, **fields)


# ----- the store -------------------------------------------------------------------------------
def test_a_deletion_removes_the_record_and_its_indexes_in_one_step(cluster):
    job = _ended(cluster, idempotency_key="k1")
    stone = cluster.store.delete_job(job, "alice", 3600, now=1_800_000_000.0)
    assert stone is not None and (stone.user, stone.by, stone.worker) == ("alice", "alice", "w1")
    assert cluster.store.get_job(job.id) is None
    assert cluster.store.list_jobs("alice") == [] and cluster.store.list_jobs() == []
    assert cluster.store.job_for_idempotency_key("alice", "k1") is None
    assert cluster.store.tombstone(job.id) == stone
    assert cluster.store.tombstones("w1") == [stone] and cluster.store.tombstones("w2") == []
    assert stone.message() == f"job {job.id} was deleted by alice at 2027-01-15 08:00 UTC"


def test_a_job_that_changed_since_it_was_read_is_not_deleted(cluster):
    job = _ended(cluster)
    # Its worker records its results meanwhile (a new mod_revision).
    current = cluster.rewrite(job, output_bytes=123, output_sha256="ab" * 32)
    assert cluster.store.delete_job(job, "alice", 3600) is None
    assert cluster.store.get_job(job.id) == current and cluster.store.tombstone(job.id) is None
    assert cluster.store.tombstones() == []
    assert len(cluster.mem.leases) == len(cluster.leases) + 1  # the unused lease was revoked (+1: an upload's)
    assert cluster.store.delete_job(current, "alice", 3600) is not None


def test_a_job_deleted_twice_is_deleted_once(cluster):
    job = _ended(cluster)
    assert cluster.store.delete_job(job, "alice", 3600) is not None
    assert cluster.store.delete_job(job, "root", 3600) is None
    assert cluster.store.tombstone(job.id).by == "alice"


def test_only_an_ended_job_can_be_deleted_by_the_store(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    with pytest.raises(ValueError, match="only an ended job"):
        cluster.store.delete_job(job, "alice", 3600)


def test_the_tombstone_ends_with_its_lease(cluster):
    job = _ended(cluster)
    cluster.store.delete_job(job, "alice", 3600)
    lease = next(kv.lease for k, kv in cluster.mem.kvs.items() if k.endswith(f"deleted/{job.id}".encode()))
    assert cluster.mem.leases[lease] == 3600
    cluster.mem.expire(lease)
    assert cluster.store.tombstone(job.id) is None


# ----- the API ---------------------------------------------------------------------------------
def test_delete_then_every_read_says_who_deleted_it(client, as_user, cluster):
    job = _ended(cluster)
    path = f"/api/v1/jobs/{job.id}"
    resp = client.delete(path, headers=as_user("alice"))
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["deleted"]["by"] == "alice" and resp.get_json()["deleted"]["worker"] == "w1"
    for suffix in ("", "/logs", "/output", "/resubmit", "/cancel"):
        method = client.post if suffix in ("/resubmit", "/cancel") else client.get
        gone = method(path + suffix, headers=as_user("alice"))
        assert gone.status_code == 410, (suffix, gone.get_json())
        assert f"job {job.id} was deleted by alice at" in gone.get_json()["error"]
    assert client.get(path, headers=as_user("root")).status_code == 410  # admins see everything
    assert client.get(path, headers=as_user("bob")).status_code == 404  # not his: not even that it existed
    assert client.delete(path, headers=as_user("alice")).status_code == 410
    # The tombstone lives as long as the worker keeps outputs (its retention).
    lease = next(kv.lease for k, kv in cluster.mem.kvs.items() if k.endswith(f"deleted/{job.id}".encode()))
    assert cluster.mem.leases[lease] == 86400


def test_admins_delete_anyones_job_others_cannot(client, as_user, cluster):
    job = _ended(cluster)
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("bob")).status_code == 404
    resp = client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("root"))
    assert resp.status_code == 200 and resp.get_json()["deleted"] == {
        "id": job.id, "user": "alice", "by": "root", "at": pytest.approx(resp.get_json()["deleted"]["at"]),
        "worker": "w1"}
    assert "deleted by root" in client.get(f"/api/v1/jobs/{job.id}/output", headers=as_user("alice")).get_json()["error"]


def test_a_job_that_has_not_ended_must_be_cancelled_first(client, as_user, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=JobState.RUNNING)
    resp = client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("alice"))
    assert resp.status_code == 409 and "cancel it first" in resp.get_json()["error"]
    assert cluster.store.get_job(job.id) is not None
    # A plain cancel hands a running job to its worker to export (EXPORTING): still not ended.
    assert client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("alice")).get_json()["job"]["state"] == \
        "EXPORTING"
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("alice")).status_code == 409
    client.post(f"/api/v1/jobs/{job.id}/cancel?discard=1", headers=as_user("alice"))
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("alice")).status_code == 200


def test_a_delete_racing_a_change_reads_again(client, as_user, cluster, monkeypatch):
    """The record changes between the API's read and its transaction: it reads again and deletes
    what is there then (a deleted job's last write never comes back)."""
    job = _ended(cluster)
    real = cluster.store.delete_job
    calls = []

    def racing(seen, *args, **kwargs):
        if not calls:
            cluster.rewrite(seen, log_bytes=99)  # the worker wrote in between
        calls.append(seen.log_bytes)
        return real(seen, *args, **kwargs)

    monkeypatch.setattr(cluster.store, "delete_job", racing)
    assert client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("alice")).status_code == 200
    assert calls == [0, 99] and cluster.store.get_job(job.id) is None


def test_without_retention_a_tombstone_lives_30_days(client, as_user, cluster):
    job = _ended(cluster)
    static = dataclasses.replace(cluster.store.get_worker("w1"), output_retention_s=0.0)
    cluster.store.register_worker(static, cluster.leases["w1"])
    client.delete(f"/api/v1/jobs/{job.id}", headers=as_user("alice"))
    lease = next(kv.lease for k, kv in cluster.mem.kvs.items() if k.endswith(f"deleted/{job.id}".encode()))
    assert cluster.mem.leases[lease] == DEFAULT_TOMBSTONE_S


# ----- resubmit with changes -------------------------------------------------------------------
def _resubmit(client, as_user, job_id, body, user="alice"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return client.post(f"/api/v1/jobs/{job_id}/resubmit", headers=as_user(user), data=data,
                       content_type="application/json")


def test_a_resubmit_body_changes_what_it_says_and_keeps_the_rest(client, as_user, cluster):
    old = _ended(cluster, command=("python", "a.py"), env={"SEED": "1", "KEEP": "x"}, gpus=0, timeout_s=600,
                 name="first", workdir="/w")
    resp = _resubmit(client, as_user, old.id, {"command": ["python", "b.py"], "env": {"SEED": "2"},
                                                "timeout": 60, "name": "second", "memory": "64m"})
    assert resp.status_code == 201, resp.get_json()
    new = cluster.store.get_job(resp.get_json()["job"]["id"])
    assert (new.command, new.env, new.timeout_s, new.name, new.memory_bytes) == (
        ("python", "b.py"), {"SEED": "2"}, 60, "second", 64 << 20)
    assert (new.workdir, new.image_id, new.resubmit_of, new.state) == ("/w", IMAGE, old.id, JobState.QUEUED)
    assert new.image_bytes == 0  # nothing was uploaded
    # null gives the image's own command back.
    back = _resubmit(client, as_user, old.id, {"command": None})
    assert cluster.store.get_job(back.get_json()["job"]["id"]).command is None


@pytest.mark.parametrize(("body", "message"), [
    (b"[1, 2]", "must be a JSON object"),
    (b"{nope", "not valid JSON"),
    ({"image": "sha256:" + "00" * 32}, "image cannot be changed by a resubmit"),
    ({"resubmit_of": "x"}, "resubmit_of cannot be changed"),
    ({"gpus": -1}, "gpus must be between 0 and 64"),
    ({"command": "python b.py"}, "command must be a list of strings"),
    ({"env": {"PINK_X": "1"}}, "env: PINK_X is reserved"),
    ({"timeout": "soon"}, "timeout must be a whole number"),
    ({"priority": 5}, "only admins may raise a job's priority above 0"),
    ({"output": "everything"}, "output must be one of"),
])
def test_a_bad_resubmit_body_is_a_400_naming_the_field(client, as_user, cluster, body, message):
    old = _ended(cluster)
    resp = _resubmit(client, as_user, old.id, body)
    assert resp.status_code == 400 and message in resp.get_json()["error"], resp.get_json()
    assert len(cluster.store.list_jobs("alice")) == 1  # nothing was made


def test_a_resubmit_keeps_an_admins_priority_and_lowers_a_users(client, as_user, cluster):
    old = _ended(cluster, priority=-5)
    new = _resubmit(client, as_user, old.id, {"priority": -50}).get_json()["job"]
    assert new["priority"] == -50
    assert _resubmit(client, as_user, old.id, b"").get_json()["job"]["priority"] == -5


def test_only_the_owner_resubmits_an_ended_job(client, as_user, cluster):
    old = _ended(cluster)
    assert _resubmit(client, as_user, old.id, {}, user="root").status_code == 403
    assert _resubmit(client, as_user, old.id, {}, user="bob").status_code == 404
    running = cluster.add_job(state=JobState.RUNNING, image_id=IMAGE)
    assert _resubmit(client, as_user, running.id, {}).status_code == 409


# ----- the worker's half -----------------------------------------------------------------------
def test_the_worker_removes_the_files_of_its_deleted_jobs(cluster, tmp_path):
    cfg = WorkerConfig(name="w1", inbox=str(tmp_path / "in"), outbox=str(tmp_path / "out"))
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    mine, busy, kept = _ended(cluster), cluster.add_job(state=JobState.SUCCEEDED), cluster.add_job(
        state=JobState.SUCCEEDED)
    cluster.add_worker("w2")
    other = cluster.add_job(state=JobState.SUCCEEDED, worker="w2")
    files = {}
    for job in (mine, busy, kept, other):
        files[job.id] = [tmp_path / "out" / f"{job.id}.tar.zst", tmp_path / "out" / f"{job.id}.log",
                         tmp_path / "out" / f"{job.id}.tar.zst.part", tmp_path / "in" / f"{job.id}.tar"]
        for path in files[job.id]:
            path.write_bytes(b"x")
    for job in (mine, busy, other):
        cluster.store.delete_job(cluster.store.get_job(job.id), "alice", 3600)
    deletions = Deletions(cfg)
    assert deletions.sweep(cluster.store, busy={busy.id}) == [mine.id]
    assert not any(p.exists() for p in files[mine.id])
    assert all(p.exists() for p in files[busy.id] + files[kept.id] + files[other.id])
    assert deletions.sweep(cluster.store, busy=()) == [busy.id]  # once its run let go
    assert not any(p.exists() for p in files[busy.id])
    assert deletions.sweep(cluster.store, busy=()) == []


def test_deleting_the_upload_keeps_the_right_to_reuse_the_image_through_later_jobs(client, as_user, cluster):
    from webapp import jobs as joblogic

    upload = _ended(cluster)
    again = _resubmit(client, as_user, upload.id, {}).get_json()["job"]
    ended = cluster.rewrite(cluster.store.get_job(again["id"]), state=JobState.FAILED)
    assert client.delete(f"/api/v1/jobs/{upload.id}", headers=as_user("alice")).status_code == 200
    joblogic._uploaded.clear()  # another web server process: nothing remembered
    resp = _resubmit(client, as_user, ended.id, {"command": ["true"]})
    assert resp.status_code == 201, resp.get_json()


def test_an_upload_that_failed_does_not_grant_the_image_it_claimed(client, as_user, cluster):
    from webapp import jobs as joblogic

    cluster.add_worker(images=(IMAGE,))
    claimed = cluster.add_job(user="bob", state=JobState.UPLOADING, image_id=IMAGE)  # the client's word only
    cluster.store.transition(claimed, JobState.FAILED, reason="upload interrupted")
    joblogic._uploaded.clear()
    refused = client.post("/api/v1/jobs", query_string={"image": IMAGE}, data=b"", headers=as_user("bob"))
    assert refused.status_code == 409 and "upload the tarball" in refused.get_json()["error"]
