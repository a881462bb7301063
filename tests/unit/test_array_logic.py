"""Job arrays (pink.arrays, pink.arraystore, webapp.arrays): the array= syntax, the %N limit in
the plan and in the claim transaction (across workers), placement over the workers that hold
the image, records created in batches etcd accepts, and the API — on the in-memory etcd."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from pink import arraystore, runslots
from pink.arrays import ArrayRangeError, parse_array
from pink.config import Config, WebConfig
from pink.errors import StoreUnavailable
from pink.model import User
from pink.scheduling import QueuedJob, plan
from pink.states import JobState
from pink.store import MAX_TXN_OPS
from webapp import jobs
from webapp.spec import JobSpec, SubmitError

IMG = "sha256:" + "cd" * 32
ROOT = User("root", "", admin=True)


# ----- the syntax -------------------------------------------------------------------------------

@pytest.mark.parametrize("text, indexes, limit", [
    ("0-9", tuple(range(10)), 0),
    ("0-99%8", tuple(range(100)), 8),
    ("1,3,5-7", (1, 3, 5, 6, 7), 0),
    (" 7 ", (7,), 0),
    ("10-12,0%1", (0, 10, 11, 12), 1),
])
def test_array_ranges_parse(text, indexes, limit):
    spec = parse_array(text, 1000)
    assert (spec.indexes, spec.limit) == (indexes, limit)


@pytest.mark.parametrize("text, message", [
    ("", "array is empty"),
    ("5-3", "goes backwards"),
    ("a-b", "is not an index or a range"),
    ("-1", "is not an index or a range"),
    ("1,,2", "is not an index or a range"),
    ("1-2-3", "is not an index or a range"),
    ("1,1", "index 1 is named twice"),
    ("0-3,2", "index 2 is named twice"),
    ("0-9%0", "at least 1"),
    ("0-9%", "at least 1"),
    ("0-9%x", "at least 1"),
    ("0-1000", "more than 1000 jobs"),
    ("0-10000000", "indexes go up to"),
])
def test_bad_array_ranges_say_what_is_wrong(text, message):
    with pytest.raises(ArrayRangeError, match=message):
        parse_array(text, 1000)


def test_array_args_give_each_job_its_command_and_may_carry_only_a_limit():
    spec = JobSpec.parse({"array": "%2"}, ROOT, json.dumps({"array_args": [["echo", "a"], ["echo", "b"]]}))
    assert spec.array.indexes == (0, 1) and spec.array.limit == 2
    assert spec.array_args == (("echo", "a"), ("echo", "b"))
    for args, header, message in [
        ({"array": "0-3"}, {"array_args": [["x"]]}, "array may only be %N"),
        ({}, {"array_args": [["x"]], "command": ["y"]}, "leave command out"),
        ({}, {"array_args": []}, "non-empty JSON list"),
        ({}, {"array_args": [[]]}, "at least one item"),
        ({}, {"array_args": ["echo a"]}, "each item a list of strings"),
        ({"array_args": "not json"}, None, "JSON list of argv lists"),
        ({"array": "3-1"}, None, "goes backwards"),
    ]:
        with pytest.raises(SubmitError, match=message):
            JobSpec.parse(args, ROOT, json.dumps(header) if header else "")


# ----- the plan -------------------------------------------------------------------------------

def _q(job_id: str, array: str = "", limit: int = 0, created: float = 0.0, user: str = "u") -> QueuedJob:
    return QueuedJob(job_id, user, 0, created, 0, array_id=array, array_limit=limit)


def test_the_plan_starts_no_more_of_an_array_than_its_limit_counting_other_workers():
    queue = [_q(f"a{i}", "A", 3, created=i) for i in range(5)] + [_q("other", created=9)]
    # Two of array A's jobs are claimed elsewhere: one more may start here; others pass it.
    decisions = plan(queue, {}, [], 10, array_running={"A": 2})
    started = [d.job_id for d in decisions if d.starts]
    assert started == ["a0", "other"]
    waiting = {d.job_id: d.reason for d in decisions if not d.starts}
    assert waiting["a1"] == "its array runs at most 3 at once (%3); waiting for one of them to end"
    # Counting the ones this plan starts; with none running, the limit's worth starts.
    assert sum(d.starts for d in plan(queue, {}, [], 10, array_running={})) == 3 + 1
    assert sum(d.starts for d in plan(queue, {}, [], 10, array_running={"A": 3})) == 1
    # No limit: all start.
    free = [_q(f"b{i}", "B", 0) for i in range(4)]
    assert all(d.starts for d in plan(free, {}, [], 10, array_running={"B": 7}))


def taken_slots(cluster, array_id: str) -> set[int]:
    return {int(n) for n in runslots.taken(cluster.store, runslots.ARRAY, array_id)}


def array_slot(job, n: int) -> str:
    return f"{runslots.ARRAY}/{job.array_id}/{n}"


def slot_number(job) -> int:
    (slot,) = job.run_slots
    return int(slot.rsplit("/", 1)[1])


def test_the_claim_takes_a_run_slot_so_two_workers_cannot_pass_the_limit(cluster):
    """Two workers plan from the same snapshot (no slot taken) and both claim: the slot keys
    let only ``limit`` claims through, and a job's end gives its slot back."""
    for name in ("w1", "w2"):
        cluster.add_worker(name, images=(IMG,))
    spec = JobSpec.parse({"image": IMG, "array": "0-3%2"}, ROOT)
    first, _ = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    array = arraystore.array_jobs(cluster.store, first.array_id)
    assert len(array) == 4 and {j.worker for j in array} == {"w1", "w2"}
    assert taken_slots(cluster, first.array_id) == set()
    claimed = []
    for job in array:  # each worker tries slots from the stale snapshot: 0 then 1
        for slot in (0, 1):
            got = cluster.store.claim(job, job.worker, cluster.leases[job.worker], (), (array_slot(job, slot),))
            if got is not None:
                claimed.append(got)
                break
    assert len(claimed) == 2
    assert taken_slots(cluster, first.array_id) == {0, 1}
    # A claimed job that ends frees its slot; another job can take it.
    done = cluster.store.transition(claimed[0], JobState.CANCELLED, reason="test")
    assert done.run_slots == claimed[0].run_slots
    assert taken_slots(cluster, first.array_id) == {slot_number(claimed[1])}
    rest = [j for j in arraystore.array_jobs(cluster.store, first.array_id) if j.state is JobState.QUEUED]
    (slot,) = runslots.free_numbers(runslots.taken(cluster.store, runslots.ARRAY, first.array_id), 2, 1)
    assert cluster.store.claim(rest[0], rest[0].worker, cluster.leases[rest[0].worker], (),
                               (array_slot(rest[0], slot),)) is not None


# ----- placement and records ----------------------------------------------------------------------

def test_an_array_spreads_over_the_workers_that_hold_its_image_with_distinct_indexes(cluster):
    cluster.add_worker("w1", images=(IMG,))
    cluster.add_worker("w2", images=(IMG,))
    cluster.add_worker("w3")  # does not hold the image: gets none
    header = json.dumps({"array_args": [["echo", str(i)] for i in range(9)]})
    spec = JobSpec.parse({"image": IMG, "array": "%4"}, ROOT, header)
    first, _ = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    array = arraystore.array_jobs(cluster.store, first.array_id)
    assert [j.array_index for j in array] == list(range(9))
    assert [j.command for j in array] == [("echo", str(i)) for i in range(9)]
    per_worker = {w: sum(j.worker == w for j in array) for w in ("w1", "w2", "w3")}
    assert per_worker["w3"] == 0 and min(per_worker["w1"], per_worker["w2"]) >= 4
    assert all((j.array_size, j.array_limit, j.state) == (9, 4, JobState.QUEUED) for j in array)
    assert len({j.id for j in array}) == 9 and all(j.array_id == first.array_id for j in array)
    # The queue entries carry the array, for the plans of both workers.
    entries = [e for e in cluster.store.queue("w2")]
    assert entries and all((e.array_id, e.array_limit) == (first.array_id, 4) for e in entries)


def test_array_records_are_created_in_transactions_etcd_accepts(cluster, monkeypatch):
    cluster.add_worker("w1", images=(IMG,))
    puts = []
    real = cluster.mem.Txn

    def txn(req, *args, **kwargs):
        assert max(len(req.compare), len(req.success)) <= MAX_TXN_OPS, "etcd refuses more than 128"
        puts.append(sum(op.WhichOneof("request") == "request_put" for op in req.success))
        return real(req, *args, **kwargs)

    monkeypatch.setattr(cluster.mem, "Txn", txn)
    cfg = Config(web=WebConfig(quota_queued_jobs=1000))
    spec = JobSpec.parse({"image": IMG, "array": "0-99"}, ROOT)
    first, _ = jobs.submit(cfg, cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    assert len(arraystore.array_jobs(cluster.store, first.array_id)) == 100
    # The first job alone (job, queue, user index, array index), then the 99 others, 4 keys
    # each: 32 jobs (128 operations) a transaction.
    assert [n for n in puts if n] == [4, 128, 128, 128, 12]


def test_a_retried_submission_records_the_jobs_its_first_try_did_not(cluster, monkeypatch):
    cluster.add_worker("w1", images=(IMG,))
    spec = JobSpec.parse({"image": IMG, "array": "0-39"}, ROOT)
    real = arraystore.create_jobs
    calls = []

    def flaky(store, jobs_, max_ops):
        calls.append(len(jobs_))
        if len(calls) == 1:  # the first try records a batch, then etcd goes away
            real(store, jobs_[:32], max_ops)
            raise StoreUnavailable("etcd went away")
        return real(store, jobs_, max_ops)

    monkeypatch.setattr(arraystore, "create_jobs", flaky)
    with pytest.raises(StoreUnavailable):
        jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None,
                    idempotency_key="k1")
    first = cluster.store.job_for_idempotency_key("root", "k1")
    assert len(arraystore.array_jobs(cluster.store, first.array_id)) == 33
    again, created = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None,
                                 idempotency_key="k1")
    assert (again.id, created) == (first.id, False)
    array = arraystore.array_jobs(cluster.store, first.array_id)
    assert [j.array_index for j in array] == list(range(40)) and calls == [39, 7]
    # Once whole, a further retry records nothing.
    jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None, idempotency_key="k1")
    assert len(arraystore.array_jobs(cluster.store, first.array_id)) == 40 and calls == [39, 7, 0]


def test_array_limits_refuse_with_clear_messages(cluster):
    cluster.add_worker("w1", images=(IMG,))
    cfg = Config(web=WebConfig(max_array_size=10, quota_queued_jobs=15))
    with pytest.raises(SubmitError, match=r"the array has 11 jobs; at most 10 \(web.max_array_size\)") as caught:
        jobs.submit(cfg, cluster.store, cluster.links, None, ROOT, JobSpec.parse({"image": IMG, "array": "0-10"}, ROOT),
                    body=None, length=None)
    assert caught.value.status == 400
    jobs.submit(cfg, cluster.store, cluster.links, None, ROOT, JobSpec.parse({"image": IMG, "array": "0-9"}, ROOT),
                body=None, length=None)
    with pytest.raises(SubmitError, match="this array adds 6") as caught:
        jobs.submit(cfg, cluster.store, cluster.links, None, ROOT, JobSpec.parse({"image": IMG, "array": "0-5"}, ROOT),
                    body=None, length=None)
    assert caught.value.status == 429


# ----- the API ---------------------------------------------------------------------------------

def test_the_api_creates_shows_and_cancels_an_array(client, as_user, cluster):
    cluster.add_worker("w1", images=(IMG,))
    root = as_user("root")
    resp = client.post("/api/v1/jobs", query_string={"image": IMG, "array": "0-4%2"}, data=b"", headers=root)
    assert resp.status_code == 201, resp.json
    array = resp.json["array"]
    assert array["size"] == 5 and array["limit"] == 2 and len(array["job_ids"]) == 5
    assert resp.json["job"]["array_id"] == array["id"] and resp.json["job"]["array_index"] == 0
    first = cluster.store.get_job(array["job_ids"][0])
    cluster.store.claim(first, "w1", cluster.leases["w1"], (), (array_slot(first, 0),))
    got = client.get(f"/api/v1/arrays/{array['id']}", headers=root).json["array"]
    assert got["counts"] == {"STARTING": 1, "QUEUED": 4}
    assert [j["array_index"] for j in got["jobs"]] == [0, 1, 2, 3, 4]
    queued = [j for j in got["jobs"] if j["state"] == "QUEUED"]
    assert queued[0]["waiting_reason"] == "starting"  # one slot of %2 is free
    assert "its array runs at most 2 at once (%2)" in queued[1]["waiting_reason"]
    # Nobody else sees it.
    assert client.get(f"/api/v1/arrays/{array['id']}", headers=as_user("alice")).status_code == 404
    assert client.post(f"/api/v1/arrays/{array['id']}/cancel", headers=as_user("alice")).status_code == 404
    assert client.get("/api/v1/arrays/nonsense", headers=root).status_code == 404
    # One job ended already: cancel leaves it as it ended.
    done = cluster.store.get_job(array["job_ids"][4])
    cluster.store.transition(done, JobState.CANCELLED, reason="by hand")
    resp = client.post(f"/api/v1/arrays/{array['id']}/cancel", headers=root)
    assert resp.status_code == 200 and len(resp.json["cancelled"]) == 4
    assert resp.json["array"]["counts"] == {"CANCELLED": 5} and resp.json["array"]["ended"]
    assert taken_slots(cluster, array["id"]) == set()


def test_a_bad_array_is_a_400(client, as_user, cluster):
    cluster.add_worker("w1", images=(IMG,))
    resp = client.post("/api/v1/jobs", query_string={"image": IMG, "array": "9-1"}, data=b"", headers=as_user("root"))
    assert resp.status_code == 400 and "goes backwards" in resp.json["error"]
    assert not cluster.store.list_jobs("root")


# ----- the worker daemons ----------------------------------------------------------------------

def test_two_worker_daemons_start_no_more_of_an_array_than_its_limit(cluster, tmp_path, monkeypatch):
    """The daemons' own start step (plan, then claim with a run slot) on one store: two workers
    with room for 4 jobs each start 2 jobs of a %2 array between them, and one more once one
    of those has ended."""
    from gpu_worker.daemon import WorkerDaemon
    from pink.config import WorkerConfig

    daemons = {}
    for name in ("w1", "w2"):
        cluster.add_worker(name, images=(IMG,))
        cfg = Config(worker=WorkerConfig(name=name, gpus="none", max_parallel_jobs=4, inbox=str(tmp_path / name / "in"),
                                         outbox=str(tmp_path / name / "out"), inputs_dir=str(tmp_path / name / "inp")))
        daemon = WorkerDaemon(cfg, store=cluster.store)
        daemon.lease.id = cluster.leases[name]
        # Launching a run is the runner's part: record the claimed job as a run, as _launch does.
        monkeypatch.setattr(daemon, "_launch", lambda job, fresh=False, ahead=None, d=daemon: d.runs.__setitem__(
            job.id, SimpleNamespace(job=job, gpu_indices=job.gpu_indices)))
        daemons[name] = daemon
    spec = JobSpec.parse({"image": IMG, "array": "0-5%2"}, ROOT)
    first, _ = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    assert {j.worker for j in arraystore.array_jobs(cluster.store, first.array_id)} == {"w1", "w2"}

    def start_all() -> list:
        for name, daemon in daemons.items():
            daemon._start_queued(cluster.store.queue(name))
        return [j for j in arraystore.array_jobs(cluster.store, first.array_id) if j.state is JobState.STARTING]

    claimed = start_all()
    assert len(claimed) == 2 and sorted(slot_number(j) for j in claimed) == [0, 1]
    waiting = [e for name in daemons for e in cluster.store.queue(name) if e.state is JobState.QUEUED]
    assert len(waiting) == 4
    assert len(start_all()) == 2, "a second round starts nothing while the limit is reached"
    ended = cluster.store.transition(claimed[0], JobState.FAILED, reason="test")
    assert ended is not None
    now = start_all()
    assert len(now) == 2 and claimed[0].id not in {j.id for j in now}
    assert taken_slots(cluster, first.array_id) == {0, 1}


def test_a_lost_job_of_an_array_is_retried_as_a_job_of_the_array_with_its_index(cluster):
    """With --retry-lost, the re-run of a LOST array job keeps its place in the array (its
    index, told as PINK_ARRAY_INDEX) and the array's %N limit."""
    from webapp import janitor, reactor

    cluster.store.create_user(ROOT)
    cluster.add_worker("w1", images=(IMG,))
    spec = JobSpec.parse({"image": IMG, "array": "3-5%2", "retry_lost": "1"}, ROOT)
    first, _ = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    job = arraystore.array_jobs(cluster.store, first.array_id)[1]
    job = cluster.store.claim(job, "w1", cluster.leases["w1"], (), (array_slot(job, 0),))
    cluster.worker_dies("w1")
    janitor.sweep(cluster.store, Config().web)
    lost = cluster.store.get_job(job.id)
    assert lost.state is JobState.LOST and taken_slots(cluster, first.array_id) == set()
    cluster.add_worker("w2", images=(IMG,))
    new = reactor.retry(Config(), cluster.store, cluster.links, None, lost, now=lost.updated_at)
    assert new is not None and new.retry_of == lost.id and new.worker == "w2"
    assert (new.array_id, new.array_index, new.array_size, new.array_limit) == (first.array_id, 4, 3, 2)
    assert new.id in [j.id for j in arraystore.array_jobs(cluster.store, first.array_id)]


def test_a_deleted_job_leaves_its_array_and_a_cancelled_array_can_be_deleted_job_by_job(cluster):
    cluster.add_worker("w1", images=(IMG,))
    spec = JobSpec.parse({"image": IMG, "array": "0-2"}, ROOT)
    first, _ = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT, spec, body=None, length=None)
    for job in arraystore.array_jobs(cluster.store, first.array_id):
        cluster.store.transition(job, JobState.CANCELLED, reason="test")
    ended = arraystore.array_jobs(cluster.store, first.array_id)
    assert cluster.store.delete_job(ended[0], "root", 3600) is not None
    assert [j.array_index for j in arraystore.array_jobs(cluster.store, first.array_id)] == [1, 2]
    assert not cluster.store._get_prefix(arraystore.index_key(cluster.store, first.array_id, ended[0].id))


def test_a_resubmit_may_ask_for_an_array_from_the_held_image(client, as_user, cluster):
    cluster.add_worker("w1", images=(IMG,))
    old = cluster.add_job(user="alice", state=JobState.SUCCEEDED, image_id=IMG, image_bytes=1000)
    resp = client.post(f"/api/v1/jobs/{old.id}/resubmit", json={"array": "0-2%1"}, headers=as_user("alice"))
    assert resp.status_code == 201, resp.json
    array = resp.json["array"]
    assert (array["size"], array["limit"], len(array["job_ids"])) == (3, 1, 3)
    made = arraystore.array_jobs(cluster.store, array["id"])
    assert all(j.resubmit_of == old.id and j.image_bytes == 0 for j in made)
