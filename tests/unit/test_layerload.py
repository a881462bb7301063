"""Layer-pipelined loading (gpu_worker.layerload, gpu_worker.preload) against a fake engine, and
the CLI's upload order (pink_client.archive.ImageArchive.upload_ranges)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gpu_worker.layerload import PARTIAL_LABEL, LayerChain, is_partial, partial_config, remove_partials, thin_archive
from gpu_worker.preload import Preload
from pink.layers import chain_ids
from pink.states import JobState
from pink_client.archive import read_image_archive
from tests.unit.fakeapi import make_layered_tar


class FakeImages:
    """``docker load`` of a thin archive: checks what a 20.10 engine checks (each layer present
    or its chain held; the layer matches its diff_id) and keeps images and their chains."""

    def __init__(self) -> None:
        self.images: dict[str, dict] = {}  # id -> config
        self.loads: list[list[int]] = []  # per load: the layer indexes it carried
        self.removed: list[str] = []

    def chains(self) -> set[str]:
        return {c for config in self.images.values() for c in chain_ids(config["rootfs"]["diff_ids"])}

    def load(self, chunks) -> list:
        data = b"".join(chunks)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        entry = json.loads(files["manifest.json"])[0]
        assert entry["RepoTags"] is None
        raw = files[entry["Config"]]
        config = json.loads(raw)
        diff_ids = config["rootfs"]["diff_ids"]
        carried = []
        for i, (path, chain) in enumerate(zip(entry["Layers"], chain_ids(diff_ids))):
            if path in files:
                assert "sha256:" + hashlib.sha256(files[path]).hexdigest() == diff_ids[i], "layer mismatch"
                carried.append(i)
            else:
                assert chain in self.chains(), f"layer {i} missing and not held"
        image_id = "sha256:" + hashlib.sha256(raw).hexdigest()
        self.images[image_id] = config
        self.loads.append(carried)
        return [SimpleNamespace(id=image_id)]

    def remove(self, image_id: str, force: bool = False) -> None:
        self.removed.append(image_id)
        self.images.pop(image_id)

    def list(self, all: bool = False, filters: dict | None = None) -> list:  # noqa: A002 - docker-py's name
        return [SimpleNamespace(id=i) for i, c in self.images.items()
                if PARTIAL_LABEL in (c.get("config") or {}).get("Labels", {})]


@pytest.fixture
def engine():
    return SimpleNamespace(images=FakeImages())


def _reordered(src: Path, dest: Path, omit: int = 0) -> None:
    """The bytes the CLI sends, in its order."""
    archive = read_image_archive(src)
    raw = src.read_bytes()
    dest.write_bytes(b"".join(raw[a:b] for a, b in archive.upload_ranges(omit)))


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name for m in tar]


def test_partial_config_keeps_only_the_platform_the_layers_and_a_label():
    config = {"architecture": "arm64", "variant": "v8", "os": "linux", "config": {"Cmd": ["evil"], "Env": ["A=1"]},
              "history": [{}], "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64, "sha256:" + "b" * 64]}}
    doc = json.loads(partial_config(config, config["rootfs"]["diff_ids"][:1], "job1 xyz"))
    assert doc == {"architecture": "arm64", "variant": "v8", "os": "linux",
                   "config": {"Labels": {PARTIAL_LABEL: "job1 xyz"}},
                   "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}}
    assert is_partial({"Config": {"Labels": doc["config"]["Labels"]}})
    assert not is_partial({"Config": {"Labels": None}}) and not is_partial({})


def test_thin_archive_holds_only_the_given_layers_under_names_the_worker_chose(tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 100 + b"LAYER" + b"y" * 7)
    with tarfile.open(fileobj=io.BytesIO(b"".join(thin_archive(b"{}", 3, {1: (blob, 100, 5)})))) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar}
    assert set(files) == {"config.json", "1/layer.tar", "manifest.json"}
    assert files["1/layer.tar"] == b"LAYER"
    assert json.loads(files["manifest.json"]) == [
        {"Config": "config.json", "RepoTags": None, "Layers": ["0/layer.tar", "1/layer.tar", "2/layer.tar"]}]


def test_upload_ranges_send_metadata_first_then_layers_bottom_first(tmp_path):
    src, sent = tmp_path / "image.tar", tmp_path / "sent.tar"
    make_layered_tar(src, [3000, 700, 5000])
    archive = read_image_archive(src)
    _reordered(src, sent)
    assert sent.stat().st_size == src.stat().st_size
    names = _members(sent)
    assert sorted(names) == sorted(_members(src))
    with tarfile.open(src) as tar:
        layers = json.loads(tar.extractfile("manifest.json").read())[0]["Layers"]
    assert [n for n in names if n.endswith("layer.tar")] == layers  # bottom first
    assert names.index("manifest.json") < names.index(layers[0])
    # A thin upload: the same bytes as before, in the new order.
    thin = archive.upload_ranges(1)
    assert sum(b - a for a, b in thin) == sum(b - a for a, b in archive.thin_ranges(1))
    raw = src.read_bytes()
    (tmp_path / "thin.tar").write_bytes(b"".join(raw[a:b] for a, b in thin))
    assert [n for n in _members(tmp_path / "thin.tar") if n.endswith("layer.tar")] == layers[1:]


def _feed(chain: LayerChain, path: Path, until: int | None = None) -> None:
    """What Preload does with each complete member."""
    with tarfile.open(path) as tar:
        for member in tar:
            if until is not None and member.offset_data + member.size > until:
                return
            chain.add(member)
            chain.advance()


def test_layers_register_one_by_one_and_only_the_complete_upload_makes_the_image(tmp_path, engine):
    src, sent = tmp_path / "image.tar", tmp_path / "sent.tar"
    diff_ids = make_layered_tar(src, [3000, 700, 5000])
    image_id = read_image_archive(src).image_id
    _reordered(src, sent)
    chain = LayerChain(engine, sent, "job1")
    _feed(chain, sent)
    images = engine.images
    assert chain.early == [0, 1, 2] and images.loads == [[0], [1], [2]]
    # One partial image holds the chain so far; the ones before it were removed.
    assert list(images.images) == [chain.partial] and len(images.removed) == 2
    assert images.images[chain.partial]["rootfs"]["diff_ids"] == diff_ids
    assert "Cmd" not in json.dumps(images.images[chain.partial])
    assert image_id not in images.images
    assert chain.finish() == {image_id}
    assert images.loads[-1] == [] and list(images.images) == [image_id]


def test_an_archive_in_docker_save_order_registers_what_it_can_and_the_rest_at_the_end(tmp_path, engine):
    src = tmp_path / "image.tar"
    make_layered_tar(src, [3000, 700])  # manifest.json last: nothing before the end
    chain = LayerChain(engine, src, "job1")
    _feed(chain, src)
    assert chain.registered == 2  # once manifest.json came, everything at once
    chain2 = LayerChain(engine, src, "job2")
    with tarfile.open(src) as tar:
        for member in tar:
            chain2.add(member)
    assert chain2.finish() == {read_image_archive(src).image_id}


def test_a_cut_upload_leaves_no_image_and_held_layers_are_skipped(tmp_path, engine):
    src, sent = tmp_path / "image.tar", tmp_path / "sent.tar"
    diff_ids = make_layered_tar(src, [3000, 700, 5000])
    _reordered(src, sent)
    archive = read_image_archive(sent)
    chain = LayerChain(engine, sent, "job1")
    _feed(chain, sent, until=archive.layer_spans[2][0])  # the top layer never came
    assert chain.registered == 2 and list(engine.images.images) == [chain.partial]
    chain.discard()
    assert engine.images.images == {} and chain.partial == ""
    # A thin upload without its bottom layer: the engine holds that chain, nothing to load.
    engine.images.images["sha256:held"] = {"rootfs": {"diff_ids": diff_ids[:1]}}
    thin = tmp_path / "thin.tar"
    _reordered(src, thin, omit=1)
    chain = LayerChain(engine, thin, "job2", held_chains=frozenset(chain_ids(diff_ids)[:1]))
    _feed(chain, thin)
    assert chain.registered == 3 and chain.early == [1, 2]


def test_remove_partials_after_a_crash(tmp_path, engine):
    src = tmp_path / "image.tar"
    make_layered_tar(src, [300, 200])
    _reordered(src, tmp_path / "sent.tar")
    _feed(LayerChain(engine, tmp_path / "sent.tar", "job1"), tmp_path / "sent.tar")
    assert len(engine.images.images) == 1
    assert remove_partials(engine) == 1 and engine.images.images == {}


def _grow(dest: Path, data: bytes, pieces: int, pause: float) -> threading.Thread:
    def write() -> None:
        step = -(-len(data) // pieces)
        with dest.open("ab") as f:
            for i in range(0, len(data), step):
                f.write(data[i:i + step])
                f.flush()
                time.sleep(pause)
    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread


def test_preload_follows_a_growing_file_and_loads_the_image_once_queued(tmp_path, engine):
    src, sent = tmp_path / "image.tar", tmp_path / "sent.tar"
    make_layered_tar(src, [30_000, 7_000, 50_000])
    _reordered(src, sent)
    inbox = tmp_path / "inbox.tar"
    preload = Preload("job1", inbox, engine).start()
    _grow(inbox, sent.read_bytes(), 20, 0.01).join()
    time.sleep(0.3)
    assert not preload.done.is_set(), preload.error  # waits for QUEUED
    assert preload.chain.registered == 3
    preload.state = JobState.QUEUED
    assert preload.done.wait(10)
    assert preload.loaded == {read_image_archive(src).image_id}, preload.error
    assert list(engine.images.images) == list(preload.loaded)


@pytest.mark.parametrize("end", [JobState.FAILED, JobState.CANCELLED, None])
def test_preload_of_an_upload_that_fails_removes_its_partial_layers(tmp_path, engine, end):
    src, sent = tmp_path / "image.tar", tmp_path / "sent.tar"
    make_layered_tar(src, [30_000, 7_000, 50_000])
    _reordered(src, sent)
    data = sent.read_bytes()
    inbox = tmp_path / "inbox.tar"
    preload = Preload("job1", inbox, engine).start()
    _grow(inbox, data[:len(data) - 20_000], 10, 0.01).join()
    deadline = time.monotonic() + 10
    while preload.chain is None or preload.chain.registered < 2:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    preload.state = end
    assert preload.done.wait(10)
    assert preload.loaded == set() and "ended" in preload.error
    assert engine.images.images == {}
