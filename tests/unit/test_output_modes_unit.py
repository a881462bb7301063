"""Output modes and cancels without docker: parsing the mode, planning a ``changes`` archive
from ``docker diff``, re-rooting archive streams, the top entries, the cap of a streamed
export; and every race of a cancel on the in-memory store (API, worker run, janitor)."""

from __future__ import annotations

import io
import tarfile
import threading
import time

import pytest

from gpu_worker.export import OutputTooLarge, export_stream
from gpu_worker.outputs import (DELETED_LIST, GROUP_AT, Entries, copy_path, deleted_list, group_reads,
                                output_mounts, plan_changes, remapped_root, write_changes)
from gpu_worker.runner import Abort
from pink.config import WebConfig
from pink.model import MAX_OUTPUT_ENTRIES, Job, User, output_dir, valid_output
from pink.states import JobState
from webapp.cancel import CannotCancel, cancel
from webapp.janitor import sweep
from webapp.spec import JobSpec, SubmitError

from tests.unit.test_job_limits import FakeStream, MiB, RunningContainer, disk_run

S = JobState


# ----- the mode ---------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["full", "changes", "none", "path:/out", "path:/home/me/results", "path:/tmp/o-1.x"])
def test_valid_output_modes(mode):
    assert valid_output(mode) == mode
    assert JobSpec.parse({"output": mode}, User("alice", "")).output == mode


@pytest.mark.parametrize("mode, words", [
    ("all", "must be one of full, changes, none or path:/DIR"),
    ("path:", "absolute, normalised directory"),
    ("path:out", "absolute, normalised directory"),
    ("path:/", "absolute, normalised directory"),
    ("path:/out/", "absolute, normalised directory"),
    ("path://out", "absolute, normalised directory"),
    ("path:/out/../etc", "no '..'"),
    ("path:/out/./x", "absolute, normalised directory"),
    ("path:/o ut", "absolute, normalised directory"),
    ("path:/" + "x" * 200, "at most 200"),
    ("path:/in", "/in belongs to the system or to PINK"),
    ("path:/data/imagenet", "/data belongs"),
    ("path:/proc", "/proc belongs"),
    ("path:/etc/x", "/etc belongs"),
    ("path:/usr", "/usr belongs"),
])
def test_bad_output_modes_are_refused_saying_why(mode, words):
    with pytest.raises(ValueError, match="output"):
        valid_output(mode)
    with pytest.raises(SubmitError) as err:
        JobSpec.parse({"output": mode}, User("alice", ""))
    assert words in str(err.value)


def test_a_bad_output_mode_is_a_400_of_the_api(client, as_user, cluster):
    cluster.add_worker()
    resp = client.post("/api/v1/jobs?output=path:/in", data=b"x", headers=as_user("alice"))
    assert resp.status_code == 400 and "path:/in is not allowed" in resp.get_json()["error"]


def test_output_dir():
    assert (output_dir("path:/out/a"), output_dir("changes"), output_dir("full")) == ("/out/a", "", "")


# ----- planning a changes archive -----------------------------------------------------------------
def test_plan_changes_reads_each_change_once_and_lists_deletions():
    diff = [
        {"Path": "/etc", "Kind": 0}, {"Path": "/etc/passwd", "Kind": 2}, {"Path": "/etc/hosts.allow", "Kind": 0},
        {"Path": "/home", "Kind": 1}, {"Path": "/home/x", "Kind": 1}, {"Path": "/home/x/f", "Kind": 1},
        {"Path": "/srv", "Kind": 0}, {"Path": "/srv/old", "Kind": 2}, {"Path": "/srv/old/new", "Kind": 1},
        {"Path": "/var", "Kind": 0},  # its own metadata changed, nothing below it
        {"Path": "/bin", "Kind": 0}, {"Path": "/bin/ls", "Kind": 2},
    ]
    reads, deleted = plan_changes(diff)
    assert reads == [("/etc/hosts.allow", True), ("/home", False), ("/srv/old/new", False), ("/var", True)]
    assert deleted == ["/bin/ls", "/etc/passwd", "/srv/old"]
    assert deleted_list(deleted) == b"/bin/ls\n/etc/passwd\n/srv/old\n"
    assert plan_changes(None) == ([], [])


# ----- archive streams ---------------------------------------------------------------------------
def tar_of(*members: tuple[str, bytes | None], owner: int = 0) -> bytes:
    """An uncompressed tar; a member with None is a directory, one starting with '->' a hard link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.uid = info.gid = owner
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif data.startswith(b"->"):
                info.type, info.linkname = tarfile.LNKTYPE, data[2:].decode()
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class ArchiveContainer:
    """A stopped container's archive API and diff (docker-py's get_archive: chunks and a stat)."""

    def __init__(self, archives: dict[str, tuple[bytes, bool]], diff=(), upper: str = "/var/lib/docker/overlay2/x/diff"):
        self.archives, self.changes, self.asked = archives, list(diff), []
        self.attrs = {"GraphDriver": {"Name": "overlay2", "Data": {"UpperDir": upper}}, "HostConfig": {}}

    def get_archive(self, path, chunk_size):
        self.asked.append(path)
        data, is_dir = self.archives[path]
        return iter([data[i:i + 7] for i in range(0, len(data), 7)]), {"mode": (1 << 31) if is_dir else 0o644}

    def diff(self):
        return self.changes


def read_tar(data: bytes) -> dict[str, bytes | None]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            out[m.name] = tar.extractfile(m).read() if m.isfile() else ("->" + m.linkname if m.islnk() else None)
    return out


def test_copy_path_roots_members_at_their_path_and_keeps_a_directory_entry_alone():
    container = ArchiveContainer({
        "/home/x": (tar_of(("x", None), ("x/f", b"new"), ("x/g", b"->x/f")), True),
        "/var": (tar_of(("var", None), ("var/unchanged", b"image file")), True),
    })
    sink, entries = io.BytesIO(), Entries()
    with tarfile.open(fileobj=sink, mode="w|") as out:
        copy_path(container, "/home/x", out, entries)
        copy_path(container, "/var", out, entries, {"/var": True})
    assert read_tar(sink.getvalue()) == {"home/x": None, "home/x/f": b"new", "home/x/g": "->home/x/f", "var": None}
    assert entries.top() == ({"name": "/home", "bytes": 3, "type": "dir"}, {"name": "/var", "bytes": 0, "type": "dir"})


@pytest.mark.parametrize("user, empty", [("", True), ("root", True), ("0:0", True), ("1000", False),
                                         ("trainer:users", False)])
def test_the_output_volume_is_empty_unless_the_image_runs_as_another_user(user, empty):
    (mount,) = output_mounts("path:/out", lambda: {"Config": {"User": user}})
    assert (mount["Target"], mount["Type"], mount["Source"]) == ("/out", "volume", None)
    assert mount.get("VolumeOptions", {}).get("NoCopy", False) is empty

    def not_asked():
        raise AssertionError("the image is inspected for path: only")

    assert output_mounts("changes", not_asked) == [] and output_mounts("full", not_asked) == []


def test_remapped_root_from_the_storage_layout():
    remapped = ArchiveContainer({}, upper="/var/lib/docker/100000.100000/overlay2/x/diff").attrs
    assert remapped_root(remapped) == (100000, 100000)
    assert remapped_root(ArchiveContainer({}).attrs) == (0, 0)
    assert remapped_root({**remapped, "HostConfig": {"UsernsMode": "host"}}) == (0, 0)  # a GPU job
    assert remapped_root({}) == (0, 0)


def test_owners_of_a_remapped_container_are_mapped_back():
    container = ArchiveContainer({"/out": (tar_of(("out", None), ("out/r", b"x"), owner=101000), True)})
    sink = io.BytesIO()
    with tarfile.open(fileobj=sink, mode="w|") as out:
        copy_path(container, "/out", out, Entries(), root=(100000, 100000))
    with tarfile.open(fileobj=io.BytesIO(sink.getvalue())) as tar:
        assert {(m.name, m.uid, m.gid) for m in tar} == {("out", 1000, 1000), ("out/r", 1000, 1000)}


def test_write_changes_holds_the_changes_and_the_deleted_list():
    diff = [{"Path": "/out", "Kind": 1}, {"Path": "/out/r", "Kind": 1}, {"Path": "/bin", "Kind": 0},
            {"Path": "/bin/ls", "Kind": 2}, {"Path": "/top.txt", "Kind": 0}]
    container = ArchiveContainer({"/out": (tar_of(("out", None), ("out/r", b"result")), True),
                                  "/top.txt": (tar_of(("top.txt", b"changed")), False)}, diff)
    sink, entries = io.BytesIO(), Entries()
    write_changes(container, sink, entries)
    assert container.asked == ["/out", "/top.txt"]
    assert read_tar(sink.getvalue()) == {"out": None, "out/r": b"result", "top.txt": b"changed",
                                         DELETED_LIST: b"/bin/ls\n"}
    assert entries.top() == ({"name": "/top.txt", "bytes": 7, "type": "file"},
                             {"name": "/out", "bytes": 6, "type": "dir"},
                             {"name": "/bin/ls", "bytes": 0, "type": "deleted"})


def test_many_reads_in_one_directory_of_the_image_are_one_read_that_keeps_them():
    reads = [(f"/tmp/f{i:02}", False) for i in range(GROUP_AT + 1)] + [("/tmp/dir", True), ("/home", False),
                                                                        ("/top", False)]
    assert group_reads(reads) == [("/home", {"/home": False}), ("/tmp", dict(reads[:GROUP_AT + 2])),
                                  ("/top", {"/top": False})]
    assert group_reads(reads[:GROUP_AT]) == [(p, {p: False}) for p, _ in reads[:GROUP_AT]]
    # Many files at the root are never one read of / (the whole filesystem).
    assert len(group_reads([(f"/f{i}", False) for i in range(GROUP_AT + 1)])) == GROUP_AT + 1
    # The read of /tmp keeps the changes only: not the image's file, not what /tmp/dir holds.
    tmp = tar_of(("tmp", None), ("tmp/f00", b"new"), ("tmp/image-file", b"old"), ("tmp/dir", None),
                 ("tmp/dir/image-file", b"old"))
    sink, entries = io.BytesIO(), Entries()
    with tarfile.open(fileobj=sink, mode="w|") as out:
        copy_path(ArchiveContainer({"/tmp": (tmp, True)}), "/tmp", out, entries, {"/tmp/f00": False, "/tmp/dir": True})
    assert read_tar(sink.getvalue()) == {"tmp/f00": b"new", "tmp/dir": None}


def test_entries_of_a_path_mode_are_one_level_below_the_directory_and_capped():
    entries = Entries(depth=2)
    for i in range(MAX_OUTPUT_ENTRIES + 10):
        info = tarfile.TarInfo(f"out/f{i:03}")
        info.size = i
        entries.add(info)
    top = entries.top()
    assert len(top) == MAX_OUTPUT_ENTRIES and top[0] == {"name": "/out/f059", "bytes": 59, "type": "file"}
    entries.add(tarfile.TarInfo("out"))  # the directory itself is no entry
    assert "/out" not in {e["name"] for e in entries.top()}


def test_a_streamed_export_past_the_cap_stops_and_leaves_nothing(tmp_path):
    def endless(sink):
        while True:
            sink.write(b"z" * MiB)

    with pytest.raises(OutputTooLarge, match=r"^the output passed the cap of 2097152 bytes"):
        export_stream(endless, ["cat"], tmp_path / "j.tar.zst", 2 * MiB)
    assert list(tmp_path.iterdir()) == []


def test_a_streamed_export_that_fails_leaves_nothing(tmp_path):
    def broken(sink):
        sink.write(b"partial")
        raise KeyError("no such path")

    with pytest.raises(Exception, match="export failed: 'no such path'"):
        export_stream(broken, ["cat"], tmp_path / "j.tar.zst", MiB)
    assert list(tmp_path.iterdir()) == []


# ----- cancel: the API's decisions ---------------------------------------------------------------
def test_a_running_job_on_a_live_worker_is_handed_to_its_worker_to_export(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING)
    moved = cancel(cluster.store, job, "alice")
    assert (moved.state, moved.outcome, moved.reason) == (S.EXPORTING, "CANCELLED", "cancelled by alice; keeping what it wrote")
    assert not moved.discard_output
    # A second cancel answers the job as it is; one with discard ends it at once.
    assert cancel(cluster.store, moved, "alice") == moved
    done = cancel(cluster.store, moved, "alice", discard=True)
    assert (done.state, done.discard_output) == (S.CANCELLED, True)
    assert done.reason == "cancelled by alice; its output thrown away as asked"


@pytest.mark.parametrize("state", [S.UPLOADING, S.QUEUED, S.STARTING])
def test_a_job_that_did_not_run_yet_is_cancelled_at_once(cluster, state):
    cluster.add_worker()
    done = cancel(cluster.store, cluster.add_job(state=state), "alice")
    assert (done.state, done.reason, done.discard_output) == (S.CANCELLED, "cancelled by alice", False)


def test_a_running_job_of_a_dead_worker_is_cancelled_at_once_saying_nothing_is_kept(cluster):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING)
    cluster.worker_dies()
    done = cancel(cluster.store, job, "alice")
    assert done.state is S.CANCELLED
    assert done.reason == "cancelled by alice; its worker w1 is not available, so nothing it wrote is kept"


def test_a_job_exporting_its_own_end_is_not_cancelled_unless_discarded(cluster, client, as_user):
    cluster.add_worker()
    job = cluster.store.transition(cluster.add_job(state=S.RUNNING), S.EXPORTING, outcome="SUCCEEDED")
    resp = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("alice"))
    assert resp.status_code == 409 and "already finished running (SUCCEEDED)" in resp.get_json()["error"]
    assert client.post(f"/api/v1/jobs/{job.id}/cancel?discard=maybe", headers=as_user("alice")).status_code == 400
    done = client.post(f"/api/v1/jobs/{job.id}/cancel?discard=1", headers=as_user("alice")).get_json()["job"]
    assert done["state"] == "CANCELLED" and done["discard_output"] is True


def test_a_cancel_that_loses_to_the_jobs_own_end_is_refused(cluster, client, as_user, monkeypatch):
    """The container exits by itself and the worker moves the job to EXPORTING between the
    view's read and its write: the retry finds it exporting its own output."""
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING)
    real, raced = cluster.store.transition, []

    def worker_first(current, new, **kw):
        if not raced:
            raced.append(real(cluster.store.get_job(current.id), S.EXPORTING, outcome="SUCCEEDED"))
        return real(current, new, **kw)

    monkeypatch.setattr(cluster.store, "transition", worker_first)
    resp = client.post(f"/api/v1/jobs/{job.id}/cancel", headers=as_user("alice"))
    assert resp.status_code == 409 and "already finished running" in resp.get_json()["error"]
    assert cluster.store.get_job(job.id).outcome == "SUCCEEDED"


def test_cancel_of_an_ended_job_is_refused(cluster):
    cluster.add_worker()
    with pytest.raises(CannotCancel, match="already ended"):
        cancel(cluster.store, cluster.add_job(state=S.SUCCEEDED), "alice")


# ----- cancel: the janitor --------------------------------------------------------------------------
def test_a_cancel_whose_worker_dies_before_exporting_ends_cancelled_not_lost(cluster):
    cluster.add_worker()
    job = cancel(cluster.store, cluster.add_job(state=S.RUNNING), "alice")
    other = cluster.add_job(state=S.RUNNING)
    cluster.worker_dies()
    assert sweep(cluster.store, WebConfig()) == {"LOST": 1, "FAILED": 0, "CANCELLED": 1}
    done = cluster.store.get_job(job.id)
    assert done.state is S.CANCELLED and done.output_bytes == 0
    assert done.reason == "cancelled by alice; worker w1 went away before it exported what the job wrote, " \
                          "so nothing is kept"
    assert cluster.store.get_job(other.id).state is S.LOST


# ----- cancel: the worker's run ------------------------------------------------------------------
def store_run(tmp_path, cluster, job: Job):
    run = disk_run(tmp_path, [], max_disk_bytes=0)
    run.store, run.job = cluster.store, job
    return run


def test_the_worker_stops_a_cancelled_job_exports_and_records_cancelled(tmp_path, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING, output="none")
    run = store_run(tmp_path, cluster, job)
    cancel(cluster.store, job, "alice")
    run.stop.set()  # what the daemon does when it sees the job EXPORTING
    container = RunningContainer()
    run._run(container)
    assert container.stopped.is_set() and run.ended["exit_code"] == 143
    run._export_and_finish(container)
    done = cluster.store.get_job(job.id)
    assert (done.state, done.exit_code, done.reason) == (S.CANCELLED, 143, "cancelled by alice; keeping what it wrote")
    assert done.finished_at and [h["state"] for h in done.history][-2:] == ["EXPORTING", "CANCELLED"]


def test_a_job_that_ends_by_itself_as_it_is_cancelled_still_exports_as_cancelled(tmp_path, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING, output="none")
    run = store_run(tmp_path, cluster, job)
    cancel(cluster.store, job, "alice")  # the daemon has not told the run yet
    container = RunningContainer()
    threading.Timer(0.2, container.stop, args=(1,)).start()  # the job ends by itself
    run._run(container)  # its own move to EXPORTING loses: it takes the cancel's
    assert run.job.outcome == "CANCELLED"
    run._export_and_finish(container)
    assert cluster.store.get_job(job.id).state is S.CANCELLED


class ExitsContainer(RunningContainer):
    """A container that exits by itself after ``after`` seconds with code 0."""

    def __init__(self, after: float):
        super().__init__()
        self.after = after
        self.stream = FakeStream([b"hello\n"])

    def wait(self):
        if self.stopped.wait(self.after):
            return {"StatusCode": 143}
        self.attrs = {"State": {"ExitCode": 0, "FinishedAt": "2026-01-01T00:00:10Z"}}
        return {"StatusCode": 0}


@pytest.mark.parametrize("timeout_s,state,code", [(60, S.SUCCEEDED, 0), (1, S.TIMED_OUT, 143)])
def test_a_run_with_no_archive_to_make_ends_from_running_in_one_write(tmp_path, cluster, timeout_s, state, code):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING, output="none", timeout_s=timeout_s, started_at=time.time())
    run = store_run(tmp_path, cluster, job)
    revision = job.mod_revision
    run._run(ExitsContainer(after=3))
    done = cluster.store.get_job(job.id)
    assert (done.state, done.outcome, done.exit_code) == (state, state.value, code)
    assert [h["state"] for h in done.history][-2:] == ["RUNNING", state.value]
    assert done.log_bytes == 6 and done.output_bytes == 0 and done.output_expires_at
    assert run.job.mod_revision == done.mod_revision > revision


def test_a_discarding_cancel_stops_the_run_without_export(tmp_path, cluster):
    cluster.add_worker()
    job = cluster.add_job(state=S.RUNNING)
    run = store_run(tmp_path, cluster, job)
    cancel(cluster.store, job, "alice", discard=True)
    container = RunningContainer()
    threading.Timer(0.2, container.stop, args=(1,)).start()
    with pytest.raises(Abort, match="now CANCELLED"):
        run._run(container)
