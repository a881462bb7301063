"""Output modes, partial results of a cancel and the output cap, on real parts (etcd, a worker
with its own userns-remapped dockerd, sshd + gate, gunicorn): a multi-layer image whose job
writes, changes and deletes files, run with every mode; the ``changes`` archive applied to the
image's files gives exactly the job's files."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

import pink_dev as dev
from gpu_worker.outputs import DELETED_LIST

from tests.helpers import TERMINAL, submit_spec, wait_state

pytestmark = pytest.mark.integration

#: The image's layers over busybox (one RUN each), and what the job does to them.
LAYERS = [
    "mkdir -p /srv/old && echo old-a > /srv/old/a && echo kept > /srv/keep",
    "echo v1 > /srv/conf && echo doomed > /srv/gone",
    "mkdir -p /opt/tool && echo tool > /opt/tool/bin",
]
JOB = ("echo v2 > /srv/conf; rm /srv/gone; rm -rf /srv/old; mkdir /srv/old; echo new-b > /srv/old/b; "
       "mkdir -p /out/sub; echo result > /out/r.txt; echo deep > /out/sub/d; ln -s r.txt /out/link; echo done")
SLEEPER = ("trap 'echo got TERM; exit 143' TERM; mkdir -p /out; echo partial > /out/progress.txt; echo started; "
           "while true; do sleep 0.2; done")


def shell(script):
    return {"entrypoint": ["sh", "-c"], "command": [script]}


def build(folder: Path, tag: str, dockerfile: str) -> Path:
    """`docker save` of an image built locally with docker build (no registry)."""
    folder.mkdir()
    (folder / "Dockerfile").write_text(dockerfile)
    subprocess.run(["docker", "build", "-q", "--network", "none", "-t", tag, str(folder)], check=True,
                   capture_output=True)
    out = folder / "image.tar"
    subprocess.run(["docker", "save", "-o", str(out), tag], check=True)
    return out


@pytest.fixture(scope="module")
def layered(images, tmp_path_factory) -> Path:
    """pink-test-writer plus the LAYERS."""
    runs = "".join(f"RUN {step}\n" for step in LAYERS)
    return build(tmp_path_factory.mktemp("layered") / "root", "pink-test-layered:latest",
                 f"FROM pink-test-writer:latest\n{runs}")


@pytest.fixture(scope="module")
def as_user_1000(layered, tmp_path_factory) -> Path:
    """The layered image running as uid 1000, with /out its own."""
    return build(tmp_path_factory.mktemp("layered") / "user", "pink-test-layered-user:latest",
                 "FROM pink-test-layered:latest\nRUN mkdir -p /out && chown 1000:1000 /out\nUSER 1000:1000\n")


class Member(tarfile.TarInfo):
    """A member with its content (``data``) read."""

    data: bytes | None = None


def members(data: bytes) -> dict[str, Member]:
    raw = subprocess.run(["zstd", "-d", "-c"], input=data, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw), tarinfo=Member) as tar:
        found = {}
        for m in tar:
            m.data = tar.extractfile(m).read() if m.isfile() else None
            found[m.name.removeprefix("./").rstrip("/")] = m
        return found


def untar(zstd_tar: bytes, folder: Path) -> None:
    folder.mkdir(exist_ok=True)
    raw = subprocess.run(["zstd", "-d", "-c"], input=zstd_tar, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=raw, check=True)


def tree(folder: Path, under: tuple[str, ...]) -> dict[str, object]:
    """relative name -> content (files), "dir", or "-> target" (symlinks), below ``under``."""
    found = {}
    for top in under:
        for path in [folder / top, *sorted((folder / top).rglob("*"))]:
            name = str(path.relative_to(folder))
            found[name] = f"-> {path.readlink()}" if path.is_symlink() else "dir" if path.is_dir() else path.read_bytes()
    return found


def ended(api, job_id):
    job = wait_state(api, job_id, TERMINAL, timeout=120)
    out = api.get(f"/api/v1/jobs/{job_id}/output")
    return job, out


def test_every_output_mode_on_a_multi_layer_image(cluster, layered, as_user_1000, tmp_path):
    c = cluster(max_parallel_jobs=5)
    api = c.api("alice")
    ids = {}
    for mode in ("full", "changes", "path:/out", "none"):
        r = submit_spec(api, layered, shell(JOB), output=mode, name=mode)
        assert r.status_code == 201, r.text
        ids[mode] = r.json()["job"]["id"]
    # An image whose USER is not root writes its own output directory too.
    r = submit_spec(api, as_user_1000, shell("id -u > /out/uid; echo done"), output="path:/out", name="uid 1000")
    assert r.status_code == 201, r.text
    ids["as 1000"] = r.json()["job"]["id"]
    results = {mode: ended(api, job_id) for mode, job_id in ids.items()}
    for mode, (job, _) in results.items():
        assert job["state"] == "SUCCEEDED", (mode, job)

    full_job, full = results["full"]
    after = members(full.content)
    assert after["srv/conf"].data == b"v2\n" and "srv/gone" not in after and after["srv/keep"].data == b"kept\n"

    # changes: the job's own files, owned as the job saw them (the worker's engine remaps users).
    job, out = results["changes"]
    assert out.status_code == 200 and len(out.content) == job["output_bytes"]
    got = members(out.content)
    # Directories of the image with changes below are not entries of their own. /srv/old was
    # deleted and made again: overlay2's own diff lists the directory as deleted (and its new
    # content), the engine's plain diff its old file a.
    assert set(got) - {"srv/old"} == {"srv/conf", "srv/old/b", "out/r.txt", "out/sub", "out/sub/d", "out/link",
                                      DELETED_LIST}
    deleted = got[DELETED_LIST].data.decode().splitlines()
    assert deleted in (["/srv/gone", "/srv/old"], ["/srv/gone", "/srv/old/a"])
    assert {(n, m.uid, m.gid) for n, m in got.items()} == {(n, 0, 0) for n in got}
    assert job["output_bytes"] < full_job["output_bytes"] / 10
    # Applied to the image's files (deletions first, then the archive), it gives exactly the job's.
    restored, truth = tmp_path / "restored", tmp_path / "truth"
    untar(_export_image(layered), restored)
    for path in got[DELETED_LIST].data.decode().splitlines():
        subprocess.run(["rm", "-rf", str(restored / path.lstrip("/"))], check=True)
    untar(out.content, restored)
    (restored / DELETED_LIST).unlink()
    untar(full.content, truth)
    assert tree(restored, ("srv", "out", "opt", "bin")) == tree(truth, ("srv", "out", "opt", "bin"))
    names = {e["name"]: e for e in job["output_entries"]}
    assert names["/out"] == {"name": "/out", "bytes": 12, "type": "dir"}
    assert names["/srv"]["type"] == "dir" and names["/srv/gone"]["type"] == "deleted"

    # path:/out: only /out, made empty for the job.
    job, out = results["path:/out"]
    untar(out.content, tmp_path / "path")
    assert tree(tmp_path / "path", ("out",)) == {
        "out": "dir", "out/r.txt": b"result\n", "out/sub": "dir", "out/sub/d": b"deep\n", "out/link": "-> r.txt"}
    assert sorted(p.name for p in (tmp_path / "path").iterdir()) == ["out"]
    assert [e["name"] for e in job["output_entries"]] == ["/out/r.txt", "/out/sub", "/out/link"]

    job, out = results["as 1000"]
    got = members(out.content)
    assert got["out/uid"].data == b"1000\n" and got["out/uid"].uid == 1000

    # none: no archive, so no EXPORTING either (one write fewer), and its log is kept.
    job, out = results["none"]
    assert job["output_bytes"] == 0 and out.status_code == 409
    assert [h["state"] for h in job["history"]][-3:] == ["STARTING", "RUNNING", "SUCCEEDED"]
    assert job["log_bytes"] > 0 and job["output_expires_at"]
    for mode in ("full", "changes", "path:/out"):
        assert [h["state"] for h in results[mode][0]["history"]][-2:] == ["EXPORTING", "SUCCEEDED"]


def _export_image(tar: Path) -> bytes:
    """The image's filesystem as a zstd tar (docker export of a container that never ran)."""
    loaded = subprocess.run(["docker", "load", "-q", "-i", str(tar)], check=True, capture_output=True, text=True)
    assert "pink-test-layered" in loaded.stdout
    cid = subprocess.run(["docker", "create", "pink-test-layered:latest"], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        exported = subprocess.run(["docker", "export", cid], check=True, capture_output=True).stdout
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True)
    return subprocess.run(["zstd", "-q", "-c"], input=exported, check=True, capture_output=True).stdout


def test_a_cancel_keeps_what_the_job_wrote_unless_discarded(cluster, layered):
    c = cluster(max_parallel_jobs=2, stop_grace_s=5)
    api = c.api("alice")
    kept, dropped = (submit_spec(api, layered, shell(SLEEPER), output="changes", name=name).json()["job"]["id"]
                     for name in ("kept", "dropped"))
    for job_id in (kept, dropped):
        wait_state(api, job_id, {"RUNNING"})
        dev.wait_until(lambda job_id=job_id: "started" in api.get(f"/api/v1/jobs/{job_id}/logs").text, 30,
                       "the job to write its file")
    r = api.post(f"/api/v1/jobs/{kept}/cancel")
    assert r.status_code == 200 and r.json()["job"]["state"] == "EXPORTING", r.text
    r = api.post(f"/api/v1/jobs/{dropped}/cancel?discard=1")
    assert r.status_code == 200 and r.json()["job"]["state"] == "CANCELLED", r.text
    job, out = ended(api, kept)
    assert job["state"] == "CANCELLED" and job["reason"] == "cancelled by alice; keeping what it wrote", job
    assert job["exit_code"] == 143 and job["output_bytes"] > 0
    assert members(out.content)["out/progress.txt"].data == b"partial\n"
    assert "got TERM" in api.get(f"/api/v1/jobs/{kept}/logs").text
    job, out = ended(api, dropped)
    assert job["state"] == "CANCELLED" and job["discard_output"] is True and job["output_bytes"] == 0
    assert out.status_code == 409 and "its cancel threw what it wrote away" in out.json()["error"]
    dev.wait_until(lambda: not list(c.workers[0].outbox.glob(f"{dropped}.tar*")), 30, "no archive of the discarded job")


@pytest.mark.parametrize("mode", ["changes", "path:/out"])
def test_the_output_cap_holds_for_every_mode(cluster, layered, mode):
    c = cluster(max_output_bytes=1 << 20)  # the least the config takes
    api = c.api("alice")
    script = "mkdir -p /out; head -c 3000000 /dev/urandom > /out/big; echo wrote"
    job_id = submit_spec(api, layered, shell(script), output=mode).json()["job"]["id"]
    job, out = ended(api, job_id)
    assert job["state"] == "FAILED" and job["exit_code"] == 0, job
    assert job["reason"] == ("the output passed the cap of 1048576 bytes (worker.max_output_bytes): "
                             "write less, or ask the operators")
    assert job["output_bytes"] == 0 and out.status_code == 409
    assert not list(c.workers[0].outbox.glob(f"{job_id}.tar*"))
