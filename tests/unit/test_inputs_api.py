"""Inputs through the web server's views (Flask test client, in-memory etcd): POST and GET
/api/v1/inputs, placement of inputs and of the jobs that name one, who may use an input, and
the store's guarded removal that keeps an input a job was just placed with."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest

from pink.states import JobState
from tests.unit.test_dockertar import M, make_tar

pytestmark = pytest.mark.unit

IMAGE = "sha256:" + "ab" * 32
TAR = make_tar([M(".", kind="dir"), M("train.csv", b"1,2\n" * 100), M("link", kind="symlink", link="train.csv")])
TAR_ID = f"sha256:{hashlib.sha256(TAR).hexdigest()}"


class Worker:
    """One worker's inbox as the SSH link would change it."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}

    def upload_input(self, upload_id: str, source, size: int) -> None:
        data = b""
        while piece := source.read(1000):  # the checker raises before the last piece
            data += piece
            self.files[f"input-{upload_id}.part"] = data

    def commit_input(self, upload_id: str, input_id: str) -> None:
        self.files[f"input-{input_id.removeprefix('sha256:')}.tar"] = self.files.pop(f"input-{upload_id}.part")

    def remove_input_part(self, upload_id: str) -> None:
        self.files.pop(f"input-{upload_id}.part", None)


class Links:
    def __init__(self) -> None:
        self.workers: dict[str, Worker] = {}

    def get(self, info) -> Worker:
        return self.workers.setdefault(info.name, Worker())


@pytest.fixture
def links(app) -> Links:
    app.extensions["pink.links"] = fake = Links()
    return fake


def post_input(client, headers, body=TAR, **params):
    return client.post("/api/v1/inputs", data=body, headers=headers, query_string=params,
                       environ_overrides={"CONTENT_LENGTH": str(len(body))})  # also for an empty one


def submit(client, headers, **params):
    return client.post("/api/v1/jobs", headers=headers, query_string={"image": IMAGE, **params})


def uploaded_image(cluster, *workers: str) -> None:
    """Workers holding IMAGE, which alice and bob uploaded before (so they may run it again)."""
    for name in workers:
        cluster.add_worker(name, images=(IMAGE,))
    for user in ("alice", "bob"):
        cluster.add_job(user=user, worker=workers[0], state=JobState.SUCCEEDED, image_id=IMAGE, image_bytes=1000)


def test_an_input_goes_where_its_job_would_go_and_only_its_uploader_sees_it(client, as_user, cluster, links):
    cluster.add_worker("w1")
    cluster.add_worker("w2", images=(IMAGE,))  # the job's image is here: so is its input
    resp = post_input(client, as_user("alice"), image=IMAGE, sha256=TAR_ID)
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json() == {"input": TAR_ID, "worker": "w2", "bytes": len(TAR)}
    assert links.workers["w2"].files == {f"input-{TAR_ID[7:]}.tar": TAR}
    assert client.get(f"/api/v1/inputs/{TAR_ID}", headers=as_user("alice")).get_json() == \
        {"input": TAR_ID, "workers": ["w2"]}
    # Knowing the id is not enough.
    assert client.get(f"/api/v1/inputs/{TAR_ID}", headers=as_user("bob")).get_json()["workers"] == []
    cluster.store.set_drained("w2", True)
    assert client.get(f"/api/v1/inputs/{TAR_ID}", headers=as_user("alice")).get_json()["workers"] == []


def test_the_same_input_from_a_second_user_adds_them(client, as_user, cluster, links):
    cluster.add_worker("w1")
    for user in ("alice", "bob"):
        assert post_input(client, as_user(user)).status_code == 201
    [record] = cluster.store.input_holders(TAR_ID)
    assert (record.worker, record.users, record.bytes) == ("w1", ("alice", "bob"), len(TAR))


@pytest.mark.parametrize(("body", "params", "status", "message"), [
    (make_tar([M("../evil", b"x")]), {}, 400, "'..' component"),
    (make_tar([M("out", kind="symlink", link="/etc/passwd")]), {}, 400, "absolute path"),
    (TAR, {"sha256": "sha256:" + "0" * 64}, 400, "send it again"),
    (TAR, {"sha256": "not-an-id"}, 400, "sha256 must look like"),
    (b"", {}, 400, "no input"),
    (TAR, {"data": "imagenet"}, 400, "no worker has dataset imagenet"),
])
def test_a_refused_input_leaves_nothing_behind(client, as_user, cluster, links, body, params, status, message):
    cluster.add_worker("w1")
    resp = post_input(client, as_user("alice"), body, **params)
    assert resp.status_code == status and message in resp.get_json()["error"], resp.get_json()
    assert not any(w.files for w in links.workers.values())
    assert cluster.store.inputs_on("w1") == []


def test_an_input_over_the_quota_is_refused(client, as_user, cluster, links, app):
    cluster.add_worker("w1")
    cfg = app.extensions["pink.config"]
    app.extensions["pink.config"] = dataclasses.replace(cfg, web=dataclasses.replace(cfg.web, quota_input_bytes=1000))
    resp = post_input(client, as_user("alice"))
    assert resp.status_code == 413 and "per-input quota is 1000 bytes" in resp.get_json()["error"]
    assert not any(w.files for w in links.workers.values())


def test_no_worker_in_service_for_an_input_is_503(client, as_user, cluster, links):
    cluster.add_worker("w1")
    cluster.store.set_drained("w1", True)
    resp = post_input(client, as_user("alice"))
    assert resp.status_code == 503 and "drained" in resp.get_json()["error"]


def test_a_job_goes_to_the_worker_that_holds_its_input(client, as_user, cluster, links):
    uploaded_image(cluster, "w1", "w2")  # w1 comes first by name, at equal load
    cluster.store.record_input("w2", TAR_ID, len(TAR), "alice")
    resp = submit(client, as_user("alice"), input=TAR_ID)
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()["job"]
    assert (job["worker"], job["input"]) == ("w2", TAR_ID)
    [record] = cluster.store.inputs_on("w2")
    assert record.used_at == pytest.approx(job["created_at"])
    # The same in the Pink-Job-Spec header.
    resp = submit(client, {**as_user("alice"), "Pink-Job-Spec": json.dumps({"input": TAR_ID})})
    assert resp.status_code == 201 and resp.get_json()["job"]["worker"] == "w2"


def test_a_job_with_an_input_it_may_not_use_is_refused(client, as_user, cluster, links):
    uploaded_image(cluster, "w1")
    cluster.store.record_input("w1", TAR_ID, len(TAR), "alice")
    resp = submit(client, as_user("bob"), input=TAR_ID)
    assert resp.status_code == 400 and "upload the input first" in resp.get_json()["error"]
    never = "sha256:" + "cd" * 32
    assert submit(client, as_user("alice"), input=never).status_code == 400
    assert submit(client, as_user("alice"), input="sha256:xyz").get_json()["error"].startswith("input must look like")
    assert cluster.store.list_jobs("bob") and all(j.input == "" for j in cluster.store.list_jobs("bob"))


def test_an_input_held_only_by_a_drained_worker_is_503(client, as_user, cluster, links):
    uploaded_image(cluster, "w1", "w2")
    cluster.store.record_input("w2", TAR_ID, len(TAR), "alice")
    cluster.store.set_drained("w2", True)
    resp = submit(client, as_user("alice"), input=TAR_ID)
    assert resp.status_code == 503
    assert f"no worker holding input {TAR_ID} can take this job now" in resp.get_json()["error"]


def test_an_image_held_elsewhere_than_the_input_is_409(client, as_user, cluster, links):
    uploaded_image(cluster, "w1")
    cluster.add_worker("w2")
    cluster.store.record_input("w2", TAR_ID, len(TAR), "alice")
    resp = submit(client, as_user("alice"), input=TAR_ID)
    assert resp.status_code == 409 and "that holds input" in resp.get_json()["error"]


def test_a_resubmit_keeps_the_input(client, as_user, cluster, links):
    uploaded_image(cluster, "w1")
    cluster.store.record_input("w1", TAR_ID, len(TAR), "alice")
    old = cluster.add_job(state=JobState.SUCCEEDED, image_id=IMAGE, image_bytes=1000, input=TAR_ID)
    resp = client.post(f"/api/v1/jobs/{old.id}/resubmit", headers=as_user("alice"))
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["job"]["input"] == TAR_ID


def test_an_input_is_kept_when_a_job_is_placed_with_it_after_the_worker_looked(client, as_user, cluster, links):
    uploaded_image(cluster, "w1")
    cluster.store.record_input("w1", TAR_ID, len(TAR), "alice")
    [seen] = cluster.store.inputs_on("w1")  # the worker's clean-up reads the record...
    assert submit(client, as_user("alice"), input=TAR_ID).status_code == 201  # ...a job comes...
    assert not cluster.store.forget_input(seen)  # ...and the input stays
    [now] = cluster.store.inputs_on("w1")
    assert cluster.store.forget_input(now) and cluster.store.input_holders(TAR_ID) == []
    # Gone: a job naming it is refused, and the transaction that creates a job checks it too.
    assert submit(client, as_user("alice"), input=TAR_ID).status_code == 400


def test_a_job_placed_as_its_input_is_removed_is_409(client, as_user, cluster, links, monkeypatch):
    uploaded_image(cluster, "w1")
    cluster.store.record_input("w1", TAR_ID, len(TAR), "alice")
    holders = cluster.store.input_holders

    def removed_right_after_the_read(input_id):
        found = holders(input_id)
        cluster.store.forget_input(cluster.store.inputs_on("w1")[0])
        return found

    monkeypatch.setattr(cluster.store, "input_holders", removed_right_after_the_read)
    resp = submit(client, as_user("alice"), input=TAR_ID)
    assert resp.status_code == 409 and "upload the input again" in resp.get_json()["error"]
    assert all(job.input == "" for job in cluster.store.list_jobs("alice"))
