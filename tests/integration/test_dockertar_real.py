"""The validator against real `docker save` output (needs a running dockerd; CI starts one)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from webapp.upload import ImageArchiveChecker, ImageInfo, Unpacking, ValidatingReader
from pink_dev.sampleimage import build_sample_image

pytestmark = pytest.mark.integration


def docker(*args: str) -> str:
    try:
        proc = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    except FileNotFoundError:
        pytest.fail("the docker CLI is not installed; these tests need it and a running dockerd")
    if proc.returncode != 0:
        pytest.fail(f"`docker {' '.join(args)}` failed: {proc.stderr.strip()}")
    return proc.stdout.strip()


@pytest.fixture(scope="module")
def dockerd() -> str:
    # Fail, never skip: a silently skipped test would hide a broken CI setup.
    return docker("version", "--format", "{{.Server.Version}}")


@pytest.fixture
def tag(dockerd: str) -> Iterator[str]:
    name = f"pink-test-dockertar:{uuid.uuid4().hex[:12]}"
    yield name
    subprocess.run(["docker", "rmi", "-f", name], capture_output=True, check=False)


def check_file(path: Path, chunk: int = 1 << 20) -> ImageInfo:
    checker = ImageArchiveChecker()
    with path.open("rb") as f:
        while block := f.read(chunk):
            checker.feed(block)
    return checker.finish()


def test_sample_image_archive_validates(tmp_path: Path, tag: str) -> None:
    out = tmp_path / "sample.tar"
    image_id = build_sample_image(tag, "echo hello from pink > /out/hello.txt", out)
    inspected = docker("image", "inspect", "--format", "{{.Id}}", tag)
    assert image_id == inspected

    info = check_file(out)
    assert info.config_digest == inspected
    assert info.repo_tags == (tag,)
    assert info.total_bytes == out.stat().st_size
    layers = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}", tag))
    assert list(info.diff_ids) == layers
    assert info.missing_layers == ()

    with out.open("rb") as f:
        reader = ValidatingReader(f, out.stat().st_size, chunk_size=64 << 10)
        copied = hashlib.sha256()
        while reader.tell() < out.stat().st_size:
            copied.update(reader.read(32 << 10))
    assert copied.hexdigest() == hashlib.sha256(out.read_bytes()).hexdigest()
    assert reader.info == info


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_repeated_layer_archive_from_docker_validates(tmp_path: Path, tag: str) -> None:
    # An image whose two layers are identical: Docker <= 24 saves the second as a symlink
    # to the first, Docker >= 25 lists the same blob twice. Load a crafted one, save it back.
    lay = _tar({"hello.txt": b"hello\n"})
    diff_id = "sha256:" + hashlib.sha256(lay).hexdigest()
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id, diff_id]},
    }).encode()
    cfg_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": cfg_name, "RepoTags": [tag], "Layers": ["a/layer.tar", "b/layer.tar"]}]
    crafted = tmp_path / "crafted.tar"
    crafted.write_bytes(_tar({
        "a/layer.tar": lay, "b/layer.tar": lay, cfg_name: config,
        "manifest.json": json.dumps(manifest).encode(),
    }))
    docker("load", "-i", str(crafted))
    saved = tmp_path / "saved.tar"
    docker("save", "-o", str(saved), tag)

    info = check_file(saved, chunk=7 * 1024)
    assert info.config_digest == docker("image", "inspect", "--format", "{{.Id}}", tag)
    assert info.diff_ids == (diff_id, diff_id)
    with tarfile.open(saved) as tar:
        links = [m.name for m in tar.getmembers() if m.issym()]
    first, second = info.layer_paths
    if first.endswith("/layer.tar"):
        assert second in links, f"expected Docker's layer symlink, members with links: {links}"
    else:
        assert first == second


@pytest.mark.parametrize("compress", [None, ["gzip", "-c"], ["zstd", "-q", "-c"]])
def test_what_docker_load_accepts_gets_the_id_docker_gives_it(tmp_path: Path, tag: str, compress) -> None:
    # A config not named after its digest (as other tools write them), the manifest first, and
    # the whole archive compressed: `docker load` takes it, and so does PINK, with the same id.
    lay = _tar({"hello.txt": b"hello\n"})
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(lay).hexdigest()]}}).encode()
    other = "0" * 64 + ".json"
    manifest = [{"Config": other, "RepoTags": [tag], "Layers": ["a/layer.tar"]}]
    plain = data = _tar({"manifest.json": json.dumps(manifest).encode(), other: config, "a/layer.tar": lay})
    if compress:
        data = subprocess.run(compress, input=data, capture_output=True, check=True).stdout
    archive = tmp_path / "other-tool.tar"
    # Docker before 23 cannot load zstd ("unexpected EOF"): the worker decompresses every
    # archive on the way to its engine, so its engine's version does not matter.
    archive.write_bytes(plain if compress and compress[0] == "zstd" else data)
    docker("load", "-i", str(archive))
    checker = Unpacking()
    for i in range(0, len(data), 1000):
        checker.feed(data[i:i + 1000])
    info = checker.finish()
    assert info.config_digest == docker("image", "inspect", "--format", "{{.Id}}", tag)
    assert info.config_digest == "sha256:" + hashlib.sha256(config).hexdigest()
