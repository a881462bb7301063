"""Compressed ``docker save`` archives end to end on real parts: gzip and zstd uploads (made by the
real gzip and zstd commands) run on a worker's userns-remapped engine; a truncated one and a
decompression bomb are refused and leave nothing in the worker's inbox."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile

import pytest

from tests.helpers import TERMINAL, archive_members, submit, wait_state

pytestmark = pytest.mark.integration


def compressed(src, dest, *command):
    with open(src, "rb") as f, open(dest, "wb") as out:
        subprocess.run(command, stdin=f, stdout=out, check=True)
    return dest


def bomb_archive(path, plain_bytes):
    """A `docker save`-shaped tar (manifest first) whose one layer is ``plain_bytes`` of zeros,
    gzip-compressed to a few hundred kB."""
    with gzip.open(path, "wb", compresslevel=9) as f, tarfile.open(fileobj=f, mode="w|") as tar:
        info = tarfile.TarInfo("manifest.json")
        manifest = b'[{"Config":"c.json","Layers":["l/layer.tar"]}]'
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        info = tarfile.TarInfo("l/layer.tar")
        info.size = plain_bytes
        tar.addfile(info, io.BytesIO(bytes(plain_bytes)))
    return path


def test_gzip_and_zstd_archives_run_and_broken_ones_leave_nothing(cluster, images, tmp_path):
    plain = images["writer"]
    cap = 4 * plain.stat().st_size
    c = cluster(web_overrides={"quota_upload_bytes": cap})
    api = c.api("alice")
    inbox = c.workers[0].inbox

    gz = compressed(plain, tmp_path / "writer.tar.gz", "gzip", "-c")
    zst = compressed(plain, tmp_path / "writer.tar.zst", "zstd", "-q", "-c")
    ids = {}
    for path in (gz, zst):
        r = submit(api, path, timeout=60)
        assert r.status_code == 201, r.text
        ids[path.name] = r.json()["job"]["id"]
    for name, job_id in ids.items():
        job = wait_state(api, job_id, TERMINAL)
        assert job["state"] == "SUCCEEDED", (name, job)
        assert job["image_bytes"] == (tmp_path / name).stat().st_size  # the bytes sent
        out = api.get(f"/api/v1/jobs/{job_id}/output").content
        assert archive_members(out)["out/result.txt"] == b"result-42\n"
    # The same image whatever the compression: the id of the config inside.
    jobs = [api.get(f"/api/v1/jobs/{i}").json()["job"] for i in ids.values()]
    assert jobs[0]["image_id"] == jobs[1]["image_id"]

    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gz.read_bytes()[:-10])
    r = submit(api, cut)
    assert r.status_code == 400 and "gzip stream is truncated" in r.json()["error"], r.text
    bomb = bomb_archive(tmp_path / "bomb.tar.gz", cap + (64 << 20))
    assert bomb.stat().st_size < cap
    r = submit(api, bomb)
    assert r.status_code == 413 and "once decompressed" in r.json()["error"], r.text
    assert not list(inbox.iterdir())
