"""gpu_worker.ahead's bookkeeping, with the engine's create replaced: which jobs get a container
made ahead, what a claim takes, what goes to the reaper."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import docker.errors
import pytest

from gpu_worker import ahead as ahead_module
from gpu_worker.ahead import Ahead
from pink.config import WorkerConfig
from pink.model import Job
from pink.states import JobState


class FakeStore:
    def __init__(self, jobs):
        self.jobs = {j.id: j for j in jobs}

    def get_job(self, job_id):
        return self.jobs.get(job_id)


class FakeReaper:
    def __init__(self):
        self.removed = []

    def remove(self, container, what):
        self.removed.append(container.job_id)


def job(job_id, state=JobState.QUEUED, worker="w1", gpus=0, revision=7):
    return Job(id=job_id, user="alice", state=state, worker=worker, gpus=gpus, mod_revision=revision)


@pytest.fixture
def made(monkeypatch):
    """Ahead with its thread on a fake create; ``created`` lists what it created."""
    created: list[str] = []
    missing = {"noimage"}  # jobs whose image the engine does not hold
    gate = threading.Event()
    gate.set()

    def create(engine, cfg, j, runtime, inputs, ahead=False):
        assert ahead
        gate.wait(10)
        if j.id in missing:
            raise docker.errors.ImageNotFound("no such image")
        created.append(j.id)
        return SimpleNamespace(job_id=j.id)

    monkeypatch.setattr(ahead_module, "create_container", create)
    stop = threading.Event()
    jobs = [job("a"), job("b"), job("c"), job("gpu", gpus=1), job("gone", state=JobState.CANCELLED),
            job("other", worker="w2"), job("noimage")]
    reaper = FakeReaper()
    a = Ahead(None, FakeStore(jobs), WorkerConfig(name="w1"), "", None, reaper, stop).start()
    yield SimpleNamespace(ahead=a, created=created, reaper=reaper, gate=gate, missing=missing)
    stop.set()
    gate.set()


def settle(a, count):
    deadline = time.monotonic() + 10
    while len(a.made) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)


def test_containers_are_made_for_the_wanted_queued_jobs_of_this_worker_only(made):
    made.ahead.want(["a", "b", "gpu", "gone", "other", "noimage"], {"a", "b", "gpu", "gone", "other", "noimage"})
    settle(made.ahead, 2)
    assert made.created == ["a", "b"]
    assert sorted(made.ahead.made) == ["a", "b"]
    assert made.ahead.made["a"].job.mod_revision == 7  # the record the claim must win with


def test_a_claim_takes_its_container_once_and_none_is_made_for_it_again(made):
    made.ahead.want(["a"], {"a"})
    settle(made.ahead, 1)
    taken = made.ahead.take("a")
    assert taken is not None and taken.container.job_id == "a"
    assert made.ahead.take("a") is None
    made.ahead.want([], set())
    assert made.reaper.removed == []  # handed to the run, not removed


def test_a_job_that_leaves_the_next_ones_has_its_container_removed(made):
    made.ahead.want(["a", "b"], {"a", "b"})
    settle(made.ahead, 2)
    made.ahead.want(["b"], {"b"})  # a was cancelled
    assert made.reaper.removed == ["a"] and sorted(made.ahead.made) == ["b"]
    assert made.ahead.holds("b") and not made.ahead.holds("a")


def test_a_claim_waits_for_the_container_being_made_and_gets_it(made):
    made.gate.clear()  # the engine is slow to create
    made.ahead.want(["a"], {"a"})
    deadline = time.monotonic() + 5
    while not made.ahead.holds("a") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert made.ahead.holds("a") and "a" not in made.ahead.made  # being made now
    threading.Timer(0.2, made.gate.set).start()
    taken = made.ahead.take("a")
    assert taken is not None and taken.container.job_id == "a"


def test_a_job_whose_image_is_not_here_is_tried_again_when_an_image_comes(made):
    made.ahead.want(["noimage"], {"noimage"})
    time.sleep(0.3)
    assert made.ahead.made == {} and made.created == []
    made.missing.clear()  # its image was loaded
    made.ahead.want(["noimage"], {"noimage"})
    time.sleep(0.3)
    assert made.ahead.made == {}, "not before its retry time"
    made.ahead.retry()  # what an image event does
    settle(made.ahead, 1)
    assert sorted(made.ahead.made) == ["noimage"]
