"""The worker strips every tag from an archive before ``docker load`` (tar re-framed as it
streams): RepoTags, the legacy ``repositories`` file and OCI image-name annotations."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from gpu_worker.untag import without_tags

pytestmark = pytest.mark.unit


def _archive(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return out.getvalue()


def _read(data: bytes) -> dict[str, tarfile.TarInfo | bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            out[m.name] = tar.extractfile(m).read() if m.isfile() else m
    return out


@pytest.mark.parametrize("chunk", [1, 7, 512, 1 << 20])
def test_tags_go_and_everything_else_stays_byte_for_byte(chunk):
    layer = bytes(range(256)) * 4099  # not a multiple of 512
    manifest = [{"Config": "c.json", "RepoTags": ["victim/app:latest"], "Layers": ["l1/layer.tar", "l2/layer.tar"]}]
    index = {"schemaVersion": 2, "manifests": [{"digest": "sha256:" + "1" * 64, "annotations": {
        "io.containerd.image.name": "victim/app:latest", "org.opencontainers.image.ref.name": "latest",
        "keep": "me"}}]}
    archive = _archive({"l1/layer.tar": layer, "c.json": b'{"rootfs": {}}', "manifest.json": json.dumps(manifest).encode(),
                        "index.json": json.dumps(index).encode(), "repositories": b'{"victim/app": {"latest": "x"}}',
                        "x" * 150 + "/long-name.txt": b"long"},
                       links={"l2/layer.tar": "../l1/layer.tar"})
    pieces = [archive[i:i + chunk] for i in range(0, len(archive), chunk)]
    out = _read(b"".join(without_tags(pieces)))
    assert "repositories" not in out
    assert json.loads(out["manifest.json"]) == [{**manifest[0], "RepoTags": None}]
    assert json.loads(out["index.json"])["manifests"][0]["annotations"] == {"keep": "me"}
    assert out["l1/layer.tar"] == layer and out["c.json"] == b'{"rootfs": {}}'
    assert out["x" * 150 + "/long-name.txt"] == b"long"
    assert out["l2/layer.tar"].linkname == "../l1/layer.tar"


def test_a_truncated_archive_fails_rather_than_loading_a_part():
    archive = _archive({"l1/layer.tar": b"y" * 5000, "manifest.json": b"[]"})
    with pytest.raises(tarfile.ReadError):
        list(without_tags([archive[:3000]]))
