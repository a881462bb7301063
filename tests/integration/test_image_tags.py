"""An upload cannot retag the worker engine's images: the archive's RepoTags and `repositories`
file name a tag the engine already has, and after the job that tag still points where it did."""

from __future__ import annotations

import contextlib
import io
import json
import tarfile

import docker
import pytest

from pink_dev.sampleimage import build_sample_image

from tests.helpers import TERMINAL, submit, wait_state

pytestmark = pytest.mark.integration


def _retagged(archive: bytes, tag: str) -> bytes:
    """The same `docker save` archive, its manifest naming ``tag`` and a `repositories` file added."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member) if member.isfile() else None
            if member.name == "manifest.json":
                manifest = json.load(data)
                manifest[0]["RepoTags"] = [tag]
                raw = json.dumps(manifest).encode()
                member.size, data = len(raw), io.BytesIO(raw)
            if member.name != "repositories":
                dst.addfile(member, data)
        name, _, version = tag.partition(":")
        raw = json.dumps({name: {version: "x" * 64}}).encode()
        info = tarfile.TarInfo("repositories")
        info.size = len(raw)
        dst.addfile(info, io.BytesIO(raw))
    return out.getvalue()


def test_an_uploaded_archive_cannot_move_a_tag_of_the_workers_engine(cluster, tmp_path):
    c = cluster()
    engine_url = c.workers[0].docker_url
    victim = build_sample_image("pink-victim:latest", "echo the operator's image", docker_host=engine_url)
    evil_tar = tmp_path / "evil.tar"
    evil = build_sample_image("pink-evil:latest", "echo user code", evil_tar, docker_host=engine_url)
    with contextlib.closing(docker.DockerClient(base_url=engine_url)) as engine:
        engine.images.remove(evil, force=True)  # the worker must load it from the upload
        upload = tmp_path / "retagging.tar"
        upload.write_bytes(_retagged(evil_tar.read_bytes(), "pink-victim:latest"))
        api = c.api("alice")
        job = wait_state(api, submit(api, upload).json()["job"]["id"], TERMINAL)
        assert job["state"] == "SUCCEEDED", job
        assert job["image_id"] == evil
        assert engine.images.get("pink-victim:latest").id == victim
        assert engine.images.get(evil).tags == []
