"""The caps on a job's log and output, and the reason of a job killed for its memory, without
docker: the log copy of a run fed by a fake stream, the export through ``cat`` fed by a fake
container (a remote engine's pipeline)."""

from __future__ import annotations

import hashlib

import pytest

from gpu_worker.export import OutputTooLarge, export_container
from gpu_worker.runner import JobRun, exit_reason, log_cut_line
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
