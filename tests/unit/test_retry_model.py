import pytest

from pink.errors import StoreUnavailable
from pink.model import Job, new_job_id, JOB_ID
from pink.retry import Retry
from pink.states import JobState


class Clock:
    def __init__(self):
        self.now = 0.0

    def sleep(self, seconds):
        self.now += seconds

    def __call__(self):
        return self.now


def test_retry_retries_transient_until_success():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise StoreUnavailable("down")
        return "ok"

    clock = Clock()
    assert Retry(deadline_s=5, sleep=clock.sleep, clock=clock)(flaky) == "ok"
    assert len(calls) == 3


def test_retry_gives_up_at_the_deadline_and_never_retries_permanent_errors():
    clock = Clock()

    def down():
        raise StoreUnavailable("down")

    with pytest.raises(StoreUnavailable):
        Retry(deadline_s=2, sleep=clock.sleep, clock=clock)(down)
    assert clock.now <= 2.0

    calls = []

    def bad():
        calls.append(1)
        raise ValueError("bug")

    with pytest.raises(ValueError):
        Retry(sleep=clock.sleep, clock=clock)(bad)
    assert calls == [1]


def test_retry_deadline_counts_from_the_first_failure_not_from_a_hung_first_attempt():
    clock = Clock()
    calls = []

    def hung_then_ok():
        calls.append(clock.now)
        if len(calls) == 1:
            clock.now += 5.0  # the first endpoint answered nothing until the RPC timeout
            raise StoreUnavailable("deadline exceeded")
        return "ok"

    assert Retry(deadline_s=2, sleep=clock.sleep, clock=clock)(hung_then_ok) == "ok"
    assert len(calls) == 2 and calls[1] - calls[0] <= 5.0 + 2.0


def test_job_ids_sort_by_time_and_match_the_pattern():
    a, b = new_job_id(1000.0), new_job_id(2000.0)
    assert JOB_ID.match(a) and JOB_ID.match(b) and a < b


def test_job_round_trip_keeps_every_field_and_hides_private_ones():
    job = Job(id=new_job_id(), user="alice", state=JobState.RUNNING, worker="w1", gpus=2,
              gpu_indices=(0, 1), history=({"state": "QUEUED", "at": 1.0},), idempotency_key="k",
              write_id="w")
    again = Job.from_json(job.to_json(), mod_revision=7)
    assert again == job and again.mod_revision == 7
    public = job.public()
    assert "idempotency_key" not in public and "write_id" not in public
    assert public["state"] == "RUNNING"
