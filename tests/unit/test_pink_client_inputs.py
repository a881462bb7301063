"""`pink submit --input PATH` against the fake API (tests/unit/fakeapi.py): the deterministic
tar of a file or folder, hashed in one pass and streamed in a second one only when no worker
holds it, symlinks and hardlinks kept, the job submitted with ``input=``."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from pink_client import main as cli
from pink_client.inputs import InputArchive
from pink_client.output import Ui
from tests.unit.fakeapi import Fake, make_image_tar

pytestmark = pytest.mark.usefixtures("cli_env")

MTIME = 1_700_000_123


def make_folder(root: Path) -> Path:
    """Files, an empty and a nested folder, a relative symlink and a hardlink, fixed mtimes."""
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "b.txt").write_text("bee\n")
    (root / "a.txt").write_text("ay\n")
    (root / "sub" / "data.bin").write_bytes(os.urandom(3000))
    (root / "sub" / "deeper" / "z").write_text("zed\n")
    os.link(root / "a.txt", root / "sub" / "a-again.txt")
    (root / "sub" / "to-b").symlink_to("../b.txt")
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o4755)  # setuid: not carried into the archive
    for path in [root, *root.rglob("*")]:
        os.utime(path, (MTIME, MTIME), follow_symlinks=False)
    return root


def held_image(fake: Fake, tmp_path: Path) -> Path:
    tar = tmp_path / "img.tar"
    fake.images[make_image_tar(tar, layer_size=1000)] = ["gpu1"]
    return tar


def archive_bytes(path: Path) -> bytes:
    return b"".join(InputArchive(path).blocks())


# ------------------------------------------------------------------------------ the archive


def test_the_archive_is_what_tarfile_writes_with_links_kept_and_owners_dropped(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "in")
    data = archive_bytes(folder)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
        assert [m.name for m in members] == [
            "a.txt", "b.txt", "empty", "run.sh", "sub", "sub/a-again.txt", "sub/data.bin", "sub/deeper",
            "sub/deeper/z", "sub/to-b"]
        by_name = {m.name: m for m in members}
        assert by_name["sub/a-again.txt"].islnk() and by_name["sub/a-again.txt"].linkname == "a.txt"
        assert by_name["sub/to-b"].issym() and by_name["sub/to-b"].linkname == "../b.txt"
        assert by_name["empty"].isdir() and by_name["sub/deeper"].isdir()
        assert by_name["run.sh"].mode == 0o755
        assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
        assert {m.mtime for m in members} == {MTIME}
        assert tf.extractfile("sub/data.bin").read() == (folder / "sub" / "data.bin").read_bytes()
    assert len(data) % tarfile.RECORDSIZE == 0 and len(data) == InputArchive(folder).size
    # Byte for byte what Python's tarfile writes for the same members (PAX format).
    expected = io.BytesIO()
    with tarfile.open(fileobj=expected, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, source in InputArchive(folder).members:
            tf.addfile(info, io.BytesIO(Path(source).read_bytes()) if source else None)
    assert data == expected.getvalue()


def test_the_same_folder_gives_the_same_id_twice_and_so_does_a_copy(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "in")
    ui = Ui(quiet=True)
    first = InputArchive(folder).digest(ui)
    assert InputArchive(folder).digest(ui) == first
    assert first == "sha256:" + hashlib.sha256(archive_bytes(folder)).hexdigest()
    subprocess.run(["cp", "-a", str(folder), str(tmp_path / "copy")], check=True)  # keeps hardlinks
    os.utime(tmp_path / "copy" / "a.txt", (MTIME + 999, MTIME))  # a read (atime) changes nothing
    assert InputArchive(tmp_path / "copy").digest(ui) == first
    os.utime(tmp_path / "copy" / "a.txt", (MTIME, MTIME + 1))  # a newer mtime is another input
    assert InputArchive(tmp_path / "copy").digest(ui) != first


def test_names_beyond_ustar_take_pax_records(tmp_path: Path) -> None:
    deep = tmp_path / "in" / ("d" * 90) / ("é" * 40)
    deep.mkdir(parents=True)
    (deep / "f").write_text("x")
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(tmp_path / "in"))) as tf:
        assert tf.getnames()[-1] == f"{'d' * 90}/{'é' * 40}/f"
        assert tf.extractfile(tf.getnames()[-1]).read() == b"x"


# ------------------------------------------------------------------------------- submit


def test_submit_uploads_the_input_with_the_job_placement_then_submits_with_input(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = tmp_path / "img.tar"
    image_id = make_image_tar(tar, layer_size=1000)
    folder = make_folder(tmp_path / "in")
    rc = cli.main(["submit", str(tar), "--input", str(folder), "--gpus", "2", "--data", "imagenet",
                   "--data", "coco", "--cpus", "4", "--memory", "16g"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    input_id = "sha256:" + hashlib.sha256(archive_bytes(folder)).hexdigest()
    [upload] = logged_in.input_uploads
    placement = {"gpus": "2", "data": "imagenet,coco", "cpus": "4.0", "memory": "16g", "image": image_id}
    assert upload.params == {**placement, "sha256": input_id}
    assert upload.body == archive_bytes(folder) and upload.headers["Content-Length"] == str(len(upload.body))
    assert "Transfer-Encoding" not in upload.headers
    gets = [p for m, p, _ in logged_in.requests if m == "GET" and p.startswith("/api/v1/inputs/")]
    assert len(gets) == 1 and all(f"{k}=" in gets[0] for k in placement)
    [job_upload] = logged_in.uploads
    assert job_upload.params["input"] == input_id
    assert logged_in.jobs[out.strip()]["input"] == input_id
    assert f"input {input_id}" in err and "stored on worker gpu1" in err


def test_a_held_input_sends_zero_bytes_and_the_same_folder_the_same_id(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = held_image(logged_in, tmp_path)
    folder = make_folder(tmp_path / "in")
    assert cli.main(["submit", str(tar), "--input", str(folder)]) == 0
    assert len(logged_in.input_uploads) == 1
    capsys.readouterr()
    assert cli.main(["submit", str(tar), "--input", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "input already on worker gpu1: 0 bytes sent" in err
    assert "image already on worker gpu1: 0 bytes sent" in err
    assert len(logged_in.input_uploads) == 1  # nothing more was sent
    first, second = logged_in.uploads
    assert first.params["input"] == second.params["input"] and second.body == b""


def test_a_file_input_is_one_member_named_after_the_file(logged_in: Fake, tmp_path: Path) -> None:
    tar = held_image(logged_in, tmp_path)
    (tmp_path / "weights.pt").write_bytes(b"w" * 5000)
    assert cli.main(["submit", str(tar), "--input", "weights.pt"]) == 0
    with tarfile.open(fileobj=io.BytesIO(logged_in.input_uploads[0].body)) as tf:
        assert tf.getnames() == ["weights.pt"]
        assert tf.extractfile("weights.pt").read() == b"w" * 5000


def test_the_upload_streams_from_the_files_without_a_temporary_copy(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = held_image(logged_in, tmp_path)
    folder = make_folder(tmp_path / "in")
    big = 48 << 20
    with open(folder / "big.bin", "wb") as f:
        f.truncate(big)  # sparse: quick to make, read back as 48 MiB of zeros
    logged_in.keep_input_bytes = 0

    def no_temp_files(*args: object, **kwargs: object) -> None:
        raise AssertionError("the CLI made a temporary file")

    for name in ("mkstemp", "mkdtemp", "TemporaryFile", "NamedTemporaryFile", "SpooledTemporaryFile",
                 "TemporaryDirectory"):
        monkeypatch.setattr(tempfile, name, no_temp_files)
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    before = sorted(p.name for p in tmp_path.iterdir())
    tracemalloc.start()
    try:
        rc = cli.main(["submit", str(tar), "--input", str(folder)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rc == 0, capsys.readouterr().err
    [upload] = logged_in.input_uploads
    assert upload.complete and upload.received == int(upload.headers["Content-Length"]) > big
    assert upload.params["sha256"] == logged_in.uploads[0].params["input"]
    assert peak < 12 << 20, f"peak Python memory {peak} B for a {big} B input"
    assert sorted(p.name for p in tmp_path.iterdir()) == before and not list(tmpdir.iterdir())


def test_a_dropped_input_upload_is_sent_again(logged_in: Fake, tmp_path: Path) -> None:
    tar = held_image(logged_in, tmp_path)
    folder = make_folder(tmp_path / "in")
    logged_in.drop_uploads = 1
    assert cli.main(["submit", str(tar), "--input", str(folder)]) == 0
    dropped, sent = logged_in.input_uploads
    assert not dropped.complete and sent.complete and sent.body == archive_bytes(folder)


def test_a_file_that_changes_between_the_passes_is_not_sent_as_something_else(
    logged_in: Fake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tar = held_image(logged_in, tmp_path)
    folder = make_folder(tmp_path / "in")
    digest = InputArchive.digest

    def digest_then(change: bytes):
        def run(self: InputArchive, ui: Ui) -> str:
            input_id = digest(self, ui)
            (folder / "b.txt").write_bytes(change)
            return input_id
        return run

    # The same size, other bytes: the server finds another sha256 and refuses it.
    monkeypatch.setattr(InputArchive, "digest", digest_then(b"BEE\n"))
    assert cli.main(["submit", str(tar), "--input", str(folder)]) == 5
    assert "the input's sha256 is" in capsys.readouterr().err
    # Shorter: the CLI stops before it sends fewer bytes than it announced.
    monkeypatch.setattr(InputArchive, "digest", digest_then(b"b"))
    assert cli.main(["submit", str(tar), "--input", str(folder)]) == 2
    assert "changed size while it was being sent" in capsys.readouterr().err
    assert logged_in.uploads == [] and not logged_in.inputs


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: (d / "out").symlink_to("/etc/passwd"), "is a symlink to /etc/passwd, outside"),
    (lambda d: (d / "sub" / "up").symlink_to("../../x"), "is a symlink to ../../x, outside"),
    (lambda d: os.mkfifo(d / "fifo"), "is not a file, folder or symlink"),
    (lambda d: None, "missing: No such file or directory"),
])
def test_what_a_job_could_not_see_is_a_usage_error_before_anything_is_sent(
    logged_in: Fake, tmp_path: Path, capsys: pytest.CaptureFixture[str], make, message: str
) -> None:
    tar = held_image(logged_in, tmp_path)
    folder = make_folder(tmp_path / "in")
    make(folder)
    path = folder if "missing" not in message else tmp_path / "missing"
    assert cli.main(["submit", str(tar), "--input", str(path)]) == 2
    assert message in capsys.readouterr().err
    assert logged_in.requests == []


def test_status_shows_the_input(logged_in: Fake, capsys: pytest.CaptureFixture[str]) -> None:
    input_id = "sha256:" + "ab" * 32
    job = logged_in.add_job(input=input_id, cpus=0, datasets=[])
    assert cli.main(["status", job["id"]]) == 0
    assert re.search(rf"^input +{input_id} \(/in\)$", capsys.readouterr().out, re.M)
