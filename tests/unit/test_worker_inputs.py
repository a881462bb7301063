"""The worker's side of inputs (gpu_worker.inputs): extraction with the same safety rules as
the web server's check and a hash check, one extraction per input, and the sweep that deletes
inputs after their retention, with their record, and files nobody records."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import time
from pathlib import Path

import pytest

from gpu_worker.inputs import LEFTOVER_S, InputError, Inputs, extract
from pink.config import WorkerConfig
from pink.states import JobState
from tests.unit.test_dockertar import M, make_tar

pytestmark = pytest.mark.unit

DAY = 86400.0
FOLDER = [
    M(".", kind="dir"), M("data/train.csv", b"1,2\n" * 50), M("data/same.csv", kind="hardlink", link="data/train.csv"),
    M("latest", kind="symlink", link="data/train.csv"), M("data/up", kind="symlink", link="../latest"),
    M("run.sh", b"#!/bin/sh\necho hi\n"),
]


def input_id(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


@pytest.fixture
def inputs(tmp_path) -> Inputs:
    cfg = WorkerConfig(name="w1", inbox=str(tmp_path / "inbox"), inputs_dir=str(tmp_path / "inputs"),
                       input_retention_days=7)
    for folder in (cfg.inbox, cfg.inputs_dir):
        Path(folder).mkdir()
    return Inputs(cfg)


def put(inputs: Inputs, data: bytes) -> str:
    """An input as a web server leaves it in the inbox; returns its id."""
    ident = input_id(data)
    inputs.tar_path(ident[7:]).write_bytes(data)
    return ident


def test_an_input_is_extracted_once_with_its_links_and_readable_modes(inputs):
    ident = put(inputs, make_tar(FOLDER))
    folder = inputs.folder(ident)
    assert folder == inputs.root / ident[7:]
    assert (folder / "data/train.csv").read_bytes() == b"1,2\n" * 50
    assert os.stat(folder / "data/same.csv").st_ino == os.stat(folder / "data/train.csv").st_ino
    assert os.readlink(folder / "latest") == "data/train.csv"
    assert (folder / "data/up").read_bytes() == b"1,2\n" * 50
    # Any user a job runs as can read it; the folders PINK made for members too (data/).
    assert {stat.S_IMODE(os.stat(p).st_mode) for p in (folder, folder / "data")} == {0o755}
    assert stat.S_IMODE(os.stat(folder / "run.sh").st_mode) == 0o644
    assert not inputs.tar_path(ident[7:]).exists()  # the tar is gone: jobs use the folder
    assert inputs.folder(ident) == folder  # the next job finds it


def test_jobs_of_one_input_share_one_extraction(inputs):
    ident = put(inputs, make_tar(FOLDER))
    found: list[Path] = []
    threads = [threading.Thread(target=lambda: found.append(inputs.folder(ident))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(found) == 4 and len(set(found)) == 1
    assert os.listdir(inputs.root) == [ident[7:]]


@pytest.mark.parametrize(("member", "message"), [
    (M("../evil", b"x"), "unsafe member '../evil'"),
    (M("/etc/evil", b"x"), "unsafe member '/etc/evil'"),
    (M("out", kind="symlink", link="/etc/passwd"), "unsafe member 'out'"),
    (M("out", kind="symlink", link="../../etc"), "'out' would link to .* outside the destination"),
    (M("hl", kind="hardlink", link="../x"), "unsafe member 'hl'"),
    (M("dev/sda", kind="chr"), "dev/sda"),
])
def test_extraction_refuses_what_the_web_server_refuses(tmp_path, member, message):
    data = make_tar([*FOLDER, member])
    (tmp_path / "in.tar").write_bytes(data)
    with pytest.raises(InputError, match=message):
        extract(tmp_path / "in.tar", tmp_path / "out", input_id(data))
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]  # nothing half extracted
    assert not Path("/etc/evil").exists()


def test_bytes_that_are_not_the_input_are_refused(tmp_path):
    (tmp_path / "in.tar").write_bytes(make_tar(FOLDER))
    with pytest.raises(InputError, match="is not input sha256:0000"):
        extract(tmp_path / "in.tar", tmp_path / "out", "sha256:" + "0" * 64)
    assert sorted(os.listdir(tmp_path)) == ["in.tar"]


def test_an_input_that_is_gone_says_so(inputs):
    with pytest.raises(InputError, match="no longer on worker w1; upload it again"):
        inputs.folder("sha256:" + "ef" * 32)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_the_sweep_deletes_inputs_unused_for_the_retention_with_their_record(inputs, cluster):
    cluster.add_worker("w1")
    old, fresh, used = (put(inputs, make_tar([M(name, name.encode())])) for name in ("old", "fresh", "used"))
    for ident in (old, fresh, used):
        cluster.store.record_input("w1", ident, 10, "alice", now=time.time() - 8 * DAY)
    inputs.folder(old), inputs.folder(used)
    _age(inputs.root / old[7:], 8 * DAY)
    _age(inputs.root / used[7:], 8 * DAY)
    cluster.add_job(state=JobState.QUEUED, input=used)  # a job waits for it
    now = time.time()
    _age(inputs.tar_path(fresh[7:]), DAY)  # uploaded a day ago, not extracted yet: kept
    inputs.sweep(cluster.store, now)
    assert sorted(r.input_id for r in cluster.store.inputs_on("w1")) == sorted([fresh, used])
    assert not (inputs.root / old[7:]).exists()
    assert (inputs.root / used[7:]).is_dir() and inputs.tar_path(fresh[7:]).is_file()


def test_the_sweep_forgets_an_input_whose_files_are_gone(inputs, cluster):
    cluster.add_worker("w1")
    cluster.store.record_input("w1", "sha256:" + "12" * 32, 10, "alice")
    inputs.sweep(cluster.store)
    assert cluster.store.inputs_on("w1") == []


def test_a_retention_of_0_keeps_inputs(inputs, cluster, tmp_path):
    cluster.add_worker("w1")
    keep = Inputs(WorkerConfig(name="w1", inbox=str(inputs.inbox), inputs_dir=str(inputs.root),
                               input_retention_days=0))
    ident = put(keep, make_tar(FOLDER))
    cluster.store.record_input("w1", ident, 10, "alice", now=0.0)
    _age(keep.tar_path(ident[7:]), 400 * DAY)
    keep.sweep(cluster.store)
    assert keep.tar_path(ident[7:]).exists() and len(cluster.store.inputs_on("w1")) == 1


def test_the_sweep_removes_what_no_record_keeps_once_untouched(inputs, cluster):
    cluster.add_worker("w1")
    recorded = put(inputs, make_tar(FOLDER))
    cluster.store.record_input("w1", recorded, 10, "alice")
    inputs.folder(recorded)
    again = inputs.tar_path(recorded[7:])
    again.write_bytes(b"uploaded again by another user")  # the folder has it already
    stale_part, fresh_part = inputs.inbox / f"input-{'a' * 20}.part", inputs.inbox / f"input-{'b' * 20}.part"
    orphan_tar, orphan_folder = inputs.tar_path("c" * 64), inputs.root / ("d" * 64)
    cut_short, job_file = inputs.root / f".{'e' * 64}.x1y2", inputs.inbox / "0123456789abcdef0123.tar"
    for path in (stale_part, fresh_part, orphan_tar, job_file):
        path.write_bytes(b"x")
    orphan_folder.mkdir()
    cut_short.mkdir()
    for path in (stale_part, orphan_tar, orphan_folder, cut_short, job_file):
        _age(path, LEFTOVER_S + 60)
    inputs.sweep(cluster.store)
    assert sorted(p.name for p in inputs.inbox.iterdir()) == sorted([fresh_part.name, job_file.name])
    assert os.listdir(inputs.root) == [recorded[7:]]
