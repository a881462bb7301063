"""The caps on a job's log, output and disk, and the reason of a job killed for its memory,
without docker: the log copy of a run fed by a fake stream, the export through ``cat`` fed by a
fake container (a remote engine's pipeline), the disk check and the wait fed by a fake engine."""

from __future__ import annotations

import dataclasses
import hashlib
import threading

import docker.errors
import pytest
import requests

from gpu_worker.export import OutputTooLarge, export_container
from gpu_worker.runner import JobRun, disk_reason, exit_reason, log_cut_line
from pink.config import WorkerConfig
from pink.model import Job
from pink.states import JobState

MiB = 1 << 20


class FakeStream:
    """docker-py's log stream: iterable, with a close() the copy calls when it stops early."""

    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.closed = False

    def __iter__(self):
        return self.chunks

    def close(self):
        self.closed = True


class FakeContainer:
    id = "c0ffee"

    def __init__(self, log_chunks=(), export_chunks=()):
        self.stream = FakeStream(log_chunks)
        self.export_chunks = export_chunks

    def logs(self, **_):
        return self.stream

    def export(self, chunk_size):
        yield from self.export_chunks


def copy_log(tmp_path, chunks, cap):
    run = JobRun(job=Job(id="j1", user="alice", state=JobState.RUNNING, worker="w"),
                 cfg=WorkerConfig(outbox=str(tmp_path), max_log_bytes=cap),
                 store=None, engine=None, runtime="", inputs=None)
    container = FakeContainer(log_chunks=chunks)
    run._copy_logs(container)
    return run.log_file.read_bytes(), container.stream.closed


def test_a_log_under_the_cap_is_copied_whole(tmp_path):
    assert copy_log(tmp_path, [b"a\n", b"b" * 98], cap=100) == (b"a\n" + b"b" * 98, False)


def test_a_log_past_the_cap_is_cut_with_a_line_saying_so(tmp_path):
    data, closed = copy_log(tmp_path, [b"1234\n", b"56789\nmore\n", b"never read"], cap=8)
    assert data == b"1234\n567\n[PINK: log cut at 8 bytes: the job printed more]\n"
    assert closed  # the copy stopped reading; the job runs on
    # Cut at the end of a line: no empty line before the marker.
    data, _ = copy_log(tmp_path, [b"1234\n", b"5678\n"], cap=5)
    assert data == b"1234\n[PINK: log cut at 5 bytes: the job printed more]\n"


def test_log_cut_line():
    assert log_cut_line(10, b"") == b"[PINK: log cut at 10 bytes: the job printed more]\n"
    assert log_cut_line(10, b"x").startswith(b"\n[PINK:")


@pytest.mark.parametrize("code, oom, memory, reason", [
    (3, False, 512 * MiB, "the container exited with code 3"),
    (137, True, 512 * MiB, "out of memory: the job used its whole memory limit of 512 MiB; ask for more with --memory"),
    (1, True, 512 * MiB, "out of memory: the job used its whole memory limit of 512 MiB; ask for more with --memory"),
    (137, True, 0, "out of memory: the kernel killed the job (exit code 137)"),
    (137, False, 64 * MiB, "killed (exit code 137), most likely out of memory: the job used its whole memory limit "
                           "of 64 MiB; ask for more with --memory"),
    (137, False, 0, "the container exited with code 137"),
])
def test_exit_reason(code, oom, memory, reason):
    assert exit_reason(code, oom, memory) == reason


def test_the_export_under_the_cap_is_whole(tmp_path):
    data = [b"x" * MiB, b"y" * 100]
    archive = tmp_path / "j.tar.zst"
    size, digest = export_container(FakeContainer(export_chunks=data), None, "tcp://engine:2375", ["cat"], archive,
                                    max_bytes=MiB + 100)
    assert (size, digest) == (MiB + 100, hashlib.sha256(b"".join(data)).hexdigest())
    assert archive.read_bytes() == b"".join(data)


def test_the_export_past_the_cap_stops_and_leaves_nothing(tmp_path):
    archive = tmp_path / "j.tar.zst"
    endless = (b"z" * MiB for _ in range(10_000))  # 10 GiB, were it all read
    with pytest.raises(OutputTooLarge, match=r"^the output passed the cap of 2097152 bytes \(worker.max_output_bytes\): "
                                             r"write less, or ask the operators$"):
        export_container(FakeContainer(export_chunks=endless), None, "tcp://engine:2375", ["cat"], archive,
                         max_bytes=2 * MiB)
    assert list(tmp_path.iterdir()) == []


# ----- the disk cap -------------------------------------------------------------------------------
class FakeApi:
    """docker-py's low-level client: containers(size=True) answers the next of ``sizes`` (None:
    without SizeRw; "gone": no container; an exception is raised)."""

    def __init__(self, sizes):
        self.sizes = list(sizes)
        self.asked = 0

    def containers(self, all=False, filters=None, size=False):  # noqa: A002 - docker-py's name
        assert all is True and filters == {"id": "c0ffee"} and size is True
        self.asked += 1
        answer = self.sizes.pop(0) if self.sizes else 0
        if isinstance(answer, Exception):
            raise answer
        if answer == "gone":
            return []
        return [{"Id": "c0ffee"} if answer is None else {"Id": "c0ffee", "SizeRw": answer}]


class FakeEngine:
    def __init__(self, sizes):
        self.api = FakeApi(sizes)


class FakeStore:
    """Every transition wins."""

    def transition(self, job, new, **changes):
        return dataclasses.replace(job, state=new, **changes)


class RunningContainer(FakeContainer):
    """A container that runs until stopped, then exits with 143 (SIGTERM)."""

    def __init__(self):
        super().__init__()
        self.stopped = threading.Event()
        self.attrs = {"State": {}}

    def wait(self):
        self.stopped.wait(30)
        return {"StatusCode": 143}

    def stop(self, timeout):
        self.attrs = {"State": {"ExitCode": 143, "FinishedAt": "2026-01-01T00:00:10Z"}}
        self.stopped.set()

    def reload(self):
        pass


def disk_run(tmp_path, sizes, **cfg):
    cfg = {"outbox": str(tmp_path), "max_disk_bytes": 64 * MiB, "disk_check_interval_s": 0.01, **cfg}
    return JobRun(job=Job(id="j1", user="alice", state=JobState.RUNNING, worker="w", timeout_s=60),
                  cfg=WorkerConfig(**cfg), store=FakeStore(), engine=FakeEngine(sizes), runtime="", inputs=None)


def test_disk_reason():
    assert disk_reason(64 * MiB) == ("the job wrote more than 67108864 bytes to its own filesystem "
                                     "(worker.max_disk_bytes): write less, or ask the operators")


def test_the_disk_check_skips_what_docker_does_not_tell_and_stops_past_the_cap(tmp_path):
    sizes = [None, "gone", requests.ConnectionError("engine away"), docker.errors.APIError("busy"),
             TypeError("a bug"), 64 * MiB, True, 64 * MiB + 1, 0]
    run = disk_run(tmp_path, sizes)
    over, stop = threading.Event(), threading.Event()
    run._watch_disk(FakeContainer(), over, stop)  # returns once over the cap
    assert over.is_set() and run.engine.api.asked == 8


def test_the_disk_check_ends_when_told(tmp_path):
    run = disk_run(tmp_path, [])
    over, stop = threading.Event(), threading.Event()
    stop.set()
    run._watch_disk(FakeContainer(), over, stop)
    assert not over.is_set() and run.engine.api.asked == 0


def test_a_job_past_its_disk_cap_is_stopped_and_fails_saying_so(tmp_path):
    run = disk_run(tmp_path, [MiB, 65 * MiB])
    container = RunningContainer()
    run._run(container)
    assert container.stopped.is_set()
    job = run.job
    assert (job.state, job.outcome, job.exit_code) == (JobState.EXPORTING, "FAILED", 143)
    assert job.reason == disk_reason(64 * MiB)


def test_without_a_disk_cap_docker_is_not_asked(tmp_path):
    run = disk_run(tmp_path, [65 * MiB], max_disk_bytes=0)
    container = RunningContainer()
    threading.Timer(0.3, container.stop, args=(1,)).start()  # the job ends by itself
    run._run(container)
    assert run.engine.api.asked == 0
    assert (run.job.outcome, run.job.reason) == ("FAILED", "the container exited with code 143")
