"""How a submission becomes a Job (webapp.jobs.submit): placement by datasets and per-job
resources, the refusals (400 for good, 503 for now), the Job built from the JobSpec, and the
queue reasons of CPUs and memory — on the in-memory etcd of tests/unit/conftest.py.

Submissions reuse an image the worker holds (as root, who may), so nothing is uploaded."""

from __future__ import annotations

import json

import pytest

from pink.config import Config, SchedulingConfig
from pink.fairshare import FairShare
from pink.model import User, WorkerInfo
from pink.states import JobState
from pink.store import QueueEntry
from webapp import jobs
from webapp.spec import JobSpec, SubmitError

IMG = "sha256:" + "ab" * 32
GiB = 1 << 30
ROOT = User("root", "", admin=True)


def submit(cluster, **spec):
    job, created = jobs.submit(Config(), cluster.store, cluster.links, None, ROOT,
                               JobSpec(image_id=IMG, **spec), body=None, length=None)
    assert created
    return job


def refused(cluster, **spec) -> SubmitError:
    with pytest.raises(SubmitError) as caught:
        submit(cluster, **spec)
    assert not cluster.store.list_jobs(ROOT.name), "a refused submission leaves no job"
    return caught.value


def add(cluster, name, **fields) -> WorkerInfo:
    return cluster.add_worker(name, images=(IMG,), memory_bytes=64 * GiB, **fields)


def test_a_dataset_no_worker_has_is_a_400_naming_it(cluster):
    add(cluster, "w1", datasets=("coco",))
    error = refused(cluster, datasets=("imagenet",))
    assert error.status == 400
    assert "no worker has dataset imagenet (datasets: coco)" in str(error)


def test_a_dataset_only_a_drained_worker_has_is_a_503_with_the_reason(cluster):
    add(cluster, "w1")
    add(cluster, "w2", datasets=("imagenet",))
    cluster.store.set_drained("w2", True)
    error = refused(cluster, datasets=("imagenet",))
    assert error.status == 503
    assert str(error) == ("no worker can take this job now: no worker in service has dataset imagenet; "
                          "w2 would fit but is drained or down")
    # Down, not drained: the same (a held image is only known of live workers, so the
    # explanation cannot name it).
    cluster.store.set_drained("w2", False)
    cluster.worker_dies("w2")
    assert refused(cluster, datasets=("imagenet",)).status == 503


def test_of_two_workers_the_one_with_the_dataset_gets_the_job(cluster):
    add(cluster, "a-idle")
    add(cluster, "b-data", datasets=("imagenet", "coco"))
    for _ in range(3):  # the idle worker would win on load; it lacks the dataset
        job = submit(cluster, datasets=("imagenet",))
        assert job.worker == "b-data" and job.datasets == ("imagenet",)
    assert submit(cluster).worker == "a-idle"


def test_a_request_over_every_workers_maximum_is_a_400(cluster):
    add(cluster, "w1", max_memory_bytes=16 * GiB, max_cpus=2)
    add(cluster, "w2", max_memory_bytes=32 * GiB)
    error = refused(cluster, memory_bytes=48 * GiB)
    assert error.status == 400
    assert "no worker gives a job 48 GiB of memory (at most 32 GiB)" in str(error)
    assert refused(cluster, cpus=5).status == 400  # 4 CPUs per host (conftest)
    # Within one worker's maximum: placed there.
    assert submit(cluster, memory_bytes=20 * GiB).worker == "w2"


def test_the_job_carries_the_spec_and_the_resources_resolved_on_its_worker(cluster):
    add(cluster, "w1", datasets=("imagenet",), default_cpus=1.5, default_memory_bytes=2 * GiB,
        default_shm_bytes=GiB)
    job = submit(cluster, command=("python", "train.py"), entrypoint=(), env={"LR": "0.1"},
                 workdir="/work", datasets=("imagenet",), name="run-1")
    assert (job.command, job.entrypoint, job.env, job.workdir) == (("python", "train.py"), (), {"LR": "0.1"}, "/work")
    assert (job.cpus, job.memory_bytes, job.shm_bytes) == (1.5, 2 * GiB, GiB)
    stored = cluster.store.get_job(job.id)
    assert stored.command == ("python", "train.py") and stored.entrypoint == () and stored.env == {"LR": "0.1"}
    # Asked for: what it asked for.
    job = submit(cluster, cpus=3, memory_bytes=GiB, shm_bytes=4 * GiB)
    assert (job.cpus, job.memory_bytes, job.shm_bytes) == (3, GiB, 4 * GiB)
    # The image's own command: None, not an empty list.
    assert submit(cluster).command is None


def test_a_gpu_job_that_asks_for_nothing_gets_its_share_of_the_host(cluster):
    add(cluster, "w1", gpus=4, default_cpus=1, default_memory_bytes=GiB)
    job = submit(cluster, gpus=2)
    assert (job.cpus, job.memory_bytes) == (2, 32 * GiB)  # half of 4 CPUs and of 64 GiB


def test_a_queued_job_says_it_waits_for_cpus_and_memory(cluster):
    add(cluster, "w1")  # 4 CPUs, 64 GiB, 2 job slots
    running = cluster.add_job("alice", JobState.RUNNING, cpus=3, memory_bytes=60 * GiB)
    cpu = cluster.add_job("alice", cpus=2)
    memory = cluster.add_job("bob", memory_bytes=8 * GiB)
    info = jobs.queue_info(cluster.store, [running, cpu, memory], FairShare(cluster.store, SchedulingConfig()))
    # bob runs nothing yet, so his job comes first (fair share).
    assert info[memory.id][:2] == (1, "waiting for 8 GiB of memory (4 GiB free)")
    assert info[cpu.id][:2] == (2, "waiting for 2 CPUs (1 free)")


def test_datasets_are_listed_with_their_workers_and_availability(cluster):
    add(cluster, "w1", datasets=("coco", "imagenet"))
    add(cluster, "w2", datasets=("imagenet",))
    add(cluster, "w3", datasets=("mnist",))
    cluster.store.set_drained("w3", True)
    assert jobs.list_datasets(cluster.store.workers()) == [
        {"name": "coco", "workers": ["w1"], "available": True},
        {"name": "imagenet", "workers": ["w1", "w2"], "available": True},
        {"name": "mnist", "workers": ["w3"], "available": False},
    ]


def test_records_written_before_resources_existed_still_read():
    static = json.dumps({"name": "old", "ssh_host": "h", "ssh_port": 22, "ssh_user": "u", "inbox": "/i",
                         "outbox": "/o", "gpus": [], "cpus": 8, "memory_bytes": 1 << 34}).encode()
    info = WorkerInfo.from_parts(static, None, drained=False)
    assert (info.datasets, info.default_cpus, info.max_cpus, info.max_memory_bytes) == ((), 0, 0, 0)
    entry = QueueEntry.from_json(b'{"job_id":"j","user":"u","state":"QUEUED","gpus":1,"timeout_s":60,'
                                 b'"priority":0,"created_at":1.0,"image_id":""}')
    assert (entry.cpus, entry.memory_bytes) == (0, 0)
    assert entry.as_queued.cpus == 0
